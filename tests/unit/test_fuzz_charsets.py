"""Property tests on the SCP's character sets, with hypothesis: any bytes in any declared character set are
read without error, and any stored text reaches the modality unchanged, whatever character set it asked in."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.charset import python_encoding
from pynetdicom.dsutils import decode, encode

from services.scp.charsets import (
    UTF8,
    answer_terms,
    decode_query,
    normalize_term,
    query_terms,
    representable,
    with_character_set,
)
from shared.dicom_json import dataset_from_tags, dicom_json_dict, dicom_json_to_dataset
from shared.matching import InvalidIdentifier
from tests.support import raw_dimse as rd
from tests.support.fuzz_cases import CHARSETS, ESCAPES

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each odd value

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TERMS = sorted(term for term in python_encoding if term)  # every defined term pydicom can decode

spellings = st.one_of(
    st.sampled_from(CHARSETS),
    st.sampled_from(TERMS),
    st.text(max_size=20),
    st.lists(st.sampled_from(CHARSETS) | st.sampled_from(TERMS) | st.text(max_size=12), max_size=3).map(
        "\\".join
    ),
)
text_bytes = st.lists(
    st.one_of(st.binary(max_size=12), st.sampled_from(ESCAPES), st.sampled_from([b"^", b"=", b"\\", b"Doe"])),
    max_size=6,
).map(b"".join)


def _even(value: bytes) -> bytes:
    return value + b" " if len(value) % 2 else value


@FAST
@given(spelling=spellings, names=st.lists(text_bytes, min_size=1, max_size=4), explicit=st.booleans())
def test_any_bytes_in_any_character_set_are_read(spelling: str, names: list[bytes], explicit: bool) -> None:
    """An undecodable byte becomes a replacement character; the query is answered, never refused for it."""
    declared = _even(spelling.encode("utf-8", "replace"))
    texts = [
        (0x00100010, "PN", names[0]),
        (0x00100020, "LO", names[-1]),
        (0x00080050, "SH", names[len(names) // 2]),
        (0x00400400, "LT", b"\\".join(names)),
    ]
    step = rd.element(0x00400007, "LO", _even(names[0]), explicit=explicit)
    raw = rd.element(0x00080005, "CS", declared, explicit=explicit)
    raw += b"".join(rd.element(tag, vr, _even(value), explicit=explicit) for tag, vr, value in texts)
    raw += rd.sequence(0x00400100, [rd.item(step)], explicit=explicit)
    try:
        identifier = decode(BytesIO(raw), not explicit, True)
    except ValueError:
        return  # pydicom's reader refuses a character set with a NUL inside: A900 before any decoding
    for default in ("ISO_IR 6", "ISO_IR 100", UTF8):
        terms = decode_query(identifier.copy(), default)
        assert terms is None or all(term in python_encoding for term in terms)


@FAST
@given(spelling=st.text(max_size=30))
def test_a_spelling_means_a_defined_term_or_nothing(spelling: str) -> None:
    term = normalize_term(spelling)
    assert term is None or term in python_encoding


# Stored text: what the REST API accepts in a name or a description (no control characters).
stored_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn"), blacklist_characters="\\^="), max_size=16
)


def _declared(terms: list[str]) -> list[str] | None:
    """The terms a query declaring `terms` is answered in, as the SCP reads them (services.scp.charsets)."""
    identifier = Dataset()
    identifier.add_new(0x00080005, "CS", "\\".join(terms).encode())
    return query_terms(identifier)


declared_terms = st.one_of(st.none(), st.lists(st.sampled_from(TERMS), min_size=1, max_size=3).map(_declared))


@FAST
@given(family=stored_text, given_name=stored_text, description=stored_text, query=declared_terms)
def test_an_answer_keeps_every_character_in_the_character_set_it_declares(
    family: str, given_name: str, description: str, query: list[str] | None
) -> None:
    # Leading and trailing spaces are padding, not text (PS3.5 6.2).
    family, given_name, description = family.strip(" "), given_name.strip(" "), description.strip(" ")
    name = f"{family}^{given_name}".rstrip("^")
    try:
        stored = dicom_json_dict(
            dataset_from_tags(
                {"PatientName": name or None, "RequestedProcedureDescription": description or None}
            )
        )
    except ValueError:
        return  # refused by the REST API (too long for its VR, ...): never stored
    answer: dict[str, Any] = with_character_set(stored, query)
    declared = answer.get("00080005", {}).get("Value")
    texts = [t for t in (name, description) if t]
    if declared is not None:
        assert all(representable(text, declared) for text in texts)
    assert answer_terms(texts, query) == declared
    dataset = dicom_json_to_dataset(answer)
    for implicit in (True, False):
        written = encode(dataset, implicit, True)
        assert written is not None
        received = decode(BytesIO(written), implicit, True)
        received.decode()
        assert str(received.get("PatientName") or "") == name
        assert str(received.get("RequestedProcedureDescription") or "") == description


def test_nesting_deeper_than_the_bound_is_refused_before_decoding() -> None:
    content = rd.element(0x00080100, "SH", b"X1", explicit=False)
    for _ in range(1500):
        content = rd.sequence(0x00400008, [rd.item(content)], explicit=False)
    identifier = decode(BytesIO(content), True, True)
    with pytest.raises(InvalidIdentifier, match="nested deeper"):
        decode_query(identifier, "ISO_IR 100")


def test_a_value_of_thousands_of_parts_is_refused_before_decoding() -> None:
    identifier = decode(BytesIO(rd.element(0x00100010, "PN", b"a\\" * 5000, explicit=False)), True, True)
    with pytest.raises(InvalidIdentifier, match="values"):
        decode_query(identifier, "ISO_IR 100")


@pytest.mark.parametrize(("spelling", "codec"), [("ISO_IR144", "iso8859_5"), ("ISOIR192", "utf-8")])
def test_a_misspelt_character_set_decodes_every_text_value(spelling: str, codec: str) -> None:
    """pydicom reads such a spelling as Latin-1; the SCP reads it as the character set it names."""
    value = "Иванов".encode(codec)
    raw = rd.element(0x00080005, "CS", _even(spelling.encode()), explicit=False)
    raw += rd.element(0x00100020, "LO", _even(value), explicit=False)
    raw += rd.sequence(
        0x00400100, [rd.item(rd.element(0x00400007, "LO", _even(value), explicit=False))], explicit=False
    )
    identifier = decode(BytesIO(raw), True, True)
    decode_query(identifier, "ISO_IR 100")
    assert identifier.PatientID == "Иванов"
    assert identifier.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription == "Иванов"


def test_kanji_asked_in_jis_x_0201_is_answered_in_utf8() -> None:
    """ISO_IR 13 holds half-width katakana only (Python's shift_jis codec holds much more)."""
    assert not representable("山田", ["ISO_IR 13"])
    assert representable("ﾔﾏﾀﾞ", ["ISO_IR 13"])
    assert answer_terms(["山田"], ["ISO_IR 13"]) == [UTF8]
