"""The console in a real browser: an operator signs in, a press appears with the alarm, the operator finds the room
on the floor plan and acknowledges, and the escalation ladder stops. Refusals show as a user would meet them.

Playwright drives Debian's Chromium (headless). The gateway is the real one, over HTTPS with the test CA (the
browser context ignores that it does not know the CA); SMS go to the phone network simulator; the wearable presses
over BLE on the virtual air, heard by receivers in rooms of the example site map.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from playwright.async_api import Browser, Page, expect

from firmware_sim.air import Position, VirtualAir
from firmware_sim.ble_wearable import BleWearable
from firmware_sim.wearable import VirtualWearable
from gateway.config import LocationSettings
from gateway.identity.pki import PkiLayout, load_public_key
from gateway.store.models import Device, Incident, Ladder
from tests.conftest import http_client, post_frame
from tests.console.webclient import PASSWORD, add_user
from tests.escalation.conftest import PEOPLE, Scene, SceneFactory, step
from tests.location.test_e2e_location import ROOMS, SITES, receivers

#: How long the browser waits for what a person would see (generous: a loaded 2-core CI machine).
SEEN_MS: Final = 15_000
LAPTOP: Final = {"width": 1366, "height": 768}
PHONE: Final = {"width": 390, "height": 844}


def sections(air: VirtualAir) -> dict[str, Any]:
    """The location tests' receivers in rooms 213 and 214, and the example site map (with its floor plan)."""
    return {"ble": receivers(air), "location": LocationSettings(sites_file=SITES)}


async def ble_press(s: Scene, air: VirtualAir, pki: PkiLayout, at: Position) -> None:
    """The scene's wearer presses the button over BLE, standing at `at`; it keeps advertising until the gateway
    has placed the alert in a room (as a real wearable repeats its press until it is acknowledged)."""
    row = await Device.get(device_id=s.wearable.device_id)
    firmware = VirtualWearable(
        s.wearable.device_id, s.wearable.key, x509.load_pem_x509_certificate(row.cert_pem.encode()), device_dir=None
    )
    node = await air.add_node(f"wearable-{s.wearable.device_id}", at, expose=False)
    keys = load_public_key(pki.fleet_public), load_public_key(pki.ack_public)
    async with BleWearable(firmware, *keys, controller=node.controller) as ble:
        await ble.press()
        await s.observer.wait_for(lambda o: any(in_a_room(state) for state in o.states.values()), 30)


def in_a_room(state: dict[str, Any]) -> bool:
    location = state.get("location") or {}
    return bool((location.get("properties") or {}).get("place", {}).get("room"))


