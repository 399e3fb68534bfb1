"""``voicebot calls``: the calls a running server has in progress, from its ``GET /calls``;
``voicebot call``: place an outbound call with its ``POST /calls``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import httpx


def _token(args: argparse.Namespace) -> str | None:
    token: str | None = args.token or os.environ.get("VOICEBOT_OPS_TOKEN")
    if not token:
        print("no token: pass --token or set VOICEBOT_OPS_TOKEN (the server's [ops] token)", file=sys.stderr)
    return token


def call_command(args: argparse.Namespace) -> int:
    """``voicebot call`` (arguments: voicebot.cli)."""
    token = _token(args)
    if not token:
        return 2
    variables = {}
    for item in args.var:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"--var {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        variables[key] = value
    body: dict[str, object] = {"to": args.to, "route": args.route, "variables": variables}
    if args.from_:
        body["from"] = args.from_
    url = args.url.rstrip("/") + "/calls"
    try:
        response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
    except httpx.HTTPError as exc:
        print(f"cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 201:
        print(f"not placed: HTTP {response.status_code}: {response.text.strip()}", file=sys.stderr)
        return 1
    call = response.json()
    print(f"{call['call_sid']} {call['status']} (route {call['route']}, to {call['to']}, from {call['from']})")
    return 0


def calls_command(args: argparse.Namespace) -> int:
    """``voicebot calls`` (arguments: voicebot.cli)."""
    token = _token(args)
    if not token:
        return 2
    url = args.url.rstrip("/") + "/calls"
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
    except httpx.HTTPError as exc:
        print(f"cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"{url}: HTTP {response.status_code}: {response.text.strip()}", file=sys.stderr)
        return 1
    body = response.json()
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    calls = body.get("calls", [])
    columns = ("call_sid", "route", "provider", "state", "duration_s", "barge_ins", "cost_usd")
    rows = [[str(call.get(c) if call.get(c) is not None else "-") for c in columns] for call in calls]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    draining = ", draining" if body.get("draining") else ""
    print(f"{len(calls)} call(s) in progress{draining}")
    return 0
