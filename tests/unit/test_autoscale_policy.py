"""The scaling policy, case by case: each edge of the seed's rule and of ours, as tables."""

from __future__ import annotations

import pytest

from llmfleet.autoscale.policy import (
    Decision,
    Group,
    Node,
    NodeState,
    Observations,
    PolicySettings,
    ScalerState,
    Windows,
    decide,
)
from llmfleet.config import ConfigError, validate

NOW = 10_000.0
# The tables below plan in round figures: the load now at 80 % of a node, the load ahead at
# 50 %, one node out per decision. The defaults are pinned apart (`test_the_defaults_...`).
PLAN = {"target_utilisation": 0.8, "slo_utilisation": 0.5, "scale_in_step": 1}


def config(policy: str = "seed", *, low: int = 1, high: int = 10, spot: bool = True,
           od_min: int = 0, od_max: int = 4, **scaling: object):
    return validate({
        "fleet": {"min_size": low, "desired": low, "max_size": high, "spot": spot},
        "on_demand": {"min_size": od_min, "max_size": od_max},
        "autoscaling": {"policy": policy, **PLAN, **scaling},
    }, "test")


def ready(count: int, running: float = 0.0, group: Group = Group.SPOT,
          first: int = 1) -> tuple[Node, ...]:
    return tuple(Node(f"{group.value}-{i}", group, NodeState.READY, 3600.0, running)
                 for i in range(first, first + count))


def booting(count: int, since_s: float = 30.0, group: Group = Group.SPOT,
            first: int = 100) -> tuple[Node, ...]:
    return tuple(Node(f"{group.value}-{i}", group, NodeState.BOOTING, since_s)
                 for i in range(first, first + count))


def observe(nodes: tuple[Node, ...], *, covered: float = 3600.0, out: float | None = 0.0,
            panic: float | None = 0.0, waiting_in: float | None = 0.0,
            running_in: float | None = 0.0, waiting: float = 0.0, running: float | None = None,
            concurrency: float | None = None) -> Observations:
    total_running = sum(n.running for n in nodes) if running is None else running
    return Observations(
        now=NOW, nodes=nodes, waiting=waiting, running=total_running,
        windows=Windows(covered, out, panic, waiting_in, running_in),
        node_concurrency=concurrency)


def state(spot: int, on_demand: int = 0, out_at: float | None = None) -> ScalerState:
    return ScalerState(spot, on_demand, last_scale_out_at=out_at)


def run(obs: Observations, cfg=None, st: ScalerState | None = None) -> Decision:
    cfg = cfg or config()
    return decide(obs, PolicySettings.of(cfg), st or state(len([n for n in obs.nodes
                                              if n.state is not NodeState.DRAINING])))


# -- the seed's rule -------------------------------------------------------------------------

@pytest.mark.parametrize(("covered", "queue_min", "expected", "why"), [
    (60.0, 5.1, 3, "above 5 for the whole 60 s: +1"),
    (60.0, 5.0, 2, "exactly 5 is not above 5"),
    (59.9, 9.0, 2, "not 60 s of history yet"),
    (3600.0, 4.0, 2, "a dip inside the window restarts it"),
    (3600.0, None, 2, "no data: nothing to act on"),
])
def test_seed_scales_out_one_node_after_a_full_window_above_the_threshold(
        covered, queue_min, expected, why):
    decision = run(observe(ready(2, 8), covered=covered, out=queue_min, waiting_in=7),
                   config("seed"))
    assert decision.total == expected, why


def test_seed_adds_only_one_node_per_decision_however_long_the_queue():
    decision = run(observe(ready(2, 8), out=400.0, waiting_in=800, waiting=800), config("seed"))
    assert (decision.spot, decision.on_demand) == (3, 0)
    assert "+1" in decision.reason


@pytest.mark.parametrize(("covered", "waiting_max", "low", "size", "expected"), [
    (600.0, 0.0, 1, 3, 2),  # quiet for exactly 600 s: -1
    (599.0, 0.0, 1, 3, 3),  # not 600 s of history: no scale-in on what it has not seen
    (3600.0, 1.0, 1, 3, 3),  # one request waited in the window
    (3600.0, None, 1, 3, 3),  # no data: never a scale-in
    (3600.0, 0.0, 3, 3, 3),  # at the minimum
])
def test_seed_scales_in_one_node_after_the_queue_is_empty_for_the_whole_window(
        covered, waiting_max, low, size, expected):
    cfg = config("seed", low=low)
    decision = run(observe(ready(size), covered=covered, waiting_in=waiting_max), cfg,
                   state(size))
    assert decision.total == expected


