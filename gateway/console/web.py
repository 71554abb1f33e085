"""The operators' web console: sign-in and sign-out, the console page, its assets, and `GET /v1/me` (aiohttp).

Sessions live in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS); the page's script sends the session's
CSRF token with every change (gateway.console.access checks it). The sign-in form has its own CSRF token, keyed by
a short-lived pre-session cookie, so that another site cannot sign a browser in to an account of its choosing.
"""

from __future__ import annotations

import hashlib
import html
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from string import Template
from typing import Final

import structlog
from aiohttp import web
from tortoise.exceptions import BaseORMException

from gateway.config import ConsoleSettings
from gateway.console.access import CSRF_FIELD, SESSION_COOKIE, Access, Principal, own_origin
from gateway.console.auth import Action, LoginThrottle, can, csrf_ok, csrf_token
from gateway.console.store import SESSION_LIFETIME, audit, authenticate, create_session, end_session
from gateway.ingest.http import problem
from gateway.observability import Metrics

log = structlog.get_logger(__name__)

HERE: Final = Path(__file__).resolve().parent
TEMPLATES: Final = HERE / "templates"
STATIC: Final = HERE / "static"
#: Where `npm ci` puts Leaflet in a checkout (package.json at the repository root).
DEFAULT_LEAFLET: Final = HERE.parents[1] / "node_modules" / "leaflet" / "dist"
LOGIN_COOKIE: Final = "panic_login"
LOGIN_COOKIE_LIFETIME: Final = timedelta(hours=1)
HOME: Final = "/console/"
LOGIN: Final = "/console/login"
MAX_FORM_FIELD: Final = 512
WRONG: Final = "Wrong name or password."


def content_security_policy() -> str:
    """Only the gateway's own scripts and styles; images also from HTTPS (map tiles, floor plans by URL)."""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )


