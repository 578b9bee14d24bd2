"""GPU presets: plausible vLLM V1 timings and capacities for an 8B-class model per GPU.

The numbers are not measurements of any particular deployment; they are chosen so that the
relative behaviour (T4 slow, L4 middle, A100 fast; ITL grows with batch size; TTFT grows with
prompt length and queueing) looks like a real fleet to a load balancer and an autoscaler.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Timing and capacity of one simulated GPU (all times at time_scale 1.0)."""

    name: str
    prefill_ms_per_token: float  # prompt processing cost, added to the step that prefills it
    itl_ms: float  # decode step time with an empty batch
    itl_ms_per_running_seq: float  # extra step time per sequence in the batch
    max_num_seqs: int  # default concurrent sequences (vLLM --max-num-seqs)
    max_num_batched_tokens: int  # token budget per step (chunked prefill)
    kv_cache_tokens: int  # simulated KV-cache capacity in tokens


PRESETS: dict[str, Preset] = {
    # T4 16 GB, 4-bit 7-8B model: slow decode, small cache.
    "t4": Preset("t4", 0.6, 50.0, 0.8, 32, 2048, 32_768),
    # L4 24 GB (A10G is close enough to share it), FP8 8B model.
    "l4": Preset("l4", 0.3, 28.0, 0.35, 64, 2048, 65_536),
    # A100 40 GB, FP16 8B model.
    "a100": Preset("a100", 0.06, 12.0, 0.06, 256, 8192, 163_840),
}

PRESET_ALIASES: dict[str, str] = {"a10g": "l4"}


def get_preset(name: str) -> Preset:
    """The preset called `name` (case-insensitive, aliases resolved); ValueError if unknown."""
    key = name.lower()
    key = PRESET_ALIASES.get(key, key)
    if key not in PRESETS:
        choices = ", ".join(sorted([*PRESETS, *PRESET_ALIASES]))
        raise ValueError(f"unknown preset {name!r}; choose one of {choices}")
    return PRESETS[key]


def preset_names() -> list[str]:
    """Every accepted preset name, aliases included, for CLI choices."""
    return sorted([*PRESETS, *PRESET_ALIASES])
