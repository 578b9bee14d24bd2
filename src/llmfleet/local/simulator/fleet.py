"""The two auto scaling groups, spot and on-demand, as AWS runs them for the scaler: launch
up to the desired size, take booting and then the least busy nodes out above it, replace a
spot node after AWS takes it back, and bill every node from launch to termination.

A node boots (`boot_s + load_s`, or `warm_start_s` for an on-demand node from the warm pool),
serves, and leaves by one of two ways:
- the scaler drains it: it takes nothing new and leaves once its queue and batch are done;
- AWS reclaims it (spot): at the two-minute notice it takes nothing new and hands its queue
  back to the edge; what still runs at the end of the notice is retried elsewhere.
A node AWS reclaimed still counts in its group until it is gone, as in an auto scaling group
without capacity rebalancing, which launches the replacement after the termination.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import simpy

from llmfleet.autoscale.policy import Group, NodeState
from llmfleet.config import FleetConfig
from llmfleet.local.simbackend.presets import Preset
from llmfleet.local.simulator.engine import Finished, NodeEngine
from llmfleet.local.simulator.settings import SimulationSettings
from llmfleet.local.simulator.workload import Request


@dataclass(eq=False)
class SimNode:
    name: str
    group: Group
    launched_at: float
    engine: NodeEngine = field(init=False)
    state: NodeState = NodeState.BOOTING
    since: float = 0.0  # when it entered its state
    ended_at: float | None = None
    reclaimed: bool = False  # AWS gave the spot notice

    @property
    def alive(self) -> bool:
        return self.ended_at is None


class Fleet:
    """Every node ever launched, and the groups' desired sizes."""

    def __init__(self, env: simpy.Environment, config: FleetConfig, preset: Preset,
                 settings: SimulationSettings, on_done: Finished, on_give_up: Finished,
                 hand_back: Callable[[list[Request]], None]) -> None:
        self._env = env
        self._preset = preset
        self._settings = settings
        self._give_up_s = config.load_balancing.read_timeout_s
        self._on_done, self._on_give_up, self._hand_back = on_done, on_give_up, hand_back
        self.nodes: list[SimNode] = []
        self.ready: list[SimNode] = []  # what the edge sends requests to
        self.desired = {Group.SPOT: 0, Group.ON_DEMAND: 0}
        self._names = {group: itertools.count(1) for group in Group}
        self._warm = config.on_demand.warm_pool
        self.interruptions = 0

    def start_with(self, group: Group, count: int) -> None:
        """`count` nodes already serving at time 0."""
        self.desired[group] += count
        for _ in range(count):
            self._became_ready(self._new_node(group))

    def live(self) -> list[SimNode]:
        return [node for node in self.nodes if node.alive]

    # -- the groups -------------------------------------------------------------------------

    def set_desired(self, group: Group, size: int) -> None:
        self.desired[group] = size
        self._reconcile(group)

    def _reconcile(self, group: Group) -> None:
        members = [n for n in self.nodes if n.alive and n.group is group
                   and (n.state is not NodeState.DRAINING or n.reclaimed)]
        missing = self.desired[group] - len(members)
        if missing > 0:
            if group is Group.SPOT and self._settings.spot_capacity is not None:
                spot = sum(1 for n in self.nodes if n.alive and n.group is Group.SPOT)
                missing = min(missing, self._settings.spot_capacity - spot)
            for _ in range(missing):
                self._launch(group)
            return
        removable = [n for n in members if not n.reclaimed]
        # The newest booting nodes first (least spent on them), then the least busy.
        removable.sort(key=lambda n: (0, -n.launched_at) if n.state is NodeState.BOOTING
                       else (1, n.engine.load))
        excess = -missing
        for node in removable[:excess]:
            self.drain(node)

    def _new_node(self, group: Group) -> SimNode:
        prefix = "spot" if group is Group.SPOT else "od"
        node = SimNode(f"{prefix}-{next(self._names[group])}", group, self._env.now,
                       since=self._env.now)
        node.engine = NodeEngine(self._env, self._preset, self._give_up_s, self._on_done,
                                 self._on_give_up, lambda: self._idle(node))
        self.nodes.append(node)
        return node

    def _launch(self, group: Group) -> None:
        node = self._new_node(group)
        delay = self._settings.cold_start_s
        if group is Group.ON_DEMAND and self._warm > 0:
            delay = self._settings.warm_start_s
            self._warm -= 1
            # The group prepares a stopped instance to take its place in the pool.
            refill = self._env.timeout(self._settings.cold_start_s)
            refill.callbacks.append(lambda _e: self._refill())
        booted = self._env.timeout(delay)
        booted.callbacks.append(lambda _e: self._became_ready(node))

    def _refill(self) -> None:
        self._warm += 1

    def _became_ready(self, node: SimNode) -> None:
        if node.state is not NodeState.BOOTING:
            return  # taken out while it booted
        node.state, node.since = NodeState.READY, self._env.now
        self.ready.append(node)

    # -- leaving ----------------------------------------------------------------------------

    def drain(self, node: SimNode) -> None:
        """The scaler takes `node` out: nothing new, and gone once it has finished."""
        if node.state is NodeState.DRAINING:
            return
        was_booting = node.state is NodeState.BOOTING
        self._stop_serving(node)
        if was_booting or not node.engine.load:
            self._terminate(node)

    def reclaim(self, node: SimNode) -> None:
        """AWS's two-minute notice for a spot node."""
        if node.reclaimed or not node.alive:
            return
        node.reclaimed = True
        self.interruptions += 1
        self._stop_serving(node)
        self._hand_back(node.engine.take_waiting())
        gone = self._env.timeout(self._settings.spot_notice_s)
        gone.callbacks.append(lambda _e: self._terminate(node))

    def _stop_serving(self, node: SimNode) -> None:
        if node.state is NodeState.READY:
            self.ready.remove(node)
        node.state, node.since = NodeState.DRAINING, self._env.now

    def _idle(self, node: SimNode) -> None:
        if node.state is NodeState.DRAINING and not node.reclaimed and node.alive:
            self._terminate(node)

    def _terminate(self, node: SimNode) -> None:
        if not node.alive:
            return
        node.ended_at = self._env.now
        self._hand_back(node.engine.stop())
        if node.reclaimed:
            self._reconcile(node.group)

    # -- billing ----------------------------------------------------------------------------

    def node_hours(self, group: Group, until: float) -> float:
        """Hours the group's instances ran, launch to termination (or `until`)."""
        return sum((min(n.ended_at if n.ended_at is not None else until, until)
                    - n.launched_at) for n in self.nodes if n.group is group) / 3600