def _version() -> str:
    """Changes whenever a console asset does, so browsers never run a stale script against a new server."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.glob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class ConsoleDeps:
    settings: ConsoleSettings
    access: Access
    metrics: Metrics


class ConsoleWeb:
    """`/console/...` pages and assets, and `/v1/me`."""

    def __init__(self, deps: ConsoleDeps) -> None:
        self._deps = deps
        self._access = deps.access
        self._throttle = LoginThrottle()
        self._templates = {
            name: Template((TEMPLATES / f"{name}.html").read_text("utf-8")) for name in ("login", "console")
        }
        self._version = _version()
        self.leaflet_dir = deps.settings.leaflet_dir or DEFAULT_LEAFLET
        if not (self.leaflet_dir / "leaflet.js").is_file():
            log.error(
                "console map library missing: run `npm ci` (or set console.leaflet_dir)", dir=str(self.leaflet_dir)
            )

    def routes(self) -> list[web.AbstractRouteDef]:
        routes: list[web.AbstractRouteDef] = [
            web.get("/", self.root),
            web.get("/console", self.root),
            web.get(HOME, self.page),
            web.get(LOGIN, self.login_form),
            web.post(LOGIN, self.login),
            web.post("/console/logout", self.logout),
            web.get("/v1/me", self._access.guard(Action.VIEW)(self.me)),
            web.static("/console/static", STATIC),
        ]
        if self.leaflet_dir.is_dir():
            routes.append(web.static("/console/vendor/leaflet", self.leaflet_dir))
        return routes

    # --- pages ---------------------------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.StreamResponse:
        return _see_other(HOME)

    async def page(self, request: web.Request) -> web.StreamResponse:
        try:
            principal = await self._access.principal(request)
        except (BaseORMException, OSError):
            return problem(503, "unavailable", "the gateway cannot check sessions now; retry", retry_after=2)
        if principal is None or principal.via != "session":
            return _see_other(LOGIN)
        csrf = self._access.csrf_for(principal) or ""
        config = json.dumps(self._console_config(), separators=(",", ":"))
        body = self._render(
            "console",
            csrf_token=csrf,
            config_json=config,
            operator_name=principal.name,
            operator_display=principal.display_name,
            role=principal.role.value,
        )
        return self._html(body)

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        principal = await self._access.principal(request)
        if principal is not None and principal.via == "session":
            return _see_other(HOME)
        return self._login_page(request, status=200)

    async def login(self, request: web.Request) -> web.StreamResponse:
        address = request.remote or "unknown"
        origin = request.headers.get("Origin")
        form = await request.post()
        name = _field(form, "name").strip().lower()
        password = _field(form, "password")
        pre_session = request.cookies.get(LOGIN_COOKIE, "")
        given = _field(form, CSRF_FIELD)
        foreign = origin is not None and origin != own_origin(request)
        if foreign or not pre_session or not csrf_ok(pre_session, given, self._access.csrf_secret):
            why = "sign-in from a foreign origin" if foreign else "missing or wrong CSRF token: reload the sign-in page"
            return self._access.refuse(request, 403, "csrf-failed", why, who=name[:64])
        wait = self._throttle.check(name, address, time.monotonic())
        if wait > 0:
            self._deps.metrics.api_refusals.labels("too-many-attempts").inc()
            log.warning("sign-in throttled", name=name[:64], peer=address)
            await audit(name[:64] or "-", "login.throttled", name[:128], address=address)
            response = self._login_page(request, status=429, name=name, error=f"Too many attempts. Wait {wait:.0f} s.")
            response.headers["Retry-After"] = str(max(1, round(wait)))
            return response
        operator = await authenticate(name, password, address) if name and password else None
        if operator is None:
            self._deps.metrics.api_refusals.labels("unauthorized").inc()
            log.info("sign-in refused", name=name[:64], peer=address)
            return self._login_page(request, status=401, name=name, error=WRONG)
        token = await create_session(operator, address)
        response = _see_other(_safe_next(_field(form, "next")))
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(SESSION_LIFETIME.total_seconds()),
            path="/",
            secure=request.secure,
            httponly=True,
            samesite="Strict",
        )
        response.del_cookie(LOGIN_COOKIE, path=LOGIN)
        log.info("signed in", operator=operator.name, role=operator.role, peer=address)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        outcome = await self._access.check(request, Action.VIEW)
        if isinstance(outcome, web.Response):
            if outcome.status == 401:  # no session any more: already signed out
                return _see_other(LOGIN)
            return outcome
        if outcome.session_token is not None:
            await end_session(outcome.session_token)
            await audit(outcome.name, "logout", outcome.name, address=request.remote or "")
        response = _see_other(LOGIN)
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def me(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        return web.json_response(
            {
                "name": principal.name,
                "display_name": principal.display_name,
                "role": principal.role.value,
                "via": principal.via,
                "permissions": [a.value for a in Action if can(principal.role, a)],
                "csrf_token": self._access.csrf_for(principal),
                "console": self._console_config(),
            },
            headers={"Cache-Control": "no-store"},
        )

    # --- helpers -------------------------------------------------------------------------------------------

    def _console_config(self) -> dict[str, object]:
        s = self._deps.settings
        return {"tile_url": s.tile_url, "tile_attribution": s.tile_attribution, "tile_max_zoom": s.tile_max_zoom}

    def _login_page(self, request: web.Request, *, status: int, name: str = "", error: str = "") -> web.Response:
        pre_session = request.cookies.get(LOGIN_COOKIE, "")
        fresh = not pre_session or len(pre_session) > MAX_FORM_FIELD
        if fresh:
            pre_session = secrets.token_urlsafe(32)
        body = self._render(
            "login",
            csrf_token=csrf_token(pre_session, self._access.csrf_secret),
            next=_safe_next(request.query.get("next", "")),
            name=name[:64],
            error=error,
        )
        response = self._html(body, status=status)
        if fresh:
            response.set_cookie(
                LOGIN_COOKIE,
                pre_session,
                max_age=int(LOGIN_COOKIE_LIFETIME.total_seconds()),
                path=LOGIN,
                secure=request.secure,
                httponly=True,
                samesite="Strict",
            )
        return response

    def _render(self, template: str, **values: str) -> str:
        escaped = {k: html.escape(v, quote=True) for k, v in values.items()}
        return self._templates[template].substitute(escaped, version=self._version)

    @staticmethod
    def _html(body: str, *, status: int = 200) -> web.Response:
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            headers={
                "Content-Security-Policy": content_security_policy(),
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "same-origin",
            },
        )


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _field(form: Mapping[str, object], name: str) -> str:
    """A text field of a posted form, cut to MAX_FORM_FIELD ("" when absent or a file)."""
    value = form.get(name)
    return value[:MAX_FORM_FIELD] if isinstance(value, str) else ""


def _safe_next(target: str) -> str:
    """Only a path of the console itself: never another site (an open redirect would help phishing)."""
    if target.startswith(HOME) and not target.startswith("//") and "\\" not in target and "\n" not in target:
        return target
    return HOME


__all__ = ["ConsoleDeps", "ConsoleWeb", "content_security_policy"]
