"""A burst on a freshly started sandbox: 2,000 students open the chatbot at the same moment.

The backends have room for all of them (4 x 512 sequences), so the edge must admit every
request: no 502/503/504 from connection setup between client, nginx, gateway and backends.
"""

import pytest

from llmfleet.local.loadgen import LoadSpec, run_load_sync

BURST = 2000


@pytest.mark.parametrize("stream", [True, False], ids=["streams", "requests"])
def test_a_fresh_sandbox_answers_every_request_of_a_simultaneous_burst(start_sandbox, stream):
    box = start_sandbox(sandbox={"backends": 4, "max_num_seqs": 512, "monitoring": False})
    assert box["api_key"], "the sandbox runs with API keys on, as a user starts it"
    # Every request is sent at once (concurrency = requests), each on its own new connection,
    # with no retries, so a refused or reset connection shows. The run ends when all answers
    # are in; the deadline only bounds a broken run.
    report = run_load_sync(LoadSpec(
        url=box["endpoint"], api_key=box["api_key"], requests=BURST, concurrency=BURST,
        stream=stream, output_tokens="fixed:16", prompt_tokens="fixed:16", max_retries=0,
        timeout_s=150, max_duration_s=180))
    assert report.total_requests == BURST
    failed = [r for r in report.records if not r.ok]
    assert not failed, (
        f"{len(failed)} of {BURST} failed: {report.errors_by_status}; first: {failed[0].error}")
    assert all(r.status == 200 for r in report.records)
