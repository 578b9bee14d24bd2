"""The Prometheus source: its PromQL against a real Prometheus holding a known history (written
with `promtool tsdb create-blocks-from openmetrics`), and the coverage it reports: only as far
back as the series run without a gap, and nothing once they stop."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from llmfleet.autoscale.policy import (
    Group,
    Node,
    NodeState,
    PolicySettings,
    ScalerState,
    decide,
)
from llmfleet.autoscale.prometheus_source import (
    EDGE_ANSWERS,
    NODE_CONCURRENCY,
    NODE_RUNNING,
    QUEUE_PER_NODE,
    RUNNING,
    WAITING,
    PrometheusSource,
    queries,
)
from llmfleet.autoscale.sources import SourceError, covered_s, observations
from llmfleet.config import Autoscaling, validate
from llmfleet.local.sandbox.health import answers
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until
from llmfleet.observability.prometheus import promtool, tool_binary

EVALUATION_S = 5.0
# One missed evaluation is tolerated, two are a gap.
MAX_GAP_S = 2.5 * EVALUATION_S
SCALING = Autoscaling(scale_out_after_s=60, panic_after_s=15, scale_in_after_s=300)
# Whole hours in the past, so the history lies in finished blocks Prometheus loads at start.
T0 = int(time.time() // 3600 * 3600 - 4 * 3600)


def history() -> dict[str, list[tuple[float, float]]]:
    """Seconds after T0 → value, every 5 s. Every series stops between 100 and 200 s (no
    backend answered); the running count comes back later than the queue, at 250 s. From
    480 s both backends are full (8 running each) and 12 requests wait. The edge answers 3
    requests a second, then 5 (and 0.5 a second are refused) once the surge is on."""
    before_gap, after_gap = range(0, 100, 5), range(200, 601, 5)
    surge = 480

    def series(times: range, quiet: float, busy: float) -> list[tuple[float, float]]:
        return [(t, busy if t >= surge else quiet) for t in times]

    return {
        QUEUE_PER_NODE: series(before_gap, 0, 6) + series(after_gap, 0, 6),
        WAITING: series(before_gap, 0, 12) + series(after_gap, 0, 12),
        RUNNING: series(before_gap, 8, 16) + series(range(250, 601, 5), 8, 16),
        f'{NODE_RUNNING}{{node="backend-1"}}': series(after_gap, 8, 8),
        f'{NODE_RUNNING}{{node="backend-2"}}': series(after_gap, 0, 8),
        NODE_CONCURRENCY: series(range(surge, 601, 5), 8, 8),
        f'{EDGE_ANSWERS}{{class="2xx"}}': series(after_gap, 3, 5),
        f'{EDGE_ANSWERS}{{class="5xx"}}': series(range(surge, 601, 5), 0.5, 0.5),
    }


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("prometheus")
    lines = []
    for series, samples in history().items():
        name = series.split("{")[0]
        if f"# TYPE {name} gauge" not in lines:
            lines.append(f"# TYPE {name} gauge")
        lines += [f"{series} {value:g} {T0 + t}" for t, value in samples]
    (folder / "history.om").write_text("\n".join([*lines, "# EOF", ""]))
    made = promtool("tsdb", "create-blocks-from", "openmetrics", folder / "history.om",
                    folder / "data")
    assert made.ok, made.output
    (folder / "prometheus.yml").write_text("global: {}\n")
    port = free_port()
    with open(folder / "prometheus.log", "wb") as log:
        server = subprocess.Popen(
            [tool_binary("prometheus"), f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: answers(url + "/-/ready"), 30), "prometheus did not start"
        yield url
    finally:
        server.terminate()
        server.wait(10)


def read(url: str, at: float):
    return PrometheusSource(url, SCALING, EVALUATION_S).read(T0 + at)


def test_a_full_fleet_with_a_queue_reads_as_the_windows_say(prometheus):
    metrics = read(prometheus, 600)
    w = metrics.windows
    # History back to 250 s, but the source looks back only as far as the longest window
    # (300 s) and two gaps' worth (25 s) before it.
    assert w.covered_s == 325
    assert (w.queue_per_node_min_out, w.queue_per_node_min_panic) == (6, 6)
    assert (w.waiting_max_in, w.running_max_in, w.running_min_out) == (12, 16, 16)
    assert (metrics.waiting, metrics.running) == (12, 16)
    assert metrics.running_by_node == {"backend-1": 8, "backend-2": 8}
    assert metrics.node_concurrency == 8
    assert metrics.arrivals_rps == 5.5
    # The scale-in window's mean: 3 a second until 480 s, then 5.5 (every 5 s, 300 s to 600 s).
    assert w.arrivals_rps_in == pytest.approx((36 * 3 + 25 * 5.5) / 61)


def test_a_queue_younger_than_the_scale_out_window_is_not_sustained(prometheus):
    w = read(prometheus, 500).windows
    assert w.queue_per_node_min_out == 0  # 440-480 s had no queue
    assert w.running_min_out == 8  # nor a full fleet
    assert w.queue_per_node_min_panic == 6
    assert w.waiting_max_in == 12
    assert w.covered_s == 250  # the running count is back since 250 s only


@pytest.mark.parametrize(("at", "why"), [
    (150, "in the gap: nothing recorded for 55 s"),
    (700, "the series stopped 100 s ago"),
])
def test_no_fresh_data_covers_nothing_and_the_policy_will_not_scale_in(prometheus, at, why):
    metrics = read(prometheus, at)
    assert metrics.windows.covered_s == 0, why
    assert metrics.waiting is None and metrics.running is None
    assert metrics.running_by_node == {} and metrics.arrivals_rps is None
    nodes = [Node(f"backend-{i}", Group.SPOT, NodeState.READY, 3600) for i in (1, 2)]
    config = validate({"fleet": {"min_size": 1, "max_size": 4}}, "t")
    decision = decide(observations(T0 + at, nodes, metrics), PolicySettings.of(config),
                      ScalerState(2, 0))
    assert decision.total == 2 and "no scale-in on missing data" in decision.reason


def test_nodes_take_their_running_count_from_the_source_and_unknown_ones_run_nothing(
        prometheus):
    nodes = [Node(name, Group.SPOT, NodeState.READY) for name in ("backend-2", "backend-3")]
    obs = observations(T0 + 600, nodes, read(prometheus, 600))
    assert [n.running for n in obs.nodes] == [8, 0]
    assert (obs.node_concurrency, obs.waiting, obs.arrivals_rps) == (8, 12, 5.5)


def test_before_a_queue_has_measured_it_a_node_runs_what_its_engine_is_started_with(
        prometheus):
    def concurrency(at: float, starting: float | None) -> float | None:
        source = PrometheusSource(prometheus, SCALING, EVALUATION_S,
                                  starting_concurrency=starting)
        return source.read(T0 + at).node_concurrency

    # No queue before 480 s: nothing measured, the backends' max_num_seqs stands for it.
    assert concurrency(300, None) is None
    assert concurrency(300, 32.0) == 32
    # Once a queue has measured it (8), that wins, for the hour the source looks back.
    assert concurrency(600, 32.0) == 8


def test_an_unreachable_prometheus_is_a_source_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceError, match=f"cannot query Prometheus at {url}"):
        PrometheusSource(url, SCALING, EVALUATION_S).read(time.time())


@pytest.mark.parametrize(("samples", "expected", "why"), [
    ([600, 595, 590, 585], 15, "every evaluation there"),
    ([600, 595, 585, 580], 20, "one missed evaluation is no gap"),
    ([600, 595, 580, 575], 5, "two missed evaluations are"),
    ([590, 585, 580], 20, "the newest is one evaluation and a half old"),
    ([585, 580], 0, "the newest is three evaluations old: the series stopped"),
    ([], 0, "no samples"),
])
def test_coverage_runs_back_from_now_to_the_first_gap(samples, expected, why):
    history = [[float(t) for t in samples] for _ in (QUEUE_PER_NODE, WAITING, RUNNING)]
    assert covered_s(history, 600, MAX_GAP_S) == expected, why


def test_coverage_is_the_shortest_of_the_series_the_windows_read():
    history = [[600.0, 595.0, 590.0], [600.0, 595.0, 590.0], [600.0, 595.0]]
    assert covered_s(history, 600, MAX_GAP_S) == 5
    assert covered_s([[600.0], [], []], 600, MAX_GAP_S) == 0  # the others are missing


def test_a_window_of_zero_is_the_value_now():
    q = queries(Autoscaling(scale_out_after_s=0, panic_after_s=15, scale_in_after_s=90),
                EVALUATION_S)
    assert q.queue_per_node_min_out == QUEUE_PER_NODE
    assert q.queue_per_node_min_panic == f"min_over_time({QUEUE_PER_NODE}[15s])"
    assert q.waiting_max_in == f"max_over_time({WAITING}[1m30s])"
    assert q.history.endswith("[1m55s]")  # 90 s and two gaps' worth before it
