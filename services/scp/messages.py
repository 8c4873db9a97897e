"""DIMSE messages on an association (PS3.7): request command sets decoded (by pydicom, once per distinct
command set), messages assembled from P-DATA fragments (PS3.8 E.2), and the response command sets the SCP
sends, encoded by pynetdicom."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import Dataset
from pynetdicom.dimse_messages import C_ECHO_RSP, C_FIND_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND
from pynetdicom.dsutils import decode, encode

from services.scp.upper_layer import SERVICE_USER, ProtocolError

# Identifier bytes kept for one C-FIND: beyond it the rest is read and dropped (the query is refused).
MAX_IDENTIFIER_BYTES = 32 * 1024
# DIMSE command fields (PS3.7 E.1) and the CommandDataSetType that means "no data set" (PS3.7 E.2).
C_FIND_RQ_FIELD, C_ECHO_RQ_FIELD, C_CANCEL_RQ_FIELD = 0x0020, 0x0030, 0x0FFF
NO_DATASET = 0x0101
# Command sets kept decoded, by their bytes: a modality sends the same C-FIND-RQ command every time.
_COMMANDS = 1024
_COMMAND_CACHE_BYTES = 1024


def find_response(message_id: int, sop_class: str, status: int | Dataset) -> bytes:
    """A final C-FIND-RSP command set (no identifier), as pynetdicom encodes it; a status Dataset brings its
    ErrorComment and OffendingElement (PS3.7 C.4.1.1)."""
    if isinstance(status, int):
        return _plain_find_response(message_id, sop_class, status)
    return _find_response(message_id, sop_class, status)


@functools.lru_cache(maxsize=256)
def _plain_find_response(message_id: int, sop_class: str, status: int) -> bytes:
    """Success or Cancel: modalities mostly number their requests 1, so this is encoded once."""
    return _find_response(message_id, sop_class, status)


def _find_response(message_id: int, sop_class: str, status: int | Dataset) -> bytes:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    if isinstance(status, Dataset):
        for elem in status:
            if hasattr(rsp, elem.keyword):
                setattr(rsp, elem.keyword, elem.value)
    else:
        rsp.Status = status
    return _command_bytes(C_FIND_RSP(), rsp)


@functools.lru_cache(maxsize=256)
def pending_response(message_id: int, sop_class: str, status: int) -> bytes:
    """The command set of a pending C-FIND-RSP, which says that an identifier follows (PS3.7 9.3.2.2).

    Cached: modalities mostly number their requests 1, so it is encoded once, not once per answer.
    """
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.Status = status
    # Only its presence matters: CommandDataSetType then says that a data set follows.
    rsp.Identifier = BytesIO(b"\0\0")
    return _command_bytes(C_FIND_RSP(), rsp)


@functools.lru_cache(maxsize=256)
def echo_response(message_id: int, sop_class: str) -> bytes:
    rsp = C_ECHO()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.Status = 0x0000
    return _command_bytes(C_ECHO_RSP(), rsp)


def _command_bytes(message: Any, primitive: Any) -> bytes:
    message.primitive_to_message(primitive)
    message._set_command_group_length()
    # The command set is always implicit VR little endian (PS3.7 6.3.1).
    data = encode(message.command_set, True, True)
    if data is None:
        raise ValueError("cannot encode the response command set")
    return data


@dataclass(frozen=True)
class Command:
    """The fields of a request's command set that the SCP acts on (PS3.7 9.3, E.1)."""

    field: int  # CommandField
    message_id: int  # MessageID, or MessageIDBeingRespondedTo for a C-CANCEL-RQ
    sop_class: str  # AffectedSOPClassUID ("" for a C-CANCEL-RQ)
    has_dataset: bool  # CommandDataSetType says a data set follows


def _us(command: Dataset, keyword: str) -> int:
    value = command.get(keyword)
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ProtocolError(f"command set without a usable {keyword}", SERVICE_USER, 0)
    return value


def decode_command(data: bytes) -> Command:
    """A command set, always implicit VR little endian (PS3.7 6.3.1), decoded by pynetdicom/pydicom."""
    try:
        command = decode(BytesIO(data), True, True)
        field = command.get("CommandField")
        cancel = field == C_CANCEL_RQ_FIELD
        message_id = _us(command, "MessageIDBeingRespondedTo" if cancel else "MessageID")
        sop_class = "" if cancel else str(command.get("AffectedSOPClassUID") or "")
        has_dataset = command.get("CommandDataSetType", NO_DATASET) != NO_DATASET
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(
            f"undecodable DIMSE command set ({type(exc).__name__})", SERVICE_USER, 0
        ) from None
    if not isinstance(field, int):
        raise ProtocolError("command set without a CommandField", SERVICE_USER, 0)
    return Command(field, message_id, sop_class, has_dataset)


class Commands:
    """Decoded command sets by their bytes (small ones only), shared by every association."""

    def __init__(self, capacity: int = _COMMANDS) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, Command] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, data: bytes) -> Command:
        found = self._entries.get(data)
        if found is not None:
            return found
        command = decode_command(data)
        if len(data) <= _COMMAND_CACHE_BYTES:
            with self._lock:
                self._entries[data] = command
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        return command


@dataclass(frozen=True)
class Message:
    context_id: int
    command: Command
    dataset: bytes | None  # None: none came, or it was longer than MAX_IDENTIFIER_BYTES
    dataset_size: int  # bytes received


class MessageReader:
    """Assembles DIMSE messages from P-DATA-TF PDVs (PS3.8 E.2): the command set's fragments, then the data
    set's, each ended by a fragment flagged last."""

    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self._command = bytearray()
        self._pending: Command | None = None  # a command whose data set is on its way
        self._context = 0
        self._data = bytearray()
        self._size = 0

    def feed(self, context_id: int, pdv: bytes) -> Message | None:
        """The message this fragment completes, or None."""
        if not pdv:
            raise ProtocolError("empty PDV item")
        header, fragment = pdv[0], pdv[1:]
        if header & 0x01:
            if self._pending is not None:
                raise ProtocolError("a command set fragment where a data set fragment was due")
            self._command += fragment
            if not header & 0x02:
                return None
            command = self.commands.get(bytes(self._command))
            self._command.clear()
            if not command.has_dataset:
                return Message(context_id, command, None, 0)
            self._pending, self._context = command, context_id
            return None
        if self._pending is None:
            raise ProtocolError("a data set fragment without its command set")
        self._size += len(fragment)
        if self._size <= MAX_IDENTIFIER_BYTES:
            self._data += fragment  # beyond it the rest is read and dropped: the query is refused
        if not header & 0x02:
            return None
        dataset = bytes(self._data) if self._size <= MAX_IDENTIFIER_BYTES else None
        message = Message(self._context, self._pending, dataset, self._size)
        self._pending, self._data, self._size = None, bytearray(), 0
        return message
