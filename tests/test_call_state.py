import pytest

from telephony.call_state import CallState, CallStateMachine, IllegalTransition


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
