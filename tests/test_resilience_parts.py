"""The recovery layer's pure parts (s2s.resilience), driven with plain numbers: no event loop,
no sockets. The asyncio shell is covered by test_resilient_session, test_recovery and
test_rotation."""

from __future__ import annotations

import pytest

from s2s.events import AudioOut, SpeechStarted, SpeechStopped, Transcript, TurnDone
from s2s.provider import SessionContext, Turn
from s2s.resilience.connect import AttemptBudget, reopen_context
from s2s.resilience.item_ids import inward, outward
from s2s.resilience.kept_audio import KeptAudio
from s2s.resilience.policy import RecoveryPolicy
from s2s.resilience.state import IllegalSessionMove, SessionState, SessionStateMachine
from s2s.resilience.turns import QUIET_S, TurnTracker, Watchdog, is_voiced
from transcoding.formats import MULAW_8K, PCM16_16K

# -- state --------------------------------------------------------------------------------


def test_an_illegal_move_names_the_call_and_both_states() -> None:
    machine = SessionStateMachine("CA1")
    with pytest.raises(IllegalSessionMove, match="CA1: provider session cannot go from opening to renewing"):
        machine.to(SessionState.RENEWING)


def test_expiry_renewal_recovery_and_close_follow_the_lifecycle() -> None:
    machine = SessionStateMachine("CA1")
    for state in (
        SessionState.LIVE,
        SessionState.EXPIRING,
        SessionState.RENEWING,
        SessionState.EXPIRING,  # a stale or failed renewal waits for the next gap
        SessionState.RENEWING,
        SessionState.RECOVERING,  # the old session died first; the renewal stands in
        SessionState.LIVE,
        SessionState.CLOSING,
        SessionState.CLOSED,
    ):
        machine.to(state)
    assert machine.ending
    with pytest.raises(IllegalSessionMove):
        machine.to(SessionState.LIVE)


def test_a_recovering_session_cannot_start_a_renewal() -> None:
    machine = SessionStateMachine("CA1")
    machine.to(SessionState.LIVE)
    machine.to(SessionState.RECOVERING)
    with pytest.raises(IllegalSessionMove, match="from recovering to expiring"):
        machine.to(SessionState.EXPIRING)


# -- watchdog -----------------------------------------------------------------------------


