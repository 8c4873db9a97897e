"""REST metrics: every request counted under its route template and the status the client saw."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api.errors import error_middleware
from services.api.metrics import setup_metrics
from shared.metrics import ApiMetrics
from shared.store import WorklistNotFound


async def missing(request: web.Request) -> web.Response:
    raise WorklistNotFound(request.match_info["id"])


async def ok(_request: web.Request) -> web.Response:
    return web.json_response({})


async def crash(_request: web.Request) -> web.Response:
    raise RuntimeError("bug")


def count(metrics: ApiMetrics, method: str, route: str, status: int) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return metrics.registry.get_sample_value("mwl_http_requests_total", labels) or 0.0


async def test_requests_are_counted_by_route_template_and_final_status(aiohttp_client: Any) -> None:
    metrics = ApiMetrics()
    scrapes: list[bool] = []

    async def before_scrape() -> None:
        scrapes.append(True)

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/worklists/{id}", missing)
    app.router.add_post("/worklists/create", ok)
    app.router.add_get("/crash", crash)
    setup_metrics(app, metrics, [before_scrape])
    client = await aiohttp_client(app)

    for item in ("a", "b", "c"):
        assert (await client.get(f"/worklists/{item}")).status == 404
    assert (await client.post("/worklists/create")).status == 200
    assert (await client.get("/crash")).status == 500
    assert (await client.get("/wp-login.php")).status == 404
    assert (await client.delete("/crash")).status == 405

    # The answer the error middleware gave, under the template: one series for every id.
    assert count(metrics, "GET", "/worklists/{id}", 404) == 3
    assert count(metrics, "POST", "/worklists/create", 200) == 1
    assert count(metrics, "GET", "/crash", 500) == 1
    assert count(metrics, "GET", "unmatched", 404) == 1
    assert count(metrics, "DELETE", "unmatched", 405) == 1
    latency = metrics.registry.get_sample_value(
        "mwl_http_request_duration_seconds_count", {"method": "GET", "route": "/worklists/{id}"}
    )
    assert latency == 3

    response = await client.get("/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    assert (
        'mwl_http_requests_total{method="GET",route="/worklists/{id}",status="404"} 3.0'
        in await response.text()
    )
    assert scrapes == [True]
