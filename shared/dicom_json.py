"""Conversion and validation between Orthanc "Tags" JSON, pydicom Datasets and PS3.18 DICOM JSON (no I/O)."""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import date
from typing import Any, Literal

from pydicom import Dataset
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

Format = Literal["Simplify", "Short", "Full"]
FORMATS: tuple[str, ...] = ("Simplify", "Short", "Full")

MAX_SEQUENCE_DEPTH = 8

# Values never rendered in JSON answers: Orthanc shows them as Binary with a null value.
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INT_RANGES: dict[str, tuple[int, int]] = {
    "US": (0, 2**16 - 1),
    "SS": (-(2**15), 2**15 - 1),
    "UL": (0, 2**32 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "UV": (0, 2**64 - 1),
    "SV": (-(2**63), 2**63 - 1),
}
_FLOAT_VRS = frozenset({"FL", "FD"})
# Binary-encoded numbers: a zero-length one has no string form, so Orthanc reports it as Null.
_NUMBER_VRS = frozenset({*_INT_RANGES, *_FLOAT_VRS, "AT"})
# PS3.5 6.2: backslash is an ordinary character in these VRs, so they hold exactly one value.
_SINGLE_VALUE_VRS = frozenset({"LT", "ST", "UT", "UR"})
# PS3.5 6.1.3: only these free-text VRs may contain TAB, LF, FF and CR.
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
# PS3.5 6.2: these VRs are restricted to the default (ASCII) character repertoire.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
_MAX_CHARS: dict[str, int] = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240,
    "SH": 16, "ST": 1024, "TM": 14, "UI": 64, "UC": 2**32 - 2, "UR": 2**32 - 2, "UT": 2**32 - 2,
}  # fmt: skip

_HEX_TAG = re.compile(r"[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}")
# Values arrive as Unicode, so no ISO 2022 escape (ESC) is ever legitimate; C1 controls are never text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_FREE_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_AS = re.compile(r"[0-9]{3}[DWMY]")
_CS = re.compile(r"[A-Z0-9 _]*")
_DA = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_TM = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.[0-9]{1,6})?)?)?")
_DT = re.compile(
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.[0-9]{1,6})?)?)?)?)?)?"
    r"([+-][0-9]{4})?"
)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_UI = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_FLT_MAX = 3.4028234663852886e38

_SPS = "ScheduledProcedureStepSequence"
# PS3.4 Table K.6-1 return keys of type 1 that modalities rely on.
_SPS_TYPE1 = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledProcedureStepID",
)
_TOP_TYPE1 = ("PatientName", "PatientID", "RequestedProcedureID", "StudyInstanceUID")
# What the Orthanc Worklists plugin insists on unless the client sets Force.
_ORTHANC_MINIMUM = ("Modality", "ScheduledProcedureStepStartDate")


