"""The one configuration file: TOML, ``${ENV}`` interpolation, validated with pydantic.

Errors are collected, not raised one at a time, and each names its key path
(``providers.openai.api_key: environment variable OPENAI_API_KEY is not set``), so
``voicebot config check`` can show everything wrong with a file at once.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from s2s.closing import CLOSE_TIMEOUT_S
from s2s.errors import VoicebotError
from s2s.provider import ProviderConfig
from s2s.registry import UnknownProviderType, provider_spec, register
from transcoding.voice_activity import VadKind
from voicebot.agent.config import (
    AgentReasoning,
    CallControl,
    DtmfSettings,
    MemoryConfig,
    RouteTool,
    WaitingSettings,
)
from voicebot.config_errors import loc_path, message, quoted_booleans, relevant, secret_problems
from voicebot.pricing import PricingTable, merged_pricing, shipped_tables
from voicebot.privacy.redaction import RedactKind, Redactor, compile_pattern

# The application's own provider types, beside s2s's built-ins (s2s.registry).
register("tape", "voicebot.devtools.tape.provider")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(VoicebotError):
    """Every problem found in a config file, each with its key path."""

    def __init__(self, issues: list[ConfigIssue], source: str = "config") -> None:
        self.issues = issues
        self.source = source
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"{source} is invalid ({len(issues)} error(s)):\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    public_url: str | None = Field(
        default=None,
        description="external base URL Twilio uses (https://host); builds the wss:// stream URL and the "
        "URL signatures are checked against. Unset: rebuilt from X-Forwarded-Proto/Host.",
    )
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    max_message_bytes: int = Field(default=64 * 1024, ge=1024, description="largest Media Streams frame")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="largest webhook body")
    stream_connect_timeout_s: float = Field(
        default=15.0, gt=0, description="how long a webhook's reservation waits for its media stream"
    )
    stream_token_secret: SecretStr | None = Field(
        default=None,
        description="signs the media stream token so any instance can take a call whose webhook another "
        "answered (voicebot.calls.stream_token); the same on every instance. Unset: derived from the Twilio "
        "auth token, else a random per-process key (single instance only)",
    )
    outbound_chunk_ms: int = Field(
        default=40,
        ge=10,
        le=1000,
        description="bot audio is sent to Twilio in chunks of at most this, each with a mark",
    )
    local_barge_in_ms: int = Field(
        default=200,
        ge=0,
        description="caller speech this long while bot audio plays clears Twilio's buffer without waiting "
        "for the provider (0 = only the provider's signal)",
    )
    local_barge_in_dbfs: float = Field(
        default=-30.0, le=0, description="caller level that counts as speech for the local barge-in detector"
    )
    drain_seconds: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM, how long calls in progress may go on before they are ended with "
        "`drain_message` (keep Kubernetes terminationGracePeriodSeconds above this)",
    )
    drain_message: str = Field(
        default="Sorry, this line has to close now. Please call again.",
        description="said to callers still on the line when the drain deadline passes",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="an HTTP request's headers must arrive within this of the connection opening (slowloris); "
        "read at startup",
    )
    body_timeout_s: float = Field(
        default=10.0, gt=0, description="an HTTP request's body must arrive within this of its headers; read at startup"
    )
    max_unauthenticated_connections: int = Field(
        default=100,
        ge=1,
        description="connections still waiting for a complete (hence not yet signature-checked) request; "
        "a new one beyond this closes the oldest; read at startup",
    )
    retention_sweep_s: float = Field(
        default=3600.0,
        gt=0,
        description="how often the server deletes tapes and caller memory older than their retention_days "
        "(also once at start; voicebot.privacy.retention)",
    )

    @field_validator("stream_token_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty = unset, so a config can say "${VOICEBOT_STREAM_TOKEN_SECRET:-}".
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (it signs stream tokens)")
        return value

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if not value:  # empty = unset, so a config can say "${VOICEBOT_PUBLIC_URL:-}"
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an absolute http(s):// URL")
        return value.rstrip("/")


class TwilioConfig(_Strict):
    auth_token: SecretStr | None = None
    account_sid: str | None = None
    validate_signatures: bool = True
    api_base_url: str | None = Field(default=None, description="override of https://api.twilio.com (tests)")


# A number pattern in [[routes]] `to` / `from`: "*" (anything), an exact number or Twilio
# client/SIP address, or a prefix ending in "*" ("+44*"). Matching lives in telephony.routing.
_NUMBER_PATTERN = re.compile(r"^(\*|[^*\s]+\*?)$")


class OnUnavailable(_Strict):
    """What a caller gets when no provider can take the call (all full, circuits open or down)."""

    say: str = "Sorry, all our lines are busy right now. Please call again later."
    dial: str | None = Field(default=None, description="transfer to this number (a human) after `say`")
    language: str | None = None


class ResilienceConfig(_Strict):
    """Connect retries, circuit breakers and mid-call recovery (s2s.resilience, voicebot.calls.admission)."""

    connect_attempts: int = Field(default=3, ge=1, description="tries per provider before the next in the chain")
    backoff_s: float = Field(default=0.1, gt=0, description="first retry delay; doubles, with full jitter")
    circuit_failures: int = Field(default=3, ge=1, description="consecutive connect failures that open a circuit")
    circuit_cooldown_s: float = Field(default=30.0, gt=0, description="how long an open circuit skips a provider")
    watchdog_s: float = Field(
        default=8.0,
        gt=0,
        description="the session sends nothing this long after the caller's first unanswered turn: session is lost",
    )
    recovery_audio_ms: int = Field(
        default=3000, ge=0, description="caller audio kept while recovering; older audio is dropped"
    )
    rotation_close_timeout_s: float = Field(
        default=CLOSE_TIMEOUT_S, gt=0, description="bound on closing a rotated-out session"
    )


class OutboundSettings(_Strict):
    """How the route places calls (``POST /calls``, ``voicebot call``; voicebot.calls.outbound).
    Answering-machine detection is Twilio's asynchronous AMD
    (https://www.twilio.com/docs/voice/answering-machine-detection)."""

    caller_id: str | None = Field(default=None, description="From number of the route's calls (a Twilio number)")
    ring_timeout_s: int = Field(default=30, ge=5, le=600, description="ring this long before giving up (no-answer)")
    machine_detection: bool = Field(default=True, description="ask Twilio whether a human or a machine answered")
    on_machine: Literal["message", "hangup"] = Field(
        default="hangup", description="a machine answered: leave voicemail_message after the beep, or hang up"
    )
    voicemail_message: str | None = Field(
        default=None, description="spoken by Twilio after the beep (on_machine = 'message'); {name} variables apply"
    )
    voicemail_recording: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="played after the beep instead of voicemail_message (on_machine = 'message'): an audio URL",
    )
    amd_hold_s: float = Field(
        default=5.0,
        gt=0,
        description="the bot waits this long for the AMD verdict before speaking (never talks over a voicemail "
        "greeting); a human verdict ends the wait at once",
    )


