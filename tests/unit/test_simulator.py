"""The fleet simulator: its engine against the simulated backend's step by step, what each
policy does to a surge, spot notices and the on-demand fallback, billing, the policy's
observations, and `llmfleet simulate`."""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from itertools import pairwise

import pytest
import simpy

from llmfleet.autoscale.policy import Group, NodeState
from llmfleet.cli import main
from llmfleet.config import validate
from llmfleet.config.aws import SPOT_USD_HOUR
from llmfleet.local.loadgen.workload import parse_distribution
from llmfleet.local.simbackend.engine import EngineConfig, Sequence, SimEngine
from llmfleet.local.simbackend.presets import get_preset
from llmfleet.local.simulator import SimulationError, SimulationSettings, simulate
from llmfleet.local.simulator.engine import NodeEngine
from llmfleet.local.simulator.observe import History
from llmfleet.local.simulator.workload import Request
from llmfleet.local.traces import Trace, load_trace

CALM = SimulationSettings(seed=1, spot_interruptions_per_hour=0)


def fleet(policy: str, *, low: int = 1, high: int = 20, desired: int | None = None,
          **sections: dict) -> object:
    return validate({
        "fleet": {"min_size": low, "desired": low if desired is None else desired,
                  "max_size": high},
        "autoscaling": {"policy": policy},
        **sections,
    }, "test")


def flat(rps: float, seconds: float = 1800.0) -> Trace:
    return Trace("flat", ((0.0, rps), (seconds, 0.0)))


# -- one node's engine -----------------------------------------------------------------------

@pytest.mark.parametrize(("preset", "rps"), [("t4", 2.5), ("l4", 8.0), ("a100", 30.0),
                                             ("t4", 0.3)])
def test_runs_of_batch_steps_time_every_request_as_stepping_the_backend_engine_does(preset,
                                                                                    rps):
    spec = get_preset(preset)
    rng = random.Random(3)
    outputs, prompts = parse_distribution("heavy"), parse_distribution("uniform:32-256")
    t, plan = 0.0, []
    for _ in range(1500):
        t += rng.expovariate(rps)
        plan.append((t, prompts.sample(rng), outputs.sample(rng)))

    # The simulated backend's engine, one step at a time; a cache too big to preempt.
    reference = SimEngine(EngineConfig(4096, spec.max_num_seqs, spec.max_num_batched_tokens,
                                       10**8, spec.prefill_ms_per_token, spec.itl_ms,
                                       spec.itl_ms_per_running_seq))
    now, index, sequences = 0.0, 0, []
    while index < len(plan) or reference.has_work():
        while index < len(plan) and plan[index][0] <= now:
            arrival, prompt, output = plan[index]
            sequences.append(Sequence(prompt, output, "length", arrival))
            reference.add(sequences[-1])
            index += 1
        step = reference.schedule(now)
        if step is None:
            now = plan[index][0]
            continue
        now += step.duration
        reference.finish_step(step, now)

    env = simpy.Environment()
    finished: dict[int, float] = {}
    engine = NodeEngine(env, spec, 1e9, lambda r, at: finished.__setitem__(id(r), at),
                        lambda r, at: None, lambda: None)
    requests = [Request(*row) for row in plan]

    def arrive():
        for request in requests:
            yield env.timeout(request.arrival - env.now)
            engine.submit(request)

    env.process(arrive())
    env.run()
    for ours, theirs in zip(requests, sequences, strict=True):
        assert ours.first_token == pytest.approx(theirs.first_token, abs=1e-6)
        assert finished[id(ours)] == pytest.approx(theirs.finished_at, abs=1e-6)


def test_a_request_that_waited_past_the_timeout_is_given_up_not_served():
    env = simpy.Environment()
    gave_up: list[Request] = []
    spec = get_preset("t4")
    engine = NodeEngine(env, spec, 5.0, lambda r, at: None, lambda r, at: gave_up.append(r),
                        lambda: None)
    long = [Request(0.0, 32, 1000) for _ in range(spec.max_num_seqs)]
    for request in long:
        engine.submit(request)
    late = Request(0.0, 32, 10)
    engine.submit(late)
    env.run(until=6.0)
    engine.give_up_waiting()
    assert gave_up == [late] and engine.running == spec.max_num_seqs


# -- policies against traces -----------------------------------------------------------------

