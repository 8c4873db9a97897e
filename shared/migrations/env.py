"""Alembic environment: runs migrations on the URL handed over by shared.migrate (sync driver)."""

from alembic import context
from sqlalchemy import Connection

from shared.db import create_sync_engine
from shared.models import Base, include_object_for


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Indexes declared for PostgreSQL only (shared.models.on_postgresql_only) are not expected elsewhere.
        include_object=include_object_for(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: run migrations through `python -m shared.migrate`")
    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline migrations are not supported")
run_migrations_online()
