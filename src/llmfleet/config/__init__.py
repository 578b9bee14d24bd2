"""One validated config per client environment; see model.py for the sections."""

from llmfleet.config.errors import ConfigError, ConfigIssue
from llmfleet.config.model import (
    BackendKind,
    Fleet,
    FleetConfig,
    InstanceType,
    LoadBalancing,
    ModelSpec,
    Sandbox,
    Strategy,
)
from llmfleet.config.sources import (
    from_pulumi_config_env,
    load_pulumi_stack,
    load_yaml,
    read_yaml,
    validate,
)

__all__ = [
    "BackendKind",
    "ConfigError",
    "ConfigIssue",
    "Fleet",
    "FleetConfig",
    "InstanceType",
    "LoadBalancing",
    "ModelSpec",
    "Sandbox",
    "Strategy",
    "from_pulumi_config_env",
    "load_pulumi_stack",
    "load_yaml",
    "read_yaml",
    "validate",
]
