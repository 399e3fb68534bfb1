"""The ``voicebot`` command: answer phone calls with speech-to-speech AI, and the tools to
try, inspect and replay calls without a phone.

This module only describes the commands. Each command's code is imported when that command
runs, so ``voicebot --help`` and every ``--help`` answer at once instead of loading the
server, every provider SDK and numpy first.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Answer phone calls (Twilio Media Streams) with speech-to-speech AI: OpenAI Realtime, Gemini
Live, Amazon Nova Sonic, xAI Grok, or the built-in echo line.

A .env file in the working directory is read first (variables already set win), and empty
variables count as unset."""

EXAMPLES = """\
examples:
  voicebot serve                                   the built-in echo line on 0.0.0.0:8080, no keys
  voicebot serve --config voicebot.toml            your routes and providers
  voicebot config check voicebot.toml --number +15551234567
  voicebot dial http://127.0.0.1:8080 --wav hello.wav --out call.wav
  voicebot replay tapes/20260124T221530123Z_CA123.jsonl --html call.html
  voicebot tape view tapes/20260124T221530123Z_CA123.jsonl --html call.html
  voicebot calls --url http://127.0.0.1:8080
  voicebot call +15551234567 --route reminders --var name=Ada
  voicebot campaign reminders.csv --route reminders --cps 2 --concurrency 10

`voicebot COMMAND --help` describes each command."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout and shows each option's default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voicebot")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def load_dotenv_file(path: Path | None = None) -> None:
    """Read ``.env`` (python-dotenv; the environment wins), then drop every empty variable.

    ``.env.example`` lists every variable with an empty value; a copy of it, or the file
    sourced into a shell, must mean "not set" (``VOICEBOT_CONFIG=`` is no config file,
    ``OTEL_TRACES_SAMPLER=`` is the default sampler), never an empty value."""
    from dotenv import load_dotenv

    load_dotenv(path or Path.cwd() / ".env", override=False)
    for name in [name for name, value in os.environ.items() if value == ""]:
        del os.environ[name]


class SampleCall(argparse.Action):
    """``--number TO`` starts a sample call; a ``--from FROM`` after it sets that call's caller."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any, option: str | None = None
    ) -> None:
        samples: list[tuple[str, str]] = list(getattr(namespace, self.dest, None) or [])
        if option == "--from":
            if not samples:
                parser.error("--from must follow the --number it belongs to")
            samples[-1] = (samples[-1][0], str(value))
        else:
            samples.append((str(value), ""))
        setattr(namespace, self.dest, samples)


# -- commands ------------------------------------------------------------------------------
# Each `_add_*` builds one command's parser; `handler` names "module:function", imported on use.


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, examples: str, handler: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog="examples:\n" + examples,
        formatter_class=_Formatter,
    )
    p.set_defaults(handler=handler)
    return p


