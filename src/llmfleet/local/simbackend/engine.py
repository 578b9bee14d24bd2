"""The continuous-batching model: a pure state machine shaped like vLLM V1's scheduler, no I/O.

Time is passed in (`now`, seconds on any monotonic clock), so tests can drive it with a fake clock
and the asyncio driver can drive it with the event loop's clock. One engine step:

1. `schedule(now)` picks the batch the way vLLM V1 does: running sequences first (one decode token
   each, or the next prefill chunk), preempting the most recently admitted sequence when the KV
   cache is full, then admitting waiting sequences FIFO while there is a free slot
   (`max_num_seqs`), token budget (`max_num_batched_tokens`) and KV space. It returns a plan with
   the step's duration: `itl_ms + itl_ms_per_running_seq * batch + prefill_ms_per_token *
   prefill_tokens`, so inter-token latency grows with batch size and prefills stall decodes.
2. `finish_step(plan, now)` applies the plan: every sequence whose prompt is fully computed
   samples one token; sequences reaching their target length finish.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from llmfleet.local.simbackend.metrics import EngineMetrics, Gauges

BLOCK_SIZE = 16  # vLLM's default KV block size in tokens


@dataclass(frozen=True)
class EngineConfig:
    """Capacity and timing of one simulated engine (times at scale 1.0, in milliseconds)."""

    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_tokens: int
    prefill_ms_per_token: float
    itl_ms: float
    itl_ms_per_running_seq: float
    block_size: int = BLOCK_SIZE

    def __post_init__(self) -> None:
        # The same refusals vLLM makes at startup, so a bad sandbox config fails loudly.
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        # Whole blocks only: a request of max_model_len tokens must fit when alone.
        if self.kv_cache_tokens // self.block_size * self.block_size < self.max_model_len:
            raise ValueError(
                f"The model's max seq len ({self.max_model_len}) is larger than the maximum "
                f"number of tokens that can be stored in KV cache ({self.kv_cache_tokens})."
            )
        for name in ("prefill_ms_per_token", "itl_ms", "itl_ms_per_running_seq"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def num_blocks(self) -> int:
        """KV-cache capacity in blocks."""
        return self.kv_cache_tokens // self.block_size


class SeqState(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class Sequence:
    """One request's generation: `target_tokens` tokens, then finish with `target_reason`."""

    prompt_tokens: int
    target_tokens: int
    target_reason: str  # "length" when the client fixed max_tokens, "stop" for a drawn length
    arrival: float
    seq_id: int = 0
    # Per-request data of whoever submitted it (the HTTP layer's waiter); the engine ignores it.
    handle: Any = None
    state: SeqState = SeqState.WAITING
    num_output: int = 0
    num_computed: int = 0  # tokens held in the KV cache
    blocks: int = 0
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finished_at: float | None = None
    finish_reason: str | None = None  # "stop", "length" or "abort" once finished

    @property
    def finished(self) -> bool:
        """True once the sequence produced all its tokens or was aborted."""
        return self.state is SeqState.FINISHED

    def tokens_needed(self) -> int:
        """Tokens to compute before the next sample: the whole prompt, or the last sampled token.

        After a preemption the KV cache is gone, so prompt and output are recomputed.
        """
        return self.prompt_tokens + self.num_output - self.num_computed


@dataclass
class StepPlan:
    """One engine step: what runs and how long it takes (seconds at scale 1.0)."""

    scheduled: list[tuple[Sequence, int]] = field(default_factory=list)
    prefill_tokens: int = 0
    duration: float = 0.0


