"""What modalities get from the running SCP over the network: DCMTK findscu -W and a pynetdicom SCU against
items stored through shared.store, on SQLite and PostgreSQL (one loaded store per backend for the module)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom import Dataset

from shared.migrate import upgrade
from tests.support.dicom_clients import (
    FindscuResult,
    c_echo,
    c_find,
    dcmtk,
    findscu,
    needs_dcmtk,
    running_scp,
    worklist,
)
from tests.support.dicom_clients import add_items as store_items
from tests.support.servers import NatsServer

SPS = "ScheduledProcedureStepSequence"

ITEMS: list[dict[str, Any]] = [
    worklist(name="Doe^John", patient_id="P001", accession="ACC001"),
    worklist(
        name="Müller^Jürgen",
        patient_id="P002",
        accession="ACC002",
        steps=[
            {"Modality": "MR", "ScheduledStationAETitle": "MR01", "ScheduledProcedureStepStartTime": "183000"}
        ],
    ),
    worklist(
        name="Smith^Anna",
        patient_id="P003",
        accession="ACC003",
        steps=[
            {
                "ScheduledStationAETitle": "CT02",
                "ScheduledProcedureStepStartDate": "20251015",
                "ScheduledProcedureStepStartTime": "070000",
            }
        ],
    ),
    worklist(
        name="Yamada^Tarou=山田^太郎=やまだ^たろう",
        patient_id="P004",
        accession="ACC004",
        steps=[{"ScheduledProcedureStepStartDate": "20251016", "ScheduledProcedureStepStartTime": "100000"}],
    ),
    worklist(
        name="Иванов^Иван",
        patient_id="P005",
        accession="ACC005",
        steps=[
            {
                "Modality": "US",
                "ScheduledStationAETitle": "US01",
                "ScheduledProcedureStepStartDate": "20251016",
                "ScheduledProcedureStepStartTime": "110000",
            }
        ],
    ),
    worklist(
        name="Dupont^Marie",
        patient_id="P006",
        accession="ACC006",
        steps=[
            {"ScheduledProcedureStepStartDate": "20251017", "ScheduledProcedureStepStartTime": "080000"},
            {
                "Modality": "MR",
                "ScheduledStationAETitle": "MR01",
                "ScheduledProcedureStepStartDate": "20251017",
                "ScheduledProcedureStepStartTime": "090000",
            },
        ],
    ),
    worklist(name="Nosps^Item", patient_id="P007", accession="ACC007", steps=[]),
    worklist(
        name="Multi^Station",
        patient_id="P009",
        accession="ACC009",
        steps=[
            {
                "Modality": "CR",
                "ScheduledStationAETitle": ["US02", "CR02"],
                "ScheduledProcedureStepStartDate": "20251019",
            }
        ],
    ),
    worklist(
        name="Issuer^Ivy",
        patient_id="P008",
        accession="ACC008",
        steps=[
            {
                "ScheduledStationAETitle": "FINDSCU",
                "Modality": "OT",
                "ScheduledProcedureStepStartDate": "20251018",
            }
        ],
    ),
]
ALL_STEPS = ["ACC001", "ACC002", "ACC003", "ACC004", "ACC005", "ACC006", "ACC006", "ACC008", "ACC009"]


@dataclass
class Env:
    database_url: str
    nats_url: str
    port: int


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("scp-queries")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'worklists.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    upgrade(url)
    store_items(url, ITEMS)
    nats = NatsServer(folder / "jetstream")
    nats.start()
    try:
        with running_scp(url, nats.url) as server:
            yield Env(url, nats.url, server.port)
    finally:
        nats.stop()


def accessions(answers: Sequence[Dataset]) -> list[str]:
    return sorted(str(ds.AccessionNumber) for ds in answers)


def sps_key(keyword: str, value: str) -> str:
    return f"{SPS}[0].{keyword}={value}"


def base_keys(*extra: str) -> list[str]:
    """A query as modalities send it: the usual return keys, plus the given matching keys."""
    return [
        "PatientName",
        "PatientID",
        "AccessionNumber",
        f"{SPS}[0].Modality",
        f"{SPS}[0].ScheduledStationAETitle",
        f"{SPS}[0].ScheduledProcedureStepStartDate",
        f"{SPS}[0].ScheduledProcedureStepStartTime",
        *extra,
    ]


def ok(result: FindscuResult) -> list[Dataset]:
    assert result.returncode == 0, result.output
    assert result.final == "Success", result.output
    return result.answers


# ----------------------------------------------------------------------------------------------------------
# The queries users run first


@dcmtk
@needs_dcmtk
@pytest.mark.parametrize("called", ["ANY-SCP", "ORTHANC"])
def test_seed_tutorial_query_returns_each_ct_step(env: Env, called: str) -> None:
    answers = ok(findscu(env.port, [sps_key("Modality", "CT")], aec=called))
    assert len(answers) == 4
    for ds in answers:
        # One answer per Scheduled Procedure Step, carrying that single step (K.2.2.1), and nothing else.
        assert ds.dir() == [SPS]
        assert len(ds.ScheduledProcedureStepSequence) == 1
        assert ds.ScheduledProcedureStepSequence[0].Modality == "CT"
    named = ok(findscu(env.port, [sps_key("Modality", "CT"), "AccessionNumber"], aec=called))
    assert accessions(named) == ["ACC001", "ACC003", "ACC004", "ACC006"]


@dcmtk
@needs_dcmtk
def test_troubleshooting_query_lists_every_step(env: Env) -> None:
    answers = ok(findscu(env.port, ["0008,0050=*"]))
    assert accessions(answers) == ALL_STEPS  # the item without any SPS is never answered
    # Only the requested key comes back.
    assert all(set(ds.dir()) == {"AccessionNumber"} for ds in answers)


@dcmtk
@needs_dcmtk
@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        ("20251014", "", ["ACC001", "ACC002"]),
        ("20251014-20251015", "", ["ACC001", "ACC002", "ACC003"]),
        ("20251016-", "", ["ACC004", "ACC005", "ACC006", "ACC006", "ACC008", "ACC009"]),
        ("-20251014", "", ["ACC001", "ACC002"]),
        # Combined date and time (C.2.2.2.5.4): from the 14th 18:00 to the 15th 08:00.
        ("20251014-20251015", "180000-080000", ["ACC002", "ACC003"]),
        ("20251017", "0830-", ["ACC006"]),
    ],
)
def test_date_ranges(env: Env, date: str, time: str, expected: list[str]) -> None:
    keys = [
        "AccessionNumber",
        sps_key("ScheduledProcedureStepStartDate", date),
        sps_key("ScheduledProcedureStepStartTime", time),
    ]
    assert accessions(ok(findscu(env.port, keys))) == expected


@dcmtk
@needs_dcmtk
def test_station_filtering(env: Env) -> None:
    answers = ok(findscu(env.port, base_keys(sps_key("ScheduledStationAETitle", "CT01"))))
    assert accessions(answers) == ["ACC001", "ACC004", "ACC006"]
    assert {ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle for ds in answers} == {"CT01"}


@dcmtk
@needs_dcmtk
@pytest.mark.parametrize("station", ["US02", "CR02"])
def test_step_scheduled_on_several_stations_is_found_by_each(env: Env, station: str) -> None:
    answers = ok(findscu(env.port, base_keys(sps_key("ScheduledStationAETitle", station))))
    assert accessions(answers) == ["ACC009"]


@dcmtk
@needs_dcmtk
def test_station_and_day_of_a_two_step_item(env: Env) -> None:
    keys = base_keys(
        sps_key("ScheduledStationAETitle", "MR01"), sps_key("ScheduledProcedureStepStartDate", "20251017")
    )
    [answer] = ok(findscu(env.port, keys))
    assert answer.PatientID == "P006"
    assert answer.ScheduledProcedureStepSequence[0].Modality == "MR"


@dcmtk
@needs_dcmtk
def test_missing_requested_key_comes_back_zero_length(env: Env) -> None:
    [answer] = ok(findscu(env.port, ["PatientID=P001", "PatientBirthDate", "AccessionNumber"]))
    assert "PatientBirthDate" in answer
    assert answer.PatientBirthDate in ("", None)


# ----------------------------------------------------------------------------------------------------------
# Character sets


@dcmtk
@needs_dcmtk
def test_latin1_query_matches_and_is_answered_in_latin1(env: Env) -> None:
    keys: list[str | bytes] = ["SpecificCharacterSet=ISO_IR 100", "PatientName=Müller*".encode("latin-1")]
    [answer] = ok(findscu(env.port, [*keys, "PatientID"]))
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert str(answer.PatientName) == "Müller^Jürgen"
    assert answer.PatientID == "P002"


@dcmtk
@needs_dcmtk
@pytest.mark.filterwarnings("ignore:Incorrect value for Specific Character Set")  # pydicom's, while reading
def test_misspelt_latin1_query_is_understood(env: Env) -> None:
    keys: list[str | bytes] = ["SpecificCharacterSet=ISO-IR 100", "PatientName=Müller*".encode("latin-1")]
    [answer] = ok(findscu(env.port, [*keys, "PatientID"]))
    assert answer.PatientID == "P002"


@dcmtk
@needs_dcmtk
def test_utf8_query(env: Env) -> None:
    [answer] = ok(findscu(env.port, ["SpecificCharacterSet=ISO_IR 192", "PatientName=Иванов*", "PatientID"]))
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == "Иванов^Иван"


@dcmtk
@needs_dcmtk
def test_latin1_query_gets_utf8_for_names_latin1_cannot_hold(env: Env) -> None:
    answers = ok(findscu(env.port, ["SpecificCharacterSet=ISO_IR 100", "PatientName", "PatientID"]))
    by_id = {str(ds.PatientID): ds for ds in answers}
    assert by_id["P002"].SpecificCharacterSet == "ISO_IR 100"
    assert by_id["P001"].SpecificCharacterSet == "ISO_IR 100"
    for patient, name in (("P005", "Иванов^Иван"), ("P004", "Yamada^Tarou=山田^太郎=やまだ^たろう")):
        assert by_id[patient].SpecificCharacterSet == "ISO_IR 192"
        assert str(by_id[patient].PatientName) == name  # not a character dropped


@dcmtk
@needs_dcmtk
def test_query_without_character_set(env: Env) -> None:
    answers = ok(findscu(env.port, ["PatientName", "PatientID"]))
    by_id = {str(ds.PatientID): ds for ds in answers}
    assert "SpecificCharacterSet" not in by_id["P001"]  # plain ASCII answer
    assert by_id["P002"].SpecificCharacterSet == "ISO_IR 192"
    assert str(by_id["P002"].PatientName) == "Müller^Jürgen"


@dcmtk
@needs_dcmtk
def test_japanese_answer_in_iso_2022_ir_87(env: Env) -> None:
    [answer] = ok(
        findscu(env.port, ["SpecificCharacterSet=\\ISO 2022 IR 87", "PatientID=P004", "PatientName"])
    )
    assert list(answer.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
    assert answer.PatientName.ideographic == "山田^太郎"
    assert answer.PatientName.phonetic == "やまだ^たろう"


def test_japanese_query_matches_by_ideographic_name(env: Env) -> None:
    query = Dataset()
    query.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    query.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    query.PatientID = ""
    answers = c_find(env.port, query)
    assert [a.status for a in answers] == [0xFF00, 0x0000]
    identifier = answers[0].identifier
    assert identifier is not None
    assert identifier.PatientID == "P004"


# ----------------------------------------------------------------------------------------------------------
# Statuses


def _query(**keys: Any) -> Dataset:
    ds = Dataset()
    ds.PatientID = ""
    ds.AccessionNumber = ""
    step = Dataset()
    step.Modality = ""
    step.ScheduledStationAETitle = ""
    for keyword, value in keys.items():
        setattr(step, keyword, value)
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def test_two_items_in_sps_sequence_is_a900(env: Env) -> None:
    query = _query(Modality="CT")
    second = Dataset()
    second.Modality = "MR"
    query.ScheduledProcedureStepSequence.append(second)
    [answer] = c_find(env.port, query)
    assert answer.status == 0xA900
    assert answer.identifier is None
    assert answer.status_dataset.OffendingElement == 0x00400100
    assert answer.status_dataset.ErrorComment


def test_unmatchable_key_gives_ff01_and_comes_back(env: Env) -> None:
    query = _query(Modality="US")
    query.add_new(0x00091010, "LO", "value")
    answers = c_find(env.port, query)
    assert [a.status for a in answers] == [0xFF01, 0x0000]


def test_c_echo(env: Env) -> None:
    assert c_echo(env.port) == 0x0000


@dcmtk
@needs_dcmtk
def test_limit_answers_is_exact_and_says_the_list_was_cut(env: Env) -> None:
    with running_scp(env.database_url, env.nats_url, Worklists={"LimitAnswers": 3}) as scp:
        answers = c_find(scp.port, _query())
        assert [a.status for a in answers] == [0xFF00] * 3 + [0xA700]
        assert answers[-1].status_dataset.ErrorComment == "LimitAnswers 3 reached: list cut"
        cut = findscu(scp.port, ["AccessionNumber"])
        assert len(cut.answers) == 3
        assert cut.final == "Refused: OutOfResources", cut.output
        # As many matches as the limit: nothing was cut.
        ct = c_find(scp.port, _query(Modality="MR"))
        assert [a.status for a in ct] == [0xFF00, 0xFF00, 0x0000]


@dcmtk
@needs_dcmtk
def test_filter_issuer_aet(env: Env) -> None:
    with running_scp(env.database_url, env.nats_url, Worklists={"FilterIssuerAet": True}) as scp:
        # No station in the query: only the calling AE title's steps.
        assert accessions(ok(findscu(scp.port, ["AccessionNumber"], aet="FINDSCU"))) == ["ACC008"]
        assert accessions(ok(findscu(scp.port, base_keys(), aet="FINDSCU"))) == ["ACC008"]
        star = base_keys(sps_key("ScheduledStationAETitle", "*"))
        assert accessions(ok(findscu(scp.port, star, aet="FINDSCU"))) == ["ACC008"]
        # A station the modality did send is respected (Orthanc overwrites it).
        mr = base_keys(sps_key("ScheduledStationAETitle", "MR01"))
        assert accessions(ok(findscu(scp.port, mr, aet="FINDSCU"))) == ["ACC002", "ACC006"]


@dcmtk
@needs_dcmtk
def test_refused_ae_title(env: Env) -> None:
    options = {"DicomAlwaysAllowFindWorklist": False, "DicomModalities": {"ct": ["CT01", "127.0.0.1", 104]}}
    with running_scp(env.database_url, env.nats_url, **options) as scp:
        refused = findscu(scp.port, ["AccessionNumber"], aet="STRANGER")
        assert refused.answers == []
        assert refused.final != "Success", refused.output
        [answer] = c_find(scp.port, _query(), aet="STRANGER")
        assert answer.status == 0xC003
        assert "not allowed" in answer.status_dataset.ErrorComment
        assert c_echo(scp.port, aet="STRANGER") == 0x0000  # verification stays open, as in Orthanc
        allowed = ok(findscu(scp.port, [sps_key("Modality", "CT"), "AccessionNumber"], aet="CT01"))
        assert accessions(allowed) == ["ACC001", "ACC003", "ACC004", "ACC006"]


@dcmtk
@needs_dcmtk
def test_called_ae_title_checked(env: Env) -> None:
    with running_scp(env.database_url, env.nats_url, DicomCheckCalledAet=True) as scp:
        assert findscu(scp.port, ["AccessionNumber"], aec="SOMEONE").rejected
        assert len(ok(findscu(scp.port, ["AccessionNumber"], aec="ORTHANC"))) == len(ALL_STEPS)


@dcmtk
@needs_dcmtk
def test_modality_host_checked(env: Env) -> None:
    options = {"DicomCheckModalityHost": True, "DicomModalities": {"ct": ["CT01", "192.0.2.10", 104]}}
    with running_scp(env.database_url, env.nats_url, **options) as scp:
        assert findscu(scp.port, ["AccessionNumber"], aet="CT01").rejected
        assert len(ok(findscu(scp.port, ["AccessionNumber"], aet="US01"))) == len(ALL_STEPS)


def test_answers_are_one_per_step(env: Env) -> None:
    answers = c_find(env.port, _query())
    assert answers[-1].status == 0x0000
    identifiers = [a.identifier for a in answers[:-1] if a.identifier is not None]
    assert Counter(str(ds.AccessionNumber) for ds in identifiers) == Counter(ALL_STEPS)
