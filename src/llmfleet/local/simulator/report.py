"""A simulation's result: the figures a policy is judged by, as JSON and as a short summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScaleEvent:
    """A decision that changed a group's desired size."""

    t_s: float
    spot: int
    on_demand: int
    reason: str


@dataclass(frozen=True)
class Moment:
    """The fleet at one decision: nodes by state and the requests on them."""

    t_s: float
    ready: int
    booting: int
    draining: int
    waiting: int
    running: int


@dataclass(frozen=True)
class SimulationResult:
    trace: str
    policy: str
    seed: int
    preset: str
    duration_s: float  # the trace's
    simulated_s: float  # until the last request was answered or given up
    requests: int
    served: int
    failed: dict[str, int]
    retried: int  # served after a spot node took their first attempt down
    slo_attainment: float  # share of all requests served within both SLOs
    ttft_attainment: float  # share of all requests whose first token came within its SLO
    p50_latency_s: float | None
    p99_latency_s: float | None
    p99_ttft_s: float | None
    spot_gpu_hours: float
    on_demand_gpu_hours: float
    cost_usd: float
    peak_nodes: int
    spot_interruptions: int
    scale_log: tuple[ScaleEvent, ...]
    timeline: tuple[Moment, ...]

    @property
    def gpu_hours(self) -> float:
        return self.spot_gpu_hours + self.on_demand_gpu_hours

    @property
    def scale_events(self) -> int:
        return len(self.scale_log)

    def to_json(self, timeline: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "trace": self.trace,
            "policy": self.policy,
            "seed": self.seed,
            "preset": self.preset,
            "duration_s": self.duration_s,
            "simulated_s": round(self.simulated_s, 1),
            "requests": self.requests,
            "served": self.served,
            "failed": dict(self.failed),
            "retried": self.retried,
            "slo_attainment": round(self.slo_attainment, 5),
            "ttft_attainment": round(self.ttft_attainment, 5),
            "p50_latency_s": _round(self.p50_latency_s),
            "p99_latency_s": _round(self.p99_latency_s),
            "p99_ttft_s": _round(self.p99_ttft_s),
            "gpu_hours": round(self.gpu_hours, 3),
            "spot_gpu_hours": round(self.spot_gpu_hours, 3),
            "on_demand_gpu_hours": round(self.on_demand_gpu_hours, 3),
            "cost_usd": round(self.cost_usd, 3),
            "peak_nodes": self.peak_nodes,
            "spot_interruptions": self.spot_interruptions,
            "scale_events": self.scale_events,
            "scale_log": [{"t_s": round(e.t_s, 1), "spot": e.spot, "on_demand": e.on_demand,
                           "reason": e.reason} for e in self.scale_log],
        }
        if timeline:
            data["timeline"] = [vars(moment) for moment in self.timeline]
        return data

    def render_text(self) -> str:
        failed = sum(self.failed.values())
        lines = [
            f"{self.trace} with {self.policy} ({self.preset} nodes, seed {self.seed}): "
            f"{clock(self.duration_s)} of traffic, {self.requests:,} requests",
            f"  within SLO   {self.slo_attainment:8.2%}  (first token <= 2 s and "
            "end to end <= 30 s)",
            f"  first token  {self.ttft_attainment:8.2%}  within 2 s (the misses a queue makes)",
            f"  latency      P50 {_s(self.p50_latency_s)}  P99 {_s(self.p99_latency_s)}  "
            f"(served requests); first token P99 {_s(self.p99_ttft_s)}",
            f"  served       {self.served:,}; failed {failed:,}"
            + "".join(f"; {count:,} {why}" for why, count in self.failed.items())
            + (f"; {self.retried:,} retried after a spot interruption" if self.retried else ""),
            f"  GPU hours    {self.gpu_hours:8.2f}  (spot {self.spot_gpu_hours:.2f}, "
            f"on-demand {self.on_demand_gpu_hours:.2f})",
            f"  cost         USD {self.cost_usd:.2f}",
            f"  nodes        peak {self.peak_nodes}; {self.scale_events} scale events; "
            f"{self.spot_interruptions} spot interruptions",
        ]
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def clock(seconds: float) -> str:
    """h:mm:ss"""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
