"""Modality Worklist C-FIND matching (PS3.4 K.2.2.1, C.2.2.2): compile an identifier, match stored items.

`compile_query` turns the C-FIND identifier into predicates once; `match_item` then tests a stored worklist
item (DICOM JSON, PS3.18 F.2) and builds one response per matching Scheduled Procedure Step. Pure: no I/O,
no logging, no shared mutable state, so any number of association threads may use it at once.
Value-level matching lives in `shared.match_values`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from shared import match_values as mv
from shared.match_values import BadValue, Bounds, ValueMatcher, fold_pn, person_name_str, sps_start_key

__all__ = [
    "CompiledQuery",
    "InvalidIdentifier",
    "MatchOptions",
    "compile_query",
    "fold_pn",
    "match_item",
    "matching_steps",
    "person_name_str",
    "response",
    "response_shape",
    "sps_start_key",
]

SPS_TAG = 0x00400100
_SPS_KEY = f"{SPS_TAG:08X}"
_DATE_TAG, _TIME_TAG = 0x00400002, 0x00400003
_DATE_KEY, _TIME_KEY = f"{_DATE_TAG:08X}", f"{_TIME_TAG:08X}"
_TZ_TAG = 0x00080201  # TimezoneOffsetFromUTC: context for DT keys (C.2.2.2.5), never matched
# SpecificCharacterSet is never matched (C.2.2.2); QueryRetrieveLevel has no meaning for MWL.
_NOT_KEYS = frozenset({0x00080005, 0x00080052})
# Modalities send these with several empty items; any other query sequence must hold one item.
_EMPTY_DUPLICATES_OK = frozenset({0x00081110, 0x00081120})
# Sequence nesting we match (SPS item = 1, protocol code = 2, its context = 3, ...); deeper is FF01.
MAX_DEPTH = 4
# Far above any real query (its longest values are names and date ranges; even LT, whose stored values may
# hold 10240 characters, is no key a modality matches on). Past them compiling alone would take seconds of
# CPU, and the GIL with it: a regular expression for a megabyte of `?`, a million value matchers.
MAX_VALUE_CHARS = 1024
MAX_VALUES = 1024
_TEXT_VRS = mv.WILDCARD_VRS - {"PN"}

ItemPredicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class MatchOptions:
    """Matching options: Orthanc's CaseSensitivePN, and combined SPS start date+time range matching."""

    case_sensitive_pn: bool = True  # False: case- and accent-insensitive PN matching (fold_pn)
    combined_datetime: bool = True  # C.2.2.2.5.4 combined SPS start date+time range matching


class InvalidIdentifier(Exception):
    """The identifier does not fit the MWL SOP class -> status 0xA900."""

    def __init__(self, offending: list[int], comment: str) -> None:
        super().__init__(comment)
        self.offending: list[int] = offending
        self.comment: str = comment[:64]


class _Unmatchable(Exception):
    """A key whose value we cannot match (binary VR): it becomes a return key and the status FF01."""


@dataclass(frozen=True, slots=True)
class _Node:
    """A requested key: returned in every response; `child` holds the requested item of a sequence."""

    key: str
    vr: str
    child: _ItemQuery | None = None  # sequences only; None returns the stored items whole


@dataclass(frozen=True, slots=True)
class _ItemQuery:
    """The requested keys of one dataset level and the predicates a stored dataset must all satisfy."""

    nodes: tuple[_Node, ...]
    predicates: tuple[ItemPredicate, ...]

    def matches(self, item: Mapping[str, Any]) -> bool:
        return all(predicate(item) for predicate in self.predicates)


