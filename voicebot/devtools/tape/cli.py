"""``voicebot replay TAPE``: replay a call tape and report what diverged.

Exit status: 0 when the replay matches the tape within the tolerances, 1 when it diverged,
2 when it could not run (unreadable tape, bad config, no server, timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import httpx

from voicebot.config import ConfigError, load_config
from voicebot.devtools.tape.compare import Tolerance
from voicebot.devtools.tape.format import TapeError, read_tape
from voicebot.devtools.tape.replay import ReplayError, replay_call
from voicebot.devtools.twilio_sim import NoStream


def _replay_command(args: argparse.Namespace) -> int:
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
    tolerance = Tolerance(timing_ms=args.timing_tolerance_ms, audio_ms=args.audio_tolerance_ms)
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
    return 0 if result.ok else 1


def add_replay_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="replay a call tape against the server and report divergences")
    p.add_argument("tape", type=Path, help="call tape (.jsonl)")
    p.add_argument("--url", default=None, help="replay against this running server instead of an in-process one")
    p.add_argument(
        "--auth-token", default=None, help="Twilio auth token of the --url server (default: $TWILIO_AUTH_TOKEN)"
    )
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time; 4 = four times faster")
    p.add_argument("--live", action="store_true", help="serve the provider side from --config, not from the tape")
    p.add_argument(
        "--config", default=os.environ.get("VOICEBOT_CONFIG"), help="config for --live (default: built-in echo)"
    )
    p.add_argument("--wav", type=Path, default=None, help="write a stereo WAV: caller left, bot right as heard")
    p.add_argument("--timing-tolerance-ms", type=float, default=Tolerance().timing_ms)
    p.add_argument("--audio-tolerance-ms", type=float, default=Tolerance().audio_ms)
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (default: tape + 30 s)")
    p.add_argument("--to", default="+15550001111", help="called number of the replayed call (route on --url)")
    p.add_argument("--from", dest="from_", default="+15557654321", help="caller number of the replayed call")
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=_replay_command)
