"""The simulator's closed loop (`SimulationSettings.think_s`): a trace read as students, each
waiting for an answer before the next message, so that arrivals follow the fleet's speed."""

from __future__ import annotations

import simpy

from llmfleet.config import validate
from llmfleet.local.loadgen.workload import parse_distribution
from llmfleet.local.simulator import SimulationSettings, simulate
from llmfleet.local.simulator.students import Students
from llmfleet.local.simulator.workload import Lengths, Request
from llmfleet.local.traces import STUDENT_MESSAGE_INTERVAL_S, Trace

TEN_STUDENTS = 10 / STUDENT_MESSAGE_INTERVAL_S  # the trace's rate that stands for 10


class AnswersAfter:
    """Answers every message `answer_s` after it is sent; counts what is in flight."""

    def __init__(self, env: simpy.Environment, answer_s: float) -> None:
        self.env, self.answer_s = env, answer_s
        self.sent: list[float] = []
        self.in_flight = self.most_in_flight = 0

    def send(self, request: Request) -> None:
        self.sent.append(self.env.now)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.env.process(self._answer(request))

    def _answer(self, request: Request):
        yield self.env.timeout(self.answer_s)
        self.in_flight -= 1
        assert request.ended is not None
        request.ended()


def run_students(trace: Trace, answer_s: float, think_s: float = 10.0
                 ) -> tuple[AnswersAfter, Students]:
    env = simpy.Environment()
    server = AnswersAfter(env, answer_s)
    lengths = Lengths(0, parse_distribution("fixed:32"), parse_distribution("fixed:32"))
    students = Students(env, trace, think_s, 0, lengths, server.send)
    env.process(students.run())
    env.run(until=trace.duration_s + 600)
    return server, students


def test_each_student_waits_for_the_answer_so_slower_answers_mean_fewer_messages():
    trace = Trace("ten", ((0.0, TEN_STUDENTS), (1200.0, 0.0)))
    quick, _ = run_students(trace, answer_s=2.0)
    slow, _ = run_students(trace, answer_s=50.0)
    assert quick.most_in_flight <= 10 and slow.most_in_flight <= 10
    # About 1200 / (2 + 10) and 1200 / (50 + 10) messages per student.
    assert 800 <= len(quick.sent) <= 1200
    assert 150 <= len(slow.sent) <= 250


def test_students_follow_the_trace_and_all_leave_at_its_end():
    trace = Trace("drop", ((0.0, TEN_STUDENTS), (600.0, TEN_STUDENTS / 5), (1200.0, 0.0)))
    server, students = run_students(trace, answer_s=2.0)
    first = sum(1 for t in server.sent if 300 <= t < 600)
    second = sum(1 for t in server.sent if 900 <= t < 1200)
    assert 4 <= first / second <= 6.5  # 10 students, then 2
    assert students.active == 0
    assert not [t for t in server.sent if t >= 1200]


def test_a_closed_loop_simulation_ends_with_every_message_answered_or_failed():
    config = validate({"fleet": {"min_size": 1, "desired": 1, "max_size": 4},
                       "autoscaling": {"policy": "adaptive"}}, "test")
    trace = Trace("class", ((0.0, 60 / STUDENT_MESSAGE_INTERVAL_S), (1800.0, 0.0)))
    settings = SimulationSettings(seed=1, spot_interruptions_per_hour=0, think_s=50.0)
    result = simulate(config, trace, settings)
    assert result.requests == result.served + sum(result.failed.values())
    # 60 students for 30 minutes, a message about a minute apart each: about 1,800.
    assert 1200 <= result.requests <= 2000
    assert result == simulate(config, trace, settings)  # the same seed, the same run
