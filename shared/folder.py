"""The `.wl` folder: listing, reading and atomically writing worklist files, with their store rows in step.

File items are indexed in the store like any other item (`source_path` relative to `Worklists.Directory`,
`source_digest` the SHA-256 of the bytes), so C-FIND and the REST API serve them from the database. An item
that lives in a file is changed through its file: the REST API rewrites the file on PUT and removes it on
DELETE, otherwise the folder sync would bring the old content back. In folder mode REST-created items are
written as `<id>.wl` and keep the source "rest", so DeleteWorklistsDelay still applies to them (as in
Orthanc), while files dropped by a RIS (source "folder") never expire.

Ordering against a crash: the file is written (or removed) before the transaction commits. A failed commit
after a create removes the new file again; after a replace or delete the file is the truth and the next folder
sync brings the store in line with it, so no client-visible state is ever lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import store
from shared.config import WorklistsSettings
from shared.dicom_json import TagsError, dicom_json_dict, dicom_json_to_dataset, validate_worklist
from shared.dicom_structure import MalformedDicom, check_structure

SUFFIX = ".wl"
MWL_FIND_SOP_CLASS = "1.2.840.10008.5.1.4.31"
SPECIFIC_CHARACTER_SET = "00080005"
UTF8 = "ISO_IR 192"
# The ids the REST API accepts (views._check_id), ASCII only so an id is the same on every file system.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_WRITTEN = "folder.written"
_PYDICOM_LOGGER = logging.getLogger("pydicom")


class FolderError(OSError):
    """The worklist folder is missing or unusable; the message names it and says what is wrong."""


class InvalidWorklistFile(ValueError):
    """A `.wl` file that cannot be served; the reason names no patient data, so it may go into events."""


@dataclass(frozen=True)
class FileEntry:
    """A worklist file as listed: its path relative to the folder, and what shows a change without a read."""

    relative_path: str
    size: int
    mtime_ns: int


def is_worklist_name(name: str) -> bool:
    """`.wl` files, whatever the case of the extension; hidden files (our temp files among them) are not."""
    return not name.startswith(".") and name.lower().endswith(SUFFIX) and len(name) > len(SUFFIX)


def preferred_id(relative_path: str) -> str:
    """The file's stem when it is a valid item id (`<id>.wl` round-trips), else a hash of its path."""
    stem = PurePosixPath(relative_path).name[: -len(SUFFIX)]
    return stem if _SAFE_ID.fullmatch(stem) else hashed_id(relative_path)


