"""Distribution strings and seeded workloads of the load generator."""

from __future__ import annotations

import random

import pytest

from llmfleet.local.loadgen import (
    DEFAULT_OUTPUT_TOKENS,
    FixedDistribution,
    HeavyDistribution,
    UniformDistribution,
    generate_plans,
    parse_distribution,
    percentile,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fixed:128", FixedDistribution(128)),
        (" fixed: 1 ", FixedDistribution(1)),
        ("uniform:16-256", UniformDistribution(16, 256)),
        ("uniform:5-5", UniformDistribution(5, 5)),
        ("heavy", HeavyDistribution()),
        ("heavy:", HeavyDistribution()),
        ("HEAVY:median=32", HeavyDistribution(median=32)),
        (
            "heavy:median=100,max=4096,sigma=1.5,min=10",
            HeavyDistribution(median=100, maximum=4096, sigma=1.5, minimum=10),
        ),
        ("heavy: max=2048 , sigma=0.5", HeavyDistribution(maximum=2048, sigma=0.5)),
    ],
)
def test_parse_good(text: str, expected: object) -> None:
    parsed = parse_distribution(text)
    assert parsed == expected
    assert parse_distribution(parsed.spec()) == parsed  # the canonical form round-trips
    assert parse_distribution(parsed) is parsed


def test_default_heavy_parameters() -> None:
    assert parse_distribution(DEFAULT_OUTPUT_TOKENS) == HeavyDistribution(
        median=64, maximum=1024, sigma=1.0, minimum=1
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "unknown kind ''"),
        ("pareto:2", "unknown kind 'pareto'"),
        ("fixed", "fixed needs a value"),
        ("fixed:0", "must be >= 1"),
        ("fixed:1.5", "must be an integer"),
        ("uniform:16", "uniform needs a range"),
        ("uniform:x-3", "must be an integer"),
        ("uniform:9-3", "above the upper bound"),
        ("heavy:median=0", "finite number > 0"),
        ("heavy:sigma=inf", "finite number > 0"),
        ("heavy:mean=4", "unknown heavy parameter 'mean'"),
        ("heavy:median", "key=value"),
        ("heavy:median=2000", "min <= median <= max"),
    ],
)
def test_parse_bad_names_what_is_allowed(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_distribution(text)
    message = str(info.value)
    assert why in message
    assert repr(text) in message
    for form in ("heavy[:median=M,max=X,sigma=S,min=N]", "fixed:N", "uniform:A-B"):
        assert form in message


def draws(text: str, n: int = 1000, seed: int = 0) -> list[int]:
    dist = parse_distribution(text)
    rng = random.Random(seed)
    return [dist.sample(rng) for _ in range(n)]


def test_uniform_covers_its_inclusive_range() -> None:
    values = draws("uniform:3-6")
    assert set(values) == {3, 4, 5, 6}


def test_heavy_tail_is_heavy_and_capped() -> None:
    plans = list(
        generate_plans(
            1000, 0, parse_distribution(DEFAULT_OUTPUT_TOKENS), parse_distribution("fixed:1")
        )
    )
    values = [p.max_tokens for p in plans]
    p50, p99 = percentile(values, 50), percentile(values, 99)
    assert 54 <= p50 <= 74  # median ~64
    assert p99 / p50 >= 6  # lognormal sigma=1: P99 ~ 10x the median
    assert min(values) >= 1 and max(values) <= 1024
    capped = draws("heavy:median=64,max=100,sigma=2")
    assert max(capped) == 100 and min(capped) >= 1


def test_same_seed_same_plans_and_different_seed_differs() -> None:
    out, prompt = parse_distribution("heavy"), parse_distribution("uniform:1-40")
    first = list(generate_plans(50, 3, out, prompt))
    assert list(generate_plans(50, 3, out, prompt)) == first
    assert [p.max_tokens for p in generate_plans(50, 4, out, prompt)] != [
        p.max_tokens for p in first
    ]
    assert [p.index for p in first] == list(range(50))


def test_prompt_distribution_does_not_shift_output_lengths() -> None:
    out = parse_distribution("heavy")
    a = [p.max_tokens for p in generate_plans(100, 0, out, parse_distribution("fixed:5"))]
    b = [p.max_tokens for p in generate_plans(100, 0, out, parse_distribution("uniform:1-500"))]
    assert a == b


def test_prompt_has_the_planned_number_of_words() -> None:
    for plan in generate_plans(
        20, 1, parse_distribution("fixed:4"), parse_distribution("uniform:1-64")
    ):
        assert len(plan.prompt.split()) == plan.prompt_tokens
        assert plan.max_tokens == 4
