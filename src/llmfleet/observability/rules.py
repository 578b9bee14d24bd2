"""Prometheus recording and alerting rules for the fleet, generated from the `alerts` config.

Recording rules give every dashboard, `llmfleet top`, the autoscaler and the alerts the same
fleet-level SLIs (latency quantiles, tokens/s, queue, error ratios); alerts compare those to the
configured thresholds. Rule names follow Prometheus' `level:metric:operation` convention:
`fleet:` over every node, `node:` per node, `tier:` per client tier. Every rule keeps the
`stack` label Prometheus gives each target, so one Grafana can show several stacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from llmfleet.config import FleetConfig
from llmfleet.observability.promql import duration

QUANTILES = ("0.5", "0.95", "0.99")


@dataclass(frozen=True)
class AlertSpec:
    """One alert as the docs and tests know it: name, runbook anchor and severity."""

    name: str
    severity: str

    @property
    def anchor(self) -> str:
        # GitHub's anchor for a `## LLMFleetX` heading in docs/runbooks.md.
        return self.name.lower()


ALERTS: tuple[AlertSpec, ...] = (
    AlertSpec("LLMFleetHighP99Latency", "critical"),
    AlertSpec("LLMFleetGPUSaturated", "warning"),
    AlertSpec("LLMFleetHighErrorRate", "critical"),
    AlertSpec("LLMFleetQueueBacklog", "warning"),
    AlertSpec("LLMFleetKVCacheFull", "warning"),
    AlertSpec("LLMFleetNoHealthyBackends", "critical"),
    AlertSpec("LLMFleetTargetDown", "warning"),
    AlertSpec("LLMFleetRedisDown", "critical"),
    AlertSpec("LLMFleetRateLimitSurge", "warning"),
    AlertSpec("LLMFleetEdgeBusy", "warning"),
)
ALERT_NAMES: tuple[str, ...] = tuple(a.name for a in ALERTS)


def recording_rules(config: FleetConfig) -> list[dict[str, Any]]:
    """The SLI recording rules, in evaluation order (later ones read earlier ones)."""
    w = duration(config.alerts.rate_window_s)
    rules: list[dict[str, Any]] = []

    def record(name: str, expr: str, **labels: str) -> None:
        rules.append({"record": name, "expr": expr, **({"labels": labels} if labels else {})})

    for q in QUANTILES:
        record("fleet:e2e_latency_seconds:quantile",
               f"histogram_quantile({q}, sum by (stack, le) "
               f"(rate(vllm:e2e_request_latency_seconds_bucket[{w}])))", quantile=q)
    for q in QUANTILES:
        record("fleet:ttft_seconds:quantile",
               f"histogram_quantile({q}, sum by (stack, le) "
               f"(rate(vllm:time_to_first_token_seconds_bucket[{w}])))", quantile=q)
    record("fleet:generation_tokens:rate",
           f"sum by (stack) (rate(vllm:generation_tokens_total[{w}]))")
    record("fleet:prompt_tokens:rate", f"sum by (stack) (rate(vllm:prompt_tokens_total[{w}]))")
    record("fleet:requests_finished:rate",
           f"sum by (stack, finished_reason) (rate(vllm:request_success_total[{w}]))")
    record("node:requests_waiting:sum", "sum by (stack, node) (vllm:num_requests_waiting)")
    record("node:requests_running:sum", "sum by (stack, node) (vllm:num_requests_running)")
    record("fleet:requests_waiting:sum", "sum by (stack) (node:requests_waiting:sum)")
    record("fleet:requests_waiting:max", "max by (stack) (node:requests_waiting:sum)")
    # The queue per ready node, as the autoscaler judges it: only nodes that answer a scrape
    # count, so a node still loading its model adds nothing to the divisor.
    record("fleet:requests_waiting:avg", "avg by (stack) (node:requests_waiting:sum)")
    record("fleet:requests_running:sum", "sum by (stack) (vllm:num_requests_running)")
    # A node with a queue runs as many requests as it can: its measured concurrency.
    record("fleet:node_concurrency:max",
           "max by (stack) "
           "(node:requests_running:sum and on (node) (node:requests_waiting:sum > 0))")
    record("node:kv_cache_usage:max", "max by (stack, node) (vllm:kv_cache_usage_perc)")
    # A scraped vLLM counts as healthy; `or on () vector(0)` keeps a series when none is left
    # (`on ()`: only then, as vector(0) lacks the `stack` label the sum has).
    record("fleet:healthy_backends:count",
           'sum by (stack) (up{job="vllm"}) or on () vector(0)')
    record("fleet:edge_responses:rate",
           f"sum by (stack, class) (rate(llmfleet_edge_responses_total[{w}]))")
    for status_class in ("4xx", "5xx"):
        record("fleet:edge_errors:ratio",
               f'sum by (stack) (fleet:edge_responses:rate{{class="{status_class}"}}) '
               "/ (sum by (stack) (fleet:edge_responses:rate) > 0)", **{"class": status_class})
    record("fleet:edge_refusals:rate",
           f"sum by (stack, reason) (rate(llmfleet_edge_refusals_total[{w}]))")
    record("fleet:edge_busy:ratio",
           'sum by (stack) (fleet:edge_refusals:rate{reason="busy"}) '
           "/ (sum by (stack) (fleet:edge_responses:rate) > 0)")
    record("tier:gateway_throttled:ratio",
           "sum by (stack, tier) (rate(llmfleet_gateway_requests_total"
           f'{{decision="refused", reason=~"rate_limited|concurrency"}}[{w}])) '
           f"/ (sum by (stack, tier) (rate(llmfleet_gateway_requests_total[{w}])) > 0)")
    record("fleet:gpu_utilisation:avg", "avg by (stack) (DCGM_FI_DEV_GPU_UTIL)")
    # Discovery keeps running instances only, so every GPU node exporter target is a node
    # being paid for, ready or not.
    record("fleet:gpu_nodes:count",
           'count by (stack, lifecycle, instance_type) (up{job="node", role="gpu-node"})')
    # The stack's `prices` (list prices on demand, typical prices on spot): an estimate for
    # the cost panel, not a bill. A type without a price is left out of the sum.
    for lifecycle, prices in (("on-demand", config.prices.on_demand),
                              ("spot", config.prices.spot)):
        for instance_type in sorted({t.type for t in config.fleet.instance_types}):
            if instance_type in prices:
                record("instance_type:hourly_price_dollars:estimate",
                       f"vector({prices[instance_type]:g})",
                       instance_type=instance_type, lifecycle=lifecycle)
    # group_left keeps the node count's `stack`; a one-to-one match would keep only the
    # labels it matches on.
    record("fleet:cost_dollars_per_hour:estimate",
           "sum by (stack) (fleet:gpu_nodes:count * on (instance_type, lifecycle) group_left "
           "instance_type:hourly_price_dollars:estimate)")
    return rules


def alert_rules(config: FleetConfig) -> list[dict[str, Any]]:
    """Every alert in ALERTS, thresholds and `for:` durations from `config.alerts`."""
    a = config.alerts
    specs = {spec.name: spec for spec in ALERTS}

    def alert(name: str, expr: str, rule: Any, summary: str, description: str,
              value: str) -> dict[str, Any]:
        spec = specs[name]
        return {
            "alert": name,
            "expr": expr,
            "for": duration(rule.for_s),
            "labels": {"severity": spec.severity},
            "annotations": {
                "summary": summary,
                "description": description,
                "value": value,
                "runbook_url": f"{a.runbook_base_url}#{spec.anchor}",
            },
        }

    p99 = a.high_p99_latency
    return [
        alert("LLMFleetHighP99Latency",
              f'fleet:e2e_latency_seconds:quantile{{quantile="0.99"}} > {p99.threshold:g}', p99,
              f"P99 request latency is above {p99.threshold:g} s",
              "The slowest 1 % of requests across the fleet take longer than "
              f"{p99.threshold:g} s end to end (over the last {duration(a.rate_window_s)}).",
              "{{ $value | humanizeDuration }}"),
        alert("LLMFleetGPUSaturated", f"DCGM_FI_DEV_GPU_UTIL > {a.gpu_saturated.threshold:g}",
              a.gpu_saturated, "GPU {{ $labels.gpu }} on {{ $labels.node }} is saturated",
              f"GPU utilisation has stayed above {a.gpu_saturated.threshold:g} % for "
              f"{duration(a.gpu_saturated.for_s)}.",
              "{{ $value | humanize }} %"),
        alert("LLMFleetHighErrorRate",
              f'fleet:edge_errors:ratio{{class="5xx"}} > {a.high_error_rate.threshold:g}',
              a.high_error_rate,
              f"More than {a.high_error_rate.threshold * 100:g} % of requests fail with 5xx",
              "The edge answers 5xx to this share of requests: backends failing or "
              "unreachable (502), overloaded (503) or too slow (504).",
              "{{ $value | humanizePercentage }}"),
        alert("LLMFleetQueueBacklog",
              f"fleet:requests_waiting:max > {a.queue_backlog.threshold:g}", a.queue_backlog,
              "Requests are queueing on a node",
              f"A node has had more than {a.queue_backlog.threshold:g} requests waiting for "
              f"{duration(a.queue_backlog.for_s)}: the fleet is not scaling out fast enough.",
              "{{ $value | humanize }} waiting"),
        alert("LLMFleetKVCacheFull",
              f"node:kv_cache_usage:max > {a.kv_cache_full.threshold:g}", a.kv_cache_full,
              "KV cache on {{ $labels.node }} is nearly full",
              f"KV-cache usage has stayed above {a.kv_cache_full.threshold * 100:g} % for "
              f"{duration(a.kv_cache_full.for_s)}; requests get preempted and recomputed.",
              "{{ $value | humanizePercentage }}"),
        alert("LLMFleetNoHealthyBackends",
              "fleet:healthy_backends:count == 0 and on () "
              '(count(up{job="vllm"}) > 0 or sum(fleet:edge_responses:rate) > 0)',
              a.no_healthy_backends, "No model server is answering",
              "No vLLM node answers its metrics endpoint while nodes exist or requests "
              "arrive: the edge can only answer 502.",
              "{{ $value }} healthy"),
        alert("LLMFleetTargetDown", "up == 0", a.target_down,
              "{{ $labels.job }} target {{ $labels.instance }} is down",
              "Prometheus cannot scrape {{ $labels.job }} at {{ $labels.instance }}"
              "{{ if $labels.node }} ({{ $labels.node }}){{ end }}.",
              "down"),
        alert("LLMFleetRedisDown", "llmfleet_gateway_redis_up == 0 or redis_up == 0",
              a.redis_down, "Redis is unreachable",
              "Rate limiting cannot reach Redis: tiers that fail closed get 503, tiers that fail "
              "open are limited per gateway in memory only.",
              "down"),
        alert("LLMFleetRateLimitSurge",
              f"tier:gateway_throttled:ratio > {a.rate_limit_surge.threshold:g}",
              a.rate_limit_surge, "Tier {{ $labels.tier }} is being rate limited heavily",
              f"More than {a.rate_limit_surge.threshold * 100:g} % of the tier's requests have "
              f"got 429 for {duration(a.rate_limit_surge.for_s)}.",
              "{{ $value | humanizePercentage }}"),
        alert("LLMFleetEdgeBusy", f"fleet:edge_busy:ratio > {a.edge_busy.threshold:g}",
              a.edge_busy, "The edge is turning requests away: every model server is full",
              f"More than {a.edge_busy.threshold * 100:g} % of requests have got 429 busy for "
              f"{duration(a.edge_busy.for_s)}: every node holds "
              "load_balancing.max_requests_per_node. Scale out, or raise the fleet's maximum.",
              "{{ $value | humanizePercentage }}"),
    ]


def render_rules(config: FleetConfig) -> str:
    """The rules file Prometheus loads (and `promtool check rules` checks)."""
    interval = duration(config.alerts.evaluation_interval_s)
    groups = [
        {"name": "llmfleet-slis", "interval": interval, "rules": recording_rules(config)},
        {"name": "llmfleet-alerts", "interval": interval, "rules": alert_rules(config)},
    ]
    header = (f"# Prometheus rules for {config.stack_name}, generated by "
              "llmfleet.observability.rules from the `alerts` config. Do not edit.\n")
    return header + yaml.safe_dump({"groups": groups}, sort_keys=False, width=10_000)


def recorded_names(config: FleetConfig) -> set[str]:
    """Names the recording rules create (series dashboards may query)."""
    return {rule["record"] for rule in recording_rules(config)}
