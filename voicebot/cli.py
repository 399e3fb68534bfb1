"""``voicebot`` command line: ``serve`` and ``config check`` (more commands register here)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from voicebot.calls.runtime import Runtime
from voicebot.config import ConfigError, load_config
from voicebot.config_check import SampleCall, check_routes
from voicebot.devtools.dial import add_dial_command
from voicebot.devtools.tape.cli import add_replay_command
from voicebot.server.app import create_app
from voicebot.server.drain import Drainer, DrainingServer
from voicebot.server.logs import configure_logging
from voicebot.server.reload import ConfigReloader, run_server_with_reload
from voicebot.server.run import uvicorn_config
from voicebot.telemetry.setup import TelemetryConfigError, setup_telemetry

log = logging.getLogger("voicebot")


def _serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json_lines=args.json_logs)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.config is None:
        log.warning("no --config given: serving the built-in default route (echo provider)")
    if not config.twilio.validate_signatures:
        log.warning(
            "!!! Twilio signature checks are OFF: anyone who can reach this server can place calls. "
            "Set [twilio] validate_signatures = true and auth_token for production. !!!"
        )
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
    server = DrainingServer(uvicorn_config(create_app(runtime), host, port, args.log_level.lower()), Drainer(runtime))
    try:
        if args.config:  # hot reload on SIGHUP or a change of the file (voicebot.server.reload)
            run_server_with_reload(server, ConfigReloader(args.config, runtime.apply))
        else:
            server.run()
    finally:
        telemetry.shutdown()  # flush spans/metrics still queued for a collector
    return 0


def _config_check(args: argparse.Namespace) -> int:
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


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the phone server")
    p.add_argument("--config", default=os.environ.get("VOICEBOT_CONFIG"), help="TOML config (default: built-in echo)")
    p.add_argument("--host", default=None, help="bind address (default: server.host, 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="port (default: server.port, 8080)")
    p.add_argument("--log-level", default=os.environ.get("VOICEBOT_LOG_LEVEL", "INFO"))
    p.add_argument("--json-logs", action="store_true", default=os.environ.get("VOICEBOT_JSON_LOGS") == "1")
    p.set_defaults(func=_serve)


def _add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="inspect configuration")
    csub = p.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="validate a config file and print its routes")
    check.add_argument("file", nargs="?", default=None)
    check.add_argument(
        "--number", dest="samples", action=SampleCall, default=[], help="a called number (To) to route; repeatable"
    )
    check.add_argument("--from", dest="samples", action=SampleCall, help="the caller (From) of the --number before it")
    check.set_defaults(func=_config_check)


COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_serve,
    _add_config,
    add_dial_command,
    add_replay_command,
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicebot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
