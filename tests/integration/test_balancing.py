"""least_conn against round_robin on heavy-tailed output lengths, on the same seeded load."""

from __future__ import annotations

import pytest

from llmfleet.local.loadgen import LoadSpec, run_load_sync

pytestmark = pytest.mark.integration

# Two backends with two sequence slots each and six clients: a little more work than slots,
# so where a request is sent decides whether it waits behind a long generation while the
# other backend has a free slot. Timings are 3 % of an L4's.
BACKENDS = {"time_scale": 0.03, "max_num_seqs": 2, "monitoring": False}
WORKLOAD = {"requests": 400, "concurrency": 6, "seed": 7, "output_tokens": "heavy",
            "max_duration_s": 90}


def test_least_conn_gives_a_lower_p99_wait_than_round_robin_on_heavy_tails(start_sandbox,
                                                                          capsys):
    reports = {}
    for strategy in ("least_conn", "round_robin"):
        box = start_sandbox(strategy, sandbox=BACKENDS, load_balancing={"strategy": strategy})
        reports[strategy] = run_load_sync(
            LoadSpec(url=box["endpoint"], api_key=box["api_key"], **WORKLOAD))
    least, robin = reports["least_conn"], reports["round_robin"]
    assert least.ok == robin.ok == 400
    with capsys.disabled():
        print(f"\n[balancing] p99 ttft least_conn {least.ttft_p99_s * 1000:.0f} ms, "
              f"round_robin {robin.ttft_p99_s * 1000:.0f} ms; p95 latency "
              f"{least.latency_p95_s * 1000:.0f} vs {robin.latency_p95_s * 1000:.0f} ms; "
              f"p99 latency {least.latency_p99_s * 1000:.0f} vs "
              f"{robin.latency_p99_s * 1000:.0f} ms")
    # The same seed gives both the same requests in the same order: only the balancing differs.
    assert [r.max_tokens for r in least.records] == [r.max_tokens for r in robin.records]
    # The wait for the first token is where the balancer's choice shows; the P99 of the whole
    # latency is mostly the generation time of the longest 1 % (bench/balancing.py sizes both).
    assert least.ttft_p99_s < robin.ttft_p99_s
    assert least.latency_p95_s < robin.latency_p95_s
