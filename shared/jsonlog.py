"""Log output: text or one JSON object per line, with patient data left out unless LogPatientData is on.

A record's `extra` fields become JSON fields:
`logger.info("C-FIND done", extra={"calling_ae": "CT01", "duration_ms": 3.2, "answers": 4})`.
Patient data goes under the `phi` extra (`extra={"phi": {"PatientID": ...}}`), never into the message: the
formatter drops `phi`, and any field named like a patient attribute at any depth, unless patient data logging
was asked for (a debugging aid, off by default).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PHI_FIELD = "phi"

# Patient attributes of a worklist item (PS3.15 Annex E's Basic Profile, those a worklist carries) and
# the shapes code uses for whole identifiers: dropped wherever they appear unless patient data is allowed.
PATIENT_FIELDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "PatientAge",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientMotherBirthName",
        "PatientComments",
        "PatientWeight",
        "PatientSize",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "IssuerOfPatientID",
        "MedicalAlerts",
        "Allergies",
        "PregnancyStatus",
        "EthnicGroup",
        "patient_name",
        "patient_id",
        "birth_date",
        "identifier",
        "dataset",
        "tags",
        PHI_FIELD,
    }
)

# Attributes every LogRecord has: the rest of record.__dict__ is what the caller passed as `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items() if str(k) not in PATIENT_FIELDS}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, then the extra fields."""

    def __init__(self, *, patient_data: bool = False) -> None:
        super().__init__()
        self.patient_data = patient_data

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {}
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            if self.patient_data:
                entry[key] = value
            elif key not in PATIENT_FIELDS:
                entry[key] = _scrub(value)
        entry.update(
            time=datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(log_format: str, *, patient_data: bool = False) -> logging.Formatter:
    """The formatter for LogFormat `text` or `json`; anything else is a ValueError naming the option."""
    if log_format == "json":
        return JsonFormatter(patient_data=patient_data)
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    choices = ", ".join(LOG_FORMATS)
    raise ValueError(f"invalid configuration option LogFormat: {log_format!r} is not one of {choices}")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs, told apart from others (pytest's capture) when replaced."""


def configure(
    level: str | int = "INFO",
    log_format: str = "text",
    *,
    patient_data: bool = False,
    stream: IO[str] | None = None,
) -> None:
    """Send the root logger's records to `stream` (stderr) in `log_format`.

    Called once early (before the settings are read, so a configuration error is logged too) and again
    with the settings' values: a later call replaces the handler of an earlier one rather than adding one.
    """
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format, patient_data=patient_data))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # pynetdicom logs every PDU at INFO/DEBUG, identifiers included: keep it to warnings.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