def test_one_fixed_node_misses_the_slo_badly_on_the_surge():
    result = simulate(fleet("fixed:1"), load_trace("surge"), CALM)
    assert result.slo_attainment < 0.2
    assert result.slo_attainment <= result.ttft_attainment < 0.2
    assert result.failed["gave up waiting for a first token"] > result.requests / 2
    assert result.scale_events == 0 and result.peak_nodes == 1


def test_a_flat_load_below_one_node_meets_the_slo_on_one_node():
    result = simulate(fleet("seed"), flat(1.0), CALM)
    assert result.slo_attainment >= 0.95
    assert result.ttft_attainment == 1.0  # the misses are long answers, not a queue
    assert result.failed == {} and result.served == result.requests > 1500
    assert result.scale_events == 0 and result.peak_nodes == 1
    assert result.p99_ttft_s < 2.0


def test_a_flat_load_above_one_node_does_not_meet_it():
    assert simulate(fleet("fixed:1"), flat(4.0), CALM).slo_attainment < 0.5


def test_adaptive_adds_nodes_during_the_surge_and_removes_them_after():
    result = simulate(fleet("adaptive"), load_trace("surge"), CALM)
    sizes = [(event.t_s, event.spot) for event in result.scale_log]
    ramp_starts, hold_ends = 30 * 60, 55 * 60
    grown = [spot for t, spot in sizes if ramp_starts <= t <= ramp_starts + 600]
    assert grown and max(grown) >= 10
    shrunk = [spot for t, spot in sizes if t > hold_ends]
    assert shrunk and shrunk[-1] <= 3
    assert result.peak_nodes >= 10
    assert result.slo_attainment > 0.6


def test_on_a_steady_ramp_adaptive_buys_ahead_of_the_trend_and_keeps_batches_small():
    # 1 -> 10 requests/s over an hour, then 20 minutes held: each new node serves 7 minutes
    # after it is asked for. Planning the load now at 80 % (no trend, no headroom) is late
    # all the way up and runs full batches; the trend with half a node of headroom is both
    # better and cheaper; the defaults' smaller batches are better still.
    rows = [(i * 60.0, 1.0 + 9.0 * i / 60) for i in range(61)]
    ramp = Trace("ramp", (*rows, (80 * 60.0, 0.0)))

    def adaptive(**scaling):
        return simulate(fleet("adaptive", autoscaling={"policy": "adaptive", **scaling}),
                        ramp, CALM)

    late = adaptive(target_utilisation=0.8, slo_utilisation=0.8, scale_out_lead_s=0)
    ahead = adaptive(target_utilisation=0.8, slo_utilisation=0.5)
    ours = adaptive()
    assert ahead.slo_attainment > late.slo_attainment + 0.1
    assert ahead.cost_usd <= late.cost_usd
    assert ours.slo_attainment > ahead.slo_attainment
    assert any("ahead" in event.reason for event in ours.scale_log)


def test_the_seed_rule_adds_one_node_a_minute():
    result = simulate(fleet("seed"), load_trace("surge"), CALM)
    outs = [event for event in result.scale_log if "+1" in event.reason]
    assert len(outs) >= 5
    assert all(later.spot - earlier.spot == 1 and later.t_s - earlier.t_s >= 60
               for earlier, later in pairwise(outs))


def test_the_same_seed_gives_the_same_result_and_another_seed_another():
    settings = SimulationSettings(seed=4, spot_interruptions_per_hour=0.5)
    first = simulate(fleet("adaptive", high=8), load_trace("spiky"), settings)
    again = simulate(fleet("adaptive", high=8), load_trace("spiky"), settings)
    assert first.to_json(timeline=True) == again.to_json(timeline=True)
    other = simulate(fleet("adaptive", high=8), load_trace("spiky"),
                     SimulationSettings(seed=5, spot_interruptions_per_hour=0.5))
    assert other.requests != first.requests


# -- spot and on-demand ----------------------------------------------------------------------

def test_spot_notices_drain_the_node_and_its_requests_finish_or_are_retried():
    settings = SimulationSettings(seed=2, spot_interruptions_per_hour=2.0)
    result = simulate(fleet("fixed:3", high=3), flat(4.0, 3600.0), settings)
    assert result.spot_interruptions >= 3
    assert result.retried > 0
    assert result.served + sum(result.failed.values()) == result.requests
    # Each reclaimed node was replaced: the group stayed at 3 nodes.
    assert result.spot_gpu_hours > 3 * 1.0


