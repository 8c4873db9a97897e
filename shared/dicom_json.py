"""Conversion and validation between Orthanc "Tags" JSON, pydicom Datasets and PS3.18 DICOM JSON (no I/O)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

from pydicom import Dataset
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from shared.dicom_vr import FLOAT_VRS, HEX_TAG, NUMBER_VRS, SINGLE_VALUE_VRS, InvalidValue, parse_value

Format = Literal["Simplify", "Short", "Full"]
FORMATS: tuple[str, ...] = ("Simplify", "Short", "Full")

MAX_SEQUENCE_DEPTH = 8

# Values never rendered in JSON answers: Orthanc shows them as Binary with a null value.
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

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


# ---------------------------------------------------------------------------------------------------------
# Orthanc "Tags" -> Dataset


def dataset_from_tags(tags: object) -> Dataset:
    """Build a Dataset from an Orthanc "Tags" object; reject whatever could not be stored faithfully."""
    if not isinstance(tags, dict):
        raise TagsError("Tags", f"must be a JSON object, not {json_type(tags)}")
    return _dataset(tags, prefix="", depth=0)


def _dataset(tags: dict[Any, Any], prefix: str, depth: int) -> Dataset:
    ds = Dataset()
    for tag, vr, value, field in tag_entries(tags, prefix):
        ds.add(_element(tag, vr, value, field, depth))
    return ds


def tag_entries(tags: dict[Any, Any], prefix: str) -> Iterator[tuple[int, str, object, str]]:
    """Each entry of a Tags object as (tag, VR, value, field name for errors); TagsError for a key that names
    no storable tag or a tag given twice (by keyword and by number, say)."""
    seen: dict[int, str] = {}
    for key, value in tags.items():
        field = f"{prefix}{key}"
        tag, vr = resolve_key(key, field)
        if tag in seen:
            raise TagsError(field, f"is the same tag as {seen[tag]!r}, given twice")
        seen[tag] = str(key)
        yield tag, vr, value, field


def resolve_key(key: object, field: str) -> tuple[int, str]:
    """The tag and VR a Tags key names (a keyword or "gggg,eeee"); TagsError for what cannot be stored."""
    if not isinstance(key, str):
        raise TagsError(field, 'key must be a DICOM keyword or "gggg,eeee"')
    resolved = _resolve(key)
    if isinstance(resolved, str):
        raise TagsError(field, resolved)
    return resolved


@functools.lru_cache(maxsize=4096)  # clients send the same few dozen keys: dictionary look-ups add up
def _resolve(key: str) -> tuple[int, str] | str:
    """(tag, VR), or what is wrong with the key."""
    if HEX_TAG.fullmatch(key):
        tag = int(key[:4], 16) << 16 | int(key[5:], 16)
    else:
        found = tag_for_keyword(key)
        if found is None:
            return 'is not a DICOM keyword (nor a "gggg,eeee" tag)'
        tag = found
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2:
        return "private tags are not supported"
    if element == 0:
        return "group length elements are not storable (they are computed when encoding)"
    if group in (0x0000, 0x0002):
        return "command and file meta elements are not part of a worklist item"
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "is not in the DICOM dictionary, so its VR is unknown"
    if vr == "NONE":
        return "item and delimitation tags are not data elements"
    return tag, _first_vr(vr)


def _element(tag: int, vr: str, value: object, field: str, depth: int) -> DataElement:
    if vr == "SQ":
        depth += 1
        items = [_dataset(item, f"{path}.", depth) for path, item in sequence_items(value, field, depth)]
        return DataElement(tag, vr, Sequence(items))
    parsed = parse_values(tag, vr, value, field)
    if parsed is None:
        return DataElement(tag, vr, None)
    return DataElement(tag, vr, parsed[0] if len(parsed) == 1 else parsed)


def parse_values(tag: int, vr: str, value: object, field: str) -> list[Any] | None:
    """The checked values of a non-sequence element as pydicom should hold them; None when it is empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TagsError(field, f"must be a string or null, not {json_type(value)}")
    if vr in _BINARY_VRS:
        raise TagsError(field, f"binary values (VR {vr}) are not supported; only null or an empty string")
    values = [value] if vr in SINGLE_VALUE_VRS else value.split("\\")
    max_vm = _max_vm(tag)
    if len(values) > max_vm:
        raise TagsError(field, f'has {len(values)} values separated by "\\" but allows at most {max_vm}')
    parsed: list[Any] = []
    for index, text in enumerate(values):
        try:
            parsed.append(parse_value(vr, text))
        except InvalidValue as exc:
            where = f" (value {index + 1} of {len(values)})" if len(values) > 1 else ""
            raise TagsError(field, f"{exc}{where}") from None
    return parsed