@dataclass(frozen=True)
class CompiledQuery:
    """A compiled identifier: predicates for match_item, the FF01 keys, and hints for a SQL pre-selection.

    The hints only narrow: an item they exclude never matches, provided the store indexes each SPS with
    sps_start_key, fold_pn(person_name_str(PatientName)) and every value of ScheduledStationAETitle.
    """

    top: _ItemQuery  # top-level keys; the SPS sequence is matched per step through `sps`
    sps: _ItemQuery | None  # SPS item constraints; None: every step matches
    unsupported: frozenset[int]  # keys present with a value that we cannot match -> pending status 0xFF01
    # Narrowing hints for the SQL lookup before exact matching; None = no constraint. Never exclude a match.
    station_aet: str | None
    modality: str | None
    patient_id: str | None
    accession_number: str | None
    study_instance_uids: tuple[str, ...] | None
    requested_procedure_id: str | None
    sps_id: str | None
    start_range: tuple[str, str] | None  # inclusive sps_start_key range; open ends "" / "99999999999999"
    patient_name_prefix: str | None  # folded (fold_pn) literal prefix of the alphabetic group of PatientName


def compile_query(identifier: Dataset, options: MatchOptions) -> CompiledQuery:
    """Compile a decoded MWL C-FIND identifier; raises InvalidIdentifier for a malformed one."""
    compiler = _Compiler(options, _naive_tz(identifier))
    top = compiler.item(identifier, depth=0)
    if not top.nodes:
        # Empty, or only SpecificCharacterSet and group lengths: every answer would be an empty identifier,
        # which a pending C-FIND response cannot carry (pynetdicom fails it with 0xC312).
        raise InvalidIdentifier([], "Identifier holds no key")
    sps_item = _sps_dataset(identifier)
    return CompiledQuery(
        top=top,
        sps=compiler.sps,
        unsupported=frozenset(compiler.unsupported),
        station_aet=_exact_hint(sps_item, 0x00400001),
        modality=_exact_hint(sps_item, 0x00080060),
        patient_id=_exact_hint(identifier, 0x00100020),
        accession_number=_exact_hint(identifier, 0x00080050),
        study_instance_uids=_uid_hint(identifier, 0x0020000D),
        requested_procedure_id=_exact_hint(identifier, 0x00401001),
        sps_id=_exact_hint(sps_item, 0x00400009),
        start_range=compiler.start_range,
        patient_name_prefix=_name_prefix_hint(identifier),
    )


def match_item(query: CompiledQuery, item: dict[str, Any]) -> list[dict[str, Any]]:
    """One response per matching Scheduled Procedure Step of `item` (K.2.2.1); [] if none.

    A response holds exactly the requested keys: stored values, zero-length when the item lacks one. Its
    SPS sequence holds the single matching step. Responses share leaf values with `item`: read-only.
    """
    return [response(query, item, index) for index in matching_steps(query, item)]


def matching_steps(query: CompiledQuery, item: dict[str, Any]) -> list[int]:
    """Positions, in the item's SPS sequence, of the steps that match (match_item answers each once)."""
    steps = list(_sequence_items(item.get(_SPS_KEY)))
    if not steps or not query.top.matches(item):
        return []
    sps = query.sps
    return [index for index, step in enumerate(steps) if sps is None or sps.matches(step)]


def response(query: CompiledQuery, item: dict[str, Any], index: int) -> dict[str, Any]:
    """The response for the item's step at `index` (one of matching_steps)."""
    return _response(query.top, item, list(_sequence_items(item.get(_SPS_KEY)))[index])


def response_shape(query: CompiledQuery) -> Hashable | None:
    """What a response depends on besides the stored item and the step: the requested keys, as a value.

    Equal shapes give equal responses for the same item and step, so an encoded response can be reused
    across queries (modalities repeat the same keys all day). None when a nested sequence key also
    constrains (its response then depends on the values asked for, not just on the keys).
    """
    return _shape(query.top, depth=0)


def _shape(query: _ItemQuery, depth: int) -> tuple[Hashable, ...] | None:
    parts: list[Hashable] = []
    for node in query.nodes:
        child: Hashable = None
        if node.child is not None:
            if node.child.predicates and not (depth == 0 and node.key == _SPS_KEY):
                return None
            child = _shape(node.child, depth + 1)
            if child is None:
                return None
        parts.append((node.key, node.vr, child))
    return tuple(parts)


