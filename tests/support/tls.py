"""A throw-away PKI for the DICOM TLS tests (CA, server and client certificates, by the openssl CLI)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
# ECDSA P-256: made in milliseconds (RSA keys take a second each), and in DCMTK's default BCP 195 profile.
KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


@dataclass(frozen=True)
class Pki:
    """Files of a throw-away PKI: `ca` signs the server and `client`; `rogue_ca` signs `rogue_client`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path
    encrypted_server_key: Path  # the server's key under a passphrase


def _openssl(*args: str | Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=30)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl(
        "req", "-x509", *KEY, "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", key, "-out", cert,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / f"{name}{suffix}" for suffix in (".crt", ".key", ".csr", ".ext"))
    ext.write_text(extensions, encoding="ascii")
    _openssl("req", *KEY, "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", cert,
    )  # fmt: skip
    return cert, key


def make_pki(folder: Path) -> Pki:
    ca = _ca(folder, "test-ca")
    server = _leaf(
        folder,
        "localhost",
        ca,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    client_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    client = _leaf(folder, "CT01", ca, client_ext)
    rogue_ca = _ca(folder, "rogue-ca")
    rogue = _leaf(folder, "ROGUE", rogue_ca, client_ext)
    encrypted = folder / "encrypted.key"
    _openssl("pkey", "-in", server[1], "-aes256", "-passout", "pass:secret", "-out", encrypted)
    return Pki(ca[0], *server, *client, rogue_ca[0], *rogue, encrypted)


def client_context(pki: Pki, *, with_certificate: bool = True, rogue: bool = False) -> ssl.SSLContext:
    """What a modality uses: verifies the server against the test CA, presents its own certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if with_certificate:
        if rogue:
            context.load_cert_chain(str(pki.rogue_client_cert), str(pki.rogue_client_key))
        else:
            context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context
