"""Store lookup for C-FIND: narrow candidates with the indexed scheduled_steps columns, load items by id."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, Connection, Engine, Select, bindparam, func, literal_column, or_, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute

from shared.match_values import fold_pn
from shared.matching import CompiledQuery
from shared.models import MULTI_STATION_PATTERN_PG, ScheduledStep, WorklistItem

# Items fetched per round trip when candidates are not cached (keeps IN lists well under driver limits).
LOAD_BATCH = 500
T = TypeVar("T")
Version = Any  # the item's updated_at as the database returns it: compared for equality only


class Candidate(NamedTuple):
    """An item that may match: its id and the version (updated_at) the narrowing query saw.

    A named tuple: made from each row in C (`_make`), where a frozen dataclass costs ~1 µs of Python each,
    which a query with 10,000 candidates feels.
    """

    item_id: str
    version: Version


@dataclass(frozen=True, slots=True)
class LoadedItem:
    """An item as stored: its DICOM JSON text, parsed only where a query needs it."""

    item_id: str
    version: Version
    text: str

    @property
    def dataset(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.text)
        return parsed


def escape_like(literal: str, escape: str = "\\") -> str:
    """A LIKE pattern matching `literal` itself: %, _ and the escape character lose their meaning."""
    return literal.replace(escape, escape * 2).replace("%", escape + "%").replace("_", escape + "_")


def escape_glob(literal: str) -> str:
    """A GLOB pattern matching `literal` itself (SQLite GLOB has no ESCAPE clause; brackets quote)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in literal)


def _prefix(column: InstrumentedAttribute[str], dialect: str) -> ColumnElement[bool]:
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case and cannot use the index; GLOB is case-sensitive and can. The
        # column holds folded names, so a case-sensitive prefix test on the folded prefix is exact.
        return column.op("GLOB")(bindparam("name_prefix"))
    return column.like(bindparam("name_prefix"), escape="\\")


def _prefix_pattern(prefix: str, dialect: str) -> str:
    if dialect == "sqlite":
        return escape_glob(prefix) + "*"
    return escape_like(prefix) + "%"


def _multi_station(dialect: str) -> ColumnElement[bool]:
    """The steps scheduled on several stations (ScheduledStationAETitle joined with backslashes).

    On PostgreSQL the pattern goes into the SQL text, not a bound parameter, written exactly as the
    predicate of the partial index ix_scheduled_steps_multi_station_start: the planner then proves that index
    applies even in the generic plan of a statement psycopg has prepared (after 5 executions).
    """
    column = ScheduledStep.station_aet
    if dialect == "postgresql":
        return column.like(literal_column(MULTI_STATION_PATTERN_PG))
    return column.contains("\\", autoescape=True)


# Exact hints: (CompiledQuery attribute, scheduled_steps column), each compared with a bound parameter of
# the attribute's name.
_EXACT = (
    ("modality", ScheduledStep.modality),
    ("patient_id", ScheduledStep.patient_id),
    ("accession_number", ScheduledStep.accession_number),
    ("requested_procedure_id", ScheduledStep.requested_procedure_id),
    ("sps_id", ScheduledStep.sps_id),
)


def narrowing_parameters(query: CompiledQuery, dialect: str) -> dict[str, Any]:
    """The query's narrowing hints as bound parameters; which ones are present picks the statement."""
    params: dict[str, Any] = {
        name: getattr(query, name) for name, _ in _EXACT if getattr(query, name) is not None
    }
    if query.station_aet is not None:
        params["station_aet"] = query.station_aet
    if query.study_instance_uids is not None:
        params["study_instance_uids"] = list(query.study_instance_uids)
    if query.start_range is not None:
        low, high = query.start_range
        # "" is an SPS without a start date, which never matches a date constraint: "0" leaves it out.
        params["start_low"], params["start_high"] = low or "0", high
    if query.patient_name_prefix:
        # Folded with the very function that computed the column (folding is idempotent, so a hint that
        # arrives folded already is unchanged): whatever the matching module hands us, the test is exact.
        params["name_prefix"] = _prefix_pattern(fold_pn(query.patient_name_prefix), dialect)
    return params


