"""REST authentication and roles: HTTP Basic for RegisteredUsers, static bearer tokens for ApiTokens.

Off unless AuthenticationEnabled. Then every route needs credentials except the probes and metrics
(PUBLIC_PATHS: Kubernetes and Prometheus do not authenticate, and none of them carries patient data);
the web UI and its event stream included, so a browser asks for a user name and password once and sends
them with the page's own requests. A read-only caller may only read (SAFE_METHODS).

Secrets are compared as keyed digests with hmac.compare_digest, against every configured user or token
without stopping at the first match, so that neither a name nor a secret can be guessed from response times.
Failures are logged with the user name and the remote address, never the password or token.

Independently of authentication, a write that a browser says comes from another site is refused: a
browser sends remembered Basic credentials (and reaches a loopback-only server) whichever page asked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from services.api.errors import error_response
from shared.config import ApiToken, RegisteredUser, Role, Settings

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REALM = "mwl"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Longest user name quoted in a log line (a hostile client chooses it).
_LOGGED_NAME = 64


@dataclass(frozen=True)
class Principal:
    """Who made a request: a registered user (Basic) or an API token's name (Bearer), and the role."""

    name: str
    role: Role
    scheme: str

    @property
    def can_write(self) -> bool:
        return self.role == "read-write"


PRINCIPAL = web.RequestKey("principal", Principal)


