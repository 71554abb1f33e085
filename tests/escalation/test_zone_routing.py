"""The zone picks the escalation policy: a press in the loading yard escalates by the yard's policy."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

from gateway.config import LocationSettings
from gateway.protocol import EventType, GpsFix
from tests.conftest import http_client, post_frame
from tests.escalation.conftest import WAIT_S, SceneFactory, step

SITES: Final = Path(__file__).parents[2] / "deploy" / "sites.example.geojson"
#: Besides the site-wide policy (to Ana), the yard has its own (to Bo).
YARD_POLICY: Final = '[[policies]]\nid = "north-yard"\nsite = "north"\nzone = "yard"\n\n' + step(
    "sms", 600, "responder:bo"
)


async def test_a_press_in_a_zone_with_its_own_policy_escalates_by_it(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    steps = step("sms", 600, "responder:ana")
    async with scene(steps, location=LocationSettings(sites_file=SITES), extra_policies=YARD_POLICY) as s:
        in_yard = GpsFix(52.5189, 13.4000, 12, 5)
        async with http_client(client_ssl) as http:
            status, _, _ = await post_frame(http, s.gateway, s.wearable.frame(EventType.PANIC, gps=in_yard))
            assert status == 202
            await s.net.wait_for(lambda n: len(s.handsets["bo"].inbox) == 1, WAIT_S)
            elsewhere = GpsFix(52.5203, 13.4015, 12, 5)  # in the site, outside the yard
            status, _, _ = await post_frame(http, s.gateway, s.wearable.frame(EventType.PANIC, gps=elsewhere))
            assert status == 202
            await s.net.wait_for(lambda n: len(s.handsets["ana"].inbox) == 1, WAIT_S)
        assert len(s.handsets["bo"].inbox) == 1