def narrowing(hints: frozenset[str], dialect: str) -> list[ColumnElement[bool]]:
    """SQL conditions on one scheduled_steps row for these hints: a superset of the true matches.

    All conditions apply to the same row, i.e. to one Scheduled Procedure Step, as the matching does
    (K.2.2.1: the SPS keys of a query match within one step); item-level keys are copied onto each row.
    """
    s = ScheduledStep
    conditions: list[ColumnElement[bool]] = [
        column == bindparam(name) for name, column in _EXACT if name in hints
    ]
    if "station_aet" in hints:
        # ScheduledStationAETitle is 1-n: the index holds several AE titles joined with a backslash, and
        # such a step is always a candidate (exact matching then tests each of its values).
        conditions.append(or_(s.station_aet == bindparam("station_aet"), _multi_station(dialect)))
    if "study_instance_uids" in hints:
        conditions.append(s.study_instance_uid.in_(bindparam("study_instance_uids", expanding=True)))
    if "start_low" in hints:
        conditions.append(s.start_datetime.between(bindparam("start_low"), bindparam("start_high")))
    if "name_prefix" in hints:
        conditions.append(_prefix(s.patient_name_key, dialect))
    return conditions


@functools.lru_cache(maxsize=256)
def _statement(hints: frozenset[str], dialect: str) -> Select[str, datetime]:
    """One statement object per combination of hints: SQLAlchemy then builds it and computes its cache key
    once, not for every C-FIND (a few hundred microseconds of CPU each time)."""
    s, i = ScheduledStep, WorklistItem
    return (
        select(s.item_id, i.updated_at)
        .join(i, i.id == s.item_id)
        .where(*narrowing(hints, dialect))
        .group_by(s.item_id, i.updated_at)
        .order_by(func.min(s.start_datetime), s.item_id)
    )


def candidates_query(query: CompiledQuery, dialect: str) -> tuple[Select[str, datetime], dict[str, Any]]:
    """The narrowing query (ids and versions of the items with a step passing it, earliest scheduled
    first) and its parameters."""
    params = narrowing_parameters(query, dialect)
    return _statement(frozenset(params), dialect), params


