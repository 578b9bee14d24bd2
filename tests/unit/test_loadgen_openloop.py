"""Open-loop load: arrival schedules, profiles, bounds and the in-flight cap."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from test_loadgen_runner import MODEL, FakeVLLM, serve

from llmfleet.local.loadgen import (
    LoadReport,
    LoadSpec,
    ProgressSnapshot,
    RateSegment,
    arrival_times,
    run_load,
    run_load_sync,
)
from llmfleet.local.traces import Trace, TraceError, load_trace


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeVLLM]]:
    with contextlib.ExitStack() as stack:
        yield lambda mode="ok", **kwargs: stack.enter_context(serve(FakeVLLM(mode, **kwargs)))


def spec_for(server: FakeVLLM, **overrides: object) -> LoadSpec:
    values: dict[str, object] = {
        "url": server.url,
        "model": MODEL,
        "output_tokens": "fixed:3",
        "prompt_tokens": "fixed:4",
        "max_duration_s": 30.0,
        "timeout_s": 20.0,
    }
    values.update(overrides)
    return LoadSpec(**values)  # type: ignore[arg-type]


# -- schedules ------------------------------------------------------------------------------


def test_constant_arrivals_are_evenly_spaced_at_the_rate_and_ignore_the_seed() -> None:
    segments = [RateSegment(0.0, 2.0, 5.0)]
    times = arrival_times(segments, "constant", seed=1, limit=1000)
    assert times == pytest.approx([i / 5 for i in range(10)])
    assert arrival_times(segments, "constant", seed=2, limit=1000) == times


def test_poisson_arrivals_repeat_for_a_seed_and_differ_across_seeds() -> None:
    segments = [RateSegment(0.0, 100.0, 50.0)]
    first = arrival_times(segments, "poisson", seed=7, limit=100_000)
    assert arrival_times(segments, "poisson", seed=7, limit=100_000) == first
    assert arrival_times(segments, "poisson", seed=8, limit=100_000) != first
    assert first == sorted(first) and first[0] > 0 and first[-1] < 100.0
    # 5,000 expected; the Poisson count's standard deviation is about 71.
    assert abs(len(first) - 5000) < 300
    gaps = [b - a for a, b in pairwise(first)]
    # Exponential gaps: mean 1/rate, and their standard deviation equals their mean.
    mean = sum(gaps) / len(gaps)
    spread = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert mean == pytest.approx(0.02, rel=0.05)
    assert spread == pytest.approx(mean, rel=0.1)


def test_a_changing_rate_is_followed_and_a_zero_rate_sends_nothing() -> None:
    segments = [RateSegment(0.0, 1.0, 4.0), RateSegment(1.0, 3.0, 0.0), RateSegment(3.0, 4.0, 8.0)]
    times = arrival_times(segments, "constant", seed=0, limit=1000)
    assert times == pytest.approx([0, 0.25, 0.5, 0.75] + [3 + i / 8 for i in range(8)])
    poisson = arrival_times(segments, "poisson", seed=0, limit=1000)
    assert not [t for t in poisson if 1.0 <= t < 3.0 or t >= 4.0]


def test_the_limit_bounds_an_endless_rate() -> None:
    endless = [RateSegment(0.0, math.inf, 100.0)]
    assert len(arrival_times(endless, "poisson", seed=0, limit=25)) == 25
    assert arrival_times([RateSegment(0.0, math.inf, 0.0)], "constant", seed=0, limit=9) == []


@pytest.mark.parametrize(
    ("segments", "arrival", "message"),
    [
        ([RateSegment(1.0, 2.0, 1.0)], "poisson", "from 0 s without gaps"),
        ([RateSegment(0.0, 1.0, 1.0), RateSegment(2.0, 3.0, 1.0)], "poisson", "without gaps"),
        ([RateSegment(0.0, 1.0, -1.0)], "constant", ">= 0"),
        ([RateSegment(0.0, 1.0, 1.0)], "uniform", "'poisson' or 'constant', got 'uniform'"),
    ],
)
def test_bad_schedules_are_refused(
    segments: list[RateSegment], arrival: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        arrival_times(segments, arrival, seed=0, limit=10)  # type: ignore[arg-type]


# -- LoadSpec ---------------------------------------------------------------------------------

TRACE = Trace("steps", ((0.0, 2.0), (100.0, 10.0), (200.0, 0.0), (300.0, 1.0), (400.0, 0.0)))


def test_a_profile_is_time_scaled_and_cut_by_the_duration() -> None:
    spec = LoadSpec(profile=TRACE, time_scale=0.1, requests=None)
    assert spec.open_loop and spec.window_s == pytest.approx(40.0)
    assert spec.rate() == [
        RateSegment(0.0, 10.0, 2.0),
        RateSegment(10.0, 20.0, 10.0),
        RateSegment(20.0, 30.0, 0.0),
        RateSegment(30.0, 40.0, 1.0),
    ]
    assert spec.stop_after_s() == pytest.approx(40.0 + spec.timeout_s)
    cut = LoadSpec(profile=TRACE, time_scale=0.1, duration_s=15.0, requests=None)
    assert cut.window_s == 15.0
    assert cut.rate() == [RateSegment(0.0, 10.0, 2.0), RateSegment(10.0, 15.0, 10.0)]


def test_a_profile_may_be_named(tmp_path: Path) -> None:
    assert LoadSpec(profile="surge", requests=None).trace == load_trace("surge")
    csv = tmp_path / "ramp.csv"
    csv.write_text("t_s,rps\n0,1\n30,0\n")
    assert LoadSpec(profile=str(csv), requests=None).window_s == 30.0
    with pytest.raises(TraceError, match="'rush' is neither a built-in trace"):
        LoadSpec(profile="rush")


def test_hard_stop_defaults() -> None:
    assert LoadSpec().stop_after_s() == 120.0
    assert LoadSpec(duration_s=30, timeout_s=10).stop_after_s() == 40.0
    assert LoadSpec(request_rate=5, duration_s=30, timeout_s=10).stop_after_s(12.0) == 40.0
    # A rate bounded by -n alone: the timeout after the schedule's last arrival.
    rate_only = LoadSpec(request_rate=5, requests=1000, arrival="constant", timeout_s=10)
    schedule = rate_only.schedule()
    assert schedule is not None and schedule[-1] == pytest.approx(199.8)
    assert rate_only.stop_after_s(schedule[-1]) == pytest.approx(209.8)
    assert LoadSpec(request_rate=5, max_duration_s=9).stop_after_s(199.8) == 9.0
    assert LoadSpec().schedule() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"request_rate": 0}, "request_rate must be .* > 0 .*got 0"),
        ({"request_rate": math.inf}, "request_rate"),
        ({"request_rate": 1, "profile": TRACE}, "request_rate or profile, not both"),
        ({"arrival": "bursty"}, "arrival must be 'poisson' or 'constant', got 'bursty'"),
        ({"time_scale": 0.5}, "time_scale 0.5 compresses a profile; there is none"),
        ({"profile": TRACE, "time_scale": 0}, "time_scale must be a finite number > 0"),
        ({"requests": None}, "requests=None needs duration_s or a profile"),
        ({"request_rate": 1, "ramp_s": 2}, "ramp_s spreads closed-loop clients"),
        ({"duration_s": 60, "max_duration_s": 30}, r"max_duration_s \(30\) must be above"),
        ({"request_rate": 1, "max_in_flight": 0}, "max_in_flight must be an integer from 1"),
        ({"duration_s": -1}, "duration_s must be a finite number of seconds > 0"),
    ],
)
def test_bad_open_loop_specs_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadSpec(**kwargs)  # type: ignore[arg-type]


# -- runs -----------------------------------------------------------------------------------


def test_arrivals_do_not_wait_for_answers(fake: Callable[..., FakeVLLM]) -> None:
    # The server answers nothing until all 12 requests are in: only a client that keeps
    # starting requests while none is answered gets there.
    server = fake(hold_until=12)
    spec = spec_for(server, request_rate=200, arrival="constant", requests=12)
    report = run_load_sync(spec)
    assert (report.planned_requests, report.ok, report.dropped) == (12, 12, 0)
    assert report.all_ok and report.concurrency is None
    planned = spec.schedule()
    assert planned is not None
    # Each request started no earlier than its planned arrival.
    assert all(r.start_s >= planned[r.index] for r in report.records)
    assert report.open_loop is not None and report.open_loop.request_rate == 200


def test_a_closed_loop_waits_for_answers_so_the_same_server_stalls_it(
    fake: Callable[..., FakeVLLM],
) -> None:
    # The control for the test above: with 4 clients the 12 requests never arrive together.
    server = fake(hold_until=12)
    report = run_load_sync(spec_for(server, concurrency=4, requests=12, max_duration_s=1.0))
    assert report.ok == 0 and report.errors_by_status == {"deadline": 4}
    assert len(server.bodies) == 4


def test_the_same_seed_sends_the_same_open_loop_workload(fake: Callable[..., FakeVLLM]) -> None:
    server = fake()

    def run(seed: int) -> list[int]:
        spec = spec_for(server, request_rate=400, duration_s=0.05, requests=None, seed=seed,
                        output_tokens="uniform:1-50")
        report = run_load_sync(spec)
        assert report.planned_requests == len(spec.schedule() or [])
        return [r.max_tokens for r in report.records]

    first = run(3)
    assert first and run(3) == first
    assert run(4) != first


def test_count_bound_of_an_open_loop_run(fake: Callable[..., FakeVLLM]) -> None:
    server = fake()
    report = run_load_sync(spec_for(server, request_rate=500, arrival="constant", requests=7,
                                    duration_s=20.0))
    assert (report.planned_requests, report.total_requests, len(server.bodies)) == (7, 7, 7)
    assert report.all_ok and not report.stopped_by_deadline


def test_duration_bound_of_an_open_loop_run(fake: Callable[..., FakeVLLM]) -> None:
    # Constant arrivals at 40/s for 0.25 s: at 0, 0.025, ..., 0.225 s.
    server = fake()
    report = run_load_sync(spec_for(server, request_rate=40, arrival="constant", duration_s=0.25,
                                    requests=None))
    assert (report.planned_requests, report.ok, len(server.bodies)) == (10, 10, 10)
    assert report.duration_s == 0.25 and report.all_ok


def test_duration_bound_of_a_closed_loop_run(fake: Callable[..., FakeVLLM]) -> None:
    server = fake()
    report = run_load_sync(spec_for(server, concurrency=2, duration_s=0.3, requests=None))
    # No count limit: the run stopped because the window closed, not at the hard stop.
    assert report.total_requests == len(server.bodies) > 2
    assert report.planned_requests == report.total_requests and report.all_ok
    assert not report.stopped_by_deadline


def test_count_bound_wins_over_a_long_duration_in_a_closed_loop(
    fake: Callable[..., FakeVLLM],
) -> None:
    server = fake()
    report = run_load_sync(spec_for(server, concurrency=2, duration_s=25.0, requests=5))
    assert (report.planned_requests, report.ok, len(server.bodies)) == (5, 5, 5)


def test_arrivals_over_the_in_flight_cap_are_dropped_and_counted(
    fake: Callable[..., FakeVLLM],
) -> None:
    server = fake("hang")
    spec = spec_for(server, request_rate=1000, arrival="constant", requests=10, max_in_flight=3,
                    max_duration_s=1.0)
    snapshots: list[ProgressSnapshot] = []
    report = run_load_sync(spec, progress=snapshots.append)
    assert (report.planned_requests, report.total_requests, report.dropped) == (10, 3, 7)
    assert report.errors_by_status == {"deadline": 3}
    assert len(report.dropped_s) == 7 and not report.all_ok
    assert snapshots[-1].dropped == 7
    assert "7 arrivals not sent: 3 requests were in flight (--max-in-flight)" in (
        report.render_text()
    )
    assert sum(b.dropped for b in report.timeline) == 7


def test_a_profile_run_follows_the_trace(fake: Callable[..., FakeVLLM]) -> None:
    server = fake()
    trace = Trace("burst", ((0.0, 50.0), (2.0, 0.0), (4.0, 100.0), (5.0, 0.0)))
    spec = spec_for(server, profile=trace, time_scale=0.1, arrival="constant", requests=None)
    report = run_load_sync(spec)
    # 50/s for 0.2 s, nothing for 0.2 s, 100/s for 0.1 s.
    assert report.planned_requests == report.ok == 20
    assert report.open_loop is not None
    assert (report.open_loop.profile, report.open_loop.time_scale) == ("burst", 0.1)
    assert "profile burst at time scale 0.1" in report.render_text()


def test_after_stop_requests_in_flight_finish_and_nothing_more_starts(
    fake: Callable[..., FakeVLLM],
) -> None:
    # Each answer streams 10 tokens 50 ms apart: 0.5 s, well inside the 2 s of grace.
    server = fake(token_delay_s=0.05)
    spec = spec_for(server, request_rate=20, arrival="constant", requests=50,
                    output_tokens="fixed:10")

    async def main() -> LoadReport:
        stop = asyncio.Event()

        async def stop_once_three_arrived() -> None:
            await asyncio.to_thread(server.wait_for_requests, 3)
            stop.set()

        stopper = asyncio.create_task(stop_once_three_arrived())
        report = await run_load(spec, stop=stop)
        await stopper
        return report

    report = asyncio.run(main())
    assert report.interrupted and report.planned_requests == 50
    assert report.total_requests == len(server.bodies) < 10
    assert report.ok == report.total_requests, report.errors_by_status
    assert report.output_tokens_total == 10 * report.ok


def test_setting_stop_ends_the_run_with_a_partial_report(fake: Callable[..., FakeVLLM]) -> None:
    server = fake("hang")
    spec = spec_for(server, request_rate=20, arrival="constant", requests=50)

    async def main() -> LoadReport:
        stop = asyncio.Event()

        async def stop_once_four_arrived() -> None:
            await asyncio.to_thread(server.wait_for_requests, 4)
            stop.set()

        stopper = asyncio.create_task(stop_once_four_arrived())
        report = await run_load(spec, stop=stop)
        await stopper
        return report

    report = asyncio.run(main())
    assert report.interrupted and not report.all_ok
    assert list(report.errors_by_status) == ["interrupted"]
    assert report.total_requests == len(server.bodies) >= 4
    assert report.planned_requests == 50 and not report.stopped_by_deadline
    assert "(interrupted: partial report)" in report.render_text()
