"""The DICOM Upper Layer acceptor for C-FIND and C-ECHO (PS3.8): one pooled thread per connection, blocking
reads.

pynetdicom's own association runs three threads per association, two of them polling every millisecond, and
builds primitives and a pydicom Dataset for every PDU and message: about 8.5 ms of CPU per association with an
empty C-FIND handler (measured on the bench's 2-core machine), more than the whole query costs otherwise. This
acceptor keeps pynetdicom for what it does well and what must be right — decoding and encoding the PDUs,
negotiating presentation contexts and roles (services.scp.negotiation), encoding responses
(services.scp.messages) — and replaces its state machine with the acceptor's path through PS3.8 9.2
(Table 9-10): Sta2 awaiting the A-ASSOCIATE-RQ (ARTIM), Sta6 established, then released (Sta13) or aborted.
"""

from __future__ import annotations

import logging
import select
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from pydicom import Dataset
from pynetdicom.pdu import P_DATA_TF

from services.scp.messages import (
    C_CANCEL_RQ_FIELD,
    C_ECHO_RQ_FIELD,
    C_FIND_RQ_FIELD,
    Commands,
    Message,
    MessageReader,
    echo_response,
    find_response,
)
from services.scp.negotiation import (
    MODALITY_WORKLIST_FIND,
    TOO_MANY_ASSOCIATIONS,
    VERIFICATION,
    Context,
    Negotiation,
    Negotiations,
    Rejection,
    reject_pdu,
)
from services.scp.upper_layer import (
    ABORT,
    ASSOCIATE_AC,
    ASSOCIATE_RJ,
    ASSOCIATE_RQ,
    MAX_ASSOCIATE_RQ,
    MAX_PDU_READ,
    P_DATA_PDU,
    RELEASE_RP,
    RELEASE_RP_PDU,
    RELEASE_RQ,
    SERVICE_USER,
    UNEXPECTED_PDU,
    UNRECOGNIZED_PDU,
    PeerGone,
    ProtocolError,
    abort_pdu,
    p_data,
)

logger = logging.getLogger(__name__)

# Answers collect in a buffer sent when it holds this much, or when the oldest has waited _FLUSH_AFTER.
_FLUSH_BYTES = 32 * 1024
_FLUSH_AFTER = 0.02
# How often, at most, a running C-FIND looks for a C-CANCEL or an A-ABORT on the connection (seconds).
_CANCEL_POLL = 0.005
# socketserver's default listen backlog is 5: 32 modalities connecting at once overflowed it, and the kernel
# then drops connections that the modality retries only 1, 3, 7 s later (seen as multi-second C-FIND
# latencies, and as association timeouts at 48). The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 512
# Threads serving connections at most (queued beyond; MaximumAssociations rejects long before).
CONNECTION_THREADS = 256
# Seconds a closing connection waits for the peer to read our last PDU and close (PS3.8 ARTIM, Sta13).
_LINGER = 2.0


@dataclass(frozen=True)
class Timeouts:
    acse: float  # seconds for the A-ASSOCIATE-RQ to arrive (and a TLS handshake to finish)
    network: float  # seconds an established association may stay silent


@dataclass
class FindRequest:
    message_id: int
    sop_class: str
    context: Context
    identifier: bytes | None  # None: no data set came with it
    identifier_size: int  # bytes received, also when more than were kept


class Services(Protocol):
    """What the SCP does with associations and messages (services.scp.handlers)."""

    def check_association(self, calling_aet: str, called_aet: str, host: str) -> Rejection | None: ...

    def association_rejected(self, rejection: Rejection, calling_aet: str, host: str) -> None: ...

    def find(self, association: Association, request: FindRequest) -> None: ...


