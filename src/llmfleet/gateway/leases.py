"""Give in-flight slots back when nginx finishes a request.

nginx cannot call the gateway when a request ends, but it can log: the edge sends one syslog
line over loopback UDP per finished request that holds a lease (`access_log syslog:...
if=$llmfleet_lease`). A lost datagram only delays the release: every lease also expires on
its own after the longest request time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

SYSLOG_TAG = "llmfleet_lease"
# Longer than any request may take, so a lease lost with its syslog line still frees itself.
LEASE_MARGIN_S = 60


def lease_ttl_s(read_timeout_s: float) -> float:
    """How long an in-flight slot is held at most: the edge's read timeout and a margin."""
    return read_timeout_s + LEASE_MARGIN_S


def lease_from_syslog(datagram: bytes) -> str | None:
    """The lease in one nginx syslog line: `<pri>timestamp tag: lease`."""
    text = datagram.decode("ascii", errors="replace").strip()
    marker = SYSLOG_TAG + ": "
    _, found, lease = text.partition(marker)
    return lease.strip() or None if found else None


class LeaseListener(asyncio.DatagramProtocol):
    def __init__(self, release: Callable[[str], Awaitable[None]]):
        self.release = release
        self.tasks: set[asyncio.Task] = set()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        lease = lease_from_syslog(data)
        if lease:
            task = asyncio.ensure_future(self.release(lease))
            self.tasks.add(task)  # keep a reference until done, as asyncio asks
            task.add_done_callback(self.tasks.discard)
