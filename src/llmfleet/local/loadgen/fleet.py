"""The fleet's own view of a load run: queue and ready backends over the run, from Prometheus."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yarl import URL

from llmfleet.local.sandbox import default_state_dir, load_state, status
from llmfleet.observability.prometheus_api import PrometheusError, query_range

__all__ = [
    "QUEUE_QUERY",
    "READY_QUERY",
    "FleetQueryError",
    "FleetSeries",
    "query_fleet",
    "sandbox_prometheus",
]

# The raw series rather than the recording rules (fleet:requests_waiting:sum, ...): they
# answer on any Prometheus that scrapes vLLM, with or without llmfleet's rules loaded.
QUEUE_QUERY = "sum(vllm:num_requests_waiting)"
# `or vector(0)`: with no backend up, count() has no series at all, and the plot should show 0.
READY_QUERY = 'count(up{job="vllm"} == 1) or vector(0)'

Points = list[tuple[float, float]]


class FleetQueryError(RuntimeError):
    """Prometheus could not be queried, or answered something that is not a range result."""


@dataclass(frozen=True)
class FleetSeries:
    """Requests waiting in the fleet's queues and backends ready, as (seconds since the start
    of the load run, value) points."""

    prometheus: str
    queue: Points
    ready: Points


def query_fleet(
    prometheus: str, start: float, end: float, step_s: float, timeout_s: float = 5.0
) -> FleetSeries:
    """Range queries over Unix times ``start..end``; raises :class:`FleetQueryError`."""
    return FleetSeries(
        prometheus=prometheus,
        queue=_range(prometheus, QUEUE_QUERY, start, end, step_s, timeout_s),
        ready=_range(prometheus, READY_QUERY, start, end, step_s, timeout_s),
    )


def _range(
    prometheus: str, expr: str, start: float, end: float, step_s: float, timeout_s: float
) -> Points:
    try:
        result = query_range(prometheus, expr, start, end, step_s, timeout_s=timeout_s)
        values = [pair for series in result for pair in series["values"]]
        return sorted((float(t) - start, float(v)) for t, v in values)
    except PrometheusError as error:
        raise FleetQueryError(str(error)) from None
    except (KeyError, TypeError, ValueError):
        raise FleetQueryError(
            f"Prometheus at {prometheus} gave no range result for {expr!r}"
        ) from None


def sandbox_endpoint(state_dir: Path | None) -> str | None:
    """The running sandbox's endpoint (as ``llmfleet status`` finds it), or None."""
    sandbox = status(state_dir or default_state_dir())
    return sandbox.endpoint if sandbox.running else None


def sandbox_ca_file(target: str, state_dir: Path | None) -> str | None:
    """The sandbox's CA (``up --tls``), if ``target`` is that sandbox's edge. From its records
    alone: whether it runs, the connection tells, without probing every process again."""
    state = load_state((state_dir or default_state_dir()).resolve())
    if state is None or not state.ca_file or not Path(state.ca_file).is_file():
        return None
    return state.ca_file if _authority(target) == _authority(state.endpoint) else None


def sandbox_prometheus(target: str, state_dir: Path | None) -> str | None:
    """The running sandbox's Prometheus, if ``target`` is that sandbox's edge or a backend."""
    sandbox = status(state_dir or default_state_dir())
    ours = {_authority(u) for u in (sandbox.endpoint, *(b.url for b in sandbox.backends)) if u}
    return sandbox.prometheus_url if _authority(target) in ours else None


def _authority(url: str) -> tuple[str, int | None]:
    parsed = URL(url)
    return (parsed.host or "", parsed.port)
