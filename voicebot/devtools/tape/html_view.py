"""One self-contained HTML page per call tape: see a call rather than read its JSON Lines.

The page holds both audio tracks (the caller, and the bot as the caller heard it) as
waveforms on one time axis, playable, with lanes for the bot's turns, each barge-in as its
chain (speech start -> ``clear`` -> truncate at the heard ms), marks, DTMF, tool calls,
transcripts and every other provider or Twilio event, then the same events as a table. For a
replay (``voicebot replay --html``) the replay's bot track and turns are added and every
divergence is marked where it happened.

Everything is inline (CSS, a few lines of script, the audio as a ``data:`` WAV), so the file
works offline, attached to a bug report, with no CDN. The view is computed by
:func:`voicebot.devtools.tape.view.view_of`, the same code replay compares with.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from s2s.events import (
    AudioOut,
    Closed,
    ProviderError,
    SessionExpiring,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    Transcript,
    TurnDone,
)
from transcoding.mulaw import mulaw_to_pcm16
from voicebot.devtools.tape.format import (
    BargeInRecord,
    CallEnd,
    ProviderIn,
    ProviderOut,
    SessionOpened,
    Tape,
    TwilioFrame,
    format_name,
    left_out,
)
from voicebot.devtools.tape.view import BYTES_PER_MS, CallView, TurnView, view_of
from voicebot.devtools.tape.wav import call_wav_bytes

if TYPE_CHECKING:
    from voicebot.devtools.tape.replay import ReplayResult

# Waveform resolution: at most this many columns per track, and never finer than 5 ms.
MAX_COLUMNS = 3000
MIN_COLUMN_MS = 5.0
# A provider's speech-start belongs to the clear that follows it within this long.
SPEECH_TO_CLEAR_MS = 3000.0

# Label layout assumes the default zoom on a ~1200 px wide track.
TRACK_PX = 1150.0
CHAR_PX = 6.2
LEVEL_PX = 20

LANES = ("turns", "replay turns", "barge-ins", "marks", "dtmf", "tools", "transcripts", "provider", "twilio")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing on the timeline. ``end_ms`` makes it a span; ``css`` adds classes."""

    t: float
    lane: str
    label: str
    detail: str = ""
    end_ms: float | None = None
    css: str = ""


@dataclass(slots=True)
class BargeInChain:
    """A barge-in as the bridge handled it; any link may be missing (a caller-side tape has
    only the clear)."""

    clear_ms: float
    speech_ms: float | None = None
    truncate_ms: float | None = None
    heard_ms: float | None = None
    sent_ms: float | None = None
    latency_ms: float | None = None
    item_id: str = ""


@dataclass(slots=True)
class Track:
    name: str
    label: str
    audio: bytes
    """8 kHz mu-law on the stream clock"""


@dataclass(slots=True)
class Page:
    title: str
    facts: list[tuple[str, str]]
    duration_ms: float
    tracks: list[Track]
    events: list[Event]
    transcript: Sequence[tuple[str, str]]
    audio: list[tuple[str, bytes]] = field(default_factory=list)
    """(label, WAV bytes) players"""
    divergences: list[Event] = field(default_factory=list)


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


