"""``voicebot config check``: what ops want to know about a config before deploying it.

Loading already reports every schema error, unknown provider type or route provider and
``${VAR}`` that is not set (voicebot.config). On top of a file that loads, this shows which
route each sample call hits (``--number TO [--from FROM]``) and flags routes no call can
reach because an earlier route (a catch-all or a wider prefix) takes all their calls, and
any configured model with an announced shutdown date (:mod:`s2s.lifecycle`): a warning before
that date, an error from it on; a route whose ``vad`` package is missing (it falls back to
the energy detector); and a route whose ``max_cost_usd`` rests on a provider with no rates or
with unverified shipped placeholder rates (voicebot.pricing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from s2s.lifecycle import ModelFinding, model_status, provider_findings
from telephony.routing import select_route, shadowed_routes
from transcoding.voice_activity import vad_available
from voicebot.config import AppConfig
from voicebot.pricing import rates_problem


@dataclass(frozen=True, slots=True)
class CheckReport:
    lines: list[str]
    problems: int
    warnings: list[str]
    """the problems that hold for every call (not the sample calls'): `serve` logs these too"""


def model_findings(config: AppConfig, today: dt.date | None = None) -> list[ModelFinding]:
    """Retiring or retired models named by a provider table or a route's ``model``."""
    today = today or dt.datetime.now(dt.UTC).date()
    findings: list[ModelFinding] = []
    for name, provider in sorted(config.providers.items()):
        findings.extend(provider_findings(name, provider, today))
    for route in config.routes:
        if route.model and (finding := model_status(route.model, today, f"route {route.name!r} model")):
            findings.append(finding)
    return findings


def check_routes(
    config: AppConfig, samples: Sequence[tuple[str, str]] = (), today: dt.date | None = None
) -> CheckReport:
    """``samples``: (To, From) of calls to route; From may be empty. Retired models count as
    problems; retiring ones are printed as warnings."""
    lines: list[str] = []
    warnings: list[str] = []
    problems = 0
    for finding in model_findings(config, today):
        lines.append(f"{finding.level.upper()}: {finding.message}")
        problems += finding.level == "error"
    for i, route in enumerate(config.routes):
        chain = " -> ".join(f"{name} ({config.providers[name].type})" for name in route.providers)
        match = f"to {'|'.join(route.to)}" + ("" if route.from_ == ["*"] else f" from {'|'.join(route.from_)}")
        lines.append(f"route {i + 1} {route.name!r} ({match}): {chain}")
    for shadow in shadowed_routes(config.routes):
        problems += 1
        warning = (
            f"route {shadow.index + 1} {shadow.route.name!r} is unreachable: it is shadowed by the earlier route "
            f"{shadow.by.name!r}, which matches every call it would match"
        )
        warnings.append(warning)
        lines.append(f"UNREACHABLE: {warning}")
    for i, route in enumerate(config.routes):
        if not vad_available(route.vad):
            warning = (
                f"route {i + 1} {route.name!r}: vad {route.vad!r} needs a package that is not installed "
                "(pip install 'voicebot[vad]'); its calls use the energy detector"
            )
            warnings.append(warning)
            lines.append(f"WARNING: {warning}")
    for i, route in enumerate(config.routes):
        if route.max_cost_usd is None:
            continue
        for name in route.providers:
            if (problem := rates_problem(config.pricing, config.providers[name].type)) is not None:
                warning = (
                    f"route {i + 1} {route.name!r}: max_cost_usd cannot rely on provider {name!r}'s cost: {problem}"
                )
                warnings.append(warning)
                lines.append(f"WARNING: {warning}")
    for to, from_ in samples:
        hit = select_route(config.routes, to, from_)
        who = f"{to}" + (f" from {from_}" if from_ else "")
        if hit is None:
            problems += 1
            lines.append(f"call to {who}: NO ROUTE (the caller hears a not-in-service message)")
        else:
            lines.append(f"call to {who}: route {hit.name!r} -> {' -> '.join(hit.providers)}")
    for name, provider in sorted(config.providers.items()):
        limit = provider.max_sessions if provider.max_sessions is not None else "unlimited"
        used = any(name in route.providers for route in config.routes)
        lines.append(
            f"provider {name!r}: type={provider.type} max_sessions={limit}" + ("" if used else " (used by no route)")
        )
    return CheckReport(lines, problems, warnings)