def talk(dog: Watchdog, start: float, ms: int) -> float:
    """Voiced 20 ms frames from ``start`` for ``ms``; returns when the caller stopped."""
    t = start
    for _ in range(ms // 20):
        dog.caller_voiced(t, 20.0)
        t += 0.02
    return t - 0.02


def test_watchdog_ignores_a_click_and_arms_after_enough_unanswered_speech() -> None:
    dog = Watchdog(timeout_s=8.0)
    talk(dog, 1.0, 100)
    assert dog.deadline() is None and not dog.fired(100.0)
    end = talk(dog, 2.0, 400)
    assert dog.deadline() == pytest.approx(end + 8.0)


def test_watchdog_measures_from_the_first_unanswered_turn_not_the_latest() -> None:
    dog = Watchdog(timeout_s=8.0)
    first_end = talk(dog, 1.0, 600)
    for start in (4.0, 7.0, 10.0):  # "hello?" every 3 s into a mute session
        talk(dog, start, 600)
    assert dog.deadline() == pytest.approx(first_end + 8.0)
    assert dog.fired(first_end + 8.0)


def test_any_provider_event_answers_and_starts_the_watchdog_over() -> None:
    dog = Watchdog(timeout_s=8.0)
    talk(dog, 1.0, 600)
    dog.answered(3.0)
    assert dog.deadline() is None
    end = talk(dog, 5.0, 600)
    assert dog.deadline() == pytest.approx(end + 8.0)


def test_a_long_first_turn_is_measured_from_its_end() -> None:
    dog = Watchdog(timeout_s=2.0)
    end = talk(dog, 1.0, 5000)  # some providers stay silent during a long utterance
    assert not dog.fired(end + 1.9) and dog.fired(end + 2.0)


# -- turns --------------------------------------------------------------------------------


def test_between_turns_needs_bot_and_caller_quiet() -> None:
    turns = TurnTracker()
    assert turns.between_turns(0.0)
    turns.provider_event(AudioOut(b"\xff", "i1"))
    assert not turns.between_turns(1.0)
    turns.provider_event(TurnDone("i1"))
    turns.provider_event(SpeechStarted())
    assert not turns.between_turns(1.0)
    turns.provider_event(SpeechStopped())
    turns.caller_voiced(2.0)
    assert not turns.between_turns(2.0 + QUIET_S / 2)
    assert turns.between_turns(2.0 + QUIET_S + 0.01)
    turns.provider_event(AudioOut(b"\xff", "i2"))
    turns.new_session()
    assert turns.between_turns(3.0)


def test_voiced_is_judged_on_the_session_format() -> None:
    assert is_voiced(b"\x00" * 160, MULAW_8K)  # full-scale mu-law
    assert not is_voiced(b"\xff" * 160, MULAW_8K)  # mu-law silence
    assert not is_voiced(b"\x00" * 640, PCM16_16K)
    assert not is_voiced(b"", MULAW_8K)


# -- connect budget -----------------------------------------------------------------------


def test_attempts_share_the_budget_except_on_the_last_provider() -> None:
    policy = RecoveryPolicy(budget_s=1.5, attempts=3, backoff_s=0.1)
    middle = AttemptBudget.starting(policy, connect_timeout_s=5.0, last_in_chain=False, now=10.0)
    assert middle.timeout(10.0) == pytest.approx(1.5)
    assert middle.timeout(11.6) <= 0
    last = AttemptBudget.starting(policy, connect_timeout_s=5.0, last_in_chain=True, now=10.0)
    assert last.timeout(11.6) == 5.0


def test_backoff_doubles_with_jitter_and_stops_at_the_budget_or_a_permanent_error() -> None:
    policy = RecoveryPolicy(budget_s=1.5, attempts=3, backoff_s=0.1)
    budget = AttemptBudget.starting(policy, 5.0, False, now=0.0)
    assert budget.retry_delay(1, True, 0.0, jitter=0.0) == (pytest.approx(0.05), True)
    assert budget.retry_delay(2, True, 0.0, jitter=1.0 - 1e-9) == (pytest.approx(0.2), True)
    assert not budget.retry_delay(3, True, 0.0, jitter=0.0)[1]  # out of attempts
    assert not budget.retry_delay(1, False, 0.0, jitter=0.0)[1]  # bad credentials: move on
    assert not budget.retry_delay(1, True, 1.49, jitter=0.5)[1]  # the delay would end past the budget


def test_a_reopened_session_gets_history_no_greeting_and_only_its_own_handle() -> None:
    ctx = SessionContext("CA1", "be nice", greeting="Hello!")
    history = [Turn("caller", "hi"), Turn("bot", "hello")]
    reopened = reopen_context(ctx, history, "handle-1")
    assert reopened.greeting is None and reopened.instructions == "be nice"
    assert reopened.history == tuple(history) and reopened.resume_handle == "handle-1"


# -- kept audio ---------------------------------------------------------------------------


def test_kept_audio_holds_the_newest_and_drops_what_aged_out() -> None:
    kept = KeptAudio(limit_ms=100)
    for i in range(8):  # 8 x 20 ms, keeps the newest 100 ms
        kept.keep(i * 0.02, MULAW_8K, bytes([i]) * 160)
    assert kept.duration_ms == pytest.approx(100)
    replay = kept.take(now=0.17, to=MULAW_8K)  # the oldest kept chunk (at 0.06 s) is now too old
    assert [chunk[0] for chunk in replay.chunks] == [4, 5, 6, 7]
    assert replay.sent_ms == pytest.approx(80) and replay.dropped_ms == pytest.approx(20)
    assert not kept


def test_kept_audio_is_replayed_in_the_new_sessions_format() -> None:
    kept = KeptAudio(limit_ms=3000)
    kept.keep(0.0, MULAW_8K, b"\x00" * 800)  # 100 ms at 8 kHz mu-law
    replay = kept.take(now=0.1, to=PCM16_16K)
    assert sum(len(c) for c in replay.chunks) == pytest.approx(3200, abs=160)


# -- item ids -----------------------------------------------------------------------------


def test_later_sessions_prefix_item_ids_and_truncate_strips_them() -> None:
    assert outward(1, AudioOut(b"", "item-1")) == AudioOut(b"", "item-1")
    assert outward(2, AudioOut(b"", "item-1")) == AudioOut(b"", "r2:item-1")
    assert outward(3, Transcript("bot", "hi", item_id="item-9")) == Transcript("bot", "hi", item_id="r3:item-9")
    assert inward(2, "r2:item-1") == "item-1"
    assert inward(2, "item-1") is None  # the first session's item: that session is gone
    assert inward(1, "r2:item-1") is None
    assert inward(1, "item-1") == "item-1"
