"""Small pynetdicom handlers: Nagle off on every accepted connection, C-ECHO success."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any, cast

from services.scp.handlers import handle_conn_open, handle_echo


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
