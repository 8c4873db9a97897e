"""Query parameters of `GET /worklists`: paging, sorting, free text and C-FIND attribute filters, in SQL.

Filters match as a C-FIND would (PS3.4 C.2.2.2), on the indexed `scheduled_steps` columns: an item is listed
when one of its Scheduled Procedure Steps satisfies every filter at once (sequence matching within one step;
the item-level keys are copied onto each step row). So, as in C-FIND, an item without any SPS is listed only
when no filter constrains. Exact matching is case-sensitive, `*` and `?` are wildcards on text keys, a
zero-length value or `*` is universal, `\\` separates values of which any may match, dates and times take
ranges, and ScheduledProcedureStepStartDate with ScheduledProcedureStepStartTime form one date-time range.
PatientName is matched on its alphabetic group, case- and accent-insensitively when CaseSensitivePN is false.
The free text `q` is different on purpose: every word must occur, in any case, in the patient's name, ID or
accession number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping
from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from services.api.errors import RequestError
from shared import store
from shared.match_values import (
    BadValue,
    Bounds,
    combined_bounds,
    da_bounds,
    fold_pn,
    is_universal,
    normalize_pn,
    normalize_query_value,
    tm_bounds,
)
from shared.models import ScheduledStep, WorklistItem

# Parameters that are not filters; `format` is read by the view itself.
VIEW_PARAMETERS = frozenset({"format"})
PAGING_PARAMETERS = ("limit", "offset", "since", "sort", "q")
MAX_VALUE_LENGTH = 256
MAX_WORDS = 8
START_DATE, START_TIME = "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"
STUDY_INSTANCE_UID = "StudyInstanceUID"
PATIENT_NAME = "PatientName"

# Text keys: DICOM keyword -> (scheduled_steps column, VR).
TEXT_FILTERS: dict[str, tuple[InstrumentedAttribute[str], str]] = {
    "PatientID": (ScheduledStep.patient_id, "LO"),
    "AccessionNumber": (ScheduledStep.accession_number, "SH"),
    "RequestedProcedureID": (ScheduledStep.requested_procedure_id, "SH"),
    "Modality": (ScheduledStep.modality, "CS"),
    "ScheduledStationAETitle": (ScheduledStep.station_aet, "AE"),
    "ScheduledStationName": (ScheduledStep.station_name, "SH"),
    "ScheduledProcedureStepID": (ScheduledStep.sps_id, "SH"),
    "ScheduledProcedureStepStatus": (ScheduledStep.status, "CS"),
}
FILTERS = (*TEXT_FILTERS, PATIENT_NAME, STUDY_INSTANCE_UID, START_DATE, START_TIME)

# sort value -> ORDER BY; the item's earliest SPS start orders by schedule. Items without a step sort as ""
# (before every date, as steps without a date do), the same on both databases whatever their NULL order.
_EARLIEST_START = func.coalesce(
    select(func.min(ScheduledStep.start_datetime))
    .where(ScheduledStep.item_id == WorklistItem.id)
    .scalar_subquery(),
    "",
)
SORTS: dict[str, tuple[ColumnElement[Any], ...]] = {
    "CreationDate": (WorklistItem.created_at.asc(), WorklistItem.id.asc()),
    "-CreationDate": (WorklistItem.created_at.desc(), WorklistItem.id.desc()),
    "ScheduledStart": (_EARLIEST_START.asc(), WorklistItem.created_at.asc(), WorklistItem.id.asc()),
    "-ScheduledStart": (_EARLIEST_START.desc(), WorklistItem.created_at.desc(), WorklistItem.id.desc()),
}

# A text column, or an SQL expression on one.
Text = ColumnElement[str] | InstrumentedAttribute[str]

_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


@dataclass(frozen=True)
class TextFilter:
    """Any of `values` (exact, or with `*` / `?` wildcards) on one column, or on its alphabetic group."""

    column: InstrumentedAttribute[str]
    values: tuple[str, ...]
    alphabetic: bool = False


@dataclass(frozen=True)
class StartFilter:
    """An inclusive range on the SPS start: `YYYYMMDDHHMMSS` keys, or `HHMMSS` keys for a time alone."""

    low: str | None
    high: str | None
    time_only: bool
    needs_time: bool  # a time constraint never matches a step without a start time


Filter = TextFilter | StartFilter


@dataclass(frozen=True)
class Listing:
    filters: tuple[Filter, ...] = ()
    words: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0
    sort: str = "CreationDate"


@dataclass(frozen=True)
class Page:
    items: Sequence[store.StoredItem]
    total: int


def parse(params: MultiMapping[str], *, case_sensitive_pn: bool) -> Listing:
    """Read and validate the query string; raises RequestError (400) naming the offending parameter."""
    for name in params:
        if name not in VIEW_PARAMETERS and name not in PAGING_PARAMETERS and name not in FILTERS:
            known = ", ".join((*PAGING_PARAMETERS, *VIEW_PARAMETERS, *FILTERS))
            raise RequestError(400, f"is not a parameter of this listing; known: {known}", name)
        if len(params.getall(name)) > 1:
            raise RequestError(400, "is given more than once", name)
        if len(params[name]) > MAX_VALUE_LENGTH:
            raise RequestError(400, f"is longer than {MAX_VALUE_LENGTH} characters", name)
        if "\x00" in params[name]:  # no stored value holds one, and PostgreSQL refuses it in a query
            raise RequestError(400, "contains a NUL character", name)
    if "offset" in params and "since" in params:
        raise RequestError(400, "give offset or since (its Orthanc name), not both", "since")
    filters: list[Filter] = []
    for keyword, (column, vr) in TEXT_FILTERS.items():
        if keyword in params and (values := _text_values(params[keyword], vr, keyword)):
            filters.append(TextFilter(column, values))
    if PATIENT_NAME in params and (pn := _name_filter(params[PATIENT_NAME], case_sensitive_pn)):
        filters.append(pn)
    if STUDY_INSTANCE_UID in params and (uids := _uids(params[STUDY_INSTANCE_UID])):
        filters.append(TextFilter(ScheduledStep.study_instance_uid, uids))
    if start := _start_filter(params.get(START_DATE), params.get(START_TIME)):
        filters.append(start)
    sort = params.get("sort", "CreationDate")
    if sort not in SORTS:
        raise RequestError(400, f"must be one of {', '.join(SORTS)}", "sort")
    limit = _integer(params, "limit")
    offset_name = "since" if "since" in params else "offset"
    return Listing(
        filters=tuple(filters),
        words=_words(params.get("q", "")),
        limit=limit or None,  # as in Orthanc, limit=0 means no limit
        offset=_integer(params, offset_name) or 0,
        sort=sort,
    )


async def fetch(session: AsyncSession, listing: Listing) -> Page:
    """One page of items and the number of items matching in all."""
    dialect = session.get_bind().dialect.name
    where = conditions(listing, dialect)
    items = await store.list_items(
        session, limit=listing.limit, offset=listing.offset, where=where, order_by=SORTS[listing.sort]
    )
    if listing.limit is None and listing.offset == 0:
        return Page(items, len(items))
    return Page(items, await store.count_items(session, where=where))


def conditions(listing: Listing, dialect: str) -> list[ColumnElement[bool]]:
    """WHERE clauses on worklist_items: the ids of items with one step matching every constraint."""
    step_conditions = [_filter_sql(f, dialect) for f in listing.filters]
    step_conditions += [_word_sql(word) for word in listing.words]
    if not step_conditions:
        return []
    return [WorklistItem.id.in_(select(ScheduledStep.item_id).where(*step_conditions))]


# ---------------------------------------------------------------------------------------------------------
# Parameter parsing


def _integer(params: MultiMapping[str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise RequestError(400, "must be a whole number from 0 to 999999999", name)
    return int(text)


def _text_values(raw: str, vr: str, keyword: str) -> tuple[str, ...]:
    """The values of a text key; () when one of them is universal (the key then constrains nothing)."""
    values = [normalize_query_value(vr, value) for value in raw.split("\\")]
    if any(is_universal(value) for value in values):
        return ()
    if vr in ("AE", "CS") and not all(value.isascii() for value in values):
        raise RequestError(400, f"VR {vr} allows only ASCII characters", keyword)
    return tuple(values)


def _name_filter(raw: str, case_sensitive: bool) -> TextFilter | None:
    """PatientName on its alphabetic group; folded on both sides when CaseSensitivePN is false."""
    values = [normalize_pn(value) for value in raw.split("\\")]
    if any("=" in value for value in values):
        raise RequestError(
            400, 'only the alphabetic group can be filtered: remove "=" and what follows', "PatientName"
        )
    if any(is_universal(value) for value in values):
        return None
    if case_sensitive:
        return TextFilter(ScheduledStep.patient_name, tuple(values), alphabetic=True)
    folded = tuple(fold_pn(value) for value in values)
    return TextFilter(ScheduledStep.patient_name_key, folded, alphabetic=True)


def _uids(raw: str) -> tuple[str, ...]:
    """List of UID matching (C.2.2.2.2); no wildcards on UIDs."""
    values = [value.strip(" \0") for value in raw.split("\\")]
    if any(is_universal(value) for value in values):
        return ()
    for value in values:
        if len(value) > 64 or not _UID.fullmatch(value):
            raise RequestError(400, "is not a UID (digits and dots), nor a list of UIDs", STUDY_INSTANCE_UID)
    return tuple(values)


def _bounds(raw: str | None, keyword: str, parse: Callable[[str], Bounds]) -> Bounds | None:
    if raw is None or is_universal(raw.strip()):
        return None
    if "\\" in raw:
        raise RequestError(400, "takes one value or one range, not a list", keyword)
    try:
        bounds = parse(raw.strip())
    except BadValue as exc:
        example = "20251014-20251020" if keyword == START_DATE else "0800-1200"
        raise RequestError(400, f"{exc}: give a value or a range such as {example}", keyword) from None
    return bounds


def _start_filter(date_raw: str | None, time_raw: str | None) -> StartFilter | None:
    """The SPS start keys; date and time together are one date-time range (C.2.2.2.5.4)."""
    date = _bounds(date_raw, START_DATE, da_bounds)
    time = _bounds(time_raw, START_TIME, tm_bounds)
    if date is None and time is None:
        return None
    if date is None:
        assert time is not None
        return StartFilter(_cut(time[0], 6), _cut(time[1], 6), time_only=True, needs_time=True)
    if time is None:
        low = date[0] + "000000" if date[0] else None
        high = date[1] + "235959" if date[1] else None
        return StartFilter(low, high, time_only=False, needs_time=False)
    low, high = combined_bounds(date, time)
    return StartFilter(_cut(low, 14), _cut(high, 14), time_only=False, needs_time=True)


def _cut(key: str | None, length: int) -> str | None:
    """Stored start keys have whole seconds: a bound's fraction does not change what it includes."""
    return key[:length] if key is not None else None


