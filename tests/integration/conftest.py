"""Integration fixtures: the API application on a real store and a real NATS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.api.app import create_app

ApiFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def api_factory(settings_factory: Any, aiohttp_client: Any) -> ApiFactory:
    # settings_factory (and so NATS) first: the app closes before NATS stops, so shutdown does not wait on it.
    async def make(**options: object) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings_factory(**options)))
        return client

    return make


@pytest.fixture
async def api(api_factory: ApiFactory) -> TestClient[Any, Any]:
    return await api_factory()
