"""Where a FleetConfig comes from: the sandbox's YAML file, or a Pulumi stack's config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmfleet.config.errors import ConfigError, ConfigIssue, from_validation_error
from llmfleet.config.model import FleetConfig

PULUMI_NAMESPACE = "llmfleet"


def validate(data: Mapping[str, Any], source: str, key_prefix: str = "") -> FleetConfig:
    """Validate raw config data; raise ConfigError listing every bad value."""
    try:
        return FleetConfig.model_validate(dict(data))
    except ValidationError as error:
        raise from_validation_error(source, error, FleetConfig, key_prefix) from None


def load_yaml(path: str | Path | None) -> FleetConfig:
    """Load the sandbox config file; no file means every default."""
    if path is None:
        return FleetConfig()
    return validate(read_yaml(path), str(path))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The file's raw mapping, for callers that merge overrides before validating."""
    path = Path(path)
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise _file_error(source, error.strerror or str(error)) from None
    except yaml.YAMLError as error:
        raise _file_error(source, f"not valid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            source, [ConfigIssue("(top level)", data, "must be a mapping of config sections")]
        )
    return data


def _file_error(source: str, problem: str) -> ConfigError:
    return ConfigError(source, [ConfigIssue("(file)", source, problem)])


def from_pulumi_config_env(config_env: Mapping[str, str], stack: str) -> FleetConfig:
    """Build the config from Pulumi's flat `namespace:key -> string` map.

    Pulumi hands structured values to the program as JSON strings, and plain ones as strings;
    keys outside our namespace (aws:region, ...) belong to providers and are ignored.
    """
    data: dict[str, Any] = {}
    prefix = PULUMI_NAMESPACE + ":"
    for full_key, raw in config_env.items():
        if not full_key.startswith(prefix):
            continue
        data[full_key[len(prefix) :]] = _decode(raw)
    return validate(data, f"stack {stack!r}", key_prefix=prefix)


def load_stack_file(path: str | Path) -> FleetConfig:
    """A `stacks/Pulumi.<stack>.yaml` file read as `pulumi up` would hand it to the program
    (secure values stay encrypted there and are not needed for the sections read here)."""
    path = Path(path)
    data = read_yaml(path)
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise _file_error(str(path), "its `config:` must be a mapping of namespace:key values")
    env = {key: value if isinstance(value, str) else json.dumps(value)
           for key, value in config.items()}
    return from_pulumi_config_env(env, path.name.removeprefix("Pulumi.").removesuffix(".yaml"))


def load_pulumi_stack() -> FleetConfig:
    """Load the running Pulumi program's stack config (call inside a Pulumi program)."""
    import pulumi
    import pulumi.runtime
    from pulumi.runtime.config import CONFIG

    # `pulumi up` hands config over in the PULUMI_CONFIG variable, which get_config_env reads;
    # Automation API inline programs and test mocks only fill the runtime's config map
    # (set_all_config), which pulumi.Config reads first. Merge both the same way.
    config_env = {**pulumi.runtime.get_config_env(), **CONFIG.get()}
    return from_pulumi_config_env(config_env, pulumi.get_stack())


def _decode(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return raw
    # Only structured values and booleans/numbers are JSON; a bare string stays a string,
    # so a name like "null" or "123abc" is never reinterpreted.
    return value if isinstance(value, dict | list | bool | int | float) else raw