def test_no_scale_in_on_missing_data_says_so():
    decision = run(observe(ready(3), covered=0.0, out=None, waiting_in=None), config("seed"))
    assert decision.total == 3
    assert "missing data" in decision.reason


@pytest.mark.parametrize("policy", ["seed", "adaptive"])
def test_never_above_the_maximum(policy):
    decision = run(observe(ready(10, 64), out=50, panic=50, waiting=2000, waiting_in=2000,
                           concurrency=64), config(policy, high=10))
    assert decision.total == 10 and "maximum" in decision.reason


# -- ours ------------------------------------------------------------------------------------

def test_adaptive_sizes_a_big_surge_in_one_step_bounded_by_max_step():
    # 2 full nodes (64 each) and 500 waiting: (128 + 500) / (64 x 0.8) -> 13 nodes.
    obs = observe(ready(2, 64), covered=20, out=None, panic=250, waiting=500, concurrency=64)
    assert run(obs, config("adaptive", high=20, max_step=20)).total == 13
    assert run(obs, config("adaptive", high=20, max_step=8)).total == 10
    assert run(obs, config("adaptive", high=6)).total == 6


def test_adaptive_counts_booting_nodes_as_capacity_on_the_way():
    nodes = ready(2, 64) + booting(8)
    obs = observe(nodes, panic=250, out=250, waiting=500, concurrency=64)
    decision = run(obs, config("adaptive", high=20), state(10))
    assert decision.total == 13  # 3 more, not 11
    nodes = ready(2, 64) + booting(11)
    decision = run(observe(nodes, panic=250, out=250, waiting=500, concurrency=64),
                   config("adaptive", high=20), state(13))
    assert decision.total == 13 and "enough on the way" in decision.reason


def test_adaptive_waits_for_the_short_panic_window_only_on_a_big_surge():
    # 12 per node for 15 s is a surge (>= 2 x 5); 8 per node is not, until 60 s of it.
    surge = observe(ready(2, 64), covered=15, out=None, panic=12, waiting=24, concurrency=64)
    assert run(surge, config("adaptive")).total > 2
    mild = observe(ready(2, 64), covered=15, out=None, panic=8, waiting=16, concurrency=64)
    assert run(mild, config("adaptive")).total == 2
    sustained = observe(ready(2, 64), covered=60, out=8, panic=8, waiting=16, concurrency=64)
    assert run(sustained, config("adaptive")).total == 3


@pytest.mark.parametrize(("nodes", "st", "expected", "why"), [
    (ready(3), state(3, out_at=NOW - 100), 3, "within the cooldown of a scale-out"),
    (ready(3), state(3, out_at=NOW - 400), 2, "after the cooldown: -1"),
    (ready(3) + booting(1), state(4), 4, "nodes still booting"),
    (ready(3, running=2), state(3), 2, "the least busy node drains first: none need be idle"),
    (ready(1), state(1), 1, "at the minimum"),
])
def test_adaptive_scales_in_one_idle_ready_node_at_a_time(nodes, st, expected, why):
    obs = observe(nodes, covered=3600, waiting_in=0, running_in=1, concurrency=64)
    decision = run(obs, config("adaptive"), st)
    assert decision.total == expected, why
    if expected < st.total:
        assert len(decision.drain) == 1


def test_adaptive_takes_out_the_least_busy_node_which_drains_first():
    nodes = (Node("spot-1", Group.SPOT, NodeState.READY, 900, 5),
             Node("spot-2", Group.SPOT, NodeState.READY, 900, 1),
             Node("spot-3", Group.SPOT, NodeState.READY, 900, 3))
    decision = run(observe(nodes, covered=3600, waiting_in=0, running_in=9, concurrency=64),
                   config("adaptive"), state(3))
    assert decision.drain == ("spot-2",) and decision.total == 2


