"""The edge's access-log exporter, the sandbox's alert sink and `llmfleet top`'s frame."""

import argparse
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from urllib.request import Request, urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.local import alert_sink, top
from llmfleet.observability.edge_exporter import EdgeExporter, LogTail, make_server


def line(status: int, refusal: str = "") -> str:
    return json.dumps({"time": "t", "method": "POST", "uri": "/v1/chat/completions",
                       "status": status, "refusal": refusal}) + "\n"


def counts(text: str) -> dict[str, float]:
    """Responses by class, refusals by reason, and the unparsed lines by their series name."""
    return {s.labels.get("class", s.labels.get("reason", s.name)): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_responses_are_counted_by_class_from_zero(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(line(200) * 5)  # before the exporter started: not counted
    exporter = EdgeExporter(log)
    assert counts(exporter.scrape().decode()) == {
        "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "busy": 0,
        "llmfleet_edge_log_lines_unparsed_total": 0}
    with log.open("a") as out:
        out.write(line(200) + line(429) + line(502) + line(504) + "not json\n")
        # Refused as busy, once straight away and once after a node failed first.
        out.write(line(503, "busy") + line(503, ", busy") + line(503))
    found = counts(exporter.scrape().decode())
    assert (found["2xx"], found["4xx"], found["5xx"]) == (1, 1, 5)
    assert found["busy"] == 2  # a 503 for any other reason is no busy refusal
    assert found["llmfleet_edge_log_lines_unparsed_total"] == 1


def test_the_tail_keeps_half_written_lines_and_follows_truncation_and_rotation(tmp_path):
    log = tmp_path / "access.log"
    tail = LogTail(log)
    assert tail.read_lines() == []  # no file yet
    log.write_text('{"status": 2')
    assert tail.read_lines() == []
    with log.open("a") as out:
        out.write('00}\n{"status": 5')
    assert tail.read_lines() == ['{"status": 200}']
    log.write_text('{"status": 404}\n')  # truncated and rewritten (copytruncate)
    assert tail.read_lines() == ['{"status": 404}']
    log.rename(tmp_path / "access.log.1")  # rotated: a new file under the old name
    log.write_text('{"status": 301}\n')
    assert tail.read_lines() == ['{"status": 301}']


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, EdgeExporter]]:
    exporter = EdgeExporter(tmp_path / "access.log")
    server = make_server(exporter, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", exporter
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_exporter_serves_its_counters_and_health(served):
    url, exporter = served
    with urlopen(url + "/metrics", timeout=5) as response:
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    responses = families["llmfleet_edge_responses"]
    assert (responses.type, responses.documentation) == (
        "counter", "Responses the edge sent to clients, by status class.")
    assert [(s.name, s.labels, s.value) for s in responses.samples] == [
        ("llmfleet_edge_responses_total", {"class": c}, 0.0)
        for c in ("1xx", "2xx", "3xx", "4xx", "5xx")]
    unparsed = families["llmfleet_edge_log_lines_unparsed"]
    assert (unparsed.type, unparsed.documentation) == (
        "counter", "Access-log lines without a readable status.")
    assert [(s.name, s.labels) for s in unparsed.samples] == [
        ("llmfleet_edge_log_lines_unparsed_total", {})]
    assert set(families) == {"llmfleet_edge_responses", "llmfleet_edge_refusals",
                             "llmfleet_edge_log_lines_unparsed"}

    exporter.tail.path.write_text(line(503))
    with urlopen(url + "/metrics", timeout=5) as response:
        assert counts(response.read().decode())["5xx"] == 1
    with urlopen(url + "/health", timeout=5) as response:
        assert response.status == 200


def test_the_alert_sink_prints_one_line_per_alert(capsys):
    server = alert_sink.make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        alert = {"status": "firing", "labels": {"alertname": "LLMFleetHighP99Latency",
                                                "severity": "critical", "stack": "demo-sandbox"},
                 "annotations": {"summary": "P99 request latency is above 30 s",
                                 "value": "41s", "runbook_url": "docs/runbooks.md#x"}}
        body = json.dumps({"status": "firing", "alerts": [alert, {**alert,
                                                                  "status": "resolved"}]})
        request = Request(f"http://127.0.0.1:{server.server_port}/alerts", body.encode(),
                          {"Content-Type": "application/json"})
        with urlopen(request, timeout=5) as response:
            assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    first, second = capsys.readouterr().out.splitlines()
    assert "ALERT FIRING LLMFleetHighP99Latency severity=critical stack=demo-sandbox" in first
    assert "P99 request latency is above 30 s (value 41s) runbook=docs/runbooks.md#x" in first
    assert "ALERT RESOLVED LLMFleetHighP99Latency" in second


# Instant-query answers of the fake Prometheus below.
CANNED: dict[str, list[tuple[dict, str]]] = {
    "fleet:generation_tokens:rate": [({}, "1234.5")],
    "sum(fleet:requests_finished:rate)": [({}, "12")],
    "fleet:e2e_latency_seconds:quantile": [({"quantile": "0.5"}, "1.2"),
                                           ({"quantile": "0.95"}, "2.5"),
                                           ({"quantile": "0.99"}, "NaN")],
    "fleet:requests_waiting:sum": [({}, "7")],
    "fleet:edge_errors:ratio": [({"class": "4xx"}, "0.02"), ({"class": "5xx"}, "0")],
    "fleet:healthy_backends:count": [({}, "1")],
    'count(up{job="vllm"})': [({}, "2")],
    'ALERTS{alertstate="firing"}': [({"alertname": "LLMFleetQueueBacklog",
                                      "severity": "warning"}, "1")],
}


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers instant queries from a canned table."""

    def do_GET(self) -> None:
        expr = parse_qs(urlsplit(self.path).query)["query"][0]
        result = [{"metric": m, "value": [0, v]} for m, v in CANNED.get(expr, [])]
        body = json.dumps({"status": "success", "data": {"resultType": "vector",
                                                         "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_top_once_shows_the_key_numbers_and_dashes_for_no_data(capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    parser = argparse.ArgumentParser()
    top.add_arguments(parser)
    try:
        code = top.run(parser.parse_args(
            ["--once", "--prometheus", f"http://127.0.0.1:{server.server_port}"]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    out = capsys.readouterr().out
    assert code == 0
    assert "1234.5 tokens/s generated" in out and "12.0 requests/s" in out
    assert "P50 1.20 s   P95 2.50 s   P99 -" in out
    assert "7 waiting" in out and "4xx 2.0 %   5xx 0.0 %" in out
    assert "1 of 2 healthy" in out
    assert "LLMFleetQueueBacklog (warning)" in out


def test_top_without_a_prometheus_says_how_to_get_one(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    top.add_arguments(parser)
    assert top.run(parser.parse_args(["--once", "--state-dir", str(tmp_path)])) == 1
    assert "llmfleet up" in capsys.readouterr().err
