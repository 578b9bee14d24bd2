"""Load generator: sends OpenAI-compatible traffic and reports latency, TTFT and throughput.

Typical use::

    from llmfleet.local.loadgen import LoadSpec, run_load_sync

    report = run_load_sync(LoadSpec(url="http://127.0.0.1:8080", requests=200, concurrency=20))
    print(report.render_text())
"""

from .arrivals import RateSegment, arrival_times
from .benchmark import Slo, SloError, Summary, parse_slo
from .progress import ProgressCallback, ProgressSnapshot, StderrProgress
from .records import RequestRecord, percentile
from .report import LoadReport, OpenLoop, build_report
from .runner import UPSTREAM_HEADER, LoadSpec, LoadTargetError, run_load, run_load_sync
from .timeline import TimelineBucket, build_timeline
from .workload import (
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    Distribution,
    FixedDistribution,
    HeavyDistribution,
    RequestPlan,
    UniformDistribution,
    generate_plans,
    parse_distribution,
)

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_PROMPT_TOKENS",
    "UPSTREAM_HEADER",
    "Distribution",
    "FixedDistribution",
    "HeavyDistribution",
    "LoadReport",
    "LoadSpec",
    "LoadTargetError",
    "OpenLoop",
    "ProgressCallback",
    "ProgressSnapshot",
    "RateSegment",
    "RequestPlan",
    "RequestRecord",
    "Slo",
    "SloError",
    "StderrProgress",
    "Summary",
    "TimelineBucket",
    "UniformDistribution",
    "arrival_times",
    "build_report",
    "build_timeline",
    "generate_plans",
    "parse_distribution",
    "parse_slo",
    "percentile",
    "run_load",
    "run_load_sync",
]
