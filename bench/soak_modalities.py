"""The soak's modalities: one process each, looping new association, a selective MWL C-FIND, every answer
read, release; each answer count checked against the generated worklists.

A modality calls with its station's AE title and mostly asks for its own day (today's items for its station
and modality), now and then for one patient, one accession number, or its modality's whole day, as the
console's worklist screen and its "search" box do. Counts of patient and accession queries are exact: the
RIS bridge never touches the initial items and gives its own items new patient IDs and accession numbers.
Counts of today's queries may grow while the bridge schedules items for today, so they are bounded: at least
what the initial items give, at most that plus every item the bridge has begun to create.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench import dimse
from bench.data import SPS, STATIONS, Worklists
from bench.queries import encode, identifier

# How a modality picks its next query (weights).
MIX = {"today_station": 0.45, "patient_id": 0.2, "accession": 0.2, "today_modality": 0.15}
VARIANTS = 16  # patient and accession queries per modality
SAMPLE_BATCH = 200  # samples a worker sends at once
FIND_TIMEOUT = 30.0  # seconds a C-FIND may go unanswered before the association counts as failed


@dataclass(frozen=True)
class ModalityQuery:
    kind: str
    implicit: bytes
    explicit: bytes
    expected: int  # answers (one per matching Scheduled Procedure Step) from the initial items
    exact: bool  # False: between `expected` and `expected` + the items the bridge began to create


@dataclass(frozen=True)
class Modality:
    calling: str  # the station's AE title
    modality: str
    queries: dict[str, list[ModalityQuery]]


@dataclass(frozen=True)
class Sample:
    """One association: when it began (monotonic), how long it took, what it answered, what went wrong."""

    modality: int
    kind: str
    began: float
    seconds: float
    answers: int
    status: int
    error: str  # the association failed: rejected, aborted, refused, timed out, or a non-zero final status
    wrong_count: str  # the association succeeded but the answer count is not what the items give


def _query(kind: str, top: dict[str, str], step: dict[str, str], count: int, exact: bool) -> ModalityQuery:
    ds = identifier(top, step)
    return ModalityQuery(kind, encode(ds, implicit=True), encode(ds, implicit=False), count, exact)


def _steps_by(items: list[dict[str, Any]], key: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for item in items:
        counts[item[key]] += len(item[SPS])
    return counts


def plan(wl: Worklists, count: int, seed: int) -> list[Modality]:
    """`count` modalities spread over the generated stations (several consoles may share a station)."""
    rng = random.Random(f"{seed}:soak:{wl.n}")
    stations = [(modality, station) for modality, names in STATIONS.items() for station in names]
    day = {"ScheduledProcedureStepStartDate": wl.today_text}
    today = today_steps(wl.items, wl.today_text)
    patients, accessions = _steps_by(wl.items, "PatientID"), _steps_by(wl.items, "AccessionNumber")
    modalities = []
    for index in range(count):
        modality, station = stations[index % len(stations)]
        picks = [rng.choice(wl.items) for _ in range(2 * VARIANTS)]
        station_day = {"Modality": modality, "ScheduledStationAETitle": station, **day}
        modality_day = sum(n for (m, _), n in today.items() if m == modality)
        queries = {
            "today_station": [
                _query("today_station", {}, station_day, today.get((modality, station), 0), exact=False)
            ],
            "today_modality": [
                _query("today_modality", {}, {"Modality": modality, **day}, modality_day, exact=False)
            ],
            "patient_id": [
                _query("patient_id", {"PatientID": p}, {}, patients[p], exact=True)
                for p in (item["PatientID"] for item in picks[:VARIANTS])
            ],
            "accession": [
                _query("accession", {"AccessionNumber": a}, {}, accessions[a], exact=True)
                for a in (item["AccessionNumber"] for item in picks[VARIANTS:])
            ],
        }
        modalities.append(Modality(station, modality, queries))
    return modalities


def today_steps(items: list[dict[str, Any]], today: str) -> dict[tuple[str, str], int]:
    """Scheduled Procedure Steps per (modality, station) today: what each station's query must answer."""
    counts: dict[tuple[str, str], int] = {}
    for item in items:
        for step in item[SPS]:
            if step["ScheduledProcedureStepStartDate"] == today:
                key = (step["Modality"], step["ScheduledStationAETitle"])
                counts[key] = counts.get(key, 0) + 1
    return counts


def _wrong_count(query: ModalityQuery, answers: int, begun: int) -> str:
    if query.exact and answers != query.expected:
        return f"{query.kind}: {answers} answers, expected {query.expected}"
    if not query.exact and not query.expected <= answers <= query.expected + begun:
        return f"{query.kind}: {answers} answers, expected {query.expected} to {query.expected + begun}"
    return ""


def _worker(
    index: int, modality: Modality, port: int, called: str, go: Any, duration: float, begun: Any, out: Any
) -> None:
    """One modality: associations back to back until `duration` has passed (at least one)."""
    rng = random.Random(f"soak-modality:{index}")
    kinds, weights = list(MIX), list(MIX.values())
    go.wait()
    deadline = time.monotonic() + duration
    batch: list[Sample] = []
    while True:
        query = rng.choice(modality.queries[rng.choices(kinds, weights)[0]])
        began = time.monotonic()
        status, answers, error, wrong = -1, 0, "", ""
        try:
            result = dimse.find(
                "127.0.0.1",
                port,
                query.implicit,
                query.explicit,
                calling=modality.calling,
                called=called,
                timeout=FIND_TIMEOUT,
            )
            status, answers = result.status, result.answers
            if status != 0:
                error = f"final status {status:#06x}"
            else:
                wrong = _wrong_count(query, answers, begun.value)
        except (OSError, dimse.DimseError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.01)  # a refused connection must not spin
        batch.append(
            Sample(index, query.kind, began, time.monotonic() - began, answers, status, error, wrong)
        )
        if len(batch) >= SAMPLE_BATCH:
            out.put(("samples", index, batch))
            batch = []
        if time.monotonic() >= deadline:
            break
    out.put(("samples", index, batch))
    out.put(("done", index, []))


class Modalities:
    """The modality processes: forked before the caller starts any thread, started together by `go`."""

    def __init__(
        self, modalities: list[Modality], port: int, duration: float, *, called: str = "ORTHANC"
    ) -> None:
        context = multiprocessing.get_context("fork")
        self.duration = duration
        self.go = context.Event()
        self.begun = context.Value("i", 0)  # items the RIS bridge has begun to create
        self.out: Any = context.Queue()
        self.processes = [
            context.Process(
                target=_worker,
                args=(i, m, port, called, self.go, duration, self.begun, self.out),
                daemon=True,
                name=f"modality-{i}",
            )
            for i, m in enumerate(modalities)
        ]
        for process in self.processes:
            process.start()

    def start(self) -> None:
        self.go.set()

    def count_begun_create(self) -> None:
        with self.begun.get_lock():
            self.begun.value += 1

    def collect(self, grace: float) -> tuple[list[Sample], list[int]]:
        """Every sample, and the modalities that had not finished `grace` s after the soak's end (stopped)."""
        samples: list[Sample] = []
        pending = set(range(len(self.processes)))
        hard_stop = time.monotonic() + grace
        while pending:
            try:
                kind, index, batch = self.out.get(timeout=max(hard_stop - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if kind == "done":
                pending.discard(index)
            else:
                samples.extend(batch)
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join(10)
        return samples, sorted(pending)
