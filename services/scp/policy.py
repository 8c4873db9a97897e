"""Access policy: which callers may associate and query worklists (DicomModalities and the Dicom* checks)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shared.config import Modality, Settings

# A-ASSOCIATE-RJ reasons (PS3.8 9.3.4, source 1 = DICOM UL service-user).
CALLING_AET_NOT_RECOGNIZED = 0x03
CALLED_AET_NOT_RECOGNIZED = 0x07

Resolver = Callable[[str], set[str]]


@dataclass(frozen=True)
class Refusal:
    """Why a caller is refused: `reason` for the log, `kind` a fixed word for metrics (never the AE title),
    `diagnostic` the A-ASSOCIATE-RJ reason when refused at association."""

    reason: str
    kind: str
    diagnostic: int = CALLING_AET_NOT_RECOGNIZED


def resolve_host(host: str) -> set[str]:
    """The addresses a configured host stands for (itself when it is an address or cannot be resolved)."""
    try:
        ipaddress.ip_address(host)
        return {host}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return {host}
    return {str(info[4][0]) for info in infos} | {host}


def _same_address(peer: str, addresses: set[str]) -> bool:
    # An IPv4 peer may reach a dual-stack listener as ::ffff:a.b.c.d.
    candidates = {peer}
    try:
        parsed = ipaddress.ip_address(peer)
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            candidates.add(str(parsed.ipv4_mapped))
    except ValueError:
        pass
    return bool(candidates & addresses)


class AccessPolicy:
    """Orthanc's rules: AE titles are compared without case and surrounding spaces, as Orthanc does by
    default (its StrictAetComparison is false).

    - DicomCheckCalledAet: the called AE title must be ours, else the association is rejected.
    - DicomCheckModalityHost: a caller using a known AE title must come from that modality's host, else
      the association is rejected (someone else is using a configured AE title).
    - DicomAlwaysAllowFindWorklist: when false, an AE title absent from DicomModalities may associate
      (C-ECHO keeps working, as Orthanc's DicomAlwaysAllowEcho does by default) but its C-FIND is refused.
    """

    def __init__(
        self,
        own_aet: str,
        modalities: Iterable[Modality],
        *,
        always_allow_find: bool,
        check_called_aet: bool,
        check_host: bool,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.own_aet = _key(own_aet)
        self.always_allow_find = always_allow_find
        self.check_called_aet = check_called_aet
        self.check_host = check_host
        self._hosts: dict[str, set[str]] = {}
        for modality in modalities:
            # Resolved once at start-up: association handling must not wait on DNS.
            addresses = resolver(modality.host) if check_host else {modality.host}
            self._hosts.setdefault(_key(modality.aet), set()).update(addresses)

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver = resolve_host) -> AccessPolicy:
        return cls(
            settings.dicom_aet,
            settings.dicom_modalities.values(),
            always_allow_find=settings.always_allow_find_worklist,
            check_called_aet=settings.check_called_aet,
            check_host=settings.check_modality_host,
            resolver=resolver,
        )

    def is_known(self, calling_aet: str) -> bool:
        return _key(calling_aet) in self._hosts

    def check_association(self, calling_aet: str, called_aet: str, peer_host: str) -> Refusal | None:
        """None when the association may proceed, else why it is rejected."""
        if self.check_called_aet and _key(called_aet) != self.own_aet:
            return Refusal(
                f"called AE title {called_aet.strip()!r} is not ours ({self.own_aet!r}) and "
                "DicomCheckCalledAet is true",
                "called_aet",
                CALLED_AET_NOT_RECOGNIZED,
            )
        hosts = self._hosts.get(_key(calling_aet))
        if self.check_host and hosts is not None and not _same_address(peer_host, hosts):
            return Refusal(
                f"calling AE title {calling_aet.strip()!r} is configured in DicomModalities for another host "
                "and DicomCheckModalityHost is true",
                "calling_aet_host",
            )
        return None

    def check_find(self, calling_aet: str) -> Refusal | None:
        """None when the caller may query the worklist, else why its C-FIND is refused."""
        if self.always_allow_find or self.is_known(calling_aet):
            return None
        return Refusal(
            f"calling AE title {calling_aet.strip()!r} is not in DicomModalities and "
            "DicomAlwaysAllowFindWorklist is false",
            "unknown_aet",
        )


def _key(aet: str) -> str:
    return aet.strip().upper()
