"""`python -m bench` (`make bench`): see bench/settings.py for the options, results/ for the report."""

from __future__ import annotations

import logging
import shlex
import sys

from bench import netns, report, run
from bench.settings import parse

logger = logging.getLogger("bench")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse(argv, "python -m bench " + shlex.join(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The gate's pynetdicom client would log every PDU and identifier at INFO.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if cfg.netns:
        try:
            netns.enter_private_network()
        except netns.NamespaceUnavailable as exc:
            logger.error("%s; run as root, or with --no-netns --peers none", exc)
            return 2
    elif cfg.peers:
        logger.error(
            "the peers listen on every interface: without a private network namespace use --peers none"
        )
        return 2
    results = run.run(cfg)
    markdown, json_path = report.write(results, cfg.out)
    logger.info("report: %s and %s", markdown, json_path)
    failed = [g for g in results.gate if g["verdict"] == "MISMATCH"]
    if failed:
        logger.error("correctness gate: %d mismatch(es), see the report", len(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
