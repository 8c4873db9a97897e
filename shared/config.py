"""Typed settings: an Orthanc-style JSON configuration file plus MWL_* environment variables."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import json5
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

# Orthanc's DefaultEncoding names and the SpecificCharacterSet each one stands for.
ENCODINGS: dict[str, str] = {
    "Ascii": "ISO_IR 6",
    "Utf8": "ISO_IR 192",
    "Latin1": "ISO_IR 100",
    "Latin2": "ISO_IR 101",
    "Latin3": "ISO_IR 109",
    "Latin4": "ISO_IR 110",
    "Latin5": "ISO_IR 148",
    "Cyrillic": "ISO_IR 144",
    "Arabic": "ISO_IR 127",
    "Greek": "ISO_IR 126",
    "Hebrew": "ISO_IR 138",
    "Thai": "ISO_IR 166",
    "Japanese": "ISO_IR 13",
    "JapaneseKanji": "ISO 2022 IR 87",
    "Korean": "ISO 2022 IR 149",
    "SimplifiedChinese": "GB18030",
    "Chinese": "GB18030",
}

ENV_PREFIX = "MWL_"

# REST roles: read-only callers may read (items, listing, UI, event stream); read-write may also change.
Role = Literal["read-only", "read-write"]
# A static bearer token is a password no human types: shorter than this is a guessable one.
MIN_TOKEN_LENGTH = 16


class ConfigError(ValueError):
    """A configuration option is invalid; the message names it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Modality(_Section):
    """A known DICOM peer: Orthanc's `"name": ["AET", "host", port]`."""

    aet: str
    host: str
    port: int = Field(ge=0, le=65535)


class WorklistsSettings(_Section):
    """Orthanc's "Worklists" section."""

    enable: bool = Field(True, alias="Enable")
    directory: Path | None = Field(None, alias="Directory")
    save_in_database: bool | None = Field(None, alias="SaveInOrthancDatabase")
    filter_issuer_aet: bool = Field(False, alias="FilterIssuerAet")
    limit_answers: int = Field(0, ge=0, alias="LimitAnswers")
    set_study_instance_uid_if_missing: bool = Field(True, alias="SetStudyInstanceUidIfMissing")
    delete_on_stable_study: bool = Field(True, alias="DeleteWorklistsOnStableStudy")
    housekeeping_interval: float = Field(60.0, gt=0, alias="HousekeepingInterval")
    delete_delay_hours: float = Field(0.0, ge=0, alias="DeleteWorklistsDelay")
    # Our additions to the section.
    stable_study_memory_hours: float = Field(24.0, ge=0, alias="StableStudyMemory")
    file_settle_seconds: float = Field(2.0, ge=0, alias="FileSettleTime")
    watch_directory: bool = Field(True, alias="WatchDirectory")
    scp_cache_items: int = Field(100_000, ge=0, alias="ScpCacheItems")

    @property
    def folder_mode(self) -> bool:
        """REST-created items are written as `.wl` files into `Directory`."""
        return self.directory is not None and not self.save_in_database

    @model_validator(mode="after")
    def _storage_is_coherent(self) -> WorklistsSettings:
        if self.save_in_database is False and self.directory is None:
            raise ValueError(
                "Worklists.SaveInOrthancDatabase is false but Worklists.Directory is not set: "
                "set a Directory for folder mode, or SaveInOrthancDatabase to true"
            )
        return self


class OrthancConnectorSettings(_Section):
    """The housekeeper's connector that follows an Orthanc PACS's /changes feed (off without a Url)."""

    url: str | None = Field(None, alias="Url")
    username: str | None = Field(None, alias="Username")
    password: str | None = Field(None, alias="Password")
    poll_interval: float = Field(1.0, gt=0, alias="PollInterval")

    @property
    def enabled(self) -> bool:
        return bool(self.url)


class RegisteredUser(_Section):
    """A REST user: Orthanc's `"name": "password"` (read-write), or `{"Password": ..., "Role": ...}`."""

    password: SecretStr = Field(alias="Password")
    role: Role = Field("read-write", alias="Role")

    @field_validator("password")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the password is empty")
        return value


