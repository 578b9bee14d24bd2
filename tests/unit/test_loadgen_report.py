"""Percentiles, report aggregation and the progress line of the load generator."""

from __future__ import annotations

import io
import json

import pytest

from llmfleet.local.loadgen import (
    ProgressSnapshot,
    RequestRecord,
    StderrProgress,
    build_report,
    percentile,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([4, 1, 3, 2], 50, 2.5),  # unsorted input; interpolates between the middle two
        ([1, 2, 3, 4], 0, 1),
        ([1, 2, 3, 4], 100, 4),
        ([1, 2, 3, 4], 25, 1.75),
        ([1, 2, 3, 4, 5], 50, 3),
        ([10, 20], 90, 19),
        ([7], 99, 7),
        (list(range(1, 101)), 99, 99.01),
    ],
)
def test_percentile_linear_interpolation(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_rejects_q_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1, 2], q)


def test_percentile_rejects_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)


def record(
    index: int,
    status: int | str = 200,
    latency: float = 1.0,
    ttft: float | None = 0.1,
    tokens: int = 10,
    backend: str = "a:1",
) -> RequestRecord:
    return RequestRecord(
        index=index,
        start_s=0.0,
        status=status,
        latency_s=latency,
        ttft_s=ttft,
        output_tokens=tokens,
        prompt_tokens=5,
        max_tokens=10,
        backend=backend,
    )


def make_report(records: list[RequestRecord], planned: int, wall: float = 2.0):
    return build_report(
        records,
        wall_time_s=wall,
        planned_requests=planned,
        url="http://x:1",
        model="m",
        endpoint="chat",
        stream=True,
        concurrency=2,
        seed=0,
        output_tokens_dist="fixed:10",
        prompt_tokens_dist="fixed:5",
    )


def test_report_aggregates_statuses_backends_and_ok_only_percentiles() -> None:
    records = [
        record(3, latency=3.0, ttft=0.3, backend="b:2"),
        record(0, latency=1.0, ttft=0.1),
        record(1, latency=2.0, ttft=0.2, backend="b:2"),
        record(2, status=503, latency=50.0, ttft=None, tokens=0),
        record(4, status="stream_broken", latency=40.0, ttft=0.05, tokens=4, backend="b:2"),
        record(5, status="timeout", latency=60.0, ttft=None, tokens=0),
        record(6, status=503, latency=0.01, ttft=None, tokens=0, backend="c:3"),
    ]
    report = make_report(records, planned=8, wall=2.0)

    assert [r.index for r in report.records] == list(range(7))
    assert (report.total_requests, report.ok, report.errors) == (7, 3, 4)
    assert not report.all_ok
    assert report.errors_by_status == {"503": 2, "stream_broken": 1, "timeout": 1}
    assert report.requests_by_backend == {"a:1": 3, "b:2": 3, "c:3": 1}
    assert report.broken_streams == 1
    # Failed requests (50 s, 60 s, ...) must not leak into the latency statistics.
    assert report.latency_p50_s == pytest.approx(2.0)
    assert report.latency_p99_s == pytest.approx(2.98)
    assert report.latency_mean_s == pytest.approx(2.0)
    assert report.ttft_p50_s == pytest.approx(0.2)
    assert report.output_tokens_total == 34
    assert report.output_tokens_per_s == pytest.approx(17.0)
    assert report.requests_per_s == pytest.approx(3.5)
    assert report.ok_requests_per_s == pytest.approx(1.5)

    data = json.loads(json.dumps(report.to_dict()))
    assert "records" not in data
    assert data["errors_by_status"] == {"503": 2, "stream_broken": 1, "timeout": 1}
    assert data["errors"] == 4
    full = report.to_dict(include_records=True)
    assert [r["status"] for r in full["records"]][:3] == [200, 200, 503]

    text = report.render_text()
    assert "3 ok, 4 failed" in text
    assert "503: 2" in text and "b:2: 3" in text
    assert "1 streams ended without [DONE]" in text


def test_report_of_only_failures_has_no_percentiles() -> None:
    report = make_report([record(0, status="connect_error", ttft=None)], planned=1)
    assert report.latency_p50_s is None and report.ttft_p99_s is None
    assert report.latency_mean_s is None
    assert "E2EL               -         -         -         -         -" in report.render_text()
    json.dumps(report.to_dict())


def test_all_ok_needs_every_planned_request() -> None:
    assert make_report([record(0), record(1)], planned=2).all_ok
    assert not make_report([record(0)], planned=2).all_ok


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def snap(done: int, finished: bool = False) -> ProgressSnapshot:
    return ProgressSnapshot(
        done=done, total=10, ok=done, errors=0, in_flight=1, elapsed_s=2.0, finished=finished
    )


def test_progress_on_a_tty_rewrites_one_line() -> None:
    stream = FakeTTY()
    progress = StderrProgress(stream, tty_interval_s=0.0)
    progress(snap(9))
    progress(snap(10, finished=True))
    out = stream.getvalue()
    assert out.startswith("\rload: 9/10 done, 0 errors")
    assert out.count("\r") == 2 and out.endswith("\n") and out.count("\n") == 1
    assert "5.0 req/s" in out


def test_progress_in_a_log_prints_throttled_lines_and_the_final_one() -> None:
    stream = io.StringIO()
    progress = StderrProgress(stream, log_interval_s=3600)
    for done in range(1, 10):
        progress(snap(done))
    progress(snap(10, finished=True))
    lines = stream.getvalue().splitlines()
    assert lines == [f"load: {snap(1).describe()}", f"load: {snap(10).describe()}"]
    assert "\r" not in stream.getvalue()
