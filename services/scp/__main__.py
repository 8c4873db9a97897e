"""`python -m services.scp`: the Modality Worklist C-FIND SCP (runs until SIGINT or SIGTERM)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from services.scp.server import serve
from services.scp.workers import follow_parent, limit_malloc_arenas
from shared.startup import load_service_settings

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, help="Orthanc-style JSON configuration file")
    parser.add_argument(
        "--share-port",
        action="store_true",
        help="bind DicomPort with SO_REUSEPORT, so that several SCP processes (one per core) serve it",
    )
    # Internal: set by worker 0 on the workers it starts (ScpWorkers), whose lifetime follows its own.
    parser.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    limit_malloc_arenas()
    if args.worker_of:
        follow_parent(args.worker_of)
    settings = load_service_settings(args.config)
    if settings is None:
        return 2
    return serve(settings, share_port=args.share_port, config=args.config)


if __name__ == "__main__":
    sys.exit(main())
