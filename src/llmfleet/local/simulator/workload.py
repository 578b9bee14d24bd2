"""The requests a simulation serves: arrival times from the trace, prompt and output lengths
from the load generator's distributions, each from its own seeded stream so that changing
one (say, the output lengths) leaves the others as they were."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from llmfleet.local.loadgen.workload import Distribution
from llmfleet.local.traces import Trace


class Request:
    """One request and what happened to it; times are seconds of simulated time."""

    __slots__ = ("arrival", "attempts", "ended", "first_token", "output_tokens",
                 "prompt_tokens")

    def __init__(self, arrival: float, prompt_tokens: int, output_tokens: int) -> None:
        self.arrival = arrival
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.first_token: float | None = None  # of the attempt that is running
        self.attempts = 0  # nodes it was sent to; above 1 after a spot node took it down
        # Called once it is answered or has failed: a student's next message waits for it.
        self.ended: Callable[[], None] | None = None


def requests(trace: Trace, seed: int, prompts: Distribution,
             outputs: Distribution) -> Iterator[Request]:
    """The trace's requests in arrival order, the same ones for the same seed."""
    arrivals = random.Random(f"llmfleet-sim-arrivals-{seed}")
    lengths = Lengths(seed, prompts, outputs)
    for t in trace.arrivals(arrivals):
        yield lengths.request(t)


class Lengths:
    """Prompt and output lengths, each from its own seeded stream."""

    def __init__(self, seed: int, prompts: Distribution, outputs: Distribution) -> None:
        self._prompts, self._outputs = prompts, outputs
        self._prompt_rng = random.Random(f"llmfleet-sim-prompts-{seed}")
        self._output_rng = random.Random(f"llmfleet-sim-outputs-{seed}")

    def request(self, arrival: float) -> Request:
        return Request(arrival, self._prompts.sample(self._prompt_rng),
                       self._outputs.sample(self._output_rng))
