"""Alerts to Slack through the real Alertmanager (and, end to end, the real Prometheus watching
a sandbox whose backend is slowed down), received by a fake Slack webhook on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import pytest

from llmfleet.config import validate
from llmfleet.local.sandbox.health import answers
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import launch, stop, wait_until
from llmfleet.observability.alertmanager import render_alertmanager_config
from llmfleet.observability.prometheus import tool_binary

pytestmark = pytest.mark.integration


class FakeSlack:
    """An incoming-webhook receiver: keeps every JSON payload posted to it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append({"path": self.path, **json.loads(self.rfile.read(length))})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/fake"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout_s: float,
                 after: int = 0) -> dict[str, Any]:
        """The first message from index `after` on that matches; fails at the deadline."""
        def found() -> dict[str, Any] | None:
            return next((m for m in self.messages[after:] if match(m)), None)

        if not wait_until(lambda: found() is not None, timeout_s):
            pytest.fail(f"no matching Slack message in {timeout_s} s; got {self.messages}")
        return found()  # type: ignore[return-value]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def attachment(message: dict[str, Any]) -> dict[str, Any]:
    return message["attachments"][0]


def titled(prefix: str, alertname: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: attachment(m)["title"].startswith(f"[{prefix}") and alertname in \
        attachment(m)["title"]


@pytest.fixture
def slack(tmp_path: Path) -> Iterator[tuple[FakeSlack, Path]]:
    fake = FakeSlack()
    webhook_file = tmp_path / "slack-webhook"
    webhook_file.write_text(fake.url + "\n")
    yield fake, webhook_file
    fake.close()


@pytest.fixture
def alertmanager(tmp_path: Path, slack) -> Iterator[str]:
    _, webhook_file = slack
    config = validate({"alerts": {"slack_webhook_file": str(webhook_file),
                                  "slack_channel": "#llmfleet-test",
                                  "group_wait_s": 0, "group_interval_s": 1}}, "test")
    conf = tmp_path / "alertmanager.yml"
    conf.write_text(render_alertmanager_config(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    record = launch("alertmanager", "alertmanager", [
        tool_binary("prometheus-alertmanager", "alertmanager"), f"--config.file={conf}",
        f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ], tmp_path / "alertmanager.log", url, url + "/-/ready")
    try:
        assert wait_until(lambda: answers(url + "/-/ready"), 15), \
            (tmp_path / "alertmanager.log").read_text()
        yield url
    finally:
        stop(record)


def post_alerts(alertmanager_url: str, alerts: list[dict[str, Any]]) -> None:
    request = Request(alertmanager_url + "/api/v2/alerts", json.dumps(alerts).encode(),
                      {"Content-Type": "application/json"})
    with urlopen(request, timeout=5) as response:
        assert response.status == 200


def an_alert(name: str, severity: str, *, ends: datetime | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": name, "severity": severity, "stack": "acme-prod"},
        "annotations": {
            "summary": "P99 request latency is above 30 s",
            "description": "The slowest 1 % of requests take longer than 30 s.",
            "value": "41.2s",
            "runbook_url": f"docs/runbooks.md#{name.lower()}",
        },
        "startsAt": (now - timedelta(seconds=30)).isoformat(),
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return alert


def test_slack_gets_the_summary_value_and_runbook_then_the_resolution(alertmanager, slack):
    fake, _ = slack
    post_alerts(alertmanager, [an_alert("LLMFleetHighP99Latency", "critical")])
    firing = fake.wait_for(titled("FIRING", "LLMFleetHighP99Latency"), 15)
    assert firing["path"] == "/services/T0/B0/fake"  # the URL came from the file
    assert firing["channel"] == "#llmfleet-test"
    card = attachment(firing)
    assert card["title"] == "[FIRING:1] LLMFleetHighP99Latency (acme-prod)"
    assert card["color"] == "danger"
    assert "*P99 request latency is above 30 s* (value 41.2s)" in card["text"]
    assert "Severity: critical" in card["text"]
    assert "Runbook: docs/runbooks.md#llmfleethighp99latency" in card["text"]

    seen = len(fake.messages)
    post_alerts(alertmanager, [an_alert("LLMFleetHighP99Latency", "critical",
                                        ends=datetime.now(UTC))])
    resolved = attachment(fake.wait_for(titled("RESOLVED", "LLMFleetHighP99Latency"), 15,
                                        after=seen))
    assert resolved["title"] == "[RESOLVED] LLMFleetHighP99Latency (acme-prod)"
    assert resolved["color"] == "good"
    assert "(resolved, last value 41.2s)" in resolved["text"]


def test_no_healthy_backends_inhibits_the_latency_alert(alertmanager, slack):
    fake, _ = slack
    post_alerts(alertmanager, [an_alert("LLMFleetNoHealthyBackends", "critical")])
    fake.wait_for(titled("FIRING", "LLMFleetNoHealthyBackends"), 15)
    post_alerts(alertmanager, [an_alert("LLMFleetNoHealthyBackends", "critical"),
                               an_alert("LLMFleetHighP99Latency", "critical")])

    def latency_alert() -> dict[str, Any] | None:
        with urlopen(alertmanager + "/api/v2/alerts?" + urlencode(
                {"filter": 'alertname="LLMFleetHighP99Latency"'}), timeout=5) as response:
            found = json.load(response)
        return found[0] if found else None

    assert wait_until(lambda: latency_alert() is not None, 10)
    status = latency_alert()["status"]  # type: ignore[index]
    assert status["state"] == "suppressed" and status["inhibitedBy"]
    assert not any("LLMFleetHighP99Latency" in attachment(m)["title"] for m in fake.messages)


class Traffic:
    """Clients sending small chat requests in a loop until stopped."""

    def __init__(self, endpoint: str, clients: int) -> None:
        self.endpoint = endpoint
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True)
                        for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self) -> None:
        body = json.dumps({"model": "m", "max_tokens": 8,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        while not self.stopping.is_set():
            request = Request(self.endpoint + "/v1/chat/completions", body,
                              {"Content-Type": "application/json"})
            with urlopen(request, timeout=30) as response:
                response.read()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)


def fault(backend_url: str, **mode: Any) -> None:
    request = Request(backend_url + "/_sim/fault", json.dumps(mode).encode(),
                      {"Content-Type": "application/json"})
    with urlopen(request, timeout=5) as response:
        assert response.status == 200


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    with urlopen(f"{prometheus}/api/v1/query?{urlencode({'query': expr})}",
                 timeout=5) as response:
        return json.load(response)["data"]["result"]


def test_a_slow_backend_pages_slack_through_prometheus_and_alertmanager_then_resolves(
        start_sandbox, slack):
    fake, webhook_file = slack
    report = start_sandbox(
        # The gateway is not under test here: no API keys needed.
        sandbox={"backends": 1, "time_scale": 0.1, "auth": False},
        model={"served_name": "m"},
        alerts={"slack_webhook_file": str(webhook_file), "scrape_interval_s": 1,
                "evaluation_interval_s": 1, "rate_window_s": 4,
                "high_p99_latency": {"threshold": 1, "for_s": 2},
                "group_wait_s": 0, "group_interval_s": 1},
    )
    assert report["prometheus"]["healthy"] and report["alertmanager"]["healthy"]
    assert "alert-sink" not in report  # Slack is configured: no local sink
    prometheus = report["prometheus"]["url"]
    traffic = Traffic(report["endpoint"], clients=4)
    try:
        # Healthy first: scraped, fast, and no alert.
        assert wait_until(lambda: query(
            prometheus, 'fleet:e2e_latency_seconds:quantile{quantile="0.99"} < 1'), 20)
        assert fake.messages == []

        fault(report["backends"][0]["url"], mode="slow", factor=100)
        firing = attachment(fake.wait_for(titled("FIRING", "LLMFleetHighP99Latency"), 25))
        assert firing["title"] == "[FIRING:1] LLMFleetHighP99Latency (demo-sandbox)"
        assert "*P99 request latency is above 1 s* (value " in firing["text"]
        assert "Runbook: docs/runbooks.md#llmfleethighp99latency" in firing["text"]

        seen = len(fake.messages)
        fault(report["backends"][0]["url"], mode="none")
        resolved = attachment(fake.wait_for(titled("RESOLVED", "LLMFleetHighP99Latency"), 25,
                                            after=seen))
        assert resolved["color"] == "good"
    finally:
        traffic.stop()
