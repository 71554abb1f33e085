"""The phone network simulator, driven only through the twilio library and answered by a signed-webhook gateway stub."""

from __future__ import annotations

import json
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from firmware_sim.phonenet import Behaviour, EventKind, PhoneNetwork
from gateway.escalation.twilio_api import close_client, make_client
from tests.firmware_sim.conftest import ThrowawayCa

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "phonenet-test-auth-token"
GATEWAY = "+15550000000"
ANA = "+15551230001"
BEN = "+15551230002"

GATHER_TWIML = (
    "<Response>"
    '<Gather input="dtmf" numDigits="1" action="gather?step=1" method="POST" timeout="5">'
    "<Say>Panic alert from Ada at north gate.</Say><Say>Press 1 to accept, 2 to decline.</Say>"
    "</Gather>"
    "<Say>We did not get your answer.</Say><Hangup/>"
    "</Response>"
)
THANKS_TWIML = "<Response><Say>Thank you, you accepted.</Say><Hangup/></Response>"


@dataclass
class Hit:
    """One webhook the gateway stub received."""

    route: str
    url: str
    params: dict[str, str]
    signature: str
    valid: bool
    headers: dict[str, str]


@dataclass
class GatewayStub:
    """Plays the gateway: validates X-Twilio-Signature on every webhook (403 when invalid), answers from a script."""

    validator: RequestValidator
    base_url: str = ""
    hits: list[Hit] = field(default_factory=list)
    sms_answer: str = "<Response/>"
    failures: deque[int] = field(default_factory=deque)

    def url(self, route: str) -> str:
        return f"{self.base_url}/{route}"

    def of(self, route: str) -> list[Hit]:
        return [h for h in self.hits if h.route == route]

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        signature = request.headers.get("X-Twilio-Signature", "")
        valid = bool(self.validator.validate(str(request.url), form, signature))
        route = request.match_info["route"]
        params = form if request.method == "POST" else dict(request.query)  # GET webhooks carry them in the URL
        self.hits.append(Hit(route, str(request.url), params, signature, valid, dict(request.headers)))
        if not valid:
            return web.Response(status=403)
        if self.failures:
            return web.Response(status=self.failures.popleft())
        if route == "voice":
            return twiml(GATHER_TWIML)
        if route == "gather":
            return twiml(THANKS_TWIML if params.get("Digits") == "1" else "<Response><Hangup/></Response>")
        if route == "loop":
            return twiml("<Response><Say>Still there?</Say><Pause/><Redirect>loop</Redirect></Response>")
        if route == "sms":
            return twiml(self.sms_answer)
        return web.Response(status=204)


def twiml(document: str) -> web.Response:
    return web.Response(text=document, content_type="text/xml")


StartStub = Callable[..., Awaitable[GatewayStub]]


