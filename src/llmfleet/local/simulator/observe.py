"""The simulator as the policy's observation source: it scrapes the fleet's queue the way
Prometheus scrapes vLLM (every `alerts.scrape_interval_s`) and aggregates its own history
into the `Windows` the policy reads, as the sandbox's PromQL and AWS's CloudWatch do:

- queue per ready node (the fleet's waiting requests over its ready nodes, at least one):
  its minimum over the scale-out and panic windows;
- the fleet's waiting and running requests: their maximum over the scale-in window, and the
  running requests' minimum over the scale-out window;
- requests arriving per second over the scale-out window (what wakes a fleet at zero) and
  over the scale-in window (against the first, the arrival trend).

A window takes the samples in (now - window, now]. The waiting count is vLLM's gauge, which
holds what its scheduler could not admit (`NodeEngine.queued`). `node_concurrency` is
measured, not read from the preset: the most requests running on a ready node that has a
queue (so is full), remembered from the last time any node had one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from llmfleet.autoscale.policy import Node, NodeState, Observations, Windows
from llmfleet.config import Autoscaling
from llmfleet.local.simulator.fleet import SimNode


class History:
    def __init__(self, scaling: Autoscaling, started_at: float = 0.0,
                 node_concurrency: float | None = None) -> None:
        self._scaling = scaling
        self._started_at = started_at
        self._keep_s = max(scaling.scale_out_after_s, scaling.panic_after_s,
                           scaling.scale_in_after_s)
        # (t, waiting per ready node, waiting, running, requests arrived so far)
        self._samples: deque[tuple[float, float, float, float, int]] = deque()
        # What the engines are configured to run at once (vLLM's max_num_seqs) until a queue
        # has measured it.
        self.node_concurrency: float | None = node_concurrency

    def scrape(self, now: float, nodes: Iterable[SimNode], arrived: int) -> None:
        waiting = running = ready = 0
        full = None
        for node in nodes:
            engine = node.engine
            queued = engine.queued
            waiting += queued
            running += engine.running
            if node.state is NodeState.READY:
                ready += 1
                if queued and (full is None or engine.running > full):
                    full = engine.running
        if full:
            self.node_concurrency = float(full)
        samples = self._samples
        samples.append((now, waiting / max(ready, 1), float(waiting), float(running), arrived))
        while samples and samples[0][0] <= now - self._keep_s + 1e-9:
            samples.popleft()

    def windows(self, now: float) -> Windows:
        s = self._scaling
        return Windows(
            covered_s=now - self._started_at,
            queue_per_node_min_out=self._over(now, s.scale_out_after_s, 1, min),
            queue_per_node_min_panic=self._over(now, s.panic_after_s, 1, min),
            waiting_max_in=self._over(now, s.scale_in_after_s, 2, max),
            running_max_in=self._over(now, s.scale_in_after_s, 3, max),
            running_min_out=self._over(now, s.scale_out_after_s, 3, min),
            arrivals_rps_in=self.arrivals_rps(now, s.scale_in_after_s),
        )

    def arrivals_rps(self, now: float, window_s: float | None = None) -> float | None:
        """Requests arrived per second over the window (default: the scale-out window)."""
        window_s = self._scaling.scale_out_after_s if window_s is None else window_s
        window = [sample for sample in self._samples if sample[0] > now - window_s + 1e-9]
        if len(window) < 2 or window[-1][0] <= window[0][0]:
            return None
        return (window[-1][4] - window[0][4]) / (window[-1][0] - window[0][0])

    def _over(self, now: float, window_s: float, column: int,
              pick: Callable[[list[float]], float]) -> float | None:
        values = [sample[column] for sample in self._samples
                  if sample[0] > now - window_s + 1e-9]
        return pick(values) if values else None

    def observations(self, now: float, nodes: Iterable[SimNode]) -> Observations:
        live = list(nodes)
        return Observations(
            now=now,
            nodes=tuple(Node(n.name, n.group, n.state, now - n.since, float(n.engine.running))
                        for n in live),
            waiting=float(sum(n.engine.queued for n in live)),
            running=float(sum(n.engine.running for n in live)),
            windows=self.windows(now),
            node_concurrency=self.node_concurrency,
            arrivals_rps=self.arrivals_rps(now),
        )
