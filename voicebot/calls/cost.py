"""What a call cost: the provider usage of each session of the call, priced by the
config's ``[pricing]`` tables (voicebot.pricing), known at hang-up.

:class:`CallCost` watches the call like the other observers: the :class:`~s2s.events.Usage`
events the providers report (cumulative per provider session, so the latest report of a
session is its figure), the session changes (a recovery or fallback opens another), and the
audio that crossed each way. The route's ``max_cost_usd`` is checked on every report."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s2s.events import USAGE_COUNTS, AudioOut, ProviderEvent, Usage
from telephony.observer import AudioSent, CallObserver, SentToProvider
from voicebot.pricing import PricingTable

if TYPE_CHECKING:
    from s2s.provider import ProviderSession
    from telephony.bridge import CallSummary
    from voicebot.config import AppConfig

PER_MILLION = 1e-6


@dataclass(slots=True)
class UsageRecord:
    """Use of one provider session, or of a whole call (the sum of its sessions): what we
    measured (the audio each way, how long the session was open) beside what the provider
    ``reported`` (a :class:`~s2s.events.Usage`: tokens, billable seconds, a cascade's parts)."""

    audio_in_s: float = 0.0
    audio_out_s: float = 0.0
    session_s: float = 0.0
    cost_usd: float = 0.0
    reported: Usage = field(default_factory=lambda: Usage(""))

    def add(self, other: UsageRecord) -> None:
        self.audio_in_s += other.audio_in_s
        self.audio_out_s += other.audio_out_s
        self.session_s += other.session_s
        self.cost_usd += other.cost_usd
        self.reported = self.reported.plus(other.reported)

    def row(self) -> dict[str, float | int]:
        """For logs, tapes and the ops API: one flat table, rounded, without the zeros."""
        values: dict[str, float] = {name: getattr(self.reported, name) for name in USAGE_COUNTS}
        values.update(audio_in_s=self.audio_in_s, audio_out_s=self.audio_out_s, session_s=self.session_s)
        out: dict[str, float | int] = {name: round(value, 3) for name, value in values.items() if value}
        if self.cost_usd:
            out["cost_usd"] = round(self.cost_usd, 6)
        return out


def price(record: UsageRecord, table: PricingTable) -> float:
    """USD for one session's use. Cached input tokens are billed at the cached rate instead
    of their modality's; time-billed providers are charged for their billable seconds when
    they report them, else for the time the session was open; a cascade's parts by their own
    units."""
    used = record.reported
    tokens = (
        (used.text_in_tokens - used.cached_text_in_tokens) * table.text_in_per_mtok
        + (used.audio_in_tokens - used.cached_audio_in_tokens) * table.audio_in_per_mtok
        + (used.cached_text_in_tokens + used.cached_audio_in_tokens) * table.cached_in_per_mtok
        + used.text_out_tokens * table.text_out_per_mtok
        + used.audio_out_tokens * table.audio_out_per_mtok
        + used.tts_chars * table.tts_per_mchars
    ) * PER_MILLION
    seconds = used.billable_s or record.session_s
    minutes = seconds * table.session_per_minute + used.stt_s * table.stt_per_minute + used.tts_s * table.tts_per_minute
    return tokens + minutes / 60.0


@dataclass(slots=True)
class _Session:
    provider: str  # the config's name for it
    provider_type: str
    opened_at: float
    closed_at: float | None = None
    record: UsageRecord = field(default_factory=UsageRecord)
    usage: dict[str, Usage] = field(default_factory=dict)  # provider session id -> latest report


class CallCost(CallObserver):
    """The call's usage and cost so far, by provider session. ``on_budget`` is called once,
    when the cost reaches ``max_cost_usd``."""

    def __init__(
        self,
        config: AppConfig,
        max_cost_usd: float | None = None,
        on_budget: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._max_cost = max_cost_usd
        self._on_budget = on_budget
        self._clock = clock
        self.sessions: list[_Session] = []
        self._in_rate = 0.0  # bytes per second of what we send the provider
        self._out_rate = 0.0
        self._over_budget = False

    def session_opened(self, session: ProviderSession) -> None:
        now = self._clock()
        self._close_current(now)
        name = str(getattr(session, "provider_name", None) or "unknown")
        provider = self._config.providers.get(name)
        self.sessions.append(_Session(name, provider.type if provider is not None else name, now))
        self._in_rate = float(session.input_format.bytes_per_second)
        self._out_rate = float(session.output_format.bytes_per_second)

    def provider_out(self, sent: SentToProvider) -> None:
        if type(sent) is AudioSent and self.sessions and self._in_rate:
            self.sessions[-1].record.audio_in_s += len(sent.audio) / self._in_rate

    def provider_in(self, event: ProviderEvent) -> None:
        if not self.sessions:
            return
        if type(event) is AudioOut:
            if self._out_rate:
                self.sessions[-1].record.audio_out_s += len(event.audio) / self._out_rate
        else:
            if isinstance(event, Usage):
                current = self.sessions[-1]
                current.usage[event.session_id] = event
                self._reprice(current)
            # Time-billed providers (Grok) send no usage: their cost grows with the clock,
            # so the budget is looked at on every event but audio.
            self._check_budget()

    def call_ended(self, summary: CallSummary) -> None:
        self._close_current(self._clock())
        for session in self.sessions:
            self._reprice(session)

    # -- figures ---------------------------------------------------------------------------

    def total(self) -> UsageRecord:
        """The call so far (an open session counted up to now)."""
        now = self._clock()
        total = UsageRecord()
        for session in self.sessions:
            if session.closed_at is None:
                session.record.session_s = now - session.opened_at
                self._reprice(session)
            total.add(session.record)
        return total

    def by_provider(self) -> dict[str, UsageRecord]:
        """Totals by provider type (the ``provider`` label of ``voicebot_usage_total``)."""
        out: dict[str, UsageRecord] = {}
        self.total()  # brings open sessions up to now
        for session in self.sessions:
            out.setdefault(session.provider_type, UsageRecord()).add(session.record)
        return out

    @property
    def cost_usd(self) -> float:
        return self.total().cost_usd

    def summary(self) -> dict[str, Any]:
        """The call's record and one per provider session: the tape's end record, the
        end-of-call log line and ``GET /calls``."""
        total = self.total()
        return {
            "cost_usd": round(total.cost_usd, 6),
            "total": total.row(),
            "sessions": [{"provider": s.provider, "type": s.provider_type, **s.record.row()} for s in self.sessions],
        }

    # -- internals -------------------------------------------------------------------------

    def _close_current(self, now: float) -> None:
        if self.sessions and self.sessions[-1].closed_at is None:
            current = self.sessions[-1]
            current.closed_at = now
            current.record.session_s = now - current.opened_at

    def _reprice(self, session: _Session) -> None:
        record = session.record
        record.reported = functools.reduce(Usage.plus, session.usage.values(), Usage(""))
        table = self._config.pricing.get(session.provider_type)
        record.cost_usd = price(record, table) if table is not None else 0.0

    def _check_budget(self) -> None:
        if self._over_budget or self._max_cost is None or self._on_budget is None:
            return
        cost = self.cost_usd
        if cost >= self._max_cost:
            self._over_budget = True
            self._on_budget(cost)
