"""The OpenAPI description at /openapi.json: valid OpenAPI 3.0, and exactly the routes the API serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from aiohttp import web

from services.api import listing
from services.api.app import create_app
from services.api.auth import PUBLIC_PATHS
from services.api.openapi import document
from shared.config import load_settings

METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def _app(tmp_path: Path) -> web.Application:
    # Building the app opens nothing: the store and NATS are opened when it starts.
    overrides = {"DatabaseUrl": f"sqlite:///{tmp_path / 'worklists.db'}", "NatsUrl": "nats://127.0.0.1:1"}
    return create_app(load_settings(environ={}, overrides=overrides))


def _operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in spec["paths"].items() for method in item if method in METHODS
    }


def test_every_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    # aiohttp adds HEAD beside each GET by itself; HEAD answers as GET without a body.
    served = {
        (route.method, route.resource.canonical)
        for route in _app(tmp_path).router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert served == _operations(document())


def test_the_description_is_valid_openapi() -> None:
    schemathesis.openapi.from_dict(document()).validate()


def test_listing_parameters_are_those_the_listing_accepts() -> None:
    parameters = {p["name"] for p in document()["paths"]["/worklists"]["get"]["parameters"]}
    assert parameters == {*listing.VIEW_PARAMETERS, *listing.PAGING_PARAMETERS, *listing.FILTERS}


def test_probes_take_no_credentials_and_other_routes_say_they_may_refuse() -> None:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            if path in PUBLIC_PATHS:
                assert operation["security"] == []
            else:
                assert "401" in operation["responses"], (method, path)
            if method in ("post", "put", "delete"):
                assert {"400", "403", "413"} & set(operation["responses"]), (method, path)


def test_every_error_answer_has_the_error_shape() -> None:
    """Errors are JSON in Orthanc's shape with the offending field; /readyz answers 503 with its checks."""
    error, readiness = {"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/Readiness"}
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == (readiness if path == "/readyz" else error), (method, path, status)
