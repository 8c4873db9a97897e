"""Retention: which items expire, how long a stable study is remembered — as functions of `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.models import SOURCE_REST

# Trailing spaces and NULs are DICOM padding, not part of a UID (PS3.5 6.2, 9.1).
_UID_PADDING = " \x00"


def normalize_uid(value: object) -> str:
    """A StudyInstanceUID as compared: text without DICOM padding; "" for anything that is not a string."""
    return value.strip(_UID_PADDING) if isinstance(value, str) else ""


def expiry_cutoff(now: datetime, delay_hours: float) -> datetime | None:
    """Items created at or before the cutoff have expired; None when DeleteWorklistsDelay is 0 (never)."""
    if delay_hours <= 0:
        return None
    return now - timedelta(hours=delay_hours)


def is_expired(*, source: str, created_at: datetime, now: datetime, delay_hours: float) -> bool:
    """DeleteWorklistsDelay: only items the REST API created expire; files a RIS dropped are the RIS's.

    A REST-created item that lives in the folder (folder mode) expires too: it is still the API's item.
    """
    cutoff = expiry_cutoff(now, delay_hours)
    return cutoff is not None and source == SOURCE_REST and created_at <= cutoff


def deleted_by_stable_study(item_uid: str, stable_uid: str) -> bool:
    """A stable study deletes the items with its StudyInstanceUID; an item without one is never touched."""
    item, stable = normalize_uid(item_uid), normalize_uid(stable_uid)
    return bool(item) and item == stable


def stable_study_time(reported: object, now: datetime) -> datetime:
    """When the study became stable: the event's ISO time, or `now` when it is absent, unreadable or ahead.

    Counting from the event's own time means a study.stable replayed from the stream days later is not
    remembered again for the full period.
    """
    if isinstance(reported, str):
        try:
            parsed = datetime.fromisoformat(reported)
        except ValueError:
            return now
        parsed = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        return min(parsed, now)
    return now


def remember_until(stable_at: datetime, memory_hours: float) -> datetime:
    """Until when an early study.stable still deletes a worklist item that appears after it."""
    return stable_at + timedelta(hours=max(memory_hours, 0.0))


def is_remembered(expires_at: datetime, now: datetime) -> bool:
    return now < expires_at
