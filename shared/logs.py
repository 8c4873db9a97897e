"""Logging set-up for the services (called from each main(), never at import)."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("MWL_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pynetdicom logs every PDU at INFO/DEBUG, identifiers included: keep it to warnings.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
