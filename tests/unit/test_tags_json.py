"""The REST write path's direct Tags -> DICOM JSON conversion matches the pydicom path, errors too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dicom_json import TagsError, dataset_from_tags, dicom_json_dict, validate_worklist
from shared.tags_json import dicom_json_from_tags, has_value, set_value, validate_worklist_json
from tests.unit.test_dicom_json import SPS, person_names, valid_tags, worklist_tags


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except TagsError as exc:
        return "TagsError", (exc.field, exc.message)
    except Exception as exc:  # the pydicom path may fail on its own; the direct one must fail alike
        return type(exc).__name__, None


def _both(tags: object, force: bool = False) -> tuple[tuple[str, Any], tuple[str, Any]]:
    def slow() -> tuple[dict[str, Any], list[str]]:
        ds = dataset_from_tags(tags)
        return dicom_json_dict(ds), validate_worklist(ds, force=force)

    def fast() -> tuple[dict[str, Any], list[str]]:
        document = dicom_json_from_tags(tags)
        return document, validate_worklist_json(document, force=force)

    return _outcome(fast), _outcome(slow)


EDGE_CASES: list[object] = [
    valid_tags(),
    valid_tags(PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう"),
    valid_tags(PatientName="A^B="),
    valid_tags(PatientName="=X"),
    valid_tags(PatientName="="),
    valid_tags(PatientName=" "),
    valid_tags(OtherPatientNames="A^B\\C^D"),
    valid_tags(OtherPatientNames="A^B\\"),
    valid_tags(OtherPatientIDs="\\"),
    valid_tags(PatientWeight="70.5", PatientSize=" 1.80", StageNumber="+12", PregnancyStatus="4"),
    valid_tags(PatientWeight=""),
    valid_tags(PatientWeight="1e3", PatientSize="-0", PixelSpacing="0.5\\ 0.25"),
    valid_tags(PixelSpacing="0.5\\"),
    valid_tags(PixelSpacing="\\"),
    valid_tags(
        ReferencePixelX0="-5", RecommendedDisplayFrameRateInFloat="1.5", FrameIncrementPointer="0018,1063"
    ),
    valid_tags(SimpleFrameList="1\\2\\4294967295", ReferencedFrameNumber=" 7 \\+8"),
    valid_tags(**{"0010,0020": "HEXKEY"}, PatientID=None),
    valid_tags(**{"0010,0020": "TWICE"}),
    valid_tags(ReferencedStudySequence=[], AdmittingDiagnosesDescription="a\\b"),
    valid_tags(ReferencedStudySequence=None, PatientComments="line\r\nbreak\\slash"),
    valid_tags(
        ReferencedStudySequence=[{"ReferencedSOPClassUID": "1.2", "ReferencedSOPInstanceUID": "1.02"}]
    ),
    valid_tags(ReferencedStudySequence=[{"ReferencedSOPClassUID": "1.2"}, "not an object"]),
    valid_tags(ReferencedStudySequence="nope"),
    valid_tags(PatientBirthDate="20250230"),
    valid_tags(PatientName=7),
    valid_tags(Modality="ct"),
    valid_tags(NoSuchKeyword="x"),
    valid_tags(**{"0011,0010": "private"}),
    valid_tags(PixelData="x"),
    valid_tags(SpecificCharacterSet="ISO_IR 100\\ISO_IR 192"),
    {**valid_tags(), SPS: []},
    {**valid_tags(), SPS: None},
    {**valid_tags(), SPS: [{"Modality": "MR"}]},
    {**valid_tags(), SPS: [{"ScheduledProcedureStepStartDate": "20250101", "Modality": "  "}]},
    {key: value for key, value in valid_tags().items() if key != SPS},
    {
        SPS: [
            {
                "Modality": "CT",
                "ScheduledProcedureStepStartDate": "20250101",
                "ScheduledStationAETitle": "A\\B",
            }
        ]
    },
    {SPS: [{"ScheduledProtocolCodeSequence": [{"CodeValue": "X", "CodingSchemeDesignator": "L"}]}]},
    {SPS: [{"ScheduledProtocolCodeSequence": [{"ScheduledProtocolCodeSequence": [{}]}]}]},
    "not an object",
    [],
]


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("tags", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_direct_conversion_and_checks_match_the_pydicom_path(tags: object, force: bool) -> None:
    fast, slow = _both(tags, force)
    assert fast == slow


@settings(max_examples=150, deadline=None)
@given(worklist_tags, st.booleans())
def test_generated_items_convert_alike(tags: dict[str, Any], force: bool) -> None:
    fast, slow = _both(tags, force)
    assert fast == slow


_LEAVES = st.none() | st.just("") | st.text(max_size=20) | st.integers() | person_names
_KEYS = st.sampled_from(
    [
        "PatientName",
        "PatientID",
        "Modality",
        "ScheduledProcedureStepStartDate",
        "StudyInstanceUID",
        "OtherPatientNames",
        "PatientWeight",
        "ScheduledStationAETitle",
        SPS,
        "0010,0020",
    ]
)
_ANY_TAGS = st.recursive(
    st.dictionaries(_KEYS, _LEAVES, max_size=6),
    lambda inner: st.dictionaries(_KEYS, _LEAVES | st.lists(inner, max_size=2), max_size=6),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_ANY_TAGS, st.booleans())
def test_arbitrary_input_is_refused_alike(tags: dict[str, Any], force: bool) -> None:
    fast, slow = _both(tags, force)
    assert fast == slow


def test_completion_keeps_attributes_in_tag_order() -> None:
    document = dicom_json_from_tags({"PatientID": "P1", "SpecificCharacterSet": None})
    assert not has_value(document, "00080005")
    completed = set_value(document, "00080005", "CS", "ISO_IR 192")
    assert list(completed) == ["00080005", "00100020"]
    assert completed["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
    assert has_value(completed, "00080005")
