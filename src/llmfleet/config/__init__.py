"""One validated config per client environment; see model.py for the sections."""

from llmfleet.config.alerts import Alerts
from llmfleet.config.aws import EdgeSpec, GpuNodeSpec, NetworkSpec, OnDemandFallback, Prices
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
    load_stack_file,
    load_yaml,
    read_yaml,
    validate,
)
from llmfleet.config.tiers import UNLIMITED, FailMode, RateLimits, Tier

__all__ = [
    "UNLIMITED",
    "Alerts",
    "BackendKind",
    "ConfigError",
    "ConfigIssue",
    "EdgeSpec",
    "FailMode",
    "Fleet",
    "FleetConfig",
    "GpuNodeSpec",
    "InstanceType",
    "LoadBalancing",
    "ModelSpec",
    "NetworkSpec",
    "OnDemandFallback",
    "Prices",
    "RateLimits",
    "Sandbox",
    "Strategy",
    "Tier",
    "from_pulumi_config_env",
    "load_pulumi_stack",
    "load_stack_file",
    "load_yaml",
    "read_yaml",
    "validate",
]
