"""Which ``[[routes]]`` entry answers a call, from the webhook's ``To`` and ``From``.

Routes are tried in file order and the first match wins, like a firewall rule list, so ops
can read the file top to bottom. A pattern is ``*`` (anything), an exact address (E.164
``+15551234567``, or a Twilio ``client:``/SIP address) or a prefix ending in ``*``
(``+44*``). A route matches when ``To`` matches one of its ``to`` patterns and ``From``
one of its ``from`` patterns (both default to ``*``).

Pure functions: the runtime calls :func:`select_route` per webhook; ``voicebot config
check`` calls :func:`shadowed_routes` to flag routes no call can ever reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class RoutePattern(Protocol):
    """What routing reads of a route: its ``to`` and ``from`` patterns. The application's
    route type (``voicebot.config.RouteConfig``) has them; the functions below hand back the
    application's own route objects."""

    @property
    def to(self) -> Sequence[str]: ...

    @property
    def from_(self) -> Sequence[str]: ...


def pattern_matches(pattern: str, number: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return number.startswith(pattern[:-1])
    return number == pattern


def pattern_covers(wide: str, narrow: str) -> bool:
    """True when every number ``narrow`` matches is also matched by ``wide``."""
    if wide == "*":
        return True
    if narrow == "*":
        return False
    if wide.endswith("*"):
        return narrow.startswith(wide[:-1])
    return not narrow.endswith("*") and narrow == wide


def route_matches(route: RoutePattern, to: str, from_: str) -> bool:
    return any(pattern_matches(p, to) for p in route.to) and any(pattern_matches(p, from_) for p in route.from_)


def select_route[R: RoutePattern](routes: Sequence[R], to: str, from_: str) -> R | None:
    """The first route matching the call, or None (the webhook then declines politely)."""
    return next((route for route in routes if route_matches(route, to, from_)), None)


@dataclass(frozen=True, slots=True)
class ShadowedRoute[R: RoutePattern]:
    route: R
    index: int
    by: R


def _covers(earlier: RoutePattern, later: RoutePattern) -> bool:
    """Every (To, From) pair ``later`` matches is matched by ``earlier``.

    Checked pattern by pattern: each of ``later``'s ``to`` patterns is covered by one of
    ``earlier``'s, and the same for ``from``. This is exact for single patterns and may
    miss a route shadowed only by a union of several earlier ones (reported as reachable)."""
    to_covered = all(any(pattern_covers(w, n) for w in earlier.to) for n in later.to)
    from_covered = all(any(pattern_covers(w, n) for w in earlier.from_) for n in later.from_)
    return to_covered and from_covered


def shadowed_routes[R: RoutePattern](routes: Sequence[R]) -> list[ShadowedRoute[R]]:
    """Routes that can never be selected because an earlier route matches all their calls."""
    shadowed = []
    for i, route in enumerate(routes):
        by = next((earlier for earlier in routes[:i] if _covers(earlier, route)), None)
        if by is not None:
            shadowed.append(ShadowedRoute(route, i, by))
    return shadowed
