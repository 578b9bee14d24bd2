"""`llmfleet top`: the dashboards' key numbers in a terminal, for people without Grafana.

It reads the recording rules from the sandbox's Prometheus (or any Prometheus given with
`--prometheus`) and redraws every `--interval` seconds; `--once` prints one frame and exits.
For a sandbox it also shows each backend's state and, with `up --autoscale`, the autoscaler's
last decision.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from llmfleet.local.sandbox import SandboxStatus, default_state_dir, status
from llmfleet.observability.prometheus_api import PrometheusError, query

EXIT_OK, EXIT_FAILED = 0, 1
CLEAR = "\x1b[H\x1b[2J"

Series = list[tuple[dict[str, str], float]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", metavar="URL",
                        help="Prometheus to read (default: the running sandbox's)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the sandbox's state folder (default: as `llmfleet status`)")
    parser.add_argument("--interval", type=_interval, default=2.0,
                        help="seconds between redraws: 0.2-3600 (default 2)")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")


def run(args: argparse.Namespace) -> int:
    url = args.prometheus or _sandbox_prometheus(args.state_dir)
    if url is None:
        print("llmfleet top: no Prometheus; start the sandbox (llmfleet up) or pass "
              "--prometheus URL", file=sys.stderr)
        return EXIT_FAILED
    client = Prometheus(url)
    # A Prometheus named by URL may belong to no sandbox here: then there is no fleet to show.
    sandbox_dir = args.state_dir or (None if args.prometheus else default_state_dir())

    def draw() -> str:
        sandbox = status(sandbox_dir) if sandbox_dir else None
        return render(read_frame(client), url, sandbox if sandbox and sandbox.running else None)

    try:
        if args.once:
            print(draw())
            return EXIT_OK
        while True:
            print(CLEAR + draw(), flush=True)
            time.sleep(args.interval)  # pacing the redraw, not waiting for anything
    except PrometheusError as error:
        print(f"llmfleet top: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


@dataclass(frozen=True)
class Prometheus:
    url: str
    timeout_s: float = 5.0

    def query(self, expr: str) -> Series:
        """An instant query's result as (labels, value) pairs."""
        return [(item["metric"], float(item["value"][1]))
                for item in query(self.url, expr, timeout_s=self.timeout_s)]


@dataclass(frozen=True)
class Frame:
    """One reading of the key panels."""

    tokens_per_s: float | None
    requests_per_s: float | None
    latency: dict[str, float]  # quantile → seconds
    ttft_p95: float | None
    waiting: float | None
    waiting_max: float | None
    running: float | None
    error_ratio: dict[str, float]  # "4xx"/"5xx" → fraction
    edge_rps: float | None
    healthy: float | None
    backends: float | None
    firing: list[str]


def read_frame(client: Prometheus) -> Frame:
    def one(expr: str) -> float | None:
        result = client.query(expr)
        return result[0][1] if result else None

    def by(expr: str, label: str) -> dict[str, float]:
        return {labels.get(label, ""): value for labels, value in client.query(expr)}

    alerts = client.query('ALERTS{alertstate="firing"}')
    return Frame(
        tokens_per_s=one("fleet:generation_tokens:rate"),
        requests_per_s=one("sum(fleet:requests_finished:rate)"),
        latency=by("fleet:e2e_latency_seconds:quantile", "quantile"),
        ttft_p95=one('fleet:ttft_seconds:quantile{quantile="0.95"}'),
        waiting=one("fleet:requests_waiting:sum"),
        waiting_max=one("fleet:requests_waiting:max"),
        running=one("fleet:requests_running:sum"),
        error_ratio=by("fleet:edge_errors:ratio", "class"),
        edge_rps=one("sum(fleet:edge_responses:rate)"),
        healthy=one("fleet:healthy_backends:count"),
        backends=one('count(up{job="vllm"})'),
        firing=sorted(f"{labels.get('alertname')} ({labels.get('severity', '-')})"
                      for labels, _ in alerts),
    )


def render(frame: Frame, url: str, sandbox: SandboxStatus | None = None) -> str:
    """The frame as a few aligned lines, and the sandbox's backends and autoscaler."""
    p = frame.latency
    lines = [
        f"llmfleet top   {url}   {datetime.now():%H:%M:%S}",
        "",
        f"Throughput  {_num(frame.tokens_per_s)} tokens/s generated   "
        f"{_num(frame.requests_per_s)} requests/s finished",
        f"Latency     P50 {_secs(p.get('0.5'))}   P95 {_secs(p.get('0.95'))}   "
        f"P99 {_secs(p.get('0.99'))}   TTFT P95 {_secs(frame.ttft_p95)}",
        f"Queue       {_num(frame.waiting, 0)} waiting (max per node "
        f"{_num(frame.waiting_max, 0)})   {_num(frame.running, 0)} running",
        f"Errors      4xx {_pct(frame.error_ratio.get('4xx'))}   "
        f"5xx {_pct(frame.error_ratio.get('5xx'))}   of {_num(frame.edge_rps)} responses/s",
        f"Backends    {_num(frame.healthy, 0)} of {_num(frame.backends, 0)} healthy",
        f"Alerts      {', '.join(frame.firing) if frame.firing else 'none firing'}",
    ]
    if sandbox is not None:
        states = ", ".join(f"{b.name} {b.state.value}" for b in sandbox.backends)
        lines.append(f"Fleet       {states or 'no backends'}")
        if sandbox.autoscaler is not None:
            lines.append(f"Autoscaler  {sandbox.autoscaler.summary()}")
    return "\n".join(lines)


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if _missing(value) else f"{value:.{digits}f}"


def _secs(value: float | None) -> str:
    return "-" if _missing(value) else f"{value:.2f} s"


def _pct(value: float | None) -> str:
    return "-" if _missing(value) else f"{value * 100:.1f} %"


def _sandbox_prometheus(state_dir: Path | None) -> str | None:
    return status(state_dir or default_state_dir()).prometheus_url


def _interval(text: str) -> float:
    """--interval as seconds, or argparse's usage error naming what is allowed."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{value:g} s is out of range; allowed: 0.2 to 3600")
    return value