class SilenceSettings(_Strict):
    """A silent caller (voicebot.calls.silence): after ``idle_after_s`` with nobody speaking and
    nothing pending, the model says the next of ``prompts``; after the last one, ``goodbye``,
    and the call hangs up once it has been heard. Caller speech starts the list over."""

    idle_after_s: float = Field(gt=0, description="quiet this long (bot heard out, caller silent) before a step")
    prompts: list[str] = Field(
        default_factory=lambda: ["Are you still there?"],
        description="said in turn, one per silence, by the model",
    )
    goodbye: str = Field(
        default="I haven't heard from you, so I'll end the call now. Goodbye!",
        description="said after the last prompt went unanswered; then the bot hangs up",
    )


class RouteConfig(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    to: list[str] = Field(default_factory=lambda: ["*"], description="called-number patterns (exact, +44*, *)")
    from_: list[str] = Field(default_factory=lambda: ["*"], alias="from", description="caller-number patterns")
    providers: list[str] = Field(min_length=1, description="preference / fallback order")
    instructions: str = "You are a helpful voice assistant on a phone call. Keep answers short."
    greeting: str | None = None
    greeting_uninterruptible: bool = Field(
        default=False, description="the caller cannot barge in until the greeting has been heard in full"
    )
    vad: VadKind = Field(
        default="energy",
        description="what counts as caller speech for the local barge-in detector: 'energy' (level above "
        "server.local_barge_in_dbfs), 'silero' or 'webrtc' (that level and a voice-activity model, which "
        "keeps line noise from cutting the bot off; pip install 'voicebot[vad]', else energy is used)",
    )
    voice: str | None = None
    model: str | None = None
    language: str | None = None
    max_call_seconds: float | None = Field(default=None, gt=0, description="hang up after this long")
    time_warning_s: float = Field(
        default=60.0, ge=0, description="with max_call_seconds: tell the model this long before the end (0: never)"
    )
    time_warning: str = Field(
        default="Note: this call will be cut off in one minute. Wrap up the conversation with the caller now.",
        description="the system note sent time_warning_s before max_call_seconds",
    )
    silence: SilenceSettings | None = Field(default=None, description="re-prompt a silent caller, then hang up")
    max_cost_usd: float | None = Field(
        default=None, gt=0, description="say goodbye and hang up once the call's provider cost reaches this ([pricing])"
    )
    max_cost_goodbye: str = Field(
        default="I'm sorry, we have to end the call here. Thank you for calling, goodbye.",
        description="spoken when max_cost_usd ends the call",
    )
    recording: bool = Field(default=False, description="record this route's calls to tapes")
    record_caller_audio: bool = Field(
        default=True,
        description="false: this route's tapes keep silence in place of the caller's audio ([recording] caller_audio)",
    )
    redact: list[RedactKind] = Field(
        default_factory=list,
        description="personal data masked in logs, traces, tapes and caller memory: card, phone, digits, email "
        "(voicebot.privacy.redaction)",
    )
    redact_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="the route's own patterns to mask, name -> regular expression; a match becomes [name]",
    )
    provider_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per provider of the chain, settings laid over its table for this route's calls "
        "(only the keys its type lets a route set, e.g. Gemini's activity_handling)",
    )
    retry_budget_s: float = Field(default=1.5, gt=0, description="time spent on one provider before the next")
    on_unavailable: OnUnavailable = Field(default_factory=OnUnavailable)
    apology: str = Field(
        default="Sorry, we are having technical difficulties. Please call again later.",
        description="spoken when the provider is lost mid-call and cannot be recovered",
    )

    # built once when the config is loaded: the patterns are compiled here, not per call
    _redactor: Redactor = PrivateAttr(default_factory=Redactor)

    def model_post_init(self, context: Any) -> None:
        self._redactor = Redactor(self.redact, self.redact_patterns)

    @property
    def redactor(self) -> Redactor:
        """What this route masks in the words a call leaves behind (``redact``, ``redact_patterns``)."""
        return self._redactor

    @field_validator("redact_patterns")
    @classmethod
    def _redact_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        problems = []
        for name, pattern in value.items():
            try:
                compile_pattern(name, pattern)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("to", "from_", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        patterns = [value] if isinstance(value, str) else value
        if isinstance(patterns, list):
            for pattern in patterns:
                if isinstance(pattern, str) and not _NUMBER_PATTERN.match(pattern):
                    raise ValueError(f"bad number pattern {pattern!r}: use '*', '+15551234567' or a prefix '+44*'")
        return patterns

    # Reasoning, tools, call control, DTMF and memory: see voicebot.agent (README "Reasoning, tools
    # and call control").
    reasoning: Literal["builtin"] | AgentReasoning = "builtin"
    tools: list[RouteTool] = Field(default_factory=list)
    call_control: CallControl = Field(default_factory=CallControl)
    waiting: WaitingSettings = Field(default_factory=WaitingSettings)
    dtmf: DtmfSettings = Field(default_factory=DtmfSettings)
    memory: bool = Field(default=False, description="per-caller memory keyed by From ([memory] table)")
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)


