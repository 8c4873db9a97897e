"""`python -m services.api`: the REST API service."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from services.api.app import create_app
from shared.config import ConfigError, load_settings
from shared.logs import configure_logging

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, help="Orthanc-style JSON configuration file")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    web.run_app(
        create_app(settings),
        host=settings.bind_address,
        port=settings.http_port,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
