"""Outbound calls (voicebot.calls.outbound) over real sockets: ``POST /calls`` / ``voicebot call``
place the call through the real ``twilio`` client against the REST fake, which then plays
Twilio's side (status callbacks, the answer's TwiML fetch, the AMD verdict, all signed), and
the media stream is opened by the Twilio simulator. Asserted: what was created, what the
callee hears and when, admission (a full provider places nothing; no-answer frees the slot)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from scipy.io import wavfile
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.twilio_rest_fake import CreatedCall, TwilioRestFake, loopback_server
from tests.support.audio import active_segments, dominant_frequency, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, RunningServer, echo_line_config, running_server
from voicebot.cli import main
from voicebot.devtools.tape.format import TapeError, read_tape
from voicebot.devtools.twilio_sim import SimulatedCall, SimulatedTwilio, parse_stream_twiml
from voicebot.devtools.twiml_audio import SAY_CHARS_PER_S, SAY_TONE_HZ
from voicebot.telemetry.setup import get_telemetry

OPS = "ops-token-0123456789abcdef"
CALLEE = "+15551234567"
CALLER_ID = "+15550001111"


@pytest.fixture
async def rest() -> AsyncIterator[TwilioRestFake]:
    async with TwilioRestFake(auth_token=AUTH_TOKEN) as fake:
        yield fake


def outbound_config(rest: TwilioRestFake, outbound: str = "", parrot: str = "", sections: str = "") -> str:
    return echo_line_config(
        "reminders",
        parrot=parrot,
        twilio=f'account_sid = "{rest.account_sid}"\napi_base_url = "{rest.base_url}"',
        sections=f'[ops]\ntoken = "{OPS}"\n\n{sections}',
        route_extra=(
            'greeting = "Hi {name}, this is the clinic."\n'
            'instructions = "Remind {name} of the visit on {day}."\n'
            f'[routes.outbound]\ncaller_id = "{CALLER_ID}"\n{outbound}'
        ),
    )


async def place(server: RunningServer, **body: object) -> httpx.Response:
    payload = {"to": CALLEE, "route": "reminders", **body}
    async with httpx.AsyncClient(timeout=15) as client:
        return await client.post(f"{server.url}/calls", json=payload, headers={"Authorization": f"Bearer {OPS}"})


async def show(server: RunningServer, sid: str) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=15) as client:
        response = await client.get(f"{server.url}/calls/{sid}", headers={"Authorization": f"Bearer {OPS}"})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def slots_in_use(server: RunningServer) -> int:
    return await server.run_on_server(server.runtime.slots.count("parrot"))


async def answer_and_stream(server: RunningServer, rest: TwilioRestFake, created: CreatedCall) -> SimulatedTwilio:
    """Ring, pick up: returns the simulator to open the stream the answer's TwiML names."""
    assert (await rest.status(created, "ringing")).status_code == 204
    return SimulatedTwilio(server.url, AUTH_TOKEN)


