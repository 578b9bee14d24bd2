"""The requests a simulation serves: arrival times from the trace, prompt and output lengths
from the load generator's distributions, each from its own seeded stream so that changing
one (say, the output lengths) leaves the others as they were."""

from __future__ import annotations

import random
from collections.abc import Iterator

from llmfleet.local.loadgen.workload import Distribution
from llmfleet.local.traces import Trace


class Request:
    """One request and what happened to it; times are seconds of simulated time."""

    __slots__ = ("arrival", "attempts", "first_token", "output_tokens", "prompt_tokens")

    def __init__(self, arrival: float, prompt_tokens: int, output_tokens: int) -> None:
        self.arrival = arrival
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.first_token: float | None = None  # of the attempt that is running
        self.attempts = 0  # nodes it was sent to; above 1 after a spot node took it down


def requests(trace: Trace, seed: int, prompts: Distribution,
             outputs: Distribution) -> Iterator[Request]:
    """The trace's requests in arrival order, the same ones for the same seed."""
    arrivals = random.Random(f"llmfleet-sim-arrivals-{seed}")
    prompt_rng = random.Random(f"llmfleet-sim-prompts-{seed}")
    output_rng = random.Random(f"llmfleet-sim-outputs-{seed}")
    for t in trace.arrivals(arrivals):
        yield Request(t, prompts.sample(prompt_rng), outputs.sample(output_rng))
