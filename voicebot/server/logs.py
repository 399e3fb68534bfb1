"""Logging with the call's CallSid on every line.

The bridge sets :data:`call_sid_var` when a call starts; asyncio tasks created inside the
call copy the context, so provider code logs normally and still gets the CallSid."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar

from opentelemetry import trace

call_sid_var: ContextVar[str] = ContextVar("call_sid", default="-")


class CallSidFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_sid"):
            record.call_sid = call_sid_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "call_sid": getattr(record, "call_sid", "-"),
            "msg": record.getMessage(),
        }
        # The call's trace, when the line was logged inside one (voicebot.telemetry), so a
        # log search can jump to the trace and back.
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallSidFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(call_sid)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
