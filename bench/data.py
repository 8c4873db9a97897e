"""Realistic generated worklists, cached by (N, seed, day): the same items for every server in a run.

An item is kept in Orthanc's "Tags" shape (keyword -> text, sequences as lists of such objects): the REST
API takes it as it is, and it converts to DICOM JSON (our bulk loader) and to `.wl` files (the peers).
Scheduled starts are spread around *today*, so the cache key carries the day as well.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Tags = dict[str, Any]

CHARACTER_SET = "ISO_IR 100"  # Latin-1, what most European RIS send
SPS = "ScheduledProcedureStepSequence"
# Five modalities, two stations each: ~10 station AE titles as in a mid-sized radiology department.
STATIONS: dict[str, tuple[str, ...]] = {
    "CT": ("CT01", "CT02"),
    "MR": ("MR01", "MR02"),
    "US": ("US01", "US02"),
    "CR": ("CR01", "CR02"),
    "MG": ("MG01", "MG02"),
}
MODALITIES = tuple(STATIONS)
DAYS_BEFORE, DAYS_AFTER = 30, 29  # ~60 days of schedule around today
TWO_STEP_SHARE = 0.25

# Family names: Latin-1 accents, and about 2 % starting with SMI (what `SMI*` finds).
FAMILIES = (
    "SMITH",
    "SMIRNOV",
    "MÜLLER",
    "GARCÍA",
    "MARTÍNEZ",
    "LEFÈVRE",
    "DUBOIS",
    "NGUYEN",
    "JOHANSSON",
    "BJÖRK",
    "NUÑEZ",
    "GONÇALVES",
    "O'BRIEN",
    "ÅBERG",
    "SØRENSEN",
    "SCHRÖDER",
    "FRANÇOIS",
    "DUPONT",
    "ROSSI",
    "BIANCHI",
    "KOWALSKI",
    "NOVÁK",
    "HORVÁTH",
    "JENSEN",
    "HANSEN",
    "LARSEN",
    "PETERSEN",
    "BECKER",
    "WAGNER",
    "SCHULZ",
    "KÖNIG",
    "WEIß",
    "FUCHS",
    "JÄGER",
    "HÜBNER",
    "VOß",
    "CÔTÉ",
    "GAGNON",
    "ROY",
    "BÉLANGER",
    "LÓPEZ",
    "SÁNCHEZ",
    "PÉREZ",
    "GÓMEZ",
    "FERNÁNDEZ",
    "RODRÍGUEZ",
    "GONZÁLEZ",
    "DÍAZ",
    "MORENO",
    "MUÑOZ",
    "ÁLVAREZ",
    "ROMERO",
    "ALONSO",
    "GUTIÉRREZ",
    "NAVARRO",
    "TORRES",
    "DOMÍNGUEZ",
    "VÁZQUEZ",
    "RAMOS",
    "GIL",
    "RAMÍREZ",
    "SERRANO",
    "BLANCO",
    "MOLINA",
    "MORALES",
    "SUÁREZ",
    "ORTEGA",
    "DELGADO",
    "CASTRO",
    "ORTÍZ",
    "RUBIO",
    "MARÍN",
    "SANZ",
    "IGLESIAS",
    "NÚÑEZ",
    "MEDINA",
    "GARRIDO",
    "CORTÉS",
    "CASTILLO",
    "SANTOS",
    "LOZANO",
    "GUERRERO",
    "CANO",
    "PRIETO",
    "MÉNDEZ",
    "CRUZ",
    "CALVO",
    "GALLEGO",
    "VIDAL",
    "LEÓN",
    "MÁRQUEZ",
    "HERRERA",
    "PEÑA",
    "FLORES",
    "CABRERA",
    "CAMPOS",
    "VEGA",
    "FUENTES",
    "CARRASCO",
    "DIEZ",
)
GIVENS = (
    "José",
    "Zoë",
    "François",
    "Jürgen",
    "Inês",
    "Søren",
    "Åsa",
    "Noël",
    "Anaïs",
    "Björn",
    "Renée",
    "Joël",
    "Ana",
    "John",
    "Mary",
    "Li",
    "Wei",
    "Hélène",
    "Mónica",
    "Ángel",
    "Jörg",
    "Dörte",
    "Maëlle",
    "Ólafur",
)
PHYSICIANS = ("HOUSE^Gregory", "GREY^Meredith", "STRANGE^Stephen", "QUINN^Michaela", "RIVIÈRE^Cécile")
PROCEDURES: dict[str, tuple[str, ...]] = {
    "CT": ("CT head without contrast", "CT chest abdomen pelvis", "CT angiography"),
    "MR": ("MR brain", "MR knee left", "MR lumbar spine"),
    "US": ("US abdomen", "US thyroid", "US carotid doppler"),
    "CR": ("Chest PA and lateral", "Hand two views", "Pelvis AP"),
    "MG": ("Screening mammography", "Diagnostic mammography"),
}


@dataclass(frozen=True)
class Worklists:
    """N generated items (Tags shape) and the day their schedule is centred on."""

    n: int
    seed: int
    today: date
    items: list[Tags]

    @property
    def today_text(self) -> str:
        return self.today.strftime("%Y%m%d")


def generate(n: int, seed: int, today: date) -> list[Tags]:
    """N worklist items; patients have one or more items, items one or two Scheduled Procedure Steps."""
    rng = random.Random(f"{seed}:{n}")
    patients = max(1, int(n * 0.7))  # some patients are scheduled more than once
    items = []
    for index in range(n):
        patient = rng.randrange(patients)
        prng = random.Random(f"{seed}:patient:{patient}")  # a patient keeps name, birth date and sex
        day = today + timedelta(days=rng.randint(-DAYS_BEFORE, DAYS_AFTER))
        modality = rng.choice(MODALITIES)
        steps = [_step(rng, modality, day, 1, index)]
        if rng.random() < TWO_STEP_SHARE:
            steps.append(_step(rng, rng.choice(MODALITIES), day, 2, index))
        items.append(
            {
                "SpecificCharacterSet": CHARACTER_SET,
                "AccessionNumber": f"A{seed % 1000:03d}{index:08d}",
                "ReferringPhysicianName": rng.choice(PHYSICIANS),
                "PatientName": f"{prng.choice(FAMILIES)}^{prng.choice(GIVENS)}",
                "PatientID": f"P{patient:08d}",
                "IssuerOfPatientID": "HOSP",
                "PatientBirthDate": _birth_date(prng),
                "PatientSex": prng.choice("MF"),
                "PatientWeight": str(prng.randint(40, 120)),
                "StudyInstanceUID": f"1.2.826.0.1.3680043.10.543.{seed}.{index + 1}",
                "RequestedProcedureDescription": rng.choice(PROCEDURES[modality]),
                "RequestedProcedureID": f"RP{index:08d}",
                "RequestedProcedurePriority": rng.choice(("ROUTINE", "ROUTINE", "ROUTINE", "HIGH", "STAT")),
                "AdmissionID": f"ADM{rng.randrange(10**7):07d}",
                SPS: steps,
            }
        )
    return items


def _birth_date(rng: random.Random) -> str:
    return f"{rng.randint(1930, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"


def _step(rng: random.Random, modality: str, day: date, number: int, index: int) -> Tags:
    minutes = rng.randrange(7 * 60, 19 * 60, 15)
    return {
        "Modality": modality,
        "ScheduledStationAETitle": rng.choice(STATIONS[modality]),
        "ScheduledStationName": f"{modality} room",
        "ScheduledProcedureStepStartDate": day.strftime("%Y%m%d"),
        "ScheduledProcedureStepStartTime": f"{minutes // 60:02d}{minutes % 60:02d}00",
        "ScheduledPerformingPhysicianName": rng.choice(PHYSICIANS),
        "ScheduledProcedureStepDescription": rng.choice(PROCEDURES[modality]),
        "ScheduledProcedureStepID": f"SPS{index:08d}.{number}",
        "ScheduledProcedureStepStatus": "SCHEDULED",
    }


def load(n: int, seed: int, cache_dir: Path, today: date | None = None) -> Worklists:
    """The generated set for (N, seed, today), from the cache when it was generated before."""
    today = today or date.today()
    path = cache_dir / f"items-{n}-{seed}-{today:%Y%m%d}.json"
    if path.exists():
        items = json.loads(path.read_text(encoding="utf-8"))
    else:
        items = generate(n, seed, today)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
        temp.replace(path)
        logger.info("generated %d items into %s", n, path)
    return Worklists(n, seed, today, items)
