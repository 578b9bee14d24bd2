"""Monitoring for the fleet: Prometheus config and rules, Alertmanager to Slack, and the edge's
access-log exporter. See docs/observability.md."""
