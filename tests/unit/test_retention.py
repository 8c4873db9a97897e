"""Retention decisions with an injected clock: expiry after DeleteWorklistsDelay, memory of stable studies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import retention
from shared.models import SOURCE_FOLDER, SOURCE_REST

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_delay_of_zero_never_expires_anything() -> None:
    assert retention.expiry_cutoff(NOW, 0) is None
    ancient = NOW - timedelta(days=3650)
    assert not retention.is_expired(source=SOURCE_REST, created_at=ancient, now=NOW, delay_hours=0)


def test_rest_items_expire_once_the_delay_is_over() -> None:
    created = NOW - timedelta(hours=24)
    assert retention.is_expired(source=SOURCE_REST, created_at=created, now=NOW, delay_hours=24)
    young = created + timedelta(seconds=1)
    assert not retention.is_expired(source=SOURCE_REST, created_at=young, now=NOW, delay_hours=24)


def test_fractional_hours_count() -> None:
    created = NOW - timedelta(minutes=31)
    assert retention.is_expired(source=SOURCE_REST, created_at=created, now=NOW, delay_hours=0.5)


def test_files_dropped_by_a_ris_never_expire() -> None:
    old = NOW - timedelta(days=30)
    assert not retention.is_expired(source=SOURCE_FOLDER, created_at=old, now=NOW, delay_hours=1)


@given(
    age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60)),
    delay=st.floats(min_value=0.001, max_value=1000, allow_nan=False),
)
def test_expiry_agrees_with_the_cutoff(age: timedelta, delay: float) -> None:
    created = NOW - age
    cutoff = retention.expiry_cutoff(NOW, delay)
    assert cutoff is not None
    expired = retention.is_expired(source=SOURCE_REST, created_at=created, now=NOW, delay_hours=delay)
    assert expired == (created <= cutoff)


@given(later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10)))
def test_an_expired_item_stays_expired_as_time_passes(later: timedelta) -> None:
    created = NOW - timedelta(hours=2)
    assert retention.is_expired(source=SOURCE_REST, created_at=created, now=NOW + later, delay_hours=2)


@pytest.mark.parametrize(
    ("item", "stable", "deleted"),
    [
        ("1.2.3", "1.2.3", True),
        ("1.2.3", "1.2.3\x00", True),
        ("1.2.3 ", "1.2.3", True),
        ("1.2.3", "1.2.30", False),
        ("", "", False),
        ("", "1.2.3", False),
        ("   ", "  ", False),
    ],
)
def test_a_stable_study_deletes_only_items_with_its_uid(item: str, stable: str, deleted: bool) -> None:
    assert retention.deleted_by_stable_study(item, stable) is deleted


def test_uids_of_other_types_are_empty() -> None:
    assert retention.normalize_uid(None) == ""
    assert retention.normalize_uid(123) == ""
    assert retention.normalize_uid(" 1.2.3\x00 ") == "1.2.3"


def test_a_stable_study_is_remembered_for_the_configured_time() -> None:
    until = retention.remember_until(NOW, 24)
    assert retention.is_remembered(until, NOW + timedelta(hours=23, minutes=59))
    assert not retention.is_remembered(until, NOW + timedelta(hours=24))


def test_a_memory_of_zero_hours_remembers_nothing() -> None:
    assert not retention.is_remembered(retention.remember_until(NOW, 0), NOW)


def test_the_memory_counts_from_the_event_time() -> None:
    reported = (NOW - timedelta(hours=30)).isoformat()
    stable_at = retention.stable_study_time(reported, NOW)
    assert stable_at == NOW - timedelta(hours=30)
    assert not retention.is_remembered(retention.remember_until(stable_at, 24), NOW)


@pytest.mark.parametrize("reported", [None, "", "yesterday", 12, (NOW + timedelta(hours=5)).isoformat()])
def test_an_absent_bad_or_future_event_time_counts_as_now(reported: object) -> None:
    assert retention.stable_study_time(reported, NOW) == NOW


def test_a_naive_event_time_is_utc() -> None:
    assert retention.stable_study_time("2026-11-28T10:00:00", NOW) == NOW - timedelta(hours=2)
