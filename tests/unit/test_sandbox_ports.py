"""The sandbox's ports: the preferred one when it is free, another when it is taken, and with
LLMFLEET_SANDBOX_PORTS=any (the test suite's setting) never a fixed one at all."""

from __future__ import annotations

import socket

import pytest

from llmfleet.local.sandbox.ports import PORTS_VARIABLE, free_port, pick_ports


def test_the_preferred_ports_when_free_and_others_where_taken(monkeypatch):
    monkeypatch.delenv(PORTS_VARIABLE, raising=False)
    with socket.socket() as squatter:  # a port in use on this machine
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        first = free_port()
        assert pick_ports(first, 1) == [first]
        [instead] = pick_ports(busy, 1)
        chosen = pick_ports(first, 2, taken={first + 1})  # already given to another service
    assert instead != busy
    assert chosen[0] == first and chosen[1] != first + 1


@pytest.mark.parametrize("_round", range(3))
def test_with_any_no_preferred_port_is_taken_even_when_free(monkeypatch, _round):
    monkeypatch.setenv(PORTS_VARIABLE, "any")
    first = free_port()
    chosen = pick_ports(first, 4)
    # The kernel's ephemeral picks: distinct, and not the fixed run first..first+3 (which
    # a second run on this machine would also find free and race for).
    assert len(set(chosen)) == 4
    assert chosen != list(range(first, first + 4))
