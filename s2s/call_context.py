"""The call a piece of work belongs to, and what of the caller may go into log lines.

The bridge sets :data:`call_sid_var` when a call starts; asyncio tasks created inside the
call copy the context, so provider code logs normally and the application's log handler
(``voicebot.server.logs``) still tags each line with the CallSid. It lives at the bottom of
the stack so every layer can read it without importing the application."""

from __future__ import annotations

from contextvars import ContextVar

call_sid_var: ContextVar[str] = ContextVar("call_sid", default="-")


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
    """What a caller or the bot said, as log lines show it: hidden unless personal data is on."""
    if _personal_data_in_logs:
        return text
    return f"[{len(text)} characters hidden; [logs] personal_data = true shows them]" if text else text
