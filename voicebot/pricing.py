"""What provider use costs: the ``[pricing.<provider type>]`` tables of the config.

A table prices what :class:`s2s.events.Usage` reports: tokens by modality (per million, the
unit vendors publish) and session time (per minute, prorated to the second). The shipped
defaults are list prices read from each vendor's public pricing page on :data:`PRICES_AS_OF`;
prices change, so a deployment should check them and override what differs: a key set in a
``[pricing.<type>]`` table replaces the shipped one, the others stay.

Sources (read on the date below): OpenAI https://platform.openai.com/docs/pricing
(gpt-realtime), Google https://ai.google.dev/gemini-api/docs/pricing (Live API native audio),
AWS https://aws.amazon.com/bedrock/pricing/ (Nova 2 Sonic), xAI https://docs.x.ai/docs/models
(Grok Voice Agent, per minute). GPT-Live bills active minutes at a rate not published when
this table was written: its shipped rate is 0 until you set one."""

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


SHIPPED_PRICING: dict[str, dict[str, Any]] = {
    "openai_realtime": {
        "text_in_per_mtok": 4.0,
        "audio_in_per_mtok": 32.0,
        "cached_in_per_mtok": 0.4,
        "text_out_per_mtok": 16.0,
        "audio_out_per_mtok": 64.0,
    },
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
    "grok": {"session_per_minute": 0.05},
    "gpt_live": {"session_per_minute": 0.0},
}


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
