"""The route's masking of personal data (voicebot.privacy.redaction) as a pure function, its
config checks, and what a tape's encoder keeps off disk with it."""

from __future__ import annotations

import json
import logging

import pytest

from s2s.call_context import call_redactor_var, redact_log_records
from s2s.events import ProviderError, ToolCall, Transcript
from s2s.provider import Turn
from tests.support.server import echo_line_config
from transcoding.formats import PCM16_24K
from voicebot.config import ConfigError, load_config_text
from voicebot.devtools.tape.format import (
    CallEnd,
    ProviderIn,
    ProviderOut,
    TapeHeader,
    TapePrivacy,
    TwilioFrame,
    decode_header,
    encode_header,
    encode_record,
)
from voicebot.privacy.redaction import Redactor, luhn_ok, redact_json

ALL = Redactor(["card", "phone", "digits", "email"])


@pytest.mark.parametrize(
    ("said", "kept"),
    [
        ("my card is 4111 1111 1111 1111 thanks", "my card is [card] thanks"),
        ("4111-1111-1111-1111", "[card]"),
        ("four one one one one one one one one one one one one one one one", "[card]"),
        ("card 4111111111111111 expiry 12 28", "card [card] expiry [digits]"),
        ("call me on +44 7700 900123 please", "call me on [phone] please"),
        ("it's (555) 123-4567", "it's [phone]"),
        ("my PIN is 1 2 3 4", "my PIN is [digits]"),
        ("mail jo.smith+x@example.co.uk", "mail [email]"),
        ("I have 3 kids and one dog", "I have 3 kids and one dog"),
        ("it costs 12.50", "it costs 12.50"),
    ],
)
def test_what_each_kind_masks(said: str, kept: str) -> None:
    assert ALL(said) == kept


def test_cards_pass_the_luhn_check_so_other_long_numbers_are_left_to_other_kinds() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    cards_only = Redactor(["card"])
    assert cards_only("order 4111111111111112, card 4111111111111111") == "order 4111111111111112, card [card]"
    assert Redactor(["card", "phone"])("order 4111111111111112") == "order [phone]"


def test_only_the_kinds_asked_for_are_masked() -> None:
    phones = Redactor(["phone"])
    assert phones("PIN 1234, phone 020 7946 0018, jo@example.com") == "PIN 1234, phone [phone], jo@example.com"
    assert not Redactor() and Redactor()("4111111111111111") == "4111111111111111"


def test_custom_patterns_are_masked_by_name_before_numbers() -> None:
    redact = Redactor(["digits"], {"member": r"M-\d{6}"})
    assert redact("member M-123456, order 98765") == "member [member], order [digits]"
    assert redact.names == ("digits", "member")


def test_json_values_are_masked_field_by_field() -> None:
    value = {"card": 4111111111111111, "note": "call 020 7946 0018", "n": 3, "ok": True, "list": ["4111111111111111"]}
    assert redact_json(value, ALL) == {
        "card": "[card]",
        "note": "call [phone]",
        "n": 3,
        "ok": True,
        "list": ["[card]"],
    }


def route_config(route_extra: str) -> str:
    return echo_line_config(route_extra=route_extra)


def test_bad_kinds_and_patterns_are_config_errors_with_their_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(route_config('redact = ["cards"]\nredact_patterns = { bad = "(", empty = "x*", Up = "y" }'))
    text = str(info.value)
    assert "routes[1].redact[1]: must be one of 'card', 'phone', 'digits' or 'email', not 'cards'" in text
    assert "bad: not a valid regular expression" in text
    assert "empty: the pattern matches empty text" in text
    assert "pattern name 'Up'" in text


def test_the_routes_redactor_is_built_once_with_the_config() -> None:
    config = load_config_text(route_config('redact = ["card"]\nredact_patterns = { member = "M-[0-9]{6}" }'))
    route = config.routes[0]
    assert route.redactor is route.redactor and route.redactor("M-123456 4111111111111111") == "[member] [card]"