class Association:
    """An established association, as the services see it: who called, and how to answer."""

    def __init__(self, connection: Connection, negotiation: Negotiation, host: str) -> None:
        self._connection = connection
        self.negotiation = negotiation
        self.calling_aet = negotiation.calling_aet
        self.called_aet = negotiation.called_aet
        self.host = host
        self.max_pdu = negotiation.peer_max_pdu
        self._out = bytearray()
        self._oldest = 0.0
        self._polled = 0.0
        self._cancelled: set[int] = set()
        self.backlog: deque[Message] = deque()  # messages that arrived while a C-FIND ran

    @property
    def connected(self) -> bool:
        return not self._connection.gone

    def send_pending(self, request: FindRequest, command: bytes, identifier: bytes) -> None:
        """Queue one pending C-FIND-RSP (its command set bytes and identifier), sent in batches."""
        if not self._out:
            self._oldest = time.monotonic()
        self._out += p_data(request.context.context_id, command, identifier, self.max_pdu)
        if len(self._out) >= _FLUSH_BYTES or time.monotonic() - self._oldest >= _FLUSH_AFTER:
            self.flush()

    def send_final(self, request: FindRequest, status: int | Dataset) -> None:
        command = find_response(request.message_id, request.sop_class, status)
        self._out += p_data(request.context.context_id, command, None, self.max_pdu)
        self.flush()

    def flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            self._connection.send(data)

    def is_cancelled(self, request: FindRequest) -> bool:
        """Whether the peer sent a C-CANCEL-RQ for `request` (or went away); looks at the connection at most
        every few milliseconds, without waiting."""
        if request.message_id in self._cancelled or self._connection.gone:
            return True
        now = time.monotonic()
        if now - self._polled < _CANCEL_POLL:
            return False
        self._polled = now
        if self._out and now - self._oldest >= _FLUSH_AFTER:
            self.flush()
        while self._connection.readable():
            try:
                self._connection.read_incoming(self)
            except (PeerGone, ProtocolError):
                self._connection.gone = True
                return True
        return request.message_id in self._cancelled or self._connection.gone

    def cancel(self, message_id: int) -> None:
        self._cancelled.add(message_id)


