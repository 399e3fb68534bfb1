"""Warm transfer (issue 17 item 3) through the running server: the echo line calls
``transfer_call(to, mode="warm")`` on cue, the real ``twilio`` client dials the person through
the local REST fake, whose conference model runs the TwiML each leg is given and posts
Twilio's signed callbacks back. Asserted: the whisper reached the person's leg only, the
caller joined the person's conference and the bot left (stream closed, slot released), the
caller heard hold audio meanwhile, and an unanswered transfer returns the caller to the bot."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from tests.fakes.twilio_rest_fake import TwilioRestFake
from tests.support.audio import active_segments
from tests.support.live_call import echo_of, live_bridge
from tests.support.server import AUTH_TOKEN, echo_line_config, running_server
from voicebot.agent.config import WARM_NO_ANSWER
from voicebot.devtools.twilio_sim import SimulatedCall

PERSON = "+15551230000"
OUR_NUMBER = "+15550001111"


def warm_config(rest: TwilioRestFake, answer_timeout_s: float = 30) -> str:
    cue = (
        '{ on_text = "entered 9", name = "transfer_call", arguments = { to = "sales", mode = "warm" }, '
        "say_ms = 400, tone_hz = 700 }"
    )
    route = f"""
[routes.call_control]
transfer = {{ sales = "{PERSON}" }}
warm_transfer = true
warm_answer_timeout_s = {answer_timeout_s}

[routes.dtmf]
inter_digit_timeout_ms = 200"""
    twilio = f'account_sid = "{rest.account_sid}"\napi_base_url = "{rest.base_url}"'
    return echo_line_config("desk", twilio=twilio, parrot=f"speed = 20\ntool_cues = [{cue}]", route_extra=route)


async def ask_for_sales(call: SimulatedCall) -> None:
    await call.pause(200)
    await call.press("9")
    await call.press("#")


async def participants(rest: TwilioRestFake, room: str) -> list[str]:
    """The room's participants, read with the ``twilio`` client as an application would."""
    http = AsyncTwilioHttpClient()
    client = Client(rest.account_sid, rest.auth_token, http_client=http)
    client.api.base_url = rest.base_url
    try:
        [conference] = await client.conferences.list_async(friendly_name=room)
        return [p.call_sid for p in await client.conferences(conference.sid).participants.list_async()]
    finally:
        await http.close()


async def test_warm_transfer_briefs_the_person_alone_then_the_caller_joins_and_the_bot_leaves() -> None:
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as rest:
        async with running_server(warm_config(rest)) as server, server.twilio().call(to=OUR_NUMBER) as call:
            bridge = await live_bridge(server, call)
            await echo_of(server, call)
            await ask_for_sales(call)
            person = await rest.wait_for_create(timeout=10)
            # The person is called from our number, with the whisper then the room in its TwiML.
            assert person.params["To"] == PERSON and person.params["From"] == OUR_NUMBER
            twiml = ET.fromstring(person.params["Twiml"])
            assert [v.tag for v in twiml] == ["Say", "Dial"]
            conference = twiml.find("./Dial/Conference")
            assert conference is not None and conference.get("statusCallbackEvent") == "join"
            room = (conference.text or "").strip()
            # Ringing: the caller hears hold audio (the built-in chime), the bot still has the call.
            await call.wait_for(lambda: bool(bridge.hold is not None and bridge.hold.sent_ms >= 1000), timeout=8)
            assert active_segments(call.heard_pcm(call.now_ms() - 3000), 8000, threshold_dbfs=-40)
            assert not call.closed.is_set() and rest.updates == []
            # The person answers: hears the whisper, enters the room; the caller is moved in.
            await rest.answer_leg(person)
            await rest.until(lambda: len(rest.conferences[room].participants) == 2)
            await call.wait_for(call.closed.is_set, timeout=8)
            await call.wait_for(lambda: call.call_sid not in server.runtime.active, timeout=8)
            slots = await server.run_on_server(server.runtime.slots.count("parrot"))
            in_room = await participants(rest, room)
            outcome = bridge.summary.outcome
        assert rest.rejected == []

    whisper = rest.legs[person.sid].heard
    assert len(whisper) == 1 and "entered 9" in whisper[0] and "+15" in whisper[0]
    assert rest.legs[call.call_sid].heard == []  # the caller never heard it
    assert in_room == [person.sid, call.call_sid]
    [move] = [u for u in rest.updates if u.call_sid == call.call_sid]
    assert (ET.fromstring(move.params["Twiml"]).findtext("./Dial/Conference") or "").strip() == room
    assert outcome == "transferred" and slots == 0


async def test_an_unanswered_warm_transfer_returns_the_caller_to_the_bot() -> None:
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as rest:
        async with running_server(warm_config(rest)) as server, server.twilio().call(to=OUR_NUMBER) as call:
            bridge = await live_bridge(server, call)
            echo = await echo_of(server, call)
            await ask_for_sales(call)
            person = await rest.wait_for_create(timeout=10)
            await call.wait_for(lambda: bool(bridge.hold is not None and bridge.hold.sounding), timeout=8)
            response = await rest.status(person, "no-answer")
            assert response.status_code == 204
            await call.wait_for(lambda: WARM_NO_ANSWER in echo.received_text, timeout=8)
            cleared_at = call.clear_times[-1] if call.clear_times else None
            await call.pause(500)
            assert not call.closed.is_set()
            assert bridge.hold is not None and not bridge.hold.sounding
            assert bridge.summary.outcome == "in-progress"
        assert [u for u in rest.updates if u.call_sid == call.call_sid] == []  # the caller was never moved
    assert cleared_at is not None  # the hold audio was cleared at once


async def test_nobody_joining_in_time_ends_the_ringing_leg_and_returns_to_the_bot() -> None:
    async with (
        TwilioRestFake(auth_token=AUTH_TOKEN) as rest,
        running_server(warm_config(rest, answer_timeout_s=5)) as server,
        server.twilio().call() as call,
    ):
        echo = await echo_of(server, call)
        await ask_for_sales(call)
        person = await rest.wait_for_create(timeout=10)
        assert person.params["Timeout"] == "5"
        await call.wait_for(lambda: WARM_NO_ANSWER in echo.received_text, timeout=12)
        ended = [u for u in rest.updates if u.call_sid == person.sid]
        assert not call.closed.is_set()
    assert [u.params.get("Status") for u in ended] == ["completed"]
