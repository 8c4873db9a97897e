"""Access policy of the SCP: DicomModalities, DicomAlwaysAllowFindWorklist, DicomCheckCalledAet and
DicomCheckModalityHost, as a modality or an administrator would see them."""

from __future__ import annotations

from typing import Any

from services.scp.policy import CALLED_AET_NOT_RECOGNIZED, CALLING_AET_NOT_RECOGNIZED, AccessPolicy
from shared.config import load_settings


def policy(**options: Any) -> AccessPolicy:
    settings = load_settings(environ={}, overrides=options)
    hosts = {"ct.example": {"10.0.0.5"}}
    return AccessPolicy.from_settings(settings, resolver=lambda host: hosts.get(host, {host}))


MODALITIES = {"ct": ["CT01", "ct.example", 104], "mr": ["MR01", "10.0.0.7", 104]}


def test_defaults_let_any_caller_query() -> None:
    p = policy()
    assert p.check_association("ANYONE", "WHATEVER", "192.0.2.1") is None
    assert p.check_find("ANYONE") is None


def test_unknown_caller_refused_find_when_not_always_allowed() -> None:
    p = policy(DicomModalities=MODALITIES, DicomAlwaysAllowFindWorklist=False)
    # The association itself is accepted, so C-ECHO still works (Orthanc's DicomAlwaysAllowEcho default).
    assert p.check_association("STRANGER", "ORTHANC", "192.0.2.1") is None
    refusal = p.check_find("STRANGER")
    assert refusal is not None
    assert "DicomAlwaysAllowFindWorklist" in refusal.reason
    assert "STRANGER" in refusal.reason


def test_known_caller_may_query_when_not_always_allowed() -> None:
    p = policy(DicomModalities=MODALITIES, DicomAlwaysAllowFindWorklist=False)
    assert p.check_find("CT01") is None
    # AE titles compare like Orthanc's default (StrictAetComparison false): no case, no padding.
    assert p.check_find(" ct01 ") is None


def test_called_aet_checked_only_when_configured() -> None:
    assert policy().check_association("CT01", "OTHER", "127.0.0.1") is None
    p = policy(DicomCheckCalledAet=True, DicomAet="MWL")
    refusal = p.check_association("CT01", "OTHER", "127.0.0.1")
    assert refusal is not None
    assert refusal.diagnostic == CALLED_AET_NOT_RECOGNIZED
    assert "DicomCheckCalledAet" in refusal.reason
    assert p.check_association("CT01", "MWL ", "127.0.0.1") is None


def test_modality_host_checked_only_when_configured() -> None:
    assert policy(DicomModalities=MODALITIES).check_association("CT01", "ORTHANC", "192.0.2.9") is None
    p = policy(DicomModalities=MODALITIES, DicomCheckModalityHost=True)
    refusal = p.check_association("CT01", "ORTHANC", "192.0.2.9")
    assert refusal is not None
    assert refusal.diagnostic == CALLING_AET_NOT_RECOGNIZED
    assert "DicomCheckModalityHost" in refusal.reason
    # Configured by host name: its resolved address is accepted, also as an IPv4-mapped IPv6 peer.
    assert p.check_association("CT01", "ORTHANC", "10.0.0.5") is None
    assert p.check_association("CT01", "ORTHANC", "::ffff:10.0.0.5") is None
    assert p.check_association("MR01", "ORTHANC", "10.0.0.7") is None


def test_host_check_leaves_unknown_callers_to_the_find_rule() -> None:
    p = policy(DicomModalities=MODALITIES, DicomCheckModalityHost=True)
    assert p.check_association("STRANGER", "ORTHANC", "192.0.2.9") is None


def test_same_aet_on_two_hosts() -> None:
    modalities = {"a": ["US01", "10.0.0.1", 104], "b": ["US01", "10.0.0.2", 104]}
    p = policy(DicomModalities=modalities, DicomCheckModalityHost=True)
    assert p.check_association("US01", "ORTHANC", "10.0.0.2") is None
    assert p.check_association("US01", "ORTHANC", "10.0.0.3") is not None
