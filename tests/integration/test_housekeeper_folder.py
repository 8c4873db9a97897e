"""The `.wl` folder: files appear, change and go; bad files are skipped; REST writes files in folder mode."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.housekeeper.app import Housekeeper
from shared import folder
from shared.config import Settings
from tests.integration.conftest import ApiFactory
from tests.support.housekeeper import (
    Store,
    document,
    eventually,
    is_ready,
    more_passes,
    publish,
    running,
    stream_events,
    tags,
)
from tests.support.servers import NatsServer


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    yield store
    await store.close()


@pytest.fixture
def wl_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "worklists"
    directory.mkdir()
    return directory


def folder_settings(
    settings_factory: Any, directory: Path, *, folder_mode: bool = False, **worklists: Any
) -> Settings:
    made: Settings = settings_factory(
        Worklists={
            "Directory": str(directory),
            "SaveInOrthancDatabase": not folder_mode,
            "HousekeepingInterval": 0.2,
            "FileSettleTime": 0,  # a file that fails to parse is rejected at once, not looked at again first
            **worklists,
        }
    )
    return made


def drop(directory: Path, name: str, **extra: Any) -> None:
    """A RIS drops a worklist file (atomically, as a careful RIS does)."""
    folder.write_atomically(directory / name, folder.encode_worklist(document(**extra)))


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def patient_name(item: Any) -> str:
    return str(item.dataset["00100010"]["Value"][0]["Alphabetic"])


async def test_files_added_changed_and_removed_follow_in_the_store(
    settings_factory: Any, db: Store, wl_dir: Path, nats_server: NatsServer
) -> None:
    async with running(folder_settings(settings_factory, wl_dir)) as housekeeper:
        drop(wl_dir, "exam1.wl", PatientName="Doe^Jane")
        drop(wl_dir, "EXAM2.WL", PatientID="P2")
        await eventually(lambda: db.ids_are({"exam1", "EXAM2"}))
        assert (await db.items())["EXAM2"].source_path == "EXAM2.WL"

        drop(wl_dir, "exam1.wl", PatientName="Roe^Richard-Longer")
        await eventually(lambda: _name_is(db, "exam1", "Roe^Richard-Longer"))
        (wl_dir / "EXAM2.WL").unlink()
        await eventually(lambda: db.ids_are({"exam1"}))
        await eventually(db.outbox_empty)
        assert deletions(housekeeper, "file-removed") == 1

    events = [(s, p["worklist_id"], p.get("reason")) for s, p in await stream_events(nats_server.url)]
    assert sorted(events[:2]) == [("worklist.created", "EXAM2", None), ("worklist.created", "exam1", None)]
    assert events[2:] == [("worklist.updated", "exam1", None), ("worklist.deleted", "EXAM2", "file-removed")]


async def test_a_corrupt_file_is_skipped_and_reported_once_without_affecting_others(
    settings_factory: Any, db: Store, wl_dir: Path, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    drop(wl_dir, "good1.wl")
    (wl_dir / "broken.wl").write_text("PatientName=Doe^Secret\n" * 5)
    good = folder.encode_worklist(document(PatientName="Doe^Secret"))
    (wl_dir / "cut.WL").write_bytes(good[: len(good) - 9])
    drop(wl_dir, "good2.WL")
    async with running(folder_settings(settings_factory, wl_dir)) as housekeeper:
        await eventually(lambda: db.ids_are({"good1", "good2"}))
        await more_passes(housekeeper, 3)
        await eventually(db.outbox_empty)
        rejected = [p for s, p in await stream_events(nats_server.url) if s == "worklist.rejected"]
        assert sorted(p["path"] for p in rejected) == ["broken.wl", "cut.WL"]
        assert all(p["reason"] and "Secret" not in str(p) for p in rejected)
        skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
        assert len(skipped) == 2 and not [r for r in caplog.records if r.levelno >= logging.ERROR]

        drop(wl_dir, "broken.wl", PatientID="P3")  # the RIS fixes the file
        await eventually(lambda: db.ids_are({"good1", "good2", "broken"}))


async def test_folder_items_can_be_fetched_changed_and_deleted_through_rest(
    settings_factory: Any, api_factory: ApiFactory, db: Store, wl_dir: Path
) -> None:
    settings = folder_settings(settings_factory, wl_dir)
    api = await api_factory(Worklists=settings.worklists.model_dump(by_alias=True, mode="json"))
    drop(wl_dir, "EXAM.WL")
    drop(wl_dir, "with space.wl", AccessionNumber="A2")
    hashed = folder.hashed_id("with space.wl")
    async with running(settings) as housekeeper:
        await eventually(lambda: db.ids_are({"EXAM", hashed}))
        listed = await (await api.get("/worklists")).json()
        assert {entry["ID"] for entry in listed} == {"EXAM", hashed}
        for item_id in ("EXAM", hashed):
            assert (await api.get(f"/worklists/{item_id}")).status == 200

        assert (await api.delete("/worklists/EXAM")).status == 200
        assert not (wl_dir / "EXAM.WL").exists()
        response = await api.put(f"/worklists/{hashed}", json={"Tags": tags(AccessionNumber="A3")})
        assert response.status == 200
        on_disk = folder.parse_worklist(
            (wl_dir / "with space.wl").read_bytes(), default_character_set="ISO_IR 100"
        )
        assert on_disk["00080050"]["Value"] == ["A3"]

        await more_passes(housekeeper, 3)
        items = await db.items()
        assert set(items) == {hashed}  # the deleted file stays deleted, the edit is not reverted
        assert items[hashed].dataset["00080050"]["Value"] == ["A3"]


async def test_folder_mode_rest_create_writes_the_file_and_delete_removes_it(
    settings_factory: Any, api_factory: ApiFactory, db: Store, wl_dir: Path, nats_server: NatsServer
) -> None:
    settings = folder_settings(settings_factory, wl_dir, folder_mode=True)
    api = await api_factory(Worklists=settings.worklists.model_dump(by_alias=True, mode="json"))
    async with running(settings) as housekeeper:
        response = await api.post("/worklists/create", json={"Tags": tags(PatientName="Doe^Folder")})
        assert response.status == 200
        item_id = (await response.json())["ID"]
        path = wl_dir / f"{item_id}.wl"
        stored = (await db.items())[item_id]
        assert folder.parse_worklist(path.read_bytes(), default_character_set="ISO_IR 100") == stored.dataset
        assert names(wl_dir) == [path.name]  # no temp file left behind

        await more_passes(housekeeper, 3)
        assert await db.ids() == {item_id}  # indexed once, not again by the folder sync

        assert (await api.delete(f"/worklists/{item_id}")).status == 200
        assert not path.exists()
        await more_passes(housekeeper, 2)
        assert await db.ids() == set()
        await eventually(db.outbox_empty)

    events = [(s, p.get("source"), p.get("reason")) for s, p in await stream_events(nats_server.url)]
    assert events == [("worklist.created", "rest", None), ("worklist.deleted", "rest", "rest")]


async def test_expiry_deletes_rest_created_items_and_their_files_but_never_ris_files(
    settings_factory: Any, api_factory: ApiFactory, db: Store, wl_dir: Path, nats_server: NatsServer
) -> None:
    settings = folder_settings(settings_factory, wl_dir, folder_mode=True, DeleteWorklistsDelay=1)
    api = await api_factory(Worklists=settings.worklists.model_dump(by_alias=True, mode="json"))
    rest_file = (await (await api.post("/worklists/create", json={"Tags": tags()})).json())["ID"]
    now = datetime.now(UTC)
    await db.add("rest-old", now=now - timedelta(hours=1))
    await db.add("rest-young", now=now + timedelta(hours=1, minutes=30))
    drop(wl_dir, "ris.wl")

    # Two hours from now: every item created just now is past the one-hour delay.
    async with running(settings, clock=lambda: datetime.now(UTC) + timedelta(hours=2)) as housekeeper:
        await eventually(lambda: db.ids_are({"rest-young", "ris"}))
        await more_passes(housekeeper, 2)
        assert await db.ids() == {"rest-young", "ris"}
        assert names(wl_dir) == ["ris.wl"]
        await eventually(db.outbox_empty)
        assert deletions(housekeeper, "expired") == 2

    deleted = {
        p["worklist_id"]: p["reason"]
        for s, p in await stream_events(nats_server.url)
        if s == "worklist.deleted"
    }
    assert deleted == {rest_file: "expired", "rest-old": "expired"}


async def test_a_file_that_cannot_be_removed_keeps_its_item_and_blocks_no_other(
    settings_factory: Any,
    db: Store,
    wl_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    study = "1.2.826.0.1.3680043.8.498.31"
    drop(wl_dir, "locked.wl", StudyInstanceUID=study)
    drop(wl_dir, "free.wl", StudyInstanceUID=study)
    remove_file = folder.remove_file

    def refuse_locked(path: Path) -> None:
        if path.name == "locked.wl":
            raise PermissionError(13, "Permission denied")
        remove_file(path)

    monkeypatch.setattr(folder, "remove_file", refuse_locked)
    async with running(folder_settings(settings_factory, wl_dir)) as housekeeper:
        await eventually(lambda: db.ids_are({"locked", "free"}))
        await publish(housekeeper.settings.nats_url, "study.stable", {"StudyInstanceUID": study})
        await eventually(lambda: db.ids_are({"locked"}))
        await more_passes(housekeeper, 2)
    assert names(wl_dir) == ["locked.wl"]
    assert any("cannot remove the file of worklist locked" in r.getMessage() for r in caplog.records)


async def test_a_folder_that_disappears_keeps_its_items_until_it_is_back(
    settings_factory: Any, db: Store, wl_dir: Path
) -> None:
    drop(wl_dir, "exam.wl")
    async with running(folder_settings(settings_factory, wl_dir)) as housekeeper:
        await eventually(lambda: db.ids_are({"exam"}))
        moved = wl_dir.with_name("elsewhere")
        os.rename(wl_dir, moved)
        await eventually(lambda: _not(is_ready(housekeeper)), what="not ready without its folder")
        await more_passes(housekeeper, 2)
        assert await db.ids() == {"exam"}
        os.rename(moved, wl_dir)
        await eventually(lambda: is_ready(housekeeper), what="ready again")


async def test_a_missing_folder_stops_the_start(settings_factory: Any, tmp_path: Path) -> None:
    with pytest.raises(folder.FolderError, match=r"Worklists\.Directory .*absent.* does not exist"):
        async with running(folder_settings(settings_factory, tmp_path / "absent")):
            pass


def deletions(housekeeper: Housekeeper, reason: str) -> float:
    """What the housekeeper's /metrics says it deleted for `reason`."""
    labels = {"reason": reason}
    return housekeeper.metrics.registry.get_sample_value("mwl_housekeeping_deletions_total", labels) or 0.0


async def _name_is(db: Store, item_id: str, name: str) -> bool:
    items = await db.items()
    return item_id in items and patient_name(items[item_id]) == name


async def _not(value: Awaitable[bool]) -> bool:
    return not await value
