"""One call's cascade: speech-to-text -> language model -> text-to-speech, as a provider session.

The session speaks the same neutral events as a speech-to-speech provider, so the bridge's
barge-in, marks, tapes, recovery and metrics need nothing new:

- the recogniser's speech-started is passed on at once (the bridge clears Twilio) and stops
  the answer being generated: the model request and the sentence being synthesised are
  cancelled together, and ``TurnDone(interrupted=True)`` follows;
- each answer round is one bot item; its audio goes out sentence by sentence as
  ``AudioOut``; its text is kept in the model's history as the caller heard it: when the
  bridge reports ``truncate(item, heard_ms)`` (from Twilio's marks) the assistant message is
  cut at the last word played, timed by each sentence's audio length (see
  :mod:`s2s.cascade.conversation`); the call's transcript gets the same cut text for an answer
  stopped by a barge-in, while one that finished and was talked over during playout is cut
  by the bridge, as for every provider;
- a tool call ends its round; once every call of the round has its result, the model is asked
  again. Caller turns and text that arrive meanwhile wait for that (a chat model needs the tool
  results right after its call), except keypad text and notes (an agent's "say a filler"),
  which get a short answer from the conversation before the open round at once;
- what the parts used (caller audio sent to speech-to-text, the model's tokens, characters and
  seconds synthesised) is one running :class:`~s2s.events.Usage`, emitted at each turn's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from s2s.call_context import logged_text
from s2s.cascade.config import CascadeConfig
from s2s.cascade.conversation import SentenceSplitter, SpokenAnswer, history_messages
from s2s.cascade.parts import (
    LanguageModel,
    Message,
    PartOpener,
    SpeechToText,
    TextDelta,
    TextToSpeech,
    TokenCount,
    part_spec,
)
from s2s.events import AudioOut, SpeechStarted, SpeechStopped, ToolCall, Transcript, TurnDone
from s2s.provider import Provider, ProviderConnectError, ProviderSession, QueuedSession, SessionContext
from s2s.tools import ToolSpec
from s2s.usage import UsageTally

log = logging.getLogger(__name__)


class CascadeSession(QueuedSession):
    def __init__(
        self,
        provider_name: str,
        ctx: SessionContext,
        instructions: str,
        stt: SpeechToText,
        llm: LanguageModel,
        tts: TextToSpeech,
    ) -> None:
        super().__init__(provider_name)
        self.ctx = ctx
        self.instructions = instructions
        self.tools: tuple[ToolSpec, ...] = ctx.tools
        self.stt, self.llm, self.tts = stt, llm, tts
        self.input_format = stt.input_format
        self.output_format = tts.output_format
        self.messages: list[Message] = history_messages(ctx.history)
        self._ids = itertools.count(1)
        self._answers: dict[str, SpokenAnswer] = {}
        self._answer_message: dict[str, int] = {}  # item -> index of its assistant message
        self._untold: set[str] = set()  # items stopped by a barge-in, transcribed at truncate
        self._answer: asyncio.Task[None] | None = None
        self._answer_item: str | None = None
        self._answer_context: int | None = None
        self._last_item: str | None = None
        self._open_calls: set[str] = set()
        self._tool_round_at: int | None = None  # index of the assistant message with open calls
        self._waiting: list[Message] = []  # caller turns held until the open tool round closes
        self._failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        # What the parts used, reported as one cumulative Usage at each turn's end (caller's
        # or bot's): the audio sent to speech-to-text, the model's tokens, what was synthesised.
        self._usage = UsageTally(f"{provider_name}-{uuid.uuid4().hex[:12]}")
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.start_reader(self._run())
        if ctx.greeting and not ctx.history:
            self._start_answer(said=ctx.greeting)

    # -- caller side ------------------------------------------------------------------------

    async def _run(self) -> None:
        """The session's reader: the recogniser's events, until it ends or a part fails."""
        listen = asyncio.ensure_future(self._listen())
        try:
            waiters: set[asyncio.Future[Any]] = {listen, self._failure}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if self._failure.done():
                raise self._failure.result()
            await listen
        finally:
            listen.cancel()
            await asyncio.gather(listen, return_exceptions=True)

    async def _listen(self) -> None:
        async for event in self.stt.events():
            if isinstance(event, SpeechStarted):
                # Barge-in: the bridge clears Twilio on this; the answer stops here at once.
                self.emit(SpeechStarted(self._last_item))
                self._stop_answer(barge_in=True)
            elif isinstance(event, SpeechStopped):
                self.emit(event)
            elif isinstance(event, Transcript) and event.final:
                text = event.text.strip()
                if not text:
                    continue
                self.emit(Transcript("caller", text))
                self.emit(self._usage.total)
                self._caller_turn(Message("user", text))

    def _caller_turn(self, message: Message) -> None:
        self._stop_answer()
        if self._open_calls:
            self._waiting.append(message)
            return
        self.messages.append(message)
        self._start_answer()

    async def send_audio(self, audio: bytes) -> None:
        if not self.closed:
            self._usage.add(stt_s=len(audio) / self.input_format.bytes_per_second)
            await self.stt.send_audio(audio)

    async def send_text(self, text: str) -> None:
        if self.closed:
            return
        if self._open_calls:
            # A filler request or keys typed while a tool runs: answer from the conversation
            # before the open round, and keep both for after it.
            self._waiting.append(Message("user", text))
            self._stop_answer()
            self._start_answer(context=self._tool_round_at)
            return
        self._caller_turn(Message("user", text))

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        if item_id == self._answer_item:
            self._stop_answer(barge_in=True)  # the bridge's own detector heard the caller first
        answer = self._answers.get(item_id)
        index = self._answer_message.get(item_id)
        if answer is None or index is None:
            return
        heard = answer.heard_text(heard_ms, self._call_ms_per_word())
        log.info("%s: caller heard %d ms of %s: %r", self.provider_name, heard_ms, item_id, logged_text(heard))
        self.messages[index] = replace(self.messages[index], text=heard)
        if item_id in self._untold:
            self._untold.discard(item_id)
            if heard:
                # Already cut to what was heard: without an item id, the bridge keeps it as is
                # instead of cutting it again by its own (whole-answer, proportional) estimate.
                self.emit(Transcript("bot", heard))

    async def send_tool_result(self, call_id: str, output: str) -> None:
        if self.closed or call_id not in self._open_calls:
            return
        self._open_calls.discard(call_id)
        self.messages.append(Message("tool", output, call_id=call_id))
        if not self._open_calls:
            self._tool_round_at = None
            self.messages.extend(self._waiting)
            self._waiting.clear()
            self._stop_answer()
            self._start_answer()

    # -- bot side ---------------------------------------------------------------------------

    def _start_answer(self, *, said: str | None = None, context: int | None = None) -> None:
        """Begin the next bot item: the model's answer to the conversation so far (only up to
        message ``context`` when set: a side answer during a tool round), or the fixed text
        ``said`` (the greeting)."""
        answer = SpokenAnswer(f"cascade-{next(self._ids)}")
        self._answers[answer.item_id] = answer
        self._answer_item = answer.item_id
        self._answer = asyncio.ensure_future(self._speak_answer(answer, said, context))
        self._answer_context = context

    def _stop_answer(self, *, barge_in: bool = False) -> None:
        """Stop the answer in progress now: the model request and the synthesis are cancelled,
        and what was spoken of it goes into the history before anything else happens.

        On a barge-in the bridge follows with ``truncate`` (when any of it was sent), and the
        answer's transcript waits for that: it is then cut by this answer's own sentence timing
        and reported already cut (see :meth:`truncate`)."""
        task, item_id = self._answer, self._answer_item
        self._answer = None
        self._answer_item = None
        if task is None or task.done() or item_id is None:
            return
        task.cancel()
        answer = self._answers[item_id]
        answer.stopped()
        self._answer_done(answer, [], self._answer_context, interrupted=True, transcribe=not barge_in)
        if barge_in:
            self._untold.add(item_id)

    async def _speak_answer(self, answer: SpokenAnswer, said: str | None, context: int | None) -> None:
        calls: list[ToolCall] = []
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        thinking: asyncio.Future[None]
        if said is not None:
            for line in SentenceSplitter().feed(said + "\n"):
                sentences.put_nowait(line)
            sentences.put_nowait(None)
            thinking = asyncio.get_running_loop().create_future()
            thinking.set_result(None)
        else:
            messages = self.messages if context is None else [*self.messages[:context], *self._waiting]
            tools = self.tools if context is None else ()
            thinking = asyncio.ensure_future(self._think(messages, tools, sentences, calls))
        try:
            while (next_sentence := await sentences.get()) is not None:
                await self._speak(answer, next_sentence)
            await thinking
        except asyncio.CancelledError:
            thinking.cancel()
            await asyncio.gather(thinking, return_exceptions=True)
            raise
        except Exception as exc:
            thinking.cancel()
            log.warning("%s: answer %s failed: %r", self.provider_name, answer.item_id, exc)
            if not self._failure.done():
                self._failure.set_result(exc)
            return
        if self._answer_item == answer.item_id:
            self._answer = None
            self._answer_item = None
        self._answer_done(answer, calls, context, interrupted=False)

    async def _think(
        self,
        messages: Sequence[Message],
        tools: tuple[ToolSpec, ...],
        sentences: asyncio.Queue[str | None],
        calls: list[ToolCall],
    ) -> None:
        """Stream the model's answer into whole sentences (and collect its tool calls)."""
        splitter = SentenceSplitter()
        try:
            async with contextlib.aclosing(self.llm.respond(self.instructions, _sendable(messages), tools)) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        for sentence in splitter.feed(event.text):
                            sentences.put_nowait(sentence)
                    elif isinstance(event, TokenCount):
                        self._usage.add(
                            text_in_tokens=event.input_tokens,
                            cached_text_in_tokens=event.cached_input_tokens,
                            text_out_tokens=event.output_tokens,
                        )
                    else:
                        calls.append(event)
            rest = splitter.flush()
            if rest:
                sentences.put_nowait(rest)
        finally:
            sentences.put_nowait(None)

    async def _speak(self, answer: SpokenAnswer, sentence: str) -> None:
        answer.begin(sentence)
        self._usage.add(tts_chars=len(sentence))
        async with contextlib.aclosing(self.tts.speak(sentence)) as audio:
            async for chunk in audio:
                if not chunk:
                    continue
                ms = self.output_format.duration_ms(len(chunk))
                self._usage.add(tts_s=ms / 1000.0)
                answer.played(ms)
                self._last_item = answer.item_id
                self.emit(AudioOut(chunk, answer.item_id))
        answer.finished()

    def _answer_done(
        self,
        answer: SpokenAnswer,
        calls: list[ToolCall],
        context: int | None,
        *,
        interrupted: bool,
        transcribe: bool = True,
    ) -> None:
        """Put the answer into the history (as spoken so far) and tell the bridge."""
        text = answer.text
        if text or calls:
            message = Message("assistant", text, tool_calls=tuple(calls))
            if context is not None:
                # A side answer during a tool round: it follows the round in the history.
                self._waiting.append(message)
            else:
                self._answer_message[answer.item_id] = len(self.messages)
                self.messages.append(message)
        if text and transcribe:
            self.emit(Transcript("bot", text, item_id=answer.item_id))
        self.emit(TurnDone(answer.item_id, interrupted=interrupted))
        self.emit(self._usage.total)
        if calls:
            self._tool_round_at = self._answer_message[answer.item_id]
            self._open_calls.update(call.call_id for call in calls)
            for call in calls:
                self.emit(call)

    def _call_ms_per_word(self) -> float | None:
        rates = [rate for answer in self._answers.values() if (rate := answer.ms_per_word()) is not None]
        return sum(rates) / len(rates) if rates else None

    async def _close_transport(self) -> None:
        self._stop_answer()
        self.emit(replace(self._usage.total, final=True))
        for part in (self.stt, self.llm, self.tts):
            try:
                await part.close()
            except Exception as exc:
                log.debug("%s: closing %s: %r", self.provider_name, type(part).__name__, exc)


