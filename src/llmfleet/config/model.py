"""The typed config model: one per stack (client + environment), validated once.

Pulumi stack config and the sandbox's YAML file both load into `FleetConfig`; every bad value
fails here, before anything is created. Later capabilities (tiers, scaling, alerts, budget) add
their own sections beside the ones below.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import (
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

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
from llmfleet.config.base import GPU_INSTANCE_FAMILIES, Strict
from llmfleet.config.costs import Budget, OffHours
from llmfleet.config.images import ContainerImage, ImagesSpec
from llmfleet.config.tiers import RateLimits

# DNS-label-like: it becomes part of resource names, tags and Pulumi stack names.
Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"),
    Field(description="2-32 lower-case letters, digits and '-', starting with a letter"),
]

# nginx size syntax ("1m", "512k", "10485760"), checked before nginx sees it.
NginxSize = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]+[kKmMgG]?$"),
    Field(description="an nginx size: a whole number with an optional k, m or g suffix, e.g. 1m"),
]

class ModelSpec(Strict):
    """Which model every GPU node serves, and how vLLM is started."""

    name: str = Field("Qwen/Qwen2.5-0.5B-Instruct", min_length=1,
                      description="Hugging Face model id")
    served_name: str | None = Field(None, min_length=1,
                                    description="name clients send as `model` (default: name)")
    max_model_len: int = Field(4096, ge=256, le=1_048_576)
    vllm_image: ContainerImage = "vllm/vllm-openai:v0.11.0"
    extra_args: tuple[str, ...] = ()

    @property
    def public_name(self) -> str:
        return self.served_name or self.name


class InstanceType(Strict):
    """One GPU instance type in the fleet and its capacity weight (units it counts as)."""

    type: str = Field(..., description="EC2 instance type with a GPU, e.g. g4dn.xlarge")
    weight: int = Field(1, ge=1, le=64)

    @field_validator("type")
    @classmethod
    def _has_gpu(cls, value: str) -> str:
        if "." not in value or value.split(".", 1)[0] not in GPU_INSTANCE_FAMILIES:
            hint = (" (V100 needs NVIDIA's proprietary driver; the GPU AMI ships the open-source "
                    "one)" if value.startswith("p3.") else "")
            raise ValueError("not a supported GPU instance type" + hint + "; allowed families: "
                             + ", ".join(GPU_INSTANCE_FAMILIES))
        return value


class Fleet(Strict):
    """The GPU fleet's size and purchase option."""

    instance_types: tuple[InstanceType, ...] = Field(
        (InstanceType(type="g4dn.xlarge"),), min_length=1
    )
    min_size: int = Field(0, ge=0, le=1000)
    desired: int = Field(1, ge=0, le=1000)
    max_size: int = Field(2, ge=1, le=1000)
    spot: bool = True

    @model_validator(mode="after")
    def _sizes_ordered(self) -> Self:
        if not self.min_size <= self.desired <= self.max_size:
            raise ValueError(
                f"sizes must satisfy min_size <= desired <= max_size; got "
                f"{self.min_size} <= {self.desired} <= {self.max_size}"
            )
        names = [t.type for t in self.instance_types]
        if len(set(names)) != len(names):
            raise ValueError(f"instance_types lists a type twice: {names}")
        return self


class Strategy(StrEnum):
    LEAST_CONN = "least_conn"
    ROUND_ROBIN = "round_robin"


