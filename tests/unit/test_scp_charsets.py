"""Character sets of the SCP: queries decoded per their (possibly misspelt) SpecificCharacterSet, answers
written in the query's character set when it can hold them, else UTF-8, never a character dropped."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.valuerep import PersonName
from pynetdicom.dsutils import decode, encode

from services.scp.charsets import (
    answer_terms,
    decode_query,
    normalize_term,
    representable,
    texts,
    with_character_set,
)
from shared.dicom_json import dicom_json_to_dataset


def raw_identifier(*elements: tuple[int, str, bytes]) -> Dataset:
    """An identifier as pynetdicom hands it to the handler: explicit VR little endian, decoded lazily."""
    stream = b""
    for tag, vr, value in elements:
        if len(value) % 2:
            value += b" "
        stream += struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value
    return decode(BytesIO(stream), is_implicit_vr=False, is_little_endian=True)


@pytest.mark.parametrize(
    ("spelling", "term"),
    [
        ("ISO_IR 100", "ISO_IR 100"),
        ("ISO-IR 100", "ISO_IR 100"),
        ("ISO_IR100", "ISO_IR 100"),
        ("iso ir 100", "ISO_IR 100"),
        ("ISO IR 144", "ISO_IR 144"),
        ("UTF-8", "ISO_IR 192"),
        ("utf8", "ISO_IR 192"),
        ("ISO_IR 192", "ISO_IR 192"),
        ("ISO 2022 IR 87", "ISO 2022 IR 87"),
        ("ISO2022IR87", "ISO 2022 IR 87"),
        ("ISO_2022_IR_87", "ISO 2022 IR 87"),
        ("GB18030", "GB18030"),
        ("", ""),
    ],
)
def test_misspelt_character_sets_are_understood(spelling: str, term: str) -> None:
    assert normalize_term(spelling) == term


def test_unknown_character_set_is_not_guessed() -> None:
    assert normalize_term("KLINGON") is None
    assert normalize_term("ISO_IR 999") is None


# pydicom itself warns about the spelling while pynetdicom reads the identifier; we only fix it.
@pytest.mark.filterwarnings("ignore:Incorrect value for Specific Character Set", "ignore:Unknown encoding")
@pytest.mark.parametrize("spelling", ["ISO_IR 100", "ISO-IR 100", "ISO_IR100", "ISO IR 100"])
def test_latin1_query_is_decoded_whatever_the_spelling(spelling: str) -> None:
    query = raw_identifier(
        (0x00080005, "CS", spelling.encode()), (0x00100010, "PN", "Müller^Jürgen".encode("latin-1"))
    )
    terms = decode_query(query, "ISO_IR 100")
    assert terms == ["ISO_IR 100"]
    assert str(query.PatientName) == "Müller^Jürgen"
    # The charset describes the bytes of the query; it is not a key to match.
    assert "SpecificCharacterSet" not in query


def test_utf8_query_is_decoded() -> None:
    query = raw_identifier((0x00080005, "CS", b"ISO_IR 192"), (0x00100010, "PN", "Иванов^Иван".encode()))
    assert decode_query(query, "ISO_IR 100") == ["ISO_IR 192"]
    assert str(query.PatientName) == "Иванов^Иван"


def test_japanese_iso2022_query_is_decoded() -> None:
    name = "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"
    query = raw_identifier((0x00080005, "CS", b"\\ISO 2022 IR 87"), (0x00100010, "PN", name.encode("ascii")))
    assert decode_query(query, "ISO_IR 100") == ["", "ISO 2022 IR 87"]
    assert query.PatientName == PersonName("Yamada^Tarou=山田^太郎=やまだ^たろう")


def test_query_without_character_set_is_read_with_default_encoding() -> None:
    # Many modalities send Latin-1 without declaring it; DefaultEncoding (Latin1 by default) reads them.
    query = raw_identifier((0x00100010, "PN", "Müller*".encode("latin-1")))
    assert decode_query(query, "ISO_IR 100") is None
    assert str(query.PatientName) == "Müller*"


def test_sequence_items_are_decoded_with_the_query_character_set() -> None:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 100"
    step = Dataset()
    step.ScheduledPerformingPhysicianName = "Gómez^Ana"
    query.ScheduledProcedureStepSequence = [step]
    raw = decode(BytesIO(encode(query, False, True) or b""), False, True)
    decode_query(raw, "ISO_IR 6")
    assert str(raw.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName) == "Gómez^Ana"


@pytest.mark.parametrize(
    ("text", "terms", "expected"),
    [
        ("Müller", ["ISO_IR 100"], True),
        ("Иванов", ["ISO_IR 100"], False),
        ("Иванов", ["ISO_IR 144"], True),
        ("Παπαδόπουλος", ["ISO_IR 126"], True),
        ("שרון", ["ISO_IR 138"], True),
        ("สมชาย", ["ISO_IR 166"], True),
        ("ﾔﾏﾀﾞ", ["ISO_IR 13"], True),
        ("山田", ["", "ISO 2022 IR 87"], True),
        ("山田", ["ISO_IR 100"], False),
        ("Müller", [""], False),  # the default repertoire is ASCII, although pydicom reads it as Latin-1
        ("Müller", ["ISO_IR 6"], False),
        ("plain", [""], True),
    ],
)
def test_representable(text: str, terms: list[str], expected: bool) -> None:
    assert representable(text, terms) is expected


def test_answer_in_query_character_set_when_representable() -> None:
    assert answer_terms(["Müller^Jürgen"], ["ISO_IR 100"]) == ["ISO_IR 100"]


def test_answer_in_utf8_when_query_character_set_cannot_hold_it() -> None:
    assert answer_terms(["Müller", "Иванов"], ["ISO_IR 100"]) == ["ISO_IR 192"]


def test_answer_to_query_without_character_set() -> None:
    assert answer_terms(["Doe^John"], None) is None
    assert answer_terms(["Müller"], None) == ["ISO_IR 192"]


def test_ascii_answer_keeps_the_query_character_set() -> None:
    assert answer_terms(["Doe^John"], ["ISO_IR 100"]) == ["ISO_IR 100"]


def test_texts_include_person_name_groups_and_nested_values() -> None:
    document = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada", "Ideographic": "山田"}]},
        "00400100": {"vr": "SQ", "Value": [{"00400007": {"vr": "LO", "Value": ["Ωμέγα"]}}]},
        "00101030": {"vr": "DS", "Value": [70]},
    }
    assert sorted(texts(document)) == sorted(["Yamada", "山田", "Ωμέγα"])


@pytest.mark.parametrize(
    ("query", "name"),
    [
        (["ISO_IR 100"], "Müller^Jürgen"),
        (["ISO_IR 144"], "Иванов^Иван"),
        (["ISO_IR 126"], "Παπαδόπουλος^Νίκος"),
        (["ISO_IR 138"], "שרון^דוד"),
        (["ISO_IR 166"], "สมชาย^ใจดี"),
        (["ISO_IR 13"], "ﾔﾏﾀﾞ^ﾀﾛｳ"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        (["ISO_IR 100"], "Иванов^Иван"),  # not Latin-1: answered in UTF-8
        (None, "Müller^Jürgen"),
    ],
)
def test_answers_survive_encoding_without_losing_a_character(query: list[str] | None, name: str) -> None:
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), name.split("="), strict=False))
    answer = with_character_set({"00100010": {"vr": "PN", "Value": [groups]}}, query)
    ds = dicom_json_to_dataset(answer)
    for implicit in (True, False):
        wire = encode(ds, implicit, True)
        assert wire
        received = decode(BytesIO(wire), implicit, True)
        received.decode()
        assert str(received.PatientName) == name
    declared = answer["00080005"]["Value"]
    assert declared == (query if query and representable(name, query) else ["ISO_IR 192"])


def test_stored_character_set_is_replaced_by_the_answer_one() -> None:
    stored = {"00080005": {"vr": "CS", "Value": ["ISO_IR 100"]}, "00100020": {"vr": "LO", "Value": ["P1"]}}
    assert with_character_set(stored, None) == {"00100020": {"vr": "LO", "Value": ["P1"]}}


def test_a_name_whose_two_byte_character_holds_a_delimiter_byte_is_answered_in_utf8() -> None:
    # JIS X 0212 writes U+0120 as the bytes "*=": a person name's reader splits component groups on "=",
    # so in ISO 2022 IR 159 the name would come back broken (found by test_fuzz_charsets).
    query = ["", "ISO 2022 IR 159"]
    assert representable("Ġ", query) is False
    assert answer_terms(["^Ġ"], query) == ["ISO_IR 192"]
