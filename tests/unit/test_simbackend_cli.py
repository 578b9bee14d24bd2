"""`python -m llmfleet.local.simbackend` as a real process: startup line, signals, exit
fault, flags."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from llmfleet.local.simbackend import parse_access_log_line
from llmfleet.local.simbackend.__main__ import settings_from_args

STARTUP_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+) pid=(\d+)")


class Backend:
    """One backend process with stdout/stderr in a file; always killed on close."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llmfleet.local.simbackend", "--port", "0", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.port = 0

    def wait_ready(self, timeout: float = 20.0) -> Backend:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = STARTUP_RE.search(self.log.read_text())
            if match:
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"backend exited early:\n{self.log.read_text()}")
            time.sleep(0.02)
        raise AssertionError("backend did not print its startup line")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    started: list[Backend] = []

    def start(*args: str) -> Backend:
        backend = Backend(tmp_path / f"backend-{len(started)}.log", *args)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.close()


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly_with_exit_0(spawn, signum: int) -> None:
    backend = spawn("--name", "sig-test", "--time-scale", "0.01").wait_ready()
    with http() as session:
        body = {"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": "hi", "max_tokens": 3}
        assert session.post(f"{backend.url}/v1/completions", json=body, timeout=5).ok
    backend.proc.send_signal(signum)
    assert backend.proc.wait(timeout=10) == 0
    lines = backend.log.read_text().splitlines()
    assert "sig-test simbackend shutting down" in lines[-1]
    requests_logged = [r for r in map(parse_access_log_line, lines) if r]
    assert [(r["backend"], r["path"], r["status"]) for r in requests_logged] == [
        ("sig-test", "/v1/completions", 200)
    ]


def test_sigterm_drains_short_streams_and_cuts_long_ones(spawn) -> None:
    backend = spawn(
        "--name", "drain-test", "--shutdown-timeout", "1.5", "--itl-ms", "20",
        "--itl-ms-per-running-seq", "0",
    ).wait_ready()  # fmt: skip
    url = f"{backend.url}/v1/completions"
    short = {"prompt": "hi", "max_tokens": 10, "stream": True}  # ~0.2 s
    long_ = {"prompt": "hi", "max_tokens": 1000, "stream": True}  # ~20 s
    with (
        http() as a,
        http() as b,
        a.post(url, json=short, stream=True, timeout=10) as r_short,
        b.post(url, json=long_, stream=True, timeout=10) as r_long,
    ):
        short_lines, long_lines = r_short.iter_lines(), r_long.iter_lines()
        assert next(short_lines).startswith(b"data: ")
        assert next(long_lines).startswith(b"data: ")
        started = time.monotonic()
        backend.proc.send_signal(signal.SIGTERM)
        assert [line for line in short_lines if line][-1] == b"data: [DONE]"
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for line in long_lines:
                assert line != b"data: [DONE]"
    assert backend.proc.wait(timeout=10) == 0
    # The drain's 1.5 s and the cancel, not the long stream's 20 s.
    assert time.monotonic() - started < 10
    records = [r for r in map(parse_access_log_line, backend.log.read_text().splitlines()) if r]
    assert sorted(r["finish_reason"] for r in records) == ["abort", "length"]


def test_startup_line_and_raised_open_files_limit(spawn) -> None:
    backend = spawn(
        "--model", "org/base", "--served-model-name", "pub", "--max-model-len", "2048",
        "--preset", "a10g", "--max-num-seqs", "12", "--name", "backend-7", "--seed", "3",
        "--itl-ms", "9.5",
    ).wait_ready()  # fmt: skip
    line = backend.log.read_text().splitlines()[0]
    for part in ("backend-7 simbackend listening", "served_model_name=pub", "preset=a10g",
                 "max_num_seqs=12", "max_model_len=2048", "itl_ms=9.5", "seed=3"):  # fmt: skip
        assert part in line
    limits = Path(f"/proc/{backend.proc.pid}/limits").read_text()
    soft, hard = re.search(r"Max open files\s+(\S+)\s+(\S+)", limits).groups()
    assert soft == hard
    with http() as session:
        models = session.get(f"{backend.url}/v1/models", timeout=5).json()
    assert models["data"][0]["id"] == "pub" and models["data"][0]["root"] == "org/base"


def test_exit_fault_kills_the_process_with_the_code(spawn) -> None:
    backend = spawn("--name", "exit-test").wait_ready()
    with http() as session:
        r = session.post(f"{backend.url}/_sim/fault", json={"mode": "exit", "code": 3}, timeout=5)
    assert r.json() == {"mode": "exit", "code": 3}
    assert backend.proc.wait(timeout=10) == 3


def test_port_in_use_fails_with_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "llmfleet.local.simbackend", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 1
    assert "cannot serve on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


def test_inconsistent_flags_are_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmfleet.local.simbackend", "--max-model-len", "100000",
         "--preset", "t4"],
        capture_output=True, text=True, timeout=20, env={**os.environ},
    )  # fmt: skip
    assert result.returncode == 2
    assert "KV cache" in result.stderr


def test_flags_map_onto_settings() -> None:
    s = settings_from_args(
        ["--served-model-name", "a", "b", "--time-scale", "0.5", "--prefill-ms-per-token", "2",
         "--itl-ms-per-running-seq", "0.7", "--max-num-batched-tokens", "512",
         "--kv-cache-tokens", "8192"],
    )  # fmt: skip
    assert s.host == "127.0.0.1" and s.port == 8001
    assert s.served_names == ("a", "b")
    config = s.engine_config()
    assert (config.prefill_ms_per_token, config.itl_ms_per_running_seq) == (2.0, 0.7)
    assert (config.max_num_batched_tokens, config.kv_cache_tokens) == (512, 8192)
    assert config.max_num_seqs == 64  # the l4 preset's default
    assert s.time_scale == 0.5
