"""Small pynetdicom handlers: Nagle off on every accepted connection, C-ECHO success, rejections counted."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any, cast

import pytest

from services.scp.handlers import handle_conn_open, handle_echo, handle_rejected, handle_requested
from services.scp.policy import AccessPolicy
from shared.metrics import ScpMetrics


def test_accepted_connections_get_tcp_nodelay() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        event = SimpleNamespace(
            assoc=SimpleNamespace(dul=SimpleNamespace(socket=SimpleNamespace(socket=sock)))
        )
        handle_conn_open(cast(Any, event))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_connection_already_gone_is_no_error() -> None:
    event = SimpleNamespace(assoc=SimpleNamespace(dul=SimpleNamespace(socket=None)))
    handle_conn_open(cast(Any, event))


def test_echo_succeeds() -> None:
    assert handle_echo(cast(Any, None)) == 0x0000


def _rejected_event(result: int, source: int, diagnostic: int) -> Any:
    primitive = SimpleNamespace(result=result, result_source=source, diagnostic=diagnostic)
    return SimpleNamespace(
        assoc=SimpleNamespace(
            acceptor=SimpleNamespace(primitive=primitive),
            requestor=SimpleNamespace(ae_title="CT01", address="192.0.2.1"),
        )
    )


def refused(metrics: ScpMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("mwl_associations_refused_total", {"reason": reason}) or 0.0


def test_pynetdicoms_own_rejections_are_counted_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ScpMetrics()
    handle_rejected(_rejected_event(0x02, 0x03, 0x02), metrics)  # maximum_associations reached
    handle_rejected(_rejected_event(0x02, 0x02, 0x01), metrics)  # e.g. user identity refused
    assert refused(metrics, "too_many_associations") == 1
    assert refused(metrics, "other") == 1
    assert "too many associations" in caplog.text and "CT01" in caplog.text


def test_policy_rejections_are_counted_by_reason() -> None:
    metrics = ScpMetrics()
    policy = AccessPolicy("ORTHANC", [], always_allow_find=True, check_called_aet=True, check_host=False)
    sent: list[tuple[int, int, int]] = []
    request = SimpleNamespace(calling_ae_title="CT01", called_ae_title="SOMEONE")
    event = SimpleNamespace(
        assoc=SimpleNamespace(
            requestor=SimpleNamespace(primitive=request, address="192.0.2.1"),
            acse=SimpleNamespace(send_reject=lambda *rsd: sent.append(rsd)),
            kill=lambda: None,
        )
    )
    handle_requested(cast(Any, event), policy, metrics)
    assert sent == [(0x01, 0x01, 0x07)]
    assert refused(metrics, "called_aet") == 1
    assert refused(metrics, "calling_aet_host") == 0
