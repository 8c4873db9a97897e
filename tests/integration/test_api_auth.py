"""REST authentication as clients meet it: Basic users and bearer tokens, read-only and read-write roles,
401/403 in Orthanc's error shape, the UI and its event stream behind the same login, probes left open."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient

from services.api import auth
from services.api.keys import BUS
from shared.migrate import upgrade
from tests.integration.conftest import ApiFactory
from tests.integration.test_api_worklists import tags
from tests.support.servers import NatsServer

Client = TestClient[Any, Any]

RIS_TOKEN = "ris-5b0c1e8e2f4a4f0c9d7e6a1b"
VIEWER_TOKEN = "viewer-0f9e8d7c6b5a49382716"
SECURITY: dict[str, Any] = {
    "AuthenticationEnabled": True,
    "RegisteredUsers": {
        "alice": "alice-password",
        "bob": {"Password": "bob-password", "Role": "read-only"},
        "carol": {"Password": "carol-password", "Role": "read-write"},
    },
    "ApiTokens": [
        {"Token": RIS_TOKEN, "Role": "read-write", "Name": "ris-bridge"},
        {"Token": VIEWER_TOKEN, "Role": "read-only"},
    ],
}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": encode_basic_auth(user, password)}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ALICE = basic("alice", "alice-password")  # read-write, Orthanc's "name": "password" form
BOB = basic("bob", "bob-password")  # read-only
CAROL = basic("carol", "carol-password")  # read-write, given explicitly


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: authentication sits in front of the store, whichever it is."""
    url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(url)
    return url


@pytest.fixture(autouse=True)
def nats_outlives_the_app(nats_server: NatsServer) -> NatsServer:
    """NATS set up first, so stopped last: an app closing with events still to publish is not left waiting."""
    return nats_server


@pytest.fixture
async def api(api_factory: ApiFactory) -> Client:
    return await api_factory(**SECURITY)


