"""How many GPU nodes the fleet needs: one pure function, the same in the sandbox, in the
simulator and in the AWS scaler Lambda.

`decide(observations, settings, state)` reads a snapshot (each node's state and load, and the
fleet's queue aggregated over the recent past by the caller's source: PromQL windows in the
sandbox, CloudWatch on AWS) and returns the desired size of both groups with a reason a person
can read. It does no I/O and keeps no memory: what it must remember (the desired sizes, when
it last scaled) comes in as `state` and goes out in the decision.

Policies, chosen by `autoscaling.policy`:
- `seed`: the seed's rule, exactly: the mean queue per ready node above the threshold for the
  whole scale-out window adds one node; no queue for the whole scale-in window removes one.
- `adaptive`: sizes for the backlog in one step (at the nodes' measured concurrency), counts
  booting nodes as capacity on the way, reacts to a big surge after the short panic window,
  scales out on utilisation before a queue forms, wakes a fleet at zero when requests
  arrive, and scales in after the cooldown, only when the window's peak load fits in fewer
  nodes: as many ready nodes as the plan leaves idle, at most `scale_in_step` a decision (the
  least busy, which drain first). Every size it
  plans covers the requests on the fleet now at `target_utilisation`, and, when the source
  measures the arrival trend, the same scaled by that trend over the time a new node takes
  to serve (`scale_out_lead_s`) at `slo_utilisation`: a rising day buys nodes before the
  queue, a falling one lets them go, and a steady one keeps room in every batch.
- `fixed:N`: N nodes, for comparison.
Every policy stays within the fleet's bounds, never scales in on missing data, and covers
spot capacity that is not ready after a grace period with on-demand nodes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the scaler Lambda's zip holds no pydantic: config types for checkers only
    from llmfleet.config import FleetConfig


class NodeState(StrEnum):
    BOOTING = "booting"  # launched, not answering /health yet: capacity on the way
    READY = "ready"
    DRAINING = "draining"  # finishing what it has; counts for nothing new


class Group(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on_demand"


@dataclass(frozen=True)
class Node:
    name: str
    group: Group
    state: NodeState
    since_s: float = 0.0  # how long it has been in this state
    running: float = 0.0  # requests it runs now


@dataclass(frozen=True)
class Windows:
    """The fleet's queue over the recent past, aggregated by the source (None: no data).

    `covered_s` is how far back the source has data; a window longer than that is not judged,
    so a fresh scaler never scales in on a history it has not seen."""

    covered_s: float = 0.0
    queue_per_node_min_out: float | None = None  # min over scale_out_after_s, per ready node
    queue_per_node_min_panic: float | None = None  # min over panic_after_s, per ready node
    waiting_max_in: float | None = None  # max over scale_in_after_s, whole fleet
    running_max_in: float | None = None  # max over scale_in_after_s, whole fleet
    running_min_out: float | None = None  # min over scale_out_after_s, whole fleet
    # Requests per second reaching the edge, the mean over scale_in_after_s: against
    # `Observations.arrivals_rps` (the last scale_out_after_s) it gives the arrival trend.
    # None: no trend; the policy plans the load now, at target_utilisation alone.
    arrivals_rps_in: float | None = None


@dataclass(frozen=True)
class Observations:
    now: float
    nodes: tuple[Node, ...]
    waiting: float | None  # requests waiting in the whole fleet now
    running: float | None  # requests running in the whole fleet now
    windows: Windows
    # Requests one ready node runs at once when it is full (vLLM's max_num_seqs, as measured:
    # the running count of nodes that have a queue). None: not measured yet.
    node_concurrency: float | None = None
    # Requests per second reaching the edge (answered or refused). With no node at all no
    # queue can form, so this is what wakes a fleet scaled to zero. None: not measured.
    arrivals_rps: float | None = None

    def count(self, state: NodeState, group: Group | None = None) -> int:
        return sum(1 for n in self.nodes if n.state is state and group in (None, n.group))


@dataclass(frozen=True)
class PolicySettings:
    """What the policy reads of a stack's config: the `autoscaling` section and the bounds of
    both groups (`fleet.*`, `on_demand.*`). Plain values, so that the scaler Lambda, whose zip
    holds no pydantic, decides from the JSON `pulumi up` hands it (`to_json`/`from_json`)."""

    policy: str  # seed | adaptive | fixed:N
    fixed_size: int | None  # N of fixed:N
    queue_threshold: float
    scale_out_after_s: float
    scale_in_after_s: float
    panic_after_s: float
    panic_factor: float
    target_utilisation: float
    slo_utilisation: float
    scale_out_lead_s: float
    cooldown_s: float
    max_step: int
    spot_grace_s: float
    min_size: int  # the primary group's bounds (spot, or on-demand when fleet.spot is off)
    max_size: int
    spot: bool
    on_demand_min: int  # the on-demand fallback group's bounds
    on_demand_max: int
    scale_in_step: int = 1  # adaptive: nodes one decision may take out

    @classmethod
    def of(cls, config: FleetConfig) -> PolicySettings:
        a = config.autoscaling
        return cls(
            policy=a.policy, fixed_size=a.fixed_size, queue_threshold=a.queue_threshold,
            scale_out_after_s=a.scale_out_after_s, scale_in_after_s=a.scale_in_after_s,
            panic_after_s=a.panic_after_s, panic_factor=a.panic_factor,
            target_utilisation=a.target_utilisation, slo_utilisation=a.slo_utilisation,
            scale_out_lead_s=a.scale_out_lead_s, cooldown_s=a.cooldown_s,
            max_step=a.max_step, scale_in_step=a.scale_in_step, spot_grace_s=a.spot_grace_s,
            min_size=config.fleet.min_size, max_size=config.fleet.max_size,
            spot=config.fleet.spot, on_demand_min=config.on_demand.min_size,
            on_demand_max=config.on_demand.max_size,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicySettings:
        return cls(**data)


@dataclass(frozen=True)
class ScalerState:
    """What the scaler remembers between decisions."""

    spot: int  # desired sizes as last set
    on_demand: int
    last_scale_out_at: float | None = None
    last_scale_in_at: float | None = None

    @property
    def total(self) -> int:
        return self.spot + self.on_demand


@dataclass(frozen=True)
class Decision:
    spot: int
    on_demand: int
    reason: str
    drain: tuple[str, ...] = ()  # nodes to take out (they finish their requests first)
    state: ScalerState | None = None  # what to remember for the next decision

    @property
    def total(self) -> int:
        return self.spot + self.on_demand


def decide(obs: Observations, settings: PolicySettings, state: ScalerState) -> Decision:
    """The fleet's desired size now, with the reason."""
    low, high = settings.min_size, settings.max_size
    # The fleet's size as last asked for; on-demand nodes standing in for missing spot ones
    # are not part of it.
    current = max(low, min(high, _primary(state, settings)))
    if settings.fixed_size is not None:
        target = max(low, min(high, settings.fixed_size))
        change = _Change(target, f"fixed at {target}")
    elif settings.policy == "seed":
        change = _seed(obs, settings, current)
    else:
        change = _adaptive(obs, settings, state, current)
    return _place(obs, settings, state, change)


