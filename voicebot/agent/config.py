"""Route keys for reasoning, tools, call control, DTMF and caller memory, and the ``[memory]``
table. Kept apart from :mod:`voicebot.config` so that module stays a short list of tables;
it imports these models into ``RouteConfig`` / ``AppConfig``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from telephony.hold_audio import BadWav, builtin_hold_tone, wav_to_mulaw_8k

_CALLABLE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# What Twilio's <Dial> accepts as a destination we allow: an E.164 number or a SIP URI.
_DESTINATION = re.compile(r"^(\+[1-9]\d{6,14}|sips?:[^\s<>]+)$")
_TOOL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")

# Silence before a filler is asked for. The model needs ~0.3-0.5 s to start speaking it, so
# the caller hears about a second of silence at most.
FILLER_AFTER_S = 0.7
WARM_NO_ANSWER = (
    "(Note from the system: the person you tried to transfer the caller to did not answer. Tell the caller, "
    "apologise, and offer to help them yourself or to take a message.)"
)
HOLD_AFTER_S = 1.5
MAX_HOLD_CLIP_MS = 10 * 60 * 1000.0  # a loop, not an album: ten minutes at most (4.8 MB as mu-law)
DEFAULT_FALLBACK = "I'm sorry, I can't get that information right now. Please try again in a moment."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_callable_ref(value: str | None) -> str | None:
    if value is not None and not _CALLABLE_REF.match(value):
        raise ValueError("must look like 'package.module:callable'")
    return value


class AgentReasoning(_Strict):
    """``reasoning = { agent_url = "https://…" }`` or ``{ agent = "package.module:callable" }``."""

    agent_url: str | None = Field(default=None, description="POST JSON {call_sid, caller, transcript, question}")
    agent: str | None = Field(default=None, description="async callable 'package.module:callable', same contract")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers (e.g. Authorization)")
    timeout_s: float = Field(default=8.0, gt=0, le=60, description="after this the caller hears the fallback")
    filler_after_s: float = Field(
        default=FILLER_AFTER_S, gt=0, description="caller silence while the agent works before the model says a filler"
    )
    fallback: str = Field(default=DEFAULT_FALLBACK, description="what the bot says when the agent fails")

    @field_validator("agent")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        return _check_callable_ref(value)

    @field_validator("agent_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an absolute http(s):// URL")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.agent_url is None) == (self.agent is None):
            raise ValueError("set exactly one of agent_url or agent")
        return self


class RouteTool(_Strict):
    """A route's own tool for ``builtin`` reasoning, declared once and mapped per provider."""

    name: str
    description: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str | None = Field(default=None, description="POST JSON {call_sid, caller, tool, arguments}")
    handler: str | None = Field(default=None, description="async callable 'package.module:callable'")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=8.0, gt=0, le=60)
    filler_after_s: float = Field(
        default=FILLER_AFTER_S, gt=0, description="caller silence before the model says a filler"
    )

    @field_validator("handler")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        return _check_callable_ref(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOOL_NAME.match(value):
            raise ValueError("tool names are letters, digits, '_' or '-' (max 64), starting with a letter")
        if value in RESERVED_TOOL_NAMES:
            raise ValueError(f"{value!r} is a built-in tool name")
        return value

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('must be a JSON Schema with type = "object"')
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.url is None) == (self.handler is None):
            raise ValueError("set exactly one of url or handler")
        return self