def sequence_items(value: object, field: str, depth: int) -> Iterator[tuple[str, dict[Any, Any]]]:
    """The items of a sequence value with their field paths, each checked as it is reached (so errors come
    in the order the client wrote them)."""
    if depth > MAX_SEQUENCE_DEPTH:
        raise TagsError(field, f"sequences nested over {MAX_SEQUENCE_DEPTH} levels deep are not supported")
    if value is None or value == "":
        return
    if not isinstance(value, list):
        raise TagsError(field, f"is a sequence: expects an array of objects or null, not {json_type(value)}")
    for index, item in enumerate(value):
        path = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise TagsError(path, f"sequence item must be a JSON object, not {json_type(item)}")
        yield path, item


@functools.lru_cache(maxsize=4096)
def _max_vm(tag: int) -> int:
    vm = dictionary_VM(tag)
    if "n" in vm:
        return sys.maxsize
    return int(vm.split("-")[-1])


def json_type(value: object) -> str:
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
        return None if vr in NUMBER_VRS else ""
    values = list(value) if isinstance(value, list | MultiValue) else [value]
    return "\\".join(_scalar_text(vr, item) for item in values)


def _scalar_text(vr: str, value: Any) -> str:
    if value is None:
        return ""
    if vr == "AT":
        return _hex(int(value))
    if vr in FLOAT_VRS:
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
            raise ValueError(f"expected a JSON object, not {json_type(document)}")
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
    return worklist_warnings(ds, _sps_items(ds), _state, force=force)


# Whether a worklist attribute is absent, present without a value, or has one.
T = TypeVar("T")
AttributeState = Literal["absent", "empty", "set"]


def worklist_warnings(
    top: T, items: list[T] | None, state: Callable[[T, str], AttributeState], *, force: bool
) -> list[str]:
    """validate_worklist over any representation: `items` are the SPS items, `state` reads an attribute."""
    if not force:
        if not items:
            raise TagsError(_SPS, "is required with at least one item (unless Force is true)")
        for keyword in _ORTHANC_MINIMUM:
            if state(items[0], keyword) != "set":
                raise TagsError(f"{_SPS}[0].{keyword}", "is required (unless Force is true)")
    warnings = [w for keyword in _TOP_TYPE1 if (w := _type1_warning(state(top, keyword), keyword))]
    if items is None:
        warnings.append(f"{_SPS} is absent: modalities query worklists by scheduled procedure step")
    elif not items:
        warnings.append(f"{_SPS} is empty: modalities query worklists by scheduled procedure step")
    for index, item in enumerate(items or []):
        for keyword in _SPS_TYPE1:
            if warning := _type1_warning(state(item, keyword), f"{_SPS}[{index}].{keyword}"):
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


def _state(ds: Dataset, keyword: str) -> AttributeState:
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return "absent"
    value = ds[tag].value
    values = list(value) if isinstance(value, list | MultiValue) else [value]
    # Padding spaces are not content (PS3.5 6.2).
    return "set" if any(not _is_empty(v) and str(v).strip(" ") for v in values) else "empty"


def _type1_warning(state: AttributeState, path: str) -> str | None:
    if state == "absent":
        return f"{path} is absent; it is a type 1 return key that modalities expect"
    if state == "empty":
        return f"{path} is empty; it is a type 1 return key that modalities expect"
    return None
