"""Announced shutdown dates of the models a provider table can name.

A model that a vendor retires stops answering on a fixed day, and every call routed to it then
falls through to the next provider (or fails). ``voicebot config check`` and ``voicebot serve``
look each configured model up here: before its date it is a warning naming the replacement,
on or after it an error. The table holds only dates the vendor has published; a model that is
not listed has no announced shutdown.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from s2s.provider import ProviderConfig

_OPENAI = "https://developers.openai.com/api/docs/deprecations (openai SDK 3.60 types/realtime docstrings)"
_GEMINI = "https://ai.google.dev/gemini-api/docs/deprecations"
_BEDROCK = "https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-sonic.html"


@dataclass(frozen=True, slots=True)
class Retirement:
    model: str
    shutdown: dt.date
    replacement: str
    source: str


def _table(*rows: tuple[tuple[str, ...], str, str, str]) -> dict[str, Retirement]:
    out: dict[str, Retirement] = {}
    for models, day, replacement, source in rows:
        for model in models:
            out[model] = Retirement(model, dt.date.fromisoformat(day), replacement, source)
    return out


RETIREMENTS: dict[str, Retirement] = _table(
    # openai types/realtime/realtime_session_create_request_param.py: "Announced shutdown date: 2027-01-20".
    (("gpt-realtime", "gpt-realtime-2025-08-28"), "2027-01-20", "gpt-realtime-2.1", _OPENAI),
    (("gpt-realtime-mini", "gpt-realtime-mini-2025-12-15"), "2027-01-20", "gpt-realtime-2.1-mini", _OPENAI),
    (("gpt-audio-mini", "gpt-audio-mini-2025-12-15"), "2027-01-20", "gpt-realtime-2.1-mini", _OPENAI),
    # openai types/realtime/audio_transcription_param.py: "Announced shutdown date: 2027-02-26".
    (
        (
            "whisper-1",
            "gpt-4o-mini-transcribe",
            "gpt-4o-mini-transcribe-2025-12-15",
            "gpt-4o-transcribe",
            "gpt-4o-transcribe-diarize",
        ),
        "2027-02-26",
        "gpt-live-transcribe",
        _OPENAI,
    ),
    # Gemini deprecations page, "Live API models".
    (("gemini-2.0-flash-live-001", "gemini-live-2.5-flash-preview"), "2025-12-09", "gemini-3.8-live", _GEMINI),
    # Bedrock model card "Nova Sonic": Legacy, "Model EOL date: September 14, 2026".
    (("amazon.nova-sonic-v1:0",), "2026-09-14", "amazon.nova-2-sonic-v1:0", _BEDROCK),
)

# The provider-table keys that name a model, in every provider type that has one.
_MODEL_FIELDS = ("model", "model_id", "transcription_model")


@dataclass(frozen=True, slots=True)
class ModelFinding:
    level: Literal["warning", "error"]
    message: str


def model_status(model: str, today: dt.date, where: str) -> ModelFinding | None:
    """A warning for a model with an announced shutdown, an error once that day has come."""
    retirement = RETIREMENTS.get(model.split("/")[-1])
    if retirement is None:
        return None
    if today >= retirement.shutdown:
        return ModelFinding(
            "error",
            f"{where}: model {model!r} was shut down on {retirement.shutdown}; "
            f"use {retirement.replacement!r} ({retirement.source})",
        )
    days = (retirement.shutdown - today).days
    return ModelFinding(
        "warning",
        f"{where}: model {model!r} shuts down on {retirement.shutdown} (in {days} days); "
        f"move to {retirement.replacement!r} ({retirement.source})",
    )


def configured_models(config: ProviderConfig) -> list[tuple[str, str]]:
    """(key, model) for every model a provider table names."""
    found: list[tuple[str, str]] = []
    for key in _MODEL_FIELDS:
        value = getattr(config, key, None)
        if isinstance(value, str) and value:
            found.append((key, value))
    return found


def provider_findings(name: str, config: ProviderConfig, today: dt.date) -> list[ModelFinding]:
    findings = []
    for key, model in configured_models(config):
        finding = model_status(model, today, f"provider {name!r} {key}")
        if finding is not None:
            findings.append(finding)
    return findings
