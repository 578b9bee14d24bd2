"""Decisions asked at the same moment share one Redis pipeline; each gets its own replies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from llmfleet.gateway.batch import MAX_COMMANDS, RedisBatcher


class FakeRedis:
    """Answers each command with its own arguments; records every pipeline it is sent."""

    def __init__(self, fail: BaseException | None = None):
        self.pipelines: list[list[tuple[Any, ...]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail = fail

    def pipeline(self, transaction: bool) -> FakePipeline:
        assert not transaction
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, redis: FakeRedis):
        self.redis = redis
        self.commands: list[tuple[Any, ...]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def execute_command(self, *command: Any) -> None:
        self.commands.append(command)

    async def execute(self, raise_on_error: bool) -> list[Any]:
        assert not raise_on_error
        self.redis.pipelines.append(self.commands)
        self.redis.in_flight += 1
        self.redis.most_in_flight = max(self.redis.most_in_flight, self.redis.in_flight)
        await asyncio.sleep(0)  # the round trip: other decisions may queue meanwhile
        self.redis.in_flight -= 1
        if self.redis.fail:
            raise self.redis.fail
        return [NoScriptError("NOSCRIPT") if c[0] == "EVALSHA" and c[1] == "gone" else c
                for c in self.commands]


def run(redis: FakeRedis, asks: list[list[tuple[Any, ...]]]) -> list[Any]:
    async def scenario() -> list[Any]:
        batcher = RedisBatcher(redis)  # type: ignore[arg-type]
        return await asyncio.gather(*(batcher.execute(a) for a in asks),
                                    return_exceptions=True)
    return asyncio.run(scenario())


def test_decisions_of_one_turn_share_one_pipeline_and_get_their_own_replies():
    redis = FakeRedis()
    asks = [[("HGETALL", "k1"), ("EVALSHA", "sha", "k1")], [("EVALSHA", "sha", "k2")],
            [("EVALSHA", "sha", "k3")]]
    replies = run(redis, asks)
    assert len(redis.pipelines) == 1
    assert replies == asks


def test_an_error_reply_stays_with_its_own_decision():
    redis = FakeRedis()
    replies = run(redis, [[("EVALSHA", "gone", "k1")], [("EVALSHA", "sha", "k2")]])
    assert isinstance(replies[0][0], NoScriptError)
    assert replies[1] == [("EVALSHA", "sha", "k2")]


def test_a_lost_connection_reaches_every_decision_in_the_pipeline():
    redis = FakeRedis(fail=RedisConnectionError("gone"))
    replies = run(redis, [[("EVALSHA", "sha", f"k{i}")] for i in range(3)])
    assert all(isinstance(r, RedisConnectionError) for r in replies)


@pytest.mark.parametrize("decisions", [MAX_COMMANDS + 1, 3 * MAX_COMMANDS])
def test_a_burst_goes_out_as_bounded_pipelines_one_at_a_time(decisions):
    redis = FakeRedis()
    asks = [[("EVALSHA", "sha", f"k{i}")] for i in range(decisions)]
    replies = run(redis, asks)
    assert replies == asks
    assert all(len(p) <= MAX_COMMANDS for p in redis.pipelines)
    assert len(redis.pipelines) == -(-decisions // MAX_COMMANDS)
    assert redis.most_in_flight == 1