async def assert_error(resp: Any, status: int, method: str, uri: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["HttpStatus"] == status
    assert body["HttpError"] == {401: "Unauthorized", 403: "Forbidden"}[status]
    assert (body["Method"], body["Uri"]) == (method, uri)
    assert body["Message"]
    return body


async def create_as(api: Client, **request: Any) -> Any:
    return await api.post("/worklists/create", json={"Tags": tags()}, **request)


# ----------------------------------------------------------------------------------------------------------
# Off by default


async def test_off_by_default(api_factory: ApiFactory) -> None:
    open_api = await api_factory()
    assert (await create_as(open_api)).status == 200
    assert (await open_api.get("/worklists")).status == 200


# ----------------------------------------------------------------------------------------------------------
# 401


async def test_no_credentials_get_a_basic_and_bearer_challenge(api: Client) -> None:
    resp = await api.get("/worklists")
    body = await assert_error(resp, 401, "GET", "/worklists")
    assert body["Message"] == "Authentication required"
    challenges = resp.headers.getall("WWW-Authenticate")
    assert challenges == ['Basic realm="mwl"', 'Bearer realm="mwl"']


@pytest.mark.parametrize(
    "authorization",
    [
        encode_basic_auth("alice", "wrong"),
        encode_basic_auth("mallory", "alice-password"),
        encode_basic_auth("bob", "alice-password"),  # another user's password
        encode_basic_auth("alice", ""),
        encode_basic_auth("ALICE", "alice-password"),  # names are exact
        "Basic !!!not-base64!!!",
        "Basic YWxpY2U=",  # "alice", no colon
        "Digest username=alice",
        "alice-password",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
        "Négociation xyz",
        "Bearer " + "é" * 20,
    ],
)
async def test_wrong_credentials_are_401(api: Client, authorization: str) -> None:
    resp = await api.get("/worklists", headers={"Authorization": authorization})
    body = await assert_error(resp, 401, "GET", "/worklists")
    assert body["Message"] == "Invalid credentials"  # never says which part was wrong
    assert 'Basic realm="mwl"' in resp.headers.getall("WWW-Authenticate")


async def test_unknown_bearer_token_is_401_invalid_token(api: Client) -> None:
    resp = await api.get("/worklists", headers=bearer(RIS_TOKEN + "x"))
    await assert_error(resp, 401, "GET", "/worklists")
    assert 'Bearer realm="mwl", error="invalid_token"' in resp.headers.getall("WWW-Authenticate")


async def test_only_configured_schemes_are_offered(api_factory: ApiFactory) -> None:
    tokens_only = await api_factory(AuthenticationEnabled=True, ApiTokens=SECURITY["ApiTokens"])
    resp = await tokens_only.get("/worklists")
    assert resp.headers.getall("WWW-Authenticate") == ['Bearer realm="mwl"']
    # Basic credentials are no way in when no user is registered.
    resp = await tokens_only.get("/worklists", headers=ALICE)
    assert resp.status == 401


# ----------------------------------------------------------------------------------------------------------
# Roles


@pytest.mark.parametrize(
    "credentials",
    [{"headers": ALICE}, {"headers": CAROL}, {"headers": bearer(RIS_TOKEN)}],
    ids=["orthanc-style-user", "user-with-role", "token"],
)
async def test_read_write_callers_do_everything(api: Client, credentials: dict[str, Any]) -> None:
    resp = await create_as(api, **credentials)
    assert resp.status == 200, await resp.text()
    item = f"/worklists/{(await resp.json())['ID']}"
    assert (await api.get(item, **credentials)).status == 200
    assert (await api.get("/worklists", **credentials)).status == 200
    assert (await api.put(item, json={"Tags": tags(AccessionNumber="A2")}, **credentials)).status == 200
    assert (await api.delete(item, **credentials)).status == 200
    resp = await api.post("/studies/stable", json={"StudyInstanceUID": "1.2.3"}, **credentials)
    assert resp.status == 202


@pytest.mark.parametrize(
    ("credentials", "name"),
    [({"headers": BOB}, "bob"), ({"headers": bearer(VIEWER_TOKEN)}, "token 2")],
    ids=["user", "token"],
)
async def test_read_only_callers_read_but_never_change(
    api: Client, credentials: dict[str, Any], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    item_id = (await (await create_as(api, headers=ALICE)).json())["ID"]
    item = f"/worklists/{item_id}"
    assert (await api.get(item, **credentials)).status == 200
    assert (await api.get("/worklists?format=Full", **credentials)).status == 200

    caplog.set_level(logging.WARNING, logger="services.api.auth")
    c = credentials
    refused = [
        ("POST", "/worklists/create", await create_as(api, **credentials)),
        ("PUT", item, await api.put(item, json={"Tags": tags(AccessionNumber="A9")}, **credentials)),
        ("DELETE", item, await api.delete(item, **credentials)),
        ("POST", "/studies/stable", await api.post("/studies/stable", json={"StudyInstanceUID": "1.2"}, **c)),
    ]
    for method, uri, resp in refused:
        body = await assert_error(resp, 403, method, uri)
        assert "read-only" in body["Message"]
    assert "read-only role" in caplog.text and repr(name) in caplog.text
    # Nothing changed.
    resp = await api.get(item, headers=ALICE)
    assert (await resp.json())["Tags"]["AccessionNumber"] == "A1"


async def test_writes_are_audited_with_the_user(api: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.api.auth")
    item_id = (await (await create_as(api, headers=bearer(RIS_TOKEN))).json())["ID"]
    assert (await api.delete(f"/worklists/{item_id}", headers=ALICE)).status == 200
    assert "POST /worklists/create by 'ris-bridge': 200" in caplog.text
    assert f"DELETE /worklists/{item_id} by 'alice': 200" in caplog.text


# ----------------------------------------------------------------------------------------------------------
# Secrets and time


async def test_failures_are_logged_with_user_and_address_never_the_secret(
    api: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="services.api.auth")
    await api.get("/worklists", headers=basic("alice", "Tr0ub4dor&3-guess"))
    await api.get("/worklists", headers=bearer("guessed-token-0123456789"))
    await api.get("/worklists", headers=basic("evil\nuser", "x"))
    await api.get("/worklists", headers=ALICE)
    await api.get("/worklists", headers=bearer(RIS_TOKEN))
    text = caplog.text
    assert "REST authentication failed for 'alice' from 127.0.0.1: wrong user name or password" in text
    assert "REST authentication failed for a caller from 127.0.0.1: unknown bearer token" in text
    assert "'evil\\nuser'" in text  # a name cannot forge a log line
    for secret in ("Tr0ub4dor", "guessed-token", "alice-password", RIS_TOKEN, "Basic ", "Bearer "):
        assert secret not in text
    assert all(record.levelno == logging.WARNING for record in caplog.records if "failed" in record.message)


async def test_every_candidate_is_compared_whoever_asks(api: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: a right name, a wrong name, the first user or the last cost the same comparisons."""
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)

    async def comparisons(**request: Any) -> int:
        calls.clear()
        await api.get("/worklists", **request)
        return len(calls)

    users = len(SECURITY["RegisteredUsers"])
    for credentials in (ALICE, basic("alice", "no"), basic("nobody", "no"), CAROL):
        assert await comparisons(headers=credentials) == 2 * users  # name and password, for every user
    for token in (RIS_TOKEN, VIEWER_TOKEN, "x" * 40):
        assert await comparisons(headers=bearer(token)) == len(SECURITY["ApiTokens"])


# ----------------------------------------------------------------------------------------------------------
# The UI and the event stream


async def test_the_ui_asks_the_browser_for_a_login(api: Client) -> None:
    for path in ("/ui/", "/ui/app.js"):
        resp = await api.get(path)
        await assert_error(resp, 401, "GET", path)
        assert 'Basic realm="mwl"' in resp.headers.getall("WWW-Authenticate")
        resp = await api.get(path, headers=BOB)
        assert resp.status == 200


async def test_the_event_stream_needs_a_login(api: Client) -> None:
    await asyncio.wait_for(api.app[BUS].connected.wait(), 10)
    await assert_error(await api.get("/events/stream"), 401, "GET", "/events/stream")
    stream = await api.get("/events/stream", headers=BOB)
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    async with asyncio.timeout(5):
        assert (await stream.content.readuntil(b"\n\n")).startswith(b"retry: ")
        assert (await create_as(api, headers=ALICE)).status == 200
        assert b"event: worklist.created" in await stream.content.readuntil(b"\n\n")
    stream.close()


# ----------------------------------------------------------------------------------------------------------
# Open probes, counted refusals


async def test_probes_and_metrics_stay_open(api: Client) -> None:
    assert (await api.get("/healthz")).status == 200
    await asyncio.wait_for(api.app[BUS].connected.wait(), 10)
    assert (await api.get("/readyz")).status == 200
    await api.get("/worklists")  # a 401, which the metrics count
    resp = await api.get("/metrics")
    assert resp.status == 200
    counted = r'mwl_http_requests_total\{[^}]*route="/worklists"[^}]*status="401"[^}]*\} 1\.0'
    assert re.search(counted, await resp.text())
    # Only those exact paths: nothing else becomes reachable through them.
    for path in ("/healthz/", "/metrics/x", "/readyz%2F..%2Fworklists"):
        assert (await api.get(path)).status == 401


async def test_the_openapi_description_needs_a_login_of_any_role(api: Client) -> None:
    # It lists every route and parameter, which a hospital's security review counts as reconnaissance.
    assert (await api.get("/openapi.json")).status == 401
    resp = await api.get("/openapi.json", headers=BOB)
    assert resp.status == 200
    assert "/worklists/create" in (await resp.json())["paths"]


# ----------------------------------------------------------------------------------------------------------
# Cross-site writes


@pytest.mark.parametrize("secured", [True, False], ids=["auth-on", "auth-off"])
async def test_writes_from_another_sites_page_are_refused(api_factory: ApiFactory, secured: bool) -> None:
    api = await api_factory(**(SECURITY if secured else {}))
    login = ALICE if secured else {}
    # What a hostile page's form or fetch carries, the browser's remembered login included.
    for hostile in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        resp = await create_as(api, headers={**hostile, **login})
        body = await assert_error(resp, 403, "POST", "/worklists/create")
        assert body["Message"] == "Cross-site request refused"
    own = f"http://{api.server.host}:{api.server.port}"
    for friendly in ({"Origin": own}, {"Sec-Fetch-Site": "same-origin", "Origin": own}, {}):
        assert (await create_as(api, headers={**friendly, **login})).status == 200
    # Reading is not affected: the browser keeps another site from seeing the answer.
    assert (await api.get("/worklists", headers={"Sec-Fetch-Site": "cross-site", **login})).status == 200