@dataclass
class _Compiler:
    """State of one compile_query call (never shared between calls)."""

    options: MatchOptions
    naive_tz: tzinfo
    unsupported: set[int] = field(default_factory=set)
    sps: _ItemQuery | None = None
    start_range: tuple[str, str] | None = None

    def item(self, ds: Dataset, depth: int, is_sps: bool = False) -> _ItemQuery:
        nodes: list[_Node] = []
        predicates: list[ItemPredicate] = []
        combined = self.combined_start(ds) if is_sps else None
        for tag in sorted(ds.keys()):
            if tag.element == 0 or tag.group in (0x0000, 0x0002) or tag in _NOT_KEYS:
                continue  # group lengths (gggg,0000), command and meta groups are no keys
            elem = _element(ds, tag)
            node, predicate = (
                self.sequence(elem, depth)
                if elem.VR == "SQ"
                else (_Node(_key(tag), elem.VR), self.value(elem, skip=combined is not None))
            )
            nodes.append(node)
            if depth == 0 and tag == SPS_TAG:
                self.sps = node.child if node.child is not None and node.child.predicates else None
            elif predicate is not None:
                predicates.append(predicate)
        if combined is not None:
            predicates.append(combined)
        return _ItemQuery(tuple(nodes), tuple(predicates))

    def sequence(self, elem: DataElement, depth: int) -> tuple[_Node, ItemPredicate | None]:
        """Sequence Matching (PS3.4 C.2.2.2.6): one query item; a stored item matches in one of its items.

        A zero-length sequence or one empty item returns the stored items whole; an item of only zero-length
        (or `*`) keys returns them trimmed to those keys. Neither constrains anything.
        """
        tag = int(elem.tag)
        items: list[Dataset] = list(elem.value or [])
        if depth + 1 > MAX_DEPTH:
            if any(not sub.is_empty for ds in items for sub in ds):
                self.unsupported.add(tag)
            return _Node(_key(tag), "SQ"), None
        if len(items) > 1 and (tag not in _EMPTY_DUPLICATES_OK or len(items) > MAX_VALUES):
            raise InvalidIdentifier([tag], f"More than one item in sequence {_fmt(tag)}")
        children = [self.item(ds, depth + 1, is_sps=depth == 0 and tag == SPS_TAG) for ds in items]
        if len(children) > 1:
            if tag not in _EMPTY_DUPLICATES_OK or any(child.predicates for child in children):
                raise InvalidIdentifier([tag], f"More than one item in sequence {_fmt(tag)}")
            merged = {node.key: node for child in reversed(children) for node in child.nodes}
            children = [_ItemQuery(tuple(merged[key] for key in sorted(merged)), ())]
        if not children or not children[0].nodes:
            return _Node(_key(tag), "SQ"), None
        child = children[0]
        predicate = _sequence_predicate(_key(tag), child) if child.predicates else None
        return _Node(_key(tag), "SQ", child), predicate

    def value(self, elem: DataElement, skip: bool) -> ItemPredicate | None:
        """The predicate of a non-sequence key, None when it constrains nothing (or cannot be matched)."""
        tag = int(elem.tag)
        if tag == _TZ_TAG or (skip and tag in (_DATE_TAG, _TIME_TAG)):
            return None
        raw = elem.value
        if isinstance(raw, MultiValue | list | tuple) and len(raw) > MAX_VALUES:
            raise InvalidIdentifier([tag], f"More than {MAX_VALUES} values in {_fmt(tag)}")
        try:
            values = _query_values(elem)
        except _Unmatchable:
            self.unsupported.add(tag)
            return None
        if any(len(v) > MAX_VALUE_CHARS for v in values):
            raise InvalidIdentifier([tag], f"Value longer than {MAX_VALUE_CHARS} characters in {_fmt(tag)}")
        if not values or any(mv.is_universal(v) for v in values):
            return None
        if elem.VR == "PN" and all(mv.pn_is_universal(v) for v in values):
            return None
        if elem.VR in mv.BINARY_VRS or elem.tag.is_private:
            self.unsupported.add(tag)
            return None
        try:
            matcher = self.value_matcher(elem.VR, values)
        except BadValue as exc:
            raise InvalidIdentifier([tag], f"{exc} in {_fmt(tag)}") from None
        return _element_predicate(_key(tag), matcher)

    def value_matcher(self, vr: str, values: list[str]) -> ValueMatcher:
        """Several values (VM > 1) match when any does: List of UID Matching, extended to every VR."""
        if vr == "UI":
            return mv.uid_list_matcher(values)
        matchers = [self.one_value_matcher(vr, value) for value in values]
        if len(matchers) == 1:
            return matchers[0]
        return lambda stored: any(matcher(stored) for matcher in matchers)

    def one_value_matcher(self, vr: str, value: str) -> ValueMatcher:
        if vr == "DA":
            return mv.range_matcher(mv.da_bounds(value), mv.parse_da)
        if vr == "TM":
            return mv.range_matcher(mv.tm_bounds(value), mv.parse_tm)
        if vr == "DT":
            tz = self.naive_tz
            return mv.range_matcher(mv.dt_bounds(value, tz), lambda stored: mv.parse_dt(stored, tz))
        if vr == "PN":
            return mv.pn_matcher(value, fold=not self.options.case_sensitive_pn)
        if vr in mv.WILDCARD_VRS and ("*" in value or "?" in value):
            match = mv.string_matcher(value)
            return lambda stored: isinstance(stored, str) and match(stored)
        return mv.single_value_matcher(value, vr)

    def combined_start(self, ds: Dataset) -> ItemPredicate | None:
        """Compile the SPS start date and time keys, combined (C.2.2.2.5.4) when both constrain.

        Sets the start_range hint; returns the combined predicate, or None when the keys are matched apart.
        """
        date, time = self._bounds(ds, _DATE_TAG, mv.da_bounds), self._bounds(ds, _TIME_TAG, mv.tm_bounds)
        if date is None:
            return None
        if time is None or not self.options.combined_datetime:
            low = date[0] + "000000" if date[0] else ""
            self.start_range = (low, date[1] + "235959" if date[1] else "99999999999999")
            return None
        low_key, high_key = bounds = mv.combined_bounds(date, time)
        self.start_range = (low_key[:14] if low_key else "", high_key[:14] if high_key else "99999999999999")
        matcher = mv.combined_datetime_matcher(bounds)
        return lambda step: matcher(_first_value(step.get(_DATE_KEY)), _first_value(step.get(_TIME_KEY)))

    @staticmethod
    def _bounds(ds: Dataset, tag: int, parse: Callable[[str], Bounds]) -> Bounds | None:
        """Bounds of a single-valued, constraining DA/TM key; None when absent, universal or multi-valued."""
        elem = _element(ds, tag) if tag in ds else None
        if elem is None or elem.VR not in ("DA", "TM"):
            return None
        values = _query_values(elem)
        if len(values) != 1 or mv.is_universal(values[0]):
            return None
        try:
            return parse(values[0])
        except BadValue as exc:
            raise InvalidIdentifier([tag], f"{exc} in {_fmt(tag)}") from None