@dataclass(frozen=True)
class _Change:
    target: int
    reason: str
    drain: tuple[str, ...] = ()


def _seed(obs: Observations, s: PolicySettings, current: int) -> _Change:
    low, high = s.min_size, s.max_size
    w = obs.windows
    if _covers(w, s.scale_out_after_s) and w.queue_per_node_min_out is not None and (
            w.queue_per_node_min_out > s.queue_threshold):
        if current >= high:
            return _Change(current, f"queue {w.queue_per_node_min_out:.1f} per node above "
                                    f"{s.queue_threshold:g}, but at the maximum {high}")
        return _Change(current + 1, f"queue {w.queue_per_node_min_out:.1f} per node above "
                                    f"{s.queue_threshold:g} for {s.scale_out_after_s:g} s: +1")
    quiet = _quiet_for(w, s.scale_in_after_s)
    if quiet is not None:
        return _Change(current, quiet)
    if current <= low:
        return _Change(current, f"no queue for {s.scale_in_after_s:g} s, at the minimum {low}")
    victim = _least_busy(obs)
    return _Change(current - 1, f"no queue for {s.scale_in_after_s:g} s: -1",
                   (victim,) if victim else ())


def _adaptive(obs: Observations, s: PolicySettings, state: ScalerState,
              current: int) -> _Change:
    low, high = s.min_size, s.max_size
    w = obs.windows
    serving = obs.count(NodeState.READY)
    on_the_way = obs.count(NodeState.BOOTING)
    if current == 0 and not on_the_way and obs.arrivals_rps:
        return _Change(max(1, low), f"{obs.arrivals_rps:.2g} requests/s and no node: wake up")
    panic = (_covers(w, s.panic_after_s) and w.queue_per_node_min_panic is not None
             and w.queue_per_node_min_panic >= s.panic_factor * s.queue_threshold)
    sustained = (_covers(w, s.scale_out_after_s) and w.queue_per_node_min_out is not None
                 and w.queue_per_node_min_out > s.queue_threshold)
    plan = _Plan.of(obs, s)
    busy = (_covers(w, s.scale_out_after_s) and w.running_min_out is not None and serving > 0
            and bool(obs.node_concurrency) and plan.nodes(w.running_min_out) > serving)
    if busy and not (panic or sustained):
        # Before a queue forms: a new node serves minutes after it is asked for, and a queue
        # that forms meanwhile costs every request behind it. The window's least load, so
        # that one busy scrape does not buy a node.
        assert w.running_min_out is not None
        needed = plan.nodes(w.running_min_out)
        add = min(needed - max(current, serving + on_the_way), s.max_step, high - current)
        if add > 0:
            return _Change(current + add, f"{w.running_min_out:g} running for "
                                          f"{s.scale_out_after_s:g} s{plan.text()} needs "
                                          f"{needed} nodes, {serving} ready: +{add}")
    if panic or sustained:
        needed = plan.nodes((obs.running or 0.0) + (obs.waiting or 0.0))
        # Booting nodes, and nodes asked for but not launched yet, are capacity on the way:
        # ask only for what they do not cover.
        add = needed - max(current, serving + on_the_way)
        if add <= 0 and sustained and not on_the_way and serving >= current:
            add = 1  # the estimate says enough, yet the queue stays: one more, as the seed
        add = min(add, s.max_step, high - current)
        why = (f"queue {'surge' if panic else 'above'} {_queue_text(w, panic)} per node; "
               f"backlog{plan.text()} needs {needed} nodes, {serving} ready + {on_the_way} "
               "booting")
        if add <= 0:
            return _Change(current, why + (f"; at the maximum {high}" if current >= high
                                           else ": enough on the way"))
        return _Change(current + add, why + f": +{add}")
    quiet = _quiet_for(w, s.scale_in_after_s)
    if quiet is not None:
        return _Change(current, quiet)
    if (state.last_scale_out_at is not None
            and obs.now - state.last_scale_out_at < s.cooldown_s):
        return _Change(current, f"no queue, but within {s.cooldown_s:g} s of a scale-out")
    if current <= low:
        return _Change(current, f"no queue for {s.scale_in_after_s:g} s, at the minimum {low}")
    if on_the_way:
        return _Change(current, "no queue, but nodes are still booting")
    ready = [n for n in obs.nodes if n.state is NodeState.READY]
    if not ready:
        return _Change(current, "no queue, but no ready node to take out")
    # The window's peak fits in one node fewer as planned (on a rising day the trend makes
    # it bigger), or do not shrink. While arrivals fall the peak is history: what runs now
    # must fit at target_utilisation, the peak as the trend shrinks it at slo_utilisation.
    if obs.node_concurrency and w.running_max_in is not None and (
            plan.nodes(w.running_max_in, now=obs.running) > serving - 1):
        return _Change(current, f"no queue, but {w.running_max_in:g} running{plan.text()} "
                                f"would not fit in {serving - 1} nodes")
    # As many as the plan leaves idle, at most scale_in_step: the least busy nodes drain
    # (finish what they run) before they go, and an edge that spreads requests evenly seldom
    # leaves a node idle. On-demand first: it costs more.
    take = 1
    if obs.node_concurrency and w.running_max_in is not None:
        spare = serving - plan.nodes(w.running_max_in, now=obs.running)
        take = max(1, min(spare, s.scale_in_step, current - low, len(ready)))
    victims = tuple(n.name for n in sorted(
        ready, key=lambda n: (n.group is not Group.ON_DEMAND, n.running, -n.since_s))[:take])
    return _Change(current - take, f"no queue for {s.scale_in_after_s:g} s: -{take} "
                                   f"({', '.join(victims)})", victims)