class TagsError(ValueError):
    """Bad request content.

    .field is the offending tag as the client wrote it (keyword or "gggg,eeee", with a path for nested
    ones, e.g. "ScheduledProcedureStepSequence[0].Modality"); .message says what is wrong.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Invalid(ValueError):
    """A single value is wrong; the caller adds the field path."""


# ---------------------------------------------------------------------------------------------------------
# Orthanc "Tags" -> Dataset


def dataset_from_tags(tags: object) -> Dataset:
    """Build a Dataset from an Orthanc "Tags" object; reject whatever could not be stored faithfully."""
    if not isinstance(tags, dict):
        raise TagsError("Tags", f"must be a JSON object, not {_json_type(tags)}")
    return _dataset(tags, prefix="", depth=0)


def _dataset(tags: dict[Any, Any], prefix: str, depth: int) -> Dataset:
    ds = Dataset()
    seen: dict[int, str] = {}
    for key, value in tags.items():
        field = f"{prefix}{key}"
        tag, vr = _resolve(key, field)
        if tag in seen:
            raise TagsError(field, f"is the same tag as {seen[tag]!r}, given twice")
        seen[tag] = str(key)
        ds.add(_element(tag, vr, value, field, depth))
    return ds


def _resolve(key: object, field: str) -> tuple[int, str]:
    if not isinstance(key, str):
        raise TagsError(field, 'key must be a DICOM keyword or "gggg,eeee"')
    if _HEX_TAG.fullmatch(key):
        tag = int(key[:4], 16) << 16 | int(key[5:], 16)
    else:
        found = tag_for_keyword(key)
        if found is None:
            raise TagsError(field, 'is not a DICOM keyword (nor a "gggg,eeee" tag)')
        tag = found
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2:
        raise TagsError(field, "private tags are not supported")
    if element == 0:
        raise TagsError(field, "group length elements are not storable (they are computed when encoding)")
    if group in (0x0000, 0x0002):
        raise TagsError(field, "command and file meta elements are not part of a worklist item")
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        raise TagsError(field, "is not in the DICOM dictionary, so its VR is unknown") from None
    if vr == "NONE":
        raise TagsError(field, "item and delimitation tags are not data elements")
    return tag, _first_vr(vr)


def _element(tag: int, vr: str, value: object, field: str, depth: int) -> DataElement:
    if vr == "SQ":
        return DataElement(tag, vr, _sequence(value, field, depth + 1))
    if value is None or value == "":
        return DataElement(tag, vr, None)
    if not isinstance(value, str):
        raise TagsError(field, f"must be a string or null, not {_json_type(value)}")
    if vr in _BINARY_VRS:
        raise TagsError(field, f"binary values (VR {vr}) are not supported; only null or an empty string")
    values = [value] if vr in _SINGLE_VALUE_VRS else value.split("\\")
    max_vm = _max_vm(tag)
    if len(values) > max_vm:
        raise TagsError(field, f'has {len(values)} values separated by "\\" but allows at most {max_vm}')
    parsed: list[Any] = []
    for index, text in enumerate(values):
        try:
            parsed.append(_parse_value(vr, text))
        except _Invalid as exc:
            where = f" (value {index + 1} of {len(values)})" if len(values) > 1 else ""
            raise TagsError(field, f"{exc}{where}") from None
    return DataElement(tag, vr, parsed[0] if len(parsed) == 1 else parsed)


def _sequence(value: object, field: str, depth: int) -> Sequence:
    if depth > MAX_SEQUENCE_DEPTH:
        raise TagsError(field, f"sequences nested over {MAX_SEQUENCE_DEPTH} levels deep are not supported")
    if value is None or value == "":
        return Sequence([])
    if not isinstance(value, list):
        raise TagsError(field, f"is a sequence: expects an array of objects or null, not {_json_type(value)}")
    items: list[Dataset] = []
    for index, item in enumerate(value):
        path = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise TagsError(path, f"sequence item must be a JSON object, not {_json_type(item)}")
        items.append(_dataset(item, f"{path}.", depth))
    return Sequence(items)


def _max_vm(tag: int) -> int:
    vm = dictionary_VM(tag)
    if "n" in vm:
        return sys.maxsize
    return int(vm.split("-")[-1])


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------------------
# Value validation (PS3.5 6.2)


def _parse_value(vr: str, text: str) -> Any:
    """One value (between backslashes) as pydicom should hold it; raises _Invalid saying what is wrong."""
    if vr in _NUMBER_VRS:
        return _parse_number(vr, text.strip(" "))
    if not text:
        return text  # an empty value inside a multi-valued element is legal
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid("is not valid Unicode (lone surrogate)") from None
    control = _CONTROL_IN_FREE_TEXT if vr in _FREE_TEXT_VRS else _CONTROL
    if control.search(text):
        raise _Invalid(f"contains a control character not allowed in VR {vr}")
    if vr in _ASCII_VRS and not text.isascii():
        raise _Invalid(f"VR {vr} allows only ASCII characters")
    limit = _MAX_CHARS.get(vr)
    if limit is not None and len(text) > limit:
        raise _Invalid(f"is longer than {limit} characters (VR {vr})")
    checker = _CHECKERS.get(vr)
    problem = checker(text) if checker else None
    if problem:
        raise _Invalid(problem)
    return text


def _parse_number(vr: str, text: str) -> int | float:
    if vr == "AT":
        if not _HEX_TAG.fullmatch(text):
            raise _Invalid('is not a tag written "gggg,eeee" (VR AT)')
        return int(text[:4], 16) << 16 | int(text[5:], 16)
    if vr in _FLOAT_VRS:
        if not _DECIMAL.fullmatch(text):
            raise _Invalid(f"is not a decimal number (VR {vr})")
        number = float(text)
        if not math.isfinite(number) or (vr == "FL" and abs(number) > _FLT_MAX):
            raise _Invalid(f"is out of range for VR {vr}")
        return number
    if not _INTEGER.fullmatch(text):
        raise _Invalid(f"is not an integer (VR {vr})")
    low, high = _INT_RANGES[vr]
    integer = int(text)
    if not low <= integer <= high:
        raise _Invalid(f"is out of range for VR {vr} ({low} to {high})")
    return integer


def _check_ae(text: str) -> str | None:
    return "must not be only spaces (VR AE)" if not text.strip(" ") else None


def _check_as(text: str) -> str | None:
    return None if _AS.fullmatch(text) else "is not an age nnnD, nnnW, nnnM or nnnY (VR AS)"


def _check_cs(text: str) -> str | None:
    ok = _CS.fullmatch(text)
    return None if ok else "may contain only upper-case letters, digits, spaces and underscores (VR CS)"


def _check_da(text: str) -> str | None:
    match = _DA.fullmatch(text)
    ok = match is not None and _real_date(*map(int, match.groups()))
    return None if ok else "is not a date YYYYMMDD (VR DA; ranges are for queries, not stored items)"


def _check_tm(text: str) -> str | None:
    match = _TM.fullmatch(text)
    ok = match is not None and _time_in_range(*match.groups())
    return None if ok else "is not a time HH, HHMM, HHMMSS or HHMMSS.FFFFFF (VR TM)"


def _check_dt(text: str) -> str | None:
    match = _DT.fullmatch(text)
    ok = match is not None and _datetime_in_range(*match.groups())
    return None if ok else "is not a date-time YYYYMMDDHHMMSS.FFFFFF&ZZXX (VR DT)"


def _check_ds(text: str) -> str | None:
    stripped = text.strip(" ")
    ok = _DECIMAL.fullmatch(stripped) and math.isfinite(float(stripped))
    return None if ok else "is not a decimal string (VR DS)"


def _check_is(text: str) -> str | None:
    stripped = text.strip(" ")
    ok = _INTEGER.fullmatch(stripped) and -(2**31) <= int(stripped) < 2**31
    return None if ok else "is not an integer string from -2^31 to 2^31-1 (VR IS)"


def _check_ui(text: str) -> str | None:
    ok = _UI.fullmatch(text)
    return None if ok else "is not a UID: digits and dots, no empty or zero-led components (VR UI)"


def _check_ur(text: str) -> str | None:
    ok = not text.startswith(" ") and "\\" not in text
    return None if ok else "must not start with a space nor contain a backslash (VR UR)"


def _check_pn(text: str) -> str | None:
    groups = text.split("=")
    if len(groups) > 3:
        return 'has more than 3 component groups separated by "=" (VR PN)'
    for group in groups:
        if len(group) > 64:
            return "has a component group longer than 64 characters (VR PN)"
        if group.count("^") > 4:
            return 'has more than 5 components separated by "^" (VR PN)'
    return None


_CHECKERS = {
    "AE": _check_ae, "AS": _check_as, "CS": _check_cs, "DA": _check_da, "DS": _check_ds, "DT": _check_dt,
    "IS": _check_is, "PN": _check_pn, "TM": _check_tm, "UI": _check_ui, "UR": _check_ur,
}  # fmt: skip


def _real_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _time_in_range(hours: str, minutes: str | None, seconds: str | None) -> bool:
    # PS3.5 allows second 60 for leap seconds.
    return int(hours) <= 23 and int(minutes or 0) <= 59 and int(seconds or 0) <= 60


def _datetime_in_range(
    year: str, month: str | None, day: str | None, hours: str | None, minutes: str | None,
    seconds: str | None, offset: str | None,
) -> bool:  # fmt: skip
    if not _real_date(int(year), int(month or 1), int(day or 1)):
        return False
    if hours is not None and not _time_in_range(hours, minutes, seconds):
        return False
    if offset is None:
        return True
    offset_minutes = int(offset[1:3]) * 60 + int(offset[3:])
    # PS3.5: offsets run from -1200 to +1400.
    limit = 14 * 60 if offset[0] == "+" else 12 * 60
    return int(offset[3:]) <= 59 and offset_minutes <= limit


# ---------------------------------------------------------------------------------------------------------
# Dataset -> Orthanc formats


def dataset_to_format(ds: Dataset, fmt: Format) -> dict[str, Any]:
    """Render a Dataset the way Orthanc's REST API does for ?format=Simplify, Short or Full."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    answer: dict[str, Any] = {}
    for elem in ds:  # a Dataset iterates in tag order
        keyword = _unique_keyword(elem.tag) if fmt == "Simplify" else ""
        answer[keyword or _hex(elem.tag)] = _format_element(elem, fmt)
    return answer


