"""deploy/k8s renders, validates against the Kubernetes schemas, and agrees with what the code reads."""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import json5
import kubernetes_validate
import pytest
import yaml

from shared.config import Settings, environment_names, load_settings
from tests.support.kustomize import KustomizeError, config_map_hash
from tests.support.kustomize import render as render_uncached

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/production", "overlays/dev"]
# Kubernetes 1.29 (the oldest release the manifests target; or the oldest schema shipped, once
# kubernetes-validate drops it) and the newest schema known.
_SCHEMAS = kubernetes_validate.utils.all_versions()
KUBERNETES_VERSIONS = sorted({"1.29.0" if "1.29.0" in _SCHEMAS else _SCHEMAS[0], _SCHEMAS[-1]})
# Custom resources (no schema in kubernetes-validate): checked by the tests below instead.
CUSTOM_KINDS = {("postgresql.cnpg.io/v1", "Cluster"), ("monitoring.coreos.com/v1", "PodMonitor")}
SERVICES = {"scp", "api", "housekeeper"}

# MWL_* variables read outside shared.config.Settings (each must appear in the code: checked below).
READ_ELSEWHERE = {"MWL_CONFIG", "MWL_LOG_LEVEL"}
# The Settings attribute of the health port of each service without a REST port of its own.
HEALTH_PORT = {"scp": "scp_health_port", "housekeeper": "housekeeper_health_port"}
# Secrets the pods read that are not in the manifests (no password, token or private key in git): created
# out of band as each component's kustomization.yaml says, with these keys (example values for the tests).
OUT_OF_BAND_SECRETS = {
    "mwl-rest-auth": {
        "registered-users": '{"admin": {"Password": "example", "Role": "read-write"}}',
        "api-tokens": '[{"Token": "0123456789abcdef0123456789abcdef", "Role": "read-write", "Name": "ris"}]',
    },
    "mwl-dicom-tls": {"tls.crt": "PEM", "tls.key": "PEM", "ca.crt": "PEM"},
}
# The paths shared.health_http and the API serve.
PROBE_PATHS = {"livenessProbe": "/healthz", "startupProbe": "/healthz", "readinessProbe": "/readyz"}


@pytest.fixture(scope="module", autouse=True)
def _schemas_parsed_once() -> Iterator[None]:
    """kubernetes-validate parses its 1 MB definitions file at every call: parse each file once instead."""
    with pytest.MonkeyPatch.context() as patch:
        parse = functools.cache(kubernetes_validate.utils.schema_contents)
        patch.setattr(kubernetes_validate.utils, "schema_contents", parse)
        yield


@functools.cache
def _render(directory: Path) -> list[dict[str, Any]]:
    return render_uncached(directory)


def render(directory: Path) -> list[dict[str, Any]]:
    """Rendered once per test run; each caller gets a copy it may change."""
    return copy.deepcopy(_render(directory))


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / request.param)


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in _of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Deployment", "Job")]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from _pod(workload).get("initContainers", [])
    yield from _pod(workload)["containers"]


def _component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def _config_map(objects: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    found = [o for o in _of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith(prefix + "-")]
    assert len(found) == 1
    return found[0]


def _environment(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's variables as the kubelet sets them (Secret references as placeholders)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(_named(objects, "ConfigMap", ref)["data"])
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef", {})
        example = OUT_OF_BAND_SECRETS.get(ref.get("name"), {}).get(ref.get("key"))
        env[entry["name"]] = entry.get("value", example or f"<from {json.dumps(entry.get('valueFrom'))}>")
    return env


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    matches = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        matches = matches and labels.get(expression["key"]) in expression["values"]
    return matches


def _pods_selected(objects: list[dict[str, Any]], selector: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in _workloads(objects) if _selects(selector, w["spec"]["template"]["metadata"]["labels"])]


def _version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


# --- rendering -------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl not installed: the Python renderer alone"
)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_renderer_agrees_with_kubectl_kustomize(kustomization: str) -> None:
    def canonical(objects: list[dict[str, Any]]) -> Any:
        text = json.dumps(sorted(objects, key=lambda o: (o["kind"], o["metadata"]["name"])), sort_keys=True)
        # Some kubectl builds hash generated names differently from upstream kustomize: compare the rest.
        return json.loads(re.sub(r"(mwl-(?:config|env))-[a-z0-9]{10}\b", r"\1-HASH", text))

    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    assert canonical(render(K8S / kustomization)) == canonical([d for d in yaml.load_all(out, loader) if d])


def test_generated_names_carry_kustomize_content_hash(tmp_path: Path) -> None:
    # The example of kustomize's documentation (configMapGenerator, literal FOO=Bar).
    example = {"kind": "ConfigMap", "metadata": {"name": "example-configmap-2"}, "data": {"FOO": "Bar"}}
    assert config_map_hash(example) == "g2hdhfc6tk"
    (tmp_path / "kustomization.yaml").write_text(
        "configMapGenerator:\n- name: cfg\n  literals: [A=1]\n", encoding="utf-8"
    )
    first = render_uncached(tmp_path)[0]["metadata"]["name"]
    (tmp_path / "kustomization.yaml").write_text(
        "configMapGenerator:\n- name: cfg\n  literals: [A=2]\n", encoding="utf-8"
    )
    assert render_uncached(tmp_path)[0]["metadata"]["name"] != first  # a changed configuration rolls the pods


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("replicas:\n- name: x\n  count: 2\n", encoding="utf-8")
    with pytest.raises(KustomizeError, match="unsupported fields"):
        render_uncached(tmp_path)


# --- schemas ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_kubernetes(
    rendered: tuple[str, list[dict[str, Any]]], version: str
) -> None:
    name, objects = rendered
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} at {list(exc.path)}: {exc.message}")


