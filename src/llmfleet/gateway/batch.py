"""Decisions that need Redis at the same moment share one round trip.

A burst hands the gateway hundreds of requests in one turn of the event loop. One pipeline
per decision cost about 65-90 µs of CPU each in redis-py (a pipeline object, a pooled
connection, a read per reply), opened a Redis connection per concurrent decision, and the
gateway fell behind nginx, whose connections then queued for accept(). Here decisions queue,
and one pipeline at a time carries every decision queued so far (up to `MAX_COMMANDS`): one
decision alone still goes out on the loop's next turn, a burst costs about 15-25 µs of CPU a
decision and one round trip per few hundred.

Each decision's commands stay separate Redis commands (the limiter's EVALSHA is atomic on its
own), so sharing a pipeline changes no result, only the number of round trips.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

# Redis answers a pipeline when it has run all of it; bounded, so the first replies never wait
# on hundreds of scripts and no read comes near the Redis timeout (redis_timeout_ms).
MAX_COMMANDS = 256

Command = Sequence[Any]
Waiting = tuple[Sequence[Command], "asyncio.Future[list[Any]]"]


class RedisBatcher:
    def __init__(self, client: aioredis.Redis):
        self.client = client
        self._waiting: deque[Waiting] = deque()
        self._sender: asyncio.Task | None = None

    def execute(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """The replies to `commands`, in order; a command's error is returned in its place
        (as redis-py does with raise_on_error=False), a lost connection is raised."""
        replies: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((commands, replies))
        if self._sender is None:
            # A task starts on the loop's next turn: by then this turn's decisions are queued.
            self._sender = asyncio.create_task(self._send_all())
        return replies

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch = [self._waiting.popleft()]
                size = len(batch[0][0])
                while self._waiting and size + len(self._waiting[0][0]) <= MAX_COMMANDS:
                    batch.append(self._waiting.popleft())
                    size += len(batch[-1][0])
                await self._round_trip(batch)
        finally:
            self._sender = None

    async def _round_trip(self, batch: list[Waiting]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for commands, _ in batch:
                    for command in commands:
                        pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, waiter in batch:
                waiter.cancel()
            raise
        except Exception as error:
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        start = 0
        for commands, waiter in batch:
            if not waiter.done():
                waiter.set_result(replies[start:start + len(commands)])
            start += len(commands)
