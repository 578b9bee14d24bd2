"""vLLM's benchmark figures over a run's records (TTFT, TPOT, ITL, E2EL) and goodput against
an SLO.

The names and definitions follow vLLM's ``benchmark_serving``: TTFT is the time to the first
content token, TPOT the time per output token after the first, ITL the gap between
successive streamed chunks, E2EL the end-to-end latency; each is summarised by its mean,
median, P90, P95 and P99 over the successful requests. A request is *good* when it
succeeded and meets every bound of the SLO; goodput is good requests per second.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .records import RequestRecord, percentile

__all__ = [
    "METRICS",
    "SLO_KEYS",
    "Slo",
    "SloError",
    "Summary",
    "benchmark_figures",
    "parse_slo",
    "summarize",
]

# vLLM's metric names, in the order its benchmark prints them.
METRICS = ("ttft", "tpot", "itl", "e2el")
# The JSON key and the column title of each statistic.
STATISTICS = (
    ("mean", "mean"),
    ("median", "median"),
    ("p90", "P90"),
    ("p95", "P95"),
    ("p99", "P99"),
)
SLO_KEYS = ("ttft", "tpot", "e2e")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)\s*$")


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean, median, P90, P95 and P99 of one metric, in seconds."""

    mean: float
    median: float
    p90: float
    p95: float
    p99: float


def summarize(values: Sequence[float]) -> Summary | None:
    """The :class:`Summary` of ``values`` (None when there are none)."""
    if not values:
        return None
    return Summary(
        mean=math.fsum(values) / len(values),
        median=percentile(values, 50),
        p90=percentile(values, 90),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
    )


def benchmark_figures(records: Iterable[RequestRecord]) -> dict[str, Summary | None]:
    """TTFT, TPOT, ITL and E2EL summaries over the successful ``records``, by vLLM's names.

    ITL pools the chunk gaps of every request, as vLLM does; TPOT has one value per request
    with at least two output tokens and a first token before the end.
    """
    good = [r for r in records if r.ok]
    tpots = [r.tpot_s for r in good]
    return {
        "ttft": summarize([r.ttft_s for r in good if r.ttft_s is not None]),
        "tpot": summarize([t for t in tpots if t is not None]),
        "itl": summarize([gap for r in good for gap in r.itl_s]),
        "e2el": summarize([r.latency_s for r in good]),
    }


class SloError(ValueError):
    """An --slo value that cannot be read; the message names the key and what is allowed."""


@dataclass(frozen=True, slots=True)
class Slo:
    """Upper bounds in seconds on TTFT, TPOT and end-to-end latency (None: no bound)."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def met_by(self, record: RequestRecord) -> bool:
        """Whether ``record`` succeeded within every bound. A request without a TPOT (fewer
        than two tokens) passes that bound, as in vLLM, where its TPOT counts as 0."""
        if not record.ok:
            return False
        if self.ttft_s is not None and (record.ttft_s is None or record.ttft_s > self.ttft_s):
            return False
        tpot = record.tpot_s
        if self.tpot_s is not None and tpot is not None and tpot > self.tpot_s:
            return False
        return self.e2e_s is None or record.latency_s <= self.e2e_s

    def __str__(self) -> str:
        bounds = (("ttft", self.ttft_s), ("tpot", self.tpot_s), ("e2e", self.e2e_s))
        return ",".join(f"{key}={_duration(value)}" for key, value in bounds if value is not None)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def parse_slo(text: str) -> Slo:
    """Read ``ttft=500ms,tpot=50ms,e2e=10s``: any of the keys ttft, tpot and e2e, once each,
    with a duration in ``ms`` or ``s``. Raises :class:`SloError` naming the bad part."""
    allowed = f"keys {', '.join(SLO_KEYS)}, each with a duration such as 500ms or 2.5s"
    bounds: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise SloError(f"{part.strip()!r} is not key=duration; allowed: {allowed}")
        if key not in SLO_KEYS:
            raise SloError(f"unknown key {key!r} (in {part.strip()!r}); allowed: {allowed}")
        if key in bounds:
            raise SloError(f"{key} is given twice; allowed: {allowed}")
        match = _DURATION.match(value)
        if match is None:
            raise SloError(
                f"{key}={value.strip()!r} is not a duration; allowed: a number with ms or s, "
                "such as 500ms or 2.5s"
            )
        number, unit = float(match[1]), match[2]
        if number <= 0:
            raise SloError(f"{key}={value.strip()!r} must be above zero")
        bounds[key] = number / 1000 if unit == "ms" else number
    return Slo(ttft_s=bounds.get("ttft"), tpot_s=bounds.get("tpot"), e2e_s=bounds.get("e2e"))
