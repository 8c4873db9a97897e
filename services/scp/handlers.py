"""pynetdicom event handlers: association policy and refusals, TCP_NODELAY, C-ECHO, the C-FIND generator."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from io import BytesIO

from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_items import PresentationContextItemRQ

from services.scp.answers import ResponseWriter
from services.scp.find import (
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH,
    NOT_ALLOWED,
    OUT_OF_RESOURCES,
    SUCCESS,
    FindOutcome,
    Response,
    WorklistFinder,
    failure,
)
from services.scp.policy import AccessPolicy
from shared.metrics import ScpMetrics

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ: rejected-permanent, by the DICOM UL service-user (PS3.8 9.3.4).
_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01
# (result, source, diagnostic) of pynetdicom's own rejection when maximum_associations is reached:
# rejected-transient, by the service-provider (presentation related), local-limit-exceeded.
_LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)
# A real MWL query is a few kilobytes. Decoding one costs in proportion to its size, and more per value or
# sequence item than per byte (a 1 MB identifier of empty items takes seconds, holding the GIL), so a hostile
# one is refused before it is decoded.
MAX_IDENTIFIER_BYTES = 32 * 1024
# Seconds a C-FIND waits for pynetdicom to send what it queued before checking for a C-CANCEL.
_DRAIN_WAIT = 0.5
# Answers that may wait in pynetdicom's outgoing queue before the handler lets it drain (and read).
_QUEUE_AHEAD = 16


def cancel_check(event: Event) -> Callable[[], bool]:
    """Whether the peer sent a C-CANCEL, asked in a way that lets pynetdicom notice one.

    pynetdicom's DUL thread reads incoming PDUs only in loops where it has nothing left to send, so a
    handler that queues answers faster than they leave never sees the C-CANCEL (all answers go out, then
    Success). Letting the outgoing queue drain whenever it holds _QUEUE_AHEAD answers keeps cancellation
    prompt (at most that many answers after the C-CANCEL arrives) without a wait per answer, which cost a
    DUL loop (about a millisecond) each; a slow query, whose queue is empty between matches, never waits.
    """
    dul = getattr(event.assoc, "dul", None)
    outgoing = getattr(dul, "to_provider_queue", None)

    def is_cancelled() -> bool:
        if outgoing is not None and outgoing.qsize() >= _QUEUE_AHEAD:
            deadline = time.monotonic() + _DRAIN_WAIT
            # A DUL thread that ended (peer gone) never drains the queue: no use waiting for it.
            while not outgoing.empty() and dul is not None and dul.is_alive() and time.monotonic() < deadline:
                time.sleep(0.0002)
        return bool(event.is_cancelled)

    return is_cancelled


def handle_conn_open(event: Event) -> None:
    """Turn Nagle's algorithm off: each C-FIND answer is a small PDU that must leave at once."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        with suppress(OSError):  # the peer may already be gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def handle_pdu_recv(event: Event) -> None:
    """Drop the malformed presentation contexts of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2): an id that is not odd
    in 1-255, an invalid UID, no abstract syntax or no transfer syntax.

    pynetdicom raises on them while negotiating, in a thread which then dies silently: the peer gets no
    answer, and the association holds its slot (and its connection) until a timeout. Without them the
    request is negotiated as if they had never been proposed.
    """
    pdu = event.pdu
    if isinstance(pdu, A_ASSOCIATE_RQ):
        pdu.variable_items = [
            item
            for item in pdu.variable_items
            if not isinstance(item, PresentationContextItemRQ) or _well_formed(item)
        ]


def _well_formed(context: PresentationContextItemRQ) -> bool:
    """Whether pynetdicom can negotiate the context: it converts it the same way first."""
    try:
        primitive = context.to_primitive()
    except (ValueError, TypeError):  # an even or zero id, an invalid UID
        return False
    return bool(primitive.abstract_syntax) and bool(primitive.transfer_syntax)


def handle_conn_close(event: Event) -> None:
    """Free the association's slot as soon as its connection closes before an A-ASSOCIATE-RQ arrived.

    pynetdicom's acceptor waits for the A-ASSOCIATE-RQ for the whole ACSE timeout (30 s) even when the
    peer has already gone (after an A-ABORT, an unknown PDU or a bare disconnect), and counts against
    MaximumAssociations meanwhile: 32 such connections every 30 s would keep every modality out. None is
    what that wait returns on a timeout, upon which pynetdicom ends the association.
    """
    assoc = event.assoc
    if assoc.is_acceptor and assoc.requestor.primitive is None and assoc.dul.to_user_queue.empty():
        assoc.dul.to_user_queue.put(None)


def handle_requested(event: Event, policy: AccessPolicy, metrics: ScpMetrics) -> None:
    """Reject an association the access policy refuses, saying why in the log and counting it.

    pynetdicom does not fire EVT_REJECTED for a rejection sent from here (it sees `is_rejected` and skips
    its own negotiation), so this count and handle_rejected's never overlap.
    """
    request = event.assoc.requestor.primitive
    if request is None:
        return
    calling, called = str(request.calling_ae_title), str(request.called_ae_title)
    host = str(event.assoc.requestor.address)
    refusal = policy.check_association(calling, called, host)
    if refusal is not None:
        logger.warning(
            "association from %r at %s rejected: %s",
            calling.strip(),
            host,
            refusal.reason,
            extra={"calling_ae": calling.strip(), "refusal": refusal.kind},
        )
        metrics.association_refused(refusal.kind)
        event.assoc.acse.send_reject(_REJECTED_PERMANENT, _SERVICE_USER, refusal.diagnostic)
        # As pynetdicom does for its own rejections: wait until the A-ASSOCIATE-RJ has left and the peer
        # closed, otherwise the socket is shut at once and the peer sees an abort instead of the reason.
        event.assoc.kill()


