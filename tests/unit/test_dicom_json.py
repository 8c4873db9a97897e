"""Orthanc "Tags" <-> Dataset <-> DICOM JSON conversions, value validation and worklist checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence

from shared.dicom_json import (
    FORMATS,
    TagsError,
    dataset_from_tags,
    dataset_to_dicom_json,
    dataset_to_format,
    dicom_json_dict,
    dicom_json_to_dataset,
    validate_worklist,
)

JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"
LATIN1 = "Müller^Jürgen^François^Dr.^Jr."
SPS = "ScheduledProcedureStepSequence"


def valid_tags(**overrides: Any) -> dict[str, Any]:
    """A complete worklist item as an Orthanc client would post it."""
    tags: dict[str, Any] = {
        "PatientName": "Doe^John",
        "PatientID": "P123",
        "AccessionNumber": "A1",
        "RequestedProcedureID": "RP1",
        "StudyInstanceUID": "1.2.840.5",
        SPS: [
            {
                "Modality": "US",
                "ScheduledStationAETitle": "ECHO1",
                "ScheduledProcedureStepStartDate": "20240102",
                "ScheduledProcedureStepStartTime": "0930",
                "ScheduledProcedureStepID": "SPS1",
            }
        ],
    }
    tags.update(overrides)
    return tags


def rejected(tags: object) -> TagsError:
    with pytest.raises(TagsError) as info:
        dataset_from_tags(tags)
    return info.value


def simplify_round_trip(tags: dict[str, Any]) -> dict[str, Any]:
    """Tags -> Dataset -> DICOM JSON text -> Dataset -> Simplify: what a client reads back after storage."""
    text = dataset_to_dicom_json(dataset_from_tags(tags))
    return dataset_to_format(dicom_json_to_dataset(text), "Simplify")


# ---------------------------------------------------------------------------------------------------------
# TagsError


def test_tags_error_carries_field_and_message() -> None:
    error = TagsError("PatientID", "is too long")
    assert isinstance(error, ValueError)
    assert (error.field, error.message, str(error)) == ("PatientID", "is too long", "PatientID: is too long")


# ---------------------------------------------------------------------------------------------------------
# dataset_from_tags: accepted content


def test_keywords_and_hex_keys_in_either_case_build_the_same_dataset() -> None:
    by_keyword = dataset_from_tags({"PatientName": "Doe^John", "PregnancyStatus": "4"})
    by_hex = dataset_from_tags({"0010,0010": "Doe^John", "0010,21C0": "4"})
    by_lower_hex = dataset_from_tags({"0010,0010": "Doe^John", "0010,21c0": "4"})
    assert by_keyword == by_hex == by_lower_hex
    assert list(dataset_to_format(by_hex, "Short")) == ["0010,0010", "0010,21c0"]
    assert by_keyword[0x00100010].VR == "PN"
    assert by_keyword[0x001021C0].value == 4


def test_null_and_empty_string_are_zero_length_values() -> None:
    ds = dataset_from_tags({"PatientID": None, "AccessionNumber": "", "PregnancyStatus": None})
    assert ds[0x00100020].value is None
    assert ds[0x00080050].value is None
    assert ds[0x001021C0].value is None


def test_null_empty_string_and_empty_array_are_empty_sequences() -> None:
    ds = dataset_from_tags({SPS: None, "ReferencedStudySequence": "", "ScheduledProtocolCodeSequence": []})
    for keyword in (SPS, "ReferencedStudySequence", "ScheduledProtocolCodeSequence"):
        assert ds[keyword].VR == "SQ"
        assert list(ds[keyword].value) == []


def test_backslash_splits_multi_values_including_empty_ones() -> None:
    ds = dataset_from_tags({"OtherPatientIDs": "A\\\\B", "ScheduledStationAETitle": "CT1\\CT2"})
    assert list(ds.OtherPatientIDs) == ["A", "", "B"]
    assert list(ds.ScheduledStationAETitle) == ["CT1", "CT2"]


def test_backslash_is_an_ordinary_character_in_free_text() -> None:
    ds = dataset_from_tags({"PatientComments": "C:\\data\nline two\ttab", "RetrieveURL": "http://x/a%5Cb"})
    assert ds.PatientComments == "C:\\data\nline two\ttab"


def test_numeric_vrs_are_parsed_into_numbers() -> None:
    ds = dataset_from_tags(
        {"PregnancyStatus": "4", "CTDIvol": "12.5", "FrameIncrementPointer": "0018,1063\\0018,1065"}
    )
    assert ds.PregnancyStatus == 4
    assert ds.CTDIvol == 12.5
    assert list(ds.FrameIncrementPointer) == [0x00181063, 0x00181065]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("PatientBirthDate", "20240229"),
        ("ScheduledProcedureStepStartTime", "23"),
        ("ScheduledProcedureStepStartTime", "2359"),
        ("ScheduledProcedureStepStartTime", "235960"),  # leap second
        ("ScheduledProcedureStepStartTime", "235959.123456"),
        ("DateTime", "2024"),
        ("DateTime", "20240102"),
        ("DateTime", "20240102235959.5+1400"),
        ("DateTime", "20240102-1200"),
        ("StudyInstanceUID", "1.2.840.10008.5.1.4.31"),
        ("StudyInstanceUID", "0"),
        ("StudyInstanceUID", "1.0.3." + "1" * 58),  # exactly 64 characters
        ("ScheduledStationAETitle", " AE 1 "),
        ("Modality", "OT"),
        ("SpecificCharacterSet", "ISO 2022 IR 87\\ISO_IR 192"),
        ("PatientAge", "030Y"),
        ("PatientWeight", "-1.5E3"),
        ("StageNumber", "-2147483648"),
        ("AccessionNumber", "x" * 16),
        ("PatientID", "é" * 64),
        ("PatientName", "=".join(["a" * 64] * 3)),
        ("PatientName", "a^b^c^d^e"),
        ("InstitutionAddress", "x" * 1024),
        ("PatientComments", "x" * 10240),
        ("TextValue", "x" * 20000),
    ],
)
def test_valid_values_are_accepted_unchanged(keyword: str, value: str) -> None:
    ds = dataset_from_tags({keyword: value})
    assert dataset_to_format(ds, "Simplify") == {keyword: value}


def test_nesting_of_eight_sequence_levels_is_accepted() -> None:
    tags: dict[str, Any] = {"PatientID": "deep"}
    for _ in range(8):
        tags = {"ReferencedStudySequence": [tags]}
    assert dataset_to_format(dataset_from_tags(tags), "Simplify") == tags


def test_binary_vr_accepts_only_an_empty_value() -> None:
    ds = dataset_from_tags({"PixelData": None})
    assert ds[0x7FE00010].VR == "OB"
    assert ds[0x7FE00010].value is None


# ---------------------------------------------------------------------------------------------------------
# dataset_from_tags: rejections, each naming the tag as the client wrote it


@pytest.mark.parametrize("tags", [[], "PatientName", None, 3, [{"PatientName": "x"}]])
def test_tags_must_be_an_object(tags: object) -> None:
    assert rejected(tags).field == "Tags"


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("PatientNam", "not a DICOM keyword"),
        ("patientname", "not a DICOM keyword"),
        ("00100010", "not a DICOM keyword"),  # only "gggg,eeee" is a hex key
        ("(0010,0010)", "not a DICOM keyword"),
        ("0010,001", "not a DICOM keyword"),
        ("0009,1010", "private tags are not supported"),
        ("0011,0010", "private tags are not supported"),
        ("0010,0011", "not in the DICOM dictionary"),
        ("0010,0000", "group length"),
        ("0008,0000", "group length"),
        ("CommandGroupLength", "group length"),
        ("0000,0100", "command and file meta"),
        ("TransferSyntaxUID", "command and file meta"),
        ("FFFE,E000", "item and delimitation"),
    ],
)
def test_unusable_keys_are_rejected(key: str, fragment: str) -> None:
    error = rejected({"PatientID": "P1", key: "x"})
    assert error.field == key
    assert fragment in error.message


def test_same_tag_given_twice_is_rejected() -> None:
    error = rejected({"PatientName": "A", "0010,0010": "B"})
    assert error.field == "0010,0010"
    assert "PatientName" in error.message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(5, "a number"), (1.5, "a number"), (True, "a boolean"), ({}, "an object"), (["a"], "an array")],
)
def test_non_string_values_are_rejected(value: object, fragment: str) -> None:
    error = rejected({"PatientID": value})
    assert error.field == "PatientID"
    assert fragment in error.message


def test_array_of_objects_for_a_non_sequence_is_rejected() -> None:
    assert rejected({"Modality": [{"CodeValue": "x"}]}).field == "Modality"


@pytest.mark.parametrize("value", ["US", 3, {"Modality": "US"}, False])
def test_non_array_for_a_sequence_is_rejected(value: object) -> None:
    error = rejected({SPS: value})
    assert error.field == SPS
    assert "sequence" in error.message


@pytest.mark.parametrize("item", ["x", 1, None, [], [{}]])
def test_sequence_items_must_be_objects(item: object) -> None:
    assert rejected({SPS: [{"Modality": "US"}, item]}).field == f"{SPS}[1]"


def test_nested_errors_carry_the_path_as_written() -> None:
    assert rejected({SPS: [{"Modality": "us"}]}).field == f"{SPS}[0].Modality"
    assert rejected({"0040,0100": [{}, {"0008,0060": 1}]}).field == "0040,0100[1].0008,0060"
    deep = {SPS: [{"ScheduledProtocolCodeSequence": [{"CodeValue": "x" * 17}]}]}
    assert rejected(deep).field == f"{SPS}[0].ScheduledProtocolCodeSequence[0].CodeValue"
    assert rejected({SPS: [{"Bogus": "x"}]}).field == f"{SPS}[0].Bogus"


def test_nesting_deeper_than_eight_sequence_levels_is_rejected() -> None:
    tags: dict[str, Any] = {"PatientID": "deep"}
    for _ in range(9):
        tags = {"ReferencedStudySequence": [tags]}
    error = rejected(tags)
    assert error.field == "ReferencedStudySequence" + "[0].ReferencedStudySequence" * 8
    assert "8 levels" in error.message


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        # DA: YYYYMMDD, a real date, no ranges
        ("PatientBirthDate", "2024-01-02"),
        ("PatientBirthDate", "20230229"),
        ("PatientBirthDate", "20241301"),
        ("PatientBirthDate", "20240100"),
        ("PatientBirthDate", "2024010"),
        ("PatientBirthDate", "20240101-20240131"),
        ("PatientBirthDate", "00000101"),
        ("PatientBirthDate", "２０２４０１０２"),  # full-width digits
        # TM
        ("ScheduledProcedureStepStartTime", "24"),
        ("ScheduledProcedureStepStartTime", "1260"),
        ("ScheduledProcedureStepStartTime", "123061"),
        ("ScheduledProcedureStepStartTime", "1"),
        ("ScheduledProcedureStepStartTime", "12:30"),
        ("ScheduledProcedureStepStartTime", "1230.5"),
        ("ScheduledProcedureStepStartTime", "123000.1234567"),
        ("ScheduledProcedureStepStartTime", "0900-1000"),
        # DT
        ("DateTime", "20240102250000"),
        ("DateTime", "20241302"),
        ("DateTime", "2024010212+1500"),
        ("DateTime", "2024010212-1300"),
        ("DateTime", "2024010212+0060"),
        ("DateTime", "202401021200.5"),
        ("DateTime", "20240102120000.1234567"),
        ("DateTime", "20240102-20240103"),
        # UI
        ("StudyInstanceUID", "1.2.03"),
        ("StudyInstanceUID", "1..2"),
        ("StudyInstanceUID", ".1.2"),
        ("StudyInstanceUID", "1.2."),
        ("StudyInstanceUID", "1.2.a"),
        ("StudyInstanceUID", "1.2.3 "),
        ("StudyInstanceUID", "1.2." + "1" * 61),  # 65 characters
        # AE
        ("ScheduledStationAETitle", "A" * 17),
        ("ScheduledStationAETitle", "   "),
        ("ScheduledStationAETitle", "ÉCHO"),
        # CS
        ("Modality", "us"),
        ("Modality", "U-S"),
        ("Modality", "A" * 17),
        ("PatientSex", "É"),
        # AS
        ("PatientAge", "30Y"),
        ("PatientAge", "030X"),
        # SH, LO, PN lengths and structure
        ("AccessionNumber", "x" * 17),
        ("PatientID", "x" * 65),
        ("PatientName", "a" * 65),
        ("PatientName", "a=b=c=d"),
        ("PatientName", "a^b^c^d^e^f"),
        # ST, LT lengths
        ("InstitutionAddress", "x" * 1025),
        ("PatientComments", "x" * 10241),
        # IS, DS
        ("StageNumber", "1.5"),
        ("StageNumber", "abc"),
        ("StageNumber", "2147483648"),
        ("PatientWeight", "abc"),
        ("PatientWeight", "1,5"),
        ("PatientWeight", "1e999"),
        ("PatientWeight", "NaN"),
        ("PatientWeight", "1" * 17),
        # binary numbers
        ("PregnancyStatus", "70000"),
        ("PregnancyStatus", "-1"),
        ("PregnancyStatus", "1.5"),
        ("PregnancyStatus", "four"),
        ("CTDIvol", "nan"),
        ("CTDIvol", "inf"),
        ("CTDIvol", "1_0"),
        ("RecommendedDisplayFrameRateInFloat", "1e39"),
        ("FrameIncrementPointer", "00181063"),
        # UR
        ("RetrieveURL", " http://x"),
        ("RetrieveURL", "http:\\\\x"),
        # control characters and invalid Unicode
        ("PatientName", "Doe\x00^John"),
        ("PatientID", "P\n1"),
        ("PatientID", "P\x1b$B1"),  # ESC: values are Unicode, ISO 2022 escapes have no place
        ("PatientID", "P\x851"),  # C1 control
        ("PatientID", "P\ud8001"),  # lone surrogate
        ("PatientComments", "a\x00b"),
        ("PatientComments", "a\x0bb"),
    ],
)
def test_values_invalid_for_their_vr_are_rejected(keyword: str, value: str) -> None:
    error = rejected({SPS: [{"Modality": "US"}], keyword: value})
    assert error.field == keyword


@pytest.mark.parametrize(
    ("keyword", "value"), [("PatientName", "Doe\\John"), ("PatientID", "A\\B"), ("Modality", "US\\CT")]
)
def test_multiple_values_where_the_dictionary_allows_one_are_rejected(keyword: str, value: str) -> None:
    error = rejected({keyword: value})
    assert error.field == keyword
    assert "at most 1" in error.message


def test_invalid_value_in_a_multi_value_names_its_position() -> None:
    error = rejected({"ScheduledStationAETitle": "CT1\\" + "A" * 17})
    assert error.field == "ScheduledStationAETitle"
    assert "value 2 of 2" in error.message


def test_empty_value_in_a_multi_valued_number_is_rejected() -> None:
    assert rejected({"FrameIncrementPointer": "0018,1063\\"}).field == "FrameIncrementPointer"


def test_binary_values_are_rejected() -> None:
    error = rejected({"PixelData": "AAAA"})
    assert error.field == "PixelData"
    assert "binary" in error.message


def test_error_messages_do_not_echo_patient_data() -> None:
    error = rejected({"PatientName": "Secret^Name\x00"})
    assert "Secret" not in str(error)


# ---------------------------------------------------------------------------------------------------------
# dataset_to_format: Orthanc's shapes


def toto() -> Dataset:
    return dataset_from_tags({"PatientName": "Toto", SPS: [{"Modality": "US"}]})


def test_simplify_shape() -> None:
    assert dataset_to_format(toto(), "Simplify") == {"PatientName": "Toto", SPS: [{"Modality": "US"}]}


def test_short_shape() -> None:
    assert dataset_to_format(toto(), "Short") == {"0010,0010": "Toto", "0040,0100": [{"0008,0060": "US"}]}


def test_full_shape() -> None:
    assert dataset_to_format(toto(), "Full") == {
        "0010,0010": {"Name": "PatientName", "Type": "String", "Value": "Toto"},
        "0040,0100": {
            "Name": SPS,
            "Type": "Sequence",
            "Value": [{"0008,0060": {"Name": "Modality", "Type": "String", "Value": "US"}}],
        },
    }


def test_formats_render_empty_values_multi_values_and_numbers_as_strings() -> None:
    ds = dataset_from_tags(
        {
            "PatientID": None,
            "OtherPatientIDs": "A\\B",
            "PregnancyStatus": "4",
            "PatientWeight": "70.50",
            "CTDIvol": "2.5",
            "FrameIncrementPointer": "0018,1063",
            "ReferencedStudySequence": [],
            "PixelData": None,
            "SmallestImagePixelValue": None,
        }
    )
    assert dataset_to_format(ds, "Simplify") == {
        "ReferencedStudySequence": [],
        "PatientID": "",
        "OtherPatientIDs": "A\\B",
        "PregnancyStatus": "4",
        "PatientWeight": "70.50",
        "CTDIvol": "2.5",
        "SmallestImagePixelValue": None,
        "FrameIncrementPointer": "0018,1063",
        "PixelData": None,
    }
    full = dataset_to_format(ds, "Full")
    assert full["0010,0020"] == {"Name": "PatientID", "Type": "String", "Value": ""}
    assert full["0008,1110"] == {"Name": "ReferencedStudySequence", "Type": "Sequence", "Value": []}
    assert full["0028,0106"] == {"Name": "SmallestImagePixelValue", "Type": "Null", "Value": None}
    assert full["7fe0,0010"] == {"Name": "PixelData", "Type": "Binary", "Value": None}


def test_binary_content_is_never_dumped() -> None:
    ds = Dataset()
    ds.add(DataElement(0x00091010, "OB", b"\x00\x01secret"))
    ds.add(DataElement(0x00090010, "LO", "ACME"))
    ds.add(DataElement(0x60023000, "OW", b"\x00\x01"))
    assert dataset_to_format(ds, "Simplify") == {"0009,0010": "ACME", "0009,1010": None, "6002,3000": None}
    assert dataset_to_format(ds, "Full")["0009,1010"] == {
        "Name": "Unknown Tag & Data",
        "Type": "Binary",
        "Value": None,
    }


def test_keys_are_ordered_by_tag_whatever_the_insertion_order() -> None:
    ds = Dataset()
    for tag, vr, value in [(0x00400100, "SQ", []), (0x00100020, "LO", "P"), (0x00080050, "SH", "A")]:
        ds.add(DataElement(tag, vr, value))
    assert list(dataset_to_format(ds, "Short")) == ["0008,0050", "0010,0020", "0040,0100"]
    assert list(dataset_to_format(ds, "Simplify")) == ["AccessionNumber", "PatientID", SPS]


def test_unknown_format_is_refused() -> None:
    assert FORMATS == ("Simplify", "Short", "Full")
    with pytest.raises(ValueError, match="simplify"):
        dataset_to_format(toto(), "simplify")  # type: ignore[arg-type]


def test_multi_group_and_accented_names_are_shown_whole() -> None:
    ds = dataset_from_tags({"PatientName": JAPANESE, "ScheduledPerformingPhysicianName": LATIN1})
    assert dataset_to_format(ds, "Short") == {"0010,0010": JAPANESE, "0040,0006": LATIN1}


# ---------------------------------------------------------------------------------------------------------
# DICOM JSON (PS3.18 F.2)


def test_dicom_json_is_sorted_compact_and_standard() -> None:
    ds = Dataset()
    item = Dataset()
    item.add(DataElement(0x00400002, "DA", "20240102"))
    item.add(DataElement(0x00080060, "CS", "US"))
    ds.add(DataElement(0x00400100, "SQ", Sequence([item])))
    ds.add(DataElement(0x00100010, "PN", JAPANESE))
    ds.add(DataElement(0x00100020, "LO", None))
    assert dataset_to_dicom_json(ds) == (
        '{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Yamada^Tarou","Ideographic":"山田^太郎",'
        '"Phonetic":"やまだ^たろう"}]},"00100020":{"vr":"LO"},'
        '"00400100":{"vr":"SQ","Value":[{"00080060":{"vr":"CS","Value":["US"]},'
        '"00400002":{"vr":"DA","Value":["20240102"]}}]}}'
    )
    document = dicom_json_dict(ds)
    assert list(document) == ["00100010", "00100020", "00400100"]
    assert list(document["00400100"]["Value"][0]) == ["00080060", "00400002"]


def test_dicom_json_numbers_and_empty_sequences() -> None:
    ds = dataset_from_tags({"PregnancyStatus": "4", "PatientWeight": "70", "ReferencedStudySequence": None})
    assert json.loads(dataset_to_dicom_json(ds)) == {
        "00081110": {"vr": "SQ", "Value": []},
        "00101030": {"vr": "DS", "Value": [70]},
        "001021C0": {"vr": "US", "Value": [4]},
    }


@pytest.mark.parametrize("name", [JAPANESE, LATIN1, "=山田^太郎", "Ñúñez^José=ニュニェス", "O'Brien^Seán"])
def test_names_survive_storage_as_dicom_json(name: str) -> None:
    tags = valid_tags(PatientName=name, OtherPatientNames=f"{name}\\Doe^Jane")
    assert simplify_round_trip(tags) == tags


def test_everything_survives_storage_as_dicom_json() -> None:
    tags = valid_tags(
        OtherPatientIDs="A\\\\B",
        PatientComments="line 1\r\nC:\\path",
        PregnancyStatus="4",
        PatientWeight="70",
        PatientSize="1.82",
        StageNumber="3",
        CTDIvol="2.5",
        ReferencedStudySequence=[{"ReferencedSOPClassUID": "1.2.3", "ReferencedSOPInstanceUID": "1.2.3.4"}],
        RequestedProcedureCodeSequence=[],
    )
    tags[SPS][0]["ScheduledProtocolCodeSequence"] = [
        {"CodeValue": "X1", "CodingSchemeDesignator": "L", "CodeMeaning": "Écho cœur"}
    ]
    assert simplify_round_trip(tags) == tags


def test_empty_values_read_back_from_dicom_json_are_none() -> None:
    original = dataset_from_tags({"PatientID": None, "PatientName": "", "PregnancyStatus": None, SPS: None})
    restored = dicom_json_to_dataset(dataset_to_dicom_json(original))
    assert restored[0x00100020].value is None
    assert restored[0x00100010].value is None
    assert restored[0x001021C0].value is None
    assert list(restored[0x00400100].value) == []
    assert restored == original
    assert dataset_to_format(restored, "Simplify") == {
        "PatientName": "",
        "PatientID": "",
        "PregnancyStatus": None,
        SPS: [],
    }


def test_dicom_json_to_dataset_accepts_a_dict() -> None:
    ds = dicom_json_to_dataset({"00100020": {"vr": "LO", "Value": ["P1"]}})
    assert ds.PatientID == "P1"


@pytest.mark.parametrize("text", ["not json", "[1]", "null", '{"00100010": 5}', '{"zz": {"vr": "LO"}}'])
def test_invalid_dicom_json_raises_tags_error(text: str) -> None:
    with pytest.raises(TagsError) as info:
        dicom_json_to_dataset(text)
    assert info.value.field == "DICOM JSON"


# ---------------------------------------------------------------------------------------------------------
# validate_worklist


def test_complete_item_passes_without_warnings() -> None:
    assert validate_worklist(dataset_from_tags(valid_tags()), force=False) == []


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        ({"PatientName": "Doe^John"}, SPS),
        ({SPS: []}, SPS),
        ({SPS: None}, SPS),
        ({SPS: [{"ScheduledProcedureStepStartDate": "20240102"}]}, f"{SPS}[0].Modality"),
        ({SPS: [{"Modality": "", "ScheduledProcedureStepStartDate": "20240102"}]}, f"{SPS}[0].Modality"),
        ({SPS: [{"Modality": "  ", "ScheduledProcedureStepStartDate": "20240102"}]}, f"{SPS}[0].Modality"),
        ({SPS: [{"Modality": "US"}]}, f"{SPS}[0].ScheduledProcedureStepStartDate"),
        (
            {SPS: [{"Modality": "US", "ScheduledProcedureStepStartDate": None}]},
            f"{SPS}[0].ScheduledProcedureStepStartDate",
        ),
        (
            {SPS: [{}, {"Modality": "US", "ScheduledProcedureStepStartDate": "20240102"}]},
            f"{SPS}[0].Modality",
        ),
    ],
)
def test_orthanc_minimum_is_required_unless_forced(tags: dict[str, Any], field: str) -> None:
    ds = dataset_from_tags(tags)
    with pytest.raises(TagsError) as info:
        validate_worklist(ds, force=False)
    assert info.value.field == field
    validate_worklist(ds, force=True)  # Force skips the minimum


def test_forced_item_without_steps_is_warned_about() -> None:
    warnings = validate_worklist(
        dataset_from_tags({k: v for k, v in valid_tags().items() if k != SPS}), force=True
    )
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{SPS} is absent")
    warnings = validate_worklist(dataset_from_tags(valid_tags(ScheduledProcedureStepSequence=[])), force=True)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{SPS} is empty")


def test_warnings_name_each_absent_or_empty_type1_key() -> None:
    tags = valid_tags(PatientName="")
    del tags["PatientID"]
    del tags["AccessionNumber"]  # type 2: no warning
    del tags["RequestedProcedureID"]
    tags[SPS][0]["ScheduledStationAETitle"] = ""
    del tags[SPS][0]["ScheduledProcedureStepID"]
    tags[SPS].append({"Modality": "CT"})
    warnings = validate_worklist(dataset_from_tags(tags), force=False)
    expected = [
        "PatientName is empty",
        "PatientID is absent",
        "RequestedProcedureID is absent",
        f"{SPS}[0].ScheduledStationAETitle is empty",
        f"{SPS}[0].ScheduledProcedureStepID is absent",
        f"{SPS}[1].ScheduledStationAETitle is absent",
        f"{SPS}[1].ScheduledProcedureStepStartDate is absent",
        f"{SPS}[1].ScheduledProcedureStepStartTime is absent",
        f"{SPS}[1].ScheduledProcedureStepID is absent",
    ]
    assert warnings == [f"{start}; it is a type 1 return key that modalities expect" for start in expected]


def test_step_sequence_that_is_not_a_sequence_is_rejected_even_when_forced() -> None:
    ds = Dataset()
    ds.add(DataElement(0x00400100, "LO", "US"))
    with pytest.raises(TagsError) as info:
        validate_worklist(ds, force=True)
    assert info.value.field == SPS


def test_validate_works_on_datasets_read_back_from_dicom_json() -> None:
    stored = dicom_json_to_dataset(dataset_to_dicom_json(dataset_from_tags(valid_tags())))
    assert validate_worklist(stored, force=False) == []


# ---------------------------------------------------------------------------------------------------------
# Property: storage as DICOM JSON is stable and loses nothing a client sent


def _text(alphabet: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, max_size=max_size)


# Any printable Unicode (no controls, no surrogates); the delimiters of each VR are excluded where needed.
_UNICODE = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="\\")
_PN_CHAR = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="\\=^")
_FREE_TEXT_CHAR = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")) | st.sampled_from(
    "\t\n\r\x0c"
)
_CS_CHAR = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ ")
_AE_CHAR = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\")
_UID_COMPONENT = st.one_of(st.just("0"), st.integers(1, 10**12).map(str))

dates = st.dates().filter(lambda d: d.year >= 1).map(lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}")


@st.composite
def times(draw: st.DrawFn) -> str:
    """HH, HHMM, HHMMSS or HHMMSS.F to HHMMSS.FFFFFF."""
    text = draw(st.times()).strftime("%H%M%S.%f")
    return text[: draw(st.sampled_from([2, 4, 6, 8, 9, 10, 11, 12, 13]))]


uids = st.lists(_UID_COMPONENT, min_size=2, max_size=8).map(".".join).filter(lambda u: len(u) <= 64)
ae_titles = _text(_AE_CHAR, 16).filter(lambda s: s == "" or s.strip(" ") != "")
lo_values = _text(_UNICODE, 64)
pn_groups = st.lists(_text(_PN_CHAR, 12), min_size=1, max_size=5).map("^".join)
# A trailing empty group is not representable in DICOM JSON, so canonical names never end with "=".
person_names = st.lists(pn_groups, min_size=1, max_size=3).map("=".join).filter(lambda n: not n.endswith("="))
decimals = (
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
    .map(lambda f: repr(f)[:-2] if repr(f).endswith(".0") else repr(f))
    .filter(lambda s: len(s) <= 16)
)
optional = st.none() | st.just("")

protocol_codes = st.fixed_dictionaries(
    {},
    optional={
        "CodeValue": _text(_UNICODE, 16),
        "CodingSchemeDesignator": _text(_UNICODE, 16),
        "CodeMeaning": lo_values,
    },
)
steps = st.fixed_dictionaries(
    {
        "Modality": st.text(_CS_CHAR, min_size=1, max_size=16).filter(str.strip),
        "ScheduledProcedureStepStartDate": dates,
    },
    optional={
        "ScheduledStationAETitle": st.lists(ae_titles, min_size=1, max_size=3).map("\\".join),
        "ScheduledProcedureStepStartTime": times() | optional,
        "ScheduledProcedureStepID": _text(_UNICODE, 16),
        "ScheduledPerformingPhysicianName": person_names | optional,
        "ScheduledProtocolCodeSequence": st.lists(protocol_codes, max_size=2),
    },
)
worklist_tags = st.fixed_dictionaries(
    {SPS: st.lists(steps, min_size=1, max_size=3)},
    optional={
        "PatientName": person_names | optional,
        "PatientID": lo_values | optional,
        "OtherPatientIDs": st.lists(lo_values, min_size=1, max_size=3).map("\\".join),
        "AccessionNumber": _text(_UNICODE, 16),
        "StudyInstanceUID": uids,
        "PatientBirthDate": dates | optional,
        "PatientSex": st.sampled_from(["M", "F", "O", ""]),
        "PatientWeight": decimals,
        "StageNumber": st.integers(-(2**31), 2**31 - 1).map(str),
        "PregnancyStatus": st.integers(0, 65535).map(str) | st.none(),
        "PatientComments": st.text(_FREE_TEXT_CHAR, max_size=200),
        "ReferencedStudySequence": st.lists(
            st.fixed_dictionaries({"ReferencedSOPClassUID": uids, "ReferencedSOPInstanceUID": uids}),
            max_size=2,
        )
        | st.none(),
    },
)


def _as_read_back(tags: dict[str, Any]) -> dict[str, Any]:
    """What Simplify shows for these tags: null becomes "" (or null for binary numbers, [] for sequences)."""
    shown: dict[str, Any] = {}
    for key, value in tags.items():
        if isinstance(value, list):
            shown[key] = [_as_read_back(item) for item in value]
        elif key.endswith("Sequence"):
            shown[key] = []
        elif key == "PregnancyStatus":
            shown[key] = value
        else:
            shown[key] = "" if value is None else value
    return shown


@settings(max_examples=150, deadline=None)
@given(worklist_tags)
def test_dicom_json_storage_is_stable(tags: dict[str, Any]) -> None:
    first = dataset_to_dicom_json(dataset_from_tags(tags))
    second = dataset_to_dicom_json(dicom_json_to_dataset(first))
    assert second == first
    assert dataset_to_dicom_json(dicom_json_to_dataset(second)) == first


@settings(max_examples=150, deadline=None)
@given(worklist_tags)
def test_clients_read_back_what_they_stored(tags: dict[str, Any]) -> None:
    assert simplify_round_trip(tags) == _as_read_back(tags)
    validate_worklist(dataset_from_tags(tags), force=False)  # the generated items meet Orthanc's minimum
