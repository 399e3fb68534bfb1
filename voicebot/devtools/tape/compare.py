"""What differs between a tape and its replay, in terms a developer acts on: bot audio per
turn, barge-in points, the mark/clear sequence, transcripts, DTMF and timing.

Timing is compared on the stream clock (ms since ``start``), so a replay at ``--speed 4``
is compared in tape time; the tolerances are absolute and default to what a loaded
machine and 20 ms frames allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicebot.devtools.tape.view import CallView


@dataclass(frozen=True, slots=True)
class Tolerance:
    timing_ms: float = 150.0
    """when a turn starts, when a barge-in happens and so how much of the cut answer was heard"""
    audio_ms: float = 60.0
    """bot audio sent per turn, and heard of an uninterrupted turn; one 40 ms chunk plus a frame"""
    marks: int = 2
    """marks per run between clears"""


@dataclass(frozen=True, slots=True)
class Divergence:
    what: str
    expected: object
    got: object
    detail: str = ""
    at_ms: float | None = None
    """where on the tape's stream clock it shows (the HTML view marks it there); None: the whole call"""

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.what}: tape {self.expected}, replay {self.got}{extra}"


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


def compare(expected: CallView, got: CallView, tolerance: Tolerance | None = None) -> list[Divergence]:
    tol = tolerance or Tolerance()
    out: list[Divergence] = []
    if len(expected.turns) != len(got.turns):
        first_extra = (expected.turns if len(expected.turns) > len(got.turns) else got.turns)[
            min(len(expected.turns), len(got.turns))
        ]
        out.append(Divergence("bot turns", len(expected.turns), len(got.turns), at_ms=first_extra.start_ms))
    for i, (a, b) in enumerate(zip(expected.turns, got.turns, strict=False), start=1):
        if abs(a.sent_ms - b.sent_ms) > tol.audio_ms:
            out.append(Divergence(f"turn {i} bot audio sent", _ms(a.sent_ms), _ms(b.sent_ms), at_ms=a.start_ms))
        # How much of an interrupted answer was heard depends on when the caller cut in (by
        # talking over it or by hanging up), a timing; how much of a whole answer was heard is
        # an amount of audio.
        cut_short = min(a.heard_ms, b.heard_ms) < min(a.sent_ms, b.sent_ms) - tol.audio_ms
        heard_tol = tol.timing_ms if a.interrupted or b.interrupted or cut_short else tol.audio_ms
        if abs(a.heard_ms - b.heard_ms) > heard_tol:
            out.append(Divergence(f"turn {i} bot audio heard", _ms(a.heard_ms), _ms(b.heard_ms), at_ms=a.start_ms))
        if a.interrupted != b.interrupted:
            out.append(Divergence(f"turn {i} interrupted", a.interrupted, b.interrupted, at_ms=a.start_ms))
        delta = b.start_ms - a.start_ms
        if abs(delta) > tol.timing_ms:
            beyond = f"{delta:+.0f} ms, beyond ±{tol.timing_ms:.0f}"
            out.append(Divergence(f"turn {i} start", _ms(a.start_ms), _ms(b.start_ms), beyond, a.start_ms))
    if len(expected.barge_ins) != len(got.barge_ins):
        longer = expected.barge_ins if len(expected.barge_ins) > len(got.barge_ins) else got.barge_ins
        at = longer[min(len(expected.barge_ins), len(got.barge_ins))].at_ms
        out.append(Divergence("barge-ins", len(expected.barge_ins), len(got.barge_ins), at_ms=at))
    for i, (x, y) in enumerate(zip(expected.barge_ins, got.barge_ins, strict=False), start=1):
        delta = y.at_ms - x.at_ms
        if abs(delta) > tol.timing_ms:
            out.append(Divergence(f"barge-in {i} at", _ms(x.at_ms), _ms(y.at_ms), f"{delta:+.0f} ms", x.at_ms))
        if abs(x.heard_ms - y.heard_ms) > tol.timing_ms:
            out.append(Divergence(f"barge-in {i} heard", _ms(x.heard_ms), _ms(y.heard_ms), at_ms=x.at_ms))
    out.extend(_compare_control(expected.control, got.control, tol.marks))
    if expected.dtmf != got.dtmf:
        out.append(Divergence("DTMF digits", "".join(expected.dtmf), "".join(got.dtmf)))
    # A caller-side tape (``--url``, ``dial --record``) has only Twilio frames: no transcript,
    # no provider input, and the outcome as the caller saw it.
    if expected.side == got.side == "server":
        if [(t.role, t.text) for t in expected.transcript] != [(t.role, t.text) for t in got.transcript]:
            out.append(Divergence("transcript", _turns(expected), _turns(got)))
        if expected.provider_text != got.provider_text:
            out.append(Divergence("text sent to the provider", expected.provider_text, got.provider_text))
        if expected.outcome != got.outcome:
            out.append(Divergence("outcome", expected.outcome, got.outcome))
        if expected.bad_frames != got.bad_frames:
            out.append(Divergence("bad frames from Twilio", expected.bad_frames, got.bad_frames))
    return out


def _turns(view: CallView) -> str:
    return " | ".join(f"{t.role}: {t.text}" for t in view.transcript) or "(none)"


def _control_text(control: list[tuple[str, int]]) -> str:
    return " ".join("clear" if kind == "clear" else f"mark x{n}" for kind, n in control) or "(none)"


def _compare_control(a: list[tuple[str, int]], b: list[tuple[str, int]], marks_tol: int) -> list[Divergence]:
    same_shape = [kind for kind, _ in a] == [kind for kind, _ in b]
    close = same_shape and all(abs(x[1] - y[1]) <= marks_tol for x, y in zip(a, b, strict=True))
    return [] if close else [Divergence("mark/clear sequence", _control_text(a), _control_text(b))]


def summary_lines(view: CallView) -> list[str]:
    """A short human summary of one call (``voicebot replay`` prints it)."""
    lines = [f"{len(view.turns)} bot turn(s), {len(view.barge_ins)} barge-in(s), outcome {view.outcome or '?'}"]
    for i, turn in enumerate(view.turns, start=1):
        cut = " (interrupted)" if turn.interrupted else ""
        lines.append(
            f"  turn {i}: starts {_ms(turn.start_ms)}, sent {_ms(turn.sent_ms)}, heard {_ms(turn.heard_ms)}{cut}"
        )
    for i, barge in enumerate(view.barge_ins, start=1):
        heard = f"caller heard {_ms(barge.heard_ms)} of {_ms(barge.sent_ms)}"
        lines.append(f"  barge-in {i}: at {_ms(barge.at_ms)}, {heard}")
    lines.append(f"  marks/clears: {_control_text(view.control)}")
    if view.dtmf:
        lines.append(f"  DTMF: {''.join(view.dtmf)}")
    lines.append(f"  transcript: {_turns(view)}")
    return lines
