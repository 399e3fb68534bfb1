"""Logging with the call's CallSid on every line (from :data:`s2s.call_context.call_sid_var`,
which the bridge sets when a call starts)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys

from opentelemetry import trace

from s2s.call_context import call_sid_var


class CallSidFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_sid"):
            record.call_sid = call_sid_var.get()
        return True


# Characters that would let a logged value start a line of its own or hide text from a
# terminal: C0 controls (newline, CR, ESC, NUL...), DEL, C1 controls and Unicode line breaks.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    named = {0x0A: "\\n", 0x0D: "\\r"}
    return named.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_unsafe(text: str) -> str:
    """``text`` on one line, with control characters escaped (``\\n``, ``\\x00``)."""
    return _UNSAFE.sub(_escape, text)


class TextFormatter(logging.Formatter):
    """One record, one line: the message (which quotes caller-controlled values: CallSids,
    frame contents, URLs) is escaped, so a value cannot forge a log line or smuggle NUL or
    terminal escapes. A traceback, appended after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_unsafe(super().formatMessage(record))


def iso_timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds and the zone: ``2026-01-24T22:15:30.123+00:00``."""
    return dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": iso_timestamp(record.created),
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
            # exc_text: already formatted (and masked, s2s.call_context.redact_log_records)
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallSidFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s [%(call_sid)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
