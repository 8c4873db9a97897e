"""One Modality Worklist C-FIND: decode, compile, narrow, match and stream answers with their statuses."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from sqlalchemy.exc import SQLAlchemyError

from services.scp.answers import AnswerCache, encode_answer
from services.scp.cache import BATCH, ItemCache
from services.scp.charsets import with_character_set
from services.scp.lookup import Candidate, ItemStore, Version
from services.scp.prepared import (
    Prepared,
    PreparedQueries,
    PreparedQuery,
    StepMemo,
    Unanswerable,
    prepare,
    prepare_encoded,
)
from shared.dicom_json import TagsError, dicom_json_to_dataset
from shared.matching import CompiledQuery, MatchOptions, matching_steps, response

logger = logging.getLogger(__name__)

# C-FIND statuses (PS3.4 Table K.4-1 and C.4-1; PS3.7 Annex C).
SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_UNSUPPORTED_KEYS = 0xFF01
CANCEL = 0xFE00
# LimitAnswers: Table K.4-1 defines no warning status for MWL C-FIND (0xB001 "response limit" exists only
# for Query/Retrieve, C.4.1.1.4), and a final status must be Success, Cancel or a Failure. "Refused: Out of
# resources" with its ErrorComment (a related field of A700 in K.4-1) says the SCP stopped before the end;
# the answers already sent stay valid. (dcm4chee refuses such a query whole with 0xC000 "Request entity too
# large"; Orthanc ends with 0xFE00 although nobody cancelled.)
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH = 0xA900
# "Failed: Unable to process" (Cxxx): our own codes within the range, each with an ErrorComment.
STORE_UNAVAILABLE = 0xC001
INTERNAL_ERROR = 0xC002
NOT_ALLOWED = 0xC003

_SPS_KEY, _STATION_KEY = "00400100", "00400001"

Status = int | Dataset
# A pending answer is a Dataset, or its encoded bytes when the caller asked for them (find(implicit=...)).
Response = tuple[Status, Dataset | bytes | None]


def failure(code: int, comment: str, offending: list[int] | None = None) -> Dataset:
    """A failure status dataset: ErrorComment is LO, so at most 64 characters, and never patient data."""
    status = Dataset()
    status.Status = code
    if offending:
        status.OffendingElement = offending
    status.ErrorComment = comment[:64]
    return status


@dataclass(frozen=True)
class FindOptions:
    match: MatchOptions
    default_character_set: str  # decodes queries that declare no SpecificCharacterSet
    limit_answers: int = 0  # 0: no limit
    filter_issuer_aet: bool = False


@dataclass
class FindOutcome:
    """What one C-FIND did, for the log line (never patient data)."""

    answers: int = 0
    status: int = SUCCESS
    candidates: int = 0


def steps_at_station(item: dict[str, Any], station: str) -> dict[str, Any] | None:
    """The item with only its steps scheduled on `station` (None when it has none)."""
    element = item.get(_SPS_KEY) or {}
    steps = element.get("Value") or []
    kept = [step for step in steps if station in _stations(step)]
    if not kept:
        return None
    return item if len(kept) == len(steps) else {**item, _SPS_KEY: {**element, "Value": kept}}


def _stations(step: dict[str, Any]) -> set[str]:
    values = (step.get(_STATION_KEY) or {}).get("Value") or []
    return {str(v).strip(" ") for v in values if v}


class WorklistFinder:
    """The C-FIND logic behind the handler; thread-safe, holds no per-query state.

    Its only caches are shared and bounded: items (ItemCache), encoded answers (AnswerCache) and the
    prepared queries of the identifiers received as bytes (PreparedQueries).
    """

    def __init__(
        self,
        store: ItemStore,
        cache: ItemCache,
        options: FindOptions,
        answers: AnswerCache | None = None,
        prepared: PreparedQueries | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.options = options
        self.answers = answers if answers is not None else AnswerCache()
        self.prepared = prepared if prepared is not None else PreparedQueries()

    def find(
        self,
        identifier: Dataset,
        calling_aet: str,
        is_cancelled: Callable[[], bool],
        outcome: FindOutcome,
        implicit: bool | None = None,
    ) -> Iterator[Response]:
        """Yield (status, answer) pairs: pending answers, then at most one final non-success status.

        With `implicit` set, pending answers are the identifier's bytes in implicit (True) or explicit
        (False) VR little endian, from the answer cache when the same answer was encoded before.
        The identifier is decoded in place (its SpecificCharacterSet removed) and not cached.
        """
        prepared = prepare(identifier, self.options.default_character_set, self.options.match)
        yield from self._run(prepared, calling_aet, is_cancelled, outcome, implicit)

    def find_encoded(
        self,
        identifier: bytes,
        implicit: bool,
        calling_aet: str,
        is_cancelled: Callable[[], bool],
        outcome: FindOutcome,
    ) -> Generator[Response, None, None]:
        """As find(identifier decoded, ..., implicit=implicit), from the identifier's bytes in implicit
        (True) or explicit (False) VR little endian, the transfer syntax the answers are encoded in.

        Each distinct identifier is decoded and compiled once (PreparedQueries), failures included.
        """
        options = self.options
        data = bytes(identifier)  # hashable even when handed a bytearray or memoryview

        def make() -> Prepared:
            return prepare_encoded(data, implicit, options.default_character_set, options.match)

        prepared = self.prepared.get(data, implicit, make)
        yield from self._run(prepared, calling_aet, is_cancelled, outcome, implicit)

    def _run(
        self,
        prepared: Prepared,
        calling_aet: str,
        is_cancelled: Callable[[], bool],
        outcome: FindOutcome,
        implicit: bool | None,
    ) -> Iterator[Response]:
        if isinstance(prepared, Unanswerable):
            if prepared.error is not None:
                # The exception's text may quote the identifier's values (patient data): its type only.
                logger.warning(
                    "C-FIND identifier from %s cannot be decoded (%s)", calling_aet, prepared.error
                )
            outcome.status = IDENTIFIER_DOES_NOT_MATCH
            yield failure(IDENTIFIER_DOES_NOT_MATCH, prepared.comment, list(prepared.offending)), None
            return
        query, station = prepared.query, None
        if self.options.filter_issuer_aet and prepared.station_open:
            station = calling_aet.strip(" ")
            query = dataclasses.replace(query, station_aet=station)
        if implicit is None:
            make = self._datasets(query, prepared)
        else:
            make = self._encoded(query, prepared, implicit)
        shortcut = self._shortcut(query, prepared, implicit, station)
        try:
            yield from self._answers(query, station, is_cancelled, outcome, make, shortcut, prepared.memo)
        except SQLAlchemyError as exc:
            logger.error(
                "C-FIND from %s failed: worklist store unavailable (%s)", calling_aet, type(exc).__name__
            )
            outcome.status = STORE_UNAVAILABLE
            yield failure(STORE_UNAVAILABLE, "Worklist store unavailable; try again later"), None
        except Exception:
            logger.exception("C-FIND from %s failed", calling_aet)
            outcome.status = INTERNAL_ERROR
            yield failure(INTERNAL_ERROR, "Internal error of the worklist server"), None

    def _answers(
        self,
        query: CompiledQuery,
        station: str | None,
        is_cancelled: Callable[[], bool],
        outcome: FindOutcome,
        make: AnswerMaker,
        shortcut: Shortcut | None,
        memo: StepMemo | None,
    ) -> Iterator[Response]:
        pending = PENDING_UNSUPPORTED_KEYS if query.unsupported else PENDING
        limit = self.options.limit_answers
        candidates = self.store.candidates(query)
        outcome.candidates = len(candidates)
        for answers in self._per_item(candidates, query, station, make, shortcut, memo):
            if is_cancelled():
                outcome.status = CANCEL
                yield CANCEL, None
                return
            for answer in answers:
                if limit and outcome.answers >= limit:
                    outcome.status = OUT_OF_RESOURCES
                    yield failure(OUT_OF_RESOURCES, f"LimitAnswers {limit} reached: list cut"), None
                    return
                if answer is not None:
                    outcome.answers += 1
                    yield pending, answer
        if is_cancelled():  # a cancel that arrived after the last answer still deserves its FE00
            outcome.status = CANCEL
            yield CANCEL, None

    def _per_item(
        self,
        candidates: list[Candidate],
        query: CompiledQuery,
        station: str | None,
        make: AnswerMaker,
        shortcut: Shortcut | None,
        memo: StepMemo | None,
    ) -> Iterator[Iterator[Dataset | bytes | None]]:
        """Each candidate's answers, lazily, in the candidates' order: from the answer cache alone when
        `shortcut` has them all, else by matching the item (restored from the item cache or the store)."""
        for start in range(0, len(candidates), BATCH):
            batch = candidates[start : start + BATCH]
            ready: dict[str, list[bytes]] = {}
            if shortcut is not None:
                for candidate in batch:
                    found = shortcut(candidate.item_id, candidate.version)
                    if found is not None:
                        ready[candidate.item_id] = found
            rest = [candidate for candidate in batch if candidate.item_id not in ready]
            # Restored one at a time, in order, as the answers go out: a batch of restored items kept alive
            # together would survive the garbage collector's young generation and make it scan them again.
            entries = self.cache.entries(rest)
            entry = next(entries, None)
            for candidate in batch:
                item_id = candidate.item_id
                if item_id in ready:
                    yield iter(ready[item_id])
                elif entry is not None and entry[0] == item_id:  # else deleted meanwhile: skipped
                    _, version, item = entry
                    entry = None  # the item's only reference is the generator below
                    yield self._matched(query, station, make, memo, item_id, version, item)
                    entry = next(entries, None)

    @staticmethod
    def _matched(
        query: CompiledQuery,
        station: str | None,
        make: AnswerMaker,
        memo: StepMemo | None,
        item_id: str,
        version: Version,
        item: dict[str, Any],
    ) -> Iterator[Dataset | bytes | None]:
        steps = matching_steps(query, item)
        if memo is not None:
            memo.put(item_id, version, tuple(steps))
        for index in steps:
            if station is not None and station not in _stations(_steps(item)[index]):
                continue  # FilterIssuerAet: only the steps scheduled on the calling station
            yield make(item_id, version, item, index)

    def _shortcut(
        self, query: CompiledQuery, prepared: PreparedQuery, implicit: bool | None, station: str | None
    ) -> Shortcut | None:
        """An item whose answers are all in the answer cache need not be restored and matched at all when
        the steps it matches are known: every step for a query that constrains nothing (a universal one),
        else the ones this prepared query matched at the item's version before (its StepMemo)."""
        shape = prepared.shape
        if implicit is None or station is not None or shape is None:
            return None
        memo = prepared.memo
        charset, answers, cache = prepared.charset, self.answers, self.cache
        if not query.top.predicates and query.sps is None:

            def matching(item_id: str, version: Version) -> Sequence[int] | None:
                steps = cache.steps(item_id, version)
                return range(steps) if steps else None  # not cached at this version, or without steps

        elif memo is not None:
            matching = memo.get
        else:
            return None

        def lookup(item_id: str, version: Version) -> list[bytes] | None:
            steps = matching(item_id, version)
            if steps is None:  # the item decides
                return None
            found: list[bytes] = []
            for index in steps:
                data = answers.get((item_id, version, index, shape, charset, implicit))
                if data is None:
                    return None
                found.append(data)
            return found

        return lookup

    def _datasets(self, query: CompiledQuery, prepared: PreparedQuery) -> AnswerMaker:
        terms = prepared.terms

        def make(item_id: str, version: Version, item: dict[str, Any], index: int) -> Dataset | None:
            try:
                return dicom_json_to_dataset(with_character_set(response(query, item, index), terms))
            except TagsError:
                _skipped(item_id)
                return None

        return make

    def _encoded(self, query: CompiledQuery, prepared: PreparedQuery, implicit: bool) -> AnswerMaker:
        terms, shape, charset = prepared.terms, prepared.shape, prepared.charset
        answers = self.answers

        def make(item_id: str, version: Version, item: dict[str, Any], index: int) -> bytes | None:
            key = (item_id, version, index, shape, charset, implicit)
            if shape is not None and (cached := answers.get(key)) is not None:
                return cached
            try:
                data = encode_answer(response(query, item, index), terms, implicit)
            except TagsError:
                data = None
            if data is None:
                _skipped(item_id)
                return None
            if shape is not None:
                answers.put(key, data)
            return data

        return make


AnswerMaker = Callable[[str, Version, dict[str, Any], int], Dataset | bytes | None]
# An item's every answer from the answer cache alone, or None (WorklistFinder._shortcut).
Shortcut = Callable[[str, Version], list[bytes] | None]


def _steps(item: dict[str, Any]) -> list[dict[str, Any]]:
    # As shared.matching counts them: non-object entries are no steps.
    return [step for step in (item.get(_SPS_KEY) or {}).get("Value") or [] if isinstance(step, dict)]


def _skipped(item_id: str) -> None:
    # One damaged stored item must not fail every query (Orthanc does): skip it, say which.
    logger.error("worklist %s cannot be turned into a C-FIND answer; skipped", item_id)