@pytest.mark.parametrize(("running_min", "expected", "why"), [
    (110.0, 3, "above 80 % of 2 nodes x 64 for the whole window: sized before a queue forms"),
    (100.0, 2, "below 80 % of 2 x 64"),
    (None, 2, "no data"),
])
def test_adaptive_scales_out_on_utilisation_before_a_queue_forms(running_min, expected, why):
    obs = Observations(now=NOW, nodes=ready(2, 60), waiting=0.0, running=120.0,
                       windows=Windows(3600, 0, 0, 0, 120, running_min), node_concurrency=64)
    assert run(obs, config("adaptive"), state(2)).total == expected, why


@pytest.mark.parametrize(("arrivals", "expected"), [(0.5, 1), (0.0, 0), (None, 0)])
def test_adaptive_wakes_a_fleet_at_zero_when_requests_arrive(arrivals, expected):
    obs = Observations(now=NOW, nodes=(), waiting=None, running=None,
                       windows=Windows(3600, None, None, 0, 0), arrivals_rps=arrivals)
    assert run(obs, config("adaptive", low=0), state(0)).total == expected


def test_adaptive_takes_out_an_idle_on_demand_node_before_a_spot_one():
    nodes = ready(2) + ready(1, group=Group.ON_DEMAND)
    decision = run(observe(nodes, covered=3600, waiting_in=0), config("adaptive", od_min=0),
                   state(3))
    assert decision.drain == ("on_demand-1",)


def test_adaptive_does_not_shrink_below_what_the_running_requests_need():
    # 150 running at peak over the window would not fit in 2 nodes of 64 at 80 %.
    obs = observe(ready(3, 0), covered=3600, waiting_in=0, running_in=150, concurrency=64)
    assert run(obs, config("adaptive")).total == 3


# -- ours: the arrival trend and slo_utilisation ---------------------------------------------
# With PLAN: the trend compares the arrival rate over the last 60 s with its mean over 600 s
# (their middles 270 s apart) and projects it scale_out_lead_s (420 s) ahead; the load so
# projected is planned at slo_utilisation (0.5), the load now at target_utilisation (0.8).
# Without a trend (no Windows.arrivals_rps_in) everything is planned at 80 %, as above.

def trending(nodes: tuple[Node, ...], *, now_rps: float | None, mean_rps: float | None,
             running_min: float | None = None, running_max: float = 0.0,
             covered: float = 3600.0) -> Observations:
    return Observations(
        now=NOW, nodes=nodes, waiting=0.0, running=sum(n.running for n in nodes),
        windows=Windows(covered, 0.0, 0.0, 0.0, running_max, running_min,
                        arrivals_rps_in=mean_rps),
        node_concurrency=64, arrivals_rps=now_rps)


@pytest.mark.parametrize(("now_rps", "mean_rps", "covered", "lead", "expected", "why"), [
    # 60 running on 2 x 64 is below 50 %; arrivals 10/s against 8/s over 600 s: x1.31 by the
    # time a new node serves, 78.7 running, above 2 x 64 x 0.5.
    (10.0, 8.0, 3600.0, 420.0, 3, "rising: a node before the queue"),
    (10.0, 10.0, 3600.0, 420.0, 2, "flat: 60 fit in 2 nodes at 50 %"),
    (10.0, None, 3600.0, 420.0, 2, "no trend measured: 60 fit in 2 nodes at 80 %"),
    (None, 8.0, 3600.0, 420.0, 2, "no arrival rate: no trend"),
    (10.0, 8.0, 599.0, 420.0, 2, "less history than the 600 s window: no trend"),
    (10.0, 8.0, 3600.0, 0.0, 2, "scale_out_lead_s 0: no projection, 60 fit at 50 %"),
])
def test_adaptive_buys_nodes_ahead_of_rising_arrivals(now_rps, mean_rps, covered, lead,
                                                       expected, why):
    obs = trending(ready(2, 30), now_rps=now_rps, mean_rps=mean_rps, running_min=60.0,
                   running_max=60.0, covered=covered)
    decision = run(obs, config("adaptive", scale_out_lead_s=lead), state(2))
    assert decision.total == expected, why
    if expected == 3:
        assert "arrivals x1.31 ahead" in decision.reason