def _element_predicate(key: str, matcher: ValueMatcher) -> ItemPredicate:
    """A stored element matches when one of its values does; a zero-length one never does (non-empty key)."""

    def predicate(item: Mapping[str, Any]) -> bool:
        elem = item.get(key)
        values = elem.get("Value") if isinstance(elem, dict) else None
        return any(matcher(value) for value in values) if values else False

    return predicate


def _sequence_predicate(key: str, child: _ItemQuery) -> ItemPredicate:
    """Sequence Matching (PS3.4 C.2.2.2.6): every key of the query item matches within one stored item."""
    return lambda item: any(child.matches(sub) for sub in _sequence_items(item.get(key)))


def _response(top: _ItemQuery, item: Mapping[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {}
    for node in top.nodes:
        if node.key == _SPS_KEY:
            only_step = _trim(node.child, step) if node.child is not None else dict(step)
            response[node.key] = {"vr": "SQ", "Value": [only_step]}
        else:
            response[node.key] = _returned(node, item.get(node.key))
    return response


def _trim(query: _ItemQuery, stored: Mapping[str, Any]) -> dict[str, Any]:
    return {node.key: _returned(node, stored.get(node.key)) for node in query.nodes}


def _returned(node: _Node, elem: Any) -> dict[str, Any]:
    """The response element of a requested key: the stored one, or zero-length when the item lacks it."""
    if not isinstance(elem, dict):
        return {"vr": node.vr}
    if node.vr == "SQ":
        child = node.child
        items = [
            _trim(child, sub) if child is not None else dict(sub)
            for sub in _sequence_items(elem)
            if child is None or child.matches(sub)
        ]
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    returned = dict(elem)
    if isinstance(returned.get("Value"), list):
        returned["Value"] = list(returned["Value"])
    return returned


def _sequence_items(elem: Any) -> Iterator[dict[str, Any]]:
    # Only a stored sequence has items: a PN element's values are objects too, and a query may (wrongly)
    # declare a PN key as SQ, which must not turn the stored name into a sequence item of the answer.
    values = elem.get("Value") if isinstance(elem, dict) and elem.get("vr") == "SQ" else None
    return (sub for sub in values or () if isinstance(sub, dict))


def _first_value(elem: Any) -> Any:
    values = elem.get("Value") if isinstance(elem, dict) else None
    return values[0] if values else None


def _element(ds: Dataset, tag: int) -> DataElement:
    try:
        return ds[tag]
    except Exception as exc:  # pydicom raises various errors for an undecodable raw element
        raise InvalidIdentifier([int(tag)], f"Unreadable value in {_fmt(int(tag))}") from exc


def _query_values(elem: DataElement) -> list[str]:
    """The non-empty values of a query element as strings (PN via str, AT as GGGGEEEE)."""
    value = elem.value
    if value is None or value == "" or value == b"":
        return []
    raw = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    values: list[str] = []
    for one in raw:
        if isinstance(one, (bytes, bytearray)):
            raise _Unmatchable
        if one is None:
            continue
        text = mv.normalize_query_value(elem.VR, f"{int(one):08X}" if elem.VR == "AT" else str(one))
        if text:
            values.append(text)
    return values


def _sps_dataset(identifier: Dataset) -> Dataset | None:
    if SPS_TAG not in identifier or identifier[SPS_TAG].VR != "SQ" or not identifier[SPS_TAG].value:
        return None
    first: Dataset = identifier[SPS_TAG].value[0]
    return first


def _hint_values(ds: Dataset | None, tag: int, vrs: frozenset[str]) -> list[str] | None:
    """The values of a constraining key of one of `vrs` (already compiled, so readable), else None."""
    if ds is None or tag not in ds or ds[tag].VR not in vrs:
        return None
    try:
        values = _query_values(ds[tag])
    except _Unmatchable:
        return None
    return None if not values or any(mv.is_universal(v) for v in values) else values


def _exact_hint(ds: Dataset | None, tag: int) -> str | None:
    """The key's value when it is one value matched exactly (no wildcard), else None."""
    values = _hint_values(ds, tag, _TEXT_VRS)
    if values is None or len(values) != 1 or "*" in values[0] or "?" in values[0]:
        return None
    return values[0]


def _uid_hint(ds: Dataset, tag: int) -> tuple[str, ...] | None:
    values = _hint_values(ds, tag, frozenset({"UI"}))
    return None if values is None else tuple(sorted(set(values)))


def _name_prefix_hint(ds: Dataset) -> str | None:
    """Folded literal start (before any wildcard) of the alphabetic group of a single-valued PatientName."""
    values = _hint_values(ds, 0x00100010, frozenset({"PN"}))
    if values is None or len(values) != 1:
        return None
    alphabetic = mv.normalize_pn(values[0]).split("=")[0]
    literal = alphabetic.split("*")[0].split("?")[0]
    return fold_pn(literal) or None


def _naive_tz(identifier: Dataset) -> tzinfo:
    """The zone of DT values without an offset: TimezoneOffsetFromUTC of the query, else UTC."""
    if _TZ_TAG not in identifier:
        return UTC
    try:
        values = _query_values(_element(identifier, _TZ_TAG))
    except _Unmatchable:
        values = ["binary"]
    if not values:
        return UTC
    tz = mv.parse_offset(values[0]) if len(values) == 1 else None
    if tz is None:
        raise InvalidIdentifier([_TZ_TAG], f"Invalid UTC offset in {_fmt(_TZ_TAG)}")
    return tz


def _key(tag: int) -> str:
    return f"{tag:08X}"


def _fmt(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
