"""The edge in front of the nodes, as nginx's `least_conn` runs it: each request goes to the
ready node with the fewest requests on it (running or queued there), ties in turn. A node
queues what it cannot run yet (vLLM's FIFO waiting queue); the edge never moves a request
once sent, except when a spot node hands its requests back, which are sent again."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llmfleet.local.simulator.workload import Request

if TYPE_CHECKING:
    from llmfleet.local.simulator.fleet import SimNode

Failed = Callable[[Request, float, str], None]


class Edge:
    def __init__(self, ready: list[SimNode], now: Callable[[], float], on_fail: Failed) -> None:
        self._ready = ready  # the fleet's ready nodes, kept current by the fleet
        self._now = now
        self._on_fail = on_fail
        self._turn = 0

    def send(self, request: Request) -> None:
        ready = self._ready
        count = len(ready)
        if not count:
            # nginx answers 502 at once: there is nothing to queue a request on.
            self._on_fail(request, self._now(), "no ready node")
            return
        start = self._turn % count
        best, best_load, offset = ready[start], None, 0
        for i in range(count):
            node = ready[(start + i) % count]
            load = node.engine.load
            if best_load is None or load < best_load:
                best, best_load, offset = node, load, i
        self._turn = start + offset + 1
        request.attempts += 1
        best.engine.submit(request)

    def send_again(self, requests: list[Request]) -> None:
        """Requests a node handed back (it is going away): the client's retry."""
        for request in requests:
            self.send(request)
