"""URL map of the API service."""

from aiohttp import web

from services.api import health, live, openapi, studies, views
from services.api.ui import setup_ui


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/worklists/create", views.create_worklist)
    app.router.add_get("/worklists", views.list_worklists)
    app.router.add_get("/worklists/{id}", views.get_worklist)
    app.router.add_put("/worklists/{id}", views.replace_worklist)
    app.router.add_delete("/worklists/{id}", views.delete_worklist)
    app.router.add_post("/studies/stable", studies.study_stable)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/events/stream", live.stream)
    app.router.add_get("/openapi.json", openapi.openapi_json)
    setup_ui(app)
