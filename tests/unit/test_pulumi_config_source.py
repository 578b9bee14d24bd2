"""Pulumi stack config (a flat map of JSON strings) loads into the same model."""

import json

import pytest

from llmfleet.config import ConfigError, from_pulumi_config_env


def test_structured_values_arrive_as_json_strings_and_other_namespaces_are_ignored():
    env = {
        "aws:region": "eu-west-1",
        "llmfleet:client": "university",
        "llmfleet:environment": "prod",
        "llmfleet:fleet": json.dumps({"instance_types": [{"type": "g4dn.xlarge"}], "max_size": 4}),
    }
    config = from_pulumi_config_env(env, "university-prod")
    assert config.stack_name == "university-prod"
    assert config.fleet.max_size == 4


def test_plain_strings_stay_strings():
    config = from_pulumi_config_env({"llmfleet:client": "null1"}, "s")
    assert config.client == "null1"


def test_errors_carry_the_pulumi_key_and_the_stack():
    with pytest.raises(ConfigError) as caught:
        from_pulumi_config_env({"llmfleet:load_balancing": '{"strategy": "fastest"}'}, "uni-prod")
    message = str(caught.value)
    assert "stack 'uni-prod'" in message
    assert "llmfleet:load_balancing.strategy: got \"fastest\"" in message