class S3Store(_Strict):
    """Where ``[recording] store = "s3"`` uploads finished tapes (voicebot.recordings). Credentials
    never go here: boto3 reads them from the standard AWS chain (AWS_* variables, a profile, an
    ECS/EKS/EC2 role)."""

    bucket: str = Field(min_length=3, max_length=63, description="the bucket's name")
    prefix: str = Field(default="tapes/", description="key prefix; keys are PREFIX + YYYY-MM-DD/ + the tape's name")
    endpoint_url: str | None = Field(
        default=None, description="an S3-compatible service (MinIO, Ceph, R2...); unset: AWS S3 of the region"
    )
    region: str | None = Field(default=None, description="unset: AWS_REGION / the profile's")
    profile: str | None = Field(default=None, description="AWS shared-config profile name (not a secret)")
    server_side_encryption: Literal["AES256", "aws:kms", "aws:kms:dsse"] | None = Field(
        default="AES256", description="x-amz-server-side-encryption of every object; unset: the bucket's default"
    )
    kms_key_id: str | None = Field(default=None, description="the KMS key for aws:kms / aws:kms:dsse (unset: AWS's)")
    storage_class: Literal[
        "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"
    ] = Field(default="STANDARD", description="the objects' storage class")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="per attempt; a hanging endpoint is given up")
    read_timeout_s: float = Field(default=60.0, gt=0, description="per attempt")

    @model_validator(mode="after")
    def _kms_key(self) -> S3Store:
        if self.kms_key_id and not (self.server_side_encryption or "").startswith("aws:kms"):
            raise ValueError("kms_key_id needs server_side_encryption = 'aws:kms' or 'aws:kms:dsse'")
        return self


