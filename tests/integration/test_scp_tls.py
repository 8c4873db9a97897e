"""DICOM TLS from the outside: DCMTK findscu in its TLS mode and a pynetdicom TLS SCU against the running SCP,
with a CA, server and client certificates made for the test; plain TCP and unknown certificates refused."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom import AE

from services.scp.server import ScpServer
from shared.config import ConfigError, load_settings
from shared.migrate import upgrade
from tests.support.dicom_clients import (
    MWL_FIND,
    VERIFICATION,
    dcmtk,
    findscu,
    needs_dcmtk,
    running_scp,
    worklist,
)
from tests.support.dicom_clients import add_items as store_items
from tests.support.servers import NatsServer
from tests.support.tls import Pki, client_context, make_pki, needs_openssl

pytestmark = needs_openssl


@dataclass
class Env:
    pki: Pki
    database_url: str
    nats_url: str
    port: int


def tls_options(pki: Pki, **extra: object) -> dict[str, object]:
    return {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(pki.server_cert),
        "DicomTlsPrivateKey": str(pki.server_key),
        "DicomTlsTrustedCertificates": str(pki.ca),
        **extra,
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("scp-tls")
    url = f"sqlite:///{folder / 'worklists.db'}"
    upgrade(url)
    store_items(url, [worklist(name="Tls^Tess", patient_id="TLS1", accession="ACCTLS")])
    nats = NatsServer(folder / "jetstream")
    nats.start()
    try:
        with running_scp(url, nats.url, **tls_options(pki)) as server:
            yield Env(pki, url, nats.url, server.port)
    finally:
        nats.stop()


def _scu() -> AE:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(MWL_FIND)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def tls_echo(port: int, context: ssl.SSLContext | None) -> bool:
    """Whether a C-ECHO over an association (TLS when `context` is given) succeeds."""
    tls_args = (context, "localhost") if context is not None else None
    assoc = _scu().associate("127.0.0.1", port, ae_title="ORTHANC", tls_args=tls_args)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0x0000
    finally:
        assoc.release()


def tls_find(port: int, context: ssl.SSLContext) -> list[str]:
    query = Dataset()
    query.PatientID = ""
    query.AccessionNumber = ""
    assoc = _scu().associate("127.0.0.1", port, ae_title="ORTHANC", tls_args=(context, "localhost"))
    assert assoc.is_established
    try:
        return [
            str(identifier.AccessionNumber)
            for status, identifier in assoc.send_c_find(query, MWL_FIND)
            if status and status.Status == 0xFF00 and identifier is not None
        ]
    finally:
        assoc.release()


def test_pynetdicom_tls_scu_with_client_certificate_queries(env: Env) -> None:
    assert tls_find(env.port, client_context(env.pki)) == ["ACCTLS"]
    assert tls_echo(env.port, client_context(env.pki))


@dcmtk
@needs_dcmtk
def test_dcmtk_findscu_over_tls(env: Env) -> None:
    pki = env.pki
    tls = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]
    result = findscu(env.port, ["AccessionNumber", "PatientID"], aet="CT01", extra=tls)
    assert result.returncode == 0, result.output
    assert result.final == "Success", result.output
    assert [str(ds.AccessionNumber) for ds in result.answers] == ["ACCTLS"]


@dcmtk
@needs_dcmtk
def test_dcmtk_findscu_without_certificate_or_without_tls_is_refused(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.tls")
    anonymous = findscu(env.port, ["AccessionNumber"], extra=["+tla", "+cf", str(env.pki.ca)], timeout=30)
    assert anonymous.answers == [] and anonymous.final == "", anonymous.output
    plain = findscu(env.port, ["AccessionNumber"], timeout=30)
    assert plain.answers == [] and plain.final == "", plain.output
    assert "DICOM TLS handshake with 127.0.0.1 failed" in caplog.text
    assert tls_echo(env.port, client_context(env.pki))  # and the SCP goes on serving


def test_plain_tcp_association_is_refused_on_the_tls_port(env: Env) -> None:
    assert not tls_echo(env.port, None)
    assert tls_echo(env.port, client_context(env.pki))


def test_client_without_certificate_is_refused_when_required(env: Env) -> None:
    assert not tls_echo(env.port, client_context(env.pki, with_certificate=False))


def test_client_certificate_from_another_ca_is_refused(env: Env) -> None:
    assert not tls_echo(env.port, client_context(env.pki, rogue=True))


def test_a_stalled_handshake_does_not_hold_up_other_modalities(env: Env) -> None:
    # pynetdicom handshakes in its accept loop: there, one silent peer would block every association.
    with (
        socket.create_connection(("127.0.0.1", env.port)),  # connects, sends nothing
        socket.create_connection(("127.0.0.1", env.port)) as partial,
    ):
        partial.sendall(b"\x16\x03\x01\x02\x00")  # the start of a ClientHello, then nothing
        started = time.monotonic()
        assert tls_echo(env.port, client_context(env.pki))
        assert time.monotonic() - started < 5


def test_certificate_optional_without_trusted_bundle(env: Env) -> None:
    options = tls_options(env.pki, DicomTlsRemoteCertificateRequired=False, DicomTlsTrustedCertificates=None)
    with running_scp(env.database_url, env.nats_url, **options) as scp:
        assert tls_echo(scp.port, client_context(env.pki, with_certificate=False))
        assert not tls_echo(scp.port, None)


def test_certificate_optional_still_verifies_a_presented_one(env: Env) -> None:
    options = tls_options(env.pki, DicomTlsRemoteCertificateRequired=False)
    with running_scp(env.database_url, env.nats_url, **options) as scp:
        assert tls_echo(scp.port, client_context(env.pki, with_certificate=False))
        assert tls_echo(scp.port, client_context(env.pki))
        assert not tls_echo(scp.port, client_context(env.pki, rogue=True))


# ----------------------------------------------------------------------------------------------------------
# Start-up checks: the SCP refuses to start, naming the option, before it opens anything.


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("DicomTlsPrivateKey", lambda pki: pki.client_key, "is not the key of the certificate"),
        ("DicomTlsPrivateKey", lambda pki: pki.server_cert, "holds no usable PEM private key"),
        ("DicomTlsPrivateKey", lambda pki: pki.encrypted_server_key, "the key is encrypted"),
        ("DicomTlsPrivateKey", lambda pki: pki.ca.parent / "missing.key", "is not a readable file"),
        ("DicomTlsCertificate", lambda pki: pki.server_key, "holds no PEM certificate"),
        ("DicomTlsCertificate", lambda pki: pki.ca.parent, "is not a readable file"),
        ("DicomTlsTrustedCertificates", lambda pki: pki.client_key, "holds no PEM certificate"),
    ],
    ids=["key-mismatch", "key-not-a-key", "key-encrypted", "key-missing", "cert-not-a-cert", "cert-a-folder",
         "bundle-not-certificates"],
)  # fmt: skip
def test_unusable_tls_files_stop_start_up(
    pki: Pki, option: str, value: Callable[[Pki], Path], message: str
) -> None:
    settings = load_settings(environ={}, overrides=tls_options(pki, **{option: str(value(pki))}))
    with pytest.raises(ConfigError, match=rf"invalid configuration option {option}: .*{message}"):
        ScpServer(settings)
