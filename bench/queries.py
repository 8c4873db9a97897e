"""The queries modalities send, as identifiers, with the answer count each server model should give.

Every query carries the return keys a modality asks for. Expected counts are computed from the generated
items in two ways, because servers disagree on items with two Scheduled Procedure Steps:
- per step (PS3.4 K.2.2.1: one answer per matching Scheduled Procedure Step) — what we answer;
- per item (one answer when any step of the item matches) — what DCMTK wlmscpfs (run with -dfr, which it
  needs to serve such items at all) and Orthanc's sample plugin answer, as measured.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial

from pydicom import Dataset
from pynetdicom.dsutils import encode as pynetdicom_encode

from bench.data import CHARACTER_SET, SPS, STATIONS, Tags, Worklists

ItemTest = Callable[[Tags], bool]
StepTest = Callable[[Tags], bool]

TOP_RETURN_KEYS = (
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientWeight",
    "StudyInstanceUID",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "RequestedProcedurePriority",
    "AdmissionID",
)
SPS_RETURN_KEYS = (
    "Modality",
    "ScheduledStationAETitle",
    "ScheduledStationName",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus",
)

SELECTIVE = ("today_station", "patient_id", "week_mr", "name_smi", "accession")
UNIVERSAL = "universal"
NAMES = (*SELECTIVE, UNIVERSAL)
DESCRIPTIONS = {
    "today_station": "today's items for one station and modality",
    "patient_id": "one patient ID",
    "week_mr": "one week of MR",
    "name_smi": "PatientName SMI*",
    "accession": "one accession number",
    "universal": "universal (every item)",
}


@dataclass(frozen=True)
class Expected:
    per_step: int  # PS3.4, ours
    per_item: int  # wlmscpfs and Orthanc


@dataclass
class QueryInstance:
    """One concrete query: its keys (for the report), identifier bytes in both transfer syntaxes."""

    keys: dict[str, str]
    implicit: bytes
    explicit: bytes
    expected: Expected
    dataset: Dataset = field(repr=False)


@dataclass
class Query:
    name: str
    instances: list[QueryInstance]

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.name]


def identifier(top: dict[str, str], step: dict[str, str]) -> Dataset:
    """A modality's MWL identifier: the matching keys given, every other return key empty."""
    ds = Dataset()
    ds.SpecificCharacterSet = CHARACTER_SET
    for keyword in TOP_RETURN_KEYS:
        setattr(ds, keyword, top.get(keyword, ""))
    sps = Dataset()
    for keyword in SPS_RETURN_KEYS:
        setattr(sps, keyword, step.get(keyword, ""))
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def encode(ds: Dataset, *, implicit: bool) -> bytes:
    """The identifier's bytes in implicit or explicit VR little endian (done once, before any timing)."""
    encoded = pynetdicom_encode(ds, implicit, True)
    if encoded is None:
        raise ValueError("the identifier cannot be encoded")
    return bytes(encoded)


def expected(items: list[Tags], item_test: ItemTest, step_test: StepTest) -> Expected:
    per_step = per_item = 0
    for item in items:
        if not item_test(item):
            continue
        hits = [step_test(step) for step in item[SPS]]
        per_step += sum(hits)
        per_item += any(hits)
    return Expected(per_step, per_item)


def _instance(
    wl: Worklists, top: dict[str, str], step: dict[str, str], it: ItemTest, st: StepTest
) -> QueryInstance:
    ds = identifier(top, step)
    return QueryInstance(
        keys={**top, **{f"SPS.{k}": v for k, v in step.items()}},
        implicit=encode(ds, implicit=True),
        explicit=encode(ds, implicit=False),
        expected=expected(wl.items, it, st),
        dataset=ds,
    )


def _any(_: Tags) -> bool:
    return True


def _equals(wanted: dict[str, str], tags: Tags) -> bool:
    return all(tags[key] == value for key, value in wanted.items())


def _mr_between(low: str, high: str, step: Tags) -> bool:
    return bool(step["Modality"] == "MR" and low <= step["ScheduledProcedureStepStartDate"] <= high)


def build(wl: Worklists, seed: int, variants: int = 16) -> list[Query]:
    """Each query kind with `variants` concrete instances (load cycles through them; the gate asks all)."""
    rng = random.Random(f"{seed}:queries:{wl.n}")
    today = wl.today_text
    # Stations with something scheduled today (a modality asks its own list; an idle one is rarer).
    busy = sorted(
        {
            (step["Modality"], step["ScheduledStationAETitle"])
            for item in wl.items
            for step in item[SPS]
            if step["ScheduledProcedureStepStartDate"] == today
        }
    )
    stations = busy or [(m, s) for m, names in STATIONS.items() for s in names]
    queries: dict[str, list[QueryInstance]] = {name: [] for name in NAMES}
    for _ in range(variants):
        modality, station = rng.choice(stations)
        queries["today_station"].append(
            _instance(
                wl,
                {},
                {
                    "Modality": modality,
                    "ScheduledStationAETitle": station,
                    "ScheduledProcedureStepStartDate": today,
                },
                _any,
                partial(
                    _equals,
                    {
                        "Modality": modality,
                        "ScheduledStationAETitle": station,
                        "ScheduledProcedureStepStartDate": today,
                    },
                ),
            )
        )
        patient = rng.choice(wl.items)["PatientID"]
        queries["patient_id"].append(
            _instance(wl, {"PatientID": patient}, {}, partial(_equals, {"PatientID": patient}), _any)
        )
        first = wl.today + timedelta(days=rng.randint(-28, 21))
        low, high = first.strftime("%Y%m%d"), (first + timedelta(days=6)).strftime("%Y%m%d")
        queries["week_mr"].append(
            _instance(
                wl,
                {},
                {"Modality": "MR", "ScheduledProcedureStepStartDate": f"{low}-{high}"},
                _any,
                partial(_mr_between, low, high),
            )
        )
        accession = rng.choice(wl.items)["AccessionNumber"]
        queries["accession"].append(
            _instance(
                wl, {"AccessionNumber": accession}, {}, partial(_equals, {"AccessionNumber": accession}), _any
            )
        )
    # Same for every variant: one instance is enough.
    queries["name_smi"].append(
        _instance(wl, {"PatientName": "SMI*"}, {}, lambda i: i["PatientName"].startswith("SMI"), _any)
    )
    queries["universal"].append(_instance(wl, {}, {}, _any, _any))
    return [Query(name, queries[name]) for name in NAMES]


def day(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
