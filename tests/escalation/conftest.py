"""Escalation scenes: the real gateway with Twilio pointed at the phone network simulator, over real HTTPS."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from pydantic import SecretStr

from firmware_sim.phonenet import Behaviour, EventKind, Handset, PhoneNetwork
from gateway.app import RunningGateway
from gateway.config import ApiSettings, EscalationSettings, HttpSettings, TwilioSettings
from gateway.identity.pki import PkiLayout
from gateway.store.models import Incident
from tests import services
from tests.conftest import Observer, Wearable, enroll, observe

ACCOUNT_SID: Final = "AC" + "5" * 32
AUTH_TOKEN: Final = "test-auth-token-" + "x" * 16
GATEWAY_NUMBER: Final = "+15550000000"
API_TOKEN: Final = "api-token-for-tests-0123456789"
WEARER_PHONE: Final = "+15557770001"
#: Responders of site "north" (tests/conftest.py enrols devices there).
PEOPLE: Final = {
    "ana": ("Ana Guard", "+15551230001"),
    "bo": ("Bo Guard", "+15551230002"),
    "cy": ("Cy Guard", "+15551230003"),
    "sam": ("Sam Super", "+15551230009"),
}
WAIT_S: Final = 20.0


def directory_toml(steps: str, *, max_messages: int = 20) -> str:
    """People of site north and one policy for it made of `steps` ([[policies.steps]] tables)."""
    people = "".join(
        f'[[responders]]\nid = "{rid}"\nname = "{name}"\nphone = "{phone}"\nsites = ["north"]\n'
        f"supervisor = {'true' if rid == 'sam' else 'false'}\n\n"
        for rid, (name, phone) in PEOPLE.items()
    )
    wearer = (
        '[[wearers]]\ndevice = "{device}"\nnotes = "Diabetic. Key in locker 4."\n'
        'contacts = [{ name = "Sam Lovelace", phone = "+15557654321", relation = "son" }]\n\n'
    )
    policy = (
        f'[[policies]]\nid = "north-default"\nsite = "north"\nsupervisor = "sam"\nmax_messages = {max_messages}\n\n'
    )
    return people + wearer + policy + steps


def step(channel: str, wait_s: float, *targets: str) -> str:
    quoted = ", ".join(f'"{t}"' for t in targets)
    lines = f'[[policies.steps]]\nchannel = "{channel}"\nwait_s = {wait_s}\n'
    return lines + (f"targets = [{quoted}]\n" if targets else "") + "\n"


@dataclass
class Scene:
    """A running gateway with a policy, the phone network, a command-center observer and one enrolled wearable."""

    gateway: RunningGateway
    net: PhoneNetwork
    observer: Observer
    wearable: Wearable
    handsets: dict[str, Handset]

    def texts_to(self, rid: str) -> list[str]:
        return [m.body for m in self.handsets[rid].inbox]

    def messages_to(self, rid: str) -> int:
        """Messages the gateway created to a person (API requests that made a Message)."""
        phone = PEOPLE[rid][1]
        return len([e for e in self.net.find(EventKind.MESSAGE_CREATED, direction="outbound-api") if e.to == phone])

    def calls_to(self, rid: str) -> int:
        phone = PEOPLE[rid][1]
        return len([e for e in self.net.find(EventKind.CALL_CREATED) if e.to == phone])

    async def incident(self, alert_id: str) -> Incident:
        return await Incident.get(id=alert_id)


SceneFactory = Callable[..., AbstractAsyncContextManager[Scene]]


@pytest.fixture
def phone_ssl(pki: PkiLayout) -> ssl.SSLContext:
    """What the simulated Twilio trusts when it calls the gateway's webhooks over HTTPS (the test CA)."""
    return ssl.create_default_context(cafile=str(pki.root_ca_cert))


@pytest.fixture
def scene(gateway_factory: Any, pki: PkiLayout, phone_ssl: ssl.SSLContext, tmp_path: Path) -> SceneFactory:
    """`async with scene(steps, behaviours={"ana": Behaviour(...)}) as s:` a gateway escalating by `steps`."""

    @asynccontextmanager
    async def make(
        steps: str,
        *,
        behaviours: dict[str, Behaviour] | None = None,
        max_messages: int = 20,
        extra_policies: str = "",
        **sections: Any,
    ) -> AsyncIterator[Scene]:
        device_id = f"wb-{uuid.uuid4().hex[:10]}"
        directory = tmp_path / f"escalation-{device_id}.toml"
        text = directory_toml(steps, max_messages=max_messages) + "\n" + extra_policies
        directory.write_text(text.replace("{device}", device_id))
        port = services.free_port()
        async with PhoneNetwork(ACCOUNT_SID, AUTH_TOKEN, ssl_context=phone_ssl) as net:
            public_url = f"https://127.0.0.1:{port}"
            net.own_number(GATEWAY_NUMBER, sms_url=f"{public_url}/v1/twilio/sms")
            handsets = {
                rid: net.phone(phone, name=name, behaviour=(behaviours or {}).get(rid, Behaviour()))
                for rid, (name, phone) in PEOPLE.items()
            }
            settings: dict[str, Any] = {
                "http": HttpSettings(port=port, tls_cert=pki.server_cert, tls_key=pki.server_key),
                "twilio": TwilioSettings(
                    enabled=True,
                    account_sid=ACCOUNT_SID,
                    auth_token=SecretStr(AUTH_TOKEN),
                    from_number=GATEWAY_NUMBER,
                    api_base_url=net.base_url,
                    public_url=public_url,
                    retry_min_s=0.05,
                    retry_max_s=0.2,
                ),
                "escalation": EscalationSettings(file=directory, tick_s=0.1),
                "api": ApiSettings(tokens={"dispatch-desk": SecretStr(API_TOKEN)}),
            }
            settings.update(sections)
            async with gateway_factory(**settings) as gw, observe(gw.settings.mqtt.topic_prefix) as obs:
                wearable = await enroll(pki, device_id, wearer="Ada Lovelace", phone=WEARER_PHONE)
                yield Scene(gw, net, obs, wearable, handsets)

    return make
