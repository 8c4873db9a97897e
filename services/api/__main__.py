"""`python -m services.api`: the REST API service."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from services.api.app import create_app
from shared import folder
from shared.config import Settings
from shared.startup import load_service_settings

logger = logging.getLogger(__name__)


def folder_problem(settings: Settings) -> str | None:
    """Why the API cannot start: in folder mode REST creates write `.wl` files, so the folder must be
    there and writable. None when it is, or outside folder mode."""
    worklists = settings.worklists
    if not worklists.folder_mode or worklists.directory is None:
        return None
    return folder.directory_problem(worklists.directory, writable=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, help="Orthanc-style JSON configuration file")
    args = parser.parse_args(argv)
    settings = load_service_settings(args.config)
    if settings is None:
        return 2
    problem = folder_problem(settings)
    if problem:
        logger.error("%s: the API cannot start in folder mode (SaveInOrthancDatabase false)", problem)
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
