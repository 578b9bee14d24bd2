"""Seeded request workloads: token-length distributions and prompts. No I/O.

A distribution is written as a short string and parsed by :func:`parse_distribution`:

``fixed:N``
    always ``N`` (``N >= 1``).
``uniform:A-B``
    an integer drawn uniformly from ``A..B`` inclusive (``1 <= A <= B``).
``heavy`` or ``heavy:median=M,max=X,sigma=S,min=N``
    a lognormal with median ``M`` and shape ``sigma`` (the standard deviation of
    ``ln(x)``), rounded and clamped to ``min..max``. Any subset of the keys may be
    given; the defaults are ``median=64,max=1024,sigma=1.0,min=1``. With those,
    P95 is about 5x and P99 about 10x the median: most requests are short and a
    few are very long, like real chat traffic.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_PROMPT_TOKENS",
    "Distribution",
    "FixedDistribution",
    "HeavyDistribution",
    "RequestPlan",
    "UniformDistribution",
    "generate_plans",
    "parse_distribution",
]

DEFAULT_OUTPUT_TOKENS = "heavy:median=64,max=1024,sigma=1.0"
DEFAULT_PROMPT_TOKENS = "uniform:32-256"

ALLOWED_FORMS = "'heavy[:median=M,max=X,sigma=S,min=N]', 'fixed:N' or 'uniform:A-B'"

# Short, common English words: each is close to one token for typical BPE vocabularies,
# so a prompt of N words is roughly N prompt tokens.
_WORDS = (
    "the of and to in is for on that with as it at by from this be are was or an not "
    "have has but all can one we they more will about when which there what so time "
    "up out new some if no any just like other use how data model over into than only "
    "first very then each make well way work also back after used two may where most "
    "water long little should find day people good see number part sound"
)
_VOCABULARY = tuple(_WORDS.split())


class Distribution(ABC):
    """A distribution of positive integer token counts."""

    @abstractmethod
    def sample(self, rng: random.Random) -> int:
        """Draw one value (always >= 1) from ``rng``."""

    @abstractmethod
    def spec(self) -> str:
        """The canonical string form, which :func:`parse_distribution` accepts."""

    def __str__(self) -> str:
        return self.spec()


@dataclass(frozen=True)
class FixedDistribution(Distribution):
    """Always the same value."""

    value: int

    def sample(self, rng: random.Random) -> int:
        return self.value

    def spec(self) -> str:
        return f"fixed:{self.value}"


@dataclass(frozen=True)
class UniformDistribution(Distribution):
    """Uniform over the integers ``low..high`` inclusive."""

    low: int
    high: int

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    def spec(self) -> str:
        return f"uniform:{self.low}-{self.high}"


@dataclass(frozen=True)
class HeavyDistribution(Distribution):
    """Lognormal with the given median and sigma, rounded and clamped to ``minimum..maximum``.

    Clamping (rather than redrawing) keeps one draw per sample, so sequences stay aligned
    across parameter changes; the cap only gathers the far tail at ``maximum``.
    """

    median: float = 64.0
    maximum: int = 1024
    sigma: float = 1.0
    minimum: int = 1

    def sample(self, rng: random.Random) -> int:
        value = round(rng.lognormvariate(math.log(self.median), self.sigma))
        return max(self.minimum, min(self.maximum, value))

    def spec(self) -> str:
        return (
            f"heavy:median={_fmt(self.median)},max={self.maximum},"
            f"sigma={_fmt(self.sigma)},min={self.minimum}"
        )


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _bad(text: str, why: str) -> ValueError:
    return ValueError(f"invalid distribution {text!r}: {why}; allowed: {ALLOWED_FORMS}")


def _positive_int(text: str, raw: str, what: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise _bad(text, f"{what} must be an integer, got {raw!r}") from None
    if value < 1:
        raise _bad(text, f"{what} must be >= 1, got {value}")
    return value


def _positive_float(text: str, raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _bad(text, f"{what} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise _bad(text, f"{what} must be a finite number > 0, got {raw!r}")
    return value


def _parse_heavy(text: str, args: str) -> HeavyDistribution:
    defaults = HeavyDistribution()
    median, maximum, sigma, minimum = (
        defaults.median,
        defaults.maximum,
        defaults.sigma,
        defaults.minimum,
    )
    for item in filter(None, (part.strip() for part in args.split(","))):
        key, sep, raw = (piece.strip() for piece in item.partition("="))
        if not sep:
            raise _bad(text, f"heavy parameters are key=value, got {item!r}")
        if key == "median":
            median = _positive_float(text, raw, "median")
        elif key == "max":
            maximum = _positive_int(text, raw, "max")
        elif key == "sigma":
            sigma = _positive_float(text, raw, "sigma")
        elif key == "min":
            minimum = _positive_int(text, raw, "min")
        else:
            raise _bad(text, f"unknown heavy parameter {key!r} (keys: median, max, sigma, min)")
    if not minimum <= median <= maximum:
        raise _bad(text, f"need min <= median <= max, got {minimum} / {median} / {maximum}")
    return HeavyDistribution(median=median, maximum=maximum, sigma=sigma, minimum=minimum)


def parse_distribution(text: str | Distribution) -> Distribution:
    """Parse a distribution string (see the module docstring); ValueError names what is allowed.

    A :class:`Distribution` is returned unchanged, so callers may pass either form.
    """
    if isinstance(text, Distribution):
        return text
    if not isinstance(text, str):
        raise _bad(str(text), "expected a string")
    kind, _, args = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "heavy":
        return _parse_heavy(text, args)
    if kind == "fixed":
        if not args:
            raise _bad(text, "fixed needs a value, e.g. 'fixed:128'")
        return FixedDistribution(_positive_int(text, args.strip(), "the fixed value"))
    if kind == "uniform":
        low_raw, dash, high_raw = args.partition("-")
        if not dash:
            raise _bad(text, "uniform needs a range, e.g. 'uniform:16-256'")
        low = _positive_int(text, low_raw.strip(), "the lower bound")
        high = _positive_int(text, high_raw.strip(), "the upper bound")
        if low > high:
            raise _bad(text, f"the lower bound {low} is above the upper bound {high}")
        return UniformDistribution(low, high)
    raise _bad(text, f"unknown kind {kind!r}")


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """What one request will ask for."""

    index: int
    prompt: str
    prompt_tokens: int  # planned (approximate: one word ~ one token)
    max_tokens: int


def generate_plans(
    count: int,
    seed: int,
    output_tokens: Distribution,
    prompt_tokens: Distribution,
) -> Iterator[RequestPlan]:
    """Yield ``count`` request plans, the same ones for the same seed and distributions.

    Output lengths and prompts use separate random streams, so changing the prompt
    distribution does not change the output-length sequence (and vice versa). Plans are
    made lazily so a large run does not hold every prompt in memory at once.
    """
    # String seeds hash deterministically (unlike hash() of a str), so runs repeat exactly.
    output_rng = random.Random(f"llmfleet-output-{seed}")
    prompt_rng = random.Random(f"llmfleet-prompt-{seed}")
    for index in range(count):
        max_tokens = output_tokens.sample(output_rng)
        n_words = prompt_tokens.sample(prompt_rng)
        prompt = " ".join(prompt_rng.choices(_VOCABULARY, k=n_words))
        yield RequestPlan(index=index, prompt=prompt, prompt_tokens=n_words, max_tokens=max_tokens)