def _words(text: str) -> tuple[str, ...]:
    words = tuple(dict.fromkeys(text.split()))
    if len(words) > MAX_WORDS:
        raise RequestError(400, f"takes at most {MAX_WORDS} words", "q")
    return words


# ---------------------------------------------------------------------------------------------------------
# SQL


def _alphabetic(column: InstrumentedAttribute[str], dialect: str) -> ColumnElement[str]:
    """The part of a stored `Alphabetic=Ideographic=Phonetic` name before the first "="."""
    if dialect == "postgresql":
        return func.split_part(column, "=", 1)
    position = func.instr(column, "=")
    return case((position > 0, func.substr(column, 1, position - 1)), else_=column)


def _filter_sql(spec: Filter, dialect: str) -> ColumnElement[bool]:
    if isinstance(spec, StartFilter):
        return _start_sql(spec)
    target: Text = _alphabetic(spec.column, dialect) if spec.alphabetic else spec.column
    return or_(*(_value_sql(target, value, dialect) for value in spec.values))


def _value_sql(target: Text, value: str, dialect: str) -> ColumnElement[bool]:
    """Single value matching (exact, case-sensitive) or wildcard matching (C.2.2.2.1, C.2.2.2.4)."""
    if "*" not in value and "?" not in value:
        return target == value
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case; GLOB does not, and its * and ? are DICOM's. Only [ is special.
        return target.op("GLOB", is_comparison=True)(value.replace("[", "[[]"))
    pattern = _escape_like(value).replace("*", "%").replace("?", "_")
    return target.like(pattern, escape="\\")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _start_sql(spec: StartFilter) -> ColumnElement[bool]:
    key: Text = ScheduledStep.start_datetime
    parts: list[ColumnElement[bool]] = [ScheduledStep.start_datetime != ""]
    if spec.time_only:
        key = func.substr(ScheduledStep.start_datetime, 9, 6)
    if spec.needs_time:
        parts.append(ScheduledStep.start_time != "")
    if spec.low is not None:
        parts.append(key >= spec.low)
    if spec.high is not None:
        parts.append(key <= spec.high)
    return and_(*parts)


def _word_sql(word: str) -> ColumnElement[bool]:
    """A word of `q`: part of the name (case and accents ignored), of the patient ID or of the accession."""
    contains = f"%{_escape_like(word)}%"
    folded = f"%{_escape_like(fold_pn(word))}%"
    return or_(
        ScheduledStep.patient_name_key.like(folded, escape="\\"),
        ScheduledStep.patient_id.ilike(contains, escape="\\"),
        ScheduledStep.accession_number.ilike(contains, escape="\\"),
    )
