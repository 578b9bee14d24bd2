"""The gateway's Prometheus metrics (names shared with the alert rules and dashboards)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# Prometheus does not need the *_created series; they only lengthen every scrape.
disable_created_metrics()


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llmfleet_gateway_requests", "Edge requests decided, by tier, decision and reason.",
            ["tier", "decision", "reason"], registry=self.registry)
        self.redis_up = Gauge(
            "llmfleet_gateway_redis_up", "1 when the gateway's last Redis call succeeded.",
            registry=self.registry)
        self.redis_errors = Counter(
            "llmfleet_gateway_redis_errors", "Redis calls that failed or timed out.",
            registry=self.registry)
        self.keys = Gauge(
            "llmfleet_gateway_keys", "Key records held in memory, revoked ones included.",
            registry=self.registry)
        self.fail_open = Counter(
            "llmfleet_gateway_fail_open", "Requests decided in memory while Redis was down.",
            ["tier"], registry=self.registry)
        self.decision_seconds = Histogram(
            "llmfleet_gateway_decision_seconds", "Time to decide one request.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=self.registry)
        self.queue_waiting = Gauge(
            "llmfleet_gateway_queue_waiting",
            "Requests waiting at the edge for a place on the fleet (every node full).",
            registry=self.registry)
        self.queue_wait_seconds = Histogram(
            "llmfleet_gateway_queue_wait_seconds",
            "Time an admitted request waited for a place on the fleet (0 when there was room).",
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
            registry=self.registry)
        self.queue_refused = Counter(
            "llmfleet_gateway_queue_refused",
            "Requests answered busy: no place on the fleet within the queue's depth and time.",
            registry=self.registry)
        self.redis_up.set(1)
