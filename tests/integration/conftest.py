"""Integration fixtures: the API application on a real store and a real NATS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.api.app import create_app

ApiFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def api_factory(aiohttp_client: Any, settings_factory: Any) -> ApiFactory:
    async def make(**options: object) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings_factory(**options)))
        return client

    return make


@pytest.fixture
async def api(api_factory: ApiFactory) -> TestClient[Any, Any]:
    return await api_factory()
