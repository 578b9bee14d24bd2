"""What a node is started to run at once, from the config: the starting concurrency the
sandbox's and AWS's sources give the policy until a queue measures it, as the simulator
starts at its preset's max_num_seqs."""

from __future__ import annotations

import pytest

from llmfleet.config import validate
from llmfleet.local.sandbox.backends import backend_command
from llmfleet.local.simbackend.presets import get_preset
from llmfleet.local.simulator import SimulationSettings
from llmfleet.local.simulator.capacity import (
    fleet_concurrency,
    max_num_seqs_arg,
    sandbox_concurrency,
)


@pytest.mark.parametrize(("args", "expected"), [
    ((), None),
    (("--dtype", "half"), None),
    (("--max-num-seqs", "64"), 64),
    (("--max-num-seqs=48",), 48),
    (("--max_num_seqs", "16"), 16),
    (("--max-num-seqs", "8", "--dtype", "half", "--max-num-seqs", "24"), 24),  # last wins
    (("--max-num-seqs",), None),
    (("--max-num-seqs", "many"), None),
    (("--max-num-seqs=0",), None),
    (("--max-num-seqs-per-step", "4"), None),
])
def test_max_num_seqs_is_read_from_vllms_arguments(args, expected):
    assert max_num_seqs_arg(args) == expected


@pytest.mark.parametrize(("model", "types", "expected", "why"), [
    ({}, [{"type": "g4dn.xlarge"}], 32, "a T4's preset"),
    ({}, [{"type": "g6.xlarge"}], 64, "an L4's preset"),
    ({}, [{"type": "g6.xlarge"}, {"type": "g5.xlarge", "weight": 2}], 32,
     "per capacity unit, the smallest: an A10G's 64 over its weight of 2"),
    ({"extra_args": ["--max-num-seqs", "16"]}, [{"type": "g4dn.xlarge"}], 16,
     "what vLLM is started with beats the preset"),
    ({"extra_args": ["--max-num-seqs", "48"]}, [{"type": "g6e.xlarge"}], 48,
     "a family without a preset, told by the arguments"),
    ({}, [{"type": "g6e.xlarge"}], None, "a family without a preset, not told: unknown"),
    ({}, [{"type": "g6e.xlarge"}, {"type": "g4dn.xlarge"}], 32,
     "types without a figure are left out"),
])
def test_an_aws_unit_runs_vllms_max_num_seqs_or_its_familys_preset(model, types, expected,
                                                                     why):
    config = validate({"model": model, "fleet": {"instance_types": types}}, "t")
    assert fleet_concurrency(config) == expected, why


def test_the_aws_figure_is_the_simulators_for_the_same_fleet():
    # `llmfleet simulate` runs the first type's preset and starts its history at it.
    for family in ("g4dn.xlarge", "g5.xlarge", "g6.xlarge", "p4d.24xlarge"):
        config = validate({"fleet": {"instance_types": [{"type": family}]}}, "t")
        preset = SimulationSettings().preset_for(config)
        assert fleet_concurrency(config) == preset.max_num_seqs, family


@pytest.mark.parametrize("sandbox", [{}, {"preset": "t4"}, {"preset": "a100"},
                                     {"max_num_seqs": 4}, {"preset": "t4", "max_num_seqs": 6}])
def test_a_simulated_sandbox_backend_runs_what_the_sandbox_starts_it_with(sandbox):
    config = validate({"sandbox": sandbox}, "t")
    command = backend_command(config, 0, 8001)
    started = (int(command[command.index("--max-num-seqs") + 1])
               if "--max-num-seqs" in command
               else get_preset(command[command.index("--preset") + 1]).max_num_seqs)
    assert sandbox_concurrency(config) == started


def test_a_real_vllm_sandbox_backend_is_known_only_from_its_arguments():
    told = validate({"sandbox": {"backend": "vllm", "max_num_seqs": 4},
                     "model": {"extra_args": ["--max-num-seqs", "12"]}}, "t")
    assert sandbox_concurrency(told) == 12  # sandbox.max_num_seqs is the simulated one's
    assert sandbox_concurrency(validate({"sandbox": {"backend": "vllm"}}, "t")) is None
