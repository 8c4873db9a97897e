"""`python -m services.scp`: the Modality Worklist C-FIND SCP (runs until SIGINT or SIGTERM)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from services.scp.server import serve
from shared.config import ConfigError, load_settings
from shared.logs import configure_logging

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, help="Orthanc-style JSON configuration file")
    parser.add_argument(
        "--share-port",
        action="store_true",
        help="bind DicomPort with SO_REUSEPORT, so that several SCP processes (one per core) serve it",
    )
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    configure_logging(log_format=settings.log_format, patient_data=settings.log_patient_data)
    return serve(settings, share_port=args.share_port)


if __name__ == "__main__":
    sys.exit(main())
