"""Every dashboard panel the sandbox can feed returns data from a real Prometheus scraping the
sandbox under load, with the dashboard's `stack` variable set to the sandbox's stack (so every
series and recording rule a panel reads carries that label); `llmfleet top` shows the same
numbers; the sandbox's monitoring shows up in `status` and its alerts reach the local sink.
Panels that need AWS, a GPU or the gateway are checked against grafana/exporter-metrics.yaml
instead (tests/unit)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import pytest

from llmfleet.local import top
from llmfleet.local.dashboards import DASHBOARDS, for_prometheus
from llmfleet.local.loadgen import LoadSpec, run_load_sync
from llmfleet.local.sandbox import SandboxError
from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration

SANDBOX_PANELS = [(d.uid, p) for d in DASHBOARDS for p in d.panels if p.needs is None]


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    with urlopen(f"{prometheus}/api/v1/query?{urlencode({'query': expr})}",
                 timeout=5) as response:
        return json.load(response)["data"]["result"]


def has_numbers(prometheus: str, expr: str) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in query(prometheus, expr))


@pytest.fixture
def loaded_sandbox(start_sandbox) -> dict[str, Any]:
    report = start_sandbox(
        # The gateway's panels are checked against the fixture: no API keys needed here.
        sandbox={"time_scale": 0.1, "auth": False},
        alerts={"scrape_interval_s": 1, "evaluation_interval_s": 1, "rate_window_s": 20},
    )
    prometheus = report["prometheus"]["url"]
    # Prometheus hands targets to its scrapers a few seconds after start: wait for them.
    assert wait_until(lambda: has_numbers(prometheus, 'count(up{job="vllm"} == 1) == 2'), 20)
    load = run_load_sync(LoadSpec(url=report["endpoint"], requests=150, concurrency=16,
                                  max_duration_s=30))
    assert load.all_ok
    return report


def test_every_sandbox_panel_returns_data_and_top_shows_it(loaded_sandbox, capsys):
    prometheus = loaded_sandbox["prometheus"]["url"]
    stack = loaded_sandbox["stack"]
    # Grafana fills $__rate_interval; 10 s spans several of the test's 1 s scrapes. Model and
    # node stay at All (.*).
    queries = [(uid, panel.title, for_prometheus(q.expr, "10s", stack=stack))
               for uid, panel in SANDBOX_PANELS for q in panel.queries]
    assert len(queries) >= 30
    assert all('stack=~".*"' not in expr for _, _, expr in queries)
    # The variables' own queries list the sandbox's stack, its model and its two backends.
    assert {r["metric"]["stack"] for r in query(prometheus, "up")} == {stack}
    nodes = {r["metric"].get("node") for r in query(prometheus, f'up{{stack="{stack}"}}')}
    assert len(nodes - {None}) >= 2

    def empty() -> list[str]:
        return [f"{uid}: {title}: {expr}" for uid, title, expr in queries
                if not has_numbers(prometheus, expr)]

    assert wait_until(lambda: not empty(), 15, interval_s=0.5), "no data:\n" + "\n".join(empty())
    assert has_numbers(prometheus, 'sum(fleet:edge_responses:rate{class="2xx"}) > 0')

    parser = argparse.ArgumentParser()
    top.add_arguments(parser)
    state_dir = Path(loaded_sandbox["state_dir"])
    assert top.run(parser.parse_args(["--once", "--state-dir", str(state_dir)])) == 0
    out = capsys.readouterr().out
    assert "tokens/s generated" in out and "2 of 2 healthy" in out
    assert "P99 -" not in out and "4xx 0.0 %" in out


def test_status_lists_prometheus_alertmanager_and_the_sink_that_logs_alerts(start_sandbox):
    report = start_sandbox(sandbox={"auth": False}, alerts={"group_wait_s": 0})
    for kind in ("prometheus", "alertmanager", "alert-sink", "edge-exporter"):
        assert report[kind]["healthy"], kind
        assert report[kind]["url"].startswith("http://127.0.0.1:")
    # An alert posted to this Alertmanager is written to the sink's log.
    alert = [{"labels": {"alertname": "LLMFleetTargetDown", "severity": "warning",
                         "job": "edge"},
              "annotations": {"summary": "edge target is down", "value": "down"}}]
    request = Request(report["alertmanager"]["url"] + "/api/v2/alerts",
                      json.dumps(alert).encode(), {"Content-Type": "application/json"})
    with urlopen(request, timeout=5) as response:
        assert response.status == 200
    log = Path(report["alert-sink"]["log"])
    assert wait_until(lambda: "ALERT FIRING LLMFleetTargetDown" in log.read_text(), 15)


def test_a_missing_slack_webhook_file_fails_up_clearly_and_leaves_nothing(start_sandbox,
                                                                          tmp_path):
    missing = tmp_path / "no-such-webhook"
    with pytest.raises(SandboxError, match=r"slack_webhook_file .* does not exist"):
        start_sandbox("webhook", sandbox={"auth": False},
                      alerts={"slack_webhook_file": str(missing)})
    assert not (tmp_path / "webhook" / "state.json").exists()
