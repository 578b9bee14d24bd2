"""One GPU node's vLLM engine, at the level of batch steps: continuous batching with
`max_num_seqs` slots, a FIFO waiting queue, and vLLM's step time (the same as the simulated
backend's, llmfleet.local.simbackend.engine):

    step = itl + itl_per_running_seq x batch + prefill_per_token x prompt tokens prefilled

Every running sequence gets one token per step; a newly admitted one gets its first token at
the end of the step that prefills its prompt. Between two changes to the batch (an admission
or a completion) every step takes the same time, so the engine does not step: it schedules
one simpy event at the end of the run of identical steps, and cuts a run short at the step
in progress when an arrival finds a free slot. The figures are those of stepping one batch
at a time; what is left out is the KV cache (no preemption: with the presets' caches and the
default lengths, `max_num_seqs` binds first) and chunked prefill (a prompt is prefilled in
one step; the token budget only limits how many are admitted together).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable

import simpy

from llmfleet.local.simbackend.presets import Preset
from llmfleet.local.simulator.workload import Request

Finished = Callable[[Request, float], None]


class NodeEngine:
    """The batch and queue of one node; `on_done(request, t)` hears of each completion,
    `on_give_up(request, t)` of each request whose client stopped waiting for a first token,
    `on_idle()` when the node has nothing left to do."""

    def __init__(self, env: simpy.Environment, preset: Preset, give_up_s: float,
                 on_done: Finished, on_give_up: Finished,
                 on_idle: Callable[[], None]) -> None:
        self._env = env
        self.slots = preset.max_num_seqs
        self._budget = preset.max_num_batched_tokens
        self._itl = preset.itl_ms / 1000
        self._per_seq = preset.itl_ms_per_running_seq / 1000
        self._prefill = preset.prefill_ms_per_token / 1000
        self._give_up_s = give_up_s
        self._on_done, self._on_give_up, self._on_idle = on_done, on_give_up, on_idle
        self.waiting: deque[Request] = deque()
        # (step it finishes at, admission order, request): the next to finish on top.
        self._batch: list[tuple[int, int, Request]] = []
        self._steps = 0
        self._admitted = 0
        self._held = 0  # left waiting by the last schedule
        # The run of identical steps under way: its end event, start, first step (with the
        # prefills), later steps, and how many steps it covers.
        self._end: simpy.Timeout | None = None
        self._start = self._first = self._step = 0.0
        self._run_steps = 0
        self._cut = False

    @property
    def running(self) -> int:
        return len(self._batch)

    @property
    def queued(self) -> int:
        """vLLM's `num_requests_waiting` as its stats report it after each schedule: requests
        the scheduler could not admit. Arrivals since the last schedule that a free slot will
        take at the next step are not in it yet; with the batch full, every arrival is."""
        if len(self._batch) >= self.slots:
            return len(self.waiting)
        return min(self._held, len(self.waiting))

    @property
    def load(self) -> int:
        """Requests on this node, running or waiting: what a least-connections edge counts."""
        return len(self._batch) + len(self.waiting)

    def submit(self, request: Request) -> None:
        self.waiting.append(request)
        if self._end is None:
            self._begin_run()
        elif not self._cut and len(self._batch) < self.slots:
            self._cut_run()

    def give_up_waiting(self) -> None:
        """Drop the requests at the head of the queue whose clients stopped waiting."""
        now = self._env.now
        while self.waiting and now - self.waiting[0].arrival >= self._give_up_s:
            self._on_give_up(self.waiting.popleft(), now)

    def take_waiting(self) -> list[Request]:
        """Hand back every request not started yet (the node stops taking work)."""
        taken = list(self.waiting)
        self.waiting.clear()
        return taken

    def stop(self) -> list[Request]:
        """The node is gone: hand back everything it held; running requests start over."""
        if self._end is not None:
            self._end.callbacks.remove(self._end_run)
            self._end = None
        taken = [request for _, _, request in sorted(self._batch)] + self.take_waiting()
        for request in taken:
            request.first_token = None
        self._batch.clear()
        return taken

    # -- runs of steps ---------------------------------------------------------------------

    def _begin_run(self) -> None:
        now = self._env.now
        admitted, prefill_tokens = self._admit(now)
        self._held = len(self.waiting)
        batch = self._batch
        if not batch:
            self._end = None
            self._on_idle()
            return
        self._step = self._itl + self._per_seq * len(batch)
        self._first = self._step + self._prefill * prefill_tokens
        first_token = now + self._first
        for request in admitted:
            request.first_token = first_token
        steps = batch[0][0] - self._steps
        if self.waiting and len(batch) < self.slots:
            steps = 1  # the token budget held some back: admit them after this step
        self._start = now
        self._schedule(now + self._first + (steps - 1) * self._step, steps)

    def _admit(self, now: float) -> tuple[list[Request], int]:
        """Move waiting requests into the batch, FIFO; returns them and the prompt tokens
        to prefill."""
        budget = self._budget - len(self._batch)
        prefill_tokens = 0
        admitted = []
        while self.waiting and len(self._batch) < self.slots:
            request = self.waiting[0]
            if now - request.arrival >= self._give_up_s:
                self._on_give_up(self.waiting.popleft(), now)
                continue
            if prefill_tokens and request.prompt_tokens > budget:
                break
            self.waiting.popleft()
            budget -= request.prompt_tokens
            prefill_tokens += request.prompt_tokens
            self._admitted += 1
            admitted.append(request)
            heapq.heappush(self._batch,
                           (self._steps + request.output_tokens, self._admitted, request))
        return admitted, prefill_tokens

    def _schedule(self, at: float, steps: int) -> None:
        end = self._env.timeout(at - self._env.now)
        end.callbacks.append(self._end_run)
        self._end, self._run_steps, self._cut = end, steps, False

    def _end_run(self, _event: simpy.Event) -> None:
        self._steps += self._run_steps
        now = self._env.now
        batch = self._batch
        while batch and batch[0][0] <= self._steps:
            self._on_done(heapq.heappop(batch)[2], now)
        self._begin_run()

    def _cut_run(self) -> None:
        """End the run at the step in progress, so the new arrival joins the next step."""
        elapsed = self._env.now - self._start
        if elapsed <= self._first:
            steps = 1
        else:
            # The small tolerance keeps an arrival exactly on a boundary at that boundary.
            steps = 1 + math.ceil((elapsed - self._first) / self._step - 1e-9)
        if steps >= self._run_steps:
            self._cut = True
            return
        assert self._end is not None
        self._end.callbacks.remove(self._end_run)
        self._schedule(self._start + self._first + (steps - 1) * self._step, steps)
        self._cut = True  # later arrivals in this step wait for the same boundary
