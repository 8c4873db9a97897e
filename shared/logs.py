"""Logging set-up for the services (called from each main(), never at import)."""

from __future__ import annotations

import logging
import os

from shared import jsonlog


def configure_logging(
    level: str | None = None, log_format: str | None = None, *, patient_data: bool | None = None
) -> None:
    """Log to stderr as text or JSON lines (shared.jsonlog); a later call replaces an earlier one's handler.

    Each service calls it first with no arguments, so that a configuration error is logged in the format of
    MWL_LOG_FORMAT at MWL_LOG_LEVEL, and again with the settings' LogFormat and LogPatientData.
    """
    chosen = log_format or os.environ.get("MWL_LOG_FORMAT", "text")
    if chosen not in jsonlog.LOG_FORMATS:
        # Only the early call can meet a bad MWL_LOG_FORMAT: the settings then reject it, naming LogFormat.
        chosen = "text"
    jsonlog.configure(
        (level or os.environ.get("MWL_LOG_LEVEL", "INFO")).upper(),
        chosen,
        patient_data=bool(patient_data),
    )
    # pynetdicom logs every PDU at INFO/DEBUG, identifiers included: keep it to warnings.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom's warnings quote element values, which can be patient data.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
