"""Database URLs and engines: one store, reached synchronously (SCP threads) or asynchronously (the API and
the housekeeper)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_SECONDS = 5


def _url(raw: str, *, asynchronous: bool) -> URL:
    url = make_url(raw)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite+pysqlite")
    if url.get_backend_name() == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database URL scheme: {url.drivername}")


def sync_url(raw: str) -> URL:
    return _url(raw, asynchronous=False)


def async_url(raw: str) -> URL:
    return _url(raw, asynchronous=True)


def is_sqlite(raw: str) -> bool:
    return make_url(raw).get_backend_name() == "sqlite"


def ensure_sqlite_folder(raw: str) -> None:
    """The embedded store's folder is created on first use (./data by default)."""
    url = make_url(raw)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _engine_options(raw: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What every engine gets: pool_pre_ping, so that connections a database restart cut are replaced on
    their next checkout instead of failing one request each; hide_parameters, because SQLAlchemy otherwise
    writes a failed statement's parameters (patient names, whole datasets) into the exception, and from
    there into every log line that shows it; and for PostgreSQL a connect timeout, so that a database host
    that stopped answering fails a request in seconds (503, C-FIND failure) instead of holding it for the
    minutes TCP takes to give up."""
    options: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True, **kwargs}
    if not is_sqlite(raw):
        options["connect_args"] = {
            "connect_timeout": PG_CONNECT_TIMEOUT_SECONDS,
            **kwargs.get("connect_args", {}),
        }
    return options


def create_sync_engine(raw: str, **kwargs: Any) -> Engine:
    ensure_sqlite_folder(raw)
    engine = create_engine(sync_url(raw), **_engine_options(raw, kwargs))
    if is_sqlite(raw):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_async_db_engine(raw: str, **kwargs: Any) -> AsyncEngine:
    ensure_sqlite_folder(raw)
    engine = create_async_engine(async_url(raw), **_engine_options(raw, kwargs))
    if is_sqlite(raw):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
