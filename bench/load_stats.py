"""Latency samples for the load benchmark, cheap enough to take on the audio path.

A sample is one integer store into a preallocated array: no allocation, no lock, no log line
per frame, so measuring 5000 frames/s does not change what is measured. The ring keeps the
latest ``capacity`` samples; at 100 calls x 50 frames/s the default holds the last ~26 s,
longer than a measurement window, and a longer window is still summarised over a recent
26 s slice rather than growing memory inside the process being measured.
"""

from __future__ import annotations

from array import array
from typing import TypedDict

import numpy as np


class Percentiles(TypedDict):
    count: int
    p50_us: float
    p99_us: float
    max_us: float


class LatencyRing:
    __slots__ = ("_buf", "_mask", "count")

    def __init__(self, capacity_log2: int = 17) -> None:
        capacity = 1 << capacity_log2
        self._buf = array("q", bytes(8 * capacity))
        self._mask = capacity - 1
        self.count = 0

    def add(self, ns: int) -> None:
        self._buf[self.count & self._mask] = ns
        self.count += 1

    def reset(self) -> None:
        self.count = 0

    def summary(self) -> Percentiles:
        n = min(self.count, self._mask + 1)
        return percentiles(np.frombuffer(self._buf, dtype=np.int64)[:n], self.count)


def percentiles(ns: np.ndarray, count: int | None = None) -> Percentiles:
    """p50, p99 and max of ``ns`` (nanoseconds) in µs; ``count`` if more were taken than kept."""
    if ns.size == 0:
        return Percentiles(count=0, p50_us=float("nan"), p99_us=float("nan"), max_us=float("nan"))
    us = ns.astype(np.float64) / 1000.0
    p50, p99 = np.percentile(us, [50, 99])
    return Percentiles(count=count or int(us.size), p50_us=float(p50), p99_us=float(p99), max_us=float(us.max()))
