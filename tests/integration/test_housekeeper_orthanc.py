"""The Orthanc connector, real Orthanc: a study stored there deletes its worklist, across restarts."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from shared.config import load_settings
from shared.migrate import upgrade
from tests.support.housekeeper import Store, eventually, running, stream_events
from tests.support.servers import NatsServer, Postgres, free_port

ORTHANC = Path("/usr/sbin/Orthanc")
USER, PASSWORD = "housekeeper", "s3cret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
STUDY = "1.2.826.0.1.3680043.8.498.77"
LATER_STUDY = "1.2.826.0.1.3680043.8.498.78"

pytestmark = pytest.mark.skipif(
    not ORTHANC.exists(), reason="orthanc is not installed (Debian package orthanc)"
)


class Orthanc:
    """A real Orthanc on free ports, with its storage in the test's folder and StableAge of one second."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "Name": "mwl-test",
            "HttpPort": self.port,
            "DicomPort": free_port(),
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "StableAge": 1,
            "Plugins": [],
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self.log = (root / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [str(ORTHANC), str(root / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 20.0) -> None:
        request = urllib.request.Request(self.url + "/system", headers=AUTH)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited; see {self.root / 'orthanc.log'}")
            try:
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"Orthanc did not answer /system within {timeout}s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """PostgreSQL only: replicas rely on the connector's row lock (SKIP LOCKED); SQLite shares the rest."""
    url = postgres.new_database()
    upgrade(url)
    return url


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Store]:
    store = Store(pg_url)
    yield store
    await store.close()


def instance(study_uid: str) -> bytes:
    """A minimal Secondary Capture instance of the given study, as a modality would send."""
    ds = Dataset()
    ds.PatientID = "P1"
    ds.PatientName = "Doe^Jane"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    ds.AccessionNumber = "A1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def upload(orthanc: Orthanc, study_uid: str) -> str:
    """POST /instances; returns Orthanc's id of the study."""
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.post(orthanc.url + "/instances", data=instance(study_uid)) as response,
    ):
        assert response.status == 200
        return str((await response.json())["ParentStudy"])


async def is_stable(orthanc: Orthanc, study_id: str) -> bool:
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.get(f"{orthanc.url}/studies/{study_id}") as response,
    ):
        return bool((await response.json())["IsStable"])


async def test_a_study_stored_in_orthanc_deletes_its_worklist_even_across_a_restart(
    orthanc: Orthanc, pg_url: str, db: Store, nats_server: NatsServer
) -> None:
    settings = load_settings(
        environ={},
        overrides={
            "DatabaseUrl": pg_url,
            "NatsUrl": nats_server.url,
            "HousekeeperHealthPort": 0,
            "Worklists": {"HousekeepingInterval": 0.2},
            "OrthancConnector": {
                "Url": orthanc.url,
                "Username": USER,
                "Password": PASSWORD,
                "PollInterval": 0.2,
            },
        },
    )
    await db.add("exam", StudyInstanceUID=STUDY)
    await db.add("later-exam", StudyInstanceUID=LATER_STUDY)
    await db.add("unrelated", StudyInstanceUID="1.2.826.0.1.3680043.8.498.99")

    async with running(settings):
        await upload(orthanc, STUDY)
        await eventually(lambda: db.ids_are({"later-exam", "unrelated"}), within=30, what="exam deleted")

    # While the housekeeper is down, another study becomes stable: its change waits in Orthanc's feed.
    later = await upload(orthanc, LATER_STUDY)
    await eventually(lambda: is_stable(orthanc, later), within=30, what="later study stable in Orthanc")

    async with running(settings):
        await eventually(lambda: db.ids_are({"unrelated"}), within=30, what="later exam deleted")
        await eventually(db.outbox_empty)

    events = await stream_events(nats_server.url)
    stable = Counter(p["StudyInstanceUID"] for s, p in events if s == "study.stable")
    assert stable == Counter({STUDY: 1, LATER_STUDY: 1})  # the position survived: nothing replayed
    assert {p["source"] for s, p in events if s == "study.stable"} == {"orthanc"}
    deleted = {p["worklist_id"]: p["reason"] for s, p in events if s == "worklist.deleted"}
    assert deleted == {"exam": "study-stable", "later-exam": "study-stable"}
