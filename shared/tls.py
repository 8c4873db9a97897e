"""DICOM TLS for the SCP: the server's ssl.SSLContext from the DicomTls* options, checked when the SCP starts.

pynetdicom wraps each accepted socket in the thread that accepts connections, with the handshake done at once:
one peer that connects and then stalls its handshake would hold up every other association. The context
built here defers the handshake to the first read, which pynetdicom makes in the association's own thread,
and bounds every blocking read and write on a TLS connection by TLS_IO_TIMEOUT.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from pathlib import Path

from shared.config import ConfigError, Settings

logger = logging.getLogger(__name__)

# Seconds a handshake, or the rest of a PDU once its first bytes arrived, may take on a TLS connection.
TLS_IO_TIMEOUT = 30.0


class _TlsSocket(ssl.SSLSocket):
    """An accepted TLS connection that completes its handshake on its first read (association thread)."""

    _handshake_done = False

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if not self._handshake_done:
            try:
                self.do_handshake()
            except OSError as exc:  # ssl.SSLError, a timeout or a reset: the peer is not one of ours
                logger.warning("DICOM TLS handshake with %s failed: %s", _peer(self), _reason(exc))
                return b""  # pynetdicom takes it as the connection closed
            self._handshake_done = True
        return super().recv(buflen, flags)


class _ServerContext(ssl.SSLContext):
    sslsocket_class = _TlsSocket

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        wrapped = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )
        wrapped.settimeout(TLS_IO_TIMEOUT)
        return wrapped


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "a peer that has gone"


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc.strerror or exc)


def _readable(path: Path | None, option: str) -> str:
    if path is None:  # the settings' own validation already names the missing option
        raise ConfigError(f"invalid configuration option {option}: not set")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ConfigError(f"invalid configuration option {option}: {path} is not a readable file")
    return str(path)


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal; a service has no one to answer.
    raise ConfigError(
        "invalid configuration option DicomTlsPrivateKey: the key is encrypted; give it unencrypted"
    )


def _holds_certificates(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        return False
    return True


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The SCP's TLS context (None when DicomTlsEnabled is false); ConfigError naming the option at fault."""
    if not settings.dicom_tls_enabled:
        return None
    certificate = _readable(settings.dicom_tls_certificate, "DicomTlsCertificate")
    key = _readable(settings.dicom_tls_private_key, "DicomTlsPrivateKey")
    if not _holds_certificates(certificate):
        raise ConfigError(
            f"invalid configuration option DicomTlsCertificate: {certificate} holds no PEM certificate"
        )
    context = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"invalid configuration option DicomTlsPrivateKey: {key} is not the key of the certificate "
                f"{certificate} (DicomTlsCertificate)"
            ) from None
        raise ConfigError(
            f"invalid configuration option DicomTlsPrivateKey: {key} holds no usable PEM private key"
            + (f" ({exc.reason})" if exc.reason else "")
        ) from None
    trusted = settings.dicom_tls_trusted_certificates
    if trusted is not None:
        bundle = _readable(trusted, "DicomTlsTrustedCertificates")
        if not _holds_certificates(bundle):
            raise ConfigError(
                f"invalid configuration option DicomTlsTrustedCertificates: {bundle} holds no PEM certificate"
            )
        context.load_verify_locations(cafile=bundle)
    if settings.dicom_tls_remote_certificate_required:
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        # A certificate the peer does present is still verified against the bundle.
        context.verify_mode = ssl.CERT_OPTIONAL if trusted is not None else ssl.CERT_NONE
    return context
