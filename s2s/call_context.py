"""The call a piece of work belongs to, and what of the caller may go into log lines.

The bridge sets :data:`call_sid_var` when a call starts; asyncio tasks created inside the
call copy the context, so provider code logs normally and the application's log handler
(``voicebot.server.logs``) still tags each line with the CallSid. It lives at the bottom of
the stack so every layer can read it without importing the application."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

call_sid_var: ContextVar[str] = ContextVar("call_sid", default="-")

# What the call's route masks in what was said (voicebot.privacy.redaction): set by the
# application in the task that runs the call's bridge, so every task of the call sees it.
call_redactor_var: ContextVar[Callable[[str], str] | None] = ContextVar("call_redactor", default=None)
_log_redaction_installed = False


def redact_log_records() -> None:
    """Mask what every log record made inside a call quotes, the way the call's route says,
    whoever logs it: our lines, a provider's error message quoting the caller, a library's
    DEBUG dump of a wire frame, an exception's traceback. Done once per process in the record
    factory, so every handler (stderr, JSON, OpenTelemetry, pytest's capture) gets the masked
    record, and only records that are emitted (enabled level) inside a call with a redactor pay.

    What is masked is what a line quotes: its arguments (text, objects, exceptions) and, for a
    line logged without arguments, the whole message. The format string is the code's own,
    and numeric arguments are measurements (ms, bytes, counts), so "caller heard 1520 ms"
    keeps its number on a route that masks ``digits``."""
    global _log_redaction_installed
    if _log_redaction_installed:
        return
    _log_redaction_installed = True
    make_record = logging.getLogRecordFactory()

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        redact = call_redactor_var.get()
        if redact is not None:
            _mask(record, redact)
        return record

    logging.setLogRecordFactory(masked_record)


_TRACEBACKS = logging.Formatter()


def _masked_arg(value: object, redact: Callable[[str], str]) -> object:
    if value is None or isinstance(value, int | float):
        return value
    text = str(value)
    masked = redact(text)
    return value if masked == text else masked


def _mask(record: logging.LogRecord, redact: Callable[[str], str]) -> None:
    args = record.args
    if isinstance(args, tuple) and args:
        record.args = tuple(_masked_arg(a, redact) for a in args)
    elif isinstance(args, Mapping) and args:
        record.args = {k: _masked_arg(v, redact) for k, v in args.items()}
    else:
        record.msg = redact(str(record.msg))
    if record.exc_info and record.exc_info[1] is not None:
        # handlers use exc_text when it is set (logging.Formatter.format, voicebot JSON lines)
        record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))


# Caller numbers and what was said are personal data: by default log lines carry a masked
# number and no transcript. The application turns them on with one switch ([logs]
# personal_data, voicebot.config); logging is process-wide, and so is this setting.
_personal_data_in_logs = False


def set_personal_data_in_logs(on: bool) -> None:
    global _personal_data_in_logs
    _personal_data_in_logs = on


def logged_number(number: str) -> str:
    """A phone number as log lines show it: ``+44******23`` unless personal data is on.
    SIP and client addresses keep their scheme; anything short is hidden entirely."""
    if _personal_data_in_logs or not number:
        return number
    scheme, sep, rest = number.rpartition(":")
    head = scheme + sep
    if len(rest) <= 5:
        return head + "*" * len(rest)
    return f"{head}{rest[:3]}{'*' * (len(rest) - 5)}{rest[-2:]}"


def logged_text(text: str) -> str:
    """What a caller or the bot said, as log lines show it: hidden unless personal data is on
    (and then masked as the call's route says, by :func:`redact_log_records`)."""
    if _personal_data_in_logs:
        return text
    return f"[{len(text)} characters hidden; [logs] personal_data = true shows them]" if text else text
