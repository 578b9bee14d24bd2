"""A trace read as students rather than as requests (`SimulationSettings.think_s`): a closed
loop, where each message waits for the answer to the last one.

At every second the trace's rate names how many students are active (rps x
STUDENT_MESSAGE_INTERVAL_S, the built-in traces' own reading). A student who joins sends a
first message after a random part of a think time, so that those joining together do not
send at once; then after each answer (or failure) thinks for an exponentially distributed
time of mean `think_s` and sends the next. When there are more students than the trace
names, those who have just been answered leave. With answers that take no time, a think time
of STUDENT_MESSAGE_INTERVAL_S gives the trace's rate; slower answers give fewer messages, and
faster ones (nodes joining) more: what the arrival trend then sees.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import simpy

from llmfleet.local.simulator.workload import Lengths, Request
from llmfleet.local.traces import STUDENT_MESSAGE_INTERVAL_S, Trace

# How often the number of active students follows the trace.
STEP_S = 1.0


class Students:
    def __init__(self, env: simpy.Environment, trace: Trace, think_s: float, seed: int,
                 lengths: Lengths, send: Callable[[Request], None]) -> None:
        self._env, self._trace, self._think_s = env, trace, think_s
        self._lengths, self._send = lengths, send
        self._rng = random.Random(f"llmfleet-sim-students-{seed}")
        self.active = 0  # students who have joined and not left
        self._wanted = 0

    def run(self):
        """Follows the trace's student count to its end, then lets every student leave."""
        env = self._env
        while env.now < self._trace.duration_s:
            self._wanted = round(self._trace.rate_at(env.now) * STUDENT_MESSAGE_INTERVAL_S)
            for _ in range(self._wanted - self.active):
                self.active += 1
                env.process(self._student())
            yield env.timeout(min(STEP_S, self._trace.duration_s - env.now))
        self._wanted = 0

    def _student(self):
        env = self._env
        yield env.timeout(self._rng.uniform(0, self._think_s))
        while self.active <= self._wanted:
            answered = env.event()
            request = self._lengths.request(env.now)
            request.ended = answered.succeed
            self._send(request)
            yield answered
            if self.active > self._wanted:
                break
            yield env.timeout(self._rng.expovariate(1 / self._think_s))
        self.active -= 1
