"""PS3.5 6.2 value checks: one value of a given VR, as a client wrote it in Orthanc "Tags" (no I/O)."""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

_INT_RANGES: dict[str, tuple[int, int]] = {
    "US": (0, 2**16 - 1),
    "SS": (-(2**15), 2**15 - 1),
    "UL": (0, 2**32 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "UV": (0, 2**64 - 1),
    "SV": (-(2**63), 2**63 - 1),
}
FLOAT_VRS = frozenset({"FL", "FD"})
# Binary-encoded numbers: a zero-length one has no string form, so Orthanc reports it as Null.
NUMBER_VRS = frozenset({*_INT_RANGES, *FLOAT_VRS, "AT"})
# PS3.5 6.2: backslash is an ordinary character in these VRs, so they hold exactly one value.
SINGLE_VALUE_VRS = frozenset({"LT", "ST", "UT", "UR"})
# PS3.5 6.1.3: only these free-text VRs may contain TAB, LF, FF and CR.
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
# PS3.5 6.2: these VRs are restricted to the default (ASCII) character repertoire.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
_MAX_CHARS: dict[str, int] = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240,
    "SH": 16, "ST": 1024, "TM": 14, "UI": 64, "UC": 2**32 - 2, "UR": 2**32 - 2, "UT": 2**32 - 2,
}  # fmt: skip

HEX_TAG = re.compile(r"[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}")
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


class InvalidValue(ValueError):
    """A single value is wrong; the caller adds the field path."""


def parse_value(vr: str, text: str) -> Any:
    """One value (between backslashes) as pydicom should hold it; raises InvalidValue saying what is wrong."""
    if vr in NUMBER_VRS:
        return _parse_number(vr, text.strip(" "))
    if not text:
        return text  # an empty value inside a multi-valued element is legal
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue("is not valid Unicode (lone surrogate)") from None
    control = _CONTROL_IN_FREE_TEXT if vr in _FREE_TEXT_VRS else _CONTROL
    if control.search(text):
        raise InvalidValue(f"contains a control character not allowed in VR {vr}")
    if vr in _ASCII_VRS and not text.isascii():
        raise InvalidValue(f"VR {vr} allows only ASCII characters")
    limit = _MAX_CHARS.get(vr)
    if limit is not None and len(text) > limit:
        raise InvalidValue(f"is longer than {limit} characters (VR {vr})")
    checker = _CHECKERS.get(vr)
    problem = checker(text) if checker else None
    if problem:
        raise InvalidValue(problem)
    return text


def _parse_number(vr: str, text: str) -> int | float:
    if vr == "AT":
        if not HEX_TAG.fullmatch(text):
            raise InvalidValue('is not a tag written "gggg,eeee" (VR AT)')
        return int(text[:4], 16) << 16 | int(text[5:], 16)
    if vr in FLOAT_VRS:
        if not _DECIMAL.fullmatch(text):
            raise InvalidValue(f"is not a decimal number (VR {vr})")
        number = float(text)
        if not math.isfinite(number) or (vr == "FL" and abs(number) > _FLT_MAX):
            raise InvalidValue(f"is out of range for VR {vr}")
        return number
    if not _INTEGER.fullmatch(text):
        raise InvalidValue(f"is not an integer (VR {vr})")
    low, high = _INT_RANGES[vr]
    integer = int(text)
    if not low <= integer <= high:
        raise InvalidValue(f"is out of range for VR {vr} ({low} to {high})")
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
