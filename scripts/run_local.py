"""`make run`: the embedded quick start — migrated SQLite store, a local NATS with JetStream, the services."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from shared.config import ConfigError, load_settings
from shared.logs import configure_logging
from shared.migrate import upgrade

logger = logging.getLogger("run")

SERVICES = ("api", "scp", "housekeeper")
DATA = Path("data")


def _wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _start_nats(url: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start nats-server with JetStream on the loopback port of NatsUrl (4222 by default)."""
    binary = Path(sys.executable).parent / "nats-server"
    port = urlsplit(url).port or 4222
    DATA.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(DATA / "nats")],
        stdout=subprocess.DEVNULL,
    )
    if not _wait_for_port(port, 10):
        process.terminate()
        raise RuntimeError(f"nats-server did not start on 127.0.0.1:{port} (is the port taken?)")
    return process, f"nats://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2

    children: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    if args.config:
        env["MWL_CONFIG"] = str(args.config.resolve())
    try:
        if "MWL_NATS_URL" not in os.environ:
            nats, url = _start_nats(settings.nats_url)
            children.append(nats)
            env["MWL_NATS_URL"] = url
            logger.info("NATS with JetStream on %s", url)
        logger.info("migrating the store")
        upgrade(settings.database_url)
        for name in SERVICES:
            children.append(subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env))
        logger.info(
            "REST API on http://%s:%d, DICOM %s on port %d; Ctrl-C stops everything",
            settings.bind_address,
            settings.http_port,
            settings.dicom_aet,
            settings.dicom_port,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        logger.error("a service stopped; stopping the others")
        return 1
    except KeyboardInterrupt:
        logger.info("stopping")
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in reversed(children):
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
