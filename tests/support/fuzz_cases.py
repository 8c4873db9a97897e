"""Seeded generators of hostile C-FIND requests for tests/integration/test_scp_fuzz.py (PDUs: fuzz_pdus).

Identifiers (the bytes of a C-FIND-RQ's dataset: mutated, truncated, with wrong VRs, huge values, deep
sequences, odd character sets, several SPS items, lying lengths, unknown tags, garbage) and command sets
(the C-FIND-RQ itself mangled). Everything comes from one `random.Random`, so a seed names a corpus.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from tests.support import raw_dimse as rd

IMPLICIT, EXPLICIT = 1, 3  # presentation context ids of raw_dimse.DEFAULT_CONTEXTS
SPS = 0x00400100
A900 = frozenset({0xA900})
SUCCESS = frozenset({0x0000})

ALL_VRS = (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
    "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV",
)  # fmt: skip
# MWL keys (PS3.4 Table K.6-1), top level and SPS item, with their VRs.
KEYS = (
    (0x00100010, "PN"), (0x00100020, "LO"), (0x00080050, "SH"), (0x0020000D, "UI"), (0x00401001, "SH"),
    (0x00080090, "PN"), (0x00100030, "DA"), (0x00100040, "CS"), (0x00380010, "LO"), (0x00080201, "SH"),
    (0x00400001, "AE"), (0x00400002, "DA"), (0x00400003, "TM"), (0x00080060, "CS"), (0x00400006, "PN"),
    (0x00400007, "LO"), (0x00400009, "SH"), (0x00400010, "SH"), (0x00400011, "SH"), (0x00400020, "CS"),
    (0x0040A120, "DT"), (0x00080005, "CS"), (0x00321064, "SQ"), (0x00081110, "SQ"), (0x00400008, "SQ"),
)  # fmt: skip
# Selector Attribute Value tags (0072,00xx): one dictionary tag per VR, to send every VR with its own tag.
SELECTORS = {
    "AT": 0x00720060, "IS": 0x00720064, "OB": 0x00720065, "OF": 0x00720067, "LT": 0x00720068,
    "OW": 0x00720069, "UN": 0x0072006D, "ST": 0x0072006E, "UC": 0x0072006F, "UT": 0x00720070,
    "UR": 0x00720071, "DS": 0x00720072, "OD": 0x00720073, "FD": 0x00720074, "OL": 0x00720075,
    "FL": 0x00720076, "UL": 0x00720078, "SL": 0x0072007C, "SS": 0x0072007E, "OV": 0x00720081,
    "SV": 0x00720082, "UV": 0x00720083, "US": 0x00280010, "DT": 0x0040A120, "DA": 0x0040A121,
    "TM": 0x0040A122, "AS": 0x00101010, "PN": 0x00100010, "LO": 0x00100020, "SH": 0x00080050,
    "CS": 0x00080060, "AE": 0x00400001, "UI": 0x0020000D,
}  # fmt: skip
CHARSETS = (
    "ISO_IR 100", "ISO_IR 192", "ISO_IR 144", "ISO_IR 126", "ISO_IR 138", "ISO_IR 13", "ISO_IR 166",
    "ISO 2022 IR 87", "\\ISO 2022 IR 87", "ISO 2022 IR 6\\ISO 2022 IR 87\\ISO 2022 IR 159", "GB18030",
    "ISO 2022 IR 149", "utf-8", "ISO-IR 100", "ISO_IR100", "ISO_IR 999", "KLINGON", "", "\\", "\\\\\\",
    "ISO_IR 100\\ISO_IR 192", "ISO 2022 IR 58", "GBK", "ISO_IR 6", "ISO 2022 IR 13\\ISO 2022 IR 87",
    "ISO 2022 IR 100\\ISO 2022 IR 126", "ISO_IR 192\\ISO_IR 100", "ISO 2022 IR 999", "ISO_IR 0100",
)  # fmt: skip
ESCAPES = (b"\x1b$B", b"\x1b(B", b"\x1b(J", b"\x1b$)C", b"\x1b-A", b"\x1b-F", b"\x1b%G", b"\x1b", b"\x1b$(D")
TEXT_ALPHABET = "AZaz09^=*?\\-. ÄéЖ山\x00\x1b\t"
# Values a date, time or UID key must reject with A900 (PS3.4 C.2.2.2), whatever else the query holds.
INVALID_VALUES = (
    (0x00100030, "DA", "20251301"), (0x00100030, "DA", "20250101-20250102-20250103"),
    (0x00100030, "DA", "2025-"), (0x0020000D, "UI", "1.2.X"), (0x0020000D, "UI", "1." + "2" * 70),
    (0x00080201, "SH", "+9999"), (0x0040A120, "DT", "2025133"), (0x0040A121, "DA", "yesterday"),
    (0x0040A122, "TM", "2561"),
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One C-FIND request: identifier bytes (None: no dataset) in a context, or a command set of our own.

    `expect` narrows the final statuses allowed (None: any proper one). `command` replaces the C-FIND-RQ
    command set: such a case may end the association, and the SCP may ignore it (no answer at all).
    """

    name: str
    identifier: bytes | None
    context: int = IMPLICIT
    expect: frozenset[int] | None = None
    command: bytes | None = None
    cancel: bool = False


