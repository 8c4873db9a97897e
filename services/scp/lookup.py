"""Store lookup for C-FIND: narrow candidates with the indexed scheduled_steps columns, load items by id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, func, literal_column, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from shared.match_values import fold_pn
from shared.matching import CompiledQuery
from shared.models import MULTI_STATION_PATTERN_PG, ScheduledStep, WorklistItem

# Items fetched per round trip when candidates are not cached (keeps IN lists well under driver limits).
LOAD_BATCH = 500
Version = Any  # the item's updated_at as the database returns it: compared for equality only


@dataclass(frozen=True, slots=True)
class Candidate:
    """An item that may match: its id and the version (updated_at) the narrowing query saw."""

    item_id: str
    version: Version


@dataclass(frozen=True, slots=True)
class LoadedItem:
    item_id: str
    version: Version
    dataset: dict[str, Any]


def escape_like(literal: str, escape: str = "\\") -> str:
    """A LIKE pattern matching `literal` itself: %, _ and the escape character lose their meaning."""
    return literal.replace(escape, escape * 2).replace("%", escape + "%").replace("_", escape + "_")


def escape_glob(literal: str) -> str:
    """A GLOB pattern matching `literal` itself (SQLite GLOB has no ESCAPE clause; brackets quote)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in literal)


def _prefix(column: InstrumentedAttribute[str], prefix: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case and cannot use the index; GLOB is case-sensitive and can. The
        # column holds folded names, so a case-sensitive prefix test on the folded prefix is exact.
        return column.op("GLOB")(escape_glob(prefix) + "*")
    return column.like(escape_like(prefix) + "%", escape="\\")


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


def narrowing(query: CompiledQuery, dialect: str) -> list[ColumnElement[bool]]:
    """SQL conditions on one scheduled_steps row from the query's hints: a superset of the true matches.

    All conditions apply to the same row, i.e. to one Scheduled Procedure Step, as the matching does
    (K.2.2.1: the SPS keys of a query match within one step); item-level keys are copied onto each row.
    """
    s = ScheduledStep
    exact: list[tuple[InstrumentedAttribute[str], str | None]] = [
        (s.modality, query.modality),
        (s.patient_id, query.patient_id),
        (s.accession_number, query.accession_number),
        (s.requested_procedure_id, query.requested_procedure_id),
        (s.sps_id, query.sps_id),
    ]
    conditions: list[ColumnElement[bool]] = [column == value for column, value in exact if value is not None]
    if query.station_aet is not None:
        # ScheduledStationAETitle is 1-n: the index holds several AE titles joined with a backslash, and
        # such a step is always a candidate (exact matching then tests each of its values).
        conditions.append(or_(s.station_aet == query.station_aet, _multi_station(dialect)))
    if query.study_instance_uids is not None:
        conditions.append(s.study_instance_uid.in_(query.study_instance_uids))
    if query.start_range is not None:
        low, high = query.start_range
        # "" is an SPS without a start date, which never matches a date constraint: "0" leaves it out.
        conditions.append(s.start_datetime.between(low or "0", high))
    if query.patient_name_prefix:
        # Folded with the very function that computed the column (folding is idempotent, so a hint that
        # arrives folded already is unchanged): whatever the matching module hands us, the test is exact.
        conditions.append(_prefix(s.patient_name_key, fold_pn(query.patient_name_prefix), dialect))
    return conditions


def candidates_statement(query: CompiledQuery, dialect: str) -> Select[str, datetime]:
    """The narrowing query: ids and versions of the items with a step passing it, earliest scheduled first."""
    s, i = ScheduledStep, WorklistItem
    return (
        select(s.item_id, i.updated_at)
        .join(i, i.id == s.item_id)
        .where(*narrowing(query, dialect))
        .group_by(s.item_id, i.updated_at)
        .order_by(func.min(s.start_datetime), s.item_id)
    )


class ItemStore:
    """The synchronous, read-only store access of the SCP (called from association threads)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def candidates(self, query: CompiledQuery) -> list[Candidate]:
        """Items with at least one step passing the narrowing, earliest scheduled first."""
        with self.engine.connect() as connection:
            rows = connection.execute(candidates_statement(query, self.dialect))
            return [Candidate(row[0], row[1]) for row in rows]

    def load(self, item_ids: Sequence[str]) -> list[LoadedItem]:
        """The current version of each item that still exists (deleted ones are simply absent)."""
        loaded: list[LoadedItem] = []
        with self.engine.connect() as connection:
            for start in range(0, len(item_ids), LOAD_BATCH):
                chunk = item_ids[start : start + LOAD_BATCH]
                statement = select(WorklistItem.id, WorklistItem.updated_at, WorklistItem.dataset).where(
                    WorklistItem.id.in_(chunk)
                )
                loaded.extend(
                    LoadedItem(row[0], row[1], json.loads(row[2])) for row in connection.execute(statement)
                )
        return loaded

    def versions(self) -> dict[str, Version]:
        """Every item's id and version: what a resync compares the cache with."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(WorklistItem.id, WorklistItem.updated_at))
            return {row[0]: row[1] for row in rows}
