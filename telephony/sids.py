"""The shape of Twilio's string identifiers, checked where they enter from outside.

Every Twilio resource has a 34-character SID: a two-letter type prefix and 32 hexadecimal
digits (https://www.twilio.com/docs/glossary/what-is-a-sid). A CallSid names tapes and
keys every table of calls, and is written into log lines; one that is not of that shape
(hundreds of characters, a newline, NUL) did not come from Twilio, so it is refused at the
door rather than escaped everywhere it travels.
"""

from __future__ import annotations

import re

CALL_PREFIX, ACCOUNT_PREFIX, STREAM_PREFIX = "CA", "AC", "MZ"

_HEX32 = "[0-9a-fA-F]{32}"
# The form parameters of Twilio's webhooks that carry a SID, and its prefix.
WEBHOOK_SIDS = {"CallSid": CALL_PREFIX, "AccountSid": ACCOUNT_PREFIX, "StreamSid": STREAM_PREFIX}


def is_sid(value: str, prefix: str) -> bool:
    return re.fullmatch(prefix + _HEX32, value) is not None


def malformed_sid(params: dict[str, str]) -> str | None:
    """The name of the first SID parameter in ``params`` that is not of its shape, or None."""
    for name, prefix in WEBHOOK_SIDS.items():
        value = params.get(name)
        if value is not None and not is_sid(value, prefix):
            return name
    return None