def _place(obs: Observations, s: PolicySettings, state: ScalerState,
           change: _Change) -> Decision:
    """Split the target between the groups: the primary group gets it all; on-demand nodes
    stand in for spot capacity that is not ready after the grace period, and are handed back
    once spot is ready."""
    if not s.spot:
        spot, on_demand = 0, max(s.on_demand_min, min(s.on_demand_max, change.target))
        reason = change.reason
    else:
        spot = change.target
        short = _spot_shortfall(obs, state, spot, s.spot_grace_s, change.target > state.spot)
        on_demand = max(s.on_demand_min, min(s.on_demand_max, s.on_demand_min + short))
        reason = change.reason + (f"; {short} on-demand for spot not ready" if short else "")
    now = obs.now
    grew, shrank = change.target > _primary(state, s), change.target < _primary(state, s)
    remembered = replace(
        state, spot=spot, on_demand=on_demand,
        last_scale_out_at=now if grew else state.last_scale_out_at,
        last_scale_in_at=now if shrank else state.last_scale_in_at,
    )
    return Decision(spot, on_demand, reason, change.drain, remembered)


def _spot_shortfall(obs: Observations, state: ScalerState, spot_target: int, grace_s: float,
                    asking_now: bool) -> int:
    ready = obs.count(NodeState.READY, Group.SPOT)
    young = sum(1 for n in obs.nodes if n.group is Group.SPOT
                and n.state is NodeState.BOOTING and n.since_s < grace_s)
    booting = obs.count(NodeState.BOOTING, Group.SPOT)
    # Nodes the group has not even launched yet are within grace while the ask is recent.
    recent = asking_now or (state.last_scale_out_at is not None
                            and obs.now - state.last_scale_out_at < grace_s)
    absent = max(0, spot_target - ready - booting)
    return max(0, spot_target - ready - young - (absent if recent else 0))