@pytest.mark.parametrize(("now_rps", "mean_rps", "peak", "running", "expected", "why"), [
    # 3 nodes of 64: 2 hold 102.4 running at 80 %, 64 at 50 %.
    (10.0, 10.0, 70.0, 60.0, 3, "flat: the window's peak of 70 needs 3 nodes at 50 %"),
    (9.0, 10.0, 70.0, 60.0, 2, "falling: x0.83 ahead, 58 running fit in 2 nodes at 50 %"),
    (6.0, 10.0, 70.0, 60.0, 2, "falling fast: x0 ahead (never below 0)"),
    (6.0, 10.0, 150.0, 110.0, 3, "falling fast, but the 110 running now do not fit in 2 "
                                 "nodes at 80 %"),
    (6.0, 10.0, 150.0, 90.0, 2, "falling fast: the peak of 150 is history, the 90 running "
                                "now fit in 2 nodes at 80 %"),
    (10.0, 10.0, 150.0, 90.0, 3, "flat: the peak of 150 counts"),
    (10.0, 10.0, 50.0, 45.0, 2, "flat: 50 running fit in 2 nodes at 50 %"),
    (14.0, 10.0, 50.0, 45.0, 3, "rising: x1.44 ahead, 72 running do not fit in 2 nodes at 50 %"),
    (14.0, None, 50.0, 45.0, 2, "no trend measured: the peak of 50 fits in 2 nodes at 80 %"),
    (14.0, None, 110.0, 45.0, 3, "no trend measured: the peak of 110 does not"),
])
def test_adaptive_lets_nodes_go_when_arrivals_fall_and_keeps_them_while_they_rise(
        now_rps, mean_rps, peak, running, expected, why):
    obs = trending(ready(3, running / 3), now_rps=now_rps, mean_rps=mean_rps,
                   running_max=peak)
    assert run(obs, config("adaptive"), state(3)).total == expected, why


def test_a_slo_utilisation_above_the_target_leaves_the_load_now_to_the_target():
    # 110 running on 2 x 64, flat: above 80 % of 128 (102.4): 3 nodes; planning the projected
    # load at 100 % would not ask for the third.
    obs = trending(ready(2, 55), now_rps=10.0, mean_rps=10.0, running_min=110.0)
    assert run(obs, config("adaptive", slo_utilisation=1.0), state(2)).total == 3


# -- spot and on-demand ----------------------------------------------------------------------

@pytest.mark.parametrize(("nodes", "st", "on_demand", "why"), [
    (ready(2) + booting(2, since_s=600), state(4, out_at=NOW - 600), 2,
     "spot still booting after the grace period: covered on demand"),
    (ready(2) + booting(2, since_s=100), state(4, out_at=NOW - 100), 0, "within the grace"),
    (ready(2), state(4, out_at=NOW - 600), 2, "spot never launched (no capacity)"),
    (ready(2), state(4, out_at=NOW - 100), 0, "asked recently: within the grace"),
    (ready(4), state(4, 2, out_at=NOW - 900), 0, "spot ready: handed back"),
])
def test_on_demand_stands_in_for_spot_that_is_not_ready_and_hands_back(nodes, st, on_demand,
                                                                        why):
    obs = observe(nodes, covered=3600, out=1, panic=1, waiting_in=3)
    decision = run(obs, config("adaptive", od_max=4), st)
    assert (decision.spot, decision.on_demand) == (4, on_demand), why


def test_the_on_demand_base_is_always_kept_and_the_fallback_stops_at_its_maximum():
    obs = observe(ready(1), covered=3600, out=1, waiting_in=3)
    decision = run(obs, config("adaptive", od_min=1, od_max=2), state(6, 1, out_at=NOW - 900))
    assert decision.on_demand == 2


def test_without_spot_the_whole_fleet_is_on_demand():
    obs = observe(ready(2, 8, group=Group.ON_DEMAND), out=9, waiting_in=9)
    decision = run(obs, config("seed", spot=False, od_max=5), ScalerState(0, 2))
    assert (decision.spot, decision.on_demand) == (0, 3)


# -- fixed, and what is remembered ------------------------------------------------------------

@pytest.mark.parametrize(("policy", "expected"), [("fixed:3", 3), ("fixed:50", 10),
                                                  ("fixed:0", 1)])
def test_fixed_holds_its_size_within_the_bounds(policy, expected):
    obs = observe(ready(5, 64), out=40, panic=40, waiting=400, concurrency=64)
    assert run(obs, config(policy)).total == expected