class Connection:
    """One TCP (or TLS) connection through the acceptor's states."""

    def __init__(self, sock: socket.socket, host: str, server: AssociationServer) -> None:
        self.sock = sock
        self.host = host
        self.server = server
        self.buffer = bytearray()
        self.gone = False
        self.messages = MessageReader(server.commands)
        self._send_lock = threading.Lock()
        self._pending_pdu: tuple[int, bytes] | None = None

    # -- bytes ---------------------------------------------------------------------------------------------

    def _fill(self, wanted: int) -> None:
        while len(self.buffer) < wanted:
            try:
                chunk = self.sock.recv(max(65536, wanted - len(self.buffer)))
            except (TimeoutError, ssl.SSLError, OSError) as exc:
                raise PeerGone(type(exc).__name__) from None
            if not chunk:
                raise PeerGone("closed")
            self.buffer += chunk

    def read_pdu(self, timeout: float, limit: int = MAX_PDU_READ) -> tuple[int, bytes]:
        """The next PDU's type and its bytes (header included), waiting at most `timeout` for it to begin."""
        if self._pending_pdu is not None:
            pdu, self._pending_pdu = self._pending_pdu, None
            return pdu
        self.sock.settimeout(timeout)
        self._fill(6)
        kind, length = self.buffer[0], struct.unpack_from(">I", self.buffer, 2)[0]
        if kind not in (ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_PDU, RELEASE_RQ, RELEASE_RP, ABORT):
            raise ProtocolError(f"unknown PDU type 0x{kind:02X}", reason=UNRECOGNIZED_PDU)
        if length > limit:
            raise ProtocolError(f"PDU of {length} bytes (type 0x{kind:02X}) is longer than accepted")
        self._fill(6 + length)
        data = bytes(self.buffer[: 6 + length])
        del self.buffer[: 6 + length]
        return kind, data

    def readable(self) -> bool:
        if self._pending_pdu is not None:
            return False  # it waits for the running C-FIND to end; nothing more is read meanwhile
        if self.buffer:
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            ready, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True  # the next read says what happened
        return bool(ready)

    def send(self, data: bytes) -> None:
        if self.gone:
            return
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except (OSError, ssl.SSLError):
                self.gone = True

    def close(self, linger: bool) -> None:
        """Close; with `linger`, once the peer has closed after reading what we sent last, or _LINGER passed
        (Sta13, ARTIM: PS3.8 AE-8, AR-4). Closing first could lose that A-ASSOCIATE-RJ or A-RELEASE-RP to a
        reset, or have the peer take our end-of-file for an abort before it reads the PDU (pynetdicom's
        requestor does, now and then)."""
        with suppress(OSError, ssl.SSLError):
            if linger and not self.gone:
                self.sock.settimeout(_LINGER)
                deadline = time.monotonic() + _LINGER
                while time.monotonic() < deadline and self.sock.recv(65536):
                    pass
        with suppress(OSError):
            self.sock.close()
        self.gone = True

    def abort(self, source: int, reason: int) -> None:
        self.send(abort_pdu(source, reason))

    # -- the acceptor's states -----------------------------------------------------------------------------

    def serve(self) -> bool:
        """Run the association to its end; whether the connection should linger before it is closed."""
        try:
            association = self._associate()
            if association is not None:
                self._established(association)
        except PeerGone:
            return False
        except ProtocolError as exc:
            logger.info("association from %s aborted: %s", self.host, exc)
            self.abort(exc.source, exc.reason)
        return True

    def _associate(self) -> Association | None:
        """Sta2: the A-ASSOCIATE-RQ, answered with an AC or an RJ (None: rejected, or the peer aborted)."""
        kind, data = self.read_pdu(self.server.timeouts.acse, MAX_ASSOCIATE_RQ)
        if kind == ABORT:
            self.gone = True  # AA-2: nothing to answer
            return None
        if kind != ASSOCIATE_RQ:
            raise ProtocolError(f"PDU type 0x{kind:02X} before an association", reason=UNEXPECTED_PDU)
        negotiation = self.server.negotiations.get(data)
        services = self.server.services
        rejection = negotiation.rejection  # what the request itself calls for (its protocol version)
        if rejection is None:
            # The access policy logs and counts its own refusals.
            rejection = services.check_association(negotiation.calling_aet, negotiation.called_aet, self.host)
            if rejection is None and self.server.active > self.server.maximum_associations:
                rejection = TOO_MANY_ASSOCIATIONS
                services.association_rejected(rejection, negotiation.calling_aet, self.host)
        else:
            services.association_rejected(rejection, negotiation.calling_aet, self.host)
        if rejection is not None:
            self.server.forget(self)
            self.send(reject_pdu(rejection))
            return None
        self.send(negotiation.accept)
        return Association(self, negotiation, self.host)

    def _established(self, association: Association) -> None:
        """Sta6: messages until A-RELEASE-RQ, A-ABORT or the end of the connection."""
        timeout = self.server.timeouts.network
        while not self.gone:
            while association.backlog:
                self._dispatch(association, association.backlog.popleft())
            kind, data = self.read_pdu(timeout)
            if kind == P_DATA_PDU:
                for message in self._messages(association, data):
                    self._dispatch(association, message)
            elif kind == RELEASE_RQ:
                # No longer counted against MaximumAssociations once the modality can see it ended: it may
                # open its next association the moment the A-RELEASE-RP arrives.
                self.server.forget(self)
                self.send(RELEASE_RP_PDU)
                return
            elif kind == ABORT:
                self.gone = True
                return
            else:
                raise ProtocolError(
                    f"unexpected PDU type 0x{kind:02X} on an association", reason=UNEXPECTED_PDU
                )

    def read_incoming(self, association: Association) -> None:
        """While a C-FIND runs: take in what the peer sent (a C-CANCEL-RQ, mostly); the rest waits."""
        kind, data = self.read_pdu(self.server.timeouts.network)
        if kind == P_DATA_PDU:
            for message in self._messages(association, data):
                if message.command.field == C_CANCEL_RQ_FIELD:
                    association.cancel(message.command.message_id)
                else:
                    association.backlog.append(message)
        elif kind == ABORT:
            raise PeerGone("aborted")
        else:
            self._pending_pdu = (kind, data)  # an A-RELEASE-RQ waits for the C-FIND's final response

    def _messages(self, association: Association, data: bytes) -> list[Message]:
        pdu = P_DATA_TF()
        try:
            pdu.decode(data)
            items = [
                (int(item.context_id or 0), bytes(item.presentation_data_value or b""))
                for item in pdu.presentation_data_value_items
            ]
        except Exception as exc:
            raise ProtocolError(f"undecodable P-DATA-TF ({type(exc).__name__})") from None
        complete = []
        for context_id, pdv in items:
            if context_id not in association.negotiation.contexts:
                raise ProtocolError(f"P-DATA on presentation context {context_id}, which was not accepted")
            message = self.messages.feed(context_id, pdv)
            if message is not None:
                complete.append(message)
        return complete

    def _dispatch(self, association: Association, message: Message) -> None:
        context = association.negotiation.contexts[message.context_id]
        command = message.command
        if command.field == C_FIND_RQ_FIELD and context.abstract_syntax == MODALITY_WORKLIST_FIND:
            request = FindRequest(
                command.message_id, command.sop_class, context, message.dataset, message.dataset_size
            )
            self.server.services.find(association, request)
            association.flush()
        elif command.field == C_ECHO_RQ_FIELD and context.abstract_syntax == VERIFICATION:
            response = echo_response(command.message_id, command.sop_class)
            self.send(p_data(context.context_id, response, None, association.max_pdu))
        elif command.field == C_CANCEL_RQ_FIELD:
            pass  # a C-CANCEL for a C-FIND already answered (PS3.7 9.3.2.3): nothing to do
        else:
            raise ProtocolError(
                f"DIMSE command 0x{command.field:04X} is not served on {context.abstract_syntax}",
                SERVICE_USER,
                0,
            )


