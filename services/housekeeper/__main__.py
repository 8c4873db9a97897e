"""`python -m services.housekeeper`: the housekeeper service, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from services.housekeeper.app import Housekeeper
from shared.config import ConfigError, Settings, load_settings
from shared.folder import FolderError
from shared.logs import configure_logging

logger = logging.getLogger(__name__)


async def main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await Housekeeper(settings).run(stop)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, help="Orthanc-style JSON configuration file")
    args = parser.parse_args(argv)
    configure_logging()  # MWL_LOG_LEVEL and MWL_LOG_FORMAT, so a configuration error is logged too
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    configure_logging(log_format=settings.log_format, patient_data=settings.log_patient_data)
    try:
        asyncio.run(main(settings))
    except (FolderError, ConfigError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("housekeeper stopped")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
