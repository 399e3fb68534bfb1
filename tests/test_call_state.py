import pytest

from telephony.call_state import CallOutcome, CallState, CallStateMachine, IllegalTransition


def test_illegal_transition_names_the_call_and_both_states() -> None:
    machine = CallStateMachine("CA1")
    with pytest.raises(IllegalTransition, match="CA1: cannot go from connecting to interrupted"):
        machine.to(CallState.INTERRUPTED)


def test_a_call_streams_is_interrupted_and_closes_from_anywhere() -> None:
    machine = CallStateMachine("CA1")
    machine.to(CallState.STREAMING)
    machine.to(CallState.INTERRUPTED)
    machine.to(CallState.STREAMING)
    machine.close()
    assert machine.state is CallState.CLOSED
    with pytest.raises(IllegalTransition):
        machine.to(CallState.STREAMING)


def test_the_first_outcome_decides_and_moves_the_call_to_closing() -> None:
    machine = CallStateMachine("CA1")
    machine.to(CallState.STREAMING)
    assert not machine.ended
    assert machine.end(CallOutcome.BOT_HANGUP)
    assert machine.state is CallState.CLOSING
    # the caller's hang-up racing ours changes nothing
    assert not machine.end(CallOutcome.CALLER_HANGUP)
    assert machine.outcome is CallOutcome.BOT_HANGUP
    with pytest.raises(IllegalTransition):
        machine.to(CallState.STREAMING)
    machine.close()
    assert machine.state is CallState.CLOSED and machine.outcome is CallOutcome.BOT_HANGUP


def test_an_outcome_decided_after_teardown_is_kept_and_in_progress_is_not_an_ending() -> None:
    machine = CallStateMachine("CA1")
    machine.close()
    assert machine.end(CallOutcome.SERVER_SHUTDOWN)
    assert machine.state is CallState.CLOSED
    with pytest.raises(ValueError):
        CallStateMachine("CA2").end(CallOutcome.IN_PROGRESS)


def test_outcomes_are_their_wire_words_and_know_which_are_faults() -> None:
    assert CallOutcome.PROVIDER_LOST == "provider-lost"
    assert {o for o in CallOutcome if o.failed} == {
        CallOutcome.PROVIDER_UNAVAILABLE,
        CallOutcome.PROVIDER_LOST,
        CallOutcome.PROTOCOL_ERROR,
        CallOutcome.CALL_CONTROL_FAILED,
    }