class SimEngine:
    """The scheduler and KV-cache bookkeeping of one simulated vLLM engine."""

    def __init__(self, config: EngineConfig, metrics: EngineMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else EngineMetrics(config.max_model_len)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.free_blocks = config.num_blocks
        self.num_preemptions = 0
        self._next_id = 0
        # What the last scheduling pass left waiting: vLLM's waiting gauge, which its scheduler
        # reports after each step, so a request that arrives between two steps and is admitted
        # by the next is never counted.
        self._waiting_after_schedule = 0

    # -- requests ------------------------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence (FIFO) and give it an id."""
        self._next_id += 1
        seq.seq_id = self._next_id
        seq.state = SeqState.WAITING
        self.waiting.append(seq)

    def abort(self, seq: Sequence, now: float) -> bool:
        """Drop a waiting or running sequence and free its slot and KV blocks.

        Returns False when it had already finished (nothing to do).
        """
        if seq.state is SeqState.WAITING:
            self.waiting.remove(seq)
        elif seq.state is SeqState.RUNNING:
            self.running.remove(seq)
        else:
            return False
        self._release(seq)
        seq.state = SeqState.FINISHED
        seq.finish_reason = "abort"
        seq.finished_at = now
        self.metrics.request_success["abort"] += 1
        return True

    def has_work(self) -> bool:
        """True while any sequence waits or runs."""
        return bool(self.waiting or self.running)

    # -- steps ---------------------------------------------------------------------------------

    def schedule(self, now: float) -> StepPlan | None:
        """Pick this step's batch; None when there is nothing to run."""
        cfg = self.config
        plan = StepPlan()
        budget = cfg.max_num_batched_tokens
        preempted = False
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            chunk = min(seq.tokens_needed(), budget)
            needed = self._blocks_for(seq.num_computed + chunk) - seq.blocks
            while needed > self.free_blocks:
                # Like vLLM's recompute preemption: evict the lowest-priority (latest) request.
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq.state is not SeqState.RUNNING:
                break
            self._allocate(seq, needed)
            self._plan(plan, seq, chunk)
            budget -= chunk
            index += 1
        # vLLM admits nothing new in a step that had to preempt: memory is already short.
        if not (preempted and plan.scheduled):
            while self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
                seq = self.waiting[0]
                chunk = min(seq.tokens_needed(), budget)
                needed = self._blocks_for(chunk)
                if needed > self.free_blocks:
                    break
                self.waiting.popleft()
                seq.state = SeqState.RUNNING
                if seq.first_scheduled is None:
                    seq.first_scheduled = now
                self.running.append(seq)
                self._allocate(seq, needed)
                self._plan(plan, seq, chunk)
                budget -= chunk
        self._waiting_after_schedule = len(self.waiting)
        if not plan.scheduled:
            return None
        batch = len(plan.scheduled)
        plan.duration = (
            cfg.itl_ms
            + cfg.itl_ms_per_running_seq * batch
            + cfg.prefill_ms_per_token * plan.prefill_tokens
        ) / 1000.0
        return plan

    def finish_step(self, plan: StepPlan, now: float) -> list[Sequence]:
        """Apply a step that took until `now`; returns the sequences that got a token."""
        metrics = self.metrics
        emitted: list[Sequence] = []
        any_finished = False
        for seq, chunk in plan.scheduled:
            if seq.state is not SeqState.RUNNING:
                continue  # aborted while the step ran
            seq.num_computed += chunk
            if seq.tokens_needed() > 0:
                continue  # a chunked prefill that is not done yet
            seq.num_output += 1
            metrics.inc("vllm:generation_tokens_total")
            if seq.first_token is None:
                seq.first_token = now
                metrics.inc("vllm:prompt_tokens_total", seq.prompt_tokens)
                metrics.inc("vllm:prefix_cache_queries_total", seq.prompt_tokens)
                metrics.observe("vllm:time_to_first_token_seconds", now - seq.arrival)
            else:
                assert seq.last_token is not None
                metrics.observe("vllm:inter_token_latency_seconds", now - seq.last_token)
            seq.last_token = now
            emitted.append(seq)
            if seq.num_output >= seq.target_tokens:
                self._finish(seq, now)
                any_finished = True
        if any_finished:
            self.running = [s for s in self.running if s.state is SeqState.RUNNING]
        return emitted

    def gauges(self) -> Gauges:
        """vLLM's gauges: running and KV usage right now, waiting as the last scheduling pass
        left it (`self.waiting` is the whole queue now)."""
        total = self.config.num_blocks
        waiting = min(self._waiting_after_schedule, len(self.waiting))
        return Gauges(len(self.running), waiting, (total - self.free_blocks) / total)

    # -- internals -----------------------------------------------------------------------------

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.config.block_size)

    def _allocate(self, seq: Sequence, blocks: int) -> None:
        self.free_blocks -= blocks
        seq.blocks += blocks

    def _release(self, seq: Sequence) -> None:
        self.free_blocks += seq.blocks
        seq.blocks = 0

    def _plan(self, plan: StepPlan, seq: Sequence, chunk: int) -> None:
        plan.scheduled.append((seq, chunk))
        if chunk > 1 or seq.num_computed < seq.prompt_tokens:
            plan.prefill_tokens += chunk

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.num_computed = 0
        seq.state = SeqState.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
        self.metrics.inc("vllm:num_preemptions_total")

    def _finish(self, seq: Sequence, now: float) -> None:
        self._release(seq)
        seq.state = SeqState.FINISHED
        seq.finish_reason = seq.target_reason
        seq.finished_at = now
        metrics = self.metrics
        metrics.request_success[seq.target_reason] += 1
        assert seq.first_scheduled is not None and seq.first_token is not None
        metrics.observe("vllm:e2e_request_latency_seconds", now - seq.arrival)
        metrics.observe("vllm:request_queue_time_seconds", seq.first_scheduled - seq.arrival)
        metrics.observe("vllm:request_inference_time_seconds", now - seq.first_scheduled)
        metrics.observe("vllm:request_prefill_time_seconds", seq.first_token - seq.first_scheduled)
        metrics.observe("vllm:request_decode_time_seconds", now - seq.first_token)
        # As vLLM: the decode time over the tokens after the first, 0 for a one-token answer.
        tpot = (now - seq.first_token) / (seq.num_output - 1) if seq.num_output > 1 else 0.0
        metrics.observe("vllm:request_time_per_output_token_seconds", tpot)
        metrics.observe("vllm:request_prompt_tokens", seq.prompt_tokens)
        metrics.observe("vllm:request_generation_tokens", seq.num_output)
