"""Fixtures shared by the suite: real NATS and PostgreSQL servers, migrated stores, settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings, load_settings
from shared.migrate import upgrade
from tests.support.servers import NatsServer, Postgres


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(tmp_path_factory.mktemp("pg") / "data")
    yield server
    server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty store: each test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'worklists.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    upgrade(url)
    return url


@pytest.fixture
def settings_factory(database_url: str, nats_server: NatsServer) -> object:
    def make(**options: object) -> Settings:
        # No housekeeper health port unless a test asks for one: 8044 is taken by the first replica.
        overrides: dict[str, object] = {
            "DatabaseUrl": database_url,
            "NatsUrl": nats_server.url,
            "HousekeeperHealthPort": 0,
        }
        overrides.update(options)
        return load_settings(environ={}, overrides=overrides)

    return make