def test_on_demand_stands_in_when_spot_capacity_is_short():
    settings = SimulationSettings(seed=1, spot_interruptions_per_hour=0, spot_capacity=1)
    config = fleet("adaptive", high=6, on_demand={"min_size": 0, "max_size": 4})
    result = simulate(config, flat(6.0, 3600.0), settings)
    assert result.on_demand_gpu_hours > 1.0
    assert max(event.on_demand for event in result.scale_log) >= 2


def test_gpu_hours_and_cost_bill_every_node_from_launch_at_the_configured_prices():
    config = fleet("fixed:2", high=2, prices={"spot": {"g4dn.xlarge": 0.5}})
    result = simulate(config, flat(0.5, 3600.0), CALM)
    assert result.spot_gpu_hours == pytest.approx(2 * result.simulated_s / 3600)
    assert result.cost_usd == pytest.approx(result.spot_gpu_hours * 0.5)
    assert SPOT_USD_HOUR["g4dn.xlarge"] != 0.5


def test_without_a_ready_node_the_edge_fails_requests_at_once():
    result = simulate(fleet("seed", low=0, desired=0), flat(1.0, 600.0), CALM)
    assert result.failed == {"no ready node": result.requests}
    assert result.slo_attainment == 0.0


def test_an_instance_type_without_a_simulated_gpu_is_named():
    config = validate({"fleet": {"instance_types": [{"type": "g6e.xlarge"}]}}, "test")
    with pytest.raises(SimulationError, match=r"g6e\.xlarge has no simulated GPU"):
        simulate(config, flat(1.0, 60.0), CALM)
    assert simulate(config, flat(1.0, 60.0), SimulationSettings(preset="l4")).preset == "l4"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("boot_s", -1.0, "boot_s: got -1.0; allowed: a number >= 0"),
    ("ttft_slo_s", 0.0, "ttft_slo_s: got 0.0; allowed: > 0"),
    ("spot_capacity", -2, "spot_capacity: got -2"),
    ("output_tokens", "heavy:median=0", "output_tokens: invalid distribution"),
    ("preset", "h100", "preset: unknown preset 'h100'"),
    ("think_s", 0.0, "think_s: got 0.0; allowed: a number of seconds > 0"),
    ("think_s", float("nan"), "think_s: got nan"),
])
def test_bad_settings_are_named_with_what_is_allowed(field, value, message):
    with pytest.raises(SimulationError, match=re.escape(message)):
        SimulationSettings(**{field: value})


# -- what the policy sees --------------------------------------------------------------------

class _Node:
    def __init__(self, state: NodeState, queued: int, running: int) -> None:
        self.name, self.group, self.state, self.since = "n", Group.SPOT, state, 0.0
        self.engine = type("E", (), {"queued": queued, "running": running})()


def test_windows_take_the_minimum_queue_per_ready_node_and_the_maximum_fleet_queue():
    config = fleet("adaptive")
    history = History(config.autoscaling)
    for t, queued in [(0, 30), (5, 12), (10, 40), (15, 20), (20, 22)]:
        history.scrape(t, [_Node(NodeState.READY, queued, 32), _Node(NodeState.READY, 0, 10),
                           _Node(NodeState.BOOTING, 0, 0)], arrived=10 * t)
    windows = history.windows(20.0)
    assert windows.covered_s == 20.0
    assert windows.queue_per_node_min_panic == 10.0  # (15, 20] -> 20 and 22 over 2 ready
    assert windows.queue_per_node_min_out == 6.0  # everything: 12 / 2
    assert windows.waiting_max_in == 40.0 and windows.running_max_in == 42.0
    assert windows.running_min_out == 42.0
    assert history.node_concurrency == 32.0  # the full node's running count
    assert history.arrivals_rps(20.0) == 10.0


def test_node_concurrency_is_the_engines_max_num_seqs_until_a_queue_measures_it():
    history = History(fleet("adaptive").autoscaling, node_concurrency=32.0)
    history.scrape(0, [_Node(NodeState.READY, 0, 3)], arrived=0)
    assert history.observations(0.0, []).node_concurrency == 32.0  # no queue yet
    history.scrape(5, [_Node(NodeState.READY, 4, 24)], arrived=10)
    assert history.observations(5.0, []).node_concurrency == 24.0  # measured
    assert History(fleet("adaptive").autoscaling).node_concurrency is None


