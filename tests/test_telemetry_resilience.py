"""Retries, fallbacks, circuit opens and recoveries as operators see them: a provider that
drops the call and then refuses to come back, over real sockets, read from /metrics and
from the call's spans."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.fakes.faulty_provider import faulty_servers
from tests.support.audio import to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server
from tests.test_recovery import heard_reply, session_of
from tests.test_telemetry import call_spans, scrape, value
from voicebot.telemetry.setup import get_telemetry


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    get_telemetry().tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def test_recovery_after_a_provider_loss_is_counted_and_traced(spans: InMemorySpanExporter) -> None:
    tag = secrets.token_hex(3)
    primary, backup = f"prim{tag}", f"back{tag}"
    async with faulty_servers("ok") as (provider,):
        config = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[resilience]
connect_attempts = 3
backoff_s = 0.02
circuit_failures = 2

[providers.{primary}]
type = "loopback"
url = "{provider.url}"

[providers.{backup}]
type = "echo"

[[routes]]
name = "res{tag}"
providers = ["{primary}", "{backup}"]
"""
        async with running_server(config) as server:
            async with server.twilio().call() as call:
                await call.pause(100)
                await call.say(to_mulaw(tone(600, 500)))
                await heard_reply(call, 500, 600, 400)
                provider.mode = "refuse"
                provider.drop_all()  # lost mid-call, and it refuses to come back
                session = await session_of(server, call)
                await call.wait_for(lambda: session.provider_name == backup, timeout=5)
                said_at = call.now_ms()
                await call.say(to_mulaw(tone(900, 500)))
                await heard_reply(call, said_at, 900, 400)
            await call.wait_for(lambda: not server.runtime.active, timeout=5)
            after = await scrape(server.url)

    # Two refused reconnects to the primary, each followed by a retry decision; the second
    # failure opened its circuit, so the third attempt never happened and the backup took over.
    assert value(after, "voicebot_provider_retries_total", provider=primary, reason="refused") == 2
    assert value(after, "voicebot_provider_circuit_opened_total", provider=primary) == 1
    assert value(after, "voicebot_provider_circuit_open", provider=primary) == 1
    assert value(after, "voicebot_provider_connect_duration_seconds_count", provider=primary, outcome="error") == 2
    assert value(after, "voicebot_provider_fallbacks_total", from_provider=primary, to_provider=backup) == 1
    assert value(after, "voicebot_recoveries_total", provider=primary, reason="session-lost", outcome="ok") == 1
    assert value(after, "voicebot_recovery_duration_seconds_count", provider=primary, outcome="ok") == 1
    assert value(after, "voicebot_recovery_duration_seconds_sum", provider=primary, outcome="ok") < 1.5

    root, children = call_spans(spans, call.call_sid)
    events = [e.name for e in root.events]
    assert events.count("retry") == 2 and events.count("circuit_open") == 1 and events.count("fallback") == 1
    recovery = next(c for c in children if c.name == "recovery")
    attrs = dict(recovery.attributes or {})
    assert attrs["voicebot.provider"] == primary
    assert attrs["voicebot.recovery.provider"] == backup
    assert attrs["voicebot.outcome"] == "ok"
    connects = [c for c in children if c.name == "provider.connect"]
    assert len(connects) == 4  # primary ok, primary refused twice, backup ok
    assert value(after, "voicebot_errors_total", provider=primary, code="transport") == 1
    root_attrs = dict(root.attributes or {})
    assert root_attrs["voicebot.provider.served"] == backup
    assert root_attrs["voicebot.recoveries"] == 1