def encode(ds: Dataset, *, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _base_queries() -> list[Dataset]:
    everything = Dataset()
    everything.SpecificCharacterSet = "ISO_IR 192"
    for keyword in ("PatientName", "AccessionNumber", "StudyInstanceUID", "PatientBirthDate"):
        setattr(everything, keyword, "")
    everything.PatientID = "P3"  # two steps, a Cyrillic name: answers in UTF-8 without costing thousands
    step = Dataset()
    for keyword in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate"):
        setattr(step, keyword, "")
    step.ScheduledProcedureStepStartTime = ""
    step.ScheduledProcedureStepID = ""
    protocol = Dataset()
    protocol.CodeValue = ""
    protocol.CodingSchemeDesignator = ""
    step.ScheduledProtocolCodeSequence = [protocol]
    everything.ScheduledProcedureStepSequence = [step]

    specific = Dataset()
    specific.PatientName = "Doe^*"
    specific.PatientID = "P1"
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledProcedureStepStartDate = "20251014-20251015"
    step.ScheduledProcedureStepStartTime = "0800-1000"
    specific.ScheduledProcedureStepSequence = [step]

    latin = Dataset()
    latin.SpecificCharacterSet = "ISO_IR 100"
    latin.PatientName = "Müller*"
    latin.ReferencedStudySequence = [Dataset(), Dataset()]
    step = Dataset()
    step.ScheduledStationAETitle = "MR01\\CT01"
    latin.ScheduledProcedureStepSequence = [step]
    return [everything, specific, latin]


class IdentifierFuzzer:
    """Makes identifier and command-set cases from one random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.bases = [
            (encode(ds, implicit=i), IMPLICIT if i else EXPLICIT)
            for ds in _base_queries()
            for i in (True, False)
        ]

    # -- helpers ------------------------------------------------------------------------------------------

    def _base(self) -> tuple[bytes, int]:
        return self.rng.choice(self.bases)

    def _bytes(self, low: int = 0, high: int = 64) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def _text(self, high: int = 24) -> str:
        return "".join(self.rng.choice(TEXT_ALPHABET) for _ in range(self.rng.randint(0, high)))

    def _value(self) -> bytes:
        """A value of any shape: random bytes, odd lengths, text, numbers, repeated backslashes."""
        pick = self.rng.randrange(6)
        if pick == 0:
            return self._bytes()
        if pick == 1:
            return self._text().encode("utf-8")
        if pick == 2:
            return struct.pack("<" + self.rng.choice("HhIiQqfd"), 0) + self._bytes(0, 3)
        if pick == 3:
            return b"\\" * self.rng.randint(1, 40)
        if pick == 4:
            return self.rng.choice([b"*", b"?", b"", b" ", b"\0", b"-", b"=", b"^^^^"])
        return str(self.rng.uniform(-1e30, 1e30)).encode()

    def _elem(self, tag: int, vr: str, value: bytes, context: int, length: int | None = None) -> bytes:
        return rd.element(tag, vr, value, explicit=context == EXPLICIT, length=length)

    def _query(self, context: int, elements: list[bytes], sps_items: list[bytes] | None = None) -> bytes:
        """Top-level elements plus an SPS sequence, elements in the order given (sorted or not)."""
        explicit = context == EXPLICIT
        out = b"".join(elements)
        if sps_items is not None:
            out += rd.sequence(SPS, (rd.item(i) for i in sps_items), explicit=explicit)
        return out

    # -- identifier families --------------------------------------------------------------------------------

    def mutated(self) -> Case:
        data, context = self._base()
        buffer = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            self.rng.choice(
                [self._flip, self._overwrite, self._insert, self._delete, self._duplicate, self._splice]
            )(buffer)
        return Case("mutated", bytes(buffer), context)

    def _flip(self, buffer: bytearray) -> None:
        if buffer:
            for _ in range(self.rng.randint(1, 8)):
                buffer[self.rng.randrange(len(buffer))] ^= 1 << self.rng.randrange(8)

    def _overwrite(self, buffer: bytearray) -> None:
        if len(buffer) < 4:
            return
        size = self.rng.choice([2, 4])
        value = self.rng.choice(
            [0, 1, 0xFF, 0xFFFF, 0xFFFE, 0x7FFF, 0xFFFFFFFF, 0x7FFFFFFF, len(buffer), 0xE000]
        )
        at = self.rng.randrange(len(buffer) - size + 1)
        buffer[at : at + size] = (value & (0xFFFF if size == 2 else 0xFFFFFFFF)).to_bytes(size, "little")

    def _insert(self, buffer: bytearray) -> None:
        at = self.rng.randint(0, len(buffer))
        buffer[at:at] = self._bytes(1, 16)

    def _delete(self, buffer: bytearray) -> None:
        if buffer:
            at = self.rng.randrange(len(buffer))
            del buffer[at : at + self.rng.randint(1, 16)]

    def _duplicate(self, buffer: bytearray) -> None:
        if buffer:
            at = self.rng.randrange(len(buffer))
            piece = buffer[at : at + self.rng.randint(1, 32)]
            to = self.rng.randint(0, len(buffer))
            buffer[to:to] = piece

    def _splice(self, buffer: bytearray) -> None:
        other, _ = self._base()
        at = self.rng.randint(0, len(buffer))
        buffer[at:] = other[self.rng.randint(0, len(other)) :]

    def truncated(self) -> Case:
        data, context = self._base()
        return Case("truncated", data[: self.rng.randrange(len(data))], context)

    def wrong_vr(self) -> Case:
        """A key or a selector tag declared with another VR (explicit), or a value of the wrong shape."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        tag, true_vr = self.rng.choice(KEYS) if self.rng.random() < 0.6 else self._selector()
        vr = self.rng.choice(ALL_VRS) if context == EXPLICIT else true_vr
        value = self._value()
        if vr == "SQ" and self.rng.random() < 0.5:
            value = rd.item(self._value())
        element = self._elem(tag, vr, value, context)
        inside = self.rng.random() < 0.4
        top = [self._elem(0x00100020, "LO", b"P1", context)]
        if inside:
            return Case("wrong-vr-in-sps", self._query(context, top, [element]), context)
        return Case("wrong-vr", self._query(context, [*top, element], [b""]), context)

    def _selector(self) -> tuple[int, str]:
        vr = self.rng.choice(sorted(SELECTORS))
        return SELECTORS[vr], vr

    def every_vr(self) -> Case:
        """A dictionary tag of each VR with a random value (its right VR): decoding and matching every VR."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        tag, vr = self._selector()
        return Case(
            f"vr-{vr}", self._query(context, [self._elem(tag, vr, self._value(), context)], [b""]), context
        )

    def huge(self) -> Case:
        """A huge value: long text, thousands of values, wildcards, ranges (implicit VR: 4-byte lengths)."""
        size = self.rng.choice([1_000, 10_000, 65_534, 200_000] * 8 + [1_000_000])
        tag, vr = self.rng.choice(
            [(0x00100010, "PN"), (0x00100020, "LO"), (0x0020000D, "UI"), (0x00400001, "AE"),
             (0x0040A120, "DT"), (0x00100030, "DA"), (0x00400003, "TM"), (0x00400400, "LT")]
        )  # fmt: skip
        unit = self.rng.choice(["A", "*", "?", "*a", "\\", "a\\", "1.", "2025-", "-", "=", "^", "Ж"])
        value = (unit * (size // len(unit.encode()) + 1)).encode("utf-8")[:size]
        if len(value) % 2:
            value += b" "
        element = self._elem(tag, vr, value, IMPLICIT)
        in_sps = tag in (0x00400001, 0x00400003) or self.rng.random() < 0.3
        top = [self._elem(0x00080005, "CS", b"ISO_IR 192", IMPLICIT)]
        if in_sps:
            return Case(f"huge-{vr}-{size}", self._query(IMPLICIT, top, [element]))
        return Case(f"huge-{vr}-{size}", self._query(IMPLICIT, [*top, element], [b""]))

    def deep(self) -> Case:
        """Sequences nested deep, in the SPS item or a code sequence, some of undefined length."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        depth = self.rng.choice([2, 3, 4, 5, 6, 8, 12, 30, 100, 400, 1500])
        undefined = self.rng.random() < 0.5
        tag = self.rng.choice([SPS, 0x00400008, 0x00081110, 0x00321064])
        leaf = self._elem(0x00080100, "SH", self.rng.choice([b"", b"X1", b"*"]), context)
        content = leaf
        for _ in range(depth):
            content = rd.sequence(
                tag,
                [rd.item(content, undefined=undefined)],
                explicit=context == EXPLICIT,
                undefined=undefined,
            )
        return Case(
            f"deep-{depth}",
            self._query(context, [self._elem(0x00100020, "LO", b"", context), content]),
            context,
        )

    def charset(self) -> Case:
        """A (misspelt, unknown, multi-valued or binary) SpecificCharacterSet with undecodable text."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        scs = self.rng.choice(CHARSETS).encode("latin-1") if self.rng.random() < 0.85 else self._bytes(0, 20)
        if len(scs) % 2:
            scs += b" "
        name = b"".join(
            self.rng.choice([self._bytes(0, 6), self.rng.choice(ESCAPES), b"^", b"=", b"Doe"])
            for _ in range(self.rng.randint(0, 8))
        )
        if len(name) % 2:
            name += b" "
        step = self._elem(0x00400007, "LO", self.rng.choice(ESCAPES) + self._bytes(0, 8), context)
        elements = [self._elem(0x00080005, "CS", scs, context), self._elem(0x00100010, "PN", name, context)]
        return Case("charset", self._query(context, elements, [step]), context)

    def several_sps(self) -> Case:
        """Two or more SPS items: A900 whatever they hold (PS3.4 C.2.2.2.6, one item per query sequence)."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        items = [
            self.rng.choice(
                [
                    b"",
                    self._elem(0x00080060, "CS", b"CT", context),
                    self._elem(0x00400001, "AE", b"", context),
                ]
            )
            for _ in range(self.rng.randint(2, 5))
        ]
        top = [self._elem(0x00100020, "LO", self.rng.choice([b"", b"P1", b"*"]), context)]
        return Case("several-sps", self._query(context, top, items), context, expect=A900)

    def duplicate_empty_references(self) -> Case:
        """Duplicate empty ReferencedStudySequence items are tolerated (modalities send them); full: A900."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        full = self.rng.random() < 0.5
        inner = self._elem(0x00081150, "UI", b"1.2.3\0", context) if full else b""
        references = rd.sequence(0x00081110, [rd.item(inner) for _ in range(3)], explicit=context == EXPLICIT)
        query = self._query(context, [self._elem(0x00080050, "SH", b"", context), references], [b""])
        return Case("references", query, context, expect=A900 if full else SUCCESS)

    def invalid_value(self) -> Case:
        """A value no matching type accepts, in an otherwise valid query: A900 naming it."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        tag, vr, text = self.rng.choice(INVALID_VALUES)
        value = text.encode() + (b" " if len(text) % 2 else b"")
        return Case(
            "invalid-value",
            self._query(context, [self._elem(tag, vr, value, context)], [b""]),
            context,
            expect=A900,
        )

    def random_values(self) -> Case:
        """Well-formed elements with random values: ranges, wildcards, UID lists, control characters."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        chosen = sorted({self.rng.choice(KEYS) for _ in range(self.rng.randint(1, 6))})
        top: list[bytes] = []
        step: list[bytes] = []
        for tag, vr in chosen:
            if vr == "SQ":
                continue
            value = self._text(30).encode("utf-8") if self.rng.random() < 0.7 else self._range_like()
            if len(value) % 2:
                value += b" "
            element = self._elem(tag, vr, value, context)
            (step if (tag >> 16) == 0x0040 and tag != 0x00401001 else top).append(element)
        top.insert(0, self._elem(0x00080005, "CS", b"ISO_IR 192", context))
        return Case("random-values", self._query(context, top, [b"".join(step)]), context)

    def _range_like(self) -> bytes:
        parts = [
            "2025",
            "1014",
            "20251014",
            "-",
            "0800",
            "235960",
            ".123456",
            "+0100",
            "-0500",
            "*",
            "?",
            "\\",
        ]
        return "".join(self.rng.choice(parts) for _ in range(self.rng.randint(1, 6))).encode()

    def bad_length(self) -> Case:
        """An element, item or sequence whose length lies (odd, too long, undefined on a text VR, ...)."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        lie = self.rng.choice([1, 3, 7, 100, 0xFFFF, 0x7FFFFFFF, rd.UNDEFINED, 0xFFFFFFFE])
        kind = self.rng.randrange(4)
        name = self._elem(0x00100010, "PN", b"Doe^John", context, length=8 + lie if kind == 0 else None)
        if kind == 0:
            lied = self._elem(0x00100020, "LO", b"P1", context, length=lie)
            return Case("bad-length-element", self._query(context, [lied, name]), context)
        if kind == 1:
            bad_item = struct.pack("<HHI", 0xFFFE, 0xE000, lie) + self._elem(0x00080060, "CS", b"CT", context)
            sequence = rd.element(SPS, "SQ", bad_item, explicit=context == EXPLICIT)
            return Case("bad-length-item", name + sequence, context)
        if kind == 2:
            content = rd.item(self._elem(0x00080060, "CS", b"CT", context))
            sequence = rd.element(SPS, "SQ", content, explicit=context == EXPLICIT, length=lie)
            return Case("bad-length-sequence", name + sequence, context)
        delimiters = self.rng.choice(
            [struct.pack("<HHI", 0xFFFE, g, self.rng.choice([0, lie])) for g in (0xE00D, 0xE0DD, 0xE000)]
        )
        return Case(
            "stray-delimiter", name + delimiters + self._elem(0x00100020, "LO", b"P1", context), context
        )

    def odd_tags(self) -> Case:
        """Private tags, group lengths, command and meta elements, item tags at the top, tags out of order."""
        context = self.rng.choice([IMPLICIT, EXPLICIT])
        elements = []
        for _ in range(self.rng.randint(1, 5)):
            group = self.rng.choice(
                [
                    0x0000,
                    0x0002,
                    0x0008,
                    0x0009,
                    0x0010,
                    0x0011,
                    0x0040,
                    0x7FE0,
                    0xFFFE,
                    0xFFFF,
                    self.rng.randrange(0x10000),
                ]
            )
            element_number = self.rng.choice(
                [0x0000, 0x0010, 0x1000, 0xE000, 0xE00D, self.rng.randrange(0x10000)]
            )
            vr = self.rng.choice(ALL_VRS) if context == EXPLICIT else "UN"
            value = self._value() if vr != "SQ" else rd.item(b"")
            elements.append(self._elem(group << 16 | element_number, vr, value, context))
        if self.rng.random() < 0.5:
            elements.sort()
        return Case("odd-tags", self._query(context, elements, [b""]), context)

    def garbage(self) -> Case:
        return Case("garbage", self._bytes(0, 600), self.rng.choice([IMPLICIT, EXPLICIT]))

    def special(self) -> Case:
        """No identifier at all, an empty one, one of only a character set, and a C-CANCEL right away."""
        kind = self.rng.randrange(5)
        if kind == 0:
            return Case("no-identifier", None)
        if kind == 1:
            return Case("empty-identifier", b"", expect=A900)
        if kind == 2:
            only = self._elem(0x00080005, "CS", b"ISO_IR 100", IMPLICIT) + self._elem(
                0x00080052, "CS", b"WORKLIST", IMPLICIT
            )
            return Case("no-key", only, expect=A900)
        data, context = self._base()
        return Case("cancelled", data, context, cancel=True)

    # -- command sets ------------------------------------------------------------------------------------

    def command(self) -> Case:
        """A mangled C-FIND-RQ: other command fields or SOP classes, missing elements, flipped bytes."""
        data, context = self._base()
        kind = self.rng.randrange(5)
        fields: list[tuple[int, str, bytes]] = [
            (0x00000002, "UI", rd.uid_bytes(rd.MWL_FIND)),
            (0x00000100, "US", struct.pack("<H", rd.C_FIND_RQ)),
            (0x00000110, "US", struct.pack("<H", 1)),
            (0x00000700, "US", struct.pack("<H", 0)),
            (0x00000800, "US", struct.pack("<H", 1)),
        ]
        if kind == 0:
            field = self.rng.choice(
                [
                    0x0001,
                    0x0010,
                    0x0021,
                    0x0030,
                    0x0100,
                    0x0110,
                    0x0140,
                    0x8020,
                    0x8030,
                    0x0FFF,
                    self.rng.randrange(0x10000),
                ]
            )
            fields[1] = (0x00000100, "US", struct.pack("<H", field))
        elif kind == 1:
            uid = self.rng.choice(["1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.2.1.1", "1.2.3", "", "x" * 65])
            fields[0] = (0x00000002, "UI", rd.uid_bytes(uid))
        elif kind == 2:
            del fields[self.rng.randrange(len(fields))]
        elif kind == 3:
            index = self.rng.randrange(len(fields))
            tag, vr, _ = fields[index]
            fields[index] = (tag, vr, self._bytes(0, 9))
        command = rd.command_set(fields)
        if kind == 4:
            buffer = bytearray(command)
            self._flip(buffer) if self.rng.random() < 0.5 else self._overwrite(buffer)
            command = bytes(buffer)
        return Case("command", data, context, command=command)

    def cases(self, count: int) -> list[Case]:
        """`count` identifier cases in a seeded mix of every family (about 3% command-set cases)."""
        weighted: list[tuple[Callable[[], Case], int]] = [
            (self.mutated, 26), (self.truncated, 8), (self.wrong_vr, 10), (self.every_vr, 6),
            (self.huge, 2), (self.deep, 4), (self.charset, 8), (self.several_sps, 4),
            (self.duplicate_empty_references, 2), (self.invalid_value, 3), (self.random_values, 10),
            (self.bad_length, 6), (self.odd_tags, 5), (self.garbage, 3), (self.special, 2), (self.command, 1),
        ]  # fmt: skip
        makers = [maker for maker, weight in weighted for _ in range(weight)]
        return [self.rng.choice(makers)() for _ in range(count)]