def hashed_id(relative_path: str) -> str:
    """A stable id for a file whose stem is not a valid id, or is already another item's id."""
    return "wl-" + hashlib.sha256(relative_path.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def directory_problem(directory: Path, *, writable: bool) -> str | None:
    """Why `directory` cannot serve as the worklist folder, or None when it can (start-up and readiness)."""
    if not directory.exists():
        return f"Worklists.Directory {directory} does not exist"
    if not directory.is_dir():
        return f"Worklists.Directory {directory} is not a directory"
    if not os.access(directory, os.R_OK | os.X_OK):
        return f"Worklists.Directory {directory} is not readable"
    if writable and not os.access(directory, os.W_OK):
        return f"Worklists.Directory {directory} is not writable (needed to write and delete worklist files)"
    return None


def scan(directory: Path) -> list[FileEntry]:
    """The `.wl` files directly in `directory` (like Orthanc and wlmscpfs, subfolders are not served)."""
    problem = directory_problem(directory, writable=False)
    if problem:
        raise FolderError(problem)
    entries = []
    try:
        with os.scandir(directory) as listing:
            for entry in listing:
                if not is_worklist_name(entry.name):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    info = entry.stat()
                except OSError:
                    continue  # removed while we listed: the next scan will not see it either
                entries.append(FileEntry(entry.name, info.st_size, info.st_mtime_ns))
    except OSError as exc:
        raise FolderError(f"Worklists.Directory {directory} cannot be listed: {exc.strerror}") from exc
    return entries


def read_bytes(directory: Path, relative_path: str) -> bytes:
    return (directory / relative_path).read_bytes()


def parse_worklist(data: bytes, *, default_character_set: str) -> dict[str, Any]:
    """The DICOM JSON of a worklist file's bytes; InvalidWorklistFile when they cannot be served.

    A file without SpecificCharacterSet is decoded with DefaultEncoding, as Orthanc does; the stored JSON is
    Unicode, so the assumed character set is not added to it.
    """
    try:
        check_structure(data)
    except MalformedDicom as exc:
        raise InvalidWorklistFile(f"malformed DICOM: {exc}") from None
    # pydicom's warnings (and its log records of them) quote values, patient data: the checks here say what
    # is wrong without them.
    with warnings.catch_warnings(), _pydicom_silenced():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(io.BytesIO(data), force=True)
            declared = "SpecificCharacterSet" in ds
            if not declared:
                ds.SpecificCharacterSet = default_character_set
            document = dicom_json_dict(ds)
            validate_worklist(dicom_json_to_dataset(document), force=True)
        except TagsError as exc:
            raise InvalidWorklistFile(f"invalid worklist: {exc.field} is not valid") from None
        except Exception as exc:  # pydicom raises many types on bad values; which one does not matter here
            raise InvalidWorklistFile(f"unreadable DICOM dataset ({type(exc).__name__})") from None
    if not declared:
        document.pop(SPECIFIC_CHARACTER_SET, None)
    if not document:
        raise InvalidWorklistFile("the file holds no attributes")
    return document


@contextmanager
def _pydicom_silenced() -> Iterator[None]:
    quiet = logging.Filter("nothing-matches-this")  # a filter naming another logger drops every record
    _PYDICOM_LOGGER.addFilter(quiet)
    try:
        yield
    finally:
        _PYDICOM_LOGGER.removeFilter(quiet)


def encode_worklist(dataset: dict[str, Any]) -> bytes:
    """A worklist item as a DICOM Part 10 file (explicit VR little endian), as Orthanc writes them."""
    ds = dicom_json_to_dataset(dataset)
    if "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = UTF8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MWL_FIND_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new, never a part (temp, fsync, rename)."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; some file systems do not allow opening a directory, which is then fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def remove_file(path: Path) -> None:
    """Remove a worklist file; one already gone is fine (the RIS or another replica removed it)."""
    with suppress(FileNotFoundError):
        path.unlink()


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A store transaction whose newly written `.wl` files are removed again when it does not commit."""
    written: list[Path] = []
    async with sessions() as session:
        session.info[_WRITTEN] = written
        try:
            async with session.begin():
                yield session
        except BaseException:
            for path in written:
                await asyncio.to_thread(remove_file, path)
            raise


async def add_item(
    session: AsyncSession, worklists: WorklistsSettings, item_id: str, dataset: dict[str, Any], *, source: str
) -> store.StoredItem:
    """Create an item: in folder mode as the file `<id>.wl`, indexed in the same transaction."""
    if not worklists.folder_mode or worklists.directory is None:
        return await store.add_item(session, item_id, dataset, source=source)
    # An id the API accepts but that is no safe file stem (".x", non-ASCII) gets a hashed file name.
    name = (item_id if _SAFE_ID.fullmatch(item_id) else hashed_id(item_id)) + SUFFIX
    data = encode_worklist(dataset)
    stored = await store.add_item(
        session, item_id, dataset, source=source, source_path=name, source_digest=digest(data)
    )
    path = worklists.directory / name
    await asyncio.to_thread(write_atomically, path, data)
    session.info.setdefault(_WRITTEN, []).append(path)
    return stored


async def replace_item(
    session: AsyncSession, worklists: WorklistsSettings, item_id: str, dataset: dict[str, Any]
) -> store.StoredItem:
    """Replace an item's content; an item that lives in a file gets the file rewritten."""
    current = await store.get_item(session, item_id)
    if current.source_path is None or worklists.directory is None:
        return await store.replace_item(session, item_id, dataset)
    data = encode_worklist(dataset)
    stored = await store.replace_item(session, item_id, dataset, source_digest=digest(data))
    await asyncio.to_thread(write_atomically, worklists.directory / current.source_path, data)
    return stored


async def remove_item(
    session: AsyncSession, worklists: WorklistsSettings, item_id: str, *, reason: str
) -> store.StoredItem:
    """Delete an item, and its file when it lives in one (else the folder sync would bring it back).

    The file goes first: when it cannot be removed (OSError) the item stays, and nothing was written.
    """
    current = await store.get_item(session, item_id)
    if current.source_path is not None and worklists.directory is not None:
        await asyncio.to_thread(remove_file, worklists.directory / current.source_path)
    return await store.remove_item(session, item_id, reason=reason)