def test_the_tape_encoder_masks_text_caller_audio_and_keypad_digits() -> None:
    privacy = TapePrivacy(redact=ALL, caller_audio=False, keypad_masked=True)
    dtmf = TwilioFrame(1.0, "in", json.dumps({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "7"}}))
    pound = TwilioFrame(1.0, "in", json.dumps({"event": "dtmf", "dtmf": {"digit": "#"}}))
    media = TwilioFrame(2.0, "in", json.dumps({"event": "media", "media": {"payload": "AAECAw=="}}))
    assert encode_record(dtmf, privacy)["msg"]["dtmf"]["digit"] == "X"
    assert encode_record(pound, privacy)["msg"]["dtmf"]["digit"] == "#"
    assert encode_record(media, privacy)["msg"]["media"]["payload"] == "/////w=="  # 4 bytes of mu-law silence
    audio = ProviderOut(3.0, "audio", audio=b"\x01\x02\x03\x04")
    assert encode_record(audio, privacy, PCM16_24K)["audio"] == "AAAAAA=="  # PCM16 silence, same length
    said = ProviderIn(4.0, Transcript("caller", "card 4111 1111 1111 1111"))
    assert encode_record(said, privacy)["text"] == "card [card]"
    piece = ProviderIn(4.0, Transcript("bot", "4111 1111 ", final=False))  # half a card in one delta
    assert encode_record(piece, privacy)["text"] == ""
    tool = ProviderIn(5.0, ToolCall("c1", "pay", {"card": "4111111111111111"}))
    assert encode_record(tool, privacy)["arguments"] == {"card": "[card]"}
    error = ProviderIn(5.5, ProviderError("bad", "cannot use 4111111111111111"))
    assert encode_record(error, privacy)["message"] == "cannot use [card]"
    output = ProviderOut(6.0, "tool_result", call_id="c1", output='{"card": 4111111111111111}')
    assert json.loads(encode_record(output, privacy)["output"]) == {"card": "[card]"}
    end = CallEnd(7.0, "caller-hangup", (Turn("bot", "your number is 020 7946 0018"),))
    assert encode_record(end, privacy)["transcript"] == [["bot", "your number is [phone]"]]
    assert encode_record(said)["text"] == "card 4111 1111 1111 1111"  # nothing asked: nothing masked


def test_the_header_says_what_the_tape_left_out_and_reads_back() -> None:
    header = TapeHeader("CA1", redacted=("card", "member"), caller_audio=False, keypad_masked=True)
    encoded = encode_header(header)
    assert encoded["redacted"] == ["card", "member"] and encoded["caller_audio"] is False
    assert decode_header(encoded) == header
    plain = encode_header(TapeHeader("CA1"))
    assert "redacted" not in plain and "caller_audio" not in plain and "keypad_masked" not in plain


def test_identifiers_glued_to_letters_are_not_numbers() -> None:
    assert ALL("call CA1234567890abcdef1234567890abcdef ended") == "call CA1234567890abcdef1234567890abcdef ended"
    assert ALL("tapes/20261203T213809064Z_CA12.jsonl") == "tapes/20261203T213809064Z_CA12.jsonl"


def test_log_records_inside_a_call_mask_what_they_quote_and_keep_measurements() -> None:
    redact_log_records()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler := Keep())
    logger.setLevel(logging.INFO)
    token = call_redactor_var.set(ALL)
    try:
        logger.info("call %s: caller heard %d of %.0f ms: %r", "CA" + "1234" * 8, 1520, 2400.0, "card 4111111111111111")
        logger.info(f"no arguments: {'+44 7700 900123'}")
        try:
            raise ValueError("cannot charge 4111 1111 1111 1111")
        except ValueError:
            logger.exception("tool failed")
    finally:
        call_redactor_var.reset(token)
        logger.removeHandler(handler)
    formatter = logging.Formatter()
    lines = [formatter.format(r) for r in records]
    assert lines[0] == f"call CA{'1234' * 8}: caller heard 1520 of 2400 ms: 'card [card]'"
    assert lines[1] == "no arguments: [phone]"
    assert "cannot charge [card]" in lines[2] and "4111" not in lines[2]
