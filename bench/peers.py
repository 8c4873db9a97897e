"""The peers: the generated items as `.wl` files, DCMTK wlmscpfs and Orthanc with its sample worklist plugin.

Both read `<dir>/<AET>/*.wl`: wlmscpfs wants a `lockfile` in the AET folder, Orthanc's plugin reads the
folder named in `Worklists.Database`. Both leave Nagle's algorithm on unless TCP_NODELAY=1 is in their
environment (DCMTK reads it), which would add tens of ms to each query.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
from pathlib import Path

from bench.data import Tags, Worklists
from bench.processes import Service, free_port
from shared.dicom_json import dataset_from_tags, dicom_json_dict
from shared.folder import encode_worklist

logger = logging.getLogger(__name__)

WLMSCPFS = "/usr/bin/wlmscpfs"
ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"
AET = "ORTHANC"
PEERS = ("wlmscpfs", "orthanc")


def available(peer: str) -> str | None:
    """Why `peer` cannot run here (None when it can)."""
    binary = WLMSCPFS if peer == "wlmscpfs" else ORTHANC
    if not Path(binary).exists():
        return f"{binary} is not installed"
    if peer == "orthanc" and not Path(ORTHANC_PLUGIN).exists():
        return f"{ORTHANC_PLUGIN} is not installed"
    return None


def _write_chunk(args: tuple[Path, int, list[Tags]]) -> None:
    folder, first, items = args
    for offset, tags in enumerate(items):
        data = encode_worklist(dicom_json_dict(dataset_from_tags(tags)))
        (folder / f"item{first + offset:07d}.wl").write_bytes(data)


def write_folder(wl: Worklists, cache_dir: Path) -> Path:
    """`<dir>/ORTHANC/*.wl` for the items, cached by (N, seed, day); returns <dir>."""
    root = cache_dir / f"wl-{wl.n}-{wl.seed}-{wl.today:%Y%m%d}"
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    folder = root / AET
    folder.mkdir(parents=True)
    (folder / "lockfile").touch()
    chunk = 2000
    jobs = [(folder, start, wl.items[start : start + chunk]) for start in range(0, wl.n, chunk)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as pool:
        pool.map(_write_chunk, jobs)
    done.touch()
    logger.info("wrote %d .wl files into %s", wl.n, folder)
    return root


def start_wlmscpfs(root: Path, logs: Path) -> Service:
    port = free_port()
    env = {**os.environ, "TCP_NODELAY": "1"}
    # -dfr: serve items with two Scheduled Procedure Steps too (rejected as "incomplete" otherwise).
    # -csk: answers keep the files' SpecificCharacterSet (ISO_IR 100), else it is dropped.
    command = [WLMSCPFS, "-dfp", str(root), "-dfr", "-csk", str(port)]
    return Service.start("wlmscpfs", command, port, logs / "wlmscpfs.log", env=env)


def start_orthanc(root: Path, work: Path, logs: Path) -> Service:
    port, http = free_port(), free_port()
    storage = work / "orthanc-storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "DicomAet": AET,
        "DicomPort": port,
        "HttpPort": http,
        "RemoteAccessAllowed": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowFindWorklist": True,
        "DefaultEncoding": "Latin1",
        "Plugins": [ORTHANC_PLUGIN],
        "Worklists": {"Enable": True, "Database": str(root / AET)},
    }
    path = work / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    env = {**os.environ, "TCP_NODELAY": "1"}
    return Service.start("orthanc", [ORTHANC, str(path)], port, logs / "orthanc.log", env=env, timeout=60)
