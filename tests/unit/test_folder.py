"""`.wl` files on disk: which files are served, their ids, reading (or refusing) them, atomic writes."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from shared import folder
from shared.dicom_json import dataset_from_tags, dicom_json_dict

LATIN1 = "ISO_IR 100"


def worklist(**extra: Any) -> Dataset:
    tags: dict[str, Any] = {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientID": "P1",
        "PatientName": "Müller^Jörg",
        "AccessionNumber": "A1",
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
        "ScheduledProcedureStepSequence": [
            {
                "Modality": "CT",
                "ScheduledStationAETitle": "CT01",
                "ScheduledProcedureStepStartDate": "20251014",
            },
        ],
    }
    tags.update(extra)
    return dataset_from_tags({k: v for k, v in tags.items() if v is not None})


def part10(ds: Dataset, syntax: UID = ExplicitVRLittleEndian) -> bytes:
    ds = Dataset(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(folder.MWL_FIND_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def bare(ds: Dataset, *, implicit: bool) -> bytes:
    out = io.BytesIO()
    Dataset(ds).save_as(out, implicit_vr=implicit, little_endian=True)
    return out.getvalue()


def parse(data: bytes) -> dict[str, Any]:
    return folder.parse_worklist(data, default_character_set=LATIN1)


# --- which files, which ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "served"),
    [
        ("exam.wl", True),
        ("EXAM.WL", True),
        ("exam.Wl", True),
        ("exam.wl.tmp", False),
        (".exam.wl", False),
        (".wl", False),
        ("wl", False),
        ("exam.dcm", False),
        ("examwl", False),
    ],
)
def test_worklist_files_are_recognised_whatever_the_case_of_their_extension(name: str, served: bool) -> None:
    assert folder.is_worklist_name(name) is served


def test_a_file_keeps_its_stem_as_id_when_the_api_could_use_it() -> None:
    assert folder.preferred_id("exam-1.wl") == "exam-1"
    assert folder.preferred_id("EXAM_1.v2.WL") == "EXAM_1.v2"


@pytest.mark.parametrize("name", ["with space.wl", "Müller.wl", "-leading.wl", "x" * 65 + ".wl", "a#b.WL"])
def test_other_files_get_a_stable_hashed_id_the_api_accepts(name: str) -> None:
    item_id = folder.preferred_id(name)
    assert item_id == folder.preferred_id(name)
    assert item_id.startswith("wl-") and len(item_id) <= 64
    assert all(c.isalnum() or c in "-_." for c in item_id)


def test_hashed_ids_differ_by_path() -> None:
    assert folder.hashed_id("a.wl") != folder.hashed_id("a.WL")


# --- scanning ---------------------------------------------------------------------------------------------


def test_scan_lists_worklist_files_only(tmp_path: Path) -> None:
    for name in ("a.wl", "B.WL", "notes.txt", ".hidden.wl", ".a.wl.123.tmp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.wl").mkdir()
    (tmp_path / "sub.wl" / "c.wl").write_bytes(b"x")
    entries = folder.scan(tmp_path)
    assert sorted(e.relative_path for e in entries) == ["B.WL", "a.wl"]
    assert all(e.size == 1 and e.mtime_ns > 0 for e in entries)


def test_a_missing_folder_is_an_error_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(folder.FolderError, match=r"Worklists\.Directory .* does not exist"):
        folder.scan(tmp_path / "absent")


def test_a_file_instead_of_a_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in (folder.directory_problem(tmp_path / "file", writable=False) or "")
    assert folder.directory_problem(tmp_path, writable=True) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any folder")
def test_an_unreadable_folder_is_an_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)
    try:
        assert "not readable" in (folder.directory_problem(locked, writable=False) or "")
    finally:
        locked.chmod(0o755)


# --- reading ----------------------------------------------------------------------------------------------


def test_a_written_file_reads_back_as_the_same_item() -> None:
    document = dicom_json_dict(worklist())
    assert parse(folder.encode_worklist(document)) == document


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda ds: part10(ds), id="part10-explicit"),
        pytest.param(lambda ds: part10(ds, ImplicitVRLittleEndian), id="part10-implicit"),
        pytest.param(lambda ds: part10(ds, DeflatedExplicitVRLittleEndian), id="part10-deflated"),
        pytest.param(lambda ds: bare(ds, implicit=True), id="bare-implicit"),
        pytest.param(lambda ds: bare(ds, implicit=False), id="bare-explicit"),
    ],
)
def test_files_in_every_common_encoding_are_read(encode: Any) -> None:
    document = parse(encode(worklist()))
    assert document["00100010"]["Value"] == [{"Alphabetic": "Müller^Jörg"}]
    assert document["00400100"]["Value"][0]["00080060"]["Value"] == ["CT"]


def test_a_file_without_character_set_is_read_with_the_default_encoding() -> None:
    ds = Dataset()
    ds.PatientName = "Müller"
    ds.PatientID = "P1"
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True)
    raw = out.getvalue().replace("Müller".encode(), "Müller".encode("latin-1") + b" ")
    document = parse(raw)
    assert document["00100010"]["Value"] == [{"Alphabetic": "Müller"}]
    assert folder.SPECIFIC_CHARACTER_SET not in document


@pytest.mark.skipif(shutil.which("dump2dcm") is None, reason="DCMTK's dump2dcm is not installed")
def test_a_file_made_by_dump2dcm_is_read(tmp_path: Path) -> None:
    dump = tmp_path / "exam.dump"
    dump.write_text(
        "(0008,0005) CS [ISO_IR 100]\n"
        "(0008,0050) SH [ACC1]\n"
        "(0010,0010) PN [Doe^John]\n"
        "(0010,0020) LO [P1]\n"
        "(0020,000d) UI [1.2.3.4]\n"
        "(0040,0100) SQ (Sequence with undefined length #=1)\n"
        "  (fffe,e000) na (Item with undefined length #=2)\n"
        "    (0008,0060) CS [MR]\n"
        "    (0040,0002) DA [20251014]\n"
        "  (fffe,e00d) na (ItemDelimitationItem)\n"
        "(fffe,e0dd) na (SequenceDelimitationItem)\n"
    )
    subprocess.run(["dump2dcm", str(dump), str(tmp_path / "exam.wl")], check=True)
    document = parse((tmp_path / "exam.wl").read_bytes())
    assert document["0020000D"]["Value"] == ["1.2.3.4"]
    assert document["00400100"]["Value"][0]["00080060"]["Value"] == ["MR"]


def _corruptions() -> list[Any]:
    good = part10(worklist())
    good_bare = bare(worklist(), implicit=True)
    return [
        pytest.param(b"", id="empty"),
        pytest.param(b"PatientName=Doe^John\nPatientID=P1\n" * 4, id="text"),
        pytest.param(bytes(range(256)) * 3, id="binary"),
        pytest.param(good[: len(good) - 7], id="truncated-value"),
        pytest.param(good[: len(good) // 2], id="truncated-half"),
        pytest.param(good_bare[: len(good_bare) - 3], id="truncated-bare"),
        pytest.param(good[:132] + good[132:200], id="meta-only"),
        pytest.param(good + b"\x00\x01", id="trailing-bytes"),
    ]


@pytest.mark.parametrize("data", _corruptions())
def test_corrupt_files_are_refused_without_quoting_their_content(data: bytes) -> None:
    with pytest.raises(folder.InvalidWorklistFile) as caught:
        parse(data)
    assert "Doe" not in str(caught.value) and "Müller" not in str(caught.value)


def test_a_file_whose_sps_is_not_a_sequence_is_refused() -> None:
    ds = Dataset()
    ds.PatientID = "P1"
    ds.add_new(0x00400100, "LO", "not a sequence")
    with pytest.raises(folder.InvalidWorklistFile, match="ScheduledProcedureStepSequence"):
        parse(bare(ds, implicit=False))


# --- writing ----------------------------------------------------------------------------------------------


def test_an_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "exam.wl"
    target.write_bytes(b"old")
    folder.write_atomically(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["exam.wl"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "exam.wl"
    target.write_bytes(b"old")

    def full_disk(_src: object, _dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        folder.write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["exam.wl"]


def test_written_files_are_part10_files_for_the_worklist_sop_class() -> None:
    data = folder.encode_worklist(dicom_json_dict(worklist()))
    assert data[128:132] == b"DICM"
    assert folder.MWL_FIND_SOP_CLASS.encode() in data[:400]


def test_removing_a_file_already_gone_is_fine(tmp_path: Path) -> None:
    folder.remove_file(tmp_path / "gone.wl")
