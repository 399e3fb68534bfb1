"""``voicebot replay TAPE`` and ``voicebot tape view TAPE``: replay a call tape and report
what diverged, or look at one (a summary, and with ``--html`` a page per call).

Replay's exit status: 0 when the replay matches the tape within the tolerances, 1 when it
diverged, 2 when it could not run (unreadable tape, bad config, no server, timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import httpx

from voicebot.config import ConfigError, load_config
from voicebot.devtools.tape.compare import Tolerance, summary_lines
from voicebot.devtools.tape.format import TapeError, left_out, read_tape
from voicebot.devtools.tape.html_view import write_replay_html, write_tape_html
from voicebot.devtools.tape.replay import ReplayError, replay_call
from voicebot.devtools.tape.wav import write_call_wav
from voicebot.devtools.twilio_sim import NoStream


def replay_command(args: argparse.Namespace) -> int:
    """``voicebot replay`` (arguments: voicebot.cli)."""
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        tape = read_tape(args.tape)
    except TapeError as exc:
        print(f"bad tape: {exc}", file=sys.stderr)
        return 2
    live = None
    if args.url is None and (args.live or not tape.has_provider_side()):
        if not args.live:
            print("note: a caller-side tape has no provider side; replaying it against the config's provider")
        try:
            live = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        if args.speed != 1.0:
            print("note: a live provider runs in real time; at --speed other than 1 timings will diverge")
    if not tape.header.caller_audio:
        hears = (
            "a live provider hears silence"
            if live is not None or args.url
            else "the recorded provider side still plays"
        )
        print(f"note: this tape kept no caller audio: the replay sends silence of the same length ({hears})")
    given = {"timing_ms": args.timing_tolerance_ms, "audio_ms": args.audio_tolerance_ms}
    tolerance = Tolerance(**{name: value for name, value in given.items() if value is not None})
    token = args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN")
    try:
        result = asyncio.run(
            replay_call(
                args.tape,
                speed=args.speed,
                url=args.url,
                auth_token=token,
                live=live,
                tolerance=tolerance,
                timeout_s=args.timeout,
                to=args.to,
                from_=args.from_,
            )
        )
    except (ReplayError, TapeError, ValueError) as exc:
        print(f"replay failed: {exc}", file=sys.stderr)
        return 2
    except NoStream as exc:
        print(f"replay failed: the server did not open a media stream: {exc}", file=sys.stderr)
        return 2
    except (httpx.HTTPError, OSError) as exc:
        print(f"replay failed: cannot reach the server: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    if args.wav is not None:
        seconds = result.write_wav(args.wav)
        print(f"wrote {args.wav} ({seconds:.1f} s, caller left, bot right as heard)")
    if args.html is not None:
        print(f"wrote {write_replay_html(result, args.html)} (open it in a browser; divergences are marked)")
    return 0 if result.ok else 1


def view_command(args: argparse.Namespace) -> int:
    """``voicebot tape view``: the call's summary; with ``--html``, its page."""
    try:
        tape = read_tape(args.tape)
    except TapeError as exc:
        print(f"bad tape: {exc}", file=sys.stderr)
        return 2
    from voicebot.devtools.tape.view import view_of

    header = tape.header
    print(f"{args.tape}: call {header.call_sid}, {header.side} side, route {header.route or '-'}")
    for note in left_out(header):
        print(f"  not on this tape: {note}")
    print("\n".join(summary_lines(view_of(tape))))
    if args.html is not None:
        print(f"wrote {write_tape_html(tape, args.html)} (open it in a browser; it needs no network)")
    if args.wav is not None:
        view = view_of(tape)
        seconds = write_call_wav(args.wav, view.caller_audio, view.heard_audio)
        print(f"wrote {args.wav} ({seconds:.1f} s, caller left, bot right as heard)")
    return 0