def first_sound_ms(call: SimulatedCall) -> float:
    segments = active_segments(call.heard_pcm(), 8000)
    assert segments, "the callee heard nothing"
    return segments[0][0]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    get_telemetry().tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def test_a_placed_call_is_created_with_its_callbacks_and_a_human_hears_the_greeting_after_the_verdict(
    rest: TwilioRestFake, tmp_path: Path, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    recording = f'[recording]\nenabled = true\ndir = "{tmp_path}"'
    async with running_server(outbound_config(rest, sections=recording)) as server:
        response = await place(server, variables={"name": "Ada", "day": "Friday"})
        assert response.status_code == 201, response.text
        created = rest.created[-1]
        body = response.json()
        assert body["call_sid"] == created.sid and body["status"] == "queued"
        params = created.params
        assert params["To"] == CALLEE and params["From"] == CALLER_ID
        assert params["Url"].startswith(f"{server.url}/twilio/outbound/answer?call=OB")
        key = params["Url"].split("?call=")[1]
        assert params["StatusCallback"] == f"{server.url}/twilio/outbound/status?call={key}"
        assert created.status_events == ["initiated", "ringing", "answered", "completed"]
        assert params["MachineDetection"] == "Enable"  # on_machine = hangup: no need to wait for the beep
        assert params["AsyncAmd"] == "true"
        assert params["AsyncAmdStatusCallback"] == f"{server.url}/twilio/outbound/amd?call={key}"
        assert params["Timeout"] == "30"
        assert await slots_in_use(server) == 1  # reserved before dialling

        twilio = await answer_and_stream(server, rest, created)
        answer = await rest.answer(created)
        assert answer.status_code == 200
        parsed = parse_stream_twiml(answer.text)
        assert parsed is not None, answer.text
        plan = server.runtime.plan_of(created.sid)
        assert plan is not None
        assert plan.route.greeting == "Hi Ada, this is the clinic."
        assert plan.route.instructions == "Remind Ada of the visit on Friday."
        async with twilio.stream(parsed[0], parsed[1], created.sid) as call:
            await call.say(to_mulaw(tone(400, 300)))  # "Hello?"
            await call.pause(700)  # AMD is still listening: the bot must stay quiet
            assert call.received_media_ms() == 0
            verdict_at = call.now_ms()
            assert (await rest.amd(created, "human", 900)).status_code == 204
            await call.wait_for(lambda: call.received_media_ms() >= 500, timeout=8)
            await call.pause(300)
            start = first_sound_ms(call)
            assert start >= verdict_at
            greeting = call.heard_pcm(start + 20, start + 130)
            assert dominant_frequency(greeting, 8000) == pytest.approx(660, abs=20)  # the greeting's first tone
            row = await show(server, created.sid)
            assert row["answered_by"] == "human" and row["status"] == "in-progress"
            assert row["direction"] == "outbound" and row["state"] in ("streaming", "interrupted")
        await call.wait_for(lambda: not server.runtime.active, timeout=5)
        assert (await rest.status(created, "completed", 12)).status_code == 204
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{server.url}/metrics")).text
        assert 'voicebot_outbound_calls_total{result="completed",route="reminders"}' in metrics
        assert 'voicebot_outbound_amd_total{answered_by="human",route="reminders"}' in metrics
        # Marked outbound like an inbound call is marked inbound: the end-of-call metric, log and
        # span, and the tape, whose path the call's row names.
        ended = 'voicebot_calls_total{direction="outbound",outcome="caller-hangup",provider="parrot",route="reminders"}'
        assert ended in metrics
        assert f"outbound call {created.sid} ended: caller-hangup" in caplog.text
        [span] = [s for s in spans.get_finished_spans() if (s.attributes or {}).get("twilio.call_sid") == created.sid]
        assert (span.attributes or {})["voicebot.direction"] == "outbound"
        row = await show(server, created.sid)
        assert row["status"] == "completed" and row["duration_s"] == 12
        tape_path = Path(str(row["tape"]))
        assert tape_path.parent == tmp_path
        assert await wait_for_tape(tape_path) == (created.sid, "outbound")


def complete_tape_header(path: Path) -> tuple[str, str] | None:
    with contextlib.suppress(OSError, TapeError):
        tape = read_tape(path)
        if tape.complete:
            return tape.header.call_sid, tape.header.direction
    return None


async def wait_for_tape(path: Path) -> tuple[str, str]:
    """(CallSid, direction) of the tape's header, once the writer thread has closed it."""
    for _ in range(200):
        header = await asyncio.to_thread(complete_tape_header, path)
        if header is not None:
            return header
        await asyncio.sleep(0.025)
    raise AssertionError(f"no complete tape at {path}")


async def test_without_a_verdict_the_bot_speaks_once_the_bound_passes(rest: TwilioRestFake) -> None:
    async with running_server(outbound_config(rest, "amd_hold_s = 1.0")) as server:
        assert (await place(server, variables={"name": "Ada"})).status_code == 201
        created = rest.created[-1]
        twilio = await answer_and_stream(server, rest, created)
        parsed = parse_stream_twiml((await rest.answer(created)).text)
        assert parsed is not None
        async with twilio.stream(parsed[0], parsed[1], created.sid) as call:
            await call.wait_for(lambda: call.received_media_ms() >= 500, timeout=8)
            await call.pause(200)
            assert first_sound_ms(call) >= 1000  # held for the bound, then the greeting


async def test_on_a_machine_the_message_is_heard_after_the_beep_and_the_bot_never_talks(rest: TwilioRestFake) -> None:
    message = "Hi Ada, please call the clinic back."
    outbound = 'on_machine = "message"\nvoicemail_message = "Hi {name}, please call the clinic back."'
    async with running_server(outbound_config(rest, outbound)) as server:
        assert (await place(server, variables={"name": "Ada"})).status_code == 201
        created = rest.created[-1]
        assert created.params["MachineDetection"] == "DetectMessageEnd"  # the verdict comes at the beep
        twilio = await answer_and_stream(server, rest, created)
        parsed = parse_stream_twiml((await rest.answer(created)).text)
        assert parsed is not None
        async with twilio.stream(parsed[0], parsed[1], created.sid) as call:
            rest.connect(call)  # the REST update plays to this call, as Twilio would
            await call.say(to_mulaw(tone(500, 1500)))  # the mailbox's greeting...
            await call.say(to_mulaw(tone(1000, 300)))  # ...and its beep
            beep_end_ms = call.now_ms()
            assert (await rest.amd(created, "machine_end_beep", 1800)).status_code == 204
            update = await rest.wait_for_update()
            assert update.call_sid == created.sid
            twiml = update.params["Twiml"]
            assert f"<Say>{message}</Say>" in twiml and "<Hangup" in twiml
            await asyncio.wait_for(call.twiml_done.wait(), 15)
        assert call.received_media_ms() == 0  # the bot never spoke over the greeting or the message
        # What the mailbox recorded: silence until the beep was over, then the message (the
        # simulator's <Say> stand-in: a 300 Hz tone as long as the text takes to say).
        [(verb, start_ms, end_ms)] = call.twiml_heard
        assert verb == "Say" and start_ms >= beep_end_ms
        assert end_ms - start_ms == pytest.approx(len(message) / SAY_CHARS_PER_S * 1000, abs=1)
        assert active_segments(call.heard_pcm(0, start_ms), 8000) == []
        [(heard_start, heard_end)] = active_segments(call.heard_pcm(start_ms), 8000)
        assert heard_start <= 30 and heard_end - heard_start == pytest.approx(end_ms - start_ms, abs=60)
        middle = call.heard_pcm(start_ms + 200, start_ms + 600)
        assert dominant_frequency(middle, 8000) == pytest.approx(SAY_TONE_HZ, abs=10)
        # Twilio ran the new TwiML (the stream ended), said the message and hung up.
        assert (await rest.status(created, "completed")).status_code == 204
        row = await show(server, created.sid)
        assert row["answered_by"] == "machine_end_beep" and row["status"] == "completed"


async def test_on_a_machine_the_route_may_hang_up_at_once(rest: TwilioRestFake) -> None:
    async with running_server(outbound_config(rest)) as server:
        assert (await place(server)).status_code == 201
        created = rest.created[-1]
        twilio = await answer_and_stream(server, rest, created)
        parsed = parse_stream_twiml((await rest.answer(created)).text)
        assert parsed is not None
        async with twilio.stream(parsed[0], parsed[1], created.sid) as call:
            assert (await rest.amd(created, "machine_start")).status_code == 204
            update = await rest.wait_for_update()
            assert "<Say" not in update.params["Twiml"] and "<Hangup" in update.params["Twiml"]
            assert call.received_media_ms() == 0


@contextlib.asynccontextmanager
async def recording_served(audio: np.ndarray, rate: int) -> AsyncIterator[str]:
    """A WAV served on loopback, as a voicemail recording's URL."""
    body = io.BytesIO()
    wavfile.write(body, rate, audio)

    async def wav(request: Request) -> Response:
        return Response(body.getvalue(), media_type="audio/wav")

    async with loopback_server(Starlette(routes=[Route("/reminder.wav", wav)])) as base:
        yield base + "/reminder.wav"


async def test_a_configured_recording_is_played_to_a_machine(rest: TwilioRestFake) -> None:
    recording = tone(880, 1200, rate=16000)  # the clinic's recorded message, 1.2 s at 16 kHz
    async with recording_served(recording, 16000) as url:
        outbound = f'on_machine = "message"\nvoicemail_recording = "{url}"'
        async with running_server(outbound_config(rest, outbound)) as server:
            assert (await place(server)).status_code == 201
            created = rest.created[-1]
            assert created.params["MachineDetection"] == "DetectMessageEnd"
            twilio = await answer_and_stream(server, rest, created)
            parsed = parse_stream_twiml((await rest.answer(created)).text)
            assert parsed is not None
            async with twilio.stream(parsed[0], parsed[1], created.sid) as call:
                rest.connect(call)
                await call.say(to_mulaw(tone(1000, 300)))  # the beep
                beep_end_ms = call.now_ms()
                assert (await rest.amd(created, "machine_end_silence")).status_code == 204
                update = await rest.wait_for_update()
                assert f"<Play>{url}</Play>" in update.params["Twiml"]
                await asyncio.wait_for(call.twiml_done.wait(), 15)
            assert call.received_media_ms() == 0
            [(verb, start_ms, end_ms)] = call.twiml_heard
            assert verb == "Play" and start_ms >= beep_end_ms and end_ms - start_ms == pytest.approx(1200, abs=5)
            [(heard_start, heard_end)] = active_segments(call.heard_pcm(start_ms), 8000)
            assert heard_end - heard_start == pytest.approx(1200, abs=60)
            middle = call.heard_pcm(start_ms + 300, start_ms + 900)
            assert dominant_frequency(middle, 8000) == pytest.approx(880, abs=10)


async def test_a_full_provider_places_no_call_and_no_answer_frees_the_slot(rest: TwilioRestFake) -> None:
    async with running_server(outbound_config(rest, parrot="max_sessions = 1")) as server:
        first = await place(server)
        assert first.status_code == 201
        refused = await place(server)
        assert refused.status_code == 503
        assert refused.json()["placed"] is False and "full" in refused.json()["error"]
        assert len(rest.created) == 1  # nothing was dialled for the refused call
        assert (await rest.status(rest.created[0], "ringing")).status_code == 204
        assert (await rest.status(rest.created[0], "no-answer")).status_code == 204
        assert await slots_in_use(server) == 0
        again = await place(server)
        assert again.status_code == 201 and len(rest.created) == 2
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{server.url}/metrics")).text
        assert 'voicebot_outbound_calls_total{result="provider-full",route="reminders"}' in metrics
        assert 'voicebot_outbound_calls_total{result="no-answer",route="reminders"}' in metrics


async def test_twilio_refusing_the_call_frees_the_slot_and_says_why(rest: TwilioRestFake) -> None:
    async with running_server(outbound_config(rest)) as server:
        rest.fail_status = 500
        response = await place(server)
        assert response.status_code == 502 and "Twilio did not place the call" in response.json()["error"]
        assert await slots_in_use(server) == 0


async def test_bad_requests_and_unsigned_callbacks_are_refused(rest: TwilioRestFake) -> None:
    async with running_server(outbound_config(rest)) as server:
        assert (await place(server, to="5551234")).status_code == 400
        assert (await place(server, route="nope")).status_code == 404
        async with httpx.AsyncClient() as client:
            unauthorized = await client.post(f"{server.url}/calls", json={"to": CALLEE, "route": "reminders"})
            assert unauthorized.status_code == 401
        assert (await place(server)).status_code == 201
        created = rest.created[-1]
        async with httpx.AsyncClient() as client:
            forged = await client.post(
                created.params["Url"], data={"CallSid": created.sid, "AccountSid": "AC" + "0" * 32}
            )
            assert forged.status_code == 403
            forged_amd = await client.post(
                created.params["AsyncAmdStatusCallback"], data={"CallSid": created.sid, "AnsweredBy": "human"}
            )
            assert forged_amd.status_code == 403
        assert rest.updates == []


async def test_the_call_command_places_a_call(rest: TwilioRestFake, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_server(outbound_config(rest)) as server:
        argv = ["call", CALLEE, "--route", "reminders", "--var", "name=Ada", "--url", server.url, "--token", OPS]
        assert await asyncio.to_thread(main, argv) == 0
        created = rest.created[-1]
        assert created.sid in capsys.readouterr().out
        plan_route = server.runtime.config.routes[0]
        assert plan_route.outbound.caller_id == created.params["From"]
        assert (
            await asyncio.to_thread(main, ["call", CALLEE, "--route", "nope", "--url", server.url, "--token", OPS]) == 1
        )