def _log_level(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--log-level",
        default=default,
        metavar="LEVEL",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"],
        help="DEBUG, INFO, WARNING or ERROR, e.g. --log-level DEBUG",
    )


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "serve",
        "run the phone server (Twilio webhook + Media Streams)",
        "  voicebot serve                          built-in echo line, no keys, signature checks off\n"
        "  voicebot serve --config voicebot.toml   hot-reloads the file on change or SIGHUP\n"
        "  voicebot serve --config local.toml --host 127.0.0.1 --port 9000 --json-logs",
        "voicebot.cli:serve_command",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("VOICEBOT_CONFIG"),
        help="TOML config, e.g. --config voicebot.toml ($VOICEBOT_CONFIG; none: the built-in echo line)",
    )
    p.add_argument("--host", metavar="ADDRESS", help="bind address, e.g. --host 127.0.0.1 (default: [server] host)")
    p.add_argument("--port", type=int, metavar="PORT", help="TCP port, e.g. --port 9000 (default: [server] port)")
    _log_level(p, os.environ.get("VOICEBOT_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--json-logs",
        action="store_true",
        default=os.environ.get("VOICEBOT_JSON_LOGS") == "1",
        help="one JSON object per log line, e.g. for a log shipper ($VOICEBOT_JSON_LOGS=1)",
    )


def _add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config",
        help="check a config file",
        description="Check a config file.",
        epilog="examples:\n  voicebot config check voicebot.toml",
        formatter_class=_Formatter,
    )
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = _command(
        csub,
        "check",
        "validate a config file, print each route's provider chain and where sample calls go",
        "  voicebot config check voicebot.toml\n"
        "  voicebot config check voicebot.toml --number +15551234567 --number +447700900123 --from +15550001111\n"
        "exit status 1 on any error or flagged problem (empty key, unreachable route, unrouted number)",
        "voicebot.cli:config_check_command",
    )
    check.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="the TOML file, e.g. voicebot.toml (none: the built-in default config)",
    )
    check.add_argument(
        "--number",
        dest="samples",
        metavar="TO",
        action=SampleCall,
        default=[],
        help="route a call to this number, e.g. --number +15551234567; repeatable",
    )
    check.add_argument(
        "--from",
        dest="samples",
        metavar="FROM",
        action=SampleCall,
        help="the caller of the --number before it, e.g. --number +15551234567 --from +447700900123",
    )


def _add_dial(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "dial",
        "call a running voicebot as Twilio would (no phone needed)",
        "  voicebot dial                                          speak a generated utterance to :8080\n"
        "  voicebot dial http://127.0.0.1:8080 --wav hello.wav --out call.wav\n"
        "  voicebot dial --wav question.wav --record call.jsonl   also write a caller-side tape\n"
        "It waits for the bot's answer to each utterance in the WAV (at most --answer-timeout each).",
        "voicebot.devtools.dial:dial_command",
    )
    p.add_argument(
        "url", nargs="?", metavar="URL", default="http://127.0.0.1:8080", help="server base URL, e.g. http://host:8080"
    )
    p.add_argument(
        "--wav",
        type=Path,
        metavar="FILE",
        help="caller audio: PCM, mu-law or A-law WAV, any rate or channels, e.g. --wav hello.wav "
        "(default: espeak-ng if installed, else a tone pattern)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the call as a stereo WAV (caller left, bot right), e.g. --out call.wav",
    )
    p.add_argument("--record", type=Path, metavar="FILE", help="also write a caller-side call tape, e.g. call.jsonl")
    p.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="Twilio auth token to sign with, e.g. --auth-token dev-token (default: $TWILIO_AUTH_TOKEN)",
    )
    p.add_argument(
        "--to",
        metavar="NUMBER",
        default="+15550001111",
        help="the called number, which selects the route, e.g. --to +447700900123",
    )
    p.add_argument(
        "--from",
        dest="from_",
        metavar="NUMBER",
        default="+15557654321",
        help="the caller's number, e.g. --from +15557654321",
    )
    p.add_argument(
        "--answer-timeout",
        type=float,
        metavar="SECONDS",
        default=15.0,
        help="longest wait for the bot to answer one utterance, e.g. --answer-timeout 30",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        metavar="SECONDS",
        default=120.0,
        help="hang up after this long in any case, e.g. --max-seconds 300",
    )
    p.add_argument(
        "--connect-wait",
        type=float,
        metavar="SECONDS",
        default=20.0,
        help="wait this long for a server that is still starting, e.g. right after `voicebot serve &`",
    )
    _log_level(p, "WARNING")


