"""The load report's timeline, its text summary, and the --plot picture."""

from __future__ import annotations

import argparse
import contextlib
import json
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from test_loadgen_runner import FakeVLLM, serve

from llmfleet.local.loadgen import (
    LoadReport,
    LoadSpec,
    OpenLoop,
    RateSegment,
    RequestRecord,
    build_report,
    build_timeline,
    run_load_sync,
)
from llmfleet.local.loadgen.cli import add_arguments, run
from llmfleet.local.loadgen.fleet import QUEUE_QUERY, READY_QUERY, FleetSeries
from llmfleet.local.loadgen.plot import PlotUnavailable, require_matplotlib, write_plot
from llmfleet.local.loadgen.timeline import bucket_size

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def record(
    index: int, start: float, latency: float, status: int | str = 200, ttft: float | None = 0.1,
    backend: str = "a:1",
) -> RequestRecord:
    return RequestRecord(
        index=index, start_s=start, status=status, latency_s=latency, ttft_s=ttft,
        output_tokens=3, prompt_tokens=4, max_tokens=3, backend=backend,
    )


def make_report(records: list[RequestRecord], **extra: object) -> LoadReport:
    values: dict[str, object] = {
        "wall_time_s": 6.0, "planned_requests": len(records), "url": "http://x:1",
        "model": "m", "endpoint": "chat", "stream": True, "concurrency": 2, "seed": 0,
        "output_tokens_dist": "fixed:3", "prompt_tokens_dist": "fixed:4",
    }
    values.update(extra)
    return build_report(records, **values)  # type: ignore[arg-type]


RECORDS = [
    record(0, 0.2, 0.5),  # 0.2 → 0.7
    record(1, 0.5, 2.0, ttft=0.3, backend="b:2"),  # 0.5 → 2.5, over three buckets
    record(2, 1.1, 0.4, status=503, ttft=None),  # 1.1 → 1.5, an error
    record(3, 1.5, 1.0),  # 1.5 → 2.5
    record(4, 4.0, 1.9, status="timeout", ttft=None),  # 4.0 → 5.9
]
DROPS = [1.2, 1.3, 4.5]


def test_buckets_add_up_to_the_totals() -> None:
    report = make_report(RECORDS, dropped_s=DROPS, planned_requests=8)
    buckets = report.timeline
    assert report.bucket_s == 1.0 and len(buckets) == 6
    assert [b.start_s for b in buckets] == [0, 1, 2, 3, 4, 5]
    assert sum(b.started for b in buckets) == report.total_requests == 5
    assert sum(b.ok for b in buckets) == report.ok == 3
    assert sum(b.errors for b in buckets) == report.errors == 2
    assert sum(b.dropped for b in buckets) == report.dropped == 3
    # Mean in flight × bucket length adds up to the time every request spent in flight.
    busy = sum(b.in_flight for b in buckets) * report.bucket_s
    assert busy == pytest.approx(sum(r.latency_s for r in RECORDS))


def test_each_bucket_counts_starts_finishes_and_in_flight() -> None:
    buckets = make_report(RECORDS, dropped_s=DROPS).timeline
    assert [b.started for b in buckets] == [2, 2, 0, 0, 1, 0]
    assert [b.ok for b in buckets] == [1, 0, 2, 0, 0, 0]
    assert [b.errors for b in buckets] == [0, 1, 0, 0, 0, 1]
    assert [b.dropped for b in buckets] == [0, 2, 0, 0, 1, 0]
    assert [b.in_flight for b in buckets] == pytest.approx([1.0, 1.9, 1.0, 0.0, 1.0, 0.9])
    # Successful requests only, by the backend that served them.
    assert [b.ok_by_backend for b in buckets] == [
        {"a:1": 1}, {}, {"a:1": 1, "b:2": 1}, {}, {}, {}]


def test_bucket_percentiles_cover_successful_requests_finishing_in_the_bucket() -> None:
    buckets = make_report(RECORDS).timeline
    assert (buckets[0].latency_p50_s, buckets[0].ttft_p99_s) == (0.5, 0.1)
    assert buckets[1].latency_p50_s is None  # only the 503 finished there
    assert buckets[2].latency_p50_s == pytest.approx(1.5)  # 2.0 and 1.0
    assert buckets[2].latency_p99_s == pytest.approx(1.99)
    assert buckets[2].ttft_p50_s == pytest.approx(0.2)
    assert buckets[5].latency_p99_s is None  # the timeout is not a latency


