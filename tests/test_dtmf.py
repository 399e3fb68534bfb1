"""Keypad digits are buffered into one sequence and reach the model as one text turn."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.live_call import echo_of
from tests.support.server import echo_line_config, running_server
from voicebot.agent.config import DtmfSettings
from voicebot.agent.dtmf import DigitCollector, keypad_text


class Sink:
    def __init__(self) -> None:
        self.texts: list[tuple[float, str]] = []

    async def __call__(self, text: str) -> None:
        self.texts.append((time.monotonic(), text))


async def test_digits_become_one_sequence_after_the_inter_digit_timeout() -> None:
    sink = Sink()
    collector = DigitCollector(DtmfSettings(inter_digit_timeout_ms=200), sink)
    for digit in "4711":
        collector.press(digit)
        await asyncio.sleep(0.1)  # under the timeout: the sequence goes on
    last_press = time.monotonic() - 0.1
    assert sink.texts == []
    await asyncio.sleep(0.25)
    await collector.drain()
    assert [text for _, text in sink.texts] == ["The caller entered 4711 on the phone keypad."]
    assert sink.texts[0][0] - last_press == pytest.approx(0.2, abs=0.08)


async def test_finish_key_delivers_at_once_and_max_digits_caps_a_sequence() -> None:
    sink = Sink()
    collector = DigitCollector(DtmfSettings(inter_digit_timeout_ms=5000, max_digits=3), sink)
    for digit in "42#":
        collector.press(digit)
    for digit in "12345":
        collector.press(digit)
    await asyncio.sleep(0)
    await collector.drain()
    assert [text for _, text in sink.texts] == [
        "The caller entered 42, then # on the phone keypad.",
        "The caller entered 123 on the phone keypad.",
    ]
    assert collector.buffered == "45"
    collector.close()  # hang-up drops the unfinished rest
    assert collector.buffered == ""


async def test_a_failing_delivery_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(text: str) -> None:
        raise ConnectionError("provider gone")

    collector = DigitCollector(DtmfSettings(), broken, call_sid="CAtest")
    collector.press("#")
    await asyncio.sleep(0)
    await collector.drain()
    assert "CAtest" in caplog.text and "dropped" in caplog.text


async def test_a_sensitive_keypad_keeps_the_digits_for_the_tools_and_tells_only_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink, kept = Sink(), []
    collector = DigitCollector(DtmfSettings(sensitive=True), sink, call_sid="CAtest", keep=kept.append)
    for digit in "4242424242424242#":
        collector.press(digit)
    for digit in "987":
        collector.press(digit)
    await asyncio.sleep(0)
    await collector.drain()
    collector.close()  # hang-up with "987" unfinished
    assert kept == ["4242424242424242"]
    assert [text for _, text in sink.texts] == [
        "The caller entered 16 digits, then # on the phone keypad. The digits are kept from you; "
        "your tools receive them."
    ]
    assert "dropped unfinished keypad input '3 key(s)'" in caplog.text and "987" not in caplog.text


def test_keypad_text_for_a_lone_finish_key() -> None:
    assert keypad_text("", "#") == "The caller pressed # on the phone keypad."


def dtmf_config(timeout_ms: int) -> str:
    return echo_line_config("ivr", route_extra=f"[routes.dtmf]\ninter_digit_timeout_ms = {timeout_ms}")


async def test_a_dtmf_sequence_reaches_the_model_as_one_text_through_the_server() -> None:
    async with running_server(dtmf_config(400)) as server, server.twilio().call() as call:
        echo = await echo_of(server, call)
        for digit in "2580":
            await call.press(digit)
            await call.pause(120)
        pressed_at = time.monotonic() - 0.12
        await call.wait_for(lambda: bool(echo.received_text), timeout=3)
        delivered_after = time.monotonic() - pressed_at
        await call.pause(500)
        assert echo.received_text == ["The caller entered 2580 on the phone keypad."]
        assert 0.35 <= delivered_after <= 0.7
        # The keypad entry is part of the call's neutral transcript (for agents and memory).
        bridge = server.runtime.active[call.call_sid]
        assert [(t.role, t.text) for t in bridge.summary.transcript] == [
            ("caller", "The caller entered 2580 on the phone keypad.")
        ]


async def test_the_finish_key_sends_the_sequence_without_waiting() -> None:
    async with running_server(dtmf_config(5000)) as server, server.twilio().call() as call:
        echo = await echo_of(server, call)
        for digit in "12#":
            await call.press(digit)
        await call.wait_for(lambda: bool(echo.received_text), timeout=1.0)
        assert echo.received_text == ["The caller entered 12, then # on the phone keypad."]
