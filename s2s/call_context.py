"""The call a piece of work belongs to, for log lines.

The bridge sets :data:`call_sid_var` when a call starts; asyncio tasks created inside the
call copy the context, so provider code logs normally and the application's log handler
(``voicebot.server.logs``) still tags each line with the CallSid. It lives at the bottom of
the stack so every layer can read it without importing the application."""

from __future__ import annotations

from contextvars import ContextVar

call_sid_var: ContextVar[str] = ContextVar("call_sid", default="-")
