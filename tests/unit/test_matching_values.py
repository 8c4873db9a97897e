"""Value-level matching: DA/TM/DT parsing and bounds, wildcards, PN folding, the SPS start key."""

from __future__ import annotations

import time
from datetime import UTC

import pytest

from shared.match_values import (
    BadValue,
    combined_bounds,
    da_bounds,
    dt_bounds,
    fold_pn,
    parse_da,
    parse_dt,
    parse_tm,
    person_name_str,
    sps_start_key,
    tm_bounds,
    wildcard_matcher,
)


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("Müller^Jürgen", "muller^jurgen"),
        ("ÉLODIE^Renée", "elodie^renee"),
        ("Straße", "strasse"),
        ("ｆｕｌｌ", "full"),  # compatibility forms
        ("Ａｎｎ", "ann"),
        ("Σίσυφος", "σισυφοσ"),
        ("Yamada^Tarou=山田^太郎", "yamada^tarou=山田^太郎"),
        ("Đorđe", "đorđe"),  # a stroke is no combining mark: kept
    ],
)
def test_fold_pn(name: str, folded: str) -> None:
    assert fold_pn(name) == folded
    assert fold_pn(folded) == folded


@pytest.mark.parametrize(
    ("date", "clock", "key"),
    [
        ("20251014", "0930", "20251014093000"),
        ("20251014", "093015.123456", "20251014093015"),
        ("20251014", "09", "20251014090000"),
        ("20251014", "", "20251014000000"),
        ("20251014", "09:30:15", "20251014093015"),
        ("20251014", "9:30", "20251014000000"),  # unreadable time: start of the day, inside the day's range
        ("20251014", "235960", "20251014235959"),  # leap second stays inside the day
        ("2025.10.14", "1200", "20251014120000"),
        ("", "0930", ""),
        ("garbage", "0930", ""),
    ],
)
def test_sps_start_key(date: str, clock: str, key: str) -> None:
    assert sps_start_key(date, clock) == key


@pytest.mark.parametrize(
    ("value", "floor", "ceil"),
    [
        ("10", "100000.000000", "105959.999999"),
        ("1030", "103000.000000", "103059.999999"),
        ("103015", "103015.000000", "103015.999999"),
        ("103015.5", "103015.500000", "103015.599999"),
        ("235960", "235959.999999", "235959.999999"),
        (" 0800 ", "080000.000000", "080059.999999"),
    ],
)
def test_parse_tm_fills_reduced_precision_down_and_up(value: str, floor: str, ceil: str) -> None:
    assert parse_tm(value) == floor
    assert parse_tm(value, ceil=True) == ceil


@pytest.mark.parametrize("value", ["24", "1060", "103061", "1", "10301", "103015.", "abc", "", "１０"])
def test_parse_tm_rejects(value: str) -> None:
    assert parse_tm(value) is None


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("20240229", "20240229"),
        ("20250229", None),
        ("20251301", None),
        ("20251000", None),
        ("00000101", None),
        ("2025101", None),
        ("２０２５１０１４", None),  # only ASCII digits
        ("2025.10.14", "20251014"),
    ],
)
def test_parse_da(value: str, parsed: str | None) -> None:
    assert parse_da(value) == parsed


def test_parse_dt_converts_to_utc_and_fills_precision() -> None:
    assert parse_dt("20251014100000+0200", UTC) == "20251014080000.000000"
    assert parse_dt("20251014100000", UTC) == "20251014100000.000000"
    assert parse_dt("2025", UTC) == "20250101000000.000000"
    assert parse_dt("2025", UTC, ceil=True) == "20251231235959.999999"
    assert parse_dt("202402", UTC, ceil=True) == "20240229235959.999999"
    assert parse_dt("20250101000000-0100", UTC) == "20250101010000.000000"
    assert parse_dt("20251014+1500", UTC) is None
    assert parse_dt("20251032", UTC) is None


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        ("20251014-0500", ("20251014050000.000000", "20251015045959.999999")),  # one day at -0500
        ("20251014-20251015", ("20251014000000.000000", "20251015235959.999999")),
        ("2025-2026", ("20250101000000.000000", "20261231235959.999999")),
        ("-20251014", (None, "20251014235959.999999")),
        ("20251014-", ("20251014000000.000000", None)),
        ("20251014-0500-20251015+0100", ("20251014050000.000000", "20251015225959.999999")),
    ],
)
def test_dt_bounds_tell_a_negative_offset_from_a_range(value: str, bounds: tuple[str | None, ...]) -> None:
    assert dt_bounds(value, UTC) == bounds


@pytest.mark.parametrize("value", ["2025x", "20251014--20251015", "20251014+0100+0200", "abc-"])
def test_dt_bounds_reject_malformed_values(value: str) -> None:
    with pytest.raises(BadValue):
        dt_bounds(value, UTC)


def test_da_and_tm_bounds() -> None:
    assert da_bounds("20251014") == ("20251014", "20251014")
    assert da_bounds("-20251014") == (None, "20251014")
    assert da_bounds("-") == (None, None)
    assert tm_bounds("0800-1000") == ("080000.000000", "100059.999999")
    assert tm_bounds("0930") == ("093000.000000", "093059.999999")
    for bad in ("2025-13-01", "2025101", "20251014-2025"):
        with pytest.raises(BadValue):
            da_bounds(bad)


def test_combined_bounds() -> None:
    date = da_bounds("20251014-20251015")
    assert combined_bounds(date, tm_bounds("1800-0800")) == ("20251014180000.000000", "20251015080059.999999")
    assert combined_bounds(date, tm_bounds("-0800")) == ("20251014000000.000000", "20251015080059.999999")
    assert combined_bounds(da_bounds("20251014-"), tm_bounds("1800")) == ("20251014180000.000000", None)


def test_person_name_str_is_the_normalized_dicom_string() -> None:
    japanese = {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}
    assert person_name_str(japanese) == "Yamada^Tarou=山田^太郎"
    assert person_name_str({"Ideographic": "山田"}) == "=山田"
    assert person_name_str({"Alphabetic": "Doe^John^^", "Phonetic": ""}) == "Doe^John"
    assert person_name_str("Doe^John^ ") == "Doe^John"
    assert person_name_str(None) == ""


def test_wildcard_matching_stays_fast_on_hostile_patterns() -> None:
    match = wildcard_matcher("*a" * 25 + "*b")
    started = time.perf_counter()
    assert not match("a" * 20_000)
    assert match("a" * 20_000 + "b")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("", "", True),
        ("", "a", False),
        ("*", "", True),
        ("a*", "a", True),
        ("*a*", "bab", True),
        ("a*b*c", "abbc", True),
        ("a*b*c", "acb", False),
        ("?", "", False),
        ("??", "日本", True),
        ("a.c", "abc", False),  # regex metacharacters are literals
        ("(a)", "(a)", True),
        ("*\n*", "x\ny", True),
    ],
)
def test_wildcard_matcher(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_matcher(pattern)(value) is expected
