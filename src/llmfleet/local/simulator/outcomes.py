"""What happened to the requests: served within the SLO or not, latencies, failures.

A request meets the SLO when its first token comes within `ttft_slo_s` and its last within
`e2e_slo_s` of its arrival (both measured from the first time it was sent, retries
included). The first-token half alone is counted apart: a request waits for its first token
when there are too few nodes (a queue), while its end to end time also grows with the batch
it runs in. A failed request (its client gave up before a first token, or no node was ready)
misses the SLO; latency percentiles are over the requests that were served.
"""

from __future__ import annotations

from collections import Counter

from llmfleet.local.simulator.workload import Request


class Outcomes:
    def __init__(self, ttft_slo_s: float, e2e_slo_s: float) -> None:
        self._ttft_slo_s, self._e2e_slo_s = ttft_slo_s, e2e_slo_s
        self.arrived = 0
        self.within_slo = 0
        self.first_token_in_time = 0
        self.retried = 0
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.failed: Counter[str] = Counter()

    @property
    def served(self) -> int:
        return len(self.latencies)

    @property
    def in_flight(self) -> int:
        return self.arrived - self.served - sum(self.failed.values())

    def arrive(self) -> None:
        self.arrived += 1

    def done(self, request: Request, now: float) -> None:
        assert request.first_token is not None
        ttft = request.first_token - request.arrival
        latency = now - request.arrival
        self.ttfts.append(ttft)
        self.latencies.append(latency)
        if ttft <= self._ttft_slo_s:
            self.first_token_in_time += 1
            if latency <= self._e2e_slo_s:
                self.within_slo += 1
        if request.attempts > 1:
            self.retried += 1

    def gave_up(self, request: Request, now: float) -> None:
        self.fail(request, now, "gave up waiting for a first token")

    def fail(self, request: Request, now: float, reason: str) -> None:
        self.failed[reason] += 1
