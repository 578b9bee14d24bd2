"""The practice labs on real processes: nginx in front of simulated vLLM backends."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmfleet.local.loadgen import LoadSpec, run_load_sync
from llmfleet.local.sandbox.processes import wait_until
from llmfleet.local.simbackend import read_access_log

pytestmark = pytest.mark.integration

# Simulated timings at a tenth of an L4's, so a test's traffic takes seconds, not minutes.
FAST = {"time_scale": 0.1}


def served_requests(log: str) -> list[dict]:
    return read_access_log(log, "/v1/chat/completions")


def address(component: dict) -> str:
    return component["url"].removeprefix("http://")


def test_lab1_twenty_concurrent_requests_reach_both_backends(start_sandbox):
    # Any of nginx's strategies spreads simultaneous requests over two idle backends; what
    # least_conn does that round-robin does not is tests/integration/test_balancing.py's.
    box = start_sandbox(sandbox=FAST)
    report = run_load_sync(LoadSpec(url=box["endpoint"], api_key=box["api_key"], requests=20,
                                    concurrency=20, output_tokens="fixed:16", max_duration_s=60))
    assert report.ok == 20, report.errors_by_status
    logs = [b["log"] for b in box["backends"]]
    assert wait_until(lambda: sum(len(served_requests(log)) for log in logs) == 20, 10)
    counts = [len(served_requests(log)) for log in logs]
    assert min(counts) >= 5, counts


def test_lab2_killed_backend_traffic_moves_to_the_survivor(start_sandbox, capsys):
    # Unsupervised: a restarted backend would take traffic again.
    box = start_sandbox(sandbox=FAST, supervise=False)
    victim, survivor = box["backends"]
    streaming = LoadSpec(url=box["endpoint"], api_key=box["api_key"], requests=300,
                         concurrency=8, output_tokens="fixed:64", max_duration_s=45)
    with ThreadPoolExecutor(max_workers=1) as pool:
        background = pool.submit(run_load_sync, streaming)
        assert wait_until(lambda: all(served_requests(b["log"]) for b in (victim, survivor)), 20)
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        after = run_load_sync(LoadSpec(url=box["endpoint"], api_key=box["api_key"],
                                       requests=40, concurrency=4, stream=False,
                                       output_tokens="fixed:8", max_duration_s=30))
        moved_within = time.monotonic() - killed_at
        during = background.result()

    # Every plain request sent after the kill succeeded: nginx retried it on the survivor.
    assert after.ok == after.total_requests == 40, after.errors_by_status
    assert set(after.requests_by_backend) == {address(survivor)}
    assert moved_within < 30
    # nginx has stopped trying the dead backend: its most recent requests went to the survivor only.
    access_log = Path(box["nginx_conf"]).parent / "access.log"
    recent = [json.loads(line) for line in access_log.read_text().splitlines()[-20:]]
    assert all(entry["upstream"] == address(survivor) for entry in recent), recent
    with capsys.disabled():
        print(f"\n[lab2] streams in flight on the killed backend that broke: "
              f"{during.broken_streams}; other errors: {during.errors_by_status}; "
              f"plain requests after the kill: {after.ok}/40 ok in {moved_within:.1f} s")


def test_streaming_is_not_buffered_the_first_token_arrives_long_before_the_last(
        start_sandbox, capsys):
    # At an L4's pace (28 ms a token) an 8-token answer takes about a quarter of a second and
    # is about 2.5 kB of events: less than one of nginx's buffers (4 kB). Buffered, it would
    # all arrive at once when the last token is out, first token and last together.
    box = start_sandbox(sandbox={"backends": 1})
    edge = run_load_sync(LoadSpec(url=box["endpoint"], api_key=box["api_key"], requests=10,
                                  concurrency=1, output_tokens="fixed:8",
                                  prompt_tokens="fixed:64", max_duration_s=60))
    assert edge.ok == 10
    with capsys.disabled():
        print(f"\n[ttft] through nginx: median first token {edge.ttft_p50_s * 1000:.1f} ms, "
              f"last {edge.latency_p50_s * 1000:.1f} ms")
    # Unbuffered, the first token comes after a fifth of the answer's time. What nginx adds to
    # the first token is a measurement, not a test: bench/edge_overhead.py.
    assert edge.ttft_p50_s < 0.5 * edge.latency_p50_s