def _format_element(elem: DataElement, fmt: Format) -> Any:
    vr = _first_vr(elem.VR)
    value: Any
    if vr == "SQ":
        value = [dataset_to_format(item, fmt) for item in elem.value or []]
        kind = "Sequence"
    else:
        value = _leaf_text(vr, elem.value)
        kind = "Binary" if vr in _BINARY_VRS else "Null" if value is None else "String"
    if fmt != "Full":
        return value
    # DCMTK's name for tags it does not know, which Orthanc users see in Full answers.
    name = keyword_for_tag(elem.tag) or "Unknown Tag & Data"
    return {"Name": name, "Type": kind, "Value": value}


def _leaf_text(vr: str, value: Any) -> str | None:
    if vr in _BINARY_VRS:
        return None
    if _is_empty(value):
        return None if vr in _NUMBER_VRS else ""
    values = list(value) if isinstance(value, list | MultiValue) else [value]
    return "\\".join(_scalar_text(vr, item) for item in values)


def _scalar_text(vr: str, value: Any) -> str:
    if value is None:
        return ""
    if vr == "AT":
        return _hex(int(value))
    if vr in _FLOAT_VRS:
        return repr(float(value))
    if vr == "DS" and getattr(value, "original_string", None) is None:
        # Read back from DICOM JSON (a number): show 70 rather than 70.0, as the client most likely sent.
        text = str(value)
        return text[:-2] if text.endswith(".0") and "e" not in text else text
    return str(value)


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str | bytes | PersonName):
        return len(str(value) if isinstance(value, PersonName) else value) == 0
    if isinstance(value, list | MultiValue):
        return len(value) == 0
    return False


