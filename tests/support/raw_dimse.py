"""A raw DICOM Upper Layer client over a plain socket, for tests that must send what no real SCU would.

pynetdicom's SCU only sends well-formed PDUs and datasets it encoded itself; a fuzzing test needs to send
arbitrary identifier bytes, lying PDU lengths, unknown PDU types or nothing at all. This client builds the
PDUs of PS3.8 9.3 by hand (A-ASSOCIATE-RQ, P-DATA-TF, A-RELEASE-RQ, A-ABORT), the C-FIND-RQ and C-CANCEL-RQ
command sets of PS3.7 9.3.2 / 9.3.2.3 (always Implicit VR Little Endian, PS3.7 6.3.1), and reads whatever
comes back with a socket timeout, so that a server which stops answering fails the test instead of hanging.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MWL_FIND = "1.2.840.10008.5.1.4.31"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1.99"

# PDU types (PS3.8 9.3.1)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF = 0x01, 0x02, 0x03, 0x04
RELEASE_RQ, RELEASE_RP, ABORT = 0x05, 0x06, 0x07

# DIMSE command fields (PS3.7 E.1)
C_FIND_RQ, C_FIND_RSP, C_CANCEL_RQ = 0x0020, 0x8020, 0x0FFF
NO_DATASET = 0x0101
PENDING = frozenset({0xFF00, 0xFF01})

# Explicit VR Little Endian: these VRs have a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
UNDEFINED = 0xFFFFFFFF


# --------------------------------------------------------------------------------------------------------
# Datasets and command sets, byte by byte


def uid_bytes(uid: str) -> bytes:
    """A UID value padded with NUL to an even length (PS3.5 9.1)."""
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def element(tag: int, vr: str, value: bytes, *, explicit: bool, length: int | None = None) -> bytes:
    """One data element; `length` overrides the encoded length (to lie about it)."""
    size = (len(value) if length is None else length) & 0xFFFFFFFF
    group, elem = tag >> 16, tag & 0xFFFF
    if not explicit:
        return struct.pack("<HHI", group, elem, size) + value
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, elem, vr.encode("ascii"), 0, size) + value
    return struct.pack("<HH2sH", group, elem, vr.encode("ascii"), size & 0xFFFF) + value


def item(content: bytes, *, undefined: bool = False) -> bytes:
    """A sequence item (FFFE,E000), with a defined length or closed by an item delimiter."""
    if undefined:
        return (
            struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + content + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        )
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def sequence(tag: int, items: Iterable[bytes], *, explicit: bool, undefined: bool = False) -> bytes:
    """A sequence element holding already encoded items (see `item`)."""
    body = b"".join(items)
    if undefined:
        return element(tag, "SQ", body, explicit=explicit, length=UNDEFINED) + struct.pack(
            "<HHI", 0xFFFE, 0xE0DD, 0
        )
    return element(tag, "SQ", body, explicit=explicit)


def command_set(elements: Sequence[tuple[int, str, bytes]]) -> bytes:
    """An Implicit VR Little Endian command set led by its CommandGroupLength (0000,0000)."""
    body = b"".join(element(tag, vr, value, explicit=False) for tag, vr, value in elements)
    return element(0x00000000, "UL", struct.pack("<I", len(body)), explicit=False) + body


def c_find_rq(message_id: int, sop_class: str = MWL_FIND, *, has_dataset: bool = True) -> bytes:
    return command_set(
        [
            (0x00000002, "UI", uid_bytes(sop_class)),
            (0x00000100, "US", struct.pack("<H", C_FIND_RQ)),
            (0x00000110, "US", struct.pack("<H", message_id & 0xFFFF)),
            (0x00000700, "US", struct.pack("<H", 0)),
            (0x00000800, "US", struct.pack("<H", 0x0001 if has_dataset else NO_DATASET)),
        ]
    )


def c_cancel_rq(message_id: int) -> bytes:
    return command_set(
        [
            (0x00000100, "US", struct.pack("<H", C_CANCEL_RQ)),
            (0x00000120, "US", struct.pack("<H", message_id & 0xFFFF)),
            (0x00000800, "US", struct.pack("<H", NO_DATASET)),
        ]
    )


def read_command(data: bytes) -> dict[int, bytes]:
    """The elements of an Implicit VR Little Endian command set, by tag (values undecoded)."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(data):
        group, elem, size = struct.unpack_from("<HHI", data, offset)
        found[group << 16 | elem] = data[offset + 8 : offset + 8 + size]
        offset += 8 + size
    return found


