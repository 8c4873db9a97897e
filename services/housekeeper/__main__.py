"""`python -m services.housekeeper`: the housekeeper service, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from services.housekeeper.app import Housekeeper
from shared.config import ConfigError, Settings
from shared.folder import FolderError
from shared.startup import load_service_settings

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
    settings = load_service_settings(args.config)
    if settings is None:
        return 2
    try:
        asyncio.run(main(settings))
    except (FolderError, ConfigError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("housekeeper stopped")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