def candidates_statement(query: CompiledQuery, dialect: str) -> Select[str, datetime]:
    """The narrowing query with its parameters bound (to look at, e.g. EXPLAIN it)."""
    statement, params = candidates_query(query, dialect)
    return statement.params(params)


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    """A narrowing statement compiled once for the engine's driver: its SQL text and parameter order."""

    sql: str
    names: tuple[str, ...] | None  # positional drivers (sqlite3): the parameters' order; None: by name
    fixed: dict[str, Any]  # parameters SQLAlchemy bound itself (e.g. autoescape's LIKE pattern)
    version: Callable[[Any], Any] | None  # turns the driver's updated_at into what SQLAlchemy returns

    def parameters(self, params: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        values = {**self.fixed, **params} if self.fixed else params
        return values if self.names is None else tuple(values[name] for name in self.names)


def _driver_statement(
    statement: Select[str, datetime], hints: frozenset[str], dialect: Dialect
) -> _DriverStatement | None:
    """The statement as its driver runs it, or None when SQLAlchemy must run it (a parameter it expands
    or converts per execution)."""
    compiled = statement.compile(dialect=dialect)
    binds = compiled.binds
    if compiled._bind_processors or any(
        bind.expanding or bind.callable is not None for bind in binds.values()
    ):
        return None
    fixed = {name: bind.value for name, bind in binds.items() if name not in hints}
    names = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    updated_at = WorklistItem.__table__.c.updated_at.type.dialect_impl(dialect)
    return _DriverStatement(str(compiled), names, fixed, updated_at.result_processor(dialect, None))


class ItemStore:
    """The synchronous, read-only store access of the SCP (called from association threads).

    The engine checks connections out without a ping (a round trip per C-FIND); a pooled connection the
    store has closed meanwhile (restart, failover, idle timeout) fails its statement instead, SQLAlchemy then
    discards every connection older than it, and the read is retried once on a fresh one.

    The narrowing query, run for every C-FIND, goes to the driver's cursor directly: SQLAlchemy's execution
    and row layers cost more CPU than SQLite takes to answer a selective query. Its errors are still raised
    as SQLAlchemy's (DBAPIError, parameters hidden), and a closed connection still retried.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._driver: dict[frozenset[str], _DriverStatement | None] = {}  # by hints; races only recompute

    def _read(self, work: Callable[[Connection], T]) -> T:
        try:
            with self.engine.connect() as connection:
                return work(connection)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        with self.engine.connect() as connection:
            return work(connection)

    def candidates(self, query: CompiledQuery) -> list[Candidate]:
        """Items with at least one step passing the narrowing, earliest scheduled first."""
        statement, params = candidates_query(query, self.dialect)
        hints = frozenset(params)
        if hints not in self._driver:
            self._driver[hints] = _driver_statement(statement, hints, self.engine.dialect)
        driver = self._driver[hints]
        if driver is not None:
            rows = self._fetch(driver, params)
            if rows is not None:
                convert, make = driver.version, Candidate._make
                if convert is None:
                    return list(map(make, rows))
                return [make((item_id, convert(version))) for item_id, version in rows]

        def read(connection: Connection) -> list[Candidate]:
            return [Candidate(row[0], row[1]) for row in connection.execute(statement, params).all()]

        return self._read(read)

    def _fetch(self, driver: _DriverStatement, params: dict[str, Any]) -> list[Any] | None:
        """The rows of the statement, run on a pooled connection's cursor; None when the connection turned
        out closed (invalidated: the caller runs it through SQLAlchemy, which retries on a fresh one)."""
        dialect = self.engine.dialect
        error: Any = dialect.loaded_dbapi.Error
        parameters = driver.parameters(params)
        try:
            connection = self.engine.raw_connection()
        except error as exc:  # the store is away: raised as SQLAlchemy raises a failed connect
            raise DBAPIError.instance(None, None, exc, error, hide_parameters=True, dialect=dialect) from exc
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(driver.sql, parameters)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except error as exc:
            if dialect.is_disconnect(exc, connection.dbapi_connection, None):
                connection.invalidate(exc)
                return None
            # As SQLAlchemy raises it, without the parameters (patient IDs and names) in its text.
            raise DBAPIError.instance(
                driver.sql, parameters, exc, error, hide_parameters=True, dialect=dialect
            ) from exc
        finally:
            connection.close()

    def load(self, item_ids: Sequence[str]) -> list[LoadedItem]:
        """The current version of each item that still exists (deleted ones are simply absent)."""

        def read(connection: Connection) -> list[LoadedItem]:
            loaded: list[LoadedItem] = []
            for start in range(0, len(item_ids), LOAD_BATCH):
                chunk = item_ids[start : start + LOAD_BATCH]
                statement = select(WorklistItem.id, WorklistItem.updated_at, WorklistItem.dataset).where(
                    WorklistItem.id.in_(chunk)
                )
                loaded.extend(LoadedItem(row[0], row[1], row[2]) for row in connection.execute(statement))
            return loaded

        return self._read(read)

    def versions(self) -> dict[str, Version]:
        """Every item's id and version: what a resync compares the cache with."""

        def read(connection: Connection) -> dict[str, Version]:
            rows = connection.execute(select(WorklistItem.id, WorklistItem.updated_at))
            return {row[0]: row[1] for row in rows}

        return self._read(read)
