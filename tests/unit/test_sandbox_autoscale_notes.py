"""`llmfleet up --autoscale` names the autoscaling settings made for AWS that mislead the
adaptive policy over simulated backends, and keeps quiet when they fit."""

from __future__ import annotations

from typing import Any

import pytest

from llmfleet.config import validate
from llmfleet.local.sandbox.autoscaling import aws_paced_notes

WATCHABLE = {"scale_out_lead_s": 5, "slo_utilisation": 0.5}


def notes(autoscaling: dict[str, Any], sandbox: dict[str, Any] | None = None) -> list[str]:
    return aws_paced_notes(validate({"autoscaling": autoscaling, "sandbox": sandbox or {},
                                     "edge": {"sync_interval_s": 1}}, "t"))


def test_aws_lead_time_over_a_seconds_boot_is_named_with_what_to_set():
    (note,) = notes({}, {"boot_delay_s": 3})
    assert "autoscaling.scale_out_lead_s is 420 s" in note
    assert "about 4 s" in note and "near 6" in note


def test_a_utilisation_under_one_request_per_backend_is_named():
    (note,) = notes({"scale_out_lead_s": 5}, {"boot_delay_s": 3, "max_num_seqs": 4})
    assert "autoscaling.slo_utilisation 0.0625 of a backend's 4 slots" in note
    assert "at least 0.25" in note


@pytest.mark.parametrize(("autoscaling", "sandbox"), [
    (WATCHABLE, {"boot_delay_s": 3, "max_num_seqs": 4}),
    ({**WATCHABLE, "policy": "seed"}, {"boot_delay_s": 3}),  # the seed's rule has neither
    ({}, {"backend": "vllm"}),  # a real vLLM boots as slowly as it does
])
def test_settings_that_fit_the_sandbox_get_no_note(autoscaling, sandbox):
    assert notes(autoscaling, sandbox) == []