def _replay_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "tape", type=Path, metavar="TAPE", help="call tape (.jsonl), e.g. tapes/20260124T221530123Z_CA1.jsonl"
    )
    p.add_argument(
        "--url",
        metavar="URL",
        help="replay against this running server instead of an in-process one, e.g. --url http://127.0.0.1:8080",
    )
    p.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="Twilio auth token of the --url server, e.g. --auth-token dev-token (default: $TWILIO_AUTH_TOKEN)",
    )
    p.add_argument(
        "--speed", type=float, metavar="FACTOR", default=1.0, help="1 = real time, e.g. --speed 4 for four times faster"
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="serve the provider side from --config, not from the tape, e.g. --live --config voicebot.toml",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("VOICEBOT_CONFIG"),
        help="config for --live, e.g. --config voicebot.toml (default: built-in echo)",
    )
    p.add_argument(
        "--wav",
        type=Path,
        metavar="FILE",
        help="write a stereo WAV: caller left, bot right as heard, e.g. --wav replay.wav",
    )
    p.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the call page with the replay's divergences marked, e.g. --html replay.html",
    )
    # Defaults: voicebot.devtools.tape.compare.Tolerance (not imported here: it loads numpy).
    p.add_argument(
        "--timing-tolerance-ms",
        type=float,
        metavar="MS",
        help="allowed shift of a turn start or barge-in, in real-time ms (x --speed on the tape clock), "
        "e.g. --timing-tolerance-ms 250 (default: 150)",
    )
    p.add_argument(
        "--audio-tolerance-ms",
        type=float,
        metavar="MS",
        help="allowed difference of bot audio per turn, e.g. --audio-tolerance-ms 100 (default: 60)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="give up after this long, e.g. --timeout 120 (default: tape length + 30 s)",
    )
    p.add_argument(
        "--to",
        metavar="NUMBER",
        default="+15550001111",
        help="called number of the replayed call, e.g. --to +447700900123",
    )
    p.add_argument(
        "--from",
        dest="from_",
        metavar="NUMBER",
        default="+15557654321",
        help="caller of the replayed call, e.g. --from +15557654321",
    )
    _log_level(p, "WARNING")


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "replay",
        "replay a call tape against the server and report what diverged",
        "  voicebot replay tapes/20260124T221530123Z_CA1.jsonl --speed 4\n"
        "  voicebot replay call.jsonl --wav replay.wav --html replay.html\n"
        "  voicebot replay call.jsonl --url http://127.0.0.1:8080   against a running server\n"
        "exit status 0: no divergence, 1: diverged, 2: could not run",
        "voicebot.devtools.tape.cli:replay_command",
    )
    _replay_options(p)


def _add_tape(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tape",
        help="look at a call tape",
        description="Look at a call tape.",
        epilog="examples:\n  voicebot tape view call.jsonl --html call.html",
        formatter_class=_Formatter,
    )
    tsub = p.add_subparsers(dest="tape_command", required=True, metavar="SUBCOMMAND")
    view = _command(
        tsub,
        "view",
        "summarise a call tape, and write it as one self-contained HTML page",
        "  voicebot tape view tapes/20260124T221530123Z_CA1.jsonl\n"
        "  voicebot tape view call.jsonl --html call.html   waveforms, turns, barge-ins, events; works offline\n"
        "  voicebot tape view call.jsonl --wav call.wav     the call as heard: caller left, bot right",
        "voicebot.devtools.tape.cli:view_command",
    )
    view.add_argument("tape", type=Path, metavar="TAPE", help="call tape (.jsonl), e.g. tapes/20260124T2215Z_CA1.jsonl")
    view.add_argument("--html", type=Path, metavar="FILE", help="write the page here, e.g. --html call.html")
    view.add_argument(
        "--wav",
        type=Path,
        metavar="FILE",
        help="write the call as a stereo WAV (caller left, bot right as heard), e.g. --wav call.wav",
    )


def _add_calls(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "calls",
        "list the calls a running server has in progress (GET /calls)",
        "  voicebot calls                                  the server on 127.0.0.1:8080\n"
        "  VOICEBOT_OPS_TOKEN=... voicebot calls --url https://voice.example.com --json",
        "voicebot.devtools.calls:calls_command",
    )
    p.add_argument(
        "--url",
        metavar="URL",
        default="http://127.0.0.1:8080",
        help="server base URL, e.g. --url https://voice.example.com",
    )
    p.add_argument(
        "--token",
        metavar="TOKEN",
        help='bearer token, the server\'s [ops] token, e.g. --token "$OPS_TOKEN" (default: $VOICEBOT_OPS_TOKEN)',
    )
    p.add_argument("--json", action="store_true", help="print the JSON document as the server sent it, e.g. for jq")


