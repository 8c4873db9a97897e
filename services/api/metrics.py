"""REST metrics: a middleware counting requests by route template and status, and the /metrics route."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.exposition import choose_encoder

from shared.metrics import ApiMetrics

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ScrapeHook = Callable[[], Awaitable[None]]
# The client went away before the answer (nginx's convention): not a server error.
CLIENT_CLOSED = 499
UNMATCHED = "unmatched"  # one label for every unknown path, so scanners cannot multiply the series


def route_label(request: web.Request) -> str:
    """The route template (`/worklists/{id}`), never the raw path: ids would make one series per item."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def metrics_middleware(metrics: ApiMetrics) -> Middleware:
    """Put it first in the middleware list: it must see the status the error middleware answered with."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.observe_request(request.method, route_label(request), status, elapsed)

    return middleware


def metrics_handler(metrics: ApiMetrics, before_scrape: Sequence[ScrapeHook] = ()) -> Handler:
    """GET /metrics in the Prometheus text (or OpenMetrics) format; `before_scrape` refreshes gauges."""

    async def handler(request: web.Request) -> web.Response:
        for hook in before_scrape:
            try:
                await hook()
            except Exception as exc:  # a gauge left at its last value beats a failed scrape
                logger.debug("metrics hook failed: %s", type(exc).__name__)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(metrics.registry), headers={"Content-Type": content_type})

    return handler


def setup_metrics(
    app: web.Application, metrics: ApiMetrics, before_scrape: Sequence[ScrapeHook] = ()
) -> None:
    """Count every request (middleware first in the chain) and serve GET /metrics."""
    app.middlewares.insert(0, metrics_middleware(metrics))
    app.router.add_get("/metrics", metrics_handler(metrics, before_scrape))
