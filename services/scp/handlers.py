"""What the SCP does with associations and messages: the access policy and its refusals, and the C-FIND.

The acceptor (services.scp.association) calls these; they answer through the Association it passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from contextlib import closing
from io import BytesIO
from typing import Protocol

from pydicom import Dataset
from pynetdicom.dsutils import decode, encode

from services.scp.association import FindRequest
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
from services.scp.messages import MAX_IDENTIFIER_BYTES, pending_response
from services.scp.negotiation import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, TOO_MANY_ASSOCIATIONS, Rejection
from services.scp.policy import AccessPolicy
from shared.metrics import ScpMetrics

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ: rejected-permanent, by the DICOM UL service-user (PS3.8 9.3.4).
_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01


class Answering(Protocol):
    """The association a C-FIND is answered on (services.scp.association.Association)."""

    calling_aet: str
    host: str

    @property
    def connected(self) -> bool: ...

    def send_pending(self, request: FindRequest, command: bytes, identifier: bytes) -> None: ...

    def send_final(self, request: FindRequest, status: int | Dataset) -> None: ...

    def is_cancelled(self, request: FindRequest) -> bool: ...


class WorklistServices:
    """The Modality Worklist SCP's answers: who may associate, and the C-FIND (C-ECHO needs nothing)."""

    def __init__(self, finder: WorklistFinder, policy: AccessPolicy, metrics: ScpMetrics) -> None:
        self.finder = finder
        self.policy = policy
        self.metrics = metrics

    def check_association(self, calling_aet: str, called_aet: str, host: str) -> Rejection | None:
        """The access policy's verdict; a refusal is logged (with why) and counted."""
        refusal = self.policy.check_association(calling_aet, called_aet, host)
        if refusal is None:
            return None
        logger.warning(
            "association from %r at %s rejected: %s",
            calling_aet.strip(),
            host,
            refusal.reason,
            extra={"calling_ae": calling_aet.strip(), "refusal": refusal.kind},
        )
        self.metrics.association_refused(refusal.kind)
        return Rejection(_REJECTED_PERMANENT, _SERVICE_USER, refusal.diagnostic)

    def association_rejected(self, rejection: Rejection, calling_aet: str, host: str) -> None:
        """Log and count a rejection the acceptor made itself (too many associations at once)."""
        kind = "too_many_associations" if rejection == TOO_MANY_ASSOCIATIONS else "other"
        reason = "too many associations at once" if kind == "too_many_associations" else f"{rejection}"
        logger.warning(
            "association from %r at %s rejected: %s",
            calling_aet.strip(),
            host,
            reason,
            extra={"calling_ae": calling_aet.strip(), "refusal": kind},
        )
        self.metrics.association_refused(kind)

    def find(self, association: Answering, request: FindRequest) -> None:
        """C-FIND of the Modality Worklist Information Model: answers stream as they are found.

        A refusal (C003) is counted as a C-FIND with status "refused", not as a refused association: the
        association was accepted, and C-ECHO on it still succeeds.
        """
        calling = association.calling_aet.strip()
        started = time.perf_counter()
        outcome = FindOutcome()
        try:
            final = self._answer(association, request, calling, outcome)
            if association.connected:
                association.send_final(request, final)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe_find(outcome.status, elapsed, outcome.answers)
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
                    "C-FIND from %r: LimitAnswers reached, list cut after %d answers",
                    calling,
                    outcome.answers,
                )

    def _answer(
        self, association: Answering, request: FindRequest, calling: str, outcome: FindOutcome
    ) -> int | Dataset:
        """Send the pending answers; the final status."""
        refusal = self.policy.check_find(calling)
        if refusal is not None:
            logger.warning(
                "C-FIND from %r at %s refused: %s",
                calling,
                association.host,
                refusal.reason,
                extra={"calling_ae": calling, "refusal": refusal.kind},
            )
            outcome.status = NOT_ALLOWED
            return failure(NOT_ALLOWED, "Calling AE title not allowed to query")
        if request.identifier_size > MAX_IDENTIFIER_BYTES:
            outcome.status = IDENTIFIER_DOES_NOT_MATCH
            return failure(IDENTIFIER_DOES_NOT_MATCH, "Identifier larger than 32 KiB")
        if request.identifier is None:
            outcome.status = IDENTIFIER_DOES_NOT_MATCH
            return failure(IDENTIFIER_DOES_NOT_MATCH, "C-FIND request without an identifier")
        context = request.context

        def is_cancelled() -> bool:
            return association.is_cancelled(request)

        responses: Generator[Response, None, None]
        if context.little_endian_plain:
            responses = self.finder.find_encoded(
                request.identifier, context.implicit, calling, is_cancelled, outcome
            )
        else:
            responses = self._find_other_syntax(request, calling, is_cancelled, outcome)
        with closing(responses):  # a modality gone mid-answer ends the finder's work now, not at collection
            for status, answer in responses:
                if answer is None:
                    return status  # a final status: the finder stops there
                if not association.connected:
                    return CANCEL  # the modality went away: stop matching and encoding for nobody
                if not isinstance(answer, bytes):  # both paths above encode their answers
                    raise TypeError("a C-FIND answer reached the association unencoded")
                association.send_pending(
                    request, pending_response(request.message_id, request.sop_class, int(status)), answer
                )
        return SUCCESS

    def _find_other_syntax(
        self, request: FindRequest, calling: str, is_cancelled: Callable[[], bool], outcome: FindOutcome
    ) -> Generator[Response, None, None]:
        """Deflated explicit VR little endian or explicit VR big endian: through pydicom Datasets."""
        syntax = request.context.transfer_syntax
        deflated, little = syntax == DEFLATED_EXPLICIT_VR_LE, syntax != EXPLICIT_VR_BE
        try:
            identifier = decode(BytesIO(request.identifier or b""), False, little, deflated)
        except Exception:
            outcome.status = IDENTIFIER_DOES_NOT_MATCH
            yield failure(IDENTIFIER_DOES_NOT_MATCH, "Identifier cannot be decoded"), None
            return
        for status, answer in self.finder.find(identifier, calling, is_cancelled, outcome):
            if isinstance(answer, Dataset):
                data = encode(answer, False, little, deflated)
                if data is None:
                    logger.error("a C-FIND answer cannot be encoded in %s; skipped", syntax)
                    continue
                yield status, data
            else:
                yield status, answer