def _add_call(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "call",
        "place an outbound call through a running server (POST /calls)",
        "  voicebot call +15551234567 --route reminders --var name=Ada\n"
        "  VOICEBOT_OPS_TOKEN=... voicebot call +15551234567 --route reminders --url https://voice.example.com",
        "voicebot.devtools.calls:call_command",
    )
    p.add_argument("to", metavar="NUMBER", help="the number to call (E.164, e.g. +15551234567)")
    p.add_argument(
        "--route", required=True, metavar="NAME", help="the route that talks to the callee, e.g. --route reminders"
    )
    p.add_argument(
        "--from",
        dest="from_",
        metavar="NUMBER",
        help="caller id, e.g. --from +15550001111 (default: the route's outbound.caller_id)",
    )
    p.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fills {KEY} in the route's texts, e.g. --var name=Ada; repeatable",
    )
    p.add_argument(
        "--url", metavar="URL", default="http://127.0.0.1:8080", help="server base URL, e.g. --url http://10.0.0.5:8080"
    )
    p.add_argument(
        "--token",
        metavar="TOKEN",
        help='bearer token, the server\'s [ops] token, e.g. --token "$OPS_TOKEN" (default: $VOICEBOT_OPS_TOKEN)',
    )


def _add_campaign(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _command(
        sub,
        "campaign",
        "call every number of a CSV through a running server, paced, with retries; resumable",
        "  voicebot campaign reminders.csv --route reminders --cps 2 --concurrency 10\n"
        '  voicebot campaign reminders.csv --route reminders --quiet-hours 21:00-09:00 --timezone "Europe/London"',
        "voicebot.campaign:campaign_command",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="CSV with a 'number' column, e.g. reminders.csv")
    p.add_argument("--route", required=True, metavar="NAME", help="the route of the calls, e.g. --route reminders")
    p.add_argument("--cps", type=float, default=1.0, metavar="N", help="calls placed per second at most, e.g. --cps 2")
    p.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="calls in progress at most, e.g. --concurrency 10"
    )
    p.add_argument("--attempts", type=int, default=3, metavar="N", help="tries per number, e.g. --attempts 2")
    p.add_argument(
        "--backoff-s", type=float, default=300.0, metavar="S", help="first retry delay, doubling, e.g. --backoff-s 60"
    )
    p.add_argument(
        "--quiet-hours", metavar="HH:MM-HH:MM", help="no calls in this local window, e.g. --quiet-hours 21:00-09:00"
    )
    p.add_argument(
        "--timezone", default="UTC", metavar="ZONE", help="rows without a timezone column, e.g. --timezone Europe/Paris"
    )
    p.add_argument(
        "--results", type=Path, metavar="FILE", help="results CSV and resume journal, e.g. --results out.csv"
    )
    p.add_argument(
        "--url", metavar="URL", default="http://127.0.0.1:8080", help="server base URL, e.g. --url http://10.0.0.5:8080"
    )
    p.add_argument(
        "--token",
        metavar="TOKEN",
        help='bearer token, the server\'s [ops] token, e.g. --token "$OPS_TOKEN" (default: $VOICEBOT_OPS_TOKEN)',
    )


