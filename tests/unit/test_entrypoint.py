"""The container entry point: a service name runs it, `migrate` migrates, anything else is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shared.migrate import schema_problem, upgrade, wait_for_schema
from tests.support.servers import service_env

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
EX_USAGE = 64


def run(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = service_env(PYTHON=sys.executable)
    if database_url:
        env["MWL_DATABASE_URL"] = database_url
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_script_is_executable_and_posix() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=False).returncode == 0


def test_an_unknown_service_is_a_usage_error() -> None:
    result = run("scheduler")
    assert result.returncode == EX_USAGE
    assert "unknown service: scheduler" in result.stderr and "scp|api|housekeeper|migrate" in result.stderr


def test_no_service_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == EX_USAGE and "usage:" in result.stderr


def test_help_prints_usage() -> None:
    assert run("--help").returncode == 0


def test_migrate_brings_the_store_to_the_newest_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'worklists.db'}"
    before = run("migrate", "--check", database_url=url)
    assert before.returncode == 1 and "not migrated" in before.stderr
    assert run("migrate", database_url=url).returncode == 0
    assert schema_problem(url) is None
    after = run("migrate", "--check", database_url=url)
    assert after.returncode == 0, after.stderr


def test_wait_for_schema_polls_until_the_migration_is_done(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'worklists.db'}"
    clock = [0.0]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        clock[0] += seconds
        if len(naps) == 2:
            upgrade(url)  # the migration Job finishes while the init container waits

    assert wait_for_schema(url, 60, interval=2, clock=lambda: clock[0], sleep=sleep) is None
    assert naps == [2, 2]


def test_wait_for_schema_gives_up_after_its_timeout(tmp_path: Path) -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    url = "postgresql://mwl:secret@127.0.0.1:1/mwl"
    problem = wait_for_schema(url, 5, interval=2, clock=lambda: clock[0], sleep=sleep)
    assert problem is not None and problem.startswith("cannot reach the store") and "secret" not in problem
    assert clock[0] == 6
