"""One validated config per client environment; see model.py for the sections."""

from llmfleet.config.alerts import Alerts
from llmfleet.config.autoscaling import Autoscaling
from llmfleet.config.aws import (
    EdgeSpec,
    GpuNodeSpec,
    MonitorSpec,
    NetworkSpec,
    OnDemandFallback,
    Prices,
)
from llmfleet.config.costs import Budget, OffHours
from llmfleet.config.errors import ConfigError, ConfigIssue
from llmfleet.config.images import ImageReference, ImagesSpec
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
    ConfigKind,
    LoadedConfig,
    from_pulumi_config_env,
    load_config,
    load_pulumi_stack,
    validate,
)
from llmfleet.config.tiers import UNLIMITED, FailMode, RateLimits, Tier

__all__ = [
    "UNLIMITED",
    "Alerts",
    "Autoscaling",
    "BackendKind",
    "Budget",
    "ConfigError",
    "ConfigIssue",
    "ConfigKind",
    "EdgeSpec",
    "FailMode",
    "Fleet",
    "FleetConfig",
    "GpuNodeSpec",
    "ImageReference",
    "ImagesSpec",
    "InstanceType",
    "LoadBalancing",
    "LoadedConfig",
    "ModelSpec",
    "MonitorSpec",
    "NetworkSpec",
    "OffHours",
    "OnDemandFallback",
    "Prices",
    "RateLimits",
    "Sandbox",
    "Strategy",
    "Tier",
    "from_pulumi_config_env",
    "load_config",
    "load_pulumi_stack",
    "validate",
]
