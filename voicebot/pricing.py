"""What provider use costs: the ``[pricing.<provider type>]`` tables of the config.

A table prices what :class:`s2s.events.Usage` reports: tokens by modality (per million, the
unit vendors publish), session time (per minute, prorated to the second) and a cascade's parts
(speech-to-text per minute of audio, its model's text tokens, text-to-speech per million
characters or per minute of speech). The shipped defaults are list prices for each provider's
default model, read on :data:`PRICES_AS_OF`; prices change and
differ by model, so a deployment should check them and override what differs: a key set in a
``[pricing.<type>]`` table replaces the shipped one, the others stay.

:data:`PRICE_SOURCES` says where each shipped table was read, or that no public figure was
found; those tables are placeholders, to be set before a budget (``max_cost_usd``) relies on
them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PRICES_AS_OF = "2026-12-03"


class PricingTable(BaseModel):
    """USD rates for one provider type. ``cached_in_per_mtok`` prices the input tokens the
    provider says it served from cache (they are part of the input tokens, and replace their
    modality's rate). Session time is billed for providers that charge by time (Grok,
    GPT-Live); for them it is the provider's own billable seconds when it reports them, else
    the time the session was open."""

    model_config = ConfigDict(extra="forbid")

    as_of: str = Field(default=PRICES_AS_OF, description="the date these rates were read (YYYY-MM-DD)")
    text_in_per_mtok: float = Field(default=0.0, ge=0)
    audio_in_per_mtok: float = Field(default=0.0, ge=0)
    cached_in_per_mtok: float = Field(default=0.0, ge=0)
    text_out_per_mtok: float = Field(default=0.0, ge=0)
    audio_out_per_mtok: float = Field(default=0.0, ge=0)
    session_per_minute: float = Field(default=0.0, ge=0, description="prorated to the second")
    stt_per_minute: float = Field(default=0.0, ge=0, description="a cascade's speech-to-text, per minute of audio")
    tts_per_mchars: float = Field(default=0.0, ge=0, description="a cascade's text-to-speech, per million characters")
    tts_per_minute: float = Field(default=0.0, ge=0, description="a cascade's text-to-speech, per minute of speech")


SHIPPED_PRICING: dict[str, dict[str, Any]] = {
    # gpt-realtime-2.1 (s2s.openai_realtime's default model); cached input is 0.40 for text and
    # audio alike. gpt-realtime-1.5 differs only in text output (16.0); the -mini models are
    # several times cheaper: set your model's rates.
    "openai_realtime": {
        "text_in_per_mtok": 4.0,
        "audio_in_per_mtok": 32.0,
        "cached_in_per_mtok": 0.4,
        "text_out_per_mtok": 24.0,
        "audio_out_per_mtok": 64.0,
    },
    # Active session time; the lower standby rate applies only to WebRTC sessions, not to the
    # WebSocket we use. Backend (delegated) model calls are billed apart, at their token rates.
    "gpt_live": {"session_per_minute": 0.05},
    # Flat rate per minute of connection; tool invocations are billed apart.
    "grok": {"session_per_minute": 0.05},
    # Placeholders (see PRICE_SOURCES): no public figure for the default models was found.
    "gemini_live": {
        "text_in_per_mtok": 0.5,
        "audio_in_per_mtok": 3.0,
        "text_out_per_mtok": 2.0,
        "audio_out_per_mtok": 12.0,
    },
    "nova_sonic": {
        "text_in_per_mtok": 0.33,
        "audio_in_per_mtok": 3.0,
        "text_out_per_mtok": 2.75,
        "audio_out_per_mtok": 12.0,
    },
}

PRICE_SOURCES: dict[str, str] = {
    "openai_realtime": "https://developers.openai.com/api/docs/models/gpt-realtime-2.1 (read 2026-12-03)",
    "gpt_live": "https://developers.openai.com/api/docs/models/gpt-live-1.1 (read 2026-12-03)",
    "grok": "https://docs.x.ai/developers/models/voice-agent-api (read 2026-12-03; page dated 2026-04-04)",
    "gemini_live": "unverified: no public price for gemini-3.8-live found on 2026-12-03 "
    "(https://ai.google.dev/gemini-api/docs/pricing was not readable here); the shipped rates are placeholders",
    "cascade": "not shipped: the rates depend on the parts a cascade is built of (stt, llm, tts); set them",
    "nova_sonic": "unverified: no public price for amazon.nova-2-sonic-v1:0 found on 2026-12-03 "
    "(https://aws.amazon.com/bedrock/pricing/ lists it; not readable here); the shipped rates are placeholders",
}


# Shipped tables whose rates no public price page confirmed (see PRICE_SOURCES).
UNVERIFIED_PRICING = frozenset({"gemini_live", "nova_sonic"})
# Provider types that cost nothing to run (the local echo line, the replay of a tape).
FREE_TYPES = frozenset({"echo", "tape"})


def rates_problem(pricing: dict[str, PricingTable], provider_type: str) -> str | None:
    """Why a budget (``max_cost_usd``) cannot trust the cost of ``provider_type``: no table
    (its use counts as $0), or the shipped table is one of the unverified placeholders and the
    config changed none of it. None when the rates are the config's or verified."""
    if provider_type in FREE_TYPES:
        return None
    table = pricing.get(provider_type)
    if table is None:
        return f"no [pricing.{provider_type}] table: its use counts as $0"
    if provider_type in UNVERIFIED_PRICING and table == PricingTable.model_validate(SHIPPED_PRICING[provider_type]):
        return (
            f"the shipped [pricing.{provider_type}] rates are unverified placeholders ({PRICE_SOURCES[provider_type]})"
        )
    return None


def merged_pricing(given: Any) -> Any:
    """The config's ``[pricing]`` over the shipped tables, key by key (pydantic ``before``
    validator input: anything that is not a table is left for validation to reject)."""
    if not isinstance(given, dict):
        return given
    merged: dict[str, Any] = {name: dict(table) for name, table in SHIPPED_PRICING.items()}
    for name, table in given.items():
        merged[name] = {**merged.get(name, {}), **table} if isinstance(table, dict) else table
    return merged


def shipped_tables() -> dict[str, PricingTable]:
    return {name: PricingTable.model_validate(table) for name, table in SHIPPED_PRICING.items()}