def test_the_validation_catches_a_misspelt_field() -> None:
    deployment = _named(render(K8S / "base"), "Deployment", "mwl-api")
    _pod(deployment)["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_custom_resources_are_only_the_documented_ones(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _name, objects = rendered
    for obj in objects:
        if "." in obj["apiVersion"].split("/")[0]:
            assert (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS | {
                ("apps/v1", "Deployment"),
                ("batch/v1", "Job"),
                ("policy/v1", "PodDisruptionBudget"),
                ("autoscaling/v2", "HorizontalPodAutoscaler"),
                ("networking.k8s.io/v1", "NetworkPolicy"),
            }


# --- what the code reads -----------------------------------------------------------------------------------


def test_every_mwl_variable_is_one_the_code_reads(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendered
    source = "\n".join(
        p.read_text(encoding="utf-8") for d in ("shared", "services") for p in (ROOT / d).rglob("*.py")
    )
    read_elsewhere = {n for n in READ_ELSEWHERE if f'"{n}"' in source}
    assert read_elsewhere == READ_ELSEWHERE, "a variable in READ_ELSEWHERE is no longer read"
    known = set(environment_names()) | read_elsewhere
    for workload in _workloads(objects):
        for container in _containers(workload):
            unknown = {v for v in _environment(objects, container) if v.startswith("MWL_")} - known
            assert not unknown, f"{name}: {workload['metadata']['name']}/{container['name']} sets {unknown}"


def test_no_service_link_variable_can_shadow_a_setting(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    # A Service `mwl-http` would give every pod MWL_HTTP_PORT=tcp://…: the pods turn service links off.
    _name, objects = rendered
    for workload in _workloads(objects):
        assert _pod(workload)["enableServiceLinks"] is False


def _settings_of(objects: list[dict[str, Any]], env: dict[str, str], tmp_path: Path) -> Settings:
    """What the service would load: the mounted ConfigMap as MWL_CONFIG, and the container's variables."""
    config = _config_map(objects, "mwl-config")
    path = tmp_path / "mwl.json"
    path.write_text(config["data"]["mwl.json"], encoding="utf-8")
    environ = {k: v for k, v in env.items() if k in environment_names()}
    environ["MWL_DATABASE_URL"] = "postgresql://mwl@mwl-db-rw/mwl"  # the Secret's value is not in git
    return load_settings(path, environ=environ)


def test_container_ports_are_the_ports_the_services_listen_on(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    _name, objects = rendered
    for workload in _of_kind(objects, "Deployment"):
        component = _component(workload)
        container = _pod(workload)["containers"][0]
        env = _environment(objects, container)
        settings = _settings_of(objects, env, tmp_path)
        assert settings.bind_address == "0.0.0.0"  # reachable from the kubelet and the Services
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        expected: dict[str, int] = {}
        if component == "scp":
            expected["dicom"] = settings.dicom_port
        if component == "api":
            expected["http"] = settings.http_port
        if component in HEALTH_PORT:
            expected["health"] = getattr(settings, HEALTH_PORT[component])
        assert ports == expected, component
        metrics_port = int(workload["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
        assert metrics_port == expected.get("health", expected.get("http"))


def test_containers_run_the_service_their_component_names(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _name, objects = rendered
    for workload in _workloads(objects):
        component = _component(workload)
        assert _pod(workload)["containers"][0]["args"][0] == component
        for init in _pod(workload).get("initContainers", []):
            assert init["args"][:2] == ["migrate", "--check"]  # wait for the migration Job
    assert {_component(w) for w in _workloads(objects)} == SERVICES | {"migrate"}


def test_images_are_this_release(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _name, objects = rendered
    images = {c["image"] for w in _workloads(objects) for c in _containers(w)}
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(rf"([a-z0-9.-]+/)*mwl-server:{re.escape(_version())}", image), image


def test_probes_ask_the_health_endpoints(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _name, objects = rendered
    for workload in _of_kind(objects, "Deployment"):
        container = _pod(workload)["containers"][0]
        ports = {p["name"] for p in container["ports"]}
        for probe, path in PROBE_PATHS.items():
            assert container[probe]["httpGet"]["path"] == path
            assert container[probe]["httpGet"]["port"] in ports


def test_the_database_url_comes_from_a_secret_that_exists(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendered
    secrets = {
        s["metadata"]["name"]: set(s.get("stringData", {})) | set(s.get("data", {}))
        for s in _of_kind(objects, "Secret")
    }
    # CloudNativePG generates <cluster>-app with these keys.
    for cluster in _of_kind(objects, "Cluster"):
        assert f"{cluster['metadata']['name']}-app" not in secrets, "the placeholder would overwrite it"
        secrets[f"{cluster['metadata']['name']}-app"] = {
            "username",
            "password",
            "host",
            "port",
            "dbname",
            "uri",
        }
    for workload in _workloads(objects):
        for container in _containers(workload):
            (entry,) = [e for e in container["env"] if e["name"] == "MWL_DATABASE_URL"]
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets.get(ref["name"], set()), f"{name}: {ref} exists nowhere"


def _secrets_read(workload: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(Secret name, key) of every Secret the pod reads: variables (with their key) and volumes (None)."""
    for container in _containers(workload):
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield ref["name"], ref["key"]
    for volume in _pod(workload).get("volumes", []):
        if "secret" in volume:
            yield volume["secret"]["secretName"], None


def test_every_secret_a_pod_reads_exists_or_is_created_out_of_band(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = rendered
    known = {s["metadata"]["name"] for s in _of_kind(objects, "Secret")}
    known |= {f"{c['metadata']['name']}-app" for c in _of_kind(objects, "Cluster")}
    for workload in _workloads(objects):
        for secret, key in _secrets_read(workload):
            if secret in known:
                continue
            assert secret in OUT_OF_BAND_SECRETS, f"{name}: Secret {secret} exists nowhere"
            assert key is None or key in OUT_OF_BAND_SECRETS[secret], f"{name}: {secret} has no key {key}"


def test_out_of_band_secrets_are_documented_with_their_keys() -> None:
    comments = "\n".join(
        p.read_text(encoding="utf-8") for p in (K8S / "components").rglob("kustomization.yaml")
    )
    for secret, keys in OUT_OF_BAND_SECRETS.items():
        assert f"create secret generic {secret}" in comments
        for key in keys:
            assert key in comments, f"the command creating {secret} does not name its key {key}"


def test_production_requires_rest_authentication_and_mutual_dicom_tls(tmp_path: Path) -> None:
    objects = render(K8S / "overlays/production")
    api = _named(objects, "Deployment", "mwl-api")
    settings = _settings_of(objects, _environment(objects, _pod(api)["containers"][0]), tmp_path)
    assert settings.authentication_enabled
    assert settings.registered_users and settings.api_tokens

    scp = _named(objects, "Deployment", "mwl-scp")
    container = _pod(scp)["containers"][0]
    settings = _settings_of(objects, _environment(objects, container), tmp_path)
    assert settings.dicom_tls_enabled and settings.dicom_tls_remote_certificate_required
    volumes = {v["name"]: v for v in _pod(scp)["volumes"]}
    mounted = {
        m["mountPath"]: volumes[m["name"]]["secret"]["secretName"]
        for m in container["volumeMounts"]
        if "secret" in volumes[m["name"]]
    }
    for path in (
        settings.dicom_tls_certificate,
        settings.dicom_tls_private_key,
        settings.dicom_tls_trusted_certificates,
    ):
        assert path is not None
        secret = mounted[str(path.parent)]  # each file is a key of the Secret mounted in its folder
        assert path.name in OUT_OF_BAND_SECRETS[secret]


# --- wiring between objects -----------------------------------------------------------------------------


def test_services_reach_named_container_ports(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _name, objects = rendered
    for service in _of_kind(objects, "Service"):
        (target,) = _pods_selected(objects, {"matchLabels": service["spec"]["selector"]})
        names = {p["name"] for p in _pod(target)["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names
    assert _named(objects, "Service", "mwl-api")["spec"]["type"] == "ClusterIP"
    assert _named(objects, "Service", "mwl-scp")["spec"]["ports"][0]["port"] == 4242


def test_autoscalers_budgets_and_policies_select_their_pods(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _name, objects = rendered
    for hpa in _of_kind(objects, "HorizontalPodAutoscaler"):
        target = _named(objects, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "the autoscaler owns the replica count"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert {h["spec"]["scaleTargetRef"]["name"] for h in _of_kind(objects, "HorizontalPodAutoscaler")} == {
        "mwl-scp",
        "mwl-api",
    }
    for budget in _of_kind(objects, "PodDisruptionBudget"):
        assert len(_pods_selected(objects, budget["spec"]["selector"])) == 1
    policies = {_component(p): p for p in _of_kind(objects, "NetworkPolicy")}
    assert set(policies) == SERVICES | {"migrate"}
    for component, policy in policies.items():
        (workload,) = _pods_selected(objects, policy["spec"]["podSelector"])
        assert _component(workload) == component
        container_ports = {p["containerPort"] for p in _pod(workload)["containers"][0].get("ports", [])}
        ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ingress_ports == container_ports, component  # nothing else is let in
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert {53, 5432} <= egress_ports
        assert (4222 in egress_ports) == (component != "migrate")


def test_pods_run_locked_down(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _name, objects = rendered
    dockerfile_user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert dockerfile_user is not None
    for workload in _workloads(objects):
        pod = _pod(workload)
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(dockerfile_user.group(1))
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in _containers(workload):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes
            assert mounts.get("/etc/mwl") == "config"
            assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
            env = _environment(objects, container)
            assert env["MWL_CONFIG"] == "/etc/mwl/mwl.json"


# --- overlays ----------------------------------------------------------------------------------------------


def test_production_exposes_dicom_on_a_load_balancer_keeping_modality_addresses() -> None:
    objects = render(K8S / "overlays/production")
    scp = _named(objects, "Service", "mwl-scp")["spec"]
    # DicomCheckModalityHost compares the connection's source with the modality's configured host.
    assert scp["type"] == "LoadBalancer" and scp["externalTrafficPolicy"] == "Local"
    assert {o["metadata"].get("namespace") for o in objects} == {"mwl"}
    config = _config_map(objects, "mwl-config")["data"]["mwl.json"]
    assert json5.loads(config)["DicomAlwaysAllowFindWorklist"] is False


def test_overlays_take_postgresql_from_cloudnative_pg_and_scrape_with_the_operator() -> None:
    for overlay in ("overlays/production", "overlays/dev"):
        objects = render(K8S / overlay)
        assert not _of_kind(objects, "Secret")
        (cluster,) = _of_kind(objects, "Cluster")
        assert cluster["spec"]["bootstrap"]["initdb"]["database"] == "mwl"
    objects = render(K8S / "overlays/production")
    (monitor,) = _of_kind(objects, "PodMonitor")
    scraped = _pods_selected(objects, monitor["spec"]["selector"])
    assert {_component(w) for w in scraped} == SERVICES
    endpoint_ports = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    for workload in scraped:  # each service is scraped on one of its ports
        assert endpoint_ports & {p["name"] for p in _pod(workload)["containers"][0]["ports"]}


def test_nats_comes_from_the_official_chart_with_jetstream() -> None:
    values = yaml.safe_load((K8S / "helm/nats-values.yaml").read_text(encoding="utf-8"))
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["fileStore"]["pvc"]["size"]

    for kustomization in KUSTOMIZATIONS:
        config = json5.loads(_config_map(render(K8S / kustomization), "mwl-config")["data"]["mwl.json"])
        # The chart's client Service is named after the release, `nats`, as the values file says to install.
        assert config["NatsUrl"] == "nats://nats:4222"


# --- the image ---------------------------------------------------------------------------------------------


def test_the_dockerfile_builds_a_slim_non_root_image_exposing_the_service_ports() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2 and " AS builder" in stages[0]
    final = stages[1]
    assert "build-essential" not in final and "gcc" not in final
    assert "pip wheel" in stages[0] and "--no-index" in final
    expose = re.search(r"^EXPOSE (.+)$", final, re.M)
    assert expose is not None
    defaults = Settings()
    health_ports = {getattr(defaults, attribute) for attribute in HEALTH_PORT.values()}
    assert {int(p) for p in expose.group(1).split()} == {
        defaults.dicom_port,
        defaults.http_port,
    } | health_ports
    assert re.search(r"^USER 10001(:10001)?$", final, re.M)
    entrypoint = re.search(r'^ENTRYPOINT \["([^"]+)"\]', final, re.M)
    assert entrypoint is not None
    assert re.search(
        rf"^COPY --chmod=0755 deploy/entrypoint.sh {re.escape(entrypoint.group(1))}$", final, re.M
    )
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in ignored and ".git" in ignored