def test_the_decision_remembers_when_it_scaled():
    grown = run(observe(ready(2, 8), out=9, waiting_in=9), config("seed"), state(2))
    assert grown.state == ScalerState(3, 0, last_scale_out_at=NOW)
    held = run(observe(ready(3), waiting_in=2), config("seed"), grown.state)
    assert held.state == grown.state
    shrunk = run(observe(ready(3)), config("seed"), grown.state)
    assert shrunk.state.last_scale_in_at == NOW and shrunk.total == 2


# -- ours: several nodes out at once, and the defaults ---------------------------------------

@pytest.mark.parametrize(("running", "low", "step", "expected", "why"), [
    (0.0, 1, 4, 4, "idle: scale_in_step's 4 go"),
    (0.0, 1, 1, 7, "scale_in_step 1: one node a decision, as before"),
    (0.0, 6, 4, 6, "never below fleet.min_size"),
    (150.0, 1, 4, 5, "150 running need 5 nodes of 64 at 50 % (3 at 80 %): 3 go"),
    (200.0, 1, 4, 7, "200 running need 7 nodes at 50 %: 1 goes"),
    (230.0, 1, 4, 8, "230 running need 8 nodes at 50 %: none goes"),
])
def test_adaptive_takes_out_several_nodes_when_the_plan_leaves_them_idle(running, low, step,
                                                                        expected, why):
    # 8 ready nodes of 64, flat arrivals: the window's peak is what runs now.
    obs = trending(ready(8, running / 8), now_rps=10.0, mean_rps=10.0, running_max=running)
    decision = run(obs, config("adaptive", low=low, scale_in_step=step), state(8))
    assert decision.total == expected, why
    assert len(decision.drain) == 8 - expected
    assert f"-{8 - expected} (" in decision.reason or expected == 8


def test_adaptive_takes_out_the_least_busy_nodes_on_demand_first():
    nodes = (Node("spot-1", Group.SPOT, NodeState.READY, 900, 5),
             Node("spot-2", Group.SPOT, NodeState.READY, 900, 1),
             Node("spot-3", Group.SPOT, NodeState.READY, 900, 3),
             Node("on_demand-1", Group.ON_DEMAND, NodeState.READY, 900, 6))
    obs = observe(nodes, covered=3600, waiting_in=0, running_in=15, concurrency=64)
    decision = run(obs, config("adaptive", scale_in_step=2), state(4))
    assert decision.drain == ("on_demand-1", "spot-2") and decision.total == 2


def test_adaptive_takes_out_no_more_than_one_node_without_a_measured_concurrency():
    obs = observe(ready(5), covered=3600, waiting_in=0, running_in=0, concurrency=None)
    assert run(obs, config("adaptive", scale_in_step=4), state(5)).total == 4


def test_the_defaults_plan_two_requests_per_slot_ahead_and_half_a_node_now():
    # Defaults: 8 ready nodes of 32 slots, flat arrivals. 15 running need 8 nodes at 2 a node
    # (6.25 % of 32) ahead; at 16 running a ninth is bought before a queue forms.
    cfg = validate({"fleet": {"min_size": 1, "desired": 1, "max_size": 20}}, "test")
    assert (cfg.autoscaling.slo_utilisation, cfg.autoscaling.target_utilisation,
            cfg.autoscaling.scale_in_step) == (0.0625, 0.5, 4)
    settings = PolicySettings.of(cfg)

    def decide_for(running: float) -> Decision:
        obs = Observations(now=NOW, nodes=ready(8, running / 8), waiting=0.0, running=running,
                           windows=Windows(3600, 0, 0, 0, running, running,
                                           arrivals_rps_in=3.0),
                           node_concurrency=32, arrivals_rps=3.0)
        return decide(obs, settings, state(8))

    assert decide_for(15.0).total == 8
    assert decide_for(17.0).total == 9
    # Falling fast (x0 ahead): what runs now at 50 % of 32, 4 nodes out at most.
    obs = Observations(now=NOW, nodes=ready(8, 2), waiting=0.0, running=16.0,
                       windows=Windows(3600, 0, 0, 0, 80, 16, arrivals_rps_in=10.0),
                       node_concurrency=32, arrivals_rps=3.0)
    assert decide(obs, settings, state(8)).total == 4


@pytest.mark.parametrize("value", [0, -1, 1001, 1.5])
def test_a_bad_scale_in_step_is_refused_with_one_line(value):
    with pytest.raises(ConfigError, match=r"autoscaling\.scale_in_step: got"):
        config("adaptive", scale_in_step=value)
