"""Prepared C-FIND queries: what an identifier means, derived once per distinct identifier and then reused.

Modalities send the same few identifiers all day (their station's list for today, a patient ID from the
front desk). Decoding one with pydicom and compiling it costs more CPU than the rest of a selective query,
so a PreparedQuery holds everything WorklistFinder derives from the identifier alone, keyed by the bytes
received. What depends on the caller (FilterIssuerAet's station) is not part of it: it is applied per C-FIND.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import Dataset
from pydicom.multival import MultiValue
from pynetdicom.dsutils import decode

from services.scp.charsets import decode_query
from services.scp.lookup import Version
from shared.matching import CompiledQuery, InvalidIdentifier, MatchOptions, compile_query, response_shape

# Distinct identifiers kept: a department's modalities ask a few dozen different queries a day. A prepared
# query costs its identifier's bytes plus its compiled predicates: ~5 kB for a modality's usual query.
MAX_ENTRIES = 256
# Larger identifiers are prepared for each C-FIND and not kept: a real MWL query is well under 2 kB, and
# the bound keeps the cache's memory at a few MB whatever peers send.
MAX_CACHED_BYTES = 8 * 1024
# Item versions whose matching steps the cached prepared queries remember, all queries together: an entry
# costs ~180 bytes (id, version, step positions, dict slot), so ~18 MB at most. A repeated query then
# restores and matches only the items changed since it last ran.
MEMO_CAPACITY = 100_000
# What one prepared query may hold of it: a universal query over a large store must not take all the room
# and leave every other query without a memo.
MEMO_SHARE = 4
# Distinct response shapes numbered for the answer-cache keys of the cached prepared queries; a handful in
# practice (past it, a new shape stays a tuple: slower to hash, as right).
MAX_SHAPES = 1024

_SPS, _STATION = 0x00400100, 0x00400001
UNDECODABLE = "Identifier cannot be decoded"


@dataclass(frozen=True, slots=True)
class PreparedQuery:
    """An identifier that can be answered: its compiled query and what its answers depend on."""

    query: CompiledQuery
    terms: list[str] | None  # the query's character set (None: it declared none); never mutated
    # response_shape(query), or its number among the shapes of the cached queries: part of every
    # answer-cache key, hashed at each lookup (~0.6 µs for the nested tuple, nothing for a small int)
    shape: Hashable | None
    station_open: bool  # FilterIssuerAet applies: the query leaves ScheduledStationAETitle open
    # What it matched in the items it met; only the cached ones (PreparedQueries) have one.
    memo: StepMemo | None = field(default=None, compare=False)

    @property
    def charset(self) -> tuple[str, ...] | None:
        """The character set as the answer cache keys it."""
        return tuple(self.terms) if self.terms is not None else None


@dataclass(frozen=True, slots=True)
class Unanswerable:
    """An identifier answered with 0xA900 "Identifier does not match SOP Class", and why."""

    comment: str  # the ErrorComment, never patient data
    offending: tuple[int, ...]  # OffendingElement tags; empty when none is named
    error: str | None = None  # undecodable: the decoding error's type name (its text may quote values)


Prepared = PreparedQuery | Unanswerable


def issuer_filter_applies(identifier: Dataset) -> bool:
    """FilterIssuerAet applies when ScheduledStationAETitle is absent, empty or only `*` (universal)."""
    sequence = identifier.get(_SPS)
    if sequence is None or sequence.VR != "SQ" or not sequence.value:
        return True
    step = sequence.value[0]
    if _STATION not in step:
        return True
    value = step[_STATION].value
    values = list(value) if isinstance(value, list | MultiValue) else [value]
    return all(str(v or "").strip(" ").strip("*") == "" for v in values)


def prepare(identifier: Dataset, default_term: str, options: MatchOptions) -> Prepared:
    """Decode (in place) and compile a C-FIND identifier; a malformed one becomes an Unanswerable."""
    try:
        terms = decode_query(identifier, default_term)  # converts every element, nested ones included
        query = compile_query(identifier, options)
        station_open = issuer_filter_applies(identifier)
    except InvalidIdentifier as exc:
        return Unanswerable(exc.comment, tuple(exc.offending))
    except Exception as exc:  # pydicom raises various errors for values it cannot read
        return Unanswerable(UNDECODABLE, (), type(exc).__name__)
    return PreparedQuery(query, terms, response_shape(query), station_open)


def prepare_encoded(data: bytes, implicit: bool, default_term: str, options: MatchOptions) -> Prepared:
    """As prepare(), from the identifier's bytes in implicit or explicit VR little endian."""
    try:
        # As pynetdicom reads an identifier. pydicom then converts elements lazily: prepare() converts
        # them all inside its own guard, so no decoding error can surface later, while answering.
        identifier = decode(BytesIO(data), implicit, True)
    except Exception as exc:  # a truncated or malformed stream
        return Unanswerable(UNDECODABLE, (), type(exc).__name__)
    return prepare(identifier, default_term, options)


