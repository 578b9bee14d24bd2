"""The edge's queue for a place on the fleet, on its own: first come first served, bounded in
depth and time, places given back on a request's end or at their expiry, waiting requests let
go when a node becomes ready, and no queue at all when the capacity is unknown."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from llmfleet.gateway import answers
from llmfleet.gateway.admission import Admission, ReadyNodes
from llmfleet.gateway.answers import Answer
from llmfleet.gateway.server import takes_a_place


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queue(nodes: int | None = 1, *, per_node: int = 2, depth: int = 10, timeout_s: float = 5,
          ttl_s: float = 300, clock: Clock | None = None) -> tuple[Admission, list[int | None]]:
    ready = [nodes]
    return Admission(lambda: ready[0], per_node, depth, timeout_s, ttl_s, retry_after_s=5,
                     clock=clock or Clock()), ready


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_room_is_given_at_once_up_to_the_capacity_and_then_requests_wait_in_order():
    async def scenario() -> None:
        admission, _ = queue()
        first, second = await admission.enter(), await admission.enter()
        assert first and second and len(admission.held) == 2
        third = asyncio.create_task(admission.enter())
        fourth = asyncio.create_task(admission.enter())
        await settle()
        assert len(admission.waiting) == 2 and not third.done()
        admission.leave(first)
        await settle()
        assert third.done() and not fourth.done()  # the older one goes first
        admission.leave(second)
        assert (await fourth) is not None and len(admission.held) == 2

    asyncio.run(scenario())


def test_a_request_that_waits_past_the_timeout_is_refused_and_leaves_the_queue():
    async def scenario() -> None:
        admission, _ = queue(timeout_s=0.05)
        await admission.enter()
        await admission.enter()
        assert await admission.enter() is None
        assert not admission.waiting and len(admission.held) == 2

    asyncio.run(scenario())


def test_past_the_depth_a_request_is_refused_at_once():
    async def scenario() -> None:
        admission, _ = queue(depth=1)
        await admission.enter()
        await admission.enter()
        waiter = asyncio.create_task(admission.enter())
        await settle()
        assert await asyncio.wait_for(admission.enter(), 0.01) is None  # no wait at all
        waiter.cancel()

    asyncio.run(scenario())


def test_a_node_that_becomes_ready_lets_waiting_requests_go():
    async def scenario() -> None:
        admission, ready = queue(nodes=0)
        waiter = asyncio.create_task(admission.enter())
        await settle()
        assert not waiter.done()
        ready[0] = 1
        admission.dispatch()  # what keep_moving does every second
        assert (await waiter) is not None

    asyncio.run(scenario())


def test_a_place_whose_end_was_never_logged_frees_itself_at_its_expiry():
    async def scenario() -> None:
        clock = Clock()
        admission, _ = queue(per_node=1, ttl_s=60, clock=clock)
        await admission.enter()
        waiter = asyncio.create_task(admission.enter())
        await settle()
        clock.now += 61
        admission.dispatch()
        assert (await waiter) is not None and len(admission.held) == 1

    asyncio.run(scenario())


def test_with_the_capacity_unknown_nothing_waits():
    async def scenario() -> None:
        admission, _ = queue(nodes=None)
        places = [await admission.enter() for _ in range(50)]
        assert all(places) and not admission.waiting

    asyncio.run(scenario())


def test_ready_nodes_come_from_the_sync_agents_state_file(tmp_path: Path):
    state = tmp_path / "members.json"
    clock = Clock()
    nodes = ReadyNodes(state, clock)
    assert nodes.count() is None  # no file yet: unknown
    state.write_text(json.dumps({"members": [
        {"name": "a", "state": "ready"}, {"name": "b", "state": "booting"},
        {"name": "c", "state": "ready"}, {"name": "d", "state": "down"}]}))
    assert nodes.count() is None  # read again only after a second
    clock.now += 1
    assert nodes.count() == 2


def test_a_place_rides_in_the_lease_beside_a_keys_slot():
    admitted = Answer(answers.ADMIT, {"x-llmfleet-lease": "abc:1"})
    assert answers.with_lease(admitted, "@p.1").headers["x-llmfleet-lease"] == "@p.1 abc:1"
    plain = Answer(answers.ADMIT, {})
    assert answers.with_lease(plain, "@p.2").headers["x-llmfleet-lease"] == "@p.2"


@pytest.mark.parametrize(("uri", "waits"), [
    ("/v1/chat/completions", True), ("/v1/completions?x=1", True), ("/v1/models", False),
    ("/v1/models/", False)])
def test_model_work_takes_a_place_and_listing_models_does_not(uri, waits):
    assert takes_a_place({"x-original-uri": uri}) is waits


def test_a_waiting_request_nginx_gave_up_on_leaves_the_queue_and_holds_no_place():
    async def scenario() -> None:
        admission, _ = queue(per_node=1)
        first = await admission.enter()
        abandoned = asyncio.create_task(admission.enter())
        await settle()
        abandoned.cancel()  # what the connection's loss does (llmfleet.gateway.http)
        await asyncio.gather(abandoned, return_exceptions=True)
        assert not admission.waiting
        admission.leave(first)
        assert not admission.held  # nobody took the freed place for the one that left
        assert await admission.enter() is not None

    asyncio.run(scenario())