def _primary(state: ScalerState, s: PolicySettings) -> int:
    return state.spot if s.spot else state.on_demand


@dataclass(frozen=True)
class _Plan:
    """How many nodes a load of requests (running and waiting) needs: what is on the fleet
    now at `target_utilisation`, and what the arrival trend makes of it by the time a node
    asked for now serves at `slo_utilisation`, whichever needs more.

    The trend is the arrival rate over the last scale_out_after_s against its mean over
    scale_in_after_s (their middles (in - out) / 2 apart), projected scale_out_lead_s ahead:
    on a rising day nodes come before the queue and are not taken out, on a falling one the
    load expected is smaller and nodes go. With no trend measured (a source without
    `Windows.arrivals_rps_in`, a history shorter than scale_in_after_s, no arrivals) the
    load is planned as it is, at target_utilisation alone."""

    per_node: float  # requests one ready node runs when full; 0: not known
    serving: int
    target: float
    slo: float
    trend: float  # arrivals expected scale_out_lead_s from now, over arrivals now

    @classmethod
    def of(cls, obs: Observations, s: PolicySettings) -> _Plan:
        # Not measured yet: the busiest node's running count, which is at most its capacity.
        per_node = obs.node_concurrency or max((n.running for n in obs.nodes
                                                if n.state is NodeState.READY), default=0.0)
        trend = _trend(obs, s)
        # Headroom is bought for the load expected, and only the trend tells what that is:
        # without it the fleet would keep the headroom through every decline.
        slo = s.target_utilisation if trend is None else s.slo_utilisation
        return cls(per_node, obs.count(NodeState.READY), s.target_utilisation, slo,
                   1.0 if trend is None else trend)

    def nodes(self, load: float, now: float | None = None) -> int:
        """Nodes for `load`; `now`, when given, is the load at this moment where `load` is a
        window's peak: it stands for the peak in the first term while arrivals fall."""
        if self.per_node <= 0:
            return self.serving + 1
        current = load if now is None or self.trend >= 1.0 else now
        on_now = current / (self.per_node * self.target)
        ahead = load * self.trend / (self.per_node * self.slo)
        # A hair below a whole number is that number: 0.3 / 0.1 is 2.9999999999999996.
        return math.ceil(max(on_now, ahead) - 1e-9)

    def text(self) -> str:
        return "" if self.trend == 1.0 else f" (arrivals x{self.trend:.2f} ahead)"


def _trend(obs: Observations, s: PolicySettings) -> float | None:
    """Arrivals expected scale_out_lead_s from now over arrivals now; None when not known."""
    w = obs.windows
    now, mean_in = obs.arrivals_rps, w.arrivals_rps_in
    apart_s = (s.scale_in_after_s - s.scale_out_after_s) / 2
    if not now or mean_in is None or apart_s <= 0 or not _covers(w, s.scale_in_after_s):
        return None
    slope = (now - mean_in) / apart_s
    return max(0.0, 1.0 + slope * s.scale_out_lead_s / now)


def _least_busy(obs: Observations) -> str | None:
    ready = [n for n in obs.nodes if n.state is NodeState.READY]
    return min(ready, key=lambda n: n.running).name if ready else None


def _covers(w: Windows, window_s: float) -> bool:
    return w.covered_s >= window_s


def _quiet_for(w: Windows, window_s: float) -> str | None:
    """None when the fleet had no queue for the whole window; else why no scale-in."""
    if not _covers(w, window_s) or w.waiting_max_in is None:
        return (f"no data for the last {window_s:g} s (have {w.covered_s:.0f} s): "
                "no scale-in on missing data")
    if w.waiting_max_in > 0:
        return f"holding: the queue reached {w.waiting_max_in:g} in the last {window_s:g} s"
    return None


def _queue_text(w: Windows, panic: bool) -> str:
    value = w.queue_per_node_min_panic if panic else w.queue_per_node_min_out
    return f"{value:.1f}"
