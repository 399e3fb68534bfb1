"""A greeting the caller must hear in full (``greeting_uninterruptible``: a disclosure such as
"this call is recorded"): the bridge ignores barge-ins until it has been heard.

:class:`GreetingGuard` watches the provider's events as a call observer: the greeting is the
bot's first answer; it has been heard once that answer is done and none of its audio is
still queued at Twilio (mark echoes, see :class:`~telephony.playout.PlayoutTracker`). From
then on the guard lets every barge-in through. A provider that cancels its own answer when
the caller speaks still cannot cut what it already sent: that audio plays out untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from s2s.events import AudioOut, ProviderEvent, TurnDone
from telephony.observer import CallObserver
from voicebot.config import RouteConfig


class GreetingGuard(CallObserver):
    def __init__(self, bot_audio_pending: Callable[[], bool]) -> None:
        self._bot_audio_pending = bot_audio_pending
        self._item: str | None = None  # the greeting's item, once its audio came
        self._done = False  # the greeting turn is over (finished or cancelled)
        self._heard = False

    def provider_in(self, event: ProviderEvent) -> None:
        if isinstance(event, AudioOut) and self._item is None:
            self._item = event.item_id
        elif isinstance(event, TurnDone) and self._item is not None and event.item_id in (self._item, None):
            self._done = True

    def holds(self) -> bool:
        """True while a barge-in must be ignored (asked by the bridge at each barge-in)."""
        if not self._heard and self._done and not self._bot_audio_pending():
            self._heard = True
        return not self._heard


def greeting_guard(route: RouteConfig, bot_audio_pending: Callable[[], bool]) -> list[GreetingGuard]:
    """The route's guard when its greeting is uninterruptible (none without a greeting)."""
    if not (route.greeting and route.greeting_uninterruptible):
        return []
    return [GreetingGuard(bot_audio_pending)]
