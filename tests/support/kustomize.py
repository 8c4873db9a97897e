"""A kustomize-compatible renderer of the subset deploy/k8s uses: the manifests are tested without kubectl.

Supported: resources (files and folders), components, namespace, labels (includeTemplates; not
includeSelectors), images, patches by path (strategic merge, matched by kind and name; `$patch: delete`),
configMapGenerator (files, literals; behavior create/merge/replace) with kustomize's name hash and the
rewriting of references to generated names in pod templates. Anything else is refused, so that a manifest
can never silently mean more to kubectl than to these tests. Where `kubectl kustomize` exists, the tests
compare both renderings.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
# libyaml's parser when PyYAML was built with it: ten times faster than the pure-Python one.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "labels",
    "images",
    "patches",
    "configMapGenerator",
}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
}
_TEMPLATED = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# Strategic-merge keys of the lists the manifests patch (from the Kubernetes API's patchMergeKey tags).
_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not support, or is wrong."""


@dataclass
class _Resource:
    obj: Obj
    generated: bool = False


@dataclass
class _State:
    resources: list[_Resource] = field(default_factory=list)


def render(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize directory` would print (generated names hashed)."""
    state = _State()
    _build(directory, state)
    return _finish(state.resources)


def _load(directory: Path) -> Obj:
    path = directory / "kustomization.yaml"
    if not path.exists():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    unknown = set(data) - _KUSTOMIZATION_FIELDS
    if unknown:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unknown)}")
    return dict(data)


def _documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_Loader) if doc]


def _build(directory: Path, state: _State) -> None:
    k = _load(directory)
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            sub = _State()
            _build(path, sub)
            state.resources.extend(sub.resources)
        else:
            state.resources.extend(_Resource(doc) for doc in _documents(path))
    for entry in k.get("components", []):
        component = (directory / entry).resolve()
        if _load(component).get("kind") != "Component":
            raise KustomizeError(f"{component} is not a kustomize Component")
        _build(component, state)  # a component adds to, and transforms, what its user has so far
    for generator in k.get("configMapGenerator", []):
        _generate_config_map(directory, generator, state)
    for patch in k.get("patches", []):
        _apply_patch(directory, patch, state)
    if "namespace" in k:
        for res in state.resources:
            if res.obj["kind"] not in _CLUSTER_SCOPED:
                res.obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for entry in k.get("labels", []):
        _add_labels(entry, state)
    for image in k.get("images", []):
        for res in state.resources:
            for container in _containers(res.obj):
                container["image"] = _new_image(container["image"], image)


def _generate_config_map(directory: Path, generator: Obj, state: _State) -> None:
    unknown = set(generator) - {"name", "files", "literals", "behavior"}
    if unknown:
        raise KustomizeError(f"configMapGenerator {generator.get('name')}: unsupported {sorted(unknown)}")
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, source = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (directory / source).read_text(encoding="utf-8")
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        data[key] = value
    name = generator["name"]
    behavior = generator.get("behavior", "create")
    existing = [r for r in state.resources if r.generated and r.obj["metadata"]["name"] == name]
    if behavior == "create":
        if existing:
            raise KustomizeError(f"configMapGenerator {name} exists already: use behavior merge or replace")
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        state.resources.append(_Resource(obj, generated=True))
    elif behavior in ("merge", "replace"):
        if not existing:
            raise KustomizeError(f"configMapGenerator {name}: nothing to {behavior}")
        target = existing[0].obj
        target["data"] = {**target["data"], **data} if behavior == "merge" else data
    else:
        raise KustomizeError(f"configMapGenerator {name}: unknown behavior {behavior!r}")


def _apply_patch(directory: Path, entry: Obj, state: _State) -> None:
    if set(entry) != {"path"}:
        raise KustomizeError(f"patches: only `path` is supported, not {sorted(entry)}")
    for patch in _documents(directory / entry["path"]):
        kind, name = patch["kind"], patch["metadata"]["name"]
        matches = [r for r in state.resources if r.obj["kind"] == kind and r.obj["metadata"]["name"] == name]
        if len(matches) != 1:
            raise KustomizeError(f"{entry['path']}: {len(matches)} resources match {kind}/{name}")
        if patch.get("$patch") == "delete":
            state.resources.remove(matches[0])
            continue
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
        _merge(matches[0].obj, body)


def _merge(target: Obj, patch: Obj) -> None:
    """Strategic merge: maps merge, keyed lists merge item by item, other lists and scalars replace."""
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"strategic merge directive {key} is not supported")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif isinstance(value, list) and isinstance(target.get(key), list) and _list_keys(key, target[key]):
            _merge_list(target[key], value, _list_keys(key, target[key]))
        else:
            target[key] = copy.deepcopy(value)


def _list_keys(key: str, items: list[Any]) -> tuple[str, ...]:
    if key == "ports" and items and isinstance(items[0], dict):
        # Container ports merge on containerPort, Service ports on port; both with the protocol.
        return ("containerPort", "protocol") if "containerPort" in items[0] else ("port", "protocol")
    return _MERGE_KEYS.get(key, ())


def _merge_list(target: list[Any], patch: list[Any], keys: tuple[str, ...]) -> None:
    added = []
    for item in patch:
        identity = tuple(item.get(k) for k in keys)
        match = next((t for t in target if tuple(t.get(k) for k in keys) == identity), None)
        if match is None:
            added.append(copy.deepcopy(item))
        else:
            _merge(match, item)
    target[:0] = added  # kustomize puts the items a patch adds before the existing ones


def _add_labels(entry: Obj, state: _State) -> None:
    if entry.get("includeSelectors"):
        raise KustomizeError("labels.includeSelectors is not supported (selectors are immutable)")
    pairs = entry["pairs"]
    for res in state.resources:
        res.obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if entry.get("includeTemplates") and res.obj["kind"] in _TEMPLATED:
            template = res.obj["spec"]["template"].setdefault("metadata", {})
            template.setdefault("labels", {}).update(pairs)


def _pod_spec(obj: Obj) -> Obj | None:
    if obj.get("kind") in _TEMPLATED:
        spec: Obj = obj["spec"]["template"]["spec"]
        return spec
    return None


def _containers(obj: Obj) -> list[Obj]:
    spec = _pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _new_image(image: str, entry: Obj) -> str:
    name, digest = image.split("@", 1) if "@" in image else (image, "")
    tag = ""
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != entry["name"]:
        return image
    name = entry.get("newName", name)
    if "digest" in entry:
        return f"{name}@{entry['digest']}"
    tag = entry.get("newTag", tag)
    return f"{name}:{tag}" if tag else (f"{name}@{digest}" if digest else name)


def config_map_hash(obj: Obj) -> str:
    """kustomize's suffix: sha256 of the Go JSON encoding of kind, name and data; 10 characters, no vowels."""
    encoded = json.dumps(
        {"data": obj.get("data", {}), "kind": "ConfigMap", "name": obj["metadata"]["name"]},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escape)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _finish(resources: list[_Resource]) -> list[Obj]:
    renamed: dict[str, str] = {}
    for res in resources:
        if res.generated:
            old = res.obj["metadata"]["name"]
            renamed[old] = f"{old}-{config_map_hash(res.obj)}"
            res.obj["metadata"]["name"] = renamed[old]
    for res in resources:
        spec = _pod_spec(res.obj)
        if spec is not None:
            _rename_config_map_references(spec, renamed)
    return [res.obj for res in resources]


def _rename_config_map_references(spec: Obj, renamed: dict[str, str]) -> None:
    refs: list[Obj] = [v["configMap"] for v in spec.get("volumes", []) if "configMap" in v]
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        refs += [e["configMapRef"] for e in container.get("envFrom", []) if "configMapRef" in e]
        refs += [
            e["valueFrom"]["configMapKeyRef"]
            for e in container.get("env", [])
            if "configMapKeyRef" in e.get("valueFrom", {})
        ]
    for ref in refs:
        ref["name"] = renamed.get(ref["name"], ref["name"])
