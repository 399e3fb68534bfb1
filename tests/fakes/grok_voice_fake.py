"""The Grok Voice Agent dialect of the realtime fake (see ``openai_realtime_fake``): starts with
``conversation.created``, wants ``voice``/``turn_detection`` at the top of ``session``, sends
``ping`` events and Grok's partial transcripts, and can refuse ``conversation.item.truncate``."""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.fakes.openai_realtime_fake import FakeOptions, FakeRealtimeServer


def grok_options(**overrides: Any) -> FakeOptions:
    return dataclasses.replace(FakeOptions(dialect="grok"), **overrides)


def fake_grok(**overrides: Any) -> FakeRealtimeServer:
    return FakeRealtimeServer(grok_options(**overrides))
