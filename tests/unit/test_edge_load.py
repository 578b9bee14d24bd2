"""The fleet's load as the edge publishes it for the scaler: read from the members' `/metrics`
and the edge exporter, sent to (moto's) CloudWatch, and read back as the policy's windows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from llmfleet.autoscale.cloudwatch import CloudWatchSource, FleetSample, period_for
from llmfleet.autoscale.policy import PolicySettings
from llmfleet.config import validate
from llmfleet.edge.load import ArrivalRate, LoadPublisher, metric_sums
from llmfleet.edge.members import Member

REGION = "us-east-1"
STACK = "acme-prod"
CONFIG = validate({"fleet": {"min_size": 1, "max_size": 8, "instance_types": [
    {"type": "g6.xlarge", "weight": 1}, {"type": "g6.12xlarge", "weight": 4}]}}, "test")


def vllm_metrics(waiting: float, running: float) -> str:
    """`/metrics` as vLLM V1 writes it: one gauge per engine, with the model's labels."""
    return (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{engine="0",model_name="m"}} {running / 2}\n'
        f'vllm:num_requests_running{{engine="1",model_name="m"}} {running / 2}\n'
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}\n'
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 1234.0\n'
    )


def exporter_metrics(answered_2xx: float, answered_5xx: float) -> str:
    return ("# TYPE llmfleet_edge_responses_total counter\n"
            f'llmfleet_edge_responses_total{{class="2xx"}} {answered_2xx}\n'
            f'llmfleet_edge_responses_total{{class="5xx"}} {answered_5xx}\n')


class Pages:
    """What each address answers on GET /metrics (None: no answer)."""

    def __init__(self) -> None:
        self.by_address: dict[tuple[str, int], str | None] = {}

    def fetch(self, host: str, port: int, path: str, timeout_s: float) -> str | None:
        assert path == "/metrics" and timeout_s > 0
        return self.by_address.get((host, port))


@pytest.fixture
def cloudwatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


def test_metric_sums_add_engines_and_labels_and_count_a_missing_metric_as_zero():
    sums = metric_sums(vllm_metrics(waiting=3, running=8),
                       ("vllm:num_requests_waiting", "vllm:num_requests_running", "absent"))
    assert sums == {"vllm:num_requests_waiting": 3, "vllm:num_requests_running": 8,
                    "absent": 0}


def test_a_sample_counts_units_and_the_concurrency_of_full_nodes_per_unit():
    pages = Pages()
    members = [Member("i-small", "10.0.0.1", 8000, "g6.xlarge"),
               Member("i-big", "10.0.0.2", 8000, "g6.12xlarge"),
               Member("i-mute", "10.0.0.3", 8000, "g6.xlarge")]
    pages.by_address[("10.0.0.1", 8000)] = vllm_metrics(waiting=0, running=5)
    pages.by_address[("10.0.0.2", 8000)] = vllm_metrics(waiting=6, running=32)
    pages.by_address[("10.0.0.3", 8000)] = None  # does not answer: counts for nothing
    publisher = LoadPublisher(CONFIG, STACK, cloudwatch=None, exporter=None, fetch=pages.fetch)

    sample = publisher.sample(members, now=100.0)

    assert sample == FleetSample(waiting=6, running=37, ready_capacity=5,
                                 unit_concurrency=8.0, arrivals_rps=None)


def test_arrivals_are_the_rate_of_answered_requests_between_two_passes():
    rate = ArrivalRate()
    assert rate.update(100.0, 1000) is None  # one read is no rate
    assert rate.update(110.0, 1050) == 5.0
    assert rate.update(120.0, 10) is None  # the exporter restarted: no rate this pass
    assert rate.update(130.0, 30) == 2.0
    assert rate.update(140.0, None) is None


def test_what_the_edge_publishes_the_scaler_reads_back_as_windows(cloudwatch):
    pages = Pages()
    members = [Member(f"i-{n}", f"10.0.0.{n}", 8000, "g6.xlarge") for n in (1, 2)]
    exporter = ("127.0.0.1", 9180)
    publisher = LoadPublisher(CONFIG, STACK, cloudwatch, exporter, fetch=pages.fetch)
    period = period_for(CONFIG.edge.sync_interval_s)
    start = datetime.now(UTC).timestamp() - 300
    # Five minutes of passes: each node 8 running and 12 waiting, 4 requests/s answered.
    for step in range(31):
        for member in members:
            pages.by_address[(member.host, member.port)] = vllm_metrics(waiting=12, running=8)
        pages.by_address[exporter] = exporter_metrics(answered_2xx=40 * step, answered_5xx=0)
        assert publisher.publish(members, now=start + step * period) is not None

    settings = PolicySettings.of(CONFIG)
    metrics = CloudWatchSource(cloudwatch, STACK, settings, period).read(start + 300)

    assert (metrics.waiting, metrics.running, metrics.node_concurrency) == (24, 16, 8)
    assert metrics.arrivals_rps == 4.0
    w = metrics.windows
    assert w.queue_per_node_min_out == 12 and w.queue_per_node_min_panic == 12
    assert w.running_min_out == 16
    assert 290 <= w.covered_s <= 310  # five minutes back, to the first sample
    # A steady rate: the same over the scale-in window as now, so no trend either way.
    assert w.arrivals_rps_in == 4.0


def test_a_refused_publish_is_logged_and_the_loop_goes_on(caplog):
    class Refusing:
        def put_metric_data(self, **_):
            from botocore.exceptions import ClientError
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}},
                              "PutMetricData")

    publisher = LoadPublisher(CONFIG, STACK, Refusing(), exporter=None,
                              fetch=lambda *a: vllm_metrics(0, 1))
    assert publisher.publish([Member("i-1", "10.0.0.1", 8000)], now=1.0) is None
    assert "could not publish the fleet's load" in caplog.text


@pytest.mark.parametrize(("interval", "period"), [(1, 1), (5, 5), (10, 10), (15, 30),
                                                  (30, 30), (45, 60), (61, 120)])
def test_the_period_holds_at_least_one_pass(interval, period):
    assert period_for(interval) == period
