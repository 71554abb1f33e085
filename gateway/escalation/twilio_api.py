"""Twilio REST client construction: the library's async client, optionally aimed at a compatible local service."""

from __future__ import annotations

import base64
from typing import Any

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client


class _HeaderAuthHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """AsyncTwilioHttpClient that sends the Basic credentials as an Authorization header.

    The library wraps them in aiohttp.BasicAuth on every request, which aiohttp 3.14 deprecates (a warning per
    request, an error under the tests' filterwarnings). The header it sends is the same; the library's request
    log already leaves Authorization headers out.
    """

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the library's signature, passed on as it is)
        allow_redirects: bool = False,
    ) -> Any:
        if auth is not None:
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        return await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


def make_client(account_sid: str, auth_token: str, api_base_url: str | None) -> Client:
    """A `twilio.rest.Client` on aiohttp (for the `*_async` methods); call it inside the running event loop.

    `api_base_url` ("http://127.0.0.1:PORT", the phone network simulator) replaces https://api.twilio.com: the
    library builds every Messages/Calls URL, and each next-page URL, from its Api domain's `base_url`. Edge and
    region (TWILIO_EDGE/TWILIO_REGION) are dropped then, since they would rewrite that host. None: the real API.
    """
    client = Client(account_sid, auth_token, http_client=_HeaderAuthHttpClient())
    if api_base_url is not None:
        client.api.base_url = api_base_url.rstrip("/")
        client.edge = client.region = None
    return client


async def close_client(client: Client) -> None:
    """Close the client's aiohttp session (an unclosed one warns at garbage collection)."""
    await client.http_client.close()