def test_target_rate_is_the_planned_rate_averaged_over_each_bucket() -> None:
    rate = [RateSegment(0.0, 1.5, 10.0), RateSegment(1.5, 3.0, 30.0)]
    buckets = build_timeline(RECORDS[:2], [], 1.0, rate=rate, span_s=3.0)
    assert [b.target_rps for b in buckets] == pytest.approx([10.0, 20.0, 30.0])
    assert all(b.target_rps is None for b in make_report(RECORDS).timeline)


@pytest.mark.parametrize(
    ("span", "size"), [(0.0, 1.0), (600.0, 1.0), (601.0, 2.0), (3600.0, 10.0), (7200.0, 15.0)]
)
def test_buckets_grow_for_long_runs(span: float, size: float) -> None:
    assert bucket_size(span) == size


def test_the_timeline_covers_the_whole_run_even_when_quiet() -> None:
    buckets = make_report([record(0, 0.0, 0.5)], wall_time_s=3.5).timeline
    assert len(buckets) == 4 and buckets[-1].started == 0


def test_bad_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="bucket_s must be a finite number of seconds > 0"):
        build_timeline(RECORDS, [], 0.0)


def open_loop(rate: list[RateSegment] | None = None, scale: float = 1.0) -> OpenLoop:
    return OpenLoop(arrival="poisson", request_rate=None, profile="surge", time_scale=scale,
                    max_in_flight=50, rate=rate or [RateSegment(0.0, 6.0, 2.0)],
                    start_lag_max_s=0.001)


def test_json_report_holds_the_timeline_and_open_loop_settings() -> None:
    report = make_report(RECORDS, dropped_s=DROPS, open_loop=open_loop(), concurrency=None,
                         started_at=1_700_000_000.0, duration_s=6.0)
    data = json.loads(json.dumps(report.to_dict()))
    assert len(data["timeline"]) == 6 and data["bucket_s"] == 1.0
    assert data["timeline"][1] == {
        "start_s": 1.0, "started": 2, "dropped": 2, "ok": 0, "errors": 1,
        "in_flight": pytest.approx(1.9), "latency_p50_s": None, "latency_p99_s": None,
        "ttft_p50_s": None, "ttft_p99_s": None, "target_rps": 2.0, "ok_by_backend": {},
    }
    assert data["timeline"][2]["ok_by_backend"] == {"a:1": 1, "b:2": 1}
    assert data["open_loop"]["profile"] == "surge" and data["open_loop"]["max_in_flight"] == 50
    assert data["open_loop"]["rate"] == [{"start_s": 0.0, "end_s": 6.0, "rps": 2.0}]
    assert (data["dropped"], data["interrupted"], data["concurrency"]) == (3, False, None)
    assert "dropped_s" not in data and "records" not in data
    assert report.to_dict(include_records=True)["dropped_s"] == DROPS


def test_text_summarises_the_timeline_in_a_few_rows() -> None:
    report = make_report(RECORDS, dropped_s=DROPS, open_loop=open_loop(), concurrency=None)
    text = report.render_text()
    assert "timeline   6 buckets of 1 s in --json; by 1 s:" in text
    header = next(line for line in text.splitlines() if line.lstrip().startswith("from s"))
    assert header.split() == ["from", "s", "started/s", "target/s", "in", "flight", "ok",
                              "errors", "dropped", "p50", "ms", "p99", "ms"]
    rows = text.splitlines()[text.splitlines().index(header) + 1:]
    assert [row.split()[0] for row in rows] == ["0", "1", "2", "3", "4", "5"]
    assert rows[1].split()[:7] == ["1", "2.0", "2.0", "1.9", "0", "1", "2"]
    long = make_report([record(0, 0.0, 100.0)], wall_time_s=100.0)
    assert "by 10 s:" in long.render_text()


# -- a real run -------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeVLLM]]:
    with contextlib.ExitStack() as stack:
        yield lambda mode="ok", **kwargs: stack.enter_context(serve(FakeVLLM(mode, **kwargs)))


def test_a_run_s_timeline_adds_up(fake: Callable[..., FakeVLLM]) -> None:
    server = fake(token_delay_s=0.001)
    report = run_load_sync(LoadSpec(
        url=server.url, model="fake-model", request_rate=200, duration_s=0.2, requests=None,
        output_tokens="fixed:3", prompt_tokens="fixed:4", timeout_s=10.0))
    assert report.ok == report.planned_requests > 0
    assert sum(b.started for b in report.timeline) == report.total_requests
    assert sum(b.ok for b in report.timeline) == report.ok
    assert report.started_at is not None


