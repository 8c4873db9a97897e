"""Character sets: decode a query per its SpecificCharacterSet and pick the one each answer is sent in."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydicom import Dataset
from pydicom.charset import (
    STAND_ALONE_ENCODINGS,
    convert_encodings,
    decode_bytes,
    encode_string,
    python_encoding,
)
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import TEXT_VR_DELIMS, PersonName

from shared.matching import MAX_VALUES, InvalidIdentifier

SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
SCS_JSON = "00080005"
UTF8 = "ISO_IR 192"

# Terms that stand for the default repertoire (PS3.5 6.1.2.1): their characters are ASCII only, although
# pydicom decodes them leniently as Latin-1.
_ASCII_TERMS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
# Spellings seen in the field for terms that have no number to normalise.
_ALIASES = {
    "UTF8": UTF8,
    "UTF-8": UTF8,
    "ISOIR192": UTF8,
    "GB18030": "GB18030",
    "GBK": "GBK",
    "ISO2022GBK": "ISO 2022 GBK",
    "ISO202258": "ISO 2022 58",
}
_ISO_IR = re.compile(r"ISOIR(\d+)")
# Sequence nesting a query may have. Matching looks 4 levels deep (shared.matching.MAX_DEPTH); past a few
# hundred levels pydicom's recursive Dataset.decode fails, formatting the whole stack again at every level
# on its way out (seconds of CPU for a 30 kB query), so hostile nesting is refused before decoding. So are
# values of more than shared.matching.MAX_VALUES parts: pydicom spends ~20 µs on each (a PersonName each).
MAX_NESTING = 16
# Multi-byte sets that only extend the default repertoire (PS3.3 C.12.1.1.2): never the first term.
_EXTENSIONS_ONLY = frozenset({"ISO 2022 IR 87", "ISO 2022 IR 159"})
# Value representations whose values split on backslash (PS3.5 6.4); LT, ST, UT and UR hold one value.
_MULTI_VALUED_TEXT = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI"})
_ISO_2022 = re.compile(r"ISO2022IR(\d+)")
# Value representations whose values are character strings in DICOM JSON (PN values are objects).
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)


def normalize_term(term: str) -> str | None:
    """The defined term a (possibly misspelt) SpecificCharacterSet value means; None when unknown."""
    cleaned = term.strip().upper()
    if cleaned in python_encoding:
        return cleaned
    compact = re.sub(r"[\s_\-]", "", cleaned)
    if compact in _ALIASES:
        return _ALIASES[compact]
    if match := _ISO_2022.fullmatch(compact):
        candidate = f"ISO 2022 IR {int(match.group(1))}"
    elif match := _ISO_IR.fullmatch(compact):
        candidate = f"ISO_IR {int(match.group(1))}"
    else:
        return None
    return candidate if candidate in python_encoding else None


def query_terms(identifier: Dataset) -> list[str] | None:
    """The query's character set as defined terms, or None when it declares none (or only unknown ones)."""
    if SPECIFIC_CHARACTER_SET not in identifier:
        return None
    # The raw element, not identifier[...]: converting it would make pydicom warn about misspellings we fix.
    value = identifier.get_item(SPECIFIC_CHARACTER_SET).value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").split("\\")
    raw = [value] if isinstance(value, str) else list(value or [])
    if not any(str(v).strip() for v in raw):
        return None
    terms: list[str] = []
    for item in raw:
        term = normalize_term(str(item))
        if term is None:
            return None
        terms.append(term)
    if terms[0] in _EXTENSIONS_ONLY:
        terms.insert(0, "")  # what a modality declaring one alone means; pydicom cannot write it first
    return terms


def decode_query(identifier: Dataset, default_term: str) -> list[str] | None:
    """Decode every text value of the identifier in place, return its character set (None when absent).

    A query without SpecificCharacterSet that still carries 8-bit bytes is read in `default_term` (the
    configured DefaultEncoding), which is ASCII-compatible and so leaves plain ASCII queries unchanged.
    The SpecificCharacterSet element is removed afterwards: it describes the bytes, not a key to match.
    Raises InvalidIdentifier when sequences nest deeper than MAX_NESTING or a value has more than
    MAX_VALUES parts; pydicom's errors for values it cannot read propagate.
    """
    terms = query_terms(identifier)
    decode_with: list[str] = terms or [default_term]
    identifier.SpecificCharacterSet = decode_with[0] if len(decode_with) == 1 else decode_with
    # pydicom converts a raw element in the character set it was read with, the declared one, which it
    # reads as Latin-1 when misspelt ("ISO_IR144"): ours, before anything is converted.
    implicit, little_endian = identifier.original_encoding
    identifier.set_original_encoding(implicit, little_endian, convert_encodings(list(decode_with)))
    _check_shape(identifier)
    identifier.decode()
    del identifier[SPECIFIC_CHARACTER_SET]
    return terms