class RecordingConfig(_Strict):
    """Call tapes (voicebot.devtools.tape, docs/call-tape.md). A call is recorded when ``enabled`` is true
    or its route says ``recording = true``. With ``store = "s3"`` each finished tape is uploaded
    (voicebot.recordings); the store settings are read at start, not on reload."""

    enabled: bool = Field(default=False, description="record every call, whatever its route says")
    dir: str = Field(default="tapes", description="directory for tapes, one JSONL file per call")
    max_bytes: int = Field(
        default=20 * 1024 * 1024, ge=4096, description="per-tape size cap; later records are dropped and counted"
    )
    caller_audio: bool = Field(
        default=True,
        description="false: tapes keep silence of the same length in place of the caller's audio (a route can "
        "also say record_caller_audio = false)",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="tapes older than this (by last write) are deleted by the server; unset: kept",
    )
    store: Literal["local", "s3"] = Field(
        default="local", description="local: tapes stay in dir; s3: each finished tape is uploaded ([recording.s3])"
    )
    s3: S3Store | None = Field(default=None, description="the bucket, when store = 's3'")
    upload_wav: bool = Field(
        default=False, description="also upload the call as a stereo WAV (caller left, bot right, as heard)"
    )
    keep_local: bool = Field(default=False, description="keep a tape in dir after its upload (default: deleted)")
    upload_workers: int = Field(default=2, ge=1, le=16, description="uploads at once (threads, off the event loop)")
    retry_initial_s: float = Field(default=2.0, gt=0, description="first wait after a failed upload; doubles")
    retry_max_s: float = Field(default=300.0, gt=0, description="longest wait between two tries of one upload")

    @model_validator(mode="after")
    def _s3_needed(self) -> RecordingConfig:
        if self.store == "s3" and self.s3 is None:
            raise ValueError("store = 's3' needs a [recording.s3] table with a bucket")
        if self.store == "s3" and importlib.util.find_spec("boto3") is None:
            raise ValueError("store = 's3' needs boto3: pip install 'voicebot[s3]'")
        return self


class AdmissionConfig(_Strict):
    """Where provider session slots (``max_sessions``) are counted: this process only, or a
    Redis shared by the fleet so the limit holds across instances (voicebot.calls.admission_redis)."""

    store: Literal["memory", "redis"] = "memory"
    redis_url: str = Field(default="redis://localhost:6379/0", description="used when store = 'redis'")
    key_prefix: str = Field(default="voicebot:slots", description="Redis key prefix (one sorted set per provider)")
    timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="how long a webhook waits on Redis for a slot; a slower answer declines the call "
        "(the route's fallback or on_unavailable), never admits it unchecked",
    )
    unreachable_max_sessions: int | None = Field(
        default=None,
        ge=0,
        description="while Redis is unreachable, slots are counted on each instance, at most this many "
        "per provider (unset: the provider's max_sessions, so the limit holds per instance)",
    )


class OpsConfig(_Strict):
    """The operators' HTTP API (voicebot.server.calls_api): ``GET /calls`` lists the calls in
    progress. Off (404) until a token is set; every request must then carry it as
    ``Authorization: Bearer TOKEN``."""

    token: SecretStr | None = Field(
        default=None, description="bearer token of the ops API; unset or empty: the API is off (404)"
    )

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # empty = unset, so a config can say "${VOICEBOT_OPS_TOKEN:-}"
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (it guards the list of calls)")
        return value


class LogsConfig(_Strict):
    """What of a call goes into log lines (s2s.call_context)."""

    personal_data: bool = Field(
        default=False,
        description="caller numbers in full and what was said (transcripts) in log lines; off: numbers are "
        "masked (+44******23) and transcripts left out. Tapes and caller memory are not affected",
    )


class AppConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    resilience: ResilienceConfig = Field(default_factory=ResilienceConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    ops: OpsConfig = Field(default_factory=OpsConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    # USD rates by provider type (voicebot.pricing): the shipped tables, overridden key by key
    pricing: dict[str, PricingTable] = Field(default_factory=shipped_tables)

    @field_validator("pricing", mode="before")
    @classmethod
    def _shipped_prices_under(cls, value: Any) -> Any:
        return merged_pricing(value)


DEFAULT_CONFIG_TOML = """
# Built-in default: one route answered by the local echo provider. No keys, no network.
# Signatures are checked when TWILIO_AUTH_TOKEN is set (load_config turns them on).
[twilio]
validate_signatures = false

[providers.parrot]
type = "echo"

[[routes]]
name = "default"
providers = ["parrot"]
instructions = "Repeat what the caller says."
"""


def interpolate_env(tree: Any, env: Mapping[str, str], issues: list[ConfigIssue], path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed TOML tree."""
    if isinstance(tree, dict):
        return {k: interpolate_env(v, env, issues, f"{path}.{k}" if path else k) for k, v in tree.items()}
    if isinstance(tree, list):
        return [interpolate_env(v, env, issues, f"{path}[{i + 1}]") for i, v in enumerate(tree)]
    if isinstance(tree, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if env.get(name):  # empty counts as unset, as in a shell's ${VAR:-default}
                return env[name]
            if default is not None:
                return default
            state = "is empty" if name in env else "is not set"
            issues.append(ConfigIssue(path, f"environment variable {name} {state}"))
            return ""

        return _ENV_REF.sub(substitute, tree)
    return tree


def _validation_issues(prefix: str, error: ValidationError, model: type[BaseModel]) -> list[ConfigIssue]:
    return [ConfigIssue(loc_path(prefix, e["loc"]), message(e, model)) for e in relevant(error.errors())]


def _typed_issues(prefix: str, model: type[BaseModel], tree: Any) -> list[ConfigIssue]:
    """What pydantic would let through: quoted booleans ("yes")."""
    return [ConfigIssue(path, text) for path, text in quoted_booleans(model, tree, prefix)]


def _provider_configs(raw: Any, issues: list[ConfigIssue]) -> tuple[dict[str, ProviderConfig], dict[str, str]]:
    """The valid provider tables, and for every other one why it cannot take a call."""
    if not isinstance(raw, dict):
        issues.append(ConfigIssue("providers", "must be a table of [providers.NAME] tables"))
        return {}, {}
    providers: dict[str, ProviderConfig] = {}
    unusable: dict[str, str] = {}
    for name, table in raw.items():
        path = f"providers.{name}"
        if not isinstance(table, dict) or "type" not in table:
            issues.append(ConfigIssue(path, "needs a `type` key"))
            unusable[name] = "no type"
            continue
        try:
            model = provider_spec(str(table["type"])).config_model
        except UnknownProviderType as exc:
            issues.append(ConfigIssue(f"{path}.type", str(exc)))
            unusable[name] = str(exc).split(":")[0]
            continue
        earlier = [issue for issue in issues if issue.path.startswith(path + ".")]  # from ${VAR}s
        found = _typed_issues(path, model, table)
        try:
            provider = model.model_validate(table)
        except ValidationError as exc:
            found.extend(_validation_issues(path, exc, model))
        else:
            reported = {issue.path for issue in earlier}
            found.extend(ConfigIssue(p, text) for p, text in secret_problems(provider, path) if p not in reported)
        issues.extend(found)
        if earlier or found:
            first = (earlier or found)[0]
            unusable[name] = f"{first.path.removeprefix(path + '.')} {first.message.split(':')[0]}"
        else:
            providers[name] = provider
    return providers, unusable


def _check_references(
    tree: dict[str, Any], provider_names: set[str], unusable: Mapping[str, str], issues: list[ConfigIssue]
) -> None:
    """Cross-table checks, done on the raw tree so they are reported even when another
    part of the file failed validation."""
    routes = tree.get("routes", [])
    if not isinstance(routes, list) or not routes:
        issues.append(ConfigIssue("routes", "at least one [[routes]] table is required"))
        return
    seen: set[str] = set()
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        name = route.get("name")
        if name in seen:
            issues.append(ConfigIssue(f"routes[{i + 1}].name", f"duplicate route name {name!r}"))
        seen.add(str(name))
        chain = route.get("providers", [])
        chain = chain if isinstance(chain, list) else []
        for j, provider in enumerate(chain):
            if provider not in provider_names:
                known = ", ".join(sorted(provider_names)) or "none"
                issues.append(
                    ConfigIssue(
                        f"routes[{i + 1}].providers[{j + 1}]", f"unknown provider {provider!r} (defined: {known})"
                    )
                )
        if chain and all(provider in unusable for provider in chain):
            reasons = "; ".join(f"{provider}: {unusable[provider]}" for provider in chain)
            issues.append(ConfigIssue(f"routes[{i + 1}]", f"route {name!r} has no usable provider ({reasons})"))
    twilio = tree.get("twilio", {})
    rest = isinstance(twilio, dict) and bool(twilio.get("account_sid")) and bool(twilio.get("auth_token"))
    for i, route in enumerate(routes):
        control = route.get("call_control") if isinstance(route, dict) else None
        if isinstance(control, dict) and control.get("warm_transfer") is True and not rest:
            issues.append(
                ConfigIssue(
                    f"routes[{i + 1}].call_control.warm_transfer",
                    "needs [twilio] account_sid and auth_token (the person is called through the REST API)",
                )
            )
    needs_token = isinstance(twilio, dict) and twilio.get("validate_signatures", True) and not twilio.get("auth_token")
    if needs_token and not any(issue.path == "twilio.auth_token" for issue in issues):
        issues.append(
            ConfigIssue("twilio.auth_token", "required when validate_signatures is true (set TWILIO_AUTH_TOKEN)")
        )


def _check_route_settings(
    tree: dict[str, Any], providers: Mapping[str, ProviderConfig], issues: list[ConfigIssue]
) -> None:
    """Each route's ``provider_settings`` laid over the provider table it names and validated
    there, so a bad value is reported at load with the route's path, never at call time."""
    routes = tree.get("routes", [])
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        settings = route.get("provider_settings") if isinstance(route, dict) else None
        if not isinstance(settings, dict):
            continue  # absent, or not a table: the RouteConfig validation says so
        chain = route.get("providers", [])
        for name, table in settings.items():
            path = f"routes[{i + 1}].provider_settings.{name}"
            if not isinstance(chain, list) or name not in chain:
                issues.append(ConfigIssue(path, f"provider {name!r} is not in this route's providers"))
                continue
            base = providers.get(name)
            if base is None or not isinstance(table, dict):
                continue  # the provider table's own issues are reported already
            try:
                base.for_route(table)
            except ValidationError as exc:
                issues.extend(_validation_issues(path, exc, type(base)))
            except ValueError as exc:
                issues.append(ConfigIssue(path, str(exc)))


def parse_config(raw: dict[str, Any], env: Mapping[str, str] | None = None, source: str = "config") -> AppConfig:
    issues: list[ConfigIssue] = []
    env = os.environ if env is None else env
    tree = interpolate_env(raw, env, issues)
    twilio = tree.get("twilio")
    if env.get("TWILIO_AUTH_TOKEN") and (twilio is None or (isinstance(twilio, dict) and "auth_token" not in twilio)):
        # The account's token is the one thing every deployment has; no need to repeat it.
        tree["twilio"] = {**(twilio or {}), "auth_token": env["TWILIO_AUTH_TOKEN"]}
    raw_providers = tree.pop("providers", {})
    providers, unusable = _provider_configs(raw_providers, issues)
    _check_references(tree, set(raw_providers) if isinstance(raw_providers, dict) else set(), unusable, issues)
    _check_route_settings(tree, providers, issues)
    issues.extend(_typed_issues("", AppConfig, tree))
    config: AppConfig | None = None
    try:
        config = AppConfig.model_validate(tree)
    except ValidationError as exc:
        issues.extend(_validation_issues("", exc, AppConfig))
    if config is not None:
        config.providers = providers
    if issues or config is None:
        raise ConfigError(issues, source)
    return config


def load_config_text(text: str, env: Mapping[str, str] | None = None, source: str = "config") -> AppConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue("", f"not valid TOML: {exc}")], source) from exc
    return parse_config(raw, env, source)


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> AppConfig:
    """Load ``path``, or the built-in echo default when ``path`` is None."""
    if path is None:
        text = DEFAULT_CONFIG_TOML
        if (os.environ if env is None else env).get("TWILIO_AUTH_TOKEN"):
            text = text.replace("validate_signatures = false", "validate_signatures = true")
        return load_config_text(text, env, source="built-in default config")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read {path}: {exc.strerror}")], str(path)) from exc
    return load_config_text(text, env, source=str(path))
