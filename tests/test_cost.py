"""What a call cost (voicebot.calls.cost): each provider's own usage report mapped into the
neutral :class:`~s2s.events.Usage`, and the call's cost priced exactly from ``[pricing]``."""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import pytest
from google.genai import types
from openai.types.realtime import ResponseDoneEvent

from s2s.events import AudioOut, TurnDone, Usage
from s2s.gemini_live.protocol import LiveEventMapper
from s2s.nova_sonic.protocol import NovaProtocol, PromptSettings
from s2s.openai_realtime import OpenAIRealtimeConfig, OpenAIRealtimeProtocol
from s2s.provider import SessionContext
from telephony.observer import AudioSent
from tests.fakes.gemini_live_fake import USAGE_PER_TURN
from transcoding.formats import MULAW_8K, PCM16_24K
from voicebot.calls.cost import CallCost, UsageRecord, price
from voicebot.config import AppConfig
from voicebot.pricing import PRICE_SOURCES, PRICES_AS_OF, PricingTable

# -- provider reports -> Usage ------------------------------------------------------------


def response_done(rid: str, text_in: int, audio_in: int, cached_text: int, text_out: int, audio_out: int) -> str:
    event = {
        "type": "response.done",
        "event_id": f"ev_{rid}",
        "response": {
            "id": rid,
            "status": "completed",
            "output": [],
            "usage": {
                "total_tokens": text_in + audio_in + text_out + audio_out,
                "input_tokens": text_in + audio_in,
                "output_tokens": text_out + audio_out,
                "input_token_details": {
                    "text_tokens": text_in,
                    "audio_tokens": audio_in,
                    "cached_tokens": cached_text,
                    "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": 0},
                },
                "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
            },
        },
    }
    ResponseDoneEvent.model_validate(event)  # the frame is what the SDK reads
    return json.dumps(event)


def test_openai_response_done_usage_adds_up_per_session_by_modality() -> None:
    config = OpenAIRealtimeConfig(type="openai_realtime", api_key="k", audio_format="pcmu")  # type: ignore[arg-type]
    p = OpenAIRealtimeProtocol(SessionContext("CA-cost"), config)
    p.receive(json.dumps({"type": "session.created", "session": {"id": "sess_1"}}))
    p.receive(response_done("r1", 40, 30, 0, 5, 60))
    first = [e for e in p.events_received() if isinstance(e, Usage)]
    p.receive(response_done("r2", 40, 20, 32, 4, 40))
    events = p.events_received()
    assert first == [Usage("sess_1", text_in_tokens=40, audio_in_tokens=30, text_out_tokens=5, audio_out_tokens=60)]
    assert [type(e) for e in events] == [TurnDone, Usage]
    assert events[1] == Usage(
        "sess_1",
        text_in_tokens=80,
        audio_in_tokens=50,
        cached_text_in_tokens=32,
        text_out_tokens=9,
        audio_out_tokens=100,
    )


def test_gemini_usage_metadata_is_split_by_modality_and_summed_over_the_session() -> None:
    mapper = LiveEventMapper(item_prefix="g1")
    message = {"serverContent": {"turnComplete": True}, "usageMetadata": USAGE_PER_TURN}
    types.LiveServerMessage.model_validate(message)
    mapper.feed(message)
    usage = [e for e in mapper.feed(message) if isinstance(e, Usage)]
    assert usage == [Usage("g1", text_in_tokens=40, audio_in_tokens=60, audio_out_tokens=50)]


def test_gemini_tokens_without_a_modality_and_thinking_count_as_text() -> None:
    mapper = LiveEventMapper(item_prefix="g2")
    message = {
        "usageMetadata": {
            "promptTokenCount": 522,
            "responseTokenCount": 42,
            "thoughtsTokenCount": 136,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 332}, {"modality": "AUDIO", "tokenCount": 165}],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 42}],
        }
    }
    (usage,) = [e for e in mapper.feed(message) if isinstance(e, Usage)]
    assert (usage.text_in_tokens, usage.audio_in_tokens) == (522 - 165, 165)
    assert (usage.text_out_tokens, usage.audio_out_tokens) == (136, 42)


def test_nova_usage_event_totals_are_the_session_figures() -> None:
    ids = count()
    settings = PromptSettings(
        instructions="Be brief.", voice="tiffany", input_sample_rate=8000, output_sample_rate=8000
    )
    p = NovaProtocol(settings, new_id=lambda: f"id{next(ids)}")
    total = {"input": {"speechTokens": 10, "textTokens": 5}, "output": {"speechTokens": 20, "textTokens": 3}}
    body = {"sessionId": "nova-s1", "details": {"delta": total, "total": total}, "totalTokens": 38}
    p.receive({"event": {"usageEvent": body}})
    assert p.events_received() == [
        Usage("nova-s1", text_in_tokens=5, audio_in_tokens=10, text_out_tokens=3, audio_out_tokens=20)
    ]


# -- pricing ------------------------------------------------------------------------------


class FakeSession:
    def __init__(self, name: str, fmt: Any = MULAW_8K) -> None:
        self.provider_name = name
        self.input_format = fmt
        self.output_format = fmt


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def config(**pricing: Any) -> AppConfig:
    return AppConfig.model_validate(
        {
            "providers": {
                "oa": {"type": "openai_realtime"},
                "gk": {"type": "grok"},
                "live": {"type": "gpt_live"},
            },
            "pricing": pricing,
        }
    )


