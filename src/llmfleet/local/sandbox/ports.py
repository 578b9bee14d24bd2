"""Loopback ports for the sandbox: the preferred ones when free, any free one otherwise."""

from __future__ import annotations

import os
import socket

LOOPBACK = "127.0.0.1"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


# Set to "any", a sandbox takes a free port the kernel picks wherever it would have preferred a
# fixed one (Prometheus' usual port, ...): the test suite sets it, so two runs on one machine
# (or a run beside a user's own sandbox) do not both find a preferred port free and race for
# it.
PORTS_VARIABLE = "LLMFLEET_SANDBOX_PORTS"


def prefer_fixed_ports() -> bool:
    return os.environ.get(PORTS_VARIABLE, "") != "any"


def pick_ports(first: int, count: int, taken: set[int] | None = None) -> list[int]:
    """`first`, `first + 1`, ... where free, else a free port in place of each taken one
    (a free one for each, with LLMFLEET_SANDBOX_PORTS=any)."""
    taken = set(taken or ())
    chosen = []
    fixed = prefer_fixed_ports()
    for port in range(first, first + count):
        candidate = (port if fixed and port not in taken and port_is_free(port)
                     else free_port())
        while candidate in taken:
            candidate = free_port()
        taken.add(candidate)
        chosen.append(candidate)
    return chosen


def free_udp_port(host: str = LOOPBACK) -> int:
    """A UDP port the kernel says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