class LoadBalancing(Strict):
    """How the nginx edge spreads requests over the GPU nodes."""

    strategy: Strategy = Strategy.LEAST_CONN
    weights: dict[str, Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=dict,
        description="nginx server weight per instance type (GPU-weighted balancing); default 1",
    )
    keepalive: int = Field(32, ge=0, le=1024, description="idle upstream connections per worker")
    # Past two dropped SYNs (resent after 1 s and 3 s): a node's accept queue full for a moment
    # in a burst must not fail the connect and count towards max_fails.
    connect_timeout_s: float = Field(4.0, gt=0, le=60)
    read_timeout_s: float = Field(300.0, gt=0, le=3600)
    max_fails: int = Field(3, ge=0, le=100)
    fail_timeout_s: float = Field(30.0, gt=0, le=3600)
    next_upstream_tries: int = Field(2, ge=1, le=10)
    # Long enough that a request sent to a node that then froze for up to a minute moves on
    # when the node resumes and resets it; below read_timeout_s, so a read timeout is never
    # retried (the tries bound a fleet-wide failure).
    next_upstream_timeout_s: float = Field(60.0, gt=0, le=600)
    max_body_size: NginxSize = "1m"
    # Overload by design: past this many requests on every node (running and queued in vLLM),
    # the edge answers at once "busy, retry after N s" instead of queueing without end.
    max_requests_per_node: int | None = Field(
        None, ge=1, le=100_000,
        description="requests one node holds at once, running and waiting; beyond it on every "
                    "node the edge answers 429 busy with Retry-After (none: vLLM queues all)")
    busy_retry_after_s: int = Field(5, ge=1, le=3600,
                                    description="the Retry-After of a busy answer, in seconds")
    # With API keys on (the gateway), requests beyond max_requests_per_node on every node wait
    # at the edge, in order, for a place, at most this long and this many at once.
    queue_timeout_s: float = Field(
        30.0, ge=0, le=600,
        description="seconds a request may wait at the edge for a place when every node is "
                    "full, before the busy answer (0: answer busy at once)")
    queue_depth: int = Field(
        1000, ge=0, le=1_000_000,
        description="requests that may wait at the edge at once; the next one is answered busy")
    expose_upstream_header: bool = Field(
        False, description="add x-llmfleet-upstream to responses (debugging; the sandbox sets it)"
    )

    def weight_for(self, instance_type: str | None) -> int:
        return self.weights.get(instance_type or "", 1)


class BackendKind(StrEnum):
    SIMULATED = "simulated"
    VLLM = "vllm"


class Sandbox(Strict):
    """The local sandbox: the same edge in front of backends on this machine."""

    backend: BackendKind = BackendKind.SIMULATED
    backends: int = Field(2, ge=1, le=32)
    base_port: int = Field(8001, ge=1024, le=65000, description="first backend port")
    edge_port: int = Field(8080, ge=1024, le=65535)
    preset: Literal["t4", "l4", "a10g", "a100"] = Field("l4", description="simulated GPU")
    max_num_seqs: int | None = Field(None, ge=1, le=4096)
    time_scale: float = Field(1.0, gt=0, le=1000, description="simulated timings are × this")
    health_timeout_s: float = Field(30.0, gt=0, le=3600)
    boot_delay_s: float = Field(
        5.0, ge=0, le=3600,
        description="a simulated backend the autoscaler starts answers /health only after "
                    "this long: a GPU node's cold start")
    auth: bool = Field(True, description="run Redis and the gateway; require API keys")
    monitoring: bool = Field(True, description="run Prometheus and Alertmanager")
    # None: the edge host's own ports (llmfleet.services); a free port wherever one is taken.
    redis_port: int | None = Field(None, ge=1024, le=65535)
    gateway_port: int | None = Field(None, ge=1024, le=65535)


class FleetConfig(Strict):
    """Everything one client environment needs, validated as a whole."""

    client: Slug = "demo"
    environment: Slug = "sandbox"
    model: ModelSpec = ModelSpec()
    fleet: Fleet = Fleet()
    load_balancing: LoadBalancing = LoadBalancing()
    rate_limits: RateLimits = RateLimits()
    alerts: Alerts = Alerts()
    network: NetworkSpec = NetworkSpec()
    edge: EdgeSpec = EdgeSpec()
    gpu_node: GpuNodeSpec = GpuNodeSpec()
    on_demand: OnDemandFallback = OnDemandFallback()
    monitor: MonitorSpec = MonitorSpec()
    prices: Prices = Prices()
    autoscaling: Autoscaling = Autoscaling()
    off_hours: OffHours = OffHours()
    budget: Budget = Budget()
    images: ImagesSpec = ImagesSpec()
    sandbox: Sandbox = Sandbox()

    @model_validator(mode="after")
    def _budget_slack_has_a_channel(self) -> Self:
        if self.budget.slack and self.monitor.slack_webhook_parameter is None:
            raise ValueError(
                "budget.slack posts to the Slack webhook in monitor.slack_webhook_parameter, "
                "which is null; name that SSM parameter or set budget.slack: false")
        return self

    @model_validator(mode="after")
    def _weights_name_fleet_types(self) -> Self:
        known = {t.type for t in self.fleet.instance_types}
        unknown = sorted(set(self.load_balancing.weights) - known)
        if unknown:
            raise ValueError(
                f"load_balancing.weights names {unknown}, which are not in fleet.instance_types "
                f"({sorted(known)})"
            )
        return self

    @property
    def stack_name(self) -> str:
        return f"{self.client}-{self.environment}"