class CallControl(_Strict):
    """``[routes.call_control]``: which call-control tools the model gets."""

    end_call: bool = Field(default=False, description="offer end_call(reason)")
    transfer: dict[str, str] = Field(
        default_factory=dict,
        description="transfer_call allow-list: name -> E.164 number or SIP URI; empty = no transfer tool",
    )
    transfer_method: Literal["auto", "rest", "stream"] = Field(
        default="auto",
        description="rest: Twilio REST calls(sid).update(twiml=<Dial>); stream: end the stream so the TwiML "
        "after <Connect> dials; auto: rest when [twilio] account_sid and auth_token are set",
    )
    max_goodbye_wait_s: float = Field(
        default=15.0, gt=0, description="longest wait for the bot's last words to play before acting anyway"
    )
    warm_transfer: bool = Field(
        default=False,
        description="transfer_call may be warm (mode = 'warm'): the caller waits on hold while the person is "
        "called into a Twilio conference and told a summary of the call, then joins them (needs REST credentials)",
    )
    warm_answer_timeout_s: float = Field(
        default=30.0,
        ge=5,
        le=600,
        description="a warm transfer nobody has joined by then returns the caller to the bot",
    )
    warm_caller_id: str | None = Field(
        default=None,
        pattern=r"^\+[1-9]\d{6,14}$",
        description="From of the call to the person (a Twilio number); unset: the call's own Twilio number",
    )
    warm_no_answer: str = Field(
        default=WARM_NO_ANSWER,
        description="the system note that returns the caller to the bot when a warm transfer was not answered",
    )

    @model_validator(mode="after")
    def _warm_needs_rest(self) -> Self:
        if self.warm_transfer and self.transfer_method == "stream":
            raise ValueError("warm_transfer dials through the REST API: transfer_method cannot be 'stream'")
        return self

    @field_validator("transfer")
    @classmethod
    def _destinations(cls, value: dict[str, str]) -> dict[str, str]:
        for name, number in value.items():
            if not _DESTINATION.match(number):
                raise ValueError(f"transfer.{name}: {number!r} is not an E.164 number or sip: URI")
        return value


class WaitingSettings(_Strict):
    """``[routes.waiting]``: what the caller hears while a slow tool or the agent works.

    ``filler``: the model says a short filler after ``filler_after_s`` of silence (each tool's
    and the agent's own setting; voicebot.agent.agent.SilenceFiller). ``hold``: after
    ``hold_after_s`` the caller hears hold audio at the phone edge (telephony.hold): the
    ``hold_audio`` WAV looped, or a soft built-in chime, until the answer or their speech."""

    mode: Literal["filler", "hold"] = Field(default="filler", description="model-spoken fillers, or hold audio")
    hold_after_s: float = Field(
        default=HOLD_AFTER_S, gt=0, le=60, description="mode hold: a tool or the agent this slow gets hold audio"
    )
    hold_audio: str | None = Field(
        default=None,
        description="hold audio (mode hold, and warm transfers): a linear PCM WAV file (any rate and channels, "
        "up to 10 min), looped; unset: a soft built-in chime",
    )
    _hold_mulaw: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def _load_hold_audio(self) -> Self:
        if self.mode != "hold" and "hold_after_s" in self.model_fields_set:
            raise ValueError("hold_after_s only applies with mode = 'hold'")
        if self.hold_audio is None:
            return self
        try:
            data = Path(self.hold_audio).read_bytes()
        except OSError as exc:
            raise ValueError(f"hold_audio: cannot read {self.hold_audio}: {exc.strerror}") from exc
        try:
            self._hold_mulaw = wav_to_mulaw_8k(data, MAX_HOLD_CLIP_MS)
        except BadWav as exc:
            raise ValueError(f"hold_audio: {self.hold_audio}: {exc}") from exc
        return self

    def hold_clip(self, warm_transfer: bool) -> bytes | None:
        """The call's hold audio (mu-law 8 kHz, one loop) when something plays it (mode hold,
        or a route with warm transfers), else None."""
        if self.mode != "hold" and not warm_transfer:
            return None
        return self._hold_mulaw or builtin_hold_tone()


class DtmfSettings(_Strict):
    """``[routes.dtmf]``: how keypad digits are collected before the model sees them."""

    inter_digit_timeout_ms: int = Field(default=1500, ge=100, le=10_000)
    finish_on: str = Field(default="#", max_length=1, description="a key that ends the sequence at once; '' = none")
    max_digits: int = Field(default=32, ge=1, le=256)
    sensitive: bool = Field(
        default=False,
        description="keypad entries are secrets: the model is told only how many digits were typed, the route's "
        "tools get them (`keypad`), and tapes and logs mask them",
    )


class MemoryConfig(_Strict):
    """``[memory]``: where per-caller memory lives and how long it is kept (routes opt in)."""

    path: str = Field(default="voicebot-memory.sqlite3", description="SQLite file")
    retention_days: float = Field(default=30.0, gt=0, description="calls older than this are deleted")
    max_calls: int = Field(default=5, ge=1, le=100, description="past calls per caller kept and summarised")
    max_summary_chars: int = Field(default=1200, ge=100, le=20_000)


RESERVED_TOOL_NAMES = frozenset({"ask_agent", "transfer_call", "end_call"})