def _unique_keyword(tag: int) -> str:
    """The keyword, unless the tag is a repeating-group one whose keyword names several tags."""
    keyword = keyword_for_tag(tag)
    return keyword if keyword and tag_for_keyword(keyword) == tag else ""


def _hex(tag: int) -> str:
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def _first_vr(vr: str) -> str:
    # Ambiguous dictionary VRs ("US or SS", "OB or OW"): the first is right for every MWL attribute.
    return vr.split(" or ")[0]


# ---------------------------------------------------------------------------------------------------------
# PS3.18 DICOM JSON


def dicom_json_dict(ds: Dataset) -> dict[str, Any]:
    """PS3.18 F.2 DICOM JSON of ds, with attributes sorted by tag at every level."""
    return _sorted_by_tag(ds.to_json_dict())


def dataset_to_dicom_json(ds: Dataset) -> str:
    """Deterministic compact DICOM JSON: equal datasets give equal strings (digests, change detection)."""
    return json.dumps(dicom_json_dict(ds), separators=(",", ":"), ensure_ascii=False)


def dicom_json_to_dataset(text: str | dict[str, Any]) -> Dataset:
    """Parse DICOM JSON; zero-length values become None, as dataset_from_tags makes them."""
    try:
        document = json.loads(text) if isinstance(text, str) else text
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, not {_json_type(document)}")
        ds = Dataset.from_json(document)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TagsError("DICOM JSON", f"is not valid DICOM JSON: {exc}") from exc
    _empty_values_to_none(ds)
    return ds


