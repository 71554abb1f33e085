"""A console user over real HTTPS: signs in through the form like a browser, keeps the cookie, reads the stream."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from gateway.app import RunningGateway
from gateway.console.auth import ScryptParams
from gateway.console.store import add_operator

PASSWORD: Final = "correct horse battery staple"
#: Cheap hashing for test accounts (the first sign-in re-hashes with the real parameters).
FAST: Final = ScryptParams(2**10, 8, 1)
_INPUT: Final = re.compile(r"<input\b[^>]*>", re.IGNORECASE)


def hidden_field(page: str, name: str) -> str:
    """The value of the form input called `name` in an HTML page."""
    for tag in _INPUT.findall(page):
        if re.search(rf'\bname="{re.escape(name)}"', tag):
            found = re.search(r'\bvalue="([^"]*)"', tag)
            if found:
                return found.group(1)
    raise AssertionError(f"no input {name!r} in the page")


def meta(page: str, name: str) -> str:
    found = re.search(rf'<meta\s+name="{re.escape(name)}"\s+content="([^"]*)"', page)
    assert found is not None, f"no meta {name!r}"
    return found.group(1)


@dataclass
class ConsoleUser:
    """A browser-like client: a cookie jar that keeps cookies for 127.0.0.1, and the page's CSRF token."""

    gw: RunningGateway
    http: aiohttp.ClientSession
    csrf: str = ""

    @property
    def base(self) -> str:
        return self.gw.http_url

    async def login_page(self) -> str:
        async with self.http.get(f"{self.base}/console/login") as r:
            assert r.status == 200
            return await r.text()

    async def sign_in(self, name: str, password: str = PASSWORD, *, csrf: str | None = None) -> aiohttp.ClientResponse:
        """Post the sign-in form (the token from a fresh form unless `csrf` is given); the raw answer, not followed."""
        if csrf is None:
            csrf = hidden_field(await self.login_page(), "csrf")
        form = {"name": name, "password": password, "csrf": csrf, "next": "/console/"}
        async with self.http.post(f"{self.base}/console/login", data=form, allow_redirects=False) as r:
            await r.read()
            return r

    async def open_console(self) -> str:
        async with self.http.get(f"{self.base}/console/", allow_redirects=False) as r:
            assert r.status == 200, r.status
            page = await r.text()
        self.csrf = meta(page, "csrf-token")
        return page

    async def call(self, method: str, path: str, *, csrf: bool = True, **kw: Any) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        async with self.http.request(method, f"{self.base}{path}", headers=headers, **kw) as r:
            raw = await r.read()
            body = json.loads(raw) if raw and r.content_type.endswith("json") else raw.decode()
            return r.status, body


@asynccontextmanager
async def console_user(gw: RunningGateway, ssl_ctx: ssl.SSLContext) -> AsyncIterator[ConsoleUser]:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host, as browsers do
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx), cookie_jar=jar) as http:
        yield ConsoleUser(gw, http)


async def add_user(name: str, role: str) -> None:
    await add_operator(name, name.title(), role, PASSWORD, params=FAST)


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of each server-sent event on an open stream."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in fields:
                yield fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"])
            fields = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        fields[key] = value.removeprefix(" ")
