"""`python -m shared.migrate`: bring the store to the newest schema (alembic upgrade head), or check it is."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from shared.config import ConfigError, load_settings
from shared.db import create_sync_engine

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def schema_problem(database_url: str) -> str | None:
    """Why the store cannot serve this code's schema yet (unreachable, not migrated, behind), or None."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    heads = set(script.get_heads())
    engine = create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except Exception as exc:  # any driver error: not reachable (yet)
        return f"cannot reach the store ({type(exc).__name__})"
    finally:
        engine.dispose()
    if current == heads:
        return None
    if not current:
        return "the store is not migrated"
    if not current <= {rev.revision for rev in script.walk_revisions()}:
        # A newer release migrated it (rolling upgrade, or a rollback of the code): its schema stays
        # compatible with the previous release, so this one may run.
        newer = ", ".join(sorted(current))
        logger.warning("the store is at a newer revision (%s) than this code knows", newer)
        return None
    return f"the store is at revision {', '.join(sorted(current))}, not {', '.join(sorted(heads))}"


def wait_for_schema(
    database_url: str,
    timeout: float,
    *,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Poll until the store is at the newest revision (None) or `timeout` seconds passed (the last problem).

    Services run this before they start (a Kubernetes initContainer), so that they wait for the migration
    Job instead of failing against an older schema.
    """
    deadline = clock() + timeout
    while True:
        problem = schema_problem(database_url)
        if problem is None or clock() >= deadline:
            return problem
        logger.info("waiting for the schema: %s", problem)
        sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, help="Orthanc-style JSON configuration file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing: exit 0 if the store is at the newest revision, else 1",
    )
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="with --check: keep checking this long"
    )
    parser.add_argument("revision", nargs="?", default="head")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    if args.check:
        problem = wait_for_schema(settings.database_url, args.wait)
        if problem is not None:
            logger.error("%s: run the migration (python -m shared.migrate)", problem)
            return 1
        logger.info("the store is at the newest revision")
        return 0
    upgrade(settings.database_url, args.revision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