def handle_rejected(event: Event, metrics: ScpMetrics) -> None:
    """Count and log the rejections pynetdicom makes itself (EVT_REJECTED), chiefly too many associations."""
    primitive = event.assoc.acceptor.primitive
    sent = (
        getattr(primitive, "result", None),
        getattr(primitive, "result_source", None),
        getattr(primitive, "diagnostic", None),
    )
    kind = "too_many_associations" if sent == _LOCAL_LIMIT_EXCEEDED else "other"
    calling = str(getattr(event.assoc.requestor, "ae_title", "") or "").strip()
    logger.warning(
        "association from %r at %s rejected: %s",
        calling,
        event.assoc.requestor.address,
        "too many associations at once" if kind == "too_many_associations" else f"rejection {sent}",
        extra={"calling_ae": calling, "refusal": kind},
    )
    metrics.association_refused(kind)


def _identifier_size(event: Event) -> int:
    data = getattr(getattr(event, "request", None), "Identifier", None)
    if not isinstance(data, BytesIO):
        return 0
    with data.getbuffer() as view:
        return view.nbytes


def handle_echo(event: Event) -> int:
    """C-ECHO (Verification) always succeeds for an accepted association."""
    return 0x0000


def handle_find(
    event: Event, finder: WorklistFinder, policy: AccessPolicy, metrics: ScpMetrics
) -> Iterator[Response]:
    """C-FIND of the Modality Worklist Information Model: a generator, so answers stream as found.

    pynetdicom sends the final Success itself when the generator ends without a final status. A refusal
    (C003) is counted as a C-FIND with status "refused", not as a refused association: the association
    was accepted, and C-ECHO on it still succeeds.
    """
    calling = str(event.assoc.requestor.ae_title).strip()
    started = time.perf_counter()
    outcome = FindOutcome()
    try:
        refusal = policy.check_find(calling)
        if refusal is not None:
            logger.warning(
                "C-FIND from %r at %s refused: %s",
                calling,
                event.assoc.requestor.address,
                refusal.reason,
                extra={"calling_ae": calling, "refusal": refusal.kind},
            )
            outcome.status = NOT_ALLOWED
            yield failure(NOT_ALLOWED, "Calling AE title not allowed to query"), None
            return
        if _identifier_size(event) > MAX_IDENTIFIER_BYTES:
            outcome.status = IDENTIFIER_DOES_NOT_MATCH
            yield failure(IDENTIFIER_DOES_NOT_MATCH, "Identifier larger than 32 KiB"), None
            return
        try:
            identifier = event.identifier
        except Exception:  # pydicom decodes lazily, but a truncated stream fails here already
            outcome.status = IDENTIFIER_DOES_NOT_MATCH
            yield failure(IDENTIFIER_DOES_NOT_MATCH, "Identifier cannot be decoded"), None
            return
        writer = ResponseWriter.for_event(event)
        if writer is None:
            yield from finder.find(identifier, calling, cancel_check(event), outcome)
            return
        # Pending answers leave as pre-encoded bytes; final statuses still go through pynetdicom.
        for status, answer in finder.find(identifier, calling, cancel_check(event), outcome, writer.implicit):
            if isinstance(answer, bytes):
                if not writer.connected:
                    return  # the modality went away: stop matching and encoding for nobody
                writer.send(answer, int(status))
            else:
                yield status, answer
    finally:
        # After a final failure or cancel status pynetdicom asks for nothing more: this then runs when it
        # drops the generator, a moment after that status left. An association aborted mid-answer is
        # counted with the outcome so far.
        elapsed = time.perf_counter() - started
        metrics.observe_find(outcome.status, elapsed, outcome.answers)
        log = logger.warning if outcome.status not in (SUCCESS, CANCEL) else logger.info
        log(
            "C-FIND from %r: %d answer(s) of %d candidate(s), final status 0x%04X, %.1f ms",
            calling,
            outcome.answers,
            outcome.candidates,
            outcome.status,
            elapsed * 1000,
            extra={
                "calling_ae": calling,
                "status": f"0x{outcome.status:04X}",
                "answers": outcome.answers,
                "candidates": outcome.candidates,
                "duration_ms": round(elapsed * 1000, 3),
            },
        )
        if outcome.status == OUT_OF_RESOURCES:
            logger.warning(
                "C-FIND from %r: LimitAnswers reached, list cut after %d answers", calling, outcome.answers
            )


def bind(finder: WorklistFinder, policy: AccessPolicy, metrics: ScpMetrics) -> list[evt.EventHandlerType]:
    """The evt_handlers list for ae.start_server: dependencies go in as handler arguments."""
    return [
        (evt.EVT_CONN_OPEN, handle_conn_open),
        (evt.EVT_CONN_CLOSE, handle_conn_close),
        (evt.EVT_PDU_RECV, handle_pdu_recv),
        (evt.EVT_REQUESTED, handle_requested, [policy, metrics]),
        (evt.EVT_REJECTED, handle_rejected, [metrics]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_FIND, handle_find, [finder, policy, metrics]),
    ]
