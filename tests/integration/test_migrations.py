"""Migrations: the same revisions run on SQLite and PostgreSQL, match the models, and downgrade cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from shared.db import create_sync_engine
from shared.migrate import downgrade, upgrade
from shared.models import Base, include_object_for


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_sync_engine(database_url)
    try:
        with engine.connect() as conn:
            # As shared/migrations/env.py compares: PostgreSQL-only indexes are not expected on SQLite.
            options = {"include_object": include_object_for(conn.dialect.name)}
            diff = compare_metadata(MigrationContext.configure(conn, opts=options), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(database_url: str) -> None:
    downgrade(database_url, "base")
    engine = create_sync_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(database_url)
        engine.dispose()
        tables = set(inspect(engine).get_table_names())
        assert {"worklist_items", "scheduled_steps", "outbox"} <= tables
    finally:
        engine.dispose()
