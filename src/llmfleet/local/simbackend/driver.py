"""Runs a SimEngine on the asyncio loop: one timer for the whole batch, not one per stream.

Each step sleeps for the engine's step duration (times `time_scale` and the fault's slow factor)
and then wakes exactly the request handlers whose sequence produced a token. With nothing to do
the loop waits on an Event, so an idle backend costs no CPU. This is what keeps thousands of
open streams cheap: per stream there is one suspended handler and one future, no timers.
"""

from __future__ import annotations

import asyncio
import contextlib

from llmfleet.local.simbackend.engine import Sequence, SimEngine
from llmfleet.local.simbackend.faults import FaultState


class EngineLoop:
    """The asyncio driver of one engine; it binds to the loop that calls start()."""

    def __init__(self, engine: SimEngine, faults: FaultState, time_scale: float) -> None:
        self.engine = engine
        self.faults = faults
        self.time_scale = time_scale
        self.steps = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._step: _Step | None = None
        faults.subscribe(self._retime)

    def now(self) -> float:
        """The engine clock: the running loop's monotonic time."""
        return asyncio.get_running_loop().time()

    def start(self) -> None:
        """Start stepping in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine")

    async def stop(self) -> None:
        """Stop stepping; sequences still queued or running stay where they are."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def submit(self, seq: Sequence) -> None:
        """Queue a sequence; the engine picks it up at the next step boundary."""
        seq.arrival = self.now()
        self.engine.add(seq)
        self._wake.set()

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence (client gone) and free its slot; harmless once it has finished."""
        if self.engine.abort(seq, self.now()):
            _notify(seq)

    async def wait_progress(self, seq: Sequence, seen: int) -> None:
        """Return once `seq` has more than `seen` tokens or has finished.

        A non-streaming caller passes `seen = target - 1` and so wakes once, not per token.
        """
        if seq.num_output > seen or seq.finished:
            return
        waiter = asyncio.get_running_loop().create_future()
        seq.handle = (waiter, seen)
        try:
            await waiter
        finally:
            seq.handle = None

    async def _run(self) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        while True:
            await self.faults.wait_while_hung()
            started = loop.time()
            plan = engine.schedule(started)
            if plan is None:
                # No awaits between the empty schedule and clear(), so no submit can slip by.
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._sleep_step(started, plan.duration)
            # A hang freezes the step in flight too: streams stall mid-way, as on a stuck GPU.
            await self.faults.wait_while_hung()
            for seq in engine.finish_step(plan, loop.time()):
                _notify(seq)
            self.steps += 1

    def _scale(self) -> float:
        return self.time_scale * self.faults.slow_factor

    async def _sleep_step(self, started: float, duration: float) -> None:
        """Sleep until a step of nominal `duration` begun at `started` is over.

        The deadline is absolute, so bookkeeping time counts as part of the step; a fault change
        re-times the rest of the step (see _retime), so `slow` on or off applies at once.
        """
        loop = asyncio.get_running_loop()
        self._step = _Step(started, duration, self._scale(), loop.create_future())
        self._step.arm(loop)
        try:
            await self._step.done
        finally:
            self._step.timer.cancel()
            self._step = None

    def _retime(self) -> None:
        if self._step is not None:
            self._step.retime(asyncio.get_running_loop(), self._scale())


class _Step:
    """The timer of the engine step in flight: nominal work left, measured at `since`."""

    __slots__ = ("done", "left", "scale", "since", "timer")

    def __init__(self, since: float, left: float, scale: float, done: asyncio.Future) -> None:
        self.since = since
        self.left = left
        self.scale = scale
        self.done = done
        self.timer: asyncio.TimerHandle

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = loop.call_at(self.since + self.left * self.scale, _resolve, self.done)

    def retime(self, loop: asyncio.AbstractEventLoop, scale: float) -> None:
        now = loop.time()
        worked = (now - self.since) / self.scale if self.scale > 0 else self.left
        self.left = max(0.0, self.left - worked)
        self.since = now
        self.scale = scale
        self.timer.cancel()
        self.arm(loop)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _notify(seq: Sequence) -> None:
    if seq.handle is None:
        return
    waiter, seen = seq.handle
    if (seq.num_output > seen or seq.finished) and not waiter.done():
        waiter.set_result(None)
