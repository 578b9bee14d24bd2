"""Shared pieces of the benchmarks: a sandbox for the length of a run, and the ratio table.

Every benchmark measures its baseline in the same run as the thing it compares, and prints
each figure with its ratio to that baseline.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmfleet.config import validate
from llmfleet.local.loadgen import LoadReport, build_report
from llmfleet.local.sandbox import down, up
from llmfleet.local.sandbox.ports import free_port


@contextlib.contextmanager
def sandbox(**sections: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A sandbox on free loopback ports, stopped when the block ends (also on errors).

    Without API keys or monitoring unless asked (`sandbox={"auth": True}`): most benchmarks
    measure nginx and the backends alone; bench/gateway.py measures what keys and limits add."""
    data = {k: dict(v) for k, v in sections.items()}
    box = data.setdefault("sandbox", {})
    box.setdefault("auth", False)
    box.setdefault("monitoring", False)  # a scraping Prometheus would share the two cores
    for key in ("edge_port", "base_port", "redis_port", "gateway_port"):
        box.setdefault(key, free_port())
    with tempfile.TemporaryDirectory(prefix="llmfleet-bench-") as state:
        try:
            yield up(validate(data, "bench"), Path(state), edge_port_explicit=True).to_json()
        finally:
            down(Path(state))


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:9.2f}"


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "     -"
    return f"{value / baseline:6.3f}"


def compare(title: str, baseline_name: str, baseline: LoadReport, other_name: str,
            other: LoadReport) -> str:
    """A table of latency and TTFT medians and P99s: baseline, other, other - baseline, ratio."""
    rows = [
        ("latency p50", baseline.latency_p50_s, other.latency_p50_s),
        ("latency p99", baseline.latency_p99_s, other.latency_p99_s),
        ("ttft p50", baseline.ttft_p50_s, other.ttft_p50_s),
        ("ttft p99", baseline.ttft_p99_s, other.ttft_p99_s),
    ]
    lines = [
        title,
        f"  {'ms':<12} {baseline_name:>9} {other_name:>9} {'added':>9} {'ratio':>6}",
    ]
    for name, base, value in rows:
        added = None if base is None or value is None else value - base
        lines.append(f"  {name:<12} {ms(base)} {ms(value)} {ms(added)} {ratio(value, base)}")
    lines.append(
        f"  {'ok / total':<12} {baseline.ok:>5}/{baseline.total_requests:<3} "
        f"{other.ok:>5}/{other.total_requests:<3}"
    )
    return "\n".join(lines)


def pooled(reports: list[LoadReport]) -> LoadReport:
    """One report over the records of repeated runs of the same workload."""
    first = reports[0]
    return build_report(
        [record for report in reports for record in report.records],
        wall_time_s=sum(r.wall_time_s for r in reports),
        planned_requests=sum(r.planned_requests for r in reports),
        url=first.url, model=first.model, endpoint=first.endpoint, stream=first.stream,
        concurrency=first.concurrency, seed=first.seed,
        output_tokens_dist=first.output_tokens_dist, prompt_tokens_dist=first.prompt_tokens_dist,
    )