def _add_providers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "providers",
        help="check the configured providers with one real session each",
        description="Check the configured providers with one real session each.",
        epilog="examples:\n  voicebot providers check --config voicebot.toml",
        formatter_class=_Formatter,
    )
    psub = p.add_subparsers(dest="providers_command", required=True, metavar="SUBCOMMAND")
    check = _command(
        psub,
        "check",
        "open a session with each provider, say a short prompt, report handshake, formats, first audio, transcript",
        "  voicebot providers check --config voicebot.toml       the first thing to run after adding keys\n"
        "  voicebot providers check --config voicebot.toml --provider gemini\n"
        "exit status 1 if any provider fails to open a session or to answer",
        "voicebot.providers_check:providers_check_command",
    )
    check.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("VOICEBOT_CONFIG"),
        help="the TOML file, e.g. voicebot.toml (none: the built-in default config)",
    )
    check.add_argument("--provider", metavar="NAME", help="check only [providers.NAME], e.g. --provider openai")
    check.add_argument(
        "--answer-timeout",
        type=float,
        metavar="SECONDS",
        default=15.0,
        help="longest wait for the bot's answer to the prompt, e.g. --answer-timeout 20",
    )


COMMANDS = (
    _add_serve,
    _add_config,
    _add_dial,
    _add_replay,
    _add_tape,
    _add_calls,
    _add_call,
    _add_campaign,
    _add_providers,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicebot", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"voicebot {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    load_dotenv_file()
    args = build_parser().parse_args(argv)
    module, _, function = str(args.handler).partition(":")
    handler: Any = getattr(importlib.import_module(module), function)
    result: int = handler(args)
    return result


# -- serve and config check (the others live beside the code they drive) -----------------


def serve_command(args: argparse.Namespace) -> int:
    import logging

    from voicebot.calls.runtime import Runtime
    from voicebot.config import ConfigError, load_config
    from voicebot.config_check import check_routes, model_findings
    from voicebot.recordings.upload import SHUTDOWN_UPLOAD_S
    from voicebot.server.app import create_app
    from voicebot.server.drain import Drainer, DrainingServer
    from voicebot.server.logs import configure_logging
    from voicebot.server.reload import ConfigReloader, run_server_with_reload
    from voicebot.server.run import freeze_startup_heap, uvicorn_config
    from voicebot.telemetry.setup import TelemetryConfigError, setup_telemetry

    log = logging.getLogger("voicebot")
    configure_logging(args.log_level, json_lines=args.json_logs)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.config is None:
        log.warning("no --config given: serving the built-in default route (echo provider)")
    for line in check_routes(config).warnings:
        log.warning("config: %s", line)
    if not config.twilio.validate_signatures:
        log.warning(
            "!!! Twilio signature checks are OFF: anyone who can reach this server can place calls. "
            "Set [twilio] validate_signatures = true and auth_token for production. !!!"
        )
    # A retired model does not stop the server: its routes fall through to their next provider.
    for finding in model_findings(config):
        log.log(logging.ERROR if finding.level == "error" else logging.WARNING, "%s", finding.message)
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    try:
        telemetry = setup_telemetry()
    except TelemetryConfigError as exc:
        print(f"telemetry: {exc}", file=sys.stderr)
        return 2
    runtime = Runtime(config)
    webhook = f"{config.server.public_url or 'https://<your public host>'}/twilio/voice"
    log.info("point your Twilio number's voice webhook (HTTP POST) at %s", webhook)
    app = create_app(runtime)
    server = DrainingServer(
        uvicorn_config(app, host, port, args.log_level.lower()), Drainer(runtime, app.state.outbound)
    )
    freeze_startup_heap()
    try:
        if args.config:  # hot reload on SIGHUP or a change of the file (voicebot.server.reload)
            run_server_with_reload(server, ConfigReloader(args.config, runtime.apply))
        else:
            server.run()
    finally:
        runtime.close(SHUTDOWN_UPLOAD_S)  # the last tapes, before the pod's disk goes
        telemetry.shutdown()  # flush spans/metrics still queued for a collector
    return 0


def config_check_command(args: argparse.Namespace) -> int:
    from voicebot.config import ConfigError, load_config
    from voicebot.config_check import check_routes

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    report = check_routes(config, args.samples)
    print("\n".join(report.lines))
    if report.problems:
        print(f"{args.file or 'built-in default config'}: valid, but {report.problems} problem(s) flagged above")
        return 1
    print(f"{args.file or 'built-in default config'}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
