"""vLLM's benchmark figures, goodput against an SLO, and the --slo and --save-records flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from llmfleet.local.loadgen import RequestRecord, build_report
from llmfleet.local.loadgen.benchmark import Slo, SloError, parse_slo
from llmfleet.local.loadgen.cli import add_arguments
from llmfleet.local.loadgen.records import write_records


def rec(
    index: int,
    ttft: float | None,
    latency: float,
    tokens: int,
    itl: list[float] | None = None,
    status: int | str = 200,
) -> RequestRecord:
    return RequestRecord(
        index=index,
        start_s=index * 0.5,
        status=status,
        latency_s=latency,
        ttft_s=ttft,
        output_tokens=tokens,
        prompt_tokens=7,
        max_tokens=32,
        backend="127.0.0.1:8001",
        itl_s=itl or [],
    )


# TTFT 0.1..0.5 s; TPOT (latency - ttft) / (tokens - 1) = 0.1, 0.2, 0.3, 0.4 s and none for
# the one-token answer; ITL pooled over requests; the 503 counts in none of them.
KNOWN = [
    rec(0, 0.1, 1.1, 11, [0.01, 0.03]),
    rec(1, 0.2, 2.2, 11, [0.02]),
    rec(2, 0.3, 3.3, 11),
    rec(3, 0.4, 4.4, 11),
    rec(4, 0.5, 1.5, 1),
    rec(5, None, 100.0, 0, [9.0], status=503),
]


def report_of(records: list[RequestRecord], slo: Slo | None = None):
    return build_report(
        records,
        wall_time_s=2.0,
        planned_requests=len(records),
        url="http://127.0.0.1:1",
        model="m",
        endpoint="chat",
        stream=True,
        concurrency=2,
        seed=0,
        output_tokens_dist="fixed:11",
        prompt_tokens_dist="fixed:7",
        slo=slo,
    )


def test_the_json_report_has_vllms_figures_exactly() -> None:
    data = json.loads(json.dumps(report_of(KNOWN).to_dict()))
    expected = {
        "ttft": (300.0, 300.0, 460.0, 480.0, 496.0),
        "tpot": (250.0, 250.0, 370.0, 385.0, 397.0),
        "itl": (20.0, 20.0, 28.0, 29.0, 29.8),
        "e2el": (2500.0, 2200.0, 3960.0, 4180.0, 4356.0),
    }
    for metric, values in expected.items():
        got = tuple(data[f"{s}_{metric}_ms"] for s in ("mean", "median", "p90", "p95", "p99"))
        assert got == pytest.approx(values), metric
    assert data["slo"] is None and data["good"] is None and data["request_goodput"] is None


def test_the_text_report_shows_every_figure_in_ms() -> None:
    text = report_of(KNOWN).render_text()
    assert "ms              mean    median       P90       P95       P99" in text
    assert "TTFT           300.0     300.0     460.0     480.0     496.0" in text
    assert "TPOT           250.0     250.0     370.0     385.0     397.0" in text
    assert "ITL             20.0      20.0      28.0      29.0      29.8" in text
    assert "E2EL          2500.0    2200.0    3960.0    4180.0    4356.0" in text
    assert "goodput" not in text


def test_a_non_streamed_answer_has_no_tpot() -> None:
    # Without streaming the first token is the end: TTFT equals the latency.
    assert rec(0, 2.0, 2.0, 50).tpot_s is None
    assert rec(0, 0.5, 2.0, 4).tpot_s == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("record", "met"),
    [
        (rec(0, 0.1, 1.1, 11), True),
        (rec(0, 0.3, 3.3, 11), False),  # TPOT 300 ms over 250 ms
        (rec(0, 0.4, 1.4, 11), False),  # TTFT 400 ms over 350 ms
        (rec(0, 0.1, 4.5, 1), False),  # end to end 4.5 s over 4 s; no TPOT to judge
        (rec(0, 0.1, 0.2, 1), True),  # one token: no TPOT, which passes as in vLLM
        (rec(0, None, 0.2, 0, status=503), False),
        (rec(0, None, 0.2, 3), False),  # no first token seen: TTFT cannot be judged
    ],
)
def test_a_request_is_good_when_it_meets_every_bound(record: RequestRecord, met: bool) -> None:
    assert parse_slo("ttft=350ms,tpot=250ms,e2e=4s").met_by(record) is met


def test_goodput_counts_good_requests_over_the_wall_time() -> None:
    report = report_of(KNOWN, parse_slo("ttft=350ms, tpot=250ms, e2e=4s"))
    assert (report.good, report.goodput_per_s) == (2, 1.0)
    data = report.to_dict()
    assert (data["slo"], data["good"], data["request_goodput"]) == (
        "ttft=350ms,tpot=250ms,e2e=4s", 2, 1.0)
    assert "goodput    1.00 req/s: 2 of 6 requests (33.3%) within ttft=350ms,tpot=250ms,e2e=4s" \
        in report.render_text()


def test_slo_reads_ms_and_s() -> None:
    assert parse_slo("e2e=10s") == Slo(e2e_s=10.0)
    assert parse_slo("tpot=0.5s,ttft=1500ms") == Slo(ttft_s=1.5, tpot_s=0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttft=fast", "ttft='fast' is not a duration; allowed: a number with ms or s"),
        ("ttft=500", "ttft='500' is not a duration; allowed: a number with ms or s"),
        ("tpot=-5ms", "tpot='-5ms' is not a duration"),
        ("tpot=0ms", "tpot='0ms' must be above zero"),
        ("itl=5ms", "unknown key 'itl' (in 'itl=5ms'); allowed: keys ttft, tpot, e2e"),
        ("ttft", "'ttft' is not key=duration; allowed: keys ttft, tpot, e2e"),
        ("ttft=1s,ttft=2s", "ttft is given twice"),
    ],
)
def test_a_bad_slo_names_the_key_the_value_and_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(SloError) as caught:
        parse_slo(text)
    assert message in str(caught.value)


def test_a_bad_slo_on_the_command_line_exits_2_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="llmfleet load")
    add_arguments(parser)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--slo", "ttft=500ms,e2e=soon"])
    assert exited.value.code == 2
    assert "argument --slo: e2e='soon' is not a duration" in capsys.readouterr().err


def test_saved_records_are_one_json_line_per_request(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_records(KNOWN, path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(KNOWN)
    assert lines[1] == {
        "index": 1, "start_s": 0.5, "ttft_s": 0.2, "end_s": 2.7, "latency_s": 2.2,
        "tpot_s": pytest.approx(0.2), "prompt_tokens": 7, "output_tokens": 11,
        "max_tokens": 32, "status": 200, "error": None, "backend": "127.0.0.1:8001",
        "retries": 0, "itl_s": [0.02],
    }
    assert (lines[5]["status"], lines[5]["ttft_s"], lines[5]["tpot_s"]) == (503, None, None)