def test_adaptive_sizes_a_rising_morning_before_any_queue_has_formed():
    # 0.5 -> 3 requests/s over an hour: with the preset's max_num_seqs for a node's
    # concurrency the trend buys nodes before one node reaches its knee.
    rows = [(i * 60.0, 0.5 + 2.5 * i / 60) for i in range(60)]
    result = simulate(fleet("adaptive"), Trace("morning", (*rows, (3600.0, 0.0))), CALM)
    first = result.scale_log[0]
    assert "running for" in first.reason and "queue" not in first.reason
    assert result.ttft_attainment == 1.0


def test_windows_give_the_arrival_rate_over_the_scale_in_window_for_the_trend():
    config = fleet("adaptive", autoscaling={"policy": "adaptive", "scale_out_after_s": 10,
                                            "scale_in_after_s": 30})
    history = History(config.autoscaling)
    # 2 requests/s until t 20, then 6/s.
    for t, arrived in [(0, 0), (5, 10), (10, 20), (15, 30), (20, 40), (25, 70), (30, 100)]:
        history.scrape(t, [_Node(NodeState.READY, 0, 1)], arrived=arrived)
    assert history.arrivals_rps(30.0) == 6.0  # (20, 30]: 25 and 30
    assert history.windows(30.0).arrivals_rps_in == 3.6  # (0, 30]: (100 - 10) / 25
    assert history.observations(30.0, []).arrivals_rps == 6.0


def test_queued_counts_what_the_scheduler_left_waiting_not_arrivals_mid_step():
    env = simpy.Environment()
    spec = get_preset("t4")
    engine = NodeEngine(env, spec, 1e9, lambda r, at: None, lambda r, at: None, lambda: None)
    engine.submit(Request(0.0, 100, 1000))
    env.run(until=0.01)
    engine.submit(Request(0.01, 100, 1000))  # a free slot takes it at the next step
    assert engine.queued == 0 and engine.load == 2
    for _ in range(spec.max_num_seqs + 3):
        engine.submit(Request(0.01, 32, 1000))
    env.run(until=5.0)
    assert engine.running == spec.max_num_seqs and engine.queued == 5


# -- the command -----------------------------------------------------------------------------

def test_simulate_prints_json_with_the_figures(tmp_path, capsys):
    trace = tmp_path / "flat.csv"
    trace.write_text("t_s,rps\n0,1\n600,0\n")
    assert main(["simulate", "--trace", str(trace), "--policy", "fixed:max", "--max-nodes",
                 "2", "--seed", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("slo_attainment", "ttft_attainment", "p99_latency_s", "gpu_hours",
                "cost_usd", "requests", "scale_events"):
        assert key in data
    assert data["policy"] == "fixed:2" and data["peak_nodes"] == 2 and data["seed"] == 3
    assert 400 < data["requests"] < 800


def test_simulate_text_summary(capsys):
    assert main(["simulate", "--trace", "spiky", "--policy", "seed", "--max-nodes", "4",
                 "--min-nodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "spiky with seed" in out and "within SLO" in out and "USD" in out
    assert "first token" in out


def test_simulate_names_the_bad_line_of_a_trace_file(tmp_path, capsys):
    trace = tmp_path / "bad.csv"
    trace.write_text("t_s,rps\n0,1\n60,-3\n120,0\n")
    assert main(["simulate", "--trace", str(trace)]) == 2
    err = capsys.readouterr().err
    assert f"{trace}, line 3: rps -3" in err


def test_simulate_refuses_an_unknown_policy(capsys):
    assert main(["simulate", "--trace", "surge", "--policy", "fastest"]) == 2
    assert "autoscaling.policy" in capsys.readouterr().err


def test_a_max_num_seqs_setting_is_what_every_node_runs_at_once():
    config = fleet("fixed:1")
    assert SimulationSettings().preset_for(config).max_num_seqs == 32  # the T4's
    settings = SimulationSettings(max_num_seqs=4)
    assert settings.preset_for(config).max_num_seqs == 4
    # 8 long answers at once on one node: at the first decision (60 s) 4 run, 4 wait.
    burst = Trace("burst", ((0.0, 8000.0), (0.001, 0.0)))
    result = simulate(config, burst, replace(settings, output_tokens="fixed:2000",
                                             spot_interruptions_per_hour=0))
    assert result.requests == 8 and result.served == 8
    assert result.timeline[0].running == 4 and result.timeline[0].waiting == 4
    with pytest.raises(SimulationError, match="max_num_seqs: got 0"):
        SimulationSettings(max_num_seqs=0)
