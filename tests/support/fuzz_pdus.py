"""Seeded generators of hostile Upper Layer exchanges (PS3.8) for tests/integration/test_scp_fuzz.py: each
case is what a peer sends on a connection of its own, and how it then behaves."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Literal

from tests.support import raw_dimse as rd

Mode = Literal["reply", "eof", "close", "reset"]
Replies = frozenset[tuple[int, ...]]

AC, RJ, RP, ABORT = rd.ASSOCIATE_AC, rd.ASSOCIATE_RJ, rd.RELEASE_RP, rd.ABORT
# An invalid PDU where an association should start: an A-ABORT (PS3.8 AA-1), or a close after an A-ABORT.
ABORTED: Replies = frozenset({(ABORT,), ()})
# An A-ASSOCIATE-RQ that may be malformed: accepted (then released, by the test), rejected or aborted.
NEGOTIATED: Replies = frozenset({(AC, RP), (RJ,), (ABORT,), ()})


@dataclass(frozen=True)
class RawCase:
    """Bytes sent on a fresh connection, in chunks, then: wait for the server's reply (`reply`), half-close
    and read to the end (`eof`), close (`close`) or reset the connection (`reset`)."""

    name: str
    chunks: tuple[bytes, ...]
    mode: Mode
    associate_first: bool = False  # the chunks follow an accepted association
    replies: Replies | None = None  # the PDU types the server may answer with, in order; None: any proper


class PduFuzzer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.request = rd.associate_rq()

    def _bytes(self, low: int = 0, high: int = 64) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def garbage_after_request(self) -> RawCase:
        """A valid A-ASSOCIATE-RQ followed, in the same segment, by an unknown PDU or by random bytes."""
        if self.rng.random() < 0.5:  # a whole unknown PDU: the server must abort by itself
            unknown = rd.pdu(self.rng.randint(8, 255), b"")
            # The A-ASSOCIATE-AC may leave before the junk is read.
            replies = ABORTED | {(AC, ABORT)}
            return RawCase("junk-pdu-after-rq", (self.request + unknown,), "reply", replies=replies)
        # Random bytes may read as the start of a longer PDU, which the server rightly waits for: our EOF
        # then ends it.
        return RawCase("garbage-after-rq", (self.request + self._bytes(1, 200),), "eof")

    def length_lie(self) -> RawCase:
        body = self.request[6:]
        length = self.rng.choice(
            [0, 1, len(body) - 1, len(body) // 2, len(body) + 1, len(body) + 1000, 0xFFFFFFFF, 0x7FFFFFFF]
        )
        tail = self._bytes(0, 64) if self.rng.random() < 0.5 else b""
        return RawCase("length-lie", (rd.pdu(rd.ASSOCIATE_RQ, body, length=length) + tail,), "eof")

    def unknown_type(self) -> RawCase:
        """An unknown PDU type first: with no body the server must abort at once; with one, once it has
        read what it takes for a PDU (our EOF ends the wait)."""
        pdu_type = self.rng.choice([0x00, 0x08, 0x09, 0x10, 0x20, 0x7F, 0x80, 0xFF, self.rng.randint(8, 255)])
        if self.rng.random() < 0.5:
            return RawCase(f"unknown-type-{pdu_type:02x}", (rd.pdu(pdu_type, b""),), "reply", replies=ABORTED)
        return RawCase(f"unknown-type-{pdu_type:02x}-body", (rd.pdu(pdu_type, self._bytes(1, 64)),), "eof")

    def out_of_order(self) -> RawCase:
        """P-DATA, A-RELEASE, A-ASSOCIATE-AC/RJ or A-ABORT before any association."""
        choices = [
            rd.p_data([(1, 0x03, rd.c_find_rq(1))]),
            rd.RELEASE_RQ_PDU,
            rd.pdu(rd.RELEASE_RP, b"\0\0\0\0"),
            rd.pdu(rd.ASSOCIATE_AC, self.request[6:]),
            rd.pdu(rd.ASSOCIATE_RJ, b"\x00\x01\x01\x01"),
            rd.ABORT_PDU,
        ]
        return RawCase("before-association", (self.rng.choice(choices),), "reply", replies=ABORTED)

    def mangled_request(self) -> RawCase:
        """An A-ASSOCIATE-RQ with a mutated body (its PDU length kept true): AC, RJ or abort."""
        body = bytearray(self.request[6:])
        kind = self.rng.randrange(4)
        if kind == 0:
            for _ in range(self.rng.randint(1, 6)):
                body[self.rng.randrange(len(body))] = self.rng.randrange(256)
        elif kind == 1:
            at = self.rng.randrange(68, len(body))
            del body[at : at + self.rng.randint(1, 40)]
        elif kind == 2:
            at = self.rng.randrange(68, len(body) + 1)
            body[at:at] = (
                bytes(
                    [
                        self.rng.choice(
                            [
                                0x10,
                                0x20,
                                0x21,
                                0x30,
                                0x40,
                                0x50,
                                0x51,
                                0x52,
                                0x53,
                                0x54,
                                0x55,
                                0x56,
                                0x57,
                                0x58,
                                0x59,
                                0xFF,
                            ]
                        ),
                        0,
                    ]
                )
                + struct.pack(">H", self.rng.choice([0, 1, 4, 0xFFFF]))
                + self._bytes(0, 16)
            )
        else:
            return RawCase("odd-request", (self._odd_request(),), "reply", replies=NEGOTIATED)
        return RawCase("mangled-rq", (rd.pdu(rd.ASSOCIATE_RQ, bytes(body)),), "reply", replies=NEGOTIATED)

    def _odd_request(self) -> bytes:
        kind = self.rng.randrange(5)
        if kind == 0:
            return rd.associate_rq(contexts=())
        if kind == 1:
            return rd.associate_rq(
                contexts=[
                    (n * 2 + 1 & 0xFF, rd.MWL_FIND, (rd.IMPLICIT_VR_LE,))
                    for n in range(self.rng.choice([128, 200, 300]))
                ]
            )
        if kind == 2:
            return rd.associate_rq(max_length=self.rng.choice([0, 1, 6, 12, 0xFFFFFFFF]))
        if kind == 3:
            return rd.associate_rq(
                calling=self.rng.choice(["", " ", "\x00" * 16, "É" * 8]),
                called=self.rng.choice(["", "ORTHANC", "\x1b" * 16]),
            )
        return rd.associate_rq(
            contexts=[
                (
                    self.rng.choice([0, 2, 255]),
                    self.rng.choice(["", "1.2", "x" * 64, rd.MWL_FIND]),
                    (self.rng.choice(["", "1.2.840.10008.1.2.4.50", rd.IMPLICIT_VR_LE]),),
                )
            ]
        )

    def disconnect(self) -> RawCase:
        """The connection dropped (closed or reset) at a random point of an exchange."""
        mode: Mode = self.rng.choice(["close", "reset"])
        kind = self.rng.randrange(4)
        if kind == 0:
            return RawCase("drop-mid-rq", (self.request[: self.rng.randrange(len(self.request))],), mode)
        if kind == 1:
            return RawCase("drop-idle", (), mode)
        find = rd.message(1, rd.c_find_rq(1), b"\x10\x00\x20\x00\x00\x00\x00\x00", 16382)
        if kind == 2:
            return RawCase(
                "drop-mid-find", (find[: self.rng.randrange(1, len(find))],), mode, associate_first=True
            )
        return RawCase("drop-before-answers", (find,), mode, associate_first=True)

    def bad_p_data(self) -> RawCase:
        """Broken P-DATA-TF on an association: lying PDV lengths, unknown contexts, stray fragments."""
        command = rd.c_find_rq(1)
        kind = self.rng.randrange(6)
        if kind == 0:
            body = struct.pack(">IBB", self.rng.choice([0, 1, len(command) + 50, 0xFFFFFFFF]), 1, 3) + command
            chunk = rd.pdu(rd.P_DATA_TF, body)
        elif kind == 1:
            chunk = rd.p_data([(self.rng.choice([0, 2, 7, 255]), 3, command)])
        elif kind == 2:
            chunk = rd.p_data([(1, self.rng.choice([0x00, 0x02, 0xFC, 0xFF]), self._bytes(0, 40))])
        elif kind == 3:
            chunk = rd.pdu(rd.P_DATA_TF, b"")
        elif kind == 4:
            chunk = self.request  # a second A-ASSOCIATE-RQ on the association
        else:
            chunk = rd.pdu(rd.P_DATA_TF, self._bytes(1, 80))
        return RawCase("bad-p-data", (chunk, rd.RELEASE_RQ_PDU), "eof", associate_first=True)

    def trickle(self) -> RawCase:
        """A valid A-ASSOCIATE-RQ sent in small pieces: the server reassembles it and accepts."""
        size = self.rng.choice([1, 7, 33])
        pieces = tuple(self.request[i : i + size] for i in range(0, len(self.request), size))
        return RawCase("trickle", pieces, "reply", replies=frozenset({(AC, RP)}))

    def cases(self, count: int) -> list[RawCase]:
        makers = [
            self.garbage_after_request, self.length_lie, self.unknown_type, self.out_of_order,
            self.mangled_request, self.mangled_request, self.disconnect, self.disconnect, self.bad_p_data,
            self.bad_p_data, self.trickle,
        ]  # fmt: skip
        return [self.rng.choice(makers)() for _ in range(count)]