async def sign_in(page: Page, base: str, name: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/console/")
    await expect(page).to_have_url(re.compile(r"/console/login"))
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def new_page(browser: Browser, viewport: dict[str, int] = LAPTOP, **options: Any) -> Page:
    context = await browser.new_context(ignore_https_errors=True, viewport=viewport, **options)  # type: ignore[arg-type]
    return await context.new_page()


#: Every visible piece of text in `selector` whose contrast with what lies behind it is under WCAG AA (4.5:1).
LOW_CONTRAST_JS: Final = """(selector) => {
    const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    const luminance = (css) => {
        const [r, g, b] = css.match(/[\\d.]+/g).slice(0, 3).map(Number).map(channel);
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const behind = (el) => {
        for (; el; el = el.parentElement) {
            const parts = getComputedStyle(el).backgroundColor.match(/[\\d.]+/g);
            if (parts && (parts.length < 4 || Number(parts[3]) > 0.5)) return getComputedStyle(el).backgroundColor;
        }
        return 'rgb(255, 255, 255)';
    };
    const low = [];
    for (const el of document.querySelectorAll(selector)) {
        const text = [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
        if (!text || !el.getClientRects().length) continue;
        const [a, b] = [luminance(getComputedStyle(el).color), luminance(behind(el))];
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        if (ratio < 4.5) low.push(`${el.tagName} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1`);
    }
    return low;
}"""


async def test_an_operator_sees_the_press_finds_the_room_and_acknowledges_and_the_ladder_stops(
    browser: Browser, scene: SceneFactory, air: VirtualAir, pki: PkiLayout, artifacts: Path
) -> None:
    steps = step("sms", 20, "responder:ana") + step("sms", 20, "responder:bo")
    async with scene(steps, **sections(air)) as s:
        await s.observer.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in ROOMS), 20)
        await add_user("olga", "operator")
        page = await new_page(browser)
        await sign_in(page, s.gateway.http_url, "olga")
        await expect(page).to_have_url(re.compile(r"/console/$|/console/#"))
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=SEEN_MS)
        await expect(page.locator("#alarm")).not_to_have_attribute("data-active", "true")

        pressing = asyncio.create_task(ble_press(s, air, pki, Position("north", 2, 37.0, 3.0)))  # in the Lab
        row = page.locator("#board [data-alert-id]").first
        await expect(row).to_be_visible(timeout=SEEN_MS)
        alert_id = await row.get_attribute("data-alert-id")
        assert alert_id is not None
        await expect(page.locator("#alarm")).to_have_attribute("data-active", "true")
        await expect(page.locator("#alarm")).to_be_visible()
        await expect(row).to_contain_text("Ada Lovelace")
        await expect(row).to_contain_text(re.compile("NEW|NOTIFYING"))
        # The room is known a moment after the alert (location follows the alert, never delays it).
        await pressing
        await expect(row).to_contain_text("room 214", timeout=SEEN_MS)
        await page.screenshot(path=str(artifacts / "console-board.png"))

        await row.click()
        detail = page.locator("#detail")
        await expect(detail).to_have_attribute("data-alert-id", alert_id)
        await expect(detail).to_contain_text("Diabetic. Key in locker 4.")  # notes for responders
        await expect(detail).to_contain_text("room 214 (Lab)")
        plan = page.locator("#map img.leaflet-image-layer")
        await expect(plan).to_be_visible(timeout=SEEN_MS)
        assert (await plan.get_attribute("src") or "").endswith("/floors/2/plan")
        await expect(page.locator("#map .room-highlight")).to_have_count(1)
        await expect(page.locator("#timeline")).to_contain_text("Ana Guard", timeout=SEEN_MS)  # the first step's SMS
        assert await page.evaluate(LOW_CONTRAST_JS, "#detail *:not(#map *)") == []
        await page.screenshot(path=str(artifacts / "console-detail.png"))

        await page.locator("#ack-button").click()
        await expect(detail).to_contain_text("ACKNOWLEDGED", timeout=SEEN_MS)
        await expect(page.locator("#alarm")).not_to_have_attribute("data-active", "true")
        incident = await Incident.get(id=alert_id)
        assert (incident.state, incident.acknowledged_by) == ("acknowledged", "olga")
        ladder = await Ladder.get(incident_id=alert_id)
        assert not ladder.active and ladder.next_at is None  # no timer left: no further SMS or call
        alerted = [rid for rid in PEOPLE if any(t.startswith("PANIC") for t in s.texts_to(rid))]
        assert alerted == ["ana"]  # step 2 (Bo) never went out
        assert s.messages_to("bo") == 0


async def test_acknowledging_from_the_keyboard_and_a_phone_sized_screen(
    browser: Browser, scene: SceneFactory, air: VirtualAir, pki: PkiLayout, artifacts: Path
) -> None:
    async with scene(step("sms", 30, "responder:ana"), **sections(air)) as s:
        await s.observer.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in ROOMS), 20)
        await add_user("olga", "operator")
        page = await new_page(browser, PHONE, reduced_motion="reduce")  # and no flashing alarm
        await sign_in(page, s.gateway.http_url, "olga")
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=SEEN_MS)
        await ble_press(s, air, pki, Position("north", 2, 25.0, 3.0))
        row = page.locator("#board [data-alert-id]").first
        await expect(row).to_be_visible(timeout=SEEN_MS)
        alert_id = await row.get_attribute("data-alert-id")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]  # no sideways scrolling on a phone
        await page.screenshot(path=str(artifacts / "console-board-phone.png"))
        await expect(page.locator("#alarm")).to_have_attribute("data-active", "true")
        assert await page.evaluate(LOW_CONTRAST_JS, "body *") == []  # readable: WCAG AA contrast
        await page.keyboard.press("j")
        await page.keyboard.press("Enter")
        await expect(page.locator("#detail")).to_have_attribute("data-alert-id", alert_id or "")
        await page.keyboard.press("a")
        await expect(page.locator("#detail")).to_contain_text("ACKNOWLEDGED", timeout=SEEN_MS)
        assert (await Incident.get(id=alert_id)).state == "acknowledged"


