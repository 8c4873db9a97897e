"""The indexed keys of a worklist item: item-level columns and one row per Scheduled Procedure Step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.match_values import fold_pn, person_name_str, sps_start_key

# DICOM JSON tags (PS3.18 F.2 keys) of the keys the store indexes.
PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"
ACCESSION_NUMBER = "00080050"
STUDY_INSTANCE_UID = "0020000D"
REQUESTED_PROCEDURE_ID = "00401001"
SPS_SEQUENCE = "00400100"
STATION_AET = "00400001"
SPS_START_DATE = "00400002"
SPS_START_TIME = "00400003"
MODALITY = "00080060"
PERFORMING_PHYSICIAN = "00400006"
SPS_ID = "00400009"
STATION_NAME = "00400010"
SPS_STATUS = "00400020"


def text_value(element: dict[str, Any] | None) -> str:
    """The first value of a DICOM JSON element as text ("" when absent or zero-length)."""
    if not element:
        return ""
    values = element.get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, dict):
        return person_name_str(first)
    return str(first) if first is not None else ""


def station_value(element: dict[str, Any] | None) -> str:
    """ScheduledStationAETitle may hold several AE titles: they are kept joined with a backslash, so that
    the lookup can tell a multi-valued station (always a candidate) from a single one (indexed equality)."""
    values = (element or {}).get("Value") or []
    return "\\".join(str(v) for v in values if v is not None)


@dataclass(frozen=True)
class ItemKeys:
    patient_id: str
    patient_name: str
    accession_number: str
    study_instance_uid: str
    requested_procedure_id: str


def item_keys(dataset: dict[str, Any]) -> ItemKeys:
    return ItemKeys(
        patient_id=text_value(dataset.get(PATIENT_ID)),
        patient_name=text_value(dataset.get(PATIENT_NAME)),
        accession_number=text_value(dataset.get(ACCESSION_NUMBER)),
        study_instance_uid=text_value(dataset.get(STUDY_INSTANCE_UID)),
        requested_procedure_id=text_value(dataset.get(REQUESTED_PROCEDURE_ID)),
    )


def step_rows(dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """Column values of one scheduled_steps row per SPS item (no rows when the item has no SPS)."""
    keys = item_keys(dataset)
    sequence = (dataset.get(SPS_SEQUENCE) or {}).get("Value") or []
    rows = []
    for position, sps in enumerate(sequence):
        date = text_value(sps.get(SPS_START_DATE))
        time = text_value(sps.get(SPS_START_TIME))
        rows.append(
            {
                "position": position,
                "station_aet": station_value(sps.get(STATION_AET)),
                "station_name": text_value(sps.get(STATION_NAME)),
                "modality": text_value(sps.get(MODALITY)),
                "start_date": date,
                "start_time": time,
                "start_datetime": sps_start_key(date, time),
                "sps_id": text_value(sps.get(SPS_ID)),
                "status": text_value(sps.get(SPS_STATUS)),
                "performing_physician": text_value(sps.get(PERFORMING_PHYSICIAN)),
                "patient_id": keys.patient_id,
                "patient_name": keys.patient_name,
                "patient_name_key": fold_pn(keys.patient_name),
                "accession_number": keys.accession_number,
                "study_instance_uid": keys.study_instance_uid,
                "requested_procedure_id": keys.requested_procedure_id,
            }
        )
    return rows


def summary(dataset: dict[str, Any]) -> dict[str, str]:
    """The few non-identifying keys an event carries: modality, station, scheduled start, accession number."""
    sequence = (dataset.get(SPS_SEQUENCE) or {}).get("Value") or []
    first = sequence[0] if sequence else {}
    return {
        "Modality": text_value(first.get(MODALITY)),
        "ScheduledStationAETitle": text_value(first.get(STATION_AET)),
        "ScheduledProcedureStepStartDate": text_value(first.get(SPS_START_DATE)),
        "ScheduledProcedureStepStartTime": text_value(first.get(SPS_START_TIME)),
        "AccessionNumber": text_value(dataset.get(ACCESSION_NUMBER)),
    }
