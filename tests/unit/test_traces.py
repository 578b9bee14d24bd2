"""Traces: the rate each row sets, the built-in shapes, seeded arrivals, and bad files named
down to the line and value."""

from __future__ import annotations

import random

import pytest

from llmfleet.local.traces import (
    BUILTIN_TRACES,
    STUDENT_MESSAGE_INTERVAL_S,
    Trace,
    TraceError,
    load_trace,
)


def test_each_row_sets_the_rate_until_the_next_and_the_last_row_ends_the_trace():
    trace = Trace("t", ((0.0, 2.0), (10.0, 5.0), (30.0, 99.0)))
    assert trace.duration_s == 30.0
    assert [trace.rate_at(t) for t in (0.0, 9.99, 10.0, 29.9, 30.0, 100.0, -1.0)] == [
        2.0, 2.0, 5.0, 5.0, 0.0, 0.0, 0.0]
    assert trace.expected_requests() == 2.0 * 10 + 5.0 * 20
    assert trace.peak_rps == 5.0


def test_arrivals_follow_the_rate_and_repeat_for_a_seed():
    trace = Trace("t", ((0.0, 0.0), (100.0, 50.0), (200.0, 0.0), (300.0, 0.0)))
    times = list(trace.arrivals(random.Random(7)))
    assert times == sorted(times)
    assert all(100.0 <= t < 200.0 for t in times)
    assert 4000 < len(times) < 6000  # 5000 expected; Poisson's spread is about 70
    assert times == list(trace.arrivals(random.Random(7)))
    assert times != list(trace.arrivals(random.Random(8)))


def test_surge_goes_from_quiet_to_two_thousand_students_in_five_minutes_and_back():
    trace = load_trace("surge")
    def students(minute: float) -> float:
        return trace.rate_at(minute * 60) * STUDENT_MESSAGE_INTERVAL_S

    assert students(10) == pytest.approx(30, rel=1e-3)
    assert students(29.9) == pytest.approx(30, rel=1e-3)
    assert students(30.1) < 100
    assert students(32.5) == pytest.approx(1030, rel=0.05)  # halfway up the ramp
    assert students(35) == pytest.approx(2030, rel=1e-3)
    assert students(54.9) == pytest.approx(2030, rel=1e-3)
    assert students(60) == pytest.approx(30 + 1000, rel=0.05)  # one half-life later
    assert students(100) == pytest.approx(30, rel=1e-3)
    assert trace.duration_s == 2 * 3600


def test_diurnal_is_a_day_with_a_daytime_peak_and_a_quiet_night():
    trace = load_trace("diurnal")
    assert trace.duration_s == 24 * 3600
    assert trace.rate_at(4 * 3600) < trace.rate_at(11 * 3600) / 20
    assert trace.rate_at(12 * 3600 + 60) < trace.rate_at(11 * 3600)  # the lunch dip


def test_spiky_has_short_bursts_on_a_steady_base():
    trace = load_trace("spiky")
    base = trace.rate_at(0)
    assert base > 0 and trace.peak_rps > 8 * base
    assert trace.rate_at(11 * 60) > 4 * base and trace.rate_at(13 * 60) == base


@pytest.mark.parametrize("name", sorted(BUILTIN_TRACES))
def test_built_in_traces_are_valid_and_start_at_zero(name):
    trace = load_trace(name)
    assert trace.name == name and trace.rows[0][0] == 0.0 and trace.expected_requests() > 0


def test_a_csv_file_loads(tmp_path):
    path = tmp_path / "flat.csv"
    path.write_text("# a comment\nt_s, rps\n0,2.5\n\n60,4\n120,0\n")
    trace = load_trace(path)
    assert trace.rows == ((0.0, 2.5), (60.0, 4.0), (120.0, 0.0))
    assert trace.name == "flat"
    assert load_trace(str(path)) == trace


@pytest.mark.parametrize(("text", "expected"), [
    ("", ["empty", "t_s,rps"]),
    ("# nothing\n\n", ["empty"]),
    ("0,1\n10,0\n", ["line 1", "header", "'0,1'", "expected 't_s,rps'"]),
    ("time,rate\n0,1\n10,0\n", ["line 1", "'time,rate'"]),
    ("t_s,rps\n0,1\n", ["line 2", "at least two rows"]),
    ("t_s,rps\n0,1\n10,abc\n20,0\n", ["line 3", "rps 'abc' is not a number"]),
    ("t_s,rps\n0,1\nsoon,2\n20,0\n", ["line 3", "t_s 'soon' is not a number"]),
    ("t_s,rps\n0,1\n10,nan\n20,0\n", ["line 3", "'nan'"]),
    ("t_s,rps\n0,1\n10,2\n10,3\n20,0\n", ["line 4", "t_s 10", "strictly increasing"]),
    ("t_s,rps\n0,1\n30,2\n20,3\n40,0\n", ["line 4", "t_s 20", "previous row's 30"]),
    ("t_s,rps\n0,1\n10,-2\n20,0\n", ["line 3", "rps -2", "0 to 10000"]),
    ("t_s,rps\n0,1\n10,20000\n20,0\n", ["line 3", "rps 20000"]),
    ("t_s,rps\n5,1\n10,0\n", ["line 2", "t_s 5", "start at t_s 0"]),
    ("t_s,rps\n0,1,3\n10,0\n", ["line 2", "3 values", "expected 2"]),
])
def test_a_bad_file_is_named_with_its_line_and_value(tmp_path, text, expected):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    message = str(caught.value)
    assert str(path) in message
    for part in expected:
        assert part in message, message


def test_an_unknown_name_lists_the_built_in_traces():
    with pytest.raises(TraceError, match="surge, diurnal, spiky"):
        load_trace("surgee")


def test_a_trace_built_in_code_is_checked_too():
    with pytest.raises(TraceError, match=r"trace 'x', row 2: t_s 0 is not after"):
        Trace("x", ((0.0, 1.0), (0.0, 2.0)))
    assert issubclass(TraceError, ValueError)
