"""transfer_call and end_call through the running server, the echo line calling the tools on
cue, the real ``twilio`` client against a local fake of the REST endpoint, timed against
what the simulated caller actually heard (marks and the audio itself)."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.fakes.twilio_rest_fake import TwilioRestFake
from tests.support.audio import active_segments, dominant_frequency, to_mulaw, tone
from tests.support.live_call import echo_session, last_heard_ms, live_bridge
from tests.support.server import AUTH_TOKEN, RunningServer, echo_line_config, running_server
from voicebot.agent.call_control import INTERRUPTED_NOTE, QUIET_S
from voicebot.devtools.twilio_sim import SimulatedCall

GOODBYE_MS = 800
GOODBYE_HZ = 700.0


def control_config(
    cue: str,
    *,
    rest: TwilioRestFake | None = None,
    method: str = "auto",
    reply_ms: int = 0,
    account_sid: str | None = None,
) -> str:
    twilio_extra = ""
    if rest is not None:
        twilio_extra = f'account_sid = "{account_sid or rest.account_sid}"\napi_base_url = "{rest.base_url}"'
    route = f"""
[routes.call_control]
end_call = true
transfer = {{ sales = "+15551230000", support = "sip:support@pbx.example.com" }}
transfer_method = "{method}"

[routes.dtmf]
inter_digit_timeout_ms = 300"""
    return echo_line_config("desk", twilio=twilio_extra, parrot=f"speed = 20\ntool_cues = [{cue}]", route_extra=route)


def goodbye_cue(name: str, arguments: dict[str, str], reply_ms: int = 0) -> str:
    args = ", ".join(f'{k} = "{v}"' for k, v in arguments.items())
    return (
        f'{{ on_text = "entered 9", name = "{name}", arguments = {{ {args} }}, '
        f"say_ms = {GOODBYE_MS}, reply_ms = {reply_ms}, tone_hz = {GOODBYE_HZ} }}"
    )


def last_sent_ms(call: SimulatedCall) -> float:
    return max(e.t_ms for e in call.log if e.direction == "out" and e.event == "media")


def call_clock_ms(call: SimulatedCall, monotonic: float) -> float:
    return call.now_ms() - (time.monotonic() - monotonic) * 1000.0


async def closed_at_ms(call: SimulatedCall, timeout: float = 8.0) -> float:
    await call.wait_for(call.closed.is_set, timeout=timeout)
    return call.now_ms()


async def stream_ended_twiml(server: RunningServer, call: SimulatedCall) -> str:
    twilio = server.twilio()
    url = server.url + "/twilio/stream-ended"
    params = {"CallSid": call.call_sid, "AccountSid": twilio.account_sid, "CallStatus": "in-progress"}
    async with httpx.AsyncClient() as client:
        response = await client.post(url, data=params, headers={"X-Twilio-Signature": twilio.sign(url, params)})
    assert response.status_code == 200
    return response.text


def dial_target(twiml: str) -> tuple[str, str]:
    dial = ET.fromstring(twiml).find("./Dial")
    assert dial is not None, twiml
    child = next(iter(dial))
    return child.tag, (child.text or "").strip()


def assert_goodbye_heard_whole(call: SimulatedCall, before_ms: float) -> None:
    segments = [s for s in active_segments(call.heard_pcm(0, before_ms), 8000, -35)]
    assert segments, "the caller heard no goodbye"
    start, end = segments[-1]
    assert end - start == pytest.approx(GOODBYE_MS, abs=60)
    assert dominant_frequency(call.heard_pcm(start + 50, end - 50), 8000) == pytest.approx(GOODBYE_HZ, abs=15)


async def press_nine(call: SimulatedCall) -> None:
    await call.pause(200)
    await call.press("9")
    await call.press("#")


async def test_end_call_hangs_up_only_after_the_goodbye_has_played() -> None:
    config = control_config(goodbye_cue("end_call", {"reason": "caller is done"}))
    async with running_server(config) as server, server.twilio().call() as call:
        bridge = await live_bridge(server, call)
        await press_nine(call)
        closed = await closed_at_ms(call)
        heard_end = last_heard_ms(call)
        # The goodbye reached Twilio long before it had played (20x real time)...
        assert heard_end - last_sent_ms(call) > GOODBYE_MS * 0.6
        # ...and the line closed only after it had played, after the quiet period.
        assert closed >= heard_end + QUIET_S * 1000 - 30
        assert closed <= heard_end + QUIET_S * 1000 + 700
        assert_goodbye_heard_whole(call, closed)
        assert await stream_ended_twiml(server, call) == (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>'
        )
        assert bridge.summary.outcome == "bot-hangup"


async def test_end_call_waits_for_what_the_model_says_after_the_tool_result() -> None:
    config = control_config(goodbye_cue("end_call", {"reason": "done"}, reply_ms=600))
    async with running_server(config) as server, server.twilio().call() as call:
        bridge = await live_bridge(server, call)
        await press_nine(call)
        closed = await closed_at_ms(call)
        start, end = active_segments(call.heard_pcm(0, closed), 8000, -35)[-1]
        # The goodbye (800 ms) and the sentence said after the tool result (600 ms, sent only
        # once the result went back) both played in full, back to back.
        assert end - start == pytest.approx(GOODBYE_MS + 600, abs=60)
        assert closed >= last_heard_ms(call) + QUIET_S * 1000 - 30
        assert bridge.summary.outcome == "bot-hangup"


async def test_transfer_via_rest_updates_the_call_after_the_sentence_was_heard() -> None:
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as rest:
        config = control_config(goodbye_cue("transfer_call", {"to": "sales"}), rest=rest)
        async with running_server(config) as server, server.twilio().call() as call:
            await press_nine(call)
            update = await rest.wait_for_update(timeout=8)
            update_ms = call_clock_ms(call, update.at)
            heard_end = last_heard_ms(call)
            assert heard_end - last_sent_ms(call) > GOODBYE_MS * 0.6
            assert heard_end + QUIET_S * 1000 - 30 <= update_ms <= heard_end + QUIET_S * 1000 + 700
            assert_goodbye_heard_whole(call, update_ms)
            assert update.call_sid == call.call_sid
            assert dial_target(update.params["Twiml"]) == ("Number", "+15551230000")
            await closed_at_ms(call)  # we close the abandoned stream ourselves
        assert rest.rejected == []


async def test_transfer_to_sip_via_stream_end_runs_dial_after_connect() -> None:
    config = control_config(goodbye_cue("transfer_call", {"to": "support"}), method="stream")
    async with running_server(config) as server, server.twilio().call() as call:
        await press_nine(call)
        closed = await closed_at_ms(call)
        assert closed >= last_heard_ms(call) + QUIET_S * 1000 - 30
        assert_goodbye_heard_whole(call, closed)
        twiml = await stream_ended_twiml(server, call)
        assert dial_target(twiml) == ("Sip", "sip:support@pbx.example.com")


async def test_failed_rest_update_falls_back_to_ending_the_stream() -> None:
    async with TwilioRestFake(auth_token=AUTH_TOKEN, fail_status=500) as rest:
        config = control_config(goodbye_cue("transfer_call", {"to": "sales"}), rest=rest)
        async with running_server(config) as server, server.twilio().call() as call:
            await press_nine(call)
            await closed_at_ms(call)
            assert dial_target(await stream_ended_twiml(server, call)) == ("Number", "+15551230000")
        assert rest.updates == [] and rest.rejected == ["fail_status 500"]


async def test_wrong_rest_credentials_are_refused_and_the_transfer_still_happens() -> None:
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as rest:
        config = control_config(goodbye_cue("transfer_call", {"to": "sales"}), rest=rest, account_sid="AC" + "9" * 32)
        async with running_server(config) as server, server.twilio().call() as call:
            await press_nine(call)
            await closed_at_ms(call)
            assert dial_target(await stream_ended_twiml(server, call)) == ("Number", "+15551230000")
        assert rest.updates == [] and rest.rejected == ["auth"]


async def test_transfer_outside_the_allow_list_is_refused_and_the_call_goes_on() -> None:
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as rest:
        config = control_config(goodbye_cue("transfer_call", {"to": "+19005550000"}), rest=rest)
        async with running_server(config) as server, server.twilio().call() as call:
            await press_nine(call)
            session = echo_session(await live_bridge(server, call))
            await call.wait_for(lambda: bool(session.tool_results), timeout=5)
            _, output = session.tool_results[0]
            assert "cannot transfer" in json.loads(output)["error"]
            await call.pause(QUIET_S * 1000 + 500)
            assert not call.closed.is_set()
            assert rest.updates == []


async def test_caller_talking_over_the_goodbye_keeps_the_call_open() -> None:
    cue = '{ on_text = "entered 9", name = "end_call", arguments = { reason = "done" }, say_ms = 2500 }'
    async with running_server(control_config(cue)) as server, server.twilio().call() as call:
        session = echo_session(await live_bridge(server, call))
        await press_nine(call)
        await call.wait_for(lambda: any(e.event == "mark" and e.direction == "in" for e in call.log), timeout=5)
        await call.pause(500)
        await call.say(to_mulaw(tone(400, 500)))  # "wait, one more thing"
        await call.wait_for(lambda: bool(call.clear_times), timeout=3)
        await call.wait_for(lambda: INTERRUPTED_NOTE in session.received_text, timeout=3)
        await call.pause(QUIET_S * 1000 + 1000)
        assert not call.closed.is_set()
