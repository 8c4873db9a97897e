"""C-FIND matching against stored worklist items: one answer per SPS, return keys, each C.2.2.2 rule."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from shared.matching import InvalidIdentifier, MatchOptions, compile_query, match_item

# Queries deliberately carry values pydicom warns about (ranges, wildcards, malformed dates).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SPS = "ScheduledProcedureStepSequence"
SPS_KEY = "00400100"
DEFAULT = MatchOptions()


def dataset(**keys: Any) -> Dataset:
    """A pydicom Dataset from keywords; a list of dicts is a sequence.

    A value pydicom refuses to hold (DS "*") is stored raw, as it would arrive from the network.
    """
    ds = Dataset()
    for keyword, value in keys.items():
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            setattr(ds, keyword, Sequence([dataset(**v) for v in value]))
            continue
        try:
            setattr(ds, keyword, value)
        except ValueError:
            tag = Tag(keyword)
            data = value.encode() + b" " * (len(value) % 2)
            ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(data), data, 0, False, True)
    return ds


def wire(query: Dataset) -> Dataset:
    """The query as the SCP gets it: encoded (explicit VR, UTF-8), received and decoded by pydicom."""
    query = Dataset(query)
    added = "SpecificCharacterSet" not in query
    if added:
        query.SpecificCharacterSet = "ISO_IR 192"
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, query)
    received = read_dataset(BytesIO(buffer.getvalue()), False, True)
    received.decode()
    if added:
        del received.SpecificCharacterSet
    return received


def stored(**keys: Any) -> dict[str, Any]:
    """A stored worklist item as the store holds it: DICOM JSON (PS3.18 F.2)."""
    return dataset(**keys).to_json_dict()


def step(**keys: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Modality": "CT",
        "ScheduledStationAETitle": "CT1",
        "ScheduledProcedureStepStartDate": "20251014",
        "ScheduledProcedureStepStartTime": "093000",
        "ScheduledProcedureStepID": "S1",
    }
    base.update(keys)
    return {k: v for k, v in base.items() if v is not None}


def item(steps: Any = None, **keys: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "PatientName": "Doe^John",
        "PatientID": "P1",
        "AccessionNumber": "A1",
        "StudyInstanceUID": "1.2.3",
        SPS: [step()] if steps is None else steps,
    }
    base.update(keys)
    return stored(**{k: v for k, v in base.items() if v is not None})


def find(
    query: Dataset, stored_item: dict[str, Any], options: MatchOptions = DEFAULT
) -> list[dict[str, Any]]:
    return match_item(compile_query(wire(query), options), stored_item)


def matches(query: Dataset, stored_item: dict[str, Any], options: MatchOptions = DEFAULT) -> bool:
    return bool(find(query, stored_item, options))


def q(sps: Any = None, **keys: Any) -> Dataset:
    """A query; `sps` gives the keys of its single SPS item."""
    if sps is not None:
        keys[SPS] = [sps]
    return dataset(**keys)


def value(element: dict[str, Any]) -> Any:
    return element.get("Value")


# --- One answer per Scheduled Procedure Step (K.2.2.1) ----------------------------------------------------


def test_each_matching_step_is_one_answer_holding_only_that_step() -> None:
    stored_item = item([step(Modality="CT", ScheduledProcedureStepID="S1"), step(Modality="MR")])
    answers = find(q(sps={"Modality": "", "ScheduledProcedureStepID": ""}), stored_item)
    assert [value(a[SPS_KEY])[0]["00080060"]["Value"] for a in answers] == [["CT"], ["MR"]]
    assert all(len(value(a[SPS_KEY])) == 1 for a in answers)


def test_only_the_steps_that_match_are_answered() -> None:
    stored_item = item([step(Modality="MR"), step(Modality="CT", ScheduledProcedureStepID="S2")])
    answers = find(q(sps={"Modality": "CT", "ScheduledProcedureStepID": ""}), stored_item)
    assert len(answers) == 1
    assert value(answers[0][SPS_KEY])[0]["00400009"]["Value"] == ["S2"]


def test_item_without_any_step_is_never_answered() -> None:
    universal = q(PatientName="")
    assert find(universal, item(steps=None, **{SPS: None})) == []
    assert find(universal, item(steps=[])) == []
    assert find(q(sps={"Modality": "CT"}), item(steps=[])) == []


def test_query_without_sps_key_still_answers_per_step_without_the_sequence() -> None:
    answers = find(q(PatientID=""), item([step(), step(Modality="MR")]))
    assert answers == [{"00100020": {"vr": "LO", "Value": ["P1"]}}] * 2


def test_top_level_mismatch_answers_no_step() -> None:
    assert find(q(PatientID="P2", sps={"Modality": "CT"}), item()) == []


# --- Return keys ------------------------------------------------------------------------------------------


def test_answer_holds_exactly_the_requested_keys_missing_ones_zero_length() -> None:
    stored_item = item(PatientSex="F", PatientBirthDate="19700101")
    answer = find(
        q(
            PatientName="",
            PatientBirthDate="",
            AdmissionID="",
            sps={"Modality": "", "ScheduledStationName": ""},
        ),
        stored_item,
    )[0]
    assert answer == {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
        "00100030": {"vr": "DA", "Value": ["19700101"]},
        "00380010": {"vr": "LO"},
        SPS_KEY: {
            "vr": "SQ",
            "Value": [{"00080060": {"vr": "CS", "Value": ["CT"]}, "00400010": {"vr": "SH"}}],
        },
    }
    assert list(answer) == sorted(answer)


def test_sps_zero_length_or_one_empty_item_returns_the_whole_step() -> None:
    stored_item = item([step(ScheduledStationName="ROOM1")])
    whole = stored_item[SPS_KEY]["Value"][0]
    zero_length = dataset(**{SPS: []})
    for query in (zero_length, q(sps={})):
        assert find(query, stored_item) == [{SPS_KEY: {"vr": "SQ", "Value": [whole]}}]


def test_specific_character_set_and_query_retrieve_level_are_neither_matched_nor_returned() -> None:
    query = q(PatientID="P1", SpecificCharacterSet="ISO_IR 100", QueryRetrieveLevel="PATIENT")
    assert find(query, item(SpecificCharacterSet="ISO_IR 192")) == [
        {"00100020": {"vr": "LO", "Value": ["P1"]}}
    ]


def test_group_length_elements_are_ignored_at_every_level() -> None:
    query = q(PatientID="P1", sps={"Modality": "CT"})
    query.add_new(0x00100000, "UL", 99)
    query[SPS].value[0].add_new(0x00400000, "UL", 99)
    answer = match_item(compile_query(query, DEFAULT), item())[0]
    assert set(answer) == {"00100020", SPS_KEY}
    assert set(value(answer[SPS_KEY])[0]) == {"00080060"}


def test_answers_do_not_alias_the_stored_lists() -> None:
    stored_item = item()
    answer = find(q(PatientID=""), stored_item)[0]
    answer["00100020"]["Value"].append("X")
    assert stored_item["00100020"]["Value"] == ["P1"]


# --- Single value matching (C.2.2.2.1) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "query_value", "stored_value", "expected"),
    [
        ("PatientID", "P1", "P1", True),
        ("PatientID", "p1", "P1", False),
        ("PatientID", "P1 ", "P1", True),  # trailing padding is insignificant
        ("AccessionNumber", "A1", "A10", False),
        ("PatientSex", "F", "F", True),
        ("PatientSex", "F", "M", False),
        ("PatientName", "Doe^John", "Doe^John", True),
        ("PatientName", "doe^john", "Doe^John", False),
        ("PatientName", "Doe^John^^", "Doe^John", True),  # trailing empty components may be omitted
        ("PatientName", "Doe", "Doe^John", False),
        ("PatientName", "Yamada^Tarou", "Yamada^Tarou=山田^太郎", True),
        ("PatientName", "=山田^太郎", "Yamada^Tarou=山田^太郎", True),
        ("PatientName", "Yamada^Tarou=田中^太郎", "Yamada^Tarou=山田^太郎", False),
        ("PatientWeight", "70.0", "70", True),
        ("PatientWeight", "70.5", "70", False),
        ("PatientAge", "040Y", "040Y", True),
    ],
)
def test_single_value_matching(key: str, query_value: str, stored_value: str, expected: bool) -> None:
    assert matches(q(**{key: query_value}), item(**{key: stored_value})) is expected


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 100", "Müller^Jürgen"),
        ("ISO_IR 144", "Иванов^Иван"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎"),
        ("ISO_IR 192", "=山田^太郎"),
    ],
)
def test_decoded_queries_match_unicode_items_whatever_their_character_set(charset: Any, name: str) -> None:
    stored_item = item(PatientName=name)
    assert matches(q(PatientName=name, SpecificCharacterSet=charset), stored_item)
    assert matches(q(PatientName=name[:3] + "*", SpecificCharacterSet=charset), stored_item)
    assert not matches(q(PatientName=name[:3] + "?", SpecificCharacterSet=charset), stored_item)


def test_pn_case_and_accent_insensitive_when_case_sensitive_pn_is_false() -> None:
    folding = MatchOptions(case_sensitive_pn=False)
    stored_item = item(PatientName="Müller^Renée")
    assert not matches(q(PatientName="MULLER^RENEE"), stored_item)
    assert matches(q(PatientName="MULLER^RENEE"), stored_item, folding)
    assert matches(q(PatientName="mül*"), stored_item, folding)
    assert matches(q(PatientName="MULLER^REN?E"), stored_item, folding)
    assert not matches(q(PatientName="Muller^Rene"), stored_item, folding)
    assert not matches(q(PatientID="p1"), item(), folding)  # only PN is folded


def test_stored_zero_length_value_matches_only_universal_keys() -> None:
    stored_item = item(PatientSex="")
    assert not matches(q(PatientSex="F"), stored_item)
    assert not matches(q(PatientSex="*F*"), stored_item)
    assert not matches(q(PatientSex="?"), stored_item)
    assert matches(q(PatientSex=""), stored_item)
    assert matches(q(PatientSex="*"), stored_item)
    assert not matches(q(AdmissionID="X"), stored_item)  # absent altogether


def test_a_stored_multi_valued_element_matches_when_any_value_does() -> None:
    stored_item = item([step(ScheduledStationAETitle=["CT1", "CT2"])])
    assert matches(q(sps={"ScheduledStationAETitle": "CT2"}), stored_item)
    assert not matches(q(sps={"ScheduledStationAETitle": "CT3"}), stored_item)


def test_a_multi_valued_key_matches_any_of_its_values() -> None:
    query = q(sps={"Modality": ["MR", "CT"]})
    assert matches(query, item([step(Modality="CT")]))
    assert not matches(query, item([step(Modality="US")]))


# --- List of UID matching (C.2.2.2.2) -----------------------------------------------------------------------


def test_list_of_uids_matches_any_of_them() -> None:
    query = q(StudyInstanceUID=["1.2.4", "1.2.3"])
    assert matches(query, item(StudyInstanceUID="1.2.3"))
    assert matches(query, item(StudyInstanceUID="1.2.4"))
    assert not matches(query, item(StudyInstanceUID="1.2.34"))
    assert compile_query(query, DEFAULT).study_instance_uids == ("1.2.3", "1.2.4")


def test_a_malformed_uid_is_an_invalid_identifier() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        compile_query(q(StudyInstanceUID="1.2.*3"), DEFAULT)
    assert caught.value.offending == [0x0020000D]


# --- Universal matching (C.2.2.2.3) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "universal"),
    [
        ("PatientBirthDate", "*"),
        ("StudyInstanceUID", "*"),
        ("PatientName", "*"),
        ("PatientName", "**"),
        ("PatientName", "*=*"),
        ("PatientWeight", "*"),
        ("PatientSex", ""),
        ("AdmissionID", "*"),
    ],
)
def test_universal_values_match_every_item_and_return_the_stored_value(key: str, universal: str) -> None:
    stored_item = item(PatientBirthDate="19700101", PatientWeight="70", PatientSex=None)
    answers = find(q(**{key: universal}), stored_item)
    assert len(answers) == 1
    tag = next(iter(answers[0]))
    assert answers[0][tag] == stored_item.get(tag, answers[0][tag])
    assert compile_query(q(**{key: universal}), DEFAULT).unsupported == frozenset()


def test_universal_sps_keys_match_every_step() -> None:
    query = q(
        sps={"ScheduledProcedureStepStartDate": "*", "ScheduledProcedureStepStartTime": "*", "Modality": "*"}
    )
    assert len(find(query, item([step(), step(ScheduledProcedureStepStartDate="")]))) == 2


# --- Wild card matching (C.2.2.2.4) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "pattern", "stored_value", "expected"),
    [
        ("PatientName", "Doe*", "Doe^John", True),
        ("PatientName", "*John", "Doe^John", True),
        ("PatientName", "D?e^J*n", "Doe^John", True),
        ("PatientName", "doe*", "Doe^John", False),
        ("PatientName", "Doe^Joh?", "Doe^John", True),
        ("PatientName", "Doe^John?", "Doe^John", False),  # ? is exactly one character
        ("PatientName", "*山田*", "Yamada^Tarou=山田^太郎", False),  # the alphabetic group has no 山田
        ("PatientName", "=山田*", "Yamada^Tarou=山田^太郎", True),
        ("AccessionNumber", "A?C", "ABC", True),
        ("AccessionNumber", "A_C", "ABC", False),  # SQL wildcards are literals
        ("AccessionNumber", "A%", "ABC", False),
        ("AccessionNumber", "A*", "A", True),  # * may be empty
        ("PatientID", "*1", "P1", True),
        ("PatientSex", "?", "F", True),
        ("PatientComments", "*loves*", "He loves\ndogs", True),
    ],
)
def test_wildcard_matching(key: str, pattern: str, stored_value: str, expected: bool) -> None:
    assert matches(q(**{key: pattern}), item(**{key: stored_value})) is expected


def test_wildcards_apply_to_cs_and_ae_inside_the_step() -> None:
    stored_item = item([step(Modality="CT", ScheduledStationAETitle="CT_ROOM1")])
    assert matches(q(sps={"Modality": "C?"}), stored_item)
    assert matches(q(sps={"ScheduledStationAETitle": "CT*1"}), stored_item)
    assert not matches(q(sps={"ScheduledStationAETitle": "MR*"}), stored_item)


def test_question_mark_is_literal_for_vrs_without_wildcards() -> None:
    with pytest.raises(InvalidIdentifier):  # a DA with '?' is malformed, not a pattern
        compile_query(q(PatientBirthDate="1970010?"), DEFAULT)


# --- Range matching (C.2.2.2.5) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query_value", "stored_value", "expected"),
    [
        ("19700101-19701231", "19700101", True),
        ("19700101-19701231", "19701231", True),
        ("19700101-19701231", "19710101", False),
        ("-19700101", "19691231", True),
        ("-19700101", "19700102", False),
        ("19700101-", "20991231", True),
        ("19700101-", "19691231", False),
        ("19701231-19700101", "19700601", False),  # reversed: nothing
        ("19700101", "19700101", True),
        ("1970.01.01", "19700101", True),  # ACR-NEMA form tolerated
        ("19700101-19701231", "1970.06.01", True),
        ("19700101-19701231", "garbage", False),
    ],
)
def test_date_range_matching(query_value: str, stored_value: str, expected: bool) -> None:
    assert matches(q(PatientBirthDate=query_value), item(PatientBirthDate=stored_value)) is expected


@pytest.mark.parametrize(
    ("query_value", "stored_value", "expected"),
    [
        ("0800-1000", "0800", True),
        ("0800-1000", "093000.123", True),
        ("0800-10", "1059", True),  # "10" as an upper bound ends at 10:59:59.999999
        ("0800-1000", "100059.9", True),
        ("0800-1000", "1001", False),
        ("080000-100000", "100001", False),
        ("-0800", "000000", True),
        ("-0800", "080059", True),
        ("-0800", "0801", False),
        ("22-", "235959", True),
        ("1800-0800", "2000", False),  # no midnight crossing for a TM alone
        ("0930", "093000", True),
        ("0930", "093015", True),  # a single value spans its precision
        ("0930", "0931", False),
        ("093000", "093000.000", True),
        ("10:00-11:00", "1030", True),  # ACR-NEMA form tolerated
    ],
)
def test_time_range_matching(query_value: str, stored_value: str, expected: bool) -> None:
    assert matches(q(PatientBirthTime=query_value), item(PatientBirthTime=stored_value)) is expected


@pytest.mark.parametrize(
    ("query_value", "stored_value", "expected"),
    [
        ("20251014100000+0200-20251014120000+0200", "20251014090000+0100", True),  # 08:00Z in 08:00Z-10:00Z
        ("20251014100000+0200-20251014120000+0200", "20251014100000+0000", True),
        ("20251014100000+0200-20251014120000+0200", "20251014110000+0000", False),
        ("20251014100000-0500", "20251014150000", True),  # single value with a negative offset, not a range
        ("20251014100000-0500", "20251014100000", False),
        ("20251014-20251015", "20251015235959.999", True),
        ("-2024", "20241231235959", True),
        ("2025-", "2024", False),
        ("20251014-0500-", "20251014050000", True),  # open range from a value with a negative offset
        ("20251014-0500-", "20251014045959", False),
    ],
)
def test_datetime_range_matching_honours_utc_offsets(
    query_value: str, stored_value: str, expected: bool
) -> None:
    key = "AcquisitionDateTime"
    assert matches(q(**{key: query_value}), item(**{key: stored_value})) is expected


def test_naive_datetimes_are_read_in_the_query_timezone_offset() -> None:
    query = q(AcquisitionDateTime="20251014100000-20251014110000", TimezoneOffsetFromUTC="+0200")
    assert matches(query, item(AcquisitionDateTime="20251014083000+0000"))  # 10:30 at +0200
    assert not matches(query, item(AcquisitionDateTime="20251014103000+0000"))
    assert matches(query, item(AcquisitionDateTime="20251014103000"))  # naive on both sides: same zone


@pytest.mark.parametrize(
    ("keyword", "tag", "bad"),
    [
        ("PatientBirthDate", 0x00100030, "2025-13-01"),
        ("PatientBirthDate", 0x00100030, "20251301"),
        ("PatientBirthDate", 0x00100030, "20250230"),
        ("PatientBirthDate", 0x00100030, "abc"),
        ("PatientBirthDate", 0x00100030, "2025"),
        ("PatientBirthDate", 0x00100030, "20250101-20250102-20250103"),
        ("PatientBirthTime", 0x00100032, "25"),
        ("PatientBirthTime", 0x00100032, "1260"),
        ("PatientBirthTime", 0x00100032, "0800-2500"),
        ("PatientBirthTime", 0x00100032, "８時"),
        ("AcquisitionDateTime", 0x0008002A, "2025x"),
        ("AcquisitionDateTime", 0x0008002A, "20251014+2500"),
        ("PatientWeight", 0x00101030, "heavy"),
        ("TimezoneOffsetFromUTC", 0x00080201, "0200"),
    ],
)
def test_malformed_values_are_invalid_identifiers(keyword: str, tag: int, bad: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        compile_query(q(**{keyword: bad}), DEFAULT)
    assert caught.value.offending == [tag]
    assert 0 < len(caught.value.comment) <= 64
    assert bad not in caught.value.comment  # the comment never echoes (possibly patient) data
    assert f"({tag >> 16:04X},{tag & 0xFFFF:04X})" in caught.value.comment


def test_a_malformed_value_inside_the_step_names_that_element() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        compile_query(q(sps={"ScheduledProcedureStepStartDate": "2025-13-01"}), DEFAULT)
    assert caught.value.offending == [0x00400002]


# --- Combined SPS start date and time (C.2.2.2.5.4, CP-601) ----------------------------------------------


def starts(*pairs: tuple[str, str]) -> dict[str, Any]:
    return item(
        [step(ScheduledProcedureStepStartDate=d, ScheduledProcedureStepStartTime=t) for d, t in pairs]
    )


def answered_starts(query: Dataset, options: MatchOptions = DEFAULT) -> list[tuple[str, str]]:
    candidates = starts(
        ("20251014", "0700"),
        ("20251014", "175959"),
        ("20251014", "1800"),
        ("20251014", "2359"),
        ("20251015", "0000"),
        ("20251015", "0800"),
        ("20251015", "080100"),
        ("20251015", "1200"),
        ("20251016", "1200"),
        ("20251016", "1230"),
        ("20251020", "0100"),
        ("20251014", ""),
    )
    sps_keys = {"ScheduledProcedureStepStartDate": "", "ScheduledProcedureStepStartTime": ""}
    query[SPS].value[0].update(dataset(**{k: v for k, v in sps_keys.items() if k not in query[SPS].value[0]}))
    return [
        (
            (value(s["00400002"]) or [""])[0],
            (value(s["00400003"]) or [""])[0],
        )
        for s in (value(a[SPS_KEY])[0] for a in match_item(compile_query(query, options), candidates))
    ]


def start_query(date: str, time: str) -> Dataset:
    return q(sps={"ScheduledProcedureStepStartDate": date, "ScheduledProcedureStepStartTime": time})


def test_date_range_and_time_range_combine_into_one_span_across_midnight() -> None:
    query = start_query("20251014-20251015", "180000-080000")
    assert answered_starts(query) == [
        ("20251014", "1800"),
        ("20251014", "2359"),
        ("20251015", "0000"),
        ("20251015", "0800"),
    ]
    assert compile_query(query, DEFAULT).start_range == ("20251014180000", "20251015080000")


def test_without_combined_matching_the_same_keys_match_apart() -> None:
    separate = MatchOptions(combined_datetime=False)
    assert answered_starts(start_query("20251014-20251015", "180000-080000"), separate) == []
    assert answered_starts(start_query("20251014-20251015", "0000-0800"), separate) == [
        ("20251014", "0700"),
        ("20251015", "0000"),
        ("20251015", "0800"),
    ]


def test_single_date_with_time_range() -> None:
    query = start_query("20251015", "0000-0800")
    assert answered_starts(query) == [("20251015", "0000"), ("20251015", "0800")]
    assert compile_query(query, DEFAULT).start_range == ("20251015000000", "20251015080059")


def test_date_range_with_single_time_spans_from_first_day_to_last_day_at_that_time() -> None:
    query = start_query("20251014-20251016", "1200")
    assert answered_starts(query) == [
        ("20251014", "175959"),
        ("20251014", "1800"),
        ("20251014", "2359"),
        ("20251015", "0000"),
        ("20251015", "0800"),
        ("20251015", "080100"),
        ("20251015", "1200"),
        ("20251016", "1200"),
    ]
    separate = MatchOptions(combined_datetime=False)
    assert answered_starts(query, separate) == [("20251015", "1200"), ("20251016", "1200")]


def test_open_ended_combined_ranges() -> None:
    assert answered_starts(start_query("20251016-", "1215-")) == [("20251016", "1230"), ("20251020", "0100")]
    assert answered_starts(start_query("-20251014", "-0700")) == [("20251014", "0700")]
    assert compile_query(start_query("20251016-", "1215-"), DEFAULT).start_range == (
        "20251016121500",
        "99999999999999",
    )


def test_date_alone_matches_any_time_and_items_without_time() -> None:
    query = start_query("20251014", "")
    assert answered_starts(query) == [
        ("20251014", "0700"),
        ("20251014", "175959"),
        ("20251014", "1800"),
        ("20251014", "2359"),
        ("20251014", ""),
    ]
    assert compile_query(query, DEFAULT).start_range == ("20251014000000", "20251014235959")


def test_a_stored_step_without_time_does_not_match_a_time_key() -> None:
    assert ("20251014", "") not in answered_starts(start_query("20251014", "0000-2359"))


def test_time_alone_matches_on_every_day() -> None:
    query = start_query("", "1200")
    assert answered_starts(query) == [("20251015", "1200"), ("20251016", "1200")]
    assert compile_query(query, DEFAULT).start_range is None


# --- Sequence matching (C.2.2.2.6) --------------------------------------------------------------------------

PROTOCOL = "ScheduledProtocolCodeSequence"
PROTOCOL_KEY = "00400008"


def code(value: str, scheme: str = "L", meaning: str = "M") -> dict[str, str]:
    return {"CodeValue": value, "CodingSchemeDesignator": scheme, "CodeMeaning": meaning}


@pytest.mark.parametrize(
    ("requested", "returned_keys"),
    [
        ([], {"00080100", "00080102", "00080104"}),
        ([{}], {"00080100", "00080102", "00080104"}),
        ([{"CodeValue": "", "CodingSchemeDesignator": ""}], {"00080100", "00080102"}),
        ([{"CodeValue": "*"}], {"00080100"}),
    ],
    ids=["zero-length", "empty-item", "empty-keys", "universal-key"],
)
def test_a_sequence_return_key_constrains_nothing(
    requested: list[dict[str, str]], returned_keys: set[str]
) -> None:
    with_codes = item([step(**{PROTOCOL: [code("X"), code("Y")]})])
    without = item([step()])
    query = q(sps={PROTOCOL: requested})
    assert value(find(query, without)[0][SPS_KEY])[0] == {PROTOCOL_KEY: {"vr": "SQ"}}
    returned = value(value(find(query, with_codes)[0][SPS_KEY])[0][PROTOCOL_KEY])
    assert [r["00080100"]["Value"] for r in returned] == [["X"], ["Y"]]
    assert [set(r) for r in returned] == [returned_keys, returned_keys]


def test_a_sequence_key_with_values_keeps_only_matching_items_trimmed() -> None:
    stored_item = item([step(**{PROTOCOL: [code("X", meaning="Head"), code("Y", meaning="Neck")]})])
    query = q(sps={PROTOCOL: [{"CodeValue": "Y", "CodeMeaning": ""}]})
    returned = value(value(find(query, stored_item)[0][SPS_KEY])[0][PROTOCOL_KEY])
    assert returned == [
        {"00080100": {"vr": "SH", "Value": ["Y"]}, "00080104": {"vr": "LO", "Value": ["Neck"]}},
    ]
    assert not matches(q(sps={PROTOCOL: [{"CodeValue": "Z"}]}), stored_item)
    assert not matches(q(sps={PROTOCOL: [{"CodeValue": "X"}]}), item([step()]))


def test_sequence_keys_must_all_match_within_one_stored_item() -> None:
    stored_item = item([step(**{PROTOCOL: [code("X", scheme="A"), code("Y", scheme="B")]})])
    assert matches(q(sps={PROTOCOL: [{"CodeValue": "X", "CodingSchemeDesignator": "A"}]}), stored_item)
    assert not matches(q(sps={PROTOCOL: [{"CodeValue": "X", "CodingSchemeDesignator": "B"}]}), stored_item)


def test_top_level_sequence_matching_and_wildcards_inside_items() -> None:
    stored_item = item(RequestedProcedureCodeSequence=[code("CT-HEAD")])
    assert matches(q(RequestedProcedureCodeSequence=[{"CodeValue": "CT-*"}]), stored_item)
    assert not matches(q(RequestedProcedureCodeSequence=[{"CodeValue": "MR-*"}]), stored_item)


def test_more_than_one_sps_item_is_an_invalid_identifier() -> None:
    query = dataset(**{SPS: [{"Modality": "CT"}, {"Modality": "MR"}]})
    with pytest.raises(InvalidIdentifier) as caught:
        compile_query(query, DEFAULT)
    assert caught.value.offending == [0x00400100]
    with pytest.raises(InvalidIdentifier) as caught:
        compile_query(dataset(**{SPS: [{}, {}]}), DEFAULT)
    assert caught.value.offending == [0x00400100]


def test_more_than_one_item_in_a_nested_sequence_is_an_invalid_identifier() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        compile_query(q(sps={PROTOCOL: [{"CodeValue": ""}, {"CodeValue": ""}]}), DEFAULT)
    assert caught.value.offending == [0x00400008]


def test_duplicate_empty_referenced_study_and_patient_items_are_tolerated() -> None:
    reference = {"ReferencedSOPClassUID": "1.2.840.10008.3.1.2.3.1", "ReferencedSOPInstanceUID": "1.2.9"}
    stored_item = item(ReferencedStudySequence=[reference])
    empty = {"ReferencedSOPClassUID": "", "ReferencedSOPInstanceUID": ""}
    query = q(ReferencedStudySequence=[empty, empty], ReferencedPatientSequence=[{}, {}], PatientID="")
    answer = find(query, stored_item)[0]
    assert answer["00081110"] == stored_item["00081110"]
    assert answer["00081120"] == {"vr": "SQ"}
    not_empty = q(
        ReferencedStudySequence=[{"ReferencedSOPInstanceUID": "1.2.9"}, {"ReferencedSOPInstanceUID": ""}]
    )
    with pytest.raises(InvalidIdentifier):
        compile_query(not_empty, DEFAULT)


# --- Keys we cannot match: return keys and FF01 -------------------------------------------------------------


def test_binary_and_private_keys_with_values_are_unsupported_return_keys() -> None:
    query = q(PatientID="P1")
    query.add_new(0x00420011, "OB", b"\x01\x02")  # EncapsulatedDocument
    query.add_new(0x00090010, "LO", "ACME")  # a private creator
    query.add_new(0x00091001, "LO", "x")
    compiled = compile_query(query, DEFAULT)
    assert compiled.unsupported == frozenset({0x00420011, 0x00090010, 0x00091001})
    stored_item = item()
    stored_item["00091001"] = {"vr": "LO", "Value": ["y"]}
    answer = find(query, stored_item)[0]
    assert answer["00420011"] == {"vr": "OB"}
    assert answer["00091001"] == {"vr": "LO", "Value": ["y"]}  # returned, not matched


def test_empty_binary_keys_are_plain_return_keys() -> None:
    query = q(PatientID="P1")
    query.add_new(0x00420011, "OB", b"")
    assert compile_query(query, DEFAULT).unsupported == frozenset()


def nested(innermost: list[dict[str, Any]]) -> dict[str, Any]:
    """SPS keys whose fifth sequence level (SPS > protocol > context > modifier > concept) is `innermost`."""
    modifier = {"ContentItemModifierSequence": [{"ConceptNameCodeSequence": innermost}]}
    return {PROTOCOL: [{"ProtocolContextSequence": [modifier]}]}


def test_nesting_deeper_than_supported_is_unsupported_and_returned_whole() -> None:
    compiled = compile_query(q(sps=nested([{"CodeValue": "D", "CodeMeaning": ""}])), DEFAULT)
    assert compiled.unsupported == frozenset({0x0040A043})
    stored_item = item([step(**nested([code("other")]))])
    answers = match_item(compiled, stored_item)
    assert len(answers) == 1
    assert value(answers[0][SPS_KEY])[0][PROTOCOL_KEY] == stored_item[SPS_KEY]["Value"][0][PROTOCOL_KEY]


def test_four_levels_of_sequences_are_matched() -> None:
    query = q(
        sps={PROTOCOL: [{"ProtocolContextSequence": [{"ContentItemModifierSequence": [{"CodeValue": "D"}]}]}]}
    )
    assert compile_query(query, DEFAULT).unsupported == frozenset()
    stored_with = {PROTOCOL: [{"ProtocolContextSequence": [{"ContentItemModifierSequence": [code("D")]}]}]}
    assert matches(query, item([step(**stored_with)]))
    assert not matches(query, item([step(**nested([code("D")]))]))