def _short(value: object, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def barge_in_chains(tape: Tape) -> list[BargeInChain]:
    """Pair each ``clear`` with the speech start before it, the truncate after it and the
    bridge's barge-in record, all from the tape's own timestamps."""
    chains: list[BargeInChain] = []
    last_speech: float | None = None
    for record in tape.records:
        if isinstance(record, ProviderIn) and isinstance(record.event, SpeechStarted):
            last_speech = record.t
        elif isinstance(record, TwilioFrame) and record.direction == "out":
            msg = record.message()
            if msg is not None and msg.get("event") == "clear":
                recent = last_speech is not None and record.t - last_speech <= SPEECH_TO_CLEAR_MS
                speech = last_speech if recent else None
                chains.append(BargeInChain(clear_ms=record.t, speech_ms=speech))
                last_speech = None
        elif isinstance(record, ProviderOut) and record.kind == "truncate" and chains:
            if chains[-1].truncate_ms is None:
                chains[-1].truncate_ms = record.t
                chains[-1].heard_ms = float(record.heard_ms)
                chains[-1].item_id = record.item_id
        elif isinstance(record, BargeInRecord) and chains:
            chain = chains[-1]
            chain.sent_ms, chain.latency_ms = record.sent_ms, record.latency_ms
            chain.heard_ms = record.heard_ms if chain.heard_ms is None else chain.heard_ms
            chain.item_id = chain.item_id or record.item_id
    return chains


def _turn_events(turns: Sequence[TurnView], lane: str, prefix: str) -> Iterable[Event]:
    for i, turn in enumerate(turns, start=1):
        cut = " (interrupted)" if turn.interrupted else ""
        detail = f"sent {_ms(turn.sent_ms)}, heard {_ms(turn.heard_ms)}{cut}"
        css = "turn interrupted" if turn.interrupted else "turn"
        yield Event(turn.start_ms, lane, f"{prefix}{i}", detail, turn.start_ms + turn.heard_ms, css)
        if turn.sent_ms > turn.heard_ms:
            end = turn.start_ms + turn.sent_ms
            unheard = f"{_ms(turn.sent_ms - turn.heard_ms)} sent but never heard"
            yield Event(turn.start_ms + turn.heard_ms, lane, "unheard", unheard, end, "turn unheard")


def _barge_in_events(chains: Sequence[BargeInChain]) -> Iterable[Event]:
    for i, chain in enumerate(chains, start=1):
        start = chain.speech_ms if chain.speech_ms is not None else chain.clear_ms
        end = chain.truncate_ms if chain.truncate_ms is not None else chain.clear_ms
        parts = []
        if chain.speech_ms is not None:
            parts.append(f"speech start {_ms(chain.speech_ms)}")
        parts.append(f"clear {_ms(chain.clear_ms)}")
        if chain.truncate_ms is not None:
            parts.append(f"truncate {_ms(chain.truncate_ms)} at {_ms(chain.heard_ms or 0)} heard")
        if chain.sent_ms is not None:
            parts.append(f"{_ms(chain.sent_ms)} sent")
        if chain.latency_ms is not None:
            parts.append(f"bridge latency {chain.latency_ms:.2f} ms")
        yield Event(start, "barge-ins", f"barge-in {i}", " -> ".join(parts), max(end, start + 1), "chain")
        if chain.speech_ms is not None:
            yield Event(chain.speech_ms, "barge-ins", "speech-start", f"barge-in {i}: the caller started talking")
        yield Event(chain.clear_ms, "barge-ins", "clear", f"barge-in {i}: Twilio's buffer cleared", css="clear")
        if chain.truncate_ms is not None:
            heard = _ms(chain.heard_ms or 0)
            item = f" item {chain.item_id}" if chain.item_id else ""
            yield Event(chain.truncate_ms, "barge-ins", f"truncate @{heard}", f"barge-in {i}: answer{item} cut")


def _twilio_event(record: TwilioFrame) -> Event | None:
    msg = record.message()
    if msg is None:
        return Event(record.t, "twilio", "bad frame", _short(record.frame), css="error")
    kind = str(msg.get("event", "?"))
    arrow = "in" if record.direction == "in" else "out"
    if kind == "media":
        return None
    if kind == "mark":
        name = msg.get("mark", {}).get("name", "") if isinstance(msg.get("mark"), dict) else ""
        label = "echo" if record.direction == "in" else "mark"
        return Event(record.t, "marks", label, f"{label} {name}", css=f"mark-{arrow}")
    if kind == "dtmf":
        digit = msg.get("dtmf", {}).get("digit", "?") if isinstance(msg.get("dtmf"), dict) else "?"
        return Event(record.t, "dtmf", str(digit), f"the caller pressed {digit}")
    if kind == "clear":
        return None  # part of its barge-in chain
    if kind == "start":
        start = msg["start"] if isinstance(msg.get("start"), dict) else {}
        detail = {k: start.get(k) for k in ("callSid", "streamSid", "tracks", "mediaFormat") if k in start}
        return Event(record.t, "twilio", "start", _short(detail))
    return Event(record.t, "twilio", kind, f"{arrow}: {_short(msg)}")


def _provider_event(record: ProviderIn) -> Event | None:
    event = record.event
    if isinstance(event, AudioOut):
        return None
    if isinstance(event, Transcript):
        if not event.final or not event.text.strip():
            return None
        text = event.text.strip()
        return Event(record.t, "transcripts", f"{event.role}: {_short(text, 40)}", text, css=f"role-{event.role}")
    if isinstance(event, ToolCall):
        args = _short(event.arguments)
        return Event(record.t, "tools", f"{event.name}()", f"call {event.call_id}: {event.name}({args})", css="tool")
    if isinstance(event, SpeechStarted):
        return Event(record.t, "provider", "speech start", "the provider heard the caller start talking")
    if isinstance(event, SpeechStopped):
        return Event(record.t, "provider", "speech stop", "the provider heard the caller stop")
    if isinstance(event, TurnDone):
        cut = " (interrupted)" if event.interrupted else ""
        return Event(record.t, "provider", "turn done", f"item {event.item_id or '-'}{cut}")
    if isinstance(event, ProviderError):
        fatal = " (fatal)" if event.fatal else ""
        return Event(record.t, "provider", f"error {event.code}", f"{event.message}{fatal}", css="error")
    if isinstance(event, SessionExpiring):
        return Event(record.t, "provider", "expiring", f"{event.reason}, {event.seconds_left} s left")
    if isinstance(event, Closed):
        return Event(record.t, "provider", "closed", event.reason, css="error" if event.error else "")
    return Event(record.t, "provider", type(event).__name__, _short(str(event)))


def tape_events(tape: Tape) -> list[Event]:
    """Every record but the audio itself, as timeline events (barge-ins as chains)."""
    events: list[Event] = []
    for record in tape.records:
        event: Event | None = None
        if isinstance(record, TwilioFrame):
            event = _twilio_event(record)
        elif isinstance(record, ProviderIn):
            event = _provider_event(record)
        elif isinstance(record, SessionOpened):
            formats = f"in {format_name(record.input_format)}, out {format_name(record.output_format)}"
            event = Event(record.t, "provider", "session", f"provider session open: {formats}")
        elif isinstance(record, ProviderOut):
            if record.kind == "text":
                event = Event(record.t, "provider", "text", f"sent to the provider: {_short(record.text)}")
            elif record.kind == "tool_result":
                result = f"call {record.call_id}: {_short(record.output)}"
                event = Event(record.t, "tools", "result", result, css="tool")
        elif isinstance(record, CallEnd):
            extra = f", {record.bad_frames} bad frame(s)" if record.bad_frames else ""
            dropped = f", {record.dropped_records} record(s) dropped" if record.dropped_records else ""
            event = Event(record.t, "twilio", "end", f"outcome {record.outcome}{extra}{dropped}")
        if event is not None:
            events.append(event)
    return events


def waveform_path(audio: bytes, duration_ms: float) -> str:
    """An SVG path of the track's peak envelope in (ms, -1..1) coordinates."""
    pcm = np.abs(np.frombuffer(mulaw_to_pcm16(audio), dtype="<i2").astype(np.float32)) / 32768.0
    if not pcm.size or duration_ms <= 0:
        return ""
    column_ms = max(MIN_COLUMN_MS, duration_ms / MAX_COLUMNS)
    per_column = max(1, round(column_ms * BYTES_PER_MS))
    columns = -(-pcm.size // per_column)
    padded = np.zeros(columns * per_column, dtype=np.float32)
    padded[: pcm.size] = pcm
    peaks = np.sqrt(padded.reshape(columns, per_column).max(axis=1))  # sqrt: quiet speech stays visible
    xs = np.arange(columns + 1) * per_column / BYTES_PER_MS
    # A step outline: along the top edge left to right, back along the mirrored bottom edge.
    upper = [f"L{xs[i]:.1f} {-peak:.3f}L{xs[i + 1]:.1f} {-peak:.3f}" for i, peak in enumerate(peaks)]
    lower = [f"L{xs[i + 1]:.1f} {peak:.3f}L{xs[i]:.1f} {peak:.3f}" for i, peak in enumerate(peaks)]
    return "M0 0" + "".join(upper) + "".join(reversed(lower)) + "Z"


def page_for_tape(tape: Tape) -> Page:
    view = view_of(tape)
    return _page(tape, view, None)


def page_for_replay(result: ReplayResult) -> Page:
    return _page(result.tape, result.expected, result)


def _page(tape: Tape, view: CallView, replay: ReplayResult | None) -> Page:
    header = tape.header
    duration = max(view.duration_ms, len(view.caller_audio) / BYTES_PER_MS, len(view.heard_audio) / BYTES_PER_MS)
    chains = barge_in_chains(tape)
    events = [*_turn_events(view.turns, "turns", "turn "), *_barge_in_events(chains), *tape_events(tape)]
    facts = [
        ("CallSid", header.call_sid),
        ("side", header.side),
        ("route", header.route or "-"),
        ("providers", ", ".join(header.providers) or "-"),
        ("recorded at", header.recorded_at or "-"),
        ("duration", f"{duration / 1000:.1f} s"),
        ("outcome", view.outcome or "?"),
        ("bot turns", str(len(view.turns))),
        ("barge-ins", str(len(chains))),
    ]
    if view.dtmf:
        facts.append(("DTMF", "".join(view.dtmf)))
    if view.bad_frames:
        facts.append(("bad frames", str(view.bad_frames)))
    facts.extend(("not on this tape", note) for note in left_out(header))
    caller_label = "caller" if header.caller_audio else "caller (not recorded: silence)"
    tracks = [Track("caller", caller_label, view.caller_audio), Track("bot", "bot (as heard)", view.heard_audio)]
    audio = [("call: caller left, bot right", call_wav_bytes(view.caller_audio, view.heard_audio))]
    divergences: list[Event] = []
    title = f"call {header.call_sid}"
    if replay is not None:
        title = f"replay of {header.call_sid}"
        duration = max(duration, len(replay.heard_audio) / BYTES_PER_MS)
        tracks.append(Track("replay", "bot in the replay", replay.heard_audio))
        audio.append(("replay: caller left, bot right", call_wav_bytes(replay.caller_audio, replay.heard_audio)))
        events.extend(_turn_events(replay.got.turns, "replay turns", "turn "))
        facts.append(("replay", f"{replay.mode}, speed {replay.speed:g}"))
        facts.append(("divergences", str(len(replay.divergences) + len(replay.missed_triggers))))
        for divergence in replay.divergences:
            at = divergence.at_ms if divergence.at_ms is not None else 0.0
            divergences.append(Event(at, "divergence", divergence.what, str(divergence), css="divergence"))
        for missed in replay.missed_triggers:
            divergences.append(Event(0.0, "divergence", "missed trigger", missed, css="divergence"))
    transcript = [(turn.role, turn.text) for turn in view.transcript]
    events.sort(key=lambda e: e.t)
    return Page(title, facts, duration, tracks, events, transcript, audio, divergences)


def label_levels(events: Sequence[Event], span_ms: float) -> list[int]:
    """A row within its lane for each event, so labels that would overlap at the default zoom
    stack instead (greedy: the first row whose last label has ended)."""
    ms_per_char = span_ms / TRACK_PX * CHAR_PX
    ends: list[float] = []
    levels = []
    for event in events:
        if event.css.startswith("mark-"):  # mark ticks carry no label
            levels.append(0)
            continue
        extent = max(event.end_ms or event.t, event.t + (len(event.label) + 2) * ms_per_char)
        level = next((i for i, end in enumerate(ends) if end <= event.t), len(ends))
        if level == len(ends):
            ends.append(extent)
        else:
            ends[level] = extent
        levels.append(level)
    return levels


def render(page: Page) -> str:
    """The page as one HTML document with nothing external."""
    e = html.escape
    span = max(page.duration_ms, 1.0)

    def pct(t: float) -> str:
        return f"{min(max(t, 0.0), span) / span * 100:.3f}%"

    def lane_row(name: str, label: str, body: str, css: str = "") -> str:
        return (
            f'<div class="row {css}" data-lane="{e(name)}"><div class="name">{e(label)}</div>'
            f'<div class="track">{body}</div></div>'
        )

    rows = []
    seconds = int(span // 1000)
    step = 1 if seconds <= 30 else 5 if seconds <= 150 else 30
    ticks = "".join(
        f'<span class="tick" style="left:{pct(s * 1000)}">{s} s</span>' for s in range(0, seconds + 1, step)
    )
    rows.append(lane_row("axis", "time", ticks, "axis"))
    for track in page.tracks:
        path = waveform_path(track.audio, span)
        svg = (
            f'<svg class="wave" viewBox="0 -1 {span:.1f} 2" preserveAspectRatio="none" '
            f'role="img" aria-label="{e(track.label)} waveform"><path d="{path}"/></svg>'
        )
        rows.append(lane_row(track.name, track.label, svg, f"wave {track.name}"))
    by_lane: dict[str, list[Event]] = {lane: [] for lane in LANES}
    for event in page.events:
        by_lane.setdefault(event.lane, []).append(event)
    if not any(k == "replay" for k, _ in page.facts):
        del by_lane["replay turns"]
    for lane, events in by_lane.items():
        items = []
        levels = label_levels(events, span)
        for event, level in zip(events, levels, strict=True):
            title = e(f"{event.t / 1000:.3f} s  {event.label}: {event.detail}")
            top = f"top:{3 + level * LEVEL_PX}px"
            if event.end_ms is not None:
                width = f"calc({pct(event.end_ms)} - {pct(event.t)})"
                items.append(
                    f'<span class="ev span {e(event.css)}" data-t="{event.t:.1f}" '
                    f'style="left:{pct(event.t)};width:{width};{top}" title="{title}">{e(event.label)}</span>'
                )
            else:
                flip = " flip" if event.t > span * 0.85 else ""  # label to the left near the end
                items.append(
                    f'<span class="ev point {e(event.css)}{flip}" data-t="{event.t:.1f}" '
                    f'style="left:{pct(event.t)};{top}" title="{title}"><i></i><b>{e(event.label)}</b></span>'
                )
        height = f' style="height:{(max(levels, default=0) + 1) * LEVEL_PX + 6}px"'
        rows.append(lane_row(lane, lane, "".join(items)).replace('class="track"', f'class="track"{height}', 1))
    bands = "".join(
        f'<span class="divergence-band" data-t="{d.t:.1f}" style="left:{pct(d.t)}" title="{e(d.detail)}"></span>'
        for d in page.divergences
    )
    facts = "".join(f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in page.facts)
    players = "".join(
        f'<figure><figcaption>{e(label)}</figcaption><audio class="player" controls preload="auto" '
        f'src="data:audio/wav;base64,{base64.b64encode(wav).decode("ascii")}"></audio></figure>'
        for label, wav in page.audio
    )
    divergence_list = ""
    if page.divergences:
        listed = "".join(
            f'<li class="divergence" data-t="{d.t:.1f}">{e(d.detail)}'
            f"{f' <small>at {d.t / 1000:.2f} s</small>' if d.t else ''}</li>"
            for d in page.divergences
        )
        divergence_list = f'<section id="divergences"><h2>Divergences</h2><ol>{listed}</ol></section>'
    elif any(k == "replay" for k, _ in page.facts):
        divergence_list = '<section id="divergences"><h2>Divergences</h2><p class="ok">none</p></section>'
    transcript = "".join(
        f'<li class="role-{e(role)}"><b>{e(role)}</b> {e(text)}</li>' for role, text in page.transcript
    )
    table = "".join(
        f'<tr class="lane-{e(ev.lane)} {e(ev.css)}" data-t="{ev.t:.1f}"><td>{ev.t / 1000:.3f}</td>'
        f"<td>{e(ev.lane)}</td><td>{e(ev.label)}</td><td>{e(ev.detail)}</td></tr>"
        for ev in [*page.divergences, *page.events]
    )
    return _TEMPLATE.format(
        title=e(page.title),
        facts=facts,
        players=players,
        divergences=divergence_list,
        rows="".join(rows),
        bands=bands,
        transcript=transcript or "<li>(no transcript on this tape)</li>",
        table=table,
        style=_STYLE,
        script=_SCRIPT.replace("DURATION", f"{span:.1f}"),
    )


def write_tape_html(tape: Tape, out: str | Path) -> Path:
    return _write(render(page_for_tape(tape)), out)


def write_replay_html(result: ReplayResult, out: str | Path) -> Path:
    return _write(render(page_for_replay(result)), out)


def _write(text: str, out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


_STYLE = """
:root { --name: 118px; --zoom: 1; font: 13px/1.4 system-ui, sans-serif; color: #1d232b; }
body { margin: 16px 20px; }
h1 { font-size: 18px; margin: 0 0 8px; } h2 { font-size: 15px; margin: 18px 0 6px; }
dl { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 2px 16px; margin: 0; }
dt { color: #68717d; font-size: 11px; }
dd { margin: 0 0 4px; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
#player { display: flex; gap: 16px; align-items: end; flex-wrap: wrap; margin: 10px 0; }
figure { margin: 0; } figcaption { font-size: 11px; color: #68717d; }
#timeline { position: relative; overflow-x: auto; border: 1px solid #d4d9df; border-radius: 4px; }
#inner { position: relative; width: calc((100% - var(--name)) * var(--zoom) + var(--name)); min-width: 100%; }
.row { display: flex; border-bottom: 1px solid #eef0f3; min-height: 26px; }
.row.wave { height: 64px; }
.name { position: sticky; left: 0; z-index: 3; width: var(--name); flex: none; background: #f6f7f9;
        padding: 4px 6px; font-size: 11px; color: #4a525c; border-right: 1px solid #d4d9df; }
.track { position: relative; flex: 1; }
svg.wave { position: absolute; inset: 2px 0; width: 100%; height: calc(100% - 4px); }
.caller path { fill: #2f6fb3; } .bot path { fill: #2e8b57; } .replay path { fill: #b5651d; }
.axis .tick { position: absolute; top: 4px; font-size: 10px; color: #68717d; border-left: 1px solid #c5cad1;
              padding-left: 2px; height: 100%; }
.ev { position: absolute; top: 3px; white-space: nowrap; font-size: 10px; cursor: pointer; }
.ev.point i { position: absolute; left: -1px; top: 0; width: 2px; height: 18px; background: #5b6470; }
.ev.point b { position: relative; left: 4px; font-weight: normal; }
.ev.point.flip b { position: absolute; left: auto; right: 4px; }
.ev.span { height: 18px; box-sizing: border-box; overflow: hidden; padding: 1px 3px; border-radius: 3px;
           background: #cfe8d8; border: 1px solid #2e8b57; }
.ev.span.interrupted { background: #f6dcc6; border-color: #c0661d; }
.ev.span.unheard { background: repeating-linear-gradient(45deg, #eee, #eee 3px, #fff 3px, #fff 6px);
                   border: 1px dashed #999; color: #888; }
.ev.span.chain { background: #fbe3e3; border-color: #c23b3b; }
.ev.clear i { background: #c23b3b; width: 3px; }
.mark-out i { background: #9aa3ad; height: 9px; } .mark-in i { background: #2f6fb3; top: 9px; height: 9px; }
.mark-out b, .mark-in b { display: none; }
.ev.tool i { background: #7a3db8; } .ev.error i { background: #c23b3b; } .ev.error b { color: #c23b3b; }
.role-caller i { background: #2f6fb3; } .role-bot i { background: #2e8b57; }
.divergence-band { position: absolute; top: 0; bottom: 0; width: 6px; margin-left: -3px; z-index: 2;
                   background: rgba(220, 30, 30, .35); pointer-events: auto; }
#bands { position: absolute; top: 0; bottom: 0; left: var(--name); right: 0; pointer-events: none; }
#playhead { position: absolute; top: 0; bottom: 0; width: 2px; background: #e0245e; z-index: 4; left: 0; }
#divergences li, tr.divergence { color: #a11; background: #fde8e8; }
#divergences .ok { color: #2e8b57; }
#transcript li { margin: 2px 0; } #transcript b { display: inline-block; width: 48px; color: #68717d; }
table { border-collapse: collapse; width: 100%; font-size: 12px; }
td { border-bottom: 1px solid #eef0f3; padding: 2px 6px; vertical-align: top; }
td:first-child { font-family: ui-monospace, monospace; text-align: right; width: 70px; }
tr.lane-marks { color: #8a929c; }
"""

# Playhead, click-to-seek on the timeline or a table row, and zoom. No libraries.
_SCRIPT = """
(() => {
  const inner = document.getElementById('inner'), head = document.getElementById('playhead');
  const players = [...document.querySelectorAll('audio.player')], duration = DURATION;
  let current = players[0];
  const nameWidth = () => document.querySelector('.name').getBoundingClientRect().width;
  const place = (ms) => {
    const w = inner.getBoundingClientRect().width - nameWidth();
    head.style.left = (nameWidth() + Math.max(0, Math.min(1, ms / duration)) * w) + 'px';
  };
  const seek = (ms) => { if (current) { current.currentTime = ms / 1000; } place(ms); };
  players.forEach((p) => p.addEventListener('play', () => {
    players.forEach((o) => { if (o !== p) o.pause(); });
    current = p;
  }));
  const tick = () => { if (current) place(current.currentTime * 1000); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  inner.addEventListener('click', (ev) => {
    const target = ev.target.closest('[data-t]');
    if (target) { seek(parseFloat(target.dataset.t)); return; }
    const box = inner.getBoundingClientRect(), x = ev.clientX - box.left - nameWidth();
    if (x >= 0) seek(x / (box.width - nameWidth()) * duration);
  });
  document.querySelectorAll('tr[data-t], li[data-t]').forEach((row) =>
    row.addEventListener('click', () => seek(parseFloat(row.dataset.t))));
  document.getElementById('zoom').addEventListener('input', (ev) =>
    document.documentElement.style.setProperty('--zoom', ev.target.value));
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{title}</h1><dl id="facts">{facts}</dl></header>
{divergences}
<section id="player">{players}
<label>zoom <input id="zoom" type="range" min="1" max="20" step="0.5" value="1"></label></section>
<div id="timeline"><div id="inner">{rows}<div id="bands">{bands}</div><div id="playhead"></div></div></div>
<section id="transcript"><h2>Transcript</h2><ol>{transcript}</ol></section>
<section id="events"><h2>Events</h2>
<table><thead><tr><td>s</td><td>lane</td><td>event</td><td>detail</td></tr></thead><tbody>{table}</tbody></table>
</section>
<script>{script}</script>
</body>
</html>
"""
