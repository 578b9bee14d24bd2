"""The config model: defaults are safe, and every bad value is named with what is allowed."""

from pathlib import Path

import pytest
import yaml

from llmfleet.config import ConfigError, ConfigKind, FleetConfig, Strategy, load_config, validate


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate(data, "test.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_defaults_are_least_conn_with_the_seeds_upstream_settings():
    config = FleetConfig()
    lb = config.load_balancing
    assert lb.strategy is Strategy.LEAST_CONN
    assert (lb.keepalive, lb.read_timeout_s, lb.max_fails, lb.fail_timeout_s) == (32, 300, 3, 30)
    assert config.sandbox.backends == 2 and config.sandbox.base_port == 8001
    assert config.fleet.spot is True


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        ({"client": "Big_Uni"}, "client", "lower-case letters"),
        ({"environment": "x"}, "environment", "2-32"),
        ({"model": {"max_model_len": 100}}, "model.max_model_len", "greater than or equal to 256"),
        ({"model": {"name": ""}}, "model.name", "at least 1 character"),
        ({"model": {"extra_args": "--enforce-eager"}}, "model.extra_args", "must be a list"),
        ({"fleet": {"instance_types": [{"type": "m5.large"}]}}, "fleet.instance_types[0].type",
         "allowed families: g4dn"),
        ({"fleet": {"instance_types": [{"type": "g5.xlarge", "weight": 0}]}},
         "fleet.instance_types[0].weight", "greater than or equal to 1"),
        ({"fleet": {"instance_types": []}}, "fleet.instance_types", "at least 1 item"),
        # Twice, even with different weights: which weight would nginx and the fleet use?
        ({"fleet": {"instance_types": [{"type": "g5.xlarge"}, {"type": "g4dn.xlarge"},
                                       {"type": "g5.xlarge", "weight": 2}]}},
         "fleet", "lists a type twice: ['g5.xlarge', 'g4dn.xlarge', 'g5.xlarge']"),
        ({"fleet": {"min_size": 3, "desired": 1, "max_size": 2}}, "fleet",
         "min_size <= desired <= max_size"),
        ({"fleet": {"spot": "sometimes"}}, "fleet.spot", "valid boolean"),
        ({"load_balancing": {"strategy": "random"}}, "load_balancing.strategy",
         "'least_conn' or 'round_robin'"),
        ({"load_balancing": {"keepalive": -1}}, "load_balancing.keepalive",
         "greater than or equal"),
        ({"load_balancing": {"read_timeout_s": 0}}, "load_balancing.read_timeout_s",
         "greater than 0"),
        ({"load_balancing": {"max_body_size": "1 MB"}}, "load_balancing.max_body_size",
         "nginx size"),
        ({"load_balancing": {"weights": {"g5.xlarge": 2}}}, "(top level)",
         "not in fleet.instance_types"),
        ({"sandbox": {"backends": 0}}, "sandbox.backends", "greater than or equal to 1"),
        ({"sandbox": {"preset": "h100"}}, "sandbox.preset", "'t4', 'l4', 'a10g' or 'a100'"),
        ({"sandbox": {"edge_port": 80}}, "sandbox.edge_port", "greater than or equal to 1024"),
        ({"fleet": 5}, "fleet", "mapping with keys: instance_types"),
        ({"colour": "blue"}, "colour", "allowed keys here: client, environment"),
        ({"model": {"nmae": "x"}}, "model.nmae", "allowed keys here: name, served_name"),
    ],
)
def test_each_bad_value_names_the_key_the_value_and_what_is_allowed(data, key, allowed):
    (message,) = problems(data)
    assert message.startswith(f"{key}: ")
    assert allowed in message


def test_the_value_given_is_shown():
    (message,) = problems({"load_balancing": {"strategy": "random"}})
    assert 'got "random"' in message


def test_several_bad_values_are_reported_together():
    found = problems({
        "client": "A",
        "model": {"max_model_len": 1},
        "load_balancing": {"strategy": "fastest", "max_fails": -2},
        "unknown": True,
    })
    keys = sorted(message.split(":")[0] for message in found)
    assert keys == ["client", "load_balancing.max_fails", "load_balancing.strategy",
                    "model.max_model_len", "unknown"]


def test_error_message_names_the_source_and_counts_problems():
    with pytest.raises(ConfigError, match=r"invalid llmfleet config in test.yaml \(2 problems\)"):
        validate({"client": "A", "environment": "B"}, "test.yaml")


def test_yaml_file_loads_and_missing_or_broken_files_are_clear(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("client: uni\nload_balancing:\n  strategy: round_robin\n")
    assert load_config(good).config.load_balancing.strategy is Strategy.ROUND_ROBIN
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("client: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_config(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level is a list, not a mapping"):
        load_config(listy)


def test_gpu_weights_must_name_fleet_types_and_apply_per_type():
    config = validate({
        "fleet": {"instance_types": [{"type": "g4dn.xlarge"}, {"type": "g5.xlarge", "weight": 2}]},
        "load_balancing": {"weights": {"g5.xlarge": 3}},
    }, "t")
    assert config.load_balancing.weight_for("g5.xlarge") == 3
    assert config.load_balancing.weight_for("g4dn.xlarge") == 1


def test_the_documented_example_is_valid_and_spells_out_every_default():
    example = Path(__file__).parents[2] / "examples" / "sandbox.yaml"
    loaded = load_config(example)
    assert (loaded.kind, loaded.config) == (ConfigKind.SANDBOX, FleetConfig())
    data = yaml.safe_load(example.read_text(encoding="utf-8"))
    assert set(data) == set(FleetConfig.model_fields)
    for section, fields in data.items():
        if isinstance(fields, dict):
            model = FleetConfig.model_fields[section].annotation
            assert set(fields) == set(model.model_fields), section