@pytest.fixture
async def start_stub() -> AsyncIterator[StartStub]:
    runners: list[web.AppRunner] = []

    async def start(*, ssl_context: ssl.SSLContext | None = None) -> GatewayStub:
        stub = GatewayStub(RequestValidator(TOKEN))
        app = web.Application()
        app.router.add_route("*", "/{route}", stub.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        stub.base_url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
        return stub

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def stub(start_stub: StartStub) -> GatewayStub:
    return await start_stub()


@pytest.fixture
async def net(stub: GatewayStub) -> AsyncIterator[PhoneNetwork]:
    async with PhoneNetwork(ACCOUNT, TOKEN) as network:
        network.own_number(GATEWAY, sms_url=stub.url("sms"))
        yield network


@pytest.fixture
async def client(net: PhoneNetwork) -> AsyncIterator[Any]:
    twilio = make_client(ACCOUNT, TOKEN, net.base_url)
    yield twilio
    await close_client(twilio)


def webhooks(net: PhoneNetwork, sid: str, purpose: str) -> int:
    """Webhooks of `purpose` for `sid` that the gateway has answered."""
    return len(net.find(EventKind.WEBHOOK, sid=sid, purpose=purpose))


def all_valid(stub: GatewayStub) -> bool:
    return bool(stub.hits) and all(h.valid for h in stub.hits)


# --- messages -----------------------------------------------------------------------------------------------------


async def test_message_is_created_and_its_signed_status_callbacks_reach_the_gateway(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    ana = net.phone(ANA, name="Ana")

    message = await client.messages.create_async(
        to=ANA, from_=GATEWAY, body="Panic alert. Reply 1234 to acknowledge", status_callback=stub.url("status")
    )

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert (message.status, message.direction, message.to, message.from_) == ("queued", "outbound-api", ANA, GATEWAY)
    assert message.account_sid == ACCOUNT and message.api_version == "2010-04-01"
    assert isinstance(message.date_created, datetime) and message.date_sent is None
    assert (message.num_segments, message.error_code, message.price) == ("1", None, None)
    await net.wait_for(lambda n: webhooks(n, message.sid, "message-status") == 2)
    assert [h.params["MessageStatus"] for h in stub.of("status")] == ["sent", "delivered"]
    first = stub.of("status")[0].params
    assert first == {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "From": GATEWAY,
        "MessageSid": message.sid,
        "MessageStatus": "sent",
        "SmsSid": message.sid,
        "SmsStatus": "sent",
        "To": ANA,
    }
    assert all_valid(stub)
    assert ana.inbox[0].body == "Panic alert. Reply 1234 to acknowledge" and ana.inbox[0].from_ == GATEWAY
    fetched = await client.messages(message.sid).fetch_async()
    assert fetched.status == "delivered" and isinstance(fetched.date_sent, datetime)


async def test_a_handset_reply_with_the_code_comes_back_as_a_signed_inbound_sms(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    net.phone(ANA, behaviour=Behaviour(reply="OK {code}"))

    await client.messages.create_async(to=ANA, from_=GATEWAY, body="Alert: reply 4821 to acknowledge")

    await net.wait_for(lambda n: any(e.detail["purpose"] == "sms" for e in n.find(EventKind.WEBHOOK)))
    (hit,) = stub.of("sms")
    assert hit.valid
    assert hit.params["Body"] == "OK 4821" and hit.params["From"] == ANA and hit.params["To"] == GATEWAY
    assert hit.params["MessageSid"].startswith("SM")
    assert hit.params["SmsSid"] == hit.params["SmsMessageSid"] == hit.params["MessageSid"]
    assert (hit.params["AccountSid"], hit.params["ApiVersion"]) == (ACCOUNT, "2010-04-01")
    assert (hit.params["NumMedia"], hit.params["NumSegments"]) == ("0", "1")
    assert "MessagingServiceSid" not in hit.params
    inbound = await client.messages(hit.params["MessageSid"]).fetch_async()
    assert (inbound.direction, inbound.status, inbound.body) == ("inbound", "received", "OK 4821")


def test_the_reply_template_takes_the_code_from_the_body() -> None:
    assert Behaviour(reply="{code}").reply_to("Panic! Reply 1234 to acknowledge") == "1234"
    assert Behaviour(reply="{code}").reply_to("no code here") is None
    assert Behaviour(reply="on my way").reply_to("anything") == "on my way"
    assert Behaviour().reply_to("Reply 1234") is None
    with pytest.raises(ValueError, match="sms must be"):
        Behaviour(sms="lost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="press"):
        Behaviour(press="one")


async def test_an_undeliverable_handset_ends_undelivered_with_error_30003(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    ana = net.phone(ANA, behaviour=Behaviour(sms="undeliverable"))

    message = await client.messages.create_async(
        to=ANA, from_=GATEWAY, body="Reply 1234", status_callback=stub.url("status")
    )

    await net.wait_for(lambda n: webhooks(n, message.sid, "message-status") == 2)
    last = stub.of("status")[-1].params
    assert (last["MessageStatus"], last["SmsStatus"], last["ErrorCode"]) == ("undelivered", "undelivered", "30003")
    assert "ErrorCode" not in stub.of("status")[0].params
    assert ana.inbox == []
    fetched = await client.messages(message.sid).fetch_async()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


async def test_an_invalid_number_is_refused_with_twilio_error_21211(net: PhoneNetwork, client: Any) -> None:
    net.phone(BEN, behaviour=Behaviour(invalid=True))

    with pytest.raises(TwilioRestException) as refused:
        await client.messages.create_async(to=BEN, from_=GATEWAY, body="hello")
    assert (refused.value.status, refused.value.code) == (400, 21211)
    assert f"The 'To' number {BEN} is not a valid phone number." in refused.value.msg
    with pytest.raises(TwilioRestException) as refused_call:
        await client.calls.create_async(to=BEN, from_=GATEWAY, url="http://127.0.0.1:9/voice")
    assert (refused_call.value.status, refused_call.value.code) == (400, 21211)
    with pytest.raises(TwilioRestException) as malformed:
        await client.messages.create_async(to="555-1234", from_=GATEWAY, body="hello")
    assert malformed.value.code == 21211
    assert [e.detail["code"] for e in net.find(EventKind.API_REJECTED)] == [21211, 21211, 21211]


async def test_a_from_number_the_account_does_not_own_is_refused(net: PhoneNetwork, client: Any) -> None:
    with pytest.raises(TwilioRestException) as refused:
        await client.messages.create_async(to=ANA, from_="+15559999999", body="hello")
    assert (refused.value.status, refused.value.code) == (400, 21606)


async def test_injected_429_fails_one_create_and_the_retry_succeeds(net: PhoneNetwork, client: Any) -> None:
    net.fail_next(1, status=429)

    with pytest.raises(TwilioRestException) as throttled:
        await client.messages.create_async(to=ANA, from_=GATEWAY, body="Reply 1234")
    message = await client.messages.create_async(to=ANA, from_=GATEWAY, body="Reply 1234")

    assert (throttled.value.status, throttled.value.code) == (429, 20429)
    assert "Too Many Requests" in throttled.value.msg
    assert message.status == "queued"
    net.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as unavailable:
            await client.calls.create_async(to=ANA, from_=GATEWAY, url="http://127.0.0.1:9/voice")
        assert (unavailable.value.status, unavailable.value.code) == (503, 20503)


async def test_wrong_credentials_get_401_and_another_account_404(net: PhoneNetwork) -> None:
    intruder = make_client(ACCOUNT, "not-the-token", net.base_url)
    try:
        with pytest.raises(TwilioRestException) as refused:
            await intruder.messages.create_async(to=ANA, from_=GATEWAY, body="hello")
    finally:
        await close_client(intruder)
    assert (refused.value.status, refused.value.code) == (401, 20003)

    owner = make_client(ACCOUNT, TOKEN, net.base_url)
    try:
        other = owner.api.v2010.accounts("AC" + "f" * 32)
        with pytest.raises(TwilioRestException) as elsewhere:
            await other.messages.create_async(to=ANA, from_=GATEWAY, body="hello")
    finally:
        await close_client(owner)
    assert (elsewhere.value.status, elsewhere.value.code) == (404, 20404)
    assert net.find(EventKind.MESSAGE_CREATED) == []


async def test_messages_are_listed_by_to_and_date_sent_and_paged(net: PhoneNetwork, client: Any) -> None:
    sids = [
        (await client.messages.create_async(to=to, from_=GATEWAY, body=f"message {i}")).sid
        for i, to in enumerate([ANA, BEN, ANA])
    ]
    await net.wait_for(lambda n: all(n.status_of(sid) == "delivered" for sid in sids))
    since = datetime.now(UTC) - timedelta(minutes=1)

    to_ana = await client.messages.list_async(to=ANA)
    recent = await client.messages.list_async(to=ANA, from_=GATEWAY, date_sent_after=since)
    future = await client.messages.list_async(to=ANA, date_sent_after=since + timedelta(hours=1))
    before = await client.messages.list_async(date_sent_before=since)
    paged = await client.messages.list_async(page_size=1)
    first = await client.messages.page_async(to=ANA, page_size=1)
    second = await first.next_page_async()

    assert [m.sid for m in to_ana] == [sids[2], sids[0]]  # newest first, as Twilio lists
    assert [m.sid for m in recent] == [sids[2], sids[0]]
    assert future == [] and before == []
    assert [m.sid for m in paged] == sids[::-1]
    assert [m.sid for m in first] == [sids[2]] and [m.sid for m in second] == [sids[0]]
    assert await second.next_page_async() is None


async def test_a_twiml_message_answer_to_an_inbound_sms_reaches_the_sender(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    ben = net.phone(BEN, name="Ben")
    stub.sms_answer = "<Response><Message>Alert 17 acknowledged by Ben</Message></Response>"

    result = await net.send_sms(from_=BEN, to=GATEWAY, body="1234")

    assert result.status == 200 and "<Message>" in result.body
    assert stub.of("sms")[0].params["Body"] == "1234" and all_valid(stub)
    await net.wait_for(lambda n: bool(ben.inbox))
    assert ben.inbox[0].body == "Alert 17 acknowledged by Ben" and ben.inbox[0].from_ == GATEWAY
    (reply,) = await client.messages.list_async(to=BEN)
    assert (reply.direction, reply.from_, reply.sid) == ("outbound-reply", GATEWAY, ben.inbox[0].sid)
    (inbound,) = await client.messages.list_async(from_=BEN)
    assert (inbound.sid, inbound.direction) == (result.sid, "inbound")


async def test_a_failing_webhook_is_retried_with_the_same_idempotency_token(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    stub.failures.extend([500, 503])

    message = await client.messages.create_async(
        to=ANA, from_=GATEWAY, body="Reply 1234", status_callback=stub.url("status")
    )

    await net.wait_for(
        lambda n: n.status_of(message.sid) == "delivered" and webhooks(n, message.sid, "message-status") == 4
    )
    sent = [h for h in stub.of("status") if h.params["MessageStatus"] == "sent"]
    assert len(sent) == 3 and all_valid(stub)
    assert len({h.headers["I-Twilio-Idempotency-Token"] for h in sent}) == 1
    attempts = [e.detail["status"] for e in net.find(EventKind.WEBHOOK, sid=message.sid)]
    assert attempts == [500, 503, 204, 204]


# --- calls --------------------------------------------------------------------------------------------------------


async def test_an_answered_call_hears_the_gathers_prompt_presses_1_and_completes(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    ana = net.phone(ANA, behaviour=Behaviour(call="answer", press="1"))

    call = await client.calls.create_async(
        to=ANA, from_=GATEWAY, url=stub.url("voice"), status_callback=stub.url("call-status")
    )

    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert (call.status, call.direction, call.to, call.start_time, call.duration) == (
        "queued",
        "outbound-api",
        ANA,
        None,
        None,
    )
    await net.wait_for(lambda n: webhooks(n, call.sid, "call-status") == 1)
    (voice,) = stub.of("voice")
    assert {k: voice.params[k] for k in ("CallSid", "AccountSid", "From", "To", "CallStatus", "Direction")} == {
        "CallSid": call.sid,
        "AccountSid": ACCOUNT,
        "From": GATEWAY,
        "To": ANA,
        "CallStatus": "in-progress",
        "Direction": "outbound-api",
    }
    (gather,) = stub.of("gather")
    assert gather.url == stub.url("gather?step=1")  # the relative action, resolved against the voice URL
    assert gather.params["Digits"] == "1" and gather.params["CallSid"] == call.sid
    (final,) = stub.of("call-status")  # no StatusCallbackEvent asked: only the final callback
    assert (final.params["CallStatus"], final.params["SequenceNumber"]) == ("completed", "0")
    assert int(final.params["CallDuration"]) >= 1 and final.params["Timestamp"].endswith("+0000")
    assert all_valid(stub)
    (heard,) = ana.calls
    assert heard.spoken == [
        "Panic alert from Ada at north gate.",
        "Press 1 to accept, 2 to decline.",
        "Thank you, you accepted.",
    ]
    assert (heard.digits, heard.status) == (["1"], "completed")
    fetched = await client.calls(call.sid).fetch_async()
    assert fetched.status == "completed" and fetched.start_time is not None and fetched.end_time is not None


async def test_a_call_answered_without_a_key_press_times_out_to_the_next_verbs(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    ana = net.phone(ANA, behaviour=Behaviour(call="answer"))

    call = await client.calls.create_async(
        to=ANA, from_=GATEWAY, url=stub.url("voice"), status_callback=stub.url("call-status")
    )

    await net.wait_for(lambda n: webhooks(n, call.sid, "call-status") == 1)
    assert stub.of("gather") == []
    assert ana.calls[0].spoken[-1] == "We did not get your answer." and ana.calls[0].digits == []
    assert stub.of("call-status")[0].params["CallStatus"] == "completed"


@pytest.mark.parametrize(("fate", "status"), [("no-answer", "no-answer"), ("busy", "busy"), ("fail", "failed")])
async def test_an_unanswered_call_ends_with_its_final_status(
    net: PhoneNetwork, client: Any, stub: GatewayStub, fate: Any, status: str
) -> None:
    ana = net.phone(ANA, behaviour=Behaviour(call=fate))

    call = await client.calls.create_async(
        to=ANA, from_=GATEWAY, url=stub.url("voice"), status_callback=stub.url("call-status"), timeout=20
    )

    await net.wait_for(lambda n: webhooks(n, call.sid, "call-status") == 1)
    (final,) = stub.of("call-status")
    assert (final.params["CallStatus"], final.params["CallDuration"]) == (status, "0")
    assert stub.of("voice") == [] and ana.calls[0].status == status
    fetched = await client.calls(call.sid).fetch_async()
    assert fetched.status == status and fetched.duration == "0"
    (listed,) = await client.calls.list_async(to=ANA, status=status)
    assert listed.sid == call.sid


async def test_intermediate_call_events_are_sent_only_when_asked_for(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    net.phone(ANA, behaviour=Behaviour(call="answer", press="2"))

    call = await client.calls.create_async(
        to=ANA,
        from_=GATEWAY,
        url=stub.url("voice"),
        status_callback=stub.url("call-status"),
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        status_callback_method="POST",
    )

    await net.wait_for(lambda n: n.status_of(call.sid) == "completed" and webhooks(n, call.sid, "call-status") == 4)
    statuses = [(h.params["CallStatus"], h.params["SequenceNumber"]) for h in stub.of("call-status")]
    assert statuses == [("initiated", "0"), ("ringing", "1"), ("in-progress", "2"), ("completed", "3")]
    assert stub.of("gather")[0].params["Digits"] == "2" and all_valid(stub)
    (created,) = net.find(EventKind.CALL_CREATED, sid=call.sid)
    assert created.detail["events"] == ["answered", "completed", "initiated", "ringing"]


async def test_a_ringing_call_can_be_hung_up_through_the_api(net: PhoneNetwork, client: Any, stub: GatewayStub) -> None:
    net.phone(ANA, behaviour=Behaviour(call="answer", answer_after_s=30))
    call = await client.calls.create_async(
        to=ANA, from_=GATEWAY, url=stub.url("voice"), status_callback=stub.url("call-status")
    )
    await net.wait_for(lambda n: n.status_of(call.sid) == "ringing")

    updated = await client.calls(call.sid).update_async(status="canceled")

    assert updated.status == "canceled"
    await net.wait_for(lambda n: webhooks(n, call.sid, "call-status") == 1)
    assert stub.of("call-status")[0].params["CallStatus"] == "canceled" and stub.of("voice") == []


async def test_inline_twiml_and_get_status_callbacks(net: PhoneNetwork, client: Any, stub: GatewayStub) -> None:
    ana = net.phone(ANA, behaviour=Behaviour(call="answer"))

    call = await client.calls.create_async(
        to=ANA,
        from_=GATEWAY,
        twiml="<Response><Say>Hello Ana</Say><Play>https://example.invalid/beep.wav</Play></Response>",
        status_callback=stub.url("call-status?via=get"),
        status_callback_method="GET",
    )

    await net.wait_for(lambda n: webhooks(n, call.sid, "call-status") == 1)
    (final,) = stub.of("call-status")
    assert final.valid and final.params["CallStatus"] == "completed" and final.params["via"] == "get"
    assert final.headers.get("Content-Type") is None  # nothing in the body: it is all in the signed URL
    assert ana.calls[0].spoken == ["Hello Ana"] and stub.of("voice") == []
    assert [e.detail["verb"] for e in net.find(EventKind.TWIML_SKIPPED, sid=call.sid)] == ["Play"]


async def test_a_gateway_that_redirects_forever_is_cut_off_after_ten_documents(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    ana = net.phone(ANA, behaviour=Behaviour(call="answer"))

    call = await client.calls.create_async(
        to=ANA, from_=GATEWAY, url=stub.url("loop"), status_callback=stub.url("call-status")
    )

    await net.wait_for(lambda n: webhooks(n, call.sid, "call-status") == 1)
    assert len(stub.of("loop")) == 10 and ana.calls[0].spoken == ["Still there?"] * 10
    assert [e.detail["code"] for e in net.find(EventKind.TWIML_ERROR, sid=call.sid)] == [11215]
    assert stub.of("call-status")[0].params["CallStatus"] == "completed"


async def test_a_handset_slower_than_the_ring_timeout_does_not_answer(
    net: PhoneNetwork, client: Any, stub: GatewayStub
) -> None:
    net.phone(ANA, behaviour=Behaviour(call="answer", answer_after_s=5))

    call = await client.calls.create_async(
        to=ANA, from_=GATEWAY, url=stub.url("voice"), status_callback=stub.url("call-status"), timeout=2
    )

    await net.wait_for(lambda n: webhooks(n, call.sid, "call-status") == 1)
    assert stub.of("call-status")[0].params["CallStatus"] == "no-answer" and stub.of("voice") == []


# --- signatures, transport, bad input -----------------------------------------------------------------------------


async def test_a_tampered_signature_is_detectable(net: PhoneNetwork, client: Any, stub: GatewayStub) -> None:
    message = await client.messages.create_async(
        to=ANA, from_=GATEWAY, body="Reply 1234", status_callback=stub.url("status?alert=17")
    )
    await net.wait_for(lambda n: webhooks(n, message.sid, "message-status") == 2)
    hit = stub.of("status")[0]
    validator = RequestValidator(TOKEN)

    assert hit.valid and hit.url.endswith("/status?alert=17")
    assert validator.compute_signature(hit.url, hit.params) == hit.signature
    assert validator.compute_signature(hit.url.replace("alert=17", "alert=18"), hit.params) != hit.signature
    assert not validator.validate(hit.url, {**hit.params, "MessageStatus": "delivered"}, hit.signature)
    assert not RequestValidator("another-token").validate(hit.url, hit.params, hit.signature)


async def test_webhooks_reach_an_https_gateway_that_trusts_a_test_ca(
    start_stub: StartStub, ca: ThrowawayCa, tmp_path: Path
) -> None:
    secure = await start_stub(ssl_context=ca.server_context(tmp_path))
    trust = ssl.create_default_context(cadata=ca.pem.decode())
    async with PhoneNetwork(ACCOUNT, TOKEN, ssl_context=trust) as net:
        net.own_number(GATEWAY, sms_url=secure.url("sms"))
        twilio = make_client(ACCOUNT, TOKEN, net.base_url)
        try:
            message = await twilio.messages.create_async(
                to=ANA, from_=GATEWAY, body="Reply 1234", status_callback=secure.url("status")
            )
            result = await net.send_sms(from_=ANA, to=GATEWAY, body="1234")
            await net.wait_for(lambda n: webhooks(n, message.sid, "message-status") == 2)
        finally:
            await close_client(twilio)
    assert result.status == 200 and secure.base_url.startswith("https://")
    assert [h.route for h in secure.hits].count("status") == 2 and all_valid(secure)


async def test_unknown_routes_and_unreadable_requests_get_twilio_error_json(net: PhoneNetwork, client: Any) -> None:
    missing = await client.request_async("GET", f"{net.base_url}/2010-04-01/Accounts/{ACCOUNT}/Nope.json")
    unknown_sid = await client.request_async(
        "GET", f"{net.base_url}/2010-04-01/Accounts/{ACCOUNT}/Messages/SM{'0' * 32}.json"
    )
    no_to = await client.request_async(
        "POST", f"{net.base_url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json", data={"From": GATEWAY, "Body": "x"}
    )
    bad_page = await client.request_async(
        "GET", f"{net.base_url}/2010-04-01/Accounts/{ACCOUNT}/Calls.json", params={"PageSize": "many"}
    )
    bad_date = await client.request_async(
        "GET", f"{net.base_url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json", params={"DateSent>": "yesterday"}
    )

    for response, status, code in [
        (missing, 404, 20404),
        (unknown_sid, 404, 20404),
        (no_to, 400, 21604),
        (bad_page, 400, 20001),
        (bad_date, 400, 20001),
    ]:
        body = json.loads(response.text)
        assert (response.status_code, body["status"], body["code"]) == (status, status, code)
        assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    still = await client.messages.create_async(to=ANA, from_=GATEWAY, body="still up")
    assert still.status == "queued"


async def test_wait_for_gives_up_with_the_last_events(net: PhoneNetwork, client: Any) -> None:
    await client.messages.create_async(to=ANA, from_=GATEWAY, body="hello")

    with pytest.raises(TimeoutError, match=r"message\.created"):
        await net.wait_for(lambda n: False, timeout=0.05)
