"""The continuous-batching model on a fake clock: slots, FIFO, aborts, KV cache, timing."""

from __future__ import annotations

import random

import pytest

from llmfleet.local.simbackend.engine import EngineConfig, SeqState, Sequence, SimEngine, StepPlan


def make_engine(**overrides: float) -> SimEngine:
    base: dict = {
        "max_model_len": 4096,
        "max_num_seqs": 2,
        "max_num_batched_tokens": 2048,
        "kv_cache_tokens": 65536,
        "prefill_ms_per_token": 0.5,
        "itl_ms": 20.0,
        "itl_ms_per_running_seq": 1.0,
    }
    base.update(overrides)
    return SimEngine(EngineConfig(**base))


def seq(prompt: int = 10, target: int = 5, reason: str = "length") -> Sequence:
    return Sequence(prompt_tokens=prompt, target_tokens=target, target_reason=reason, arrival=0.0)


class Clock:
    """Fake time: each step advances by exactly the planned duration."""

    def __init__(self) -> None:
        self.now = 0.0

    def step(self, engine: SimEngine) -> tuple[StepPlan | None, list[Sequence]]:
        plan = engine.schedule(self.now)
        if plan is None:
            return None, []
        self.now += plan.duration
        return plan, engine.finish_step(plan, self.now)


def run_to_completion(engine: SimEngine, clock: Clock, max_steps: int = 100_000) -> int:
    for steps in range(max_steps):
        if not engine.has_work():
            return steps
        clock.step(engine)
        check_invariants(engine)
    raise AssertionError("engine did not drain")


def check_invariants(engine: SimEngine) -> None:
    cfg = engine.config
    assert len(engine.running) <= cfg.max_num_seqs
    held = sum(s.blocks for s in engine.running) + sum(s.blocks for s in engine.waiting)
    assert engine.free_blocks + held == cfg.num_blocks
    assert engine.free_blocks >= 0
    assert all(s.state is SeqState.RUNNING for s in engine.running)
    assert all(s.state is SeqState.WAITING and s.blocks == 0 for s in engine.waiting)


def test_running_never_exceeds_max_num_seqs_and_rest_waits_fifo() -> None:
    engine = make_engine(max_num_seqs=2)
    seqs = [seq() for _ in range(5)]
    for s in seqs:
        engine.add(s)
    Clock().step(engine)
    assert engine.running == seqs[:2]
    assert list(engine.waiting) == seqs[2:]
    gauges = engine.gauges()
    assert (gauges.running, gauges.waiting) == (2, 3)


def test_waiting_is_what_the_last_scheduling_pass_left_as_vllm_reports_it() -> None:
    # vLLM's scheduler reports its gauges after each step: a request that arrives between two
    # steps and is admitted by the next is never seen waiting (an autoscaler's quiet window
    # would restart on every such sample).
    engine, clock = make_engine(max_num_seqs=2), Clock()
    engine.add(seq(target=50))
    assert engine.gauges().waiting == 0
    clock.step(engine)
    engine.add(seq(target=50))
    assert engine.gauges().waiting == 0, "arrived between steps; the next step admits it"
    clock.step(engine)
    third = seq(target=50)
    engine.add(third)
    assert engine.gauges().waiting == 0
    clock.step(engine)
    assert engine.gauges().waiting == 1, "no slot at that pass: it waits"
    engine.abort(third, clock.now)
    assert engine.gauges().waiting == 0, "never more than are waiting now"


def test_finished_sequence_frees_its_slot_for_the_oldest_waiter() -> None:
    engine = make_engine(max_num_seqs=2)
    short, long_, third, fourth = seq(target=1), seq(target=50), seq(), seq()
    for s in (short, long_, third, fourth):
        engine.add(s)
    clock = Clock()
    _, emitted = clock.step(engine)  # prefill step: both sample their first token
    assert short.finished and short.finish_reason == "length"
    assert emitted == [short, long_]
    clock.step(engine)
    assert engine.running == [long_, third]  # FIFO: third before fourth
    assert list(engine.waiting) == [fourth]


def test_abort_running_frees_slot_and_kv_blocks_and_counts_abort() -> None:
    engine = make_engine(max_num_seqs=1)
    first, second = seq(prompt=100, target=1000), seq()
    engine.add(first)
    engine.add(second)
    clock = Clock()
    clock.step(engine)
    assert engine.running == [first] and first.blocks > 0
    assert engine.abort(first, clock.now)
    assert first.finished and first.finish_reason == "abort" and first.blocks == 0
    assert engine.free_blocks == engine.config.num_blocks
    assert engine.metrics.request_success["abort"] == 1
    clock.step(engine)
    assert engine.running == [second]
    assert not engine.abort(first, clock.now)  # second abort is a no-op
    assert engine.metrics.request_success["abort"] == 1


def test_abort_waiting_sequence_leaves_the_queue() -> None:
    engine = make_engine(max_num_seqs=1)
    a, b, c = seq(), seq(), seq()
    for s in (a, b, c):
        engine.add(s)
    Clock().step(engine)
    engine.abort(b, 0.0)
    assert list(engine.waiting) == [c]
    assert engine.gauges().waiting == 1


def test_abort_during_a_step_in_flight_skips_the_sequence() -> None:
    engine = make_engine()
    a = seq(target=3)
    engine.add(a)
    plan = engine.schedule(0.0)
    assert plan is not None
    engine.abort(a, 0.01)
    assert engine.finish_step(plan, 0.02) == []
    assert a.num_output == 0 and not engine.has_work()