# -- the picture ------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, data[:8]
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_plot_writes_a_png(tmp_path: Path) -> None:
    report = make_report(RECORDS, dropped_s=DROPS, open_loop=open_loop(scale=0.1),
                         concurrency=None)
    path = tmp_path / "run.png"
    write_plot(report, path)
    width, height = png_size(path)
    assert width >= 800 and height >= 800
    assert path.stat().st_size > 20_000


def test_plot_adds_a_fleet_panel_from_prometheus(tmp_path: Path) -> None:
    report = make_report(RECORDS)
    fleet = FleetSeries("http://prom:9090", queue=[(0.0, 0.0), (3.0, 12.0), (6.0, 1.0)],
                        ready=[(0.0, 2.0), (3.0, 3.0), (6.0, 4.0)])
    without, with_fleet = tmp_path / "a.png", tmp_path / "b.png"
    write_plot(report, without)
    write_plot(report, with_fleet, fleet)
    assert png_size(with_fleet)[1] > png_size(without)[1]


def test_without_matplotlib_plot_fails_with_one_line_saying_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: Callable[..., FakeVLLM],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(PlotUnavailable, match=r"pip install -e '\.\[plot\]'"):
        require_matplotlib()
    server = fake()
    assert run(cli_args("--url", server.url, "-n", "2", "--plot", str(tmp_path / "x.png"))) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "llmfleet load: --plot needs matplotlib, which is not installed; install it with "
        "pip install -e '.[plot]'"
    ]
    assert server.bodies == []  # refused before sending anything
    assert not (tmp_path / "x.png").exists()


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmfleet load")
    add_arguments(parser)
    return parser.parse_args(list(argv))


class FakePrometheus:
    """Answers /api/v1/query_range with a short matrix and remembers every query."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.queries.append({"path": url.path, **params})
                start = float(params["start"])
                values = [[start + i, str(i)] for i in range(3)]
                body = json.dumps({"status": "success", "data": {
                    "resultType": "matrix", "result": [{"metric": {}, "values": values}]}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_cli_plot_reads_the_fleet_from_prometheus_over_the_run(
    tmp_path: Path, fake: Callable[..., FakeVLLM], capsys: pytest.CaptureFixture[str],
) -> None:
    server = fake()
    prometheus = FakePrometheus()
    picture = tmp_path / "surge.png"
    try:
        status = run(cli_args("--url", server.url, "--request-rate", "100", "-n", "5", "--json",
                              "--plot", str(picture), "--prometheus", prometheus.url))
    finally:
        prometheus.close()
    assert status == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert f"llmfleet load: wrote {picture}" in captured.err
    assert png_size(picture)[1] > 0
    assert [q["query"] for q in prometheus.queries] == [QUEUE_QUERY, READY_QUERY]
    for query in prometheus.queries:
        assert query["path"] == "/api/v1/query_range"
        assert float(query["start"]) == report["started_at"]
        assert float(query["end"]) == pytest.approx(report["started_at"] + report["wall_time_s"])
        assert float(query["step"]) == report["bucket_s"]


def test_cli_plot_without_a_reachable_prometheus_still_writes_the_picture(
    tmp_path: Path, fake: Callable[..., FakeVLLM], capsys: pytest.CaptureFixture[str],
) -> None:
    server = fake()
    prometheus = FakePrometheus()
    prometheus.close()  # nothing listens there any more
    picture = tmp_path / "run.png"
    assert run(cli_args("--url", server.url, "-n", "3", "--plot", str(picture),
                        "--prometheus", prometheus.url)) == 0
    err = capsys.readouterr().err
    assert f"the picture has no fleet panel: cannot query Prometheus at {prometheus.url}" in err
    assert png_size(picture)[0] > 0


def test_without_a_sandbox_the_picture_has_no_fleet_panel(
    tmp_path: Path, fake: Callable[..., FakeVLLM], capsys: pytest.CaptureFixture[str],
) -> None:
    server = fake()
    picture = tmp_path / "run.png"
    state = tmp_path / "no-sandbox"
    assert run(cli_args("--url", server.url, "-n", "3", "--plot", str(picture),
                        "--state-dir", str(state))) == 0
    assert "fleet panel" not in capsys.readouterr().err
    assert png_size(picture)[0] > 0