async def test_refusals_as_a_user_meets_them(
    browser: Browser, scene: SceneFactory, air: VirtualAir, pki: PkiLayout
) -> None:
    async with scene(step("sms", 30, "responder:ana"), **sections(air)) as s:
        await s.observer.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in ROOMS), 20)
        await add_user("olga", "operator")
        await add_user("vic", "viewer")
        base = s.gateway.http_url
        page = await new_page(browser)
        # A wrong password: the form again, with the reason, and no way in.
        await sign_in(page, base, "olga", "not my password at all")
        await expect(page.get_by_role("alert")).to_contain_text("Wrong name or password")
        assert await page.evaluate(LOW_CONTRAST_JS, "body *") == []
        await page.goto(f"{base}/console/")
        await expect(page).to_have_url(re.compile(r"/console/login"))

        await ble_press(s, air, pki, Position("north", 2, 25.0, 3.0))
        (alert_id,) = s.observer.states
        # Signed in, but a request without the page's CSRF token (what a forged cross-site request looks like).
        await sign_in(page, base, "olga")
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=SEEN_MS)
        forged = await page.evaluate(
            """async (id) => {
                const r = await fetch(`/v1/incidents/${id}/ack`, {method: 'POST',
                    headers: {'Content-Type': 'application/json'}, body: '{}'});
                return [r.status, (await r.json()).reason];
            }""",
            alert_id,
        )
        assert forged == [403, "csrf-failed"]
        assert (await Incident.get(id=alert_id)).state != "acknowledged"

        # A viewer sees the alert but has no acknowledge button, and the server refuses it anyway.
        viewer = await new_page(browser)
        await sign_in(viewer, base, "vic")
        await viewer.goto(f"{base}/console/#/incidents/{alert_id}")
        await expect(viewer.locator("#detail")).to_have_attribute("data-alert-id", alert_id, timeout=SEEN_MS)
        await expect(viewer.locator("#ack-button")).not_to_be_visible()
        refused = await viewer.evaluate(
            """async (id) => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const r = await fetch(`/v1/incidents/${id}/ack`, {method: 'POST',
                    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: '{}'});
                return [r.status, (await r.json()).reason];
            }""",
            alert_id,
        )
        assert refused == [403, "forbidden"]
        assert (await Incident.get(id=alert_id)).state != "acknowledged"


async def test_fleet_views_and_an_admin_revoking_a_device_from_the_console(
    browser: Browser, scene: SceneFactory, air: VirtualAir, pki: PkiLayout, client_ssl: Any
) -> None:
    async with scene(step("sms", 30, "responder:ana"), **sections(air)) as s:
        await s.observer.wait_for(lambda o: all(o.status.get(n, {}).get("status") == "up" for n in ROOMS), 20)
        await ble_press(s, air, pki, Position("north", 2, 25.0, 3.0))
        await add_user("root", "admin")
        await add_user("olga", "operator")
        base = s.gateway.http_url

        operator = await new_page(browser)
        await sign_in(operator, base, "olga")
        await operator.goto(f"{base}/console/#/devices")
        device_row = operator.locator(f"#devices tr[data-device-id='{s.wearable.device_id}']")
        await expect(device_row).to_contain_text("VALID", timeout=SEEN_MS)
        await expect(device_row.locator("button.revoke")).to_have_count(0)  # operators do not revoke

        page = await new_page(browser)
        await sign_in(page, base, "root")
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=SEEN_MS)
        await page.keyboard.press("g")
        await page.keyboard.press("r")
        for name in ROOMS:
            await expect(page.locator("#receivers")).to_contain_text(name, timeout=SEEN_MS)
        await expect(page.locator("#receivers")).to_contain_text("UP")
        await page.keyboard.press("g")
        await page.keyboard.press("s")
        await expect(page.locator("#sites")).to_contain_text("North Plant", timeout=SEEN_MS)
        await expect(page.locator("#sites")).to_contain_text("Ada Lovelace")  # its open incident
        await page.keyboard.press("g")
        await page.keyboard.press("d")
        device_row = page.locator(f"#devices tr[data-device-id='{s.wearable.device_id}']")
        await expect(device_row).to_contain_text("Ada Lovelace", timeout=SEEN_MS)
        await expect(device_row).to_contain_text("rx-213")  # nearest receiver
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("lost on site")))
        await device_row.locator("button.revoke").click()
        await expect(device_row).to_contain_text("REVOKED", timeout=SEEN_MS)
        await expect(device_row).to_contain_text("lost on site")
        assert (await Device.get(device_id=s.wearable.device_id)).revoked_at is not None
        async with http_client(client_ssl) as http:
            status, body, _ = await post_frame(http, s.gateway, s.wearable.frame())
        assert (status, body["reason"]) == (403, "revoked")  # refused from now on