def test_shipped_tables_are_dated_and_a_config_overrides_them_key_by_key() -> None:
    cfg = config(openai_realtime={"audio_out_per_mtok": 50.0, "as_of": "2027-01-01"})
    table = cfg.pricing["openai_realtime"]
    assert (table.audio_out_per_mtok, table.audio_in_per_mtok, table.as_of) == (50.0, 32.0, "2027-01-01")
    assert AppConfig().pricing["grok"].as_of == PRICES_AS_OF
    assert set(PRICE_SOURCES) >= set(AppConfig().pricing)  # every shipped table says where it was read
    with pytest.raises(ValueError, match="per_token"):
        AppConfig.model_validate({"pricing": {"grok": {"per_token": 1}}})


def test_a_call_over_two_sessions_costs_exactly_what_the_table_says() -> None:
    clock = Clock()
    cost = CallCost(config(), clock=clock)
    cost.session_opened(FakeSession("oa"))  # type: ignore[arg-type]
    cost.provider_out(AudioSent(b"\xff" * 8000))  # 1 s of mulaw 8 kHz
    cost.provider_in(AudioOut(b"\xff" * 4000, "i1"))
    cost.provider_in(Usage("s1", text_in_tokens=1000, cached_text_in_tokens=400, audio_in_tokens=2000))
    cost.provider_in(
        Usage("s1", text_in_tokens=2000, cached_text_in_tokens=800, audio_in_tokens=3000, audio_out_tokens=5000)
    )
    clock.now += 30.0
    cost.session_opened(FakeSession("gk"))  # type: ignore[arg-type]  # a fallback to Grok, 45 s
    clock.now += 45.0
    cost.call_ended(None)
    # OpenAI: the last report counts; 1200 text at $4, 800 cached at $0.40, 3000 audio at
    # $32, 5000 audio out at $64 (per million). Grok: 45 s at $0.05 a minute.
    openai_usd = (1200 * 4.0 + 800 * 0.4 + 3000 * 32.0 + 5000 * 64.0) / 1e6
    grok_usd = 45 / 60 * 0.05
    assert cost.cost_usd == pytest.approx(openai_usd + grok_usd, abs=1e-12)
    assert openai_usd + grok_usd == pytest.approx(0.45862, abs=1e-12)
    total = cost.total()
    assert (total.audio_in_s, total.audio_out_s, total.session_s) == (1.0, 0.5, 75.0)
    by_type = cost.by_provider()
    assert by_type["openai_realtime"].cost_usd == pytest.approx(openai_usd)
    assert by_type["grok"].session_s == 45.0
    summary = cost.summary()
    assert [s["provider"] for s in summary["sessions"]] == ["oa", "gk"]
    assert summary["cost_usd"] == round(openai_usd + grok_usd, 6)


def test_gpt_live_is_billed_for_its_reported_seconds_not_the_time_open() -> None:
    clock = Clock()
    cost = CallCost(config(gpt_live={"session_per_minute": 0.06}), clock=clock)
    cost.session_opened(FakeSession("live", PCM16_24K))  # type: ignore[arg-type]
    cost.provider_in(Usage("live-1", 12.0))
    cost.provider_in(Usage("live-1", 30.0, final=True))
    clock.now += 90.0
    cost.call_ended(None)
    assert cost.cost_usd == pytest.approx(30 / 60 * 0.06)


def test_the_budget_is_called_once_when_the_cost_reaches_it() -> None:
    reached: list[float] = []
    cost = CallCost(config(), max_cost_usd=0.01, on_budget=reached.append, clock=Clock())
    cost.session_opened(FakeSession("oa"))  # type: ignore[arg-type]
    cost.provider_in(Usage("s1", audio_out_tokens=100))  # $0.0064
    assert reached == []
    cost.provider_in(Usage("s1", audio_out_tokens=200))  # $0.0128
    cost.provider_in(Usage("s1", audio_out_tokens=300))
    assert reached == [pytest.approx(200 * 64.0 / 1e6)]


def test_price_bills_cached_tokens_instead_of_their_modality_rate() -> None:
    table = PricingTable(text_in_per_mtok=10.0, audio_in_per_mtok=100.0, cached_in_per_mtok=1.0)
    used = Usage("s", text_in_tokens=10, cached_text_in_tokens=4, audio_in_tokens=20, cached_audio_in_tokens=5)
    assert price(UsageRecord(reported=used), table) == pytest.approx((6 * 10.0 + 15 * 100.0 + 9 * 1.0) / 1e6)


def test_price_bills_a_cascades_parts_by_their_own_units() -> None:
    table = PricingTable(stt_per_minute=0.006, text_in_per_mtok=0.4, text_out_per_mtok=1.6, tts_per_mchars=15.0)
    used = Usage("c", stt_s=90.0, text_in_tokens=2000, text_out_tokens=300, tts_chars=1200, tts_s=40.0)
    usd = 1.5 * 0.006 + (2000 * 0.4 + 300 * 1.6 + 1200 * 15.0) / 1e6
    assert price(UsageRecord(session_s=100.0, reported=used), table) == pytest.approx(usd, abs=1e-15)
    # per minute of speech instead (tts models billed by audio out)
    assert price(UsageRecord(reported=used), PricingTable(tts_per_minute=0.015)) == pytest.approx(40 / 60 * 0.015)