def command_us(command: dict[int, bytes], tag: int) -> int | None:
    value = command.get(tag)
    return struct.unpack("<H", value[:2])[0] if value is not None and len(value) >= 2 else None


# --------------------------------------------------------------------------------------------------------
# PDUs


def pdu(pdu_type: int, body: bytes, *, length: int | None = None) -> bytes:
    """A PDU: type, reserved byte, 4-byte big-endian length (which `length` may falsify), body."""
    return struct.pack(">BBI", pdu_type, 0, len(body) if length is None else length) + body


def _sub_item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def presentation_context(context_id: int, abstract_syntax: str, transfer_syntaxes: Sequence[str]) -> bytes:
    body = struct.pack(">BBBB", context_id, 0, 0, 0) + _sub_item(0x30, abstract_syntax.encode("ascii"))
    body += b"".join(_sub_item(0x40, ts.encode("ascii")) for ts in transfer_syntaxes)
    return _sub_item(0x20, body)


# Context 1: MWL FIND in Implicit VR LE; 3: MWL FIND in Explicit VR LE; 5: Verification.
DEFAULT_CONTEXTS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, MWL_FIND, (IMPLICIT_VR_LE,)),
    (3, MWL_FIND, (EXPLICIT_VR_LE,)),
    (5, VERIFICATION, (IMPLICIT_VR_LE,)),
)