class AuthFailure(Exception):
    """Credentials were sent but are not valid: `reason` for the log, `user` as sent (Basic)."""

    def __init__(self, reason: str, *, user: str | None = None, bearer: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user = user
        self.bearer = bearer


class Credentials:
    """The configured users and tokens, held as digests under a key made at start-up.

    Comparing fixed-length digests keeps hmac.compare_digest's time independent of the lengths, which it
    would otherwise reveal; the key keeps the digests from being those of any other system.
    """

    def __init__(self, users: dict[str, RegisteredUser], tokens: Iterable[ApiToken]) -> None:
        self._key = secrets.token_bytes(32)
        self._users: list[tuple[bytes, bytes, Principal]] = []
        for name, user in users.items():
            password = self._digest(user.password.get_secret_value().encode())
            self._users.append((self._digest(name.encode()), password, Principal(name, user.role, "basic")))
        self._tokens: list[tuple[bytes, Principal]] = []
        for index, token in enumerate(tokens):
            principal = Principal(token.name or f"token {index + 1}", token.role, "bearer")
            self._tokens.append((self._digest(token.token.get_secret_value().encode()), principal))

    @property
    def accepts_basic(self) -> bool:
        return bool(self._users)

    @property
    def accepts_bearer(self) -> bool:
        return bool(self._tokens)

    def _digest(self, value: bytes) -> bytes:
        return hmac.new(self._key, value, hashlib.sha256).digest()

    def basic(self, user: bytes, password: bytes) -> Principal | None:
        """The user whose name and password both match; every user is compared, whatever matched before."""
        user_digest, password_digest = self._digest(user), self._digest(password)
        found: Principal | None = None
        for name, secret, principal in self._users:
            # `&`, not `and`: the password is compared even when the name differs.
            if hmac.compare_digest(name, user_digest) & hmac.compare_digest(secret, password_digest):
                found = principal
        return found

    def bearer(self, token: bytes) -> Principal | None:
        """The token that matches; every token is compared, whatever matched before."""
        token_digest = self._digest(token)
        found: Principal | None = None
        for secret, principal in self._tokens:
            if hmac.compare_digest(secret, token_digest):
                found = principal
        return found

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The caller of an Authorization header: None when there is none, AuthFailure when it is wrong."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic" and self.accepts_basic:
            user, password = _basic_pair(value)
            principal = self.basic(user, password)
            if principal is None:
                raise AuthFailure("wrong user name or password", user=_printable(user))
            return principal
        if scheme.lower() == "bearer" and self.accepts_bearer:
            principal = self.bearer(value.encode("utf-8", "surrogateescape"))
            if principal is None:
                raise AuthFailure("unknown bearer token", bearer=True)
            return principal
        shown = _printable(scheme.encode("utf-8", "surrogateescape"))
        raise AuthFailure(f"authorization scheme {shown} not accepted")


def _basic_pair(value: str) -> tuple[bytes, bytes]:
    try:
        decoded = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise AuthFailure("malformed Basic credentials (not base64)") from None
    user, colon, password = decoded.partition(b":")
    if not colon:
        raise AuthFailure("malformed Basic credentials (no ':')")
    return user, password


def _printable(raw: bytes) -> str:
    """A caller-chosen name as it can go into a log line: quoted, escaped, bounded."""
    text = raw.decode("utf-8", "replace")
    return repr(text[:_LOGGED_NAME] + ("…" if len(text) > _LOGGED_NAME else ""))


def cross_site_write(request: web.Request) -> str | None:
    """Why a write is refused as coming from another site's page, or None.

    Browsers say where a request comes from: Sec-Fetch-Site (computed by the browser, so right behind any
    proxy), else Origin, compared with Host or X-Forwarded-Host. Clients that send neither (curl, a RIS, a
    script) are not browsers, and so not the target of cross-site request forgery.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return None if site in ("same-origin", "none") else f"Sec-Fetch-Site: {site[:32]}"
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return None
    hosts = {request.host.lower()}
    for forwarded in request.headers.getall(hdrs.X_FORWARDED_HOST, []):
        hosts.update(part.strip().lower() for part in forwarded.split(","))
    netloc = urlsplit(origin).netloc.lower() if origin != "null" else ""
    return None if netloc and netloc in hosts else f"Origin: {origin[:128]}"


def _challenge(request: web.Request, credentials: Credentials, failure: AuthFailure | None) -> web.Response:
    message = "Authentication required" if failure is None else "Invalid credentials"
    response = error_response(request, 401, message)
    if credentials.accepts_basic:
        response.headers.add(hdrs.WWW_AUTHENTICATE, f'Basic realm="{REALM}"')
    if credentials.accepts_bearer:
        invalid = failure is not None and failure.bearer
        error = ', error="invalid_token"' if invalid else ""  # RFC 6750 3.1
        response.headers.add(hdrs.WWW_AUTHENTICATE, f'Bearer realm="{REALM}"{error}')
    return response


def _log_mode(settings: Settings) -> None:
    if settings.authentication_enabled:
        logger.info(
            "REST authentication on: %d user(s), %d token(s); /healthz, /readyz and /metrics stay open",
            len(settings.registered_users),
            len(settings.api_tokens),
        )
        return
    if settings.registered_users or settings.api_tokens:
        logger.warning("RegisteredUsers or ApiTokens are set, but ignored: AuthenticationEnabled is false")
    elif not _is_loopback(settings.bind_address):
        logger.warning(
            "REST authentication is off (AuthenticationEnabled false) and the API listens on %s: "
            "anyone who reaches it can read and change worklists",
            settings.bind_address,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_middleware(settings: Settings) -> Middleware:
    """After the metrics and error middlewares: refusals are counted and answered in Orthanc's shape."""
    _log_mode(settings)
    credentials = None
    if settings.authentication_enabled:
        credentials = Credentials(settings.registered_users, settings.api_tokens)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        writes = request.method not in SAFE_METHODS
        if writes and (source := cross_site_write(request)):
            logger.warning(
                "%s %s from %s refused: sent by another site's page (%s)",
                request.method,
                request.path,
                request.remote,
                source,
                extra={"remote": request.remote, "refusal": "cross_site"},
            )
            return error_response(request, 403, "Cross-site request refused")
        if credentials is None or request.path in PUBLIC_PATHS:
            return await handler(request)
        try:
            principal = credentials.authenticate(request.headers.get(hdrs.AUTHORIZATION))
        except AuthFailure as failure:
            logger.warning(
                "REST authentication failed for %s from %s: %s",
                failure.user or "a caller",
                request.remote,
                failure.reason,
                extra={"user": failure.user, "remote": request.remote, "refusal": "authentication"},
            )
            return _challenge(request, credentials, failure)
        if principal is None:
            logger.debug("%s %s from %s without credentials", request.method, request.path, request.remote)
            return _challenge(request, credentials, None)
        if writes and not principal.can_write:
            logger.warning(
                "%s %s by %r from %s refused: read-only role",
                request.method,
                request.path,
                principal.name,
                request.remote,
                extra={"user": principal.name, "remote": request.remote, "refusal": "read_only"},
            )
            return error_response(request, 403, f"{principal.name} has the read-only role")
        request[PRINCIPAL] = principal  # for views that record who did what
        response = await handler(request)
        if writes:
            # The audit trail of changes: who, what, the outcome (the path holds an item id, no patient data).
            logger.info(
                "%s %s by %r: %d",
                request.method,
                request.path,
                principal.name,
                response.status,
                extra={"user": principal.name, "remote": request.remote, "status": response.status},
            )
        return response

    return middleware
