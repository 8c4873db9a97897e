"""Internal tunables of the housekeeper: not user options (those are in shared.config), knobs tests turn."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tunables:
    # The JetStream durable consumer the replicas share (work-queue semantics), and its redelivery delay.
    consumer_name: str = "housekeeper"
    ack_wait_seconds: float = 30.0
    # Orthanc connector: changes read per request of /changes, and the timeout of each HTTP request.
    connector_batch_size: int = 100
    connector_timeout: float = 10.0