def _check_shape(identifier: Dataset) -> None:
    """Refuse deep nesting and huge multi-values before pydicom converts them; walks without recursion."""
    pending = [(identifier, 0)]
    while pending:
        dataset, depth = pending.pop()
        for tag in tuple(dataset.keys()):  # tags: iterating a Dataset would convert every element
            raw = dataset.get_item(tag)
            if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
                vr = raw.VR or _dictionary_vr(tag)
                if vr in _MULTI_VALUED_TEXT and raw.value.count(b"\\") >= MAX_VALUES:
                    raise InvalidIdentifier([int(tag)], f"More than {MAX_VALUES} values in {tag}")
            element = dataset[tag]
            if element.VR != "SQ" or not element.value:
                continue
            if depth >= MAX_NESTING:
                raise InvalidIdentifier(
                    [int(element.tag)], f"Sequences nested deeper than {MAX_NESTING} levels"
                )
            pending.extend((item, depth + 1) for item in element.value)


def _dictionary_vr(tag: BaseTag) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _codecs(terms: list[str]) -> list[str]:
    return ["ascii" if term in _ASCII_TERMS else python_encoding[term] for term in terms]


def representable(text: str, terms: list[str]) -> bool:
    """True when every character of text can be written in the character set `terms`.

    With code extensions (several terms) each character may come from any one of the sets; the writer
    switches with escape sequences (PS3.5 6.1.2.5). Python's codecs answer first; a round trip through
    pydicom, which writes the answer, settles it: it writes some sets narrower than Python's codec for them
    (ISO_IR 13 is JIS X 0201 only, not Shift JIS) and ignores ISO_IR 192, GB18030 and GBK among several.
    """
    if text.isascii():
        return True
    codecs = _codecs(terms)
    if not all(any(_encodes(char, codec) for codec in codecs) for char in set(text)):
        return False
    return _round_trips(text, terms)


def _round_trips(text: str, terms: list[str]) -> bool:
    # pydicom's own rule for stand-alone terms (it would warn on every call otherwise).
    if len(terms) > 1 and terms[0] in STAND_ALONE_ENCODINGS:
        terms = terms[:1]
    written = terms[:1] + [term for term in terms[1:] if term not in STAND_ALONE_ENCODINGS]
    encodings = convert_encodings(written)
    try:
        data = encode_string(text, encodings)
        padded = data + b" " if len(data) % 2 else data  # as the writer pads, inside any escape state
        if decode_bytes(padded, encodings, TEXT_VR_DELIMS).rstrip(" ") != text.rstrip(" "):
            return False
        # And as a person name, whose reader splits on the bytes of "=" and "^" before decoding: a
        # two-byte character holding one of them (JIS X 0212 has "*=" for U+0120) would come back broken.
        # A text that is no name and fails only this is answered in UTF-8, which is never wrong.
        name = PersonName(PersonName(text).encode(encodings), encodings)
        return str(name).rstrip(" ") == text.rstrip(" ")
    except (UnicodeError, ValueError, LookupError):
        return False


def _encodes(char: str, codec: str) -> bool:
    try:
        char.encode(codec)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def texts(document: dict[str, Any]) -> Iterator[str]:
    """Every character string value of a DICOM JSON dataset, nested sequences and PN components included."""
    for tag, element in document.items():
        if tag == SCS_JSON:
            continue
        vr = element.get("vr")
        for value in element.get("Value") or ():
            if vr == "SQ" and isinstance(value, dict):
                yield from texts(value)
            elif vr == "PN" and isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, str))
            elif vr in _TEXT_VRS and isinstance(value, str):
                yield value


def answer_terms(values: Iterable[str], query: list[str] | None) -> list[str] | None:
    """The character set to answer in: the query's when it can hold every value, else UTF-8.

    None means plain ASCII with no SpecificCharacterSet, for a query that declared none.
    """
    pending = [v for v in values if not v.isascii()]
    if not pending:
        return query
    if query is not None and all(representable(v, query) for v in pending):
        return query
    return [UTF8]


def with_character_set(document: dict[str, Any], query: list[str] | None) -> dict[str, Any]:
    """The answer with the SpecificCharacterSet it is written in (never a character dropped)."""
    terms = answer_terms(texts(document), query)
    answer = {k: v for k, v in document.items() if k != SCS_JSON}
    if terms is not None:
        answer[SCS_JSON] = {"vr": "CS", "Value": list(terms)}
    return answer
