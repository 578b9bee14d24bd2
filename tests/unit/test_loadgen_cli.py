"""Argument handling of ``llmfleet load``, and Ctrl-C on the real command.

Runs against a server live in test_loadgen_runner, test_loadgen_openloop and
test_loadgen_timeline.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_loadgen_runner import FakeVLLM, serve

from llmfleet.local.loadgen import DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS
from llmfleet.local.loadgen.cli import add_arguments, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmfleet load")
    add_arguments(p)
    return p


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMFLEET_API_KEY", raising=False)
    args = parser().parse_args([])
    assert args.url is None  # the running sandbox's endpoint, else http://127.0.0.1:8080
    # None: 100 for a plain run, no count limit with --duration or --profile.
    assert (args.requests, args.concurrency, args.ramp) == (None, 10, 0.0)
    assert (args.request_rate, args.profile, args.arrival, args.time_scale) == (
        None, None, None, None)
    assert (args.duration, args.max_in_flight, args.plot, args.prometheus) == (
        None, None, None, None)
    assert args.stream is True and args.endpoint == "chat"
    assert (args.output_tokens, args.prompt_tokens) == (
        DEFAULT_OUTPUT_TOKENS,
        DEFAULT_PROMPT_TOKENS,
    )
    assert (args.max_duration, args.seed, args.api_key, args.json) == (None, 0, None, False)


def test_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMFLEET_API_KEY", "from-env")
    args = parser().parse_args(
        ["-n", "5", "-c", "2", "--no-stream", "--endpoint", "completions", "--ramp", "1.5",
         "--output-tokens", "fixed:7", "--max-duration", "9", "--timeout", "3", "--json"]
    )  # fmt: skip
    assert (args.requests, args.concurrency, args.ramp, args.stream) == (5, 2, 1.5, False)
    assert (args.endpoint, args.output_tokens, args.max_duration) == ("completions", "fixed:7", 9)
    assert args.api_key == "from-env" and args.json
    assert parser().parse_args(["--api-key", "flag"]).api_key == "flag"


def test_open_loop_flags(tmp_path: Path) -> None:
    args = parser().parse_args(
        ["--request-rate", "12.5", "--arrival", "constant", "--duration", "30",
         "--max-in-flight", "64", "--plot", str(tmp_path / "run.png"),
         "--prometheus", "http://127.0.0.1:9090"]
    )  # fmt: skip
    assert (args.request_rate, args.arrival, args.duration, args.max_in_flight) == (
        12.5, "constant", 30.0, 64)
    assert args.plot == tmp_path / "run.png" and args.prometheus == "http://127.0.0.1:9090"
    surge = parser().parse_args(["--profile", "surge", "--time-scale", "0.1"])
    assert (surge.profile.name, surge.time_scale) == ("surge", 0.1)
    csv = tmp_path / "steps.csv"
    csv.write_text("t_s,rps\n0,2\n60,0\n")
    assert parser().parse_args(["--profile", str(csv)]).profile.rows == ((0, 2), (60, 0))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--request-rate", "0"], ["argument --request-rate", "> 0 and <= 10000", "'0'"]),
        (["--request-rate", "5", "-c", "3"],
         ["-c/--concurrency: not allowed with argument --request-rate"]),
        (["--profile", "surge", "--request-rate", "5"], ["not allowed with argument --profile"]),
        (["--profile", "burst"], ["argument --profile", "'burst'", "surge, diurnal, spiky",
                                  "t_s,rps"]),
        (["--arrival", "uniform"], ["argument --arrival", "'uniform'", "poisson", "constant"]),
        (["--time-scale", "-1"], ["argument --time-scale", "> 0", "'-1'"]),
        (["--duration", "0"], ["argument --duration", "> 0"]),
        (["--max-in-flight", "0"], ["argument --max-in-flight", "from 1 to"]),
        (["--plot", "run.jpg"], ["argument --plot", "ending in .png", "'run.jpg'"]),
        (["--plot", "/no/such/folder/run.png"], ["argument --plot", "'/no/such/folder'",
                                                 "does not exist"]),
        (["--prometheus", "prom:9090"], ["argument --prometheus", "http(s) URL"]),
        (["--output-tokens", "lognormal"], ["argument --output-tokens", "'lognormal'", "fixed:N"]),
        (["--prompt-tokens", "uniform:9"], ["argument --prompt-tokens", "uniform:A-B"]),
        (["-n", "0"], ["argument -n/--requests", "from 1 to", "got 0"]),
        (["--concurrency", "many"], ["argument -c/--concurrency", "'many'"]),
        (["--max-duration", "0"], ["argument --max-duration", "> 0", "'0'"]),
        (["--ramp", "-1"], ["argument --ramp", ">= 0"]),
        (["--timeout", "nan"], ["argument --timeout", "'nan'"]),
        (["--url", "localhost:8080"], ["argument --url", "http(s) URL", "'localhost:8080'"]),
        (["--endpoint", "embeddings"], ["argument --endpoint", "'embeddings'", "chat"]),
    ],
)
def test_bad_arguments_exit_2_naming_flag_value_and_allowed(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for fragment in expected:
        assert fragment in err


def test_run_rejects_a_bad_namespace_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args([])
    args.concurrency = 0  # built by code, bypassing the argparse types
    assert run(args) == 2
    assert "concurrency" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--arrival", "constant"], "--arrival applies to open-loop runs: add --request-rate"),
        (["--max-in-flight", "9"], "--max-in-flight applies to open-loop runs"),
        (["--request-rate", "2", "--time-scale", "0.5"], "--time-scale compresses a --profile"),
        (["--request-rate", "2", "--ramp", "3"], "--ramp spreads closed-loop clients"),
        (["--prometheus", "http://127.0.0.1:9090"], "--prometheus feeds the --plot picture"),
        (["--duration", "60", "--max-duration", "30"], "max_duration_s (30) must be above"),
    ],
)
def test_flags_that_do_not_fit_together_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(parser().parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmfleet load: invalid arguments: ") and expected in err


def test_ctrl_c_prints_the_partial_report_and_writes_the_picture(tmp_path: Path) -> None:
    picture = tmp_path / "partial.png"
    saved = tmp_path / "partial.jsonl"
    env = {**os.environ, "LLMFLEET_STATE_DIR": str(tmp_path / "no-sandbox")}
    env.pop("LLMFLEET_API_KEY", None)
    with serve(FakeVLLM("hang")) as server:
        command = [sys.executable, "-m", "llmfleet.cli", "load", "--url", server.url,
                   "--model", "m", "--request-rate", "50", "--arrival", "constant", "-n", "40",
                   "--max-duration", "60", "--json", "--plot", str(picture),
                   "--save-records", str(saved)]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) as process:
            try:
                server.wait_for_requests(3)
            finally:
                process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    report = json.loads(out)
    assert report["interrupted"] is True and report["planned_requests"] == 40
    assert 3 <= report["total_requests"] < 40
    assert report["errors_by_status"] == {"interrupted": report["total_requests"]}
    assert sum(b["started"] for b in report["timeline"]) == report["total_requests"]
    assert "llmfleet load: interrupted (Ctrl-C): the report is partial" in err
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert len(lines) == report["total_requests"]
    assert {line["status"] for line in lines} == {"interrupted"}


def test_a_run_saves_its_records_and_picture_and_counts_goodput(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMFLEET_STATE_DIR", str(tmp_path / "no-sandbox"))
    picture, saved = tmp_path / "run.png", tmp_path / "run.jsonl"
    with serve(FakeVLLM(token_delay_s=0.002, upstreams=["127.0.0.1:8001"])) as server:
        args = parser().parse_args(
            ["--url", server.url, "-n", "12", "-c", "3", "--output-tokens", "uniform:1-9",
             "--slo", "ttft=10s,tpot=1s,e2e=20s", "--json", "--plot", str(picture),
             "--save-records", str(saved)])  # fmt: skip
        assert run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["good"]) == (12, 12)
    assert report["request_goodput"] == pytest.approx(report["ok_requests_per_s"])
    png = picture.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(12))
    fields = {"start_s", "ttft_s", "end_s", "prompt_tokens", "output_tokens", "status",
              "error", "backend"}
    assert all(fields <= line.keys() for line in lines)
    assert {(line["status"], line["error"], line["backend"]) for line in lines} == {
        (200, None, "127.0.0.1:8001")}
    assert all(0 <= line["start_s"] < line["start_s"] + line["ttft_s"] <= line["end_s"]
               for line in lines)
    assert sum(line["output_tokens"] for line in lines) == report["output_tokens_total"]
    # A token per chunk: one gap fewer than the tokens of each answer.
    assert all(len(line["itl_s"]) == line["output_tokens"] - 1 for line in lines)


def test_without_url_the_load_goes_to_the_running_sandbox(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import llmfleet.local.loadgen.cli as cli

    asked: list[Path | None] = []
    with serve(FakeVLLM()) as server:
        monkeypatch.setattr(cli, "sandbox_endpoint",
                            lambda state_dir: asked.append(state_dir) or server.url)
        assert run(parser().parse_args(["-n", "3", "--json", "--state-dir", "/a/sandbox"])) == 0
        assert len(server.bodies) == 3
    assert asked == [Path("/a/sandbox")]
    assert json.loads(capsys.readouterr().out)["url"] == server.url


def test_without_url_or_a_running_sandbox_the_load_goes_to_8080(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import llmfleet.local.loadgen.cli as cli

    monkeypatch.setattr(cli, "sandbox_endpoint", lambda state_dir: None)
    assert cli._spec(parser().parse_args([])).url == "http://127.0.0.1:8080"
    given = parser().parse_args(["--url", "http://127.0.0.1:9"])
    monkeypatch.setattr(cli, "sandbox_endpoint", lambda state_dir: "http://127.0.0.1:7")
    assert cli._spec(given).url == "http://127.0.0.1:9"