def _sorted_by_tag(document: dict[str, Any]) -> dict[str, Any]:
    # Tag keys are 8 upper-case hex digits, so string order is tag order.
    result: dict[str, Any] = {}
    for tag in sorted(document):
        attribute = document[tag]
        if attribute.get("vr") == "SQ" and "Value" in attribute:
            attribute = {**attribute, "Value": [_sorted_by_tag(item) for item in attribute["Value"]]}
        result[tag] = attribute
    return result


def _empty_values_to_none(ds: Dataset) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _empty_values_to_none(item)
        elif _is_empty(elem.value):
            elem.value = None


# ---------------------------------------------------------------------------------------------------------
# Worklist checks


def validate_worklist(ds: Dataset, *, force: bool) -> list[str]:
    """Enforce Orthanc's minimum (unless force) and return warnings for type-1 return keys left empty."""
    items = _sps_items(ds)
    if not force:
        if not items:
            raise TagsError(_SPS, "is required with at least one item (unless Force is true)")
        for keyword in _ORTHANC_MINIMUM:
            if not _has_value(items[0], keyword):
                raise TagsError(f"{_SPS}[0].{keyword}", "is required (unless Force is true)")
    warnings = [w for keyword in _TOP_TYPE1 if (w := _type1_warning(ds, keyword, keyword))]
    if items is None:
        warnings.append(f"{_SPS} is absent: modalities query worklists by scheduled procedure step")
    elif not items:
        warnings.append(f"{_SPS} is empty: modalities query worklists by scheduled procedure step")
    for index, item in enumerate(items or []):
        for keyword in _SPS_TYPE1:
            if warning := _type1_warning(item, keyword, f"{_SPS}[{index}].{keyword}"):
                warnings.append(warning)
    return warnings


def _sps_items(ds: Dataset) -> list[Dataset] | None:
    tag = tag_for_keyword(_SPS)
    assert tag is not None
    if tag not in ds:
        return None
    elem = ds[tag]
    if _is_empty(elem.value):
        return []
    if elem.VR != "SQ" or not isinstance(elem.value, list | Sequence):
        raise TagsError(_SPS, f"must be a sequence (VR SQ), not VR {elem.VR}")
    items = list(elem.value)
    for index, item in enumerate(items):
        if not isinstance(item, Dataset):
            raise TagsError(f"{_SPS}[{index}]", "sequence item is not a dataset")
    return items


def _has_value(ds: Dataset, keyword: str) -> bool:
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return False
    value = ds[tag].value
    values = list(value) if isinstance(value, list | MultiValue) else [value]
    # Padding spaces are not content (PS3.5 6.2).
    return any(not _is_empty(v) and str(v).strip(" ") for v in values)


def _type1_warning(ds: Dataset, keyword: str, path: str) -> str | None:
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return f"{path} is absent; it is a type 1 return key that modalities expect"
    if not _has_value(ds, keyword):
        return f"{path} is empty; it is a type 1 return key that modalities expect"
    return None
