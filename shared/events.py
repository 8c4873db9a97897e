"""Event subjects and payloads: the one place that defines what goes on the bus (documented in the README)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

STREAM = "MWL_EVENTS"
STREAM_SUBJECTS = ["worklist.>", "study.>"]

WORKLIST_CREATED = "worklist.created"
WORKLIST_UPDATED = "worklist.updated"
WORKLIST_DELETED = "worklist.deleted"
WORKLIST_REJECTED = "worklist.rejected"
STUDY_STABLE = "study.stable"
WORKLIST_SUBJECTS = (WORKLIST_CREATED, WORKLIST_UPDATED, WORKLIST_DELETED)

# Why an item was deleted (worklist.deleted "reason").
REASON_REST = "rest"
REASON_STUDY_STABLE = "study-stable"
REASON_EXPIRED = "expired"
REASON_FILE_REMOVED = "file-removed"


@dataclass(frozen=True)
class Event:
    subject: str
    payload: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.payload["event_id"])

    def encode(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()


def _envelope(now: datetime | None = None) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "time": (now or datetime.now(UTC)).isoformat()}


def worklist_event(
    subject: str,
    worklist_id: str,
    summary: dict[str, str],
    *,
    source: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> Event:
    """worklist.created / updated / deleted: the item's id and the keys a dashboard shows, no patient data."""
    payload: dict[str, Any] = {**_envelope(now), "worklist_id": worklist_id, "source": source, **summary}
    if reason is not None:
        payload["reason"] = reason
    return Event(subject, payload)


def study_stable_event(
    study_instance_uid: str,
    *,
    source: str,
    patient_id: str | None = None,
    accession_number: str | None = None,
    now: datetime | None = None,
) -> Event:
    """study.stable: a study has arrived at the PACS and is complete."""
    payload: dict[str, Any] = {**_envelope(now), "StudyInstanceUID": study_instance_uid, "source": source}
    if patient_id:
        payload["PatientID"] = patient_id
    if accession_number:
        payload["AccessionNumber"] = accession_number
    return Event(STUDY_STABLE, payload)


def worklist_rejected_event(path: str, reason: str, *, source: str, now: datetime | None = None) -> Event:
    """worklist.rejected: a worklist file could not be read; its path and why, no patient data."""
    return Event(WORKLIST_REJECTED, {**_envelope(now), "source": source, "path": path, "reason": reason})


def decode(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("event payload is not a JSON object")
    return value