class ApiToken(_Section):
    """A static bearer token (`Authorization: Bearer <Token>`) for a machine client, e.g. a RIS bridge."""

    token: SecretStr = Field(alias="Token")
    # No default: a token's power is written next to it, never assumed.
    role: Role = Field(alias="Role")
    name: str | None = Field(None, alias="Name", max_length=64)

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if len(token) < MIN_TOKEN_LENGTH or token != token.strip() or not token.isprintable():
            raise ValueError(
                f"a token must be at least {MIN_TOKEN_LENGTH} printable characters without surrounding "
                "spaces (e.g. the output of `openssl rand -hex 32`)"
            )
        return value


class Settings(_Section):
    """Everything the three services read; built once in each service's main() and passed down."""

    dicom_aet: str = Field("ORTHANC", alias="DicomAet", min_length=1, max_length=16)
    dicom_port: int = Field(4242, ge=0, le=65535, alias="DicomPort")
    http_port: int = Field(8042, ge=0, le=65535, alias="HttpPort")
    bind_address: str = Field("127.0.0.1", alias="BindAddress")
    dicom_modalities: dict[str, Modality] = Field(default_factory=dict, alias="DicomModalities")
    always_allow_find_worklist: bool = Field(True, alias="DicomAlwaysAllowFindWorklist")
    check_called_aet: bool = Field(False, alias="DicomCheckCalledAet")
    check_modality_host: bool = Field(False, alias="DicomCheckModalityHost")
    default_encoding: str = Field("Latin1", alias="DefaultEncoding")
    case_sensitive_pn: bool = Field(True, alias="CaseSensitivePN")
    database_url: str = Field("sqlite:///./data/worklists.db", alias="DatabaseUrl")
    nats_url: str = Field("nats://127.0.0.1:4222", alias="NatsUrl")
    max_body_size: int = Field(4 * 1024 * 1024, gt=0, alias="MaxBodySize")
    outbox_poll_interval: float = Field(0.5, gt=0, alias="OutboxPollInterval")
    scp_health_port: int = Field(8043, ge=0, le=65535, alias="ScpHealthPort")
    # SCP processes sharing DicomPort (services.scp.workers); 0: one per CPU core.
    scp_workers: int = Field(1, ge=0, le=64, alias="ScpWorkers")
    housekeeper_health_port: int = Field(8044, ge=0, le=65535, alias="HousekeeperHealthPort")
    log_format: Literal["text", "json"] = Field("text", alias="LogFormat")
    log_patient_data: bool = Field(False, alias="LogPatientData")
    # REST authentication (Orthanc's names, plus ApiTokens): off for the embedded quick start.
    authentication_enabled: bool = Field(False, alias="AuthenticationEnabled")
    registered_users: dict[str, RegisteredUser] = Field(default_factory=dict, alias="RegisteredUsers")
    api_tokens: list[ApiToken] = Field(default_factory=list, alias="ApiTokens")
    # DICOM TLS for the SCP (Orthanc's names); the files are checked when the SCP starts (shared.tls).
    dicom_tls_enabled: bool = Field(False, alias="DicomTlsEnabled")
    dicom_tls_certificate: Path | None = Field(None, alias="DicomTlsCertificate")
    dicom_tls_private_key: Path | None = Field(None, alias="DicomTlsPrivateKey")
    dicom_tls_trusted_certificates: Path | None = Field(None, alias="DicomTlsTrustedCertificates")
    dicom_tls_remote_certificate_required: bool = Field(True, alias="DicomTlsRemoteCertificateRequired")
    worklists: WorklistsSettings = Field(default_factory=WorklistsSettings, alias="Worklists")
    orthanc_connector: OrthancConnectorSettings = Field(
        default_factory=OrthancConnectorSettings, alias="OrthancConnector"
    )

    @property
    def default_character_set(self) -> str:
        """The SpecificCharacterSet assumed for stored items that carry none."""
        return ENCODINGS[self.default_encoding]

    @field_validator("dicom_modalities", mode="before")
    @classmethod
    def _modalities_from_orthanc_shape(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = {}
        for name, entry in value.items():
            if isinstance(entry, list | tuple):
                if len(entry) < 3:
                    raise ValueError(f"DicomModalities.{name} must be [\"AET\", \"host\", port]")
                out[name] = {"aet": entry[0], "host": entry[1], "port": entry[2]}
            elif isinstance(entry, Mapping):
                out[name] = {
                    "aet": entry.get("AET"),
                    "host": entry.get("Host"),
                    "port": entry.get("Port", 104),
                }
            else:
                out[name] = entry
        return out

    @field_validator("registered_users", mode="before")
    @classmethod
    def _users_from_orthanc_shape(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = {}
        for name, entry in value.items():
            if not name or ":" in name or not name.isprintable():
                # HTTP Basic cannot carry a colon in the user name (RFC 7617).
                raise ValueError(f"user name {name!r} must be printable, non-empty and without ':'")
            out[name] = entry if isinstance(entry, Mapping) else {"Password": entry}
        return out

    @field_validator("api_tokens")
    @classmethod
    def _distinct_tokens(cls, value: list[ApiToken]) -> list[ApiToken]:
        secrets = [token.token.get_secret_value() for token in value]
        if len(set(secrets)) != len(secrets):
            raise ValueError("the same token is listed twice")
        return value

    @model_validator(mode="after")
    def _security_is_coherent(self) -> Settings:
        if self.authentication_enabled and not self.registered_users and not self.api_tokens:
            raise ValueError(
                "AuthenticationEnabled is true but neither RegisteredUsers nor ApiTokens is set: "
                "nobody could use the REST API"
            )
        if self.dicom_tls_enabled:
            missing = [
                alias
                for alias, value in (
                    ("DicomTlsCertificate", self.dicom_tls_certificate),
                    ("DicomTlsPrivateKey", self.dicom_tls_private_key),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"DicomTlsEnabled is true but {' and '.join(missing)} not set")
            if self.dicom_tls_remote_certificate_required and self.dicom_tls_trusted_certificates is None:
                raise ValueError(
                    "DicomTlsRemoteCertificateRequired is true (the default) but DicomTlsTrustedCertificates "
                    "is not set: give the CA bundle that signs the modalities' certificates, or set "
                    "DicomTlsRemoteCertificateRequired to false"
                )
        return self

    @field_validator("default_encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        if value not in ENCODINGS:
            raise ValueError(f"unknown encoding {value!r}; one of {', '.join(ENCODINGS)}")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:// and postgresql:// URLs are supported")
        return value


def _env_name(*keys: str) -> str:
    snake = "_".join(_snake(k) for k in keys)
    return ENV_PREFIX + snake.upper()


def _snake(key: str) -> str:
    out = []
    for i, ch in enumerate(key):
        if ch.isupper() and i and (not key[i - 1].isupper() or (i + 1 < len(key) and key[i + 1].islower())):
            out.append("_")
        out.append(ch)
    return "".join(out).replace("P_N", "PN")


def _env_value(raw: str) -> Any:
    """Environment values are JSON when they parse as JSON (numbers, booleans, objects), else strings."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _field_aliases(model: type[BaseModel]) -> list[str]:
    return [f.alias for f in model.model_fields.values() if f.alias]


SECTIONS: dict[str, type[BaseModel]] = {
    "Worklists": WorklistsSettings,
    "OrthancConnector": OrthancConnectorSettings,
}


def environment_names() -> dict[str, str]:
    """Each environment variable read, with the JSON option it overrides (documented in the README)."""
    names: dict[str, str] = {}
    for alias in _field_aliases(Settings):
        if alias not in SECTIONS:
            names[_env_name(alias)] = alias
    for section, model in SECTIONS.items():
        for alias in _field_aliases(model):
            names[_env_name(section, alias)] = f"{section}.{alias}"
    return names


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse an Orthanc-style JSON file (// and /* */ comments allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    try:
        data = json5.loads(text)
    except ValueError as exc:
        raise ConfigError(f"configuration file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a JSON object")
    return data


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings: defaults < JSON file < MWL_* environment < explicit overrides."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = read_config_file(config_file) if config_file else {}
    if config_file is None and env.get("MWL_CONFIG"):
        raw = read_config_file(Path(env["MWL_CONFIG"]))
    sections = {name: dict(raw.get(name) or {}) for name in SECTIONS}
    for name, option in environment_names().items():
        if name not in env:
            continue
        value = _env_value(env[name])
        section, _, key = option.rpartition(".")
        if section:
            sections[section][key] = value
        else:
            raw[option] = value
    raw.update(sections)
    for key, value in (overrides or {}).items():
        raw[key] = value
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        prefix = f"invalid configuration option {where}" if where else "invalid configuration"
        lines.append(f"{prefix}: {message}")
    return "; ".join(lines)
