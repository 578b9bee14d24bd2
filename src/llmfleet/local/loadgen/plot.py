"""A picture of a load run over time (``llmfleet load --plot FILE.png``), with matplotlib.

matplotlib is the optional ``plot`` extra; without it :func:`require_matplotlib` raises
:class:`PlotUnavailable` with the command that installs it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from .fleet import FleetSeries
from .report import LoadReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["INSTALL_HINT", "PlotUnavailable", "require_matplotlib", "write_plot"]

INSTALL_HINT = "pip install -e '.[plot]'"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            f"--plot needs matplotlib, which is not installed; install it with {INSTALL_HINT}"
        ) from None


def write_plot(report: LoadReport, path: Path, fleet: FleetSeries | None = None) -> None:
    """Draw ``report``'s timeline (and ``fleet``'s queue and ready backends) as a PNG."""
    require_matplotlib()
    # The object API with the Agg canvas: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    buckets = report.timeline
    size = report.bucket_s
    # Each bucket's values are drawn at its middle.
    t = [b.start_s + size / 2 for b in buckets]
    panels = 6 if fleet else 5
    figure = Figure(figsize=(11, 2.4 * panels + 1), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True)
    figure.suptitle(_title(report), fontsize=11)

    rates = axes[0]
    rates.plot(t, [b.started / size for b in buckets], label="started")
    rates.plot(t, [b.ok / size for b in buckets], label="completed ok")
    if report.open_loop is not None:
        edges = [s.start_s for s in report.open_loop.rate]
        values = [s.rps for s in report.open_loop.rate]
        if edges:
            edges.append(report.open_loop.rate[-1].end_s)
            values.append(values[-1])
            rates.step(edges, values, where="post", linestyle="--", color="grey", label="planned")
    _finish(rates, "requests/s")

    served = axes[1]
    backends = sorted({name for b in buckets for name in b.ok_by_backend})
    for name in backends:
        served.plot(t, [b.ok_by_backend.get(name, 0) / size for b in buckets], label=name)
    _finish(served, "ok/s per backend")

    flight = axes[2]
    label = "in flight (mean)"
    if report.open_loop is not None:
        label += f"; arrivals over {report.open_loop.max_in_flight} are dropped"
    flight.plot(t, [b.in_flight for b in buckets], color="tab:purple", label=label)
    _finish(flight, "requests")

    latency = axes[3]
    for field, label, style in (
        ("latency_p50_s", "latency P50", "-"),
        ("latency_p99_s", "latency P99", "-"),
        ("ttft_p50_s", "TTFT P50", ":"),
        ("ttft_p99_s", "TTFT P99", ":"),
    ):
        values = [getattr(b, field) for b in buckets]
        # Markers: a bucket between two empty ones has no line to be part of.
        latency.plot(t, [math.nan if v is None else v for v in values], style, label=label,
                     marker=".", markersize=3)
    _finish(latency, "seconds")

    errors = axes[4]
    errors.bar(t, [b.errors for b in buckets], width=size, color="tab:red", label="errors")
    if report.dropped:
        errors.bar(t, [b.dropped for b in buckets], width=size, bottom=[b.errors for b in buckets],
                   color="tab:orange", label="dropped (client)")
    _finish(errors, f"per {size:g} s")
    # Without errors the axis would run from 0 to 0.05; whole requests read better.
    errors.set_ylim(top=max(1, *(b.errors + b.dropped for b in buckets)) * 1.1)
    errors.yaxis.set_major_locator(MaxNLocator(integer=True))

    if fleet:
        queue = axes[5]
        queue.plot(*_unzip(fleet.queue), color="tab:brown", label="requests waiting")
        queue.set_ylabel("waiting")
        ready = queue.twinx()
        ready.step(*_unzip(fleet.ready), where="post", color="tab:green", label="ready backends")
        ready.set_ylabel("ready backends")
        ready.set_ylim(bottom=0)
        ready.yaxis.set_major_locator(MaxNLocator(integer=True))
        handles = queue.get_legend_handles_labels()[0] + ready.get_legend_handles_labels()[0]
        queue.legend(handles=handles, loc="upper left", fontsize=8)
        queue.set_ylim(bottom=0)
        queue.grid(alpha=0.3)
        queue.set_title(f"fleet, from {fleet.prometheus}", fontsize=9, loc="left")

    bottom = axes[-1]
    bottom.set_xlabel("seconds since the start of the run")
    bottom.set_xlim(0, max(report.wall_time_s, size))
    if report.open_loop is not None and report.open_loop.time_scale != 1.0:
        scale = report.open_loop.time_scale
        trace = axes[0].secondary_xaxis(
            "top", functions=(lambda x: x / scale, lambda x: x * scale)
        )
        trace.set_xlabel(f"trace seconds (time scale {scale:g})", fontsize=8)
    figure.savefig(path, format="png", dpi=100)


def _finish(axes: Axes, ylabel: str) -> None:
    axes.set_ylabel(ylabel)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)


def _unzip(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


def _title(report: LoadReport) -> str:
    shape = report.shape
    state = "  (interrupted: partial)" if report.interrupted else ""
    return (
        f"llmfleet load → {report.url}: {shape}\n"
        f"{report.ok}/{report.planned_requests} ok, {report.errors} failed, "
        f"{report.dropped} dropped in {report.wall_time_s:.1f} s{state}"
    )
