"""Security options: REST authentication (Orthanc's RegisteredUsers, our ApiTokens) and DICOM TLS, from the
JSON file and MWL_* variables (a Kubernetes Secret); errors name the option, never quote a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import ConfigError, environment_names, load_settings

TOKEN = "3f9c2a7b1d8e4f60a5b7c9d1e2f30415"


def test_off_by_default() -> None:
    settings = load_settings(environ={})
    assert settings.authentication_enabled is False
    assert settings.registered_users == {} and settings.api_tokens == []
    assert settings.dicom_tls_enabled is False
    assert settings.dicom_tls_remote_certificate_required is True  # Orthanc's default


def test_orthanc_file_with_users_and_tokens(tmp_path: Path) -> None:
    path = tmp_path / "orthanc.json"
    path.write_text(
        """{
          "AuthenticationEnabled": true,
          // Orthanc's shape: every user may read and write
          "RegisteredUsers": {"alice": "alice-pw", "bob": {"Password": "bob-pw", "Role": "read-only"}},
          "ApiTokens": [{"Token": "TOKEN", "Role": "read-write", "Name": "ris-bridge"}]
        }""".replace("TOKEN", TOKEN),
        encoding="utf-8",
    )
    settings = load_settings(path, environ={})
    users = settings.registered_users
    assert settings.authentication_enabled is True
    assert users["alice"].password.get_secret_value() == "alice-pw" and users["alice"].role == "read-write"
    assert users["bob"].role == "read-only"
    [token] = settings.api_tokens
    assert (token.token.get_secret_value(), token.role, token.name) == (TOKEN, "read-write", "ris-bridge")


def test_from_environment_as_a_kubernetes_secret_sets_them() -> None:
    env = {
        "MWL_AUTHENTICATION_ENABLED": "true",
        "MWL_REGISTERED_USERS": json.dumps({"ui": {"Password": "from-secret", "Role": "read-only"}}),
        "MWL_API_TOKENS": json.dumps([{"Token": TOKEN, "Role": "read-write"}]),
        "MWL_DICOM_TLS_ENABLED": "true",
        "MWL_DICOM_TLS_CERTIFICATE": "/etc/mwl/tls/tls.crt",
        "MWL_DICOM_TLS_PRIVATE_KEY": "/etc/mwl/tls/tls.key",
        "MWL_DICOM_TLS_TRUSTED_CERTIFICATES": "/etc/mwl/tls/ca.crt",
        "MWL_DICOM_TLS_REMOTE_CERTIFICATE_REQUIRED": "true",
    }
    assert set(env) <= set(environment_names())
    settings = load_settings(environ=env)
    assert settings.registered_users["ui"].role == "read-only"
    assert settings.api_tokens[0].name is None
    assert settings.dicom_tls_certificate == Path("/etc/mwl/tls/tls.crt")
    assert settings.dicom_tls_trusted_certificates == Path("/etc/mwl/tls/ca.crt")


def test_tls_without_client_certificates() -> None:
    settings = load_settings(
        environ={},
        overrides={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": "server.crt",
            "DicomTlsPrivateKey": "server.key",
            "DicomTlsRemoteCertificateRequired": False,
        },
    )
    assert settings.dicom_tls_trusted_certificates is None


def test_secrets_stay_out_of_representations() -> None:
    settings = load_settings(
        environ={},
        overrides={
            "AuthenticationEnabled": True,
            "RegisteredUsers": {"alice": "hunter2-secret"},
            "ApiTokens": [{"Token": TOKEN, "Role": "read-only"}],
        },
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2-secret" not in text and TOKEN not in text


TLS = {"DicomTlsEnabled": True, "DicomTlsCertificate": "s.crt", "DicomTlsPrivateKey": "s.key"}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"AuthenticationEnabled": True}, "AuthenticationEnabled is true but neither RegisteredUsers nor"),
        ({"RegisteredUsers": {"alice": ""}}, "RegisteredUsers.alice.Password: the password is empty"),
        ({"RegisteredUsers": {"al:ice": "pw"}}, "RegisteredUsers: user name 'al:ice'"),
        ({"RegisteredUsers": {"": "pw"}}, "RegisteredUsers: user name ''"),
        ({"RegisteredUsers": {"alice": {"Password": "pw", "Role": "admin"}}}, "RegisteredUsers.alice.Role"),
        ({"RegisteredUsers": ["alice", "pw"]}, "RegisteredUsers"),
        ({"ApiTokens": [{"Token": "short", "Role": "read-only"}]}, "ApiTokens.0.Token: a token must be"),
        ({"ApiTokens": [{"Token": TOKEN}]}, "ApiTokens.0.Role"),
        ({"ApiTokens": [{"Token": f" {TOKEN}", "Role": "read-only"}]}, "ApiTokens.0.Token"),
        (
            {"ApiTokens": [{"Token": TOKEN, "Role": "read-only"}, {"Token": TOKEN, "Role": "read-write"}]},
            "ApiTokens: the same token is listed twice",
        ),
        ({"DicomTlsEnabled": True}, "DicomTlsCertificate and DicomTlsPrivateKey not set"),
        ({**TLS, "DicomTlsPrivateKey": None}, "DicomTlsPrivateKey not set"),
        (TLS, "DicomTlsRemoteCertificateRequired is true (the default) but DicomTlsTrustedCertificates"),
    ],
)
def test_invalid_security_options_are_named(options: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides=options)
    assert named in str(info.value)


def test_errors_never_quote_a_secret() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={
                "MWL_REGISTERED_USERS": json.dumps({"alice": {"Password": "hunter2-secret", "Role": "root"}}),
                "MWL_API_TOKENS": json.dumps([{"Token": "tiny-secret", "Role": "read-only"}]),
            }
        )
    message = str(info.value)
    assert "RegisteredUsers.alice.Role" in message and "ApiTokens.0.Token" in message
    assert "hunter2-secret" not in message and "tiny-secret" not in message