# --------------------------------------------------------------------------------------------------------
# The listening server


class _Handler(socketserver.BaseRequestHandler):
    server: AssociationServer

    def handle(self) -> None:
        self.server.serve_connection(self.request, self.client_address)


class AssociationServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Accepts connections on the DICOM port; each one is served by a thread of a pool."""

    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        services: Services,
        *,
        timeouts: Timeouts,
        maximum_associations: int,
        ssl_context: ssl.SSLContext | None = None,
        share_port: bool = False,
    ) -> None:
        self.services = services
        self.timeouts = timeouts
        self.maximum_associations = maximum_associations
        self.ssl_context = ssl_context
        self.share_port = share_port
        self.negotiations = Negotiations()
        self.commands = Commands()
        # Threads are reused from one connection to the next (starting one costs more than a C-FIND's
        # matching); the bound is far above MaximumAssociations, which rejects the surplus anyway.
        self._pool = ThreadPoolExecutor(max_workers=CONNECTION_THREADS, thread_name_prefix="scp-association")
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.share_port:
            # Several SCP processes (one per core) bind the same port; the kernel spreads the connections.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    @property
    def active(self) -> int:
        """Connections being served (an association, or one on its way)."""
        return len(self._connections)

    def serve_connection(self, sock: socket.socket, address: Any) -> None:
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        with suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            sock.settimeout(self.timeouts.acse)
            try:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                logger.warning("TLS handshake with %s failed: %s", host, getattr(exc, "reason", None) or exc)
                with suppress(OSError):
                    sock.close()
                return
        connection = Connection(sock, host, self)
        with self._lock:
            self._connections.add(connection)
        linger = False
        try:
            linger = connection.serve()
        except Exception:
            logger.exception("association from %s failed", host)
        finally:
            # No longer counted against MaximumAssociations while it waits for the peer to close.
            self.forget(connection)
            connection.close(linger)

    def forget(self, connection: Connection) -> None:
        """The connection no longer counts against MaximumAssociations (it is ending)."""
        with self._lock:
            self._connections.discard(connection)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self.process_request_thread, request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """The connection's thread closes its socket itself (a TLS one is another object by then)."""

    def stop(self) -> None:
        """Stop accepting, then abort every association still open."""
        self.shutdown()
        self.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.abort(SERVICE_USER, 0)
            with suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=False, cancel_futures=True)
