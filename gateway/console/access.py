"""Who is asking, and may they: bearer tokens and console sessions, roles, CSRF and Origin checks (aiohttp adapter).

Every REST and console handler is wrapped by `Access.guard(action)`: the handler runs with a `Principal` only when
the request is authenticated, its role may perform `action`, and, for a state-changing request made with the
session cookie, it carries the session's CSRF token and no foreign Origin. Refusals are problem+json and counted.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal

import structlog
from aiohttp import web
from tortoise.exceptions import BaseORMException

from gateway.config import ApiSettings, ConsoleSettings
from gateway.console.auth import Action, Role, can, csrf_ok, csrf_token
from gateway.console.store import lookup_api_token, lookup_session
from gateway.ingest.http import problem
from gateway.observability import Metrics

log = structlog.get_logger(__name__)

SESSION_COOKIE: Final = "panic_session"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf"
#: Methods that change nothing: no CSRF token needed (RFC 9110's safe methods).
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: Tokens from the settings' `[api] tokens` act with this role.
SETTINGS_TOKEN_ROLE: Final = Role.OPERATOR
#: A token or cookie longer than this is not one of ours (and is not hashed).
MAX_CREDENTIAL_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: an operator signed in to the console, or a machine with a bearer token."""

    name: str
    display_name: str
    role: Role
    via: Literal["session", "token"]
    #: The session cookie's token (sessions only): keys its CSRF token.
    session_token: str | None = None

    def may(self, action: Action) -> bool:
        return can(self.role, action)


Guarded = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access:
    """Authenticates requests and checks permissions (one per gateway)."""

    def __init__(self, api: ApiSettings, console: ConsoleSettings, metrics: Metrics) -> None:
        self._settings_tokens = [(name, token.get_secret_value().encode()) for name, token in api.tokens.items()]
        secret = console.secret.get_secret_value().encode() if console.secret is not None else None
        self.csrf_secret: bytes = secret or secrets.token_bytes(32)
        self._metrics = metrics

    def csrf_for(self, principal: Principal) -> str | None:
        """The CSRF token a page of this session carries (None for bearer clients)."""
        if principal.session_token is None:
            return None
        return csrf_token(principal.session_token, self.csrf_secret)

    async def principal(self, request: web.Request) -> Principal | None:
        """Who sent `request`: a bearer token wins over a cookie; None when neither is valid."""
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > MAX_CREDENTIAL_CHARS:
                return None
            return await self._bearer(token)
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not cookie or len(cookie) > MAX_CREDENTIAL_CHARS:
            return None
        session = await lookup_session(cookie)
        if session is None:
            return None
        operator = session.operator
        return Principal(operator.name, operator.display_name, Role(operator.role), "session", cookie)

    async def _bearer(self, token: str) -> Principal | None:
        offered = token.encode()
        found = None
        for name, secret in self._settings_tokens:  # compare with every one: the time does not tell which matched
            if hmac.compare_digest(offered, secret):
                found = name
        if found is not None:
            return Principal(found, found, SETTINGS_TOKEN_ROLE, "token")
        row = await lookup_api_token(token)  # by SHA-256: the lookup time does not depend on the token's bytes
        if row is None:
            return None
        return Principal(row.name, row.name, Role(row.role), "token")

    async def check(self, request: web.Request, action: Action) -> Principal | web.Response:
        """The caller when it may perform `action`, else the refusal to send."""
        try:
            principal = await self.principal(request)
        except (BaseORMException, OSError) as exc:
            log.error("credentials could not be checked", path=request.path, error=str(exc))
            return problem(503, "unavailable", "the gateway cannot check credentials now; retry", retry_after=2)
        if principal is None:
            return self.refuse(
                request, 401, "unauthorized", "sign in, or send Authorization: Bearer <token> with a valid token"
            )
        if request.method not in SAFE_METHODS and principal.via == "session":
            why = await self._csrf_problem(request, principal)
            if why is not None:
                return self.refuse(request, 403, "csrf-failed", why, who=principal.name)
        if not principal.may(action):
            detail = f"role {principal.role.value} may not {action.value.replace('_', ' ')}"
            return self.refuse(request, 403, "forbidden", detail, who=principal.name)
        return principal

    async def _csrf_problem(self, request: web.Request, principal: Principal) -> str | None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != own_origin(request):
            return f"request from a foreign origin {origin[:80]}"
        given = request.headers.get(CSRF_HEADER)
        if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            field = form.get(CSRF_FIELD)
            given = field if isinstance(field, str) else None
        assert principal.session_token is not None
        if not given or not csrf_ok(principal.session_token, given, self.csrf_secret):
            return "missing or wrong CSRF token: reload the console"
        return None

    def refuse(self, request: web.Request, status: int, reason: str, detail: str, *, who: str = "") -> web.Response:
        """A counted, logged refusal (problem+json)."""
        self._metrics.api_refusals.labels(reason).inc()
        log.info("request refused", path=request.path, method=request.method, reason=reason, who=who)
        response = problem(status, reason, detail)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="panic-gateway"'
        return response

    def guard(self, action: Action) -> Callable[[Guarded], Handler]:
        """Decorate a handler `(request, principal)` so that it runs only for callers allowed `action`."""

        def wrap(handler: Guarded) -> Handler:
            async def checked(request: web.Request) -> web.StreamResponse:
                outcome = await self.check(request, action)
                if isinstance(outcome, web.Response):
                    return outcome
                return await handler(request, outcome)

            return checked

        return wrap


def own_origin(request: web.Request) -> str:
    """scheme://host[:port] of the gateway as the client addressed it."""
    return f"{request.scheme}://{request.host}"


__all__ = ["CSRF_FIELD", "CSRF_HEADER", "SESSION_COOKIE", "Access", "Principal", "own_origin"]
