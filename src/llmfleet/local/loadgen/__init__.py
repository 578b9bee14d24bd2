"""Load generator: sends OpenAI-compatible traffic and reports latency, TTFT and throughput.

Typical use::

    from llmfleet.local.loadgen import LoadSpec, run_load_sync

    report = run_load_sync(LoadSpec(url="http://127.0.0.1:8080", requests=200, concurrency=20))
    print(report.render_text())
"""

from .progress import ProgressCallback, ProgressSnapshot, StderrProgress
from .report import LoadReport, RequestRecord, build_report, percentile
from .runner import UPSTREAM_HEADER, LoadSpec, LoadTargetError, run_load, run_load_sync
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
    "ProgressCallback",
    "ProgressSnapshot",
    "RequestPlan",
    "RequestRecord",
    "StderrProgress",
    "UniformDistribution",
    "build_report",
    "generate_plans",
    "parse_distribution",
    "percentile",
    "run_load",
    "run_load_sync",
]
