"""Monitoring for the fleet: Prometheus config and rules, Alertmanager to Slack, Grafana
dashboards as code, the edge's access-log exporter, the sandbox's alert sink and `llmfleet top`.
See docs/observability.md."""