def test_exactly_target_tokens_then_finish_with_target_reason() -> None:
    engine = make_engine()
    a, b = seq(target=7, reason="length"), seq(target=3, reason="stop")
    engine.add(a)
    engine.add(b)
    run_to_completion(engine, Clock())
    assert (a.num_output, a.finish_reason) == (7, "length")
    assert (b.num_output, b.finish_reason) == (3, "stop")
    m = engine.metrics
    assert m.request_success == {"stop": 1, "length": 1, "abort": 0}
    assert m.counters["vllm:generation_tokens_total"] == 10
    assert m.counters["vllm:prompt_tokens_total"] == 20
    assert m.histograms["vllm:time_to_first_token_seconds"].count == 2
    assert m.histograms["vllm:inter_token_latency_seconds"].count == 10 - 2
    assert m.histograms["vllm:e2e_request_latency_seconds"].count == 2
    assert engine.free_blocks == engine.config.num_blocks


def test_step_time_grows_with_batch_size() -> None:
    durations = {}
    for batch in (1, 8):
        engine = make_engine(max_num_seqs=8, prefill_ms_per_token=0.0)
        for _ in range(batch):
            engine.add(seq(target=10))
        clock = Clock()
        clock.step(engine)  # prefill
        plan, _ = clock.step(engine)  # pure decode
        assert plan is not None
        durations[batch] = plan.duration
    assert durations[1] == pytest.approx((20.0 + 1.0 * 1) / 1000)
    assert durations[8] == pytest.approx((20.0 + 1.0 * 8) / 1000)


def test_time_to_first_token_grows_with_prompt_length() -> None:
    ttft = {}
    for prompt in (10, 1000):
        engine = make_engine()
        s = seq(prompt=prompt)
        engine.add(s)
        Clock().step(engine)
        ttft[prompt] = s.first_token
    assert ttft[10] == pytest.approx((20.0 + 1.0 + 0.5 * 10) / 1000)
    assert ttft[1000] == pytest.approx((20.0 + 1.0 + 0.5 * 1000) / 1000)


def test_long_prompt_is_prefilled_in_chunks_of_the_token_budget() -> None:
    engine = make_engine(max_num_batched_tokens=512)
    s = seq(prompt=1200, target=2)
    engine.add(s)
    clock = Clock()
    chunks = []
    while s.first_token is None:
        plan, _ = clock.step(engine)
        assert plan is not None
        chunks.append(plan.scheduled[0][1])
    assert chunks == [512, 512, 176]


def test_queue_time_is_measured_from_arrival_to_first_schedule() -> None:
    engine = make_engine(max_num_seqs=1)
    a, b = seq(target=2), seq(target=2)
    engine.add(a)
    engine.add(b)
    run_to_completion(engine, Clock())
    assert a.first_scheduled == 0.0
    assert b.first_scheduled is not None and b.first_scheduled >= a.finished_at
    queue = engine.metrics.histograms["vllm:request_queue_time_seconds"]
    assert queue.count == 2 and queue.sum == pytest.approx(b.first_scheduled)


def test_full_kv_cache_preempts_latest_request_and_both_still_finish() -> None:
    # 4 blocks of 16 tokens; two requests that each grow to 40 tokens cannot both fit.
    engine = make_engine(max_model_len=64, kv_cache_tokens=64, max_num_seqs=4)
    a, b = seq(prompt=20, target=20), seq(prompt=20, target=20)
    engine.add(a)
    engine.add(b)
    run_to_completion(engine, Clock())
    assert engine.num_preemptions >= 1
    assert engine.metrics.counters["vllm:num_preemptions_total"] == engine.num_preemptions
    assert (a.num_output, b.num_output) == (20, 20)
    assert engine.free_blocks == engine.config.num_blocks


def test_kv_cache_usage_reflects_blocks_held() -> None:
    engine = make_engine(kv_cache_tokens=1600, max_model_len=1600)  # 100 blocks
    engine.add(seq(prompt=160, target=10))
    Clock().step(engine)
    assert engine.gauges().kv_cache_usage == pytest.approx(10 / 100)


def test_randomised_workload_with_aborts_keeps_invariants() -> None:
    rng = random.Random(7)
    engine = make_engine(max_num_seqs=8, kv_cache_tokens=4096, max_num_batched_tokens=256)
    clock = Clock()
    everyone = []
    for _ in range(400):
        if rng.random() < 0.5:
            s = seq(prompt=rng.randint(1, 800), target=rng.randint(1, 60))
            everyone.append(s)
            engine.add(s)
        if everyone and rng.random() < 0.1:
            engine.abort(rng.choice(everyone), clock.now)
        clock.step(engine)
        check_invariants(engine)
    run_to_completion(engine, clock)
    for s in everyone:
        assert s.finished
        if s.finish_reason != "abort":
            assert s.num_output == s.target_tokens
    finished = engine.metrics.request_success
    assert sum(finished.values()) == len(everyone)
    assert engine.free_blocks == engine.config.num_blocks


def test_idle_engine_has_nothing_to_schedule() -> None:
    engine = make_engine()
    assert engine.schedule(0.0) is None
    assert not engine.has_work()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kv_cache_tokens": 1000}, "larger than the maximum number of tokens"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"itl_ms": -1.0}, "itl_ms"),
    ],
)
def test_inconsistent_config_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_engine(**overrides)