def associate_rq(
    *,
    calling: str = "FUZZSCU",
    called: str = "ORTHANC",
    contexts: Sequence[tuple[int, str, Sequence[str]]] = DEFAULT_CONTEXTS,
    max_length: int = 65536,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) proposing `contexts` (id, abstract syntax, transfer syntaxes)."""
    user_info = _sub_item(0x51, struct.pack(">I", max_length)) + _sub_item(
        0x52, IMPLEMENTATION_CLASS_UID.encode("ascii")
    )
    body = struct.pack(">HH16s16s32s", 1, 0, called.encode().ljust(16), calling.encode().ljust(16), b"")
    body += _sub_item(0x10, APPLICATION_CONTEXT.encode("ascii"))
    body += b"".join(presentation_context(*context) for context in contexts)
    body += _sub_item(0x50, user_info)
    return pdu(ASSOCIATE_RQ, body)


def p_data(values: Sequence[tuple[int, int, bytes]]) -> bytes:
    """A P-DATA-TF PDU of presentation data values (context id, message control header, fragment)."""
    body = b"".join(struct.pack(">IBB", len(data) + 2, cid, control) + data for cid, control, data in values)
    return pdu(P_DATA_TF, body)


def message(context_id: int, command: bytes, dataset: bytes | None, max_pdu: int) -> bytes:
    """A DIMSE message as P-DATA-TF PDUs: the command, then the dataset in fragments of at most max_pdu."""
    out = p_data([(context_id, 0x03, command)])
    if dataset is not None:
        room = max(max_pdu - 12, 2) if max_pdu else len(dataset) or 1
        chunks = [dataset[i : i + room] for i in range(0, len(dataset), room)] or [b""]
        for index, chunk in enumerate(chunks):
            out += p_data([(context_id, 0x02 if index == len(chunks) - 1 else 0x00, chunk)])
    return out


RELEASE_RQ_PDU = pdu(RELEASE_RQ, b"\0\0\0\0")
ABORT_PDU = pdu(ABORT, b"\0\0\0\0")


# --------------------------------------------------------------------------------------------------------
# The client


@dataclass
class Pdu:
    type: int
    body: bytes


@dataclass
class FindResult:
    """What a C-FIND got: its statuses in order and pending identifiers; `ended` when no final status came.

    `others` holds (message id being responded to, command field, status) of responses to other messages
    read meanwhile, as when a mangled request was answered before it.
    """

    statuses: list[int] = field(default_factory=list)
    identifiers: list[bytes] = field(default_factory=list)
    others: list[tuple[int | None, int | None, int | None]] = field(default_factory=list)
    ended: str | None = None  # "abort" (A-ABORT received) or "closed" (connection closed) before a final

    @property
    def final(self) -> int | None:
        return self.statuses[-1] if self.statuses and self.statuses[-1] not in PENDING else None


class ProtocolError(AssertionError):
    """The server sent something a DICOM peer must not send."""


class RawClient:
    """One TCP connection to the SCP. Every read honours `timeout`: a silent server raises TimeoutError."""

    def __init__(self, port: int, *, timeout: float = 5.0, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.peer_max_pdu = 0
        self.accepted: dict[int, str] = {}  # context id -> transfer syntax
        self._buffer = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def abort_connection(self) -> None:
        """Drop the connection without a word: a TCP reset instead of an orderly close."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exactly(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = self.sock.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                return None
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def read_pdu(self) -> Pdu | None:
        """The next PDU, None when the server closed the connection (a reset counts as closed)."""
        try:
            header = self._read_exactly(6)
            if header is None:
                return None
            pdu_type, _, length = struct.unpack(">BBI", header)
            body = self._read_exactly(length)
        except ConnectionResetError:
            return None
        if body is None:
            return None
        return Pdu(pdu_type, body)

    def read_until_closed(self) -> list[Pdu]:
        """Every PDU until the server closes the connection (TimeoutError if it neither sends nor closes)."""
        received: list[Pdu] = []
        while (one := self.read_pdu()) is not None:
            received.append(one)
            if len(received) > 1000:
                raise ProtocolError("the server keeps sending PDUs")
        return received

    def associate(self, request: bytes | None = None) -> Pdu | None:
        """Send an A-ASSOCIATE-RQ, return the answer; on an A-ASSOCIATE-AC note the accepted contexts."""
        self.send(request if request is not None else associate_rq())
        answer = self.read_pdu()
        if answer is not None and answer.type == ASSOCIATE_AC:
            self._read_accept(answer.body)
        return answer

    def _read_accept(self, body: bytes) -> None:
        offset = 68  # protocol version, reserved, AE titles, reserved (PS3.8 9.3.3)
        while offset + 4 <= len(body):
            item_type, _, length = struct.unpack_from(">BBH", body, offset)
            value = body[offset + 4 : offset + 4 + length]
            if item_type == 0x21 and len(value) >= 4 and value[2] == 0:  # presentation context accepted
                syntax = value[4 + 4 : 4 + 4 + struct.unpack_from(">H", value, 6)[0]]
                self.accepted[value[0]] = syntax.decode("ascii").rstrip("\0")
            elif item_type == 0x50:
                sub = 0
                while sub + 4 <= len(value):
                    sub_type, _, sub_length = struct.unpack_from(">BBH", value, sub)
                    if sub_type == 0x51 and sub_length == 4:
                        self.peer_max_pdu = struct.unpack_from(">I", value, sub + 4)[0]
                    sub += 4 + sub_length
            offset += 4 + length

    def find(self, identifier: bytes | None, *, message_id: int, context_id: int = 1) -> FindResult:
        """Send one C-FIND-RQ with these identifier bytes and read every response up to the final one."""
        command = c_find_rq(message_id, has_dataset=identifier is not None)
        self.send(message(context_id, command, identifier, self.peer_max_pdu))
        return self.responses(message_id)

    def responses(self, message_id: int) -> FindResult:
        """Read responses up to the final C-FIND-RSP to `message_id`, an A-ABORT or a closed connection."""
        result = FindResult()
        command, dataset = b"", b""
        current: int | None = None  # the message id the dataset being read belongs to
        while True:
            received = self.read_pdu()
            if received is None or received.type == ABORT:
                result.ended = "closed" if received is None else "abort"
                return result
            if received.type != P_DATA_TF:
                raise ProtocolError(f"unexpected PDU type 0x{received.type:02X} during a C-FIND")
            for control, data in _values(received.body):
                if not control & 0x01:
                    dataset += data
                    if control & 0x02:
                        if current == message_id:
                            result.identifiers.append(dataset)
                            if result.statuses[-1] not in PENDING:
                                return result
                        dataset = b""
                    continue
                command += data
                if not control & 0x02:
                    continue
                fields = read_command(command)
                command = b""
                status = command_us(fields, 0x00000900)
                current = command_us(fields, 0x00000120)
                field_ = command_us(fields, 0x00000100)
                has_dataset = command_us(fields, 0x00000800) != NO_DATASET
                if current != message_id:
                    result.others.append((current, field_, status))
                    continue
                if field_ != C_FIND_RSP or status is None:
                    raise ProtocolError(f"a response to C-FIND {message_id} that is no C-FIND-RSP: {fields}")
                result.statuses.append(status)
                if status not in PENDING and not has_dataset:
                    return result

    def release(self) -> Pdu | None:
        self.send(RELEASE_RQ_PDU)
        return self.read_pdu()


def _values(body: bytes) -> Iterable[tuple[int, bytes]]:
    """(message control header, fragment) of each presentation data value of a P-DATA-TF body."""
    offset = 0
    while offset + 6 <= len(body):
        length = struct.unpack_from(">I", body, offset)[0]
        yield body[offset + 5], body[offset + 6 : offset + 4 + length]
        offset += 4 + length
