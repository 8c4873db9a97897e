"""`python -m services.housekeeper`: refuses to start without its folder, works, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from shared.migrate import upgrade
from tests.support.housekeeper import Store, eventually, publish
from tests.support.servers import NatsServer, service_env

STUDY = "1.2.826.0.1.3680043.8.498.5"


def config(tmp_path: Path, database_url: str, nats_url: str, **worklists: object) -> Path:
    path = tmp_path / "config.json"
    settings = {
        "DatabaseUrl": database_url,
        "NatsUrl": nats_url,
        "HousekeeperHealthPort": 0,
        "Worklists": {"HousekeepingInterval": 0.2, **worklists},
    }
    path.write_text(json.dumps(settings))
    return path


def start(config_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.housekeeper", "--config", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=service_env(),
    )


def test_a_missing_folder_is_a_clear_start_up_error(tmp_path: Path, nats_server: NatsServer) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    process = start(config(tmp_path, url, nats_server.url, Directory=str(tmp_path / "absent")))
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert f"Worklists.Directory {tmp_path / 'absent'} does not exist" in err


async def test_the_service_deletes_on_study_stable_and_stops_on_sigterm(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    db = Store(url)
    try:
        await db.add("exam", StudyInstanceUID=STUDY)
        process = start(config(tmp_path, url, nats_server.url))
        try:
            await publish(nats_server.url, "study.stable", {"StudyInstanceUID": STUDY})
            await eventually(lambda: db.ids_are(set()), within=30, what="item deleted by the service")
        finally:
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "housekeeper stopped" in err
        assert "Traceback" not in err
    finally:
        await db.close()
