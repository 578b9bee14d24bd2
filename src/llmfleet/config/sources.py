"""Where a FleetConfig comes from: a file (the sandbox's YAML or a Pulumi stack file, told apart
by what is in it), or the running Pulumi program's stack config."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmfleet.config.errors import (
    NO_VALUE,
    ConfigError,
    ConfigFileError,
    ConfigIssue,
    from_validation_error,
)
from llmfleet.config.model import FleetConfig

PULUMI_NAMESPACE = "llmfleet"
PREFIX = PULUMI_NAMESPACE + ":"
# Top-level keys of a Pulumi stack file; `pulumi stack init` may write one with nothing but
# encryption settings, which is still a stack file (one with no llmfleet keys yet).
STACK_FILE_KEYS = ("config", "encryptionsalt", "encryptedkey", "secretsprovider")

# Section -> keys merged over a file's sections before validation (command-line options).
Overrides = Mapping[str, Mapping[str, Any]]


class ConfigKind(StrEnum):
    SANDBOX = "sandbox config"
    STACK = "Pulumi stack file"


_LOOKS_LIKE = {
    ConfigKind.SANDBOX: "top-level sections such as client, fleet, sandbox, as in "
                        "examples/sandbox.yaml",
    ConfigKind.STACK: "llmfleet:<section> entries under a top-level `config:`, as in "
                      "stacks/Pulumi.example.yaml",
}


@dataclass(frozen=True)
class LoadedConfig:
    config: FleetConfig
    kind: ConfigKind
    # The Pulumi stack a stack file configures: from its name, Pulumi.<stack>.yaml, or else
    # <client>-<environment>; None for a sandbox config.
    stack: str | None


def load_config(path: str | Path | None, overrides: Overrides | None = None,
                kind: ConfigKind | None = None) -> LoadedConfig:
    """Read a sandbox config or a Pulumi stack file into a FleetConfig, and say which it was.

    No path means the sandbox's built-in defaults. `overrides` win over the file's values.
    `kind`, when given, is the only kind accepted. Raises ConfigFileError (one line) for a file
    that cannot be read, is neither kind or is not `kind`, and ConfigError listing every bad
    value otherwise.
    """
    with_options = " with command-line options" if overrides else ""
    if path is None:
        _require(kind, ConfigKind.SANDBOX, "built-in defaults")
        config = validate(_merge({}, overrides), "built-in defaults" + with_options)
        return LoadedConfig(config, ConfigKind.SANDBOX, None)
    path = Path(path)
    data = _read(path)
    if isinstance(data, dict) and any(key in data for key in STACK_FILE_KEYS):
        _require(kind, ConfigKind.STACK, str(path))
        sections, issues = _stack_sections(data, str(path))
        config = _validate(_merge(sections, overrides), str(path) + with_options, issues)
        return LoadedConfig(config, ConfigKind.STACK, _stack_name(path) or config.stack_name)
    _expect_sections(data, str(path))
    _require(kind, ConfigKind.SANDBOX, str(path))
    config = validate(_merge(data or {}, overrides), str(path) + with_options)
    return LoadedConfig(config, ConfigKind.SANDBOX, None)


def validate(data: Mapping[str, Any], source: str, key_prefix: str = "") -> FleetConfig:
    """Validate raw config data; raise ConfigError listing every bad value."""
    try:
        return FleetConfig.model_validate(dict(data))
    except ValidationError as error:
        raise from_validation_error(source, error, FleetConfig, key_prefix) from None


def from_pulumi_config_env(config_env: Mapping[str, str], stack: str) -> FleetConfig:
    """Build the config from Pulumi's flat `namespace:key -> string` map.

    Pulumi hands structured values to the program as JSON strings, and plain ones as strings;
    keys outside our namespace (aws:region, ...) belong to providers and are ignored, unless
    the namespace is a near-miss of ours.
    """
    data, issues = _our_sections(config_env)
    return _validate(data, f"stack {stack!r}", issues)


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


def _read(path: Path) -> Any:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigFileError(source, error.strerror or str(error)) from None
    except UnicodeDecodeError:
        raise ConfigFileError(source, "not a text file (UTF-8 YAML expected)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        # PyYAML's own message spans several lines and quotes the file back.
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigFileError(source, f"not valid YAML{where}: {problem}") from None


def _require(wanted: ConfigKind | None, found: ConfigKind, source: str) -> None:
    if wanted is not None and found is not wanted:
        raise ConfigFileError(
            source, f"this is a {found}, but a {wanted} is needed here ({_LOOKS_LIKE[wanted]})")


def _expect_sections(data: Any, source: str) -> None:
    """Refuse, in one line, a file that is neither a sandbox config nor a stack file."""
    if data is None:
        return
    neither = "neither a sandbox config nor a Pulumi stack file"
    if not isinstance(data, dict):
        raise ConfigFileError(
            source, f"{neither}: its top level is a {_yaml_type(data)}, not a mapping")
    keys = [str(key) for key in data]
    if set(keys) & set(FleetConfig.model_fields):
        return  # a sandbox config, perhaps with typos that validation names one by one
    if any(":" in key for key in keys):
        raise ConfigFileError(
            source, f"{neither}: namespace:key entries ({', '.join(keys[:3])}) go under a "
                    "top-level `config:`, as in stacks/Pulumi.example.yaml")
    raise ConfigFileError(
        source, f"{neither}: expected {_LOOKS_LIKE[ConfigKind.SANDBOX]}, or "
                f"{_LOOKS_LIKE[ConfigKind.STACK]}; found {', '.join(keys[:5])}")


def _stack_sections(data: dict[str, Any], source: str) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """The llmfleet sections of a stack file as the Pulumi program would receive them."""
    entries = data.get("config") or {}
    if not isinstance(entries, dict):
        raise ConfigFileError(
            source, f"its `config:` is a {_yaml_type(entries)}; it must be a mapping of "
                    "namespace:key entries such as llmfleet:fleet")
    env: dict[str, str] = {}
    issues = []
    for key, value in entries.items():
        namespace, colon, name = str(key).partition(":")
        if not (namespace and colon and name):
            issues.append(ConfigIssue(
                f"config.{key}", NO_VALUE,
                f"not a namespace:key entry, which Pulumi refuses; did you mean {PREFIX}{key}?"))
            continue
        # Pulumi hands every value to the program as a string, structured ones as JSON.
        env[str(key)] = value if isinstance(value, str) else json.dumps(value, default=str)
    sections, namespace_issues = _our_sections(env)
    issues += namespace_issues
    if not sections and not issues:
        present = ", ".join(list(env)[:3]) or "no config entries"
        raise ConfigFileError(
            source, f"a Pulumi stack file without {PREFIX} keys ({present}), so every setting "
                    f"would be a built-in default; add {PREFIX}client and {PREFIX}environment "
                    "at least, as stacks/Pulumi.example.yaml shows")
    return sections, issues


def _our_sections(env: Mapping[str, str]) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """Our namespace's keys, decoded, and an issue for each key whose namespace is a
    near-miss of ours: Pulumi would pass it to no one, and its setting would silently be lost."""
    sections: dict[str, Any] = {}
    issues = []
    for full_key, raw in env.items():
        namespace, _, name = full_key.partition(":")
        if namespace == PULUMI_NAMESPACE:
            sections[name] = _decode(raw)
        elif difflib.get_close_matches(namespace.lower(), [PULUMI_NAMESPACE], cutoff=0.8):
            issues.append(ConfigIssue(
                full_key, NO_VALUE,
                f"namespace {namespace!r} is not {PULUMI_NAMESPACE!r}, so llmfleet would never "
                f"see this key; did you mean {PREFIX}{name}?"))
    return sections, issues


def _validate(data: Mapping[str, Any], source: str, issues: list[ConfigIssue]) -> FleetConfig:
    """Validate stack sections, reporting `issues` found before validation in the same list."""
    try:
        config = validate(data, source, key_prefix=PREFIX)
    except ConfigError as error:
        raise ConfigError(source, [*issues, *error.issues]) from None
    if issues:
        raise ConfigError(source, issues)
    return config


def _merge(data: dict[str, Any], overrides: Overrides | None) -> dict[str, Any]:
    merged = dict(data)
    for section, values in (overrides or {}).items():
        given = merged.get(section)
        if given is None:
            merged[section] = dict(values)
        elif isinstance(given, dict):
            merged[section] = {**given, **values}
        # Otherwise the file's section is a bad value: kept, so validation reports it.
    return merged


def _stack_name(path: Path) -> str | None:
    if path.stem.startswith("Pulumi.") and path.suffix in (".yaml", ".yml"):
        return path.stem.removeprefix("Pulumi.") or None
    return None


def _yaml_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number",
            bool: "boolean"}.get(type(value), type(value).__name__)


def _decode(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return raw
    # Only structured values and booleans/numbers are JSON; a bare string stays a string,
    # so a name like "null" or "123abc" is never reinterpreted.
    return value if isinstance(value, dict | list | bool | int | float) else raw
