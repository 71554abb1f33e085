"""Headless Chromium (Debian's package, installed when missing) driven by Playwright, one browser per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from playwright.async_api import Browser, async_playwright

from tests import services
from tests.escalation.conftest import phone_ssl, scene  # noqa: F401  (the escalation scene, for the browser tests)
from tests.location.test_e2e_location import air  # noqa: F401  (receivers in two rooms of the example site)

#: Screenshots and other evidence the CI keeps (git-ignored).
ARTIFACTS: Final = Path(os.environ.get("PANIC_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
#: As the machine's notes advise: no background traffic (the network is closed), no GPU, no sandbox as root.
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return services.ensure_chromium()


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
