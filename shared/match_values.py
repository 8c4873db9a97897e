"""Value-level C-FIND matching (PS3.4 C.2.2.2): parsing of query values and one matcher per matching type.

Every matcher is compiled once per query and then tests one stored DICOM JSON value (PS3.18 F.2: a string,
a number, or a PN object). Stored values that do not parse simply do not match; query values that do not
parse raise `BadValue`, which the caller turns into status 0xA900. Pure functions, no shared state.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

ValueMatcher = Callable[[Any], bool]

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
NUMERIC_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Leading and trailing spaces are insignificant for these VRs (PS3.5 6.2); only trailing ones for the others.
_STRIP_BOTH = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"})

Bounds = tuple[str | None, str | None]
"""Inclusive (lower, upper) sortable keys of a date/time range; None is an open end."""

_DA_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_TM_RE = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?")
_DT_ONE = r"[0-9]{4}(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:\.[0-9]{1,6})?)?)?)?)?)?"
_DT_RE = re.compile(rf"({_DT_ONE})([+-][0-9]{{4}})?")
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TM_MIN, _TM_MAX = "000000.000000", "235959.999999"


class BadValue(ValueError):
    """A query value that is not valid for its VR; the message is short and holds no patient data."""


def normalize_query_value(vr: str, value: str) -> str:
    """Drop the padding PS3.5 calls insignificant, so that `value` compares with stored (stripped) values."""
    if vr == "UI":
        return value.strip(" \0")
    return value.strip(" ") if vr in _STRIP_BOTH else value.rstrip(" ")


def fold_pn(value: str) -> str:
    """Case- and accent-insensitive form of a name: NFKD, combining marks dropped, casefold.

    Combining marks are the characters of non-zero canonical combining class. Used for PN matching when
    CaseSensitivePN is false and for the indexed patient_name_key column. It maps each character on its
    own (fold(a + b) == fold(a) + fold(b)), so the fold of a literal prefix is a prefix of the fold of any
    value starting with it: "Müller" and "MULLER" both fold to "muller".
    """
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def normalize_pn(value: str) -> str:
    """A PN string without the trailing spaces, empty components and groups that PS3.5 6.2.1 lets one omit."""
    groups = [g.rstrip(" ").rstrip("^").rstrip(" ") for g in value.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def person_name_str(value: Any) -> str:
    """The DICOM string form `Alphabetic=Ideographic=Phonetic` (normalized) of a DICOM JSON PN value."""
    if value is None:
        return ""
    if isinstance(value, dict):
        groups = (str(value.get(key) or "") for key in ("Alphabetic", "Ideographic", "Phonetic"))
        return normalize_pn("=".join(groups))
    return normalize_pn(str(value))


def parse_offset(value: str) -> tzinfo | None:
    """A UTC offset `&ZZXX` (-1200 .. +1400), as found in DT values and TimezoneOffsetFromUTC."""
    if len(value) != 5 or value[0] not in "+-" or not value[1:].isascii() or not value[1:].isdigit():
        return None
    hours, minutes = int(value[1:3]), int(value[3:5])
    if hours > 14 or minutes > 59:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if value[0] == "-" else delta)


def parse_da(value: str) -> str | None:
    """`YYYYMMDD` for a valid DA value (the ACR-NEMA form `YYYY.MM.DD` is tolerated), else None."""
    value = value.strip()
    if len(value) == 10 and value[4] == "." and value[7] == ".":
        value = value[:4] + value[5:7] + value[8:]
    m = _DA_RE.fullmatch(value)
    if m is None:
        return None
    year, month, day = (int(g) for g in m.groups())
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    return value


def parse_tm(value: str, ceil: bool = False) -> str | None:
    """Sortable `HHMMSS.ffffff` for a valid TM value, else None.

    Reduced precision is filled down ("10" -> 10:00:00.000000) or, with `ceil`, up to the end of the period
    it names ("10" -> 10:59:59.999999), so that an upper bound "-10" includes 10:30. A leap second (60) is
    kept inside its minute. The ACR-NEMA form `HH:MM:SS` is tolerated.
    """
    m = _TM_RE.fullmatch(value.strip().replace(":", ""))
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    filler = 59 if ceil else 0
    hour, minute = int(hh), int(mm) if mm is not None else filler
    second = int(ss) if ss is not None else filler
    micro = frac.ljust(6, "9" if ceil else "0") if frac is not None else ("999999" if ceil else "000000")
    if hour > 23 or minute > 59 or second > 60:
        return None
    if second == 60:
        second, micro = 59, "999999"
    return f"{hour:02d}{minute:02d}{second:02d}.{micro}"


def parse_dt(value: str, naive_tz: tzinfo, ceil: bool = False) -> str | None:
    """Sortable UTC `YYYYMMDDHHMMSS.ffffff` for a valid DT value, else None.

    The value's own offset is honoured; a value without one is read in `naive_tz`. Reduced precision is
    filled down, or up with `ceil` ("2025" -> 2025-12-31 23:59:59.999999).
    """
    m = _DT_RE.fullmatch(value.strip())
    if m is None:
        return None
    body, offset = m.groups()
    tz = parse_offset(offset) if offset else naive_tz
    if tz is None:
        return None
    digits, _, frac = body.partition(".")

    def part(start: int, low: int, high: int) -> int:
        return int(digits[start : start + 2]) if len(digits) > start else (high if ceil else low)

    year, month = int(digits[:4]), part(4, 1, 12)
    if year < 1 or not 1 <= month <= 12:
        return None
    last_day = calendar.monthrange(year, month)[1]
    day, hour, minute, second = part(6, 1, last_day), part(8, 0, 23), part(10, 0, 59), part(12, 0, 59)
    micro = int(frac.ljust(6, "9" if ceil else "0")) if frac else (999999 if ceil else 0)
    if not 1 <= day <= last_day or hour > 23 or minute > 59 or second > 60:
        return None
    if second == 60:
        second, micro = 59, 999999
    try:
        utc = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(UTC)
    except OverflowError:
        return None
    return f"{utc.year:04d}{utc:%m%d%H%M%S}.{utc.microsecond:06d}"


def sps_start_key(date: str, time: str) -> str:
    """Sortable `YYYYMMDDHHMMSS` of an SPS start, for the store's index and the start_range hint.

    "" when the date is empty or invalid; a missing or invalid time counts as 000000 ("0930" -> "093000",
    fractions dropped), so a date-only match always falls inside its day's key range.
    """
    day = parse_da(date)
    if day is None:
        return ""
    clock = parse_tm(time) if time else None
    return day + (clock[:6] if clock else "000000")


def is_universal(value: str) -> bool:
    """Universal Matching (PS3.4 C.2.2.2.3): a zero-length value, or only `*`, matches every entity.

    We accept `*` as universal on every VR, dates and UIDs included (Orthanc rejects it there).
    """
    return not value or value.strip("*") == ""


def _range_parts(value: str) -> tuple[str, str] | None:
    """(lower, upper) text of a DA/TM range `a-b`, `-b`, `a-`; None for a single value."""
    if "-" not in value:
        return None
    lower, _, upper = value.partition("-")
    if "-" in upper:
        raise BadValue("Malformed range")
    return lower.strip(), upper.strip()


def _bounds(value: str, vr: str, parse: Callable[[str, bool], str | None]) -> Bounds:
    parts = _range_parts(value)
    lower, upper = (value, value) if parts is None else parts
    low = parse(lower, False) if lower else None
    high = parse(upper, True) if upper else None
    if (lower and low is None) or (upper and high is None):
        raise BadValue(f"Invalid {vr} value")
    return low, high


def da_bounds(value: str) -> Bounds:
    """Bounds of a DA key (PS3.4 C.2.2.2.5): a single date `d` is the range `d-d`."""
    return _bounds(value, "DA", lambda text, _ceil: parse_da(text))


def tm_bounds(value: str) -> Bounds:
    """Bounds of a TM key, within one day (no midnight crossing); a single time spans its precision."""
    return _bounds(value, "TM", parse_tm)


def dt_bounds(value: str, naive_tz: tzinfo) -> Bounds:
    """Bounds of a DT key; the `-` of a negative UTC offset is not taken for the range separator.

    A value that reads as one DT is a single value; otherwise the first `-` that splits it into two
    valid (or empty) ends is the separator.
    """
    value = value.strip()
    single = parse_dt(value, naive_tz)
    if single is not None:
        return single, parse_dt(value, naive_tz, ceil=True)
    for index, char in enumerate(value):
        if char != "-":
            continue
        lower, upper = value[:index], value[index + 1 :]
        low = parse_dt(lower, naive_tz) if lower else None
        high = parse_dt(upper, naive_tz, ceil=True) if upper else None
        if (low is not None or not lower) and (high is not None or not upper):
            return low, high
    raise BadValue("Invalid DT value")


def range_matcher(bounds: Bounds, parse: Callable[[str], str | None]) -> ValueMatcher:
    """Range Matching (PS3.4 C.2.2.2.5): inclusive, either end open; single DA/TM/DT values use it too.

    A reversed range (lower > upper) matches nothing: midnight crossing is only meaningful combined with
    a date (see `combined_datetime_matcher`).
    """
    low, high = bounds

    def match(value: Any) -> bool:
        key = parse(value) if isinstance(value, str) else None
        return key is not None and (low is None or low <= key) and (high is None or key <= high)

    return match


def combined_bounds(date: Bounds, time: Bounds) -> Bounds:
    """One DT range from a date key and a time key (PS3.4 C.2.2.2.5.4, CP-601).

    Date `20251014-20251015` with time `180000-080000` spans from the 14th 18:00:00 to the 15th 08:00:00
    (inclusive, at the precision given: 08:00:00.999999).
    A single value counts as a one-value range on its side, so a single date with a time range and a date
    range with a single time are combined the same way. Keys are `YYYYMMDD` + `HHMMSS.ffffff`.
    """
    low = None if date[0] is None else date[0] + (time[0] or _TM_MIN)
    high = None if date[1] is None else date[1] + (time[1] or _TM_MAX)
    return low, high


def combined_datetime_matcher(bounds: Bounds) -> Callable[[Any, Any], bool]:
    """Combined date-time Range Matching (PS3.4 C.2.2.2.5.4): tests a stored (date, time) pair.

    Both stored values must be present: a zero-length stored value never matches a non-empty key.
    """
    low, high = bounds

    def match(date: Any, time: Any) -> bool:
        day = parse_da(date) if isinstance(date, str) else None
        clock = parse_tm(time) if isinstance(time, str) and time else None
        if day is None or clock is None:
            return False
        key = day + clock
        return (low is None or low <= key) and (high is None or key <= high)

    return match


def uid_list_matcher(uids: Iterable[str]) -> ValueMatcher:
    """List of UID Matching (PS3.4 C.2.2.2.2): `uid1\\uid2` matches any; one UID is Single Value Matching."""
    wanted = frozenset(uids)
    for uid in wanted:
        if len(uid) > 64 or _UID_RE.fullmatch(uid) is None:
            raise BadValue("Invalid UI value")
    return lambda value: isinstance(value, str) and value in wanted


def single_value_matcher(query: str, vr: str) -> ValueMatcher:
    """Single Value Matching (PS3.4 C.2.2.2.1): exact and case-sensitive.

    Numbers (IS, DS and the binary numeric VRs, numbers in DICOM JSON) compare by value, AT by tag.
    PN has its own `pn_matcher`; DA/TM/DT single values go through `range_matcher` at their precision.
    """
    if vr in NUMERIC_VRS:
        if _NUMBER_RE.fullmatch(query) is None:
            raise BadValue(f"Invalid {vr} value")
        number = float(query)

        def numeric(value: Any) -> bool:
            try:
                return isinstance(value, (int, float, str)) and float(value) == number
            except ValueError:
                return False

        return numeric
    if vr == "AT":
        tag = query.upper()
        return lambda value: isinstance(value, str) and value.upper() == tag
    return lambda value: value == query


def wildcard_matcher(pattern: str, fold: bool = False) -> Callable[[str], bool]:
    """Wild Card Matching (PS3.4 C.2.2.2.4): `*` any run of characters (empty included), `?` exactly one.

    Compiled into fixed-length segments between the stars, found left to right: linear-ish in the value's
    length whatever the pattern, where a naive regex of `.*` can backtrack exponentially. With `fold`, the
    pattern's literals are folded (`fold_pn`) and the caller passes folded values.
    """

    def segment(text: str) -> tuple[re.Pattern[str], int]:
        literals = [fold_pn(piece) if fold else piece for piece in text.split("?")]
        regex = re.compile(".".join(re.escape(piece) for piece in literals), re.DOTALL)
        return regex, sum(len(piece) for piece in literals) + len(literals) - 1

    segments = [segment(part) for part in pattern.split("*")]
    if len(segments) == 1:
        regex, length = segments[0]
        return lambda value: len(value) == length and regex.fullmatch(value) is not None
    head, *middle, tail = segments

    def match(value: str) -> bool:
        end = len(value) - tail[1]
        if end < head[1] or not head[0].fullmatch(value, 0, head[1]) or not tail[0].fullmatch(value, end):
            return False
        position = head[1]
        for regex, length in middle:
            if length:
                found = regex.search(value, position, end)
                if found is None:
                    return False
                position = found.end()
        return True

    return match


def string_matcher(query: str, fold: bool = False) -> Callable[[str], bool]:
    """Single value or wildcard matching of one string, per the wildcards it holds."""
    if "*" in query or "?" in query:
        return wildcard_matcher(query, fold)
    expected = fold_pn(query) if fold else query
    return lambda value: value == expected


def pn_matcher(query: str, fold: bool) -> ValueMatcher:
    """Single value or wildcard matching of a PN key (C.2.2.2.1, C.2.2.2.4), one component group at a time.

    Each non-universal group of the key (alphabetic, ideographic, phonetic) must match the same group of
    the stored name, so `Yamada^Tarou` matches `Yamada^Tarou=山田^太郎`. With `fold` (CaseSensitivePN
    false) both sides are compared through `fold_pn`: case and accents are ignored.
    """
    checks = [
        (index, string_matcher(group, fold))
        for index, group in enumerate(normalize_pn(query).split("="))
        if not is_universal(group)
    ]

    def match(value: Any) -> bool:
        if not isinstance(value, (dict, str)):
            return False
        groups = person_name_str(value).split("=")
        for index, check in checks:
            group = groups[index] if index < len(groups) else ""
            if not check(fold_pn(group) if fold else group):
                return False
        return True

    return match


def pn_is_universal(query: str) -> bool:
    """True when every component group of a PN key is universal (e.g. `*` or `*=*`)."""
    return all(is_universal(group) for group in normalize_pn(query).split("="))
