"""Database URLs and engines: one store, reached synchronously (SCP threads) or asynchronously (the API and
the housekeeper)."""

from __future__ import annotations

import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
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


# How a pooled connection is checked before use: "ping" is a round trip (SELECT 1) at every checkout;
# "socket" looks, without a round trip, whether the server has said anything on the idle connection.
Liveness = Literal["ping", "socket"]


def create_async_db_engine(raw: str, *, liveness: Liveness = "ping", **kwargs: Any) -> AsyncEngine:
    ensure_sqlite_folder(raw)
    socket_check = liveness == "socket" and not is_sqlite(raw)
    if socket_check:
        kwargs = {**kwargs, "pool_pre_ping": False}
    engine = create_async_engine(async_url(raw), **_engine_options(raw, kwargs))
    if is_sqlite(raw):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    if socket_check:
        event.listen(engine.sync_engine, "checkout", _refuse_closed_socket)
    return engine


def _refuse_closed_socket(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Pool checkout: replace a connection the server closed while it sat in the pool.

    An idle PostgreSQL connection has nothing to read: the server speaks on it only to end it (a restart,
    pg_terminate_backend, an idle timeout), with a FATAL message and then end-of-file. So a readable socket,
    checked without a round trip, stands for the pre-ping's SELECT 1 that would have failed; the pool then
    opens a new connection instead of failing a request. (A host that vanished without a word is noticed by
    neither, but by the statement's own failure.)
    """
    driver = record.driver_connection
    if driver is None or driver.closed or _readable(driver.fileno()):
        raise DisconnectionError("the server closed this pooled connection")


def _readable(fd: int) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_psycopg(engine: AsyncEngine) -> bool:
    return engine.dialect.driver == "psycopg"


@asynccontextmanager
async def psycopg_connection(engine: AsyncEngine) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection's psycopg connection itself, for the few hot statements written for PostgreSQL.

    psycopg's errors come out as SQLAlchemy's (IntegrityError, OperationalError...), as from a session, and
    a connection that broke is dropped from the pool. The connection goes back as it was lent: idle, not in
    autocommit; one left otherwise (the caller was cancelled mid-way) is dropped rather than returned.
    """
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert isinstance(driver, psycopg.AsyncConnection)
        try:
            yield driver
        except psycopg.Error as exc:
            lost = driver.closed or driver.broken or not await _restored(driver)
            if lost:
                await connection.invalidate(exc)
            raise DBAPIError.instance(
                None,
                None,
                exc,
                psycopg.Error,
                hide_parameters=True,  # as every engine: no patient data in exceptions
                connection_invalidated=lost,
                dialect=engine.dialect,
            ) from exc
        except BaseException:
            await connection.invalidate()
            raise
        if not await _restored(driver):
            await connection.invalidate()


async def _restored(driver: psycopg.AsyncConnection[Any]) -> bool:
    """Put the connection back as the pool lent it (idle, not in autocommit); False when it cannot be."""
    try:
        if driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await driver.execute("ROLLBACK") if driver.autocommit else await driver.rollback()
        if driver.autocommit:
            await driver.set_autocommit(False)
    except psycopg.Error:
        return False
    return True
