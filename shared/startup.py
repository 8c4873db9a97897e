"""What every service's `__main__` does first: set up logging, then load the settings or log why not."""

from __future__ import annotations

import logging
from pathlib import Path

from shared.config import ConfigError, Settings, load_settings
from shared.logs import configure_logging

logger = logging.getLogger(__name__)


def load_service_settings(config_file: Path | None) -> Settings | None:
    """The settings, with logging configured as they ask; None when they are invalid (the reason logged).

    Logging is configured from MWL_LOG_LEVEL and MWL_LOG_FORMAT before the settings are read, so that a
    configuration error is logged in the format the operator's log collector expects.
    """
    configure_logging()
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        logger.error("%s", exc)
        return None
    configure_logging(log_format=settings.log_format, patient_data=settings.log_patient_data)
    return settings
