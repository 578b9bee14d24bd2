"""Argument handling of ``llmfleet load`` (runs against a server live in test_loadgen_runner)."""

from __future__ import annotations

import argparse

import pytest

from llmfleet.local.loadgen import DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS
from llmfleet.local.loadgen.cli import add_arguments, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmfleet load")
    add_arguments(p)
    return p


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMFLEET_API_KEY", raising=False)
    args = parser().parse_args([])
    assert args.url == "http://127.0.0.1:8080"
    assert (args.requests, args.concurrency, args.ramp) == (100, 10, 0.0)
    assert args.stream is True and args.endpoint == "chat"
    assert (args.output_tokens, args.prompt_tokens) == (
        DEFAULT_OUTPUT_TOKENS,
        DEFAULT_PROMPT_TOKENS,
    )
    assert (args.max_duration, args.seed, args.api_key, args.json) == (120.0, 0, None, False)


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


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
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
