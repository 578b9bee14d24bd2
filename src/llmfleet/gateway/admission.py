"""The edge's queue when every node is full: admitted requests wait here, in order, for a free
place on the fleet, up to a depth and a time, then get the busy answer.

Open-source nginx cannot queue a request for an upstream (its `queue` directive is NGINX Plus
only): with `max_conns` on every server it sends the overflow to the busy server at once. So
the gateway, which nginx asks about every request before it proxies it, holds the places:

- the fleet's capacity is `load_balancing.max_requests_per_node` per ready node, the nodes the
  sync agent last found ready (its state file, read again at most once a second);
- each admitted request takes a place and gives it back when nginx logs its end (the lease
  line over loopback UDP, `llmfleet.gateway.leases`); a place whose line was lost frees
  itself after the longest request time;
- a request that finds no place waits, first come first served, at most
  `load_balancing.queue_timeout_s`, and only while fewer than `load_balancing.queue_depth` wait;
  else it gets 429 busy with Retry-After.

The sync agent's file missing or unreadable means the capacity is unknown: nothing waits (nginx's
own `max_conns` and the busy server still bound each node).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("llmfleet.gateway.admission")

# Lease tokens for a place on the fleet start with this; per-key leases are "<digest>:<id>".
PLACE_PREFIX = "@"
# How often capacity is read again, and waiting requests looked at when nothing else happens.
REFRESH_S = 1.0


class ReadyNodes:
    """How many nodes the sync agent last found ready, from its state file (None: unknown)."""

    def __init__(self, state_file: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.state_file, self.clock = state_file, clock
        self._read_at = float("-inf")
        self._count: int | None = None
        self._said_unknown = False

    def count(self) -> int | None:
        if self.clock() - self._read_at >= REFRESH_S:
            self._read_at = self.clock()
            try:
                members = json.loads(self.state_file.read_text())["members"]
                self._count = sum(1 for m in members if m.get("state") == "ready")
                self._said_unknown = False
            except (OSError, ValueError, KeyError, TypeError) as error:
                self._count = None
                if not self._said_unknown:
                    log.warning("fleet capacity unknown (%s: %s): no edge queue until the sync "
                                "agent's state can be read", self.state_file, error)
                    self._said_unknown = True
        return self._count


class Admission:
    """Places on the fleet, and the requests waiting for one."""

    def __init__(self, ready_nodes: Callable[[], int | None], per_node: int, depth: int,
                 timeout_s: float, place_ttl_s: float, retry_after_s: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ready_nodes, self.per_node = ready_nodes, per_node
        self.depth, self.timeout_s, self.place_ttl_s = depth, timeout_s, place_ttl_s
        self.retry_after_s = retry_after_s  # what the busy answer tells clients to wait
        self.clock = clock
        self.held: dict[str, float] = {}  # place -> when it frees itself at the latest
        self.waiting: deque[asyncio.Future[str]] = deque()
        self._ids = (f"{PLACE_PREFIX}{secrets.token_hex(4)}.{n}" for n in itertools.count())

    @property
    def capacity(self) -> int | None:
        nodes = self.ready_nodes()
        return None if nodes is None else nodes * self.per_node

    async def enter(self) -> str | None:
        """A place on the fleet (its lease token), or None: busy, the caller answers 429."""
        self._expire()
        capacity = self.capacity
        if capacity is None or (len(self.held) < capacity and not self.waiting):
            return self._take()
        if len(self.waiting) >= self.depth or self.timeout_s <= 0:
            return None
        turn: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        self.dispatch()  # room may have come since the last request ended
        try:
            return await asyncio.wait_for(asyncio.shield(turn), self.timeout_s)
        except TimeoutError:
            self._give_back(turn)  # a place may have come just as the wait ran out
            return None
        except asyncio.CancelledError:
            self._give_back(turn)  # nginx gave up on the request while it waited
            raise
        finally:
            if turn in self.waiting:
                self.waiting.remove(turn)

    def leave(self, place: str) -> None:
        """A request ended (or gave up its place): the next waiting one may go."""
        if self.held.pop(place, None) is not None:
            self.dispatch()

    def dispatch(self) -> None:
        """Give free places to waiting requests, oldest first (also when capacity grew)."""
        self._expire()
        capacity = self.capacity
        while self.waiting and (capacity is None or len(self.held) < capacity):
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(self._take())

    async def keep_moving(self) -> None:
        """Look at capacity and waiting requests every REFRESH_S: a node that became ready
        must let waiting requests go even when no request ends."""
        while True:
            await asyncio.sleep(REFRESH_S)
            self.dispatch()

    def _give_back(self, turn: asyncio.Future[str]) -> None:
        if turn.done() and not turn.cancelled():
            self.leave(turn.result())

    def _take(self) -> str:
        place = next(self._ids)
        self.held[place] = self.clock() + self.place_ttl_s
        return place

    def _expire(self) -> None:
        now = self.clock()
        for place in [p for p, until in self.held.items() if until <= now]:
            del self.held[place]