def _sendable(messages: Sequence[Message]) -> list[Message]:
    """Drop assistant turns the caller heard none of (cut to nothing, no tool calls)."""
    return [m for m in messages if m.role != "assistant" or m.text or m.tool_calls]


class CascadeProvider(Provider):
    config: CascadeConfig

    def __init__(self, name: str, config: CascadeConfig) -> None:
        super().__init__(name, config)
        self._stt: PartOpener[Any] = part_spec("stt", config.stt.type).factory(config.stt)
        self._llm: PartOpener[Any] = part_spec("llm", config.llm.type).factory(config.llm)
        self._tts: PartOpener[Any] = part_spec("tts", config.tts.type).factory(config.tts)

    async def open_session(self, ctx: SessionContext) -> ProviderSession:
        opened = await asyncio.gather(
            self._stt.open(ctx), self._llm.open(ctx), self._tts.open(ctx), return_exceptions=True
        )
        failures = [r for r in opened if isinstance(r, BaseException)]
        if failures:
            for part in opened:
                if not isinstance(part, BaseException):
                    await part.close()
            first = failures[0]
            if not isinstance(first, Exception):
                raise first
            retryable = all(getattr(f, "retryable", True) for f in failures)
            log.warning("call %s: %s could not open its parts: %s", ctx.call_sid, self.name, first)
            raise ProviderConnectError(self.name, f"{type(first).__name__}: {first}", retryable=retryable) from first
        stt, llm, tts = cast(tuple[SpeechToText, LanguageModel, TextToSpeech], tuple(opened))
        session = CascadeSession(self.name, ctx, ctx.instructions or self.config.instructions, stt, llm, tts)
        log.info(
            "%s session ready for call %s (%s -> %s -> %s)",
            self.name,
            ctx.call_sid,
            self.config.stt.type,
            self.config.llm.type,
            self.config.tts.type,
        )
        return session
