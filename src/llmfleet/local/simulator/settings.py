"""What the simulation assumes beyond the fleet's config: how long a node takes to serve, how
often spot capacity goes away, what a request asks for and what counts as served in time.

Defaults are public figures (docs/autoscaling.md, "Cold start"): about 2 minutes to boot a
GPU instance, 5 minutes more to pull vLLM's image and load an uncached 8B model, about a
minute from a warm pool of stopped on-demand instances, and AWS's two-minute spot notice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from llmfleet.config import FleetConfig
from llmfleet.local.loadgen.workload import (
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    Distribution,
    parse_distribution,
)
from llmfleet.local.simbackend.presets import Preset, get_preset, preset_names
from llmfleet.local.simulator.capacity import FAMILY_PRESETS, family_preset

_SECONDS_OR_RATES = ("boot_s", "load_s", "warm_start_s", "spot_interruptions_per_hour",
                     "spot_notice_s", "ttft_slo_s", "e2e_slo_s")


class SimulationError(ValueError):
    """A setting or config value the simulator cannot run with; the message names it."""


@dataclass(frozen=True)
class SimulationSettings:
    seed: int = 0
    preset: str | None = None  # None: from the family of fleet.instance_types[0]
    # vLLM's --max-num-seqs on every node instead of the preset's (as a sandbox's
    # `sandbox.max_num_seqs`); None: the preset's
    max_num_seqs: int | None = None
    boot_s: float = 120.0  # launch until the instance runs user data
    load_s: float = 300.0  # image pull, uncached weights and vLLM's start, after the boot
    warm_start_s: float = 60.0  # a stopped on-demand instance from the warm pool to serving
    # Per spot node-hour. The Spot Instance Advisor puts GPU types at 5-20 % a month (far
    # below 0.001 an hour); the default is pessimistic so that a two-hour run sees some.
    spot_interruptions_per_hour: float = 0.01
    spot_notice_s: float = 120.0
    spot_capacity: int | None = None  # spot instances AWS will give at once; None: no limit
    output_tokens: str = DEFAULT_OUTPUT_TOKENS
    prompt_tokens: str = DEFAULT_PROMPT_TOKENS
    ttft_slo_s: float = 2.0
    e2e_slo_s: float = 30.0
    # None: the trace's requests arrive as they are (open loop). A number: the trace is read
    # as students (rps x STUDENT_MESSAGE_INTERVAL_S of them at a time), each sending a
    # message, waiting for its answer, and thinking this long on average before the next
    # (closed loop): when answers slow down, fewer messages arrive; when they speed up, more.
    think_s: float | None = None

    def __post_init__(self) -> None:
        for name in _SECONDS_OR_RATES:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise SimulationError(f"{name}: got {value!r}; allowed: a number >= 0")
        for name in ("ttft_slo_s", "e2e_slo_s"):
            if getattr(self, name) <= 0:
                raise SimulationError(f"{name}: got {getattr(self, name)!r}; allowed: > 0")
        if self.think_s is not None and not (
                isinstance(self.think_s, int | float) and math.isfinite(self.think_s)
                and self.think_s > 0):
            raise SimulationError(f"think_s: got {self.think_s!r}; allowed: a number of "
                                  "seconds > 0, or none for the trace's arrivals as they are")
        if self.spot_capacity is not None and self.spot_capacity < 0:
            raise SimulationError(f"spot_capacity: got {self.spot_capacity}; allowed: a whole "
                                  "number >= 0, or none for no limit")
        for name in ("output_tokens", "prompt_tokens"):
            try:
                parse_distribution(getattr(self, name))
            except ValueError as error:
                raise SimulationError(f"{name}: {error}") from None
        if self.max_num_seqs is not None and not (
                isinstance(self.max_num_seqs, int) and self.max_num_seqs >= 1):
            raise SimulationError(f"max_num_seqs: got {self.max_num_seqs!r}; allowed: a whole "
                                  "number >= 1, or none for the preset's")
        if self.preset is not None:
            try:
                get_preset(self.preset)
            except ValueError as error:
                raise SimulationError(f"preset: {error}") from None

    @property
    def cold_start_s(self) -> float:
        return self.boot_s + self.load_s

    @property
    def outputs(self) -> Distribution:
        return parse_distribution(self.output_tokens)

    @property
    def prompts(self) -> Distribution:
        return parse_distribution(self.prompt_tokens)

    def preset_for(self, config: FleetConfig) -> Preset:
        """The simulated GPU: `preset`, or the one for the fleet's first instance type, with
        `max_num_seqs` when given."""
        preset = self._preset(config)
        if self.max_num_seqs is None:
            return preset
        return replace(preset, max_num_seqs=self.max_num_seqs)

    def _preset(self, config: FleetConfig) -> Preset:
        if self.preset is not None:
            return get_preset(self.preset)
        instance_type = config.fleet.instance_types[0].type
        preset = family_preset(instance_type)
        if preset is None:
            # Families without a close preset (L40S, V100, H100) need an explicit one rather
            # than a silently wrong one.
            raise SimulationError(
                f"fleet.instance_types[0]: {instance_type} has no simulated GPU; families "
                f"with one: {', '.join(FAMILY_PRESETS)}; or choose a preset "
                f"({', '.join(preset_names())})")
        return get_preset(preset)