class _Budget:
    """Memo entries all prepared queries of one PreparedQueries may hold together."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.per_query = max(capacity // MEMO_SHARE, 1)
        self.used = 0
        self.lock = threading.Lock()


class StepMemo:
    """The positions of the steps a prepared query matched in each item, by item id and version.

    Matching is a pure function of the compiled query and the item, and an item's version (updated_at)
    changes with each of its updates, so the positions stay true for as long as the version is the one the
    narrowing query reads. Entries of deleted or updated items stay until the prepared query goes.
    """

    __slots__ = ("_budget", "_closed", "_found")

    def __init__(self, budget: _Budget) -> None:
        self._budget = budget
        self._found: dict[str, tuple[Version, tuple[int, ...]]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._found)

    def get(self, item_id: str, version: Version) -> tuple[int, ...] | None:
        """The matching steps of the item at this version; None when not known (lock-free: a dict read)."""
        entry = self._found.get(item_id)
        return entry[1] if entry is not None and entry[0] == version else None

    def put(self, item_id: str, version: Version, steps: tuple[int, ...]) -> None:
        budget = self._budget
        with budget.lock:
            if self._closed:
                return
            if item_id not in self._found:
                if budget.used >= budget.capacity or len(self._found) >= budget.per_query:
                    return  # full: this item is matched again next time
                budget.used += 1
            self._found[item_id] = (version, steps)

    def close(self) -> None:
        """Give the entries' room back (the prepared query left the cache; a query still running on it
        puts no more)."""
        with self._budget.lock:
            self._closed = True
            self._budget.used -= len(self._found)
            self._found = {}


class PreparedQueries:
    """Prepared queries by (identifier bytes, implicit VR), least recently used evicted first.

    Thread-safe: lookups and inserts hold a lock for a dictionary operation only, never while preparing;
    two threads preparing the same new identifier at once both do, and one result is kept.
    """

    def __init__(
        self,
        capacity: int = MAX_ENTRIES,
        max_bytes: int = MAX_CACHED_BYTES,
        memo_capacity: int = MEMO_CAPACITY,
    ) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[bytes, bool], Prepared] = OrderedDict()
        self._lock = threading.Lock()
        self._budget = _Budget(memo_capacity)
        self._shapes: dict[Hashable, int] = {}  # equal shapes get the same number, never another's

    def _number(self, shape: Hashable | None) -> Hashable | None:
        if shape is None:
            return None
        with self._lock:
            number = self._shapes.get(shape)
            if number is None and len(self._shapes) < MAX_SHAPES:
                number = self._shapes[shape] = len(self._shapes)
        return shape if number is None else number

    @property
    def memo_entries(self) -> int:
        """Memo entries held by all cached prepared queries together."""
        return self._budget.used

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, data: bytes, implicit: bool, make: Callable[[], Prepared]) -> Prepared:
        """The prepared query of these bytes: the cached one, else make() (kept when small enough)."""
        key = (data, implicit)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        prepared = make()
        if self.capacity <= 0 or len(data) > self.max_bytes:
            return prepared
        if isinstance(prepared, PreparedQuery):
            prepared = dataclasses.replace(
                prepared, shape=self._number(prepared.shape), memo=StepMemo(self._budget)
            )
        evicted: list[Prepared] = []
        with self._lock:
            replaced = self._entries.get(key)  # another thread prepared it meanwhile: keep the newest
            if replaced is not None:
                evicted.append(replaced)
            self._entries[key] = prepared
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                evicted.append(self._entries.popitem(last=False)[1])
        for gone in evicted:
            if isinstance(gone, PreparedQuery) and gone.memo is not None:
                gone.memo.close()
        return prepared
