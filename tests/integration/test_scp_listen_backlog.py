"""The DICOM port's accept queue holds a burst of modalities connecting at once.

With socketserver's default of 5, 32 modalities connecting together overflowed it (the soak test counted
1,167 overflows in 60 s) and the kernel dropped connections the modalities retried seconds later. The
queue's size is read back from the kernel: TCP_INFO of a listening socket gives its maximum in tcpi_sacked.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import cast

import pytest

from services.scp.association import LISTEN_BACKLOG, AssociationServer, Timeouts
from services.scp.handlers import WorklistServices

# struct tcp_info: eight one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked...
_TCP_INFO = struct.Struct("8B6I")


def accept_queue_limit(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    return int(_TCP_INFO.unpack(info)[-1])  # tcpi_sacked: the listen backlog for a listening socket


@pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO of a listening socket is Linux's")
@pytest.mark.parametrize("share_port", [False, True])
def test_the_dicom_port_queues_a_burst_of_connections(share_port: bool) -> None:
    with open("/proc/sys/net/core/somaxconn", encoding="ascii") as f:
        expected = min(LISTEN_BACKLOG, int(f.read()))
    services = cast(WorklistServices, None)  # no connection is made: the services are never called
    server = AssociationServer(
        ("127.0.0.1", 0),
        services,
        timeouts=Timeouts(acse=1, network=1),
        maximum_associations=1,
        share_port=share_port,
    )
    try:
        assert expected >= 128  # what 48 modalities at once needed in the soak test
        assert accept_queue_limit(server.socket) == expected
    finally:
        server.server_close()
