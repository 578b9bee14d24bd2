"""Responses the edge sent, by status class, read from nginx's JSON access log (`/metrics`).

Open-source nginx's stub_status counts connections only, and the backends' metrics cannot see
what nginx answers itself (502 with no backend left, 504, 413) nor what the gateway refused
(401, 429). The access log has every response the clients got, so this exporter counts it:
`llmfleet_edge_responses_total{class="2xx"|"4xx"|"5xx"|...}`, and the refusals nginx answers
itself by design, by reason (`llmfleet_edge_refusals_total{reason="busy"}`: every node was
full). It reads the new lines on each scrape and follows the file across truncation and
rotation.

    python -m llmfleet.observability.edge_exporter --access-log /var/log/nginx/access.log \
        --host 127.0.0.1 --port PORT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

RESPONSES = "llmfleet_edge_responses_total"
REFUSALS = "llmfleet_edge_refusals_total"
UNPARSED = "llmfleet_edge_log_lines_unparsed_total"
METRIC_NAMES: tuple[str, ...] = (RESPONSES, REFUSALS, UNPARSED)
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Why nginx refused a request by design (the access log's "refusal" field).
REASONS = ("busy",)
# The text format 0.0.4, what prometheus_client's own handlers answer a scraper that asks for
# no particular format (CONTENT_TYPE_LATEST says version=1.0.0 from prometheus_client 0.23 on).
_, CONTENT_TYPE = choose_encoder("")


class LogTail:
    """New complete lines of a file that may be truncated, rotated or not exist yet."""

    def __init__(self, path: Path, *, from_end: bool = True):
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""
        if from_end:
            # Counters start at 0 with the process: history before it would be a false spike.
            try:
                stat = path.stat()
                self._inode, self._offset = stat.st_ino, stat.st_size
            except FileNotFoundError:
                pass

    def read_lines(self) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            self._inode, self._offset, self._partial = stat.st_ino, 0, b""
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as log:
            log.seek(self._offset)
            data = log.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines if line.strip()]


class EdgeCounts:
    """Responses by status class; every class is exported from the start, at 0."""

    def __init__(self) -> None:
        self.responses = dict.fromkeys(CLASSES, 0)
        self.refusals = dict.fromkeys(REASONS, 0)
        self.unparsed = 0

    def add(self, line: str) -> None:
        try:
            entry = json.loads(line)
            status = int(entry["status"])
        except (ValueError, KeyError, TypeError):
            self.unparsed += 1
            return
        # A request retried onto the busy server logs every upstream's answer: "x, busy".
        for reason in str(entry.get("refusal", "")).replace(",", " ").split():
            if reason in self.refusals:
                self.refusals[reason] += 1
        status_class = f"{status // 100}xx"
        if status_class in self.responses:
            self.responses[status_class] += 1
        else:
            self.unparsed += 1


class EdgeExporter(Collector):
    """The tail and the counts behind one /metrics endpoint; each scrape reads the new lines."""

    def __init__(self, access_log: Path):
        self.tail = LogTail(access_log)
        self.counts = EdgeCounts()
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            for line in self.tail.read_lines():
                self.counts.add(line)
            responses = CounterMetricFamily(
                RESPONSES, "Responses the edge sent to clients, by status class.",
                labels=["class"])
            for status_class, count in self.counts.responses.items():
                responses.add_metric([status_class], count)
            refusals = CounterMetricFamily(
                REFUSALS, "Requests the edge refused by design, by reason (busy: every node "
                "held load_balancing.max_requests_per_node).", labels=["reason"])
            for reason, count in self.counts.refusals.items():
                refusals.add_metric([reason], count)
            unparsed = CounterMetricFamily(
                UNPARSED, "Access-log lines without a readable status.", self.counts.unparsed)
        yield responses
        yield refusals
        yield unparsed

    def scrape(self) -> bytes:
        """The /metrics body: the counts after reading the log's new lines."""
        return generate_latest(self.registry)


def make_server(exporter: EdgeExporter, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, exporter.scrape(), CONTENT_TYPE)
            elif self.path == "/health":
                self._answer(200, b"ok\n", "text/plain")
            else:
                self._answer(404, b"not found\n", "text/plain")

        def _answer(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds would drown the log

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmfleet.observability.edge_exporter",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--access-log", type=Path, required=True,
                        help="nginx access log in llmfleet's JSON format")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = make_server(EdgeExporter(args.access_log), args.host, args.port)
    print(f"edge exporter on http://{args.host}:{server.server_port}/metrics reading "
          f"{args.access_log} pid={os.getpid()}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
