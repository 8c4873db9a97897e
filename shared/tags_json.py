"""Orthanc "Tags" straight to PS3.18 DICOM JSON for the REST write path, and the worklist checks on it.

`dicom_json_from_tags(tags)` equals `dicom_json_dict(dataset_from_tags(tags))`, with the same TagsError for
the same input, but builds no pydicom objects for the strings, person names and sequences worklist items are
made of: those objects were most of a REST create's CPU. An element the direct path does not cover (AT,
an empty value among IS or DS ones, a name without components) sends the whole item through pydicom.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.dicom_json import (
    AttributeState,
    TagsError,
    dataset_from_tags,
    dicom_json_dict,
    json_type,
    parse_values,
    sequence_items,
    tag_entries,
    worklist_warnings,
)

# VRs whose DICOM JSON values are the checked strings themselves (pydicom converts none of them, and
# shared.dicom_vr rejects the whitespace UI values would lose).
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
# DICOM JSON gives IS and DS values as numbers (pydicom's IS and DSfloat parse them as int() and float() do).
_NUMBER_STRING_VRS: dict[str, Callable[[str], int | float]] = {"IS": int, "DS": float}
_BINARY_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
SPS_SEQUENCE = "00400100"
_TAGS = {
    "ScheduledProcedureStepSequence": SPS_SEQUENCE,
    "PatientName": "00100010",
    "PatientID": "00100020",
    "RequestedProcedureID": "00401001",
    "StudyInstanceUID": "0020000D",
    "ScheduledStationAETitle": "00400001",
    "ScheduledProcedureStepStartDate": "00400002",
    "ScheduledProcedureStepStartTime": "00400003",
    "Modality": "00080060",
    "ScheduledProcedureStepID": "00400009",
}


class _LeftToPydicom(Exception):
    """An element whose DICOM JSON is pydicom's to tell (AT, empty numbers, names without components)."""


def dicom_json_from_tags(tags: object) -> dict[str, Any]:
    """dicom_json_dict(dataset_from_tags(tags)): attributes sorted by tag at every level, same errors."""
    if not isinstance(tags, dict):
        raise TagsError("Tags", f"must be a JSON object, not {json_type(tags)}")
    try:
        return _dataset(tags, "", 0)
    except _LeftToPydicom:
        return dicom_json_dict(dataset_from_tags(tags))


def _dataset(tags: dict[Any, Any], prefix: str, depth: int) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for tag, vr, value, field in tag_entries(tags, prefix):
        document[f"{tag:08X}"] = _element(tag, vr, value, field, depth)
    return dict(sorted(document.items()))


def _element(tag: int, vr: str, value: object, field: str, depth: int) -> dict[str, Any]:
    if vr == "SQ":
        depth += 1
        items = [_dataset(item, f"{path}.", depth) for path, item in sequence_items(value, field, depth)]
        return {"vr": vr, "Value": items}
    parsed = parse_values(tag, vr, value, field)
    if parsed is None:
        return {"vr": vr}
    if vr in _TEXT_VRS or vr in _BINARY_NUMBER_VRS:  # binary numbers: parse_values made them int or float
        return {"vr": vr, "Value": parsed}
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(text) for text in parsed]}
    if vr in _NUMBER_STRING_VRS and all(text.strip(" ") for text in parsed):
        number = _NUMBER_STRING_VRS[vr]
        return {"vr": vr, "Value": [number(text) for text in parsed]}
    raise _LeftToPydicom


def _person_name(text: str) -> dict[str, str]:
    """pydicom's PersonName: "="-separated groups, trailing empty ones dropped."""
    groups = text.split("=")
    while groups and not groups[-1]:
        groups.pop()
    if not groups:
        raise _LeftToPydicom  # pydicom gives such a name no value (alone) or fails (among others)
    return dict(zip(_PN_GROUPS, groups, strict=False))


def has_value(document: dict[str, Any], tag: str) -> bool:
    """Whether the attribute is there with a value (what `ds.get(keyword)` tests on the Dataset)."""
    return bool(document.get(tag, {}).get("Value"))


def set_value(document: dict[str, Any], tag: str, vr: str, value: str) -> dict[str, Any]:
    """The document with `tag` set to one value, attributes still in tag order."""
    return dict(sorted({**document, tag: {"vr": vr, "Value": [value]}}.items()))


def validate_worklist_json(document: dict[str, Any], *, force: bool) -> list[str]:
    """shared.dicom_json.validate_worklist on DICOM JSON: the same errors and warnings."""
    return worklist_warnings(document, _sps_items(document), _state, force=force)


def _sps_items(document: dict[str, Any]) -> list[dict[str, Any]] | None:
    element = document.get(SPS_SEQUENCE)
    if element is None:
        return None
    items = element.get("Value") or []
    if items and element.get("vr") != "SQ":
        vr = element.get("vr")
        raise TagsError("ScheduledProcedureStepSequence", f"must be a sequence (VR SQ), not VR {vr}")
    return list(items)


def _state(document: dict[str, Any], keyword: str) -> AttributeState:
    element = document.get(_TAGS[keyword])
    if element is None:
        return "absent"
    # Padding spaces are not content (PS3.5 6.2); a name counts with its groups joined as written.
    values = element.get("Value") or []
    return "set" if any(_text(value).strip(" ") for value in values) else "empty"


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return "=".join(value.get(group, "") for group in _PN_GROUPS[: len(value)])
    return "" if value is None else str(value)
