"""What a stack costs per hour at its smallest, typical and largest size, from the config's
prices (`llmfleet:prices`): GPU nodes, the edge, the monitor, disks, public IPv4 addresses and
NAT; and a month of it with the off-hours schedule (`llmfleet:off_hours`) applied, in US dollars
and Pakistani rupees.

An estimate, not a bill: spot prices move, data transfer and NAT traffic are left out, and the
spot group is priced at its cheapest type per capacity unit, the pool price-capacity-optimized
leans to when capacity allows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from llmfleet.config import FleetConfig, OffHours

HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class CostLine:
    item: str
    count: float
    usd_per_hour: float  # for all `count` of them
    # GPU nodes and what goes with them: gone while off-hours take the groups to zero.
    follows_schedule: bool = False


@dataclass(frozen=True)
class ScaleCost:
    """The stack at one size of the spot group (in capacity units)."""

    scale: str
    gpu_units: int
    lines: tuple[CostLine, ...]

    @property
    def usd_per_hour(self) -> float:
        return sum(line.usd_per_hour for line in self.lines)

    @property
    def usd_per_month(self) -> float:
        return self.usd_per_hour * HOURS_PER_MONTH

    def usd_per_month_on(self, on_share: float) -> float:
        """A month with the GPU groups up `on_share` of the time (off-hours)."""
        return HOURS_PER_MONTH * sum(line.usd_per_hour * (on_share if line.follows_schedule
                                                          else 1.0) for line in self.lines)


@dataclass(frozen=True)
class CostEstimate:
    minimum: ScaleCost  # fleet.min_size
    typical: ScaleCost  # fleet.desired
    maximum: ScaleCost  # fleet.max_size
    on_share: float = 1.0  # of a week the GPU groups are up (off-hours schedule)
    pkr_per_usd: float = 0.0

    @property
    def scales(self) -> tuple[ScaleCost, ...]:
        return (self.minimum, self.typical, self.maximum)

    def as_dict(self) -> dict[str, object]:
        return {
            "on_share": round(self.on_share, 4),
            "pkr_per_usd": self.pkr_per_usd,
            **{scale.scale: {
                "gpu_units": scale.gpu_units,
                "usd_per_hour": round(scale.usd_per_hour, 4),
                "usd_per_month": round(scale.usd_per_month, 2),
                "pkr_per_month": round(scale.usd_per_month * self.pkr_per_usd),
                "usd_per_month_scheduled": round(scale.usd_per_month_on(self.on_share), 2),
                "pkr_per_month_scheduled": round(
                    scale.usd_per_month_on(self.on_share) * self.pkr_per_usd),
                "lines": [
                    {"item": line.item, "count": line.count,
                     "usd_per_hour": round(line.usd_per_hour, 4)}
                    for line in scale.lines
                ],
            } for scale in self.scales},
        }


def estimate_hourly_cost(config: FleetConfig) -> CostEstimate:
    """Hourly cost of `config`'s stack at min, desired and max size of the spot group.

    Raises ValueError naming the `llmfleet:prices` key to add when a type has no price.
    """
    fleet = config.fleet
    return CostEstimate(
        minimum=_at_scale(config, "min", fleet.min_size),
        typical=_at_scale(config, "typical", fleet.desired),
        maximum=_at_scale(config, "max", fleet.max_size),
        on_share=on_share(config.off_hours),
        pkr_per_usd=config.prices.pkr_per_usd,
    )


def _at_scale(config: FleetConfig, scale: str, units: int) -> ScaleCost:
    prices = config.prices
    market = "spot" if config.fleet.spot else "on_demand"
    table = prices.spot if config.fleet.spot else prices.on_demand

    # The cheapest type per capacity unit, and how many of it make `units`.
    cheapest = min(config.fleet.instance_types,
                   key=lambda t: _price(table, market, t.type) / t.weight)
    spot_nodes = math.ceil(units / cheapest.weight)

    fallback_type = config.fleet.instance_types[0].type
    fallback_nodes = config.on_demand.min_size
    warm_nodes = config.on_demand.warm_pool
    running_gpu_nodes = spot_nodes + fallback_nodes
    disk_gib = ((running_gpu_nodes + warm_nodes) * config.gpu_node.root_volume_gib
                + config.edge.root_volume_gib + config.edge.redis_volume_gib)

    running_gib = running_gpu_nodes * config.gpu_node.root_volume_gib
    kept_gib = disk_gib - running_gib
    lines = [
        CostLine(f"{cheapest.type} ({market.replace('_', '-')}, spot group)", spot_nodes,
                 spot_nodes * _price(table, market, cheapest.type), follows_schedule=True),
        CostLine(f"{fallback_type} (on-demand fallback, always on)", fallback_nodes,
                 fallback_nodes * _price(prices.on_demand, "on_demand", fallback_type),
                 follows_schedule=True),
        CostLine(f"{config.edge.instance_type} (edge, on-demand)", 1,
                 _price(prices.on_demand, "on_demand", config.edge.instance_type)),
        CostLine("gp3 GiB (running GPU nodes)", running_gib,
                 running_gib * prices.gp3_gib_month / HOURS_PER_MONTH, follows_schedule=True),
        CostLine("gp3 GiB (the warm pool's stopped nodes, edge, its Redis volume)", kept_gib,
                 kept_gib * prices.gp3_gib_month / HOURS_PER_MONTH),
    ]
    monitor = config.monitor
    if monitor.enabled:
        monitor_gib = monitor.root_volume_gib + monitor.data_volume_gib
        lines += [
            CostLine(f"{monitor.instance_type} (monitor, on-demand)", 1,
                     _price(prices.on_demand, "on_demand", monitor.instance_type)),
            CostLine("gp3 GiB (monitor: root and Prometheus' volume)", monitor_gib,
                     monitor_gib * prices.gp3_gib_month / HOURS_PER_MONTH),
        ]
    # The edge's Elastic IP always; GPU nodes and the monitor (which sits in their subnets)
    # have public addresses only without NAT.
    kept_ips = 1 + (0 if config.network.nat else int(monitor.enabled))
    node_ips = 0 if config.network.nat else running_gpu_nodes
    lines += [
        CostLine("public IPv4 addresses (edge, monitor)", kept_ips,
                 kept_ips * prices.public_ipv4_hour),
        CostLine("public IPv4 addresses (GPU nodes)", node_ips,
                 node_ips * prices.public_ipv4_hour, follows_schedule=True),
    ]
    if config.network.nat:
        lines.append(CostLine("NAT gateway (before data processing)", 1, prices.nat_gateway_hour))
    lines.append(CostLine("CloudWatch: the fleet's load for the scaler", 1,
                          scaler_metrics_usd_per_hour(config)))
    return ScaleCost(scale, units, tuple(line for line in lines if line.count))


# CloudWatch's list prices (us-east-1): a custom metric a month, and API calls.
METRIC_USD_MONTH = 0.30
PUT_USD_PER_1000 = 0.01  # PutMetricData requests
GET_USD_PER_1000 = 0.01  # metrics requested with GetMetricData


def scaler_metrics_usd_per_hour(config: FleetConfig) -> float:
    """The edge's five custom metrics, one PutMetricData a sync pass, and the five metrics the
    scaler reads each run (`llmfleet.autoscale.cloudwatch`)."""
    metrics = 5
    puts_per_hour = 3600 / config.edge.sync_interval_s
    runs_per_hour = 60 / max(1, math.ceil(config.autoscaling.interval_s / 60))
    return (metrics * METRIC_USD_MONTH / HOURS_PER_MONTH
            + puts_per_hour * PUT_USD_PER_1000 / 1000
            + runs_per_hour * metrics * GET_USD_PER_1000 / 1000)


def _price(table: dict[str, float], market: str, instance_type: str) -> float:
    try:
        return table[instance_type]
    except KeyError:
        raise ValueError(
            f"no {market.replace('_', '-')} price for {instance_type}: add "
            f"llmfleet:prices.{market}.{instance_type} (USD per hour) to the stack"
        ) from None


# -- the off-hours schedule ------------------------------------------------------------------

_NAMES = {"dow": ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
          "month": ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV",
                    "DEC"]}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
           ("dow", 0, 7))
# A whole number of weeks, so every weekday counts alike; the first week settles the state.
_SIMULATED_WEEKS = 4


def on_share(off_hours: OffHours) -> float:
    """The share of the time the GPU groups are up under `off_hours` (1.0 with no schedule):
    its stop and start crons run minute by minute over whole weeks, in local time."""
    if off_hours.stop is None or off_hours.start is None:
        return 1.0
    stop, start = _cron(off_hours.stop), _cron(off_hours.start)
    up, on, total = True, 0, 0
    moment = datetime(2024, 1, 1)  # a Monday
    for minute in range((_SIMULATED_WEEKS + 1) * 7 * 24 * 60):
        if start(moment):
            up = True
        elif stop(moment):
            up = False
        if minute >= 7 * 24 * 60:
            on += up
            total += 1
        moment += timedelta(minutes=1)
    return on / total


def _cron(expression: str):
    minute, hour, day, month, dow = (_values(text, *field) for text, field in
                                     zip(expression.split(), _FIELDS, strict=True))
    dow = {d % 7 for d in dow}  # 7 is Sunday too
    day_any, dow_any = expression.split()[2] == "*", expression.split()[4] == "*"

    def matches(at: datetime) -> bool:
        weekday = (at.weekday() + 1) % 7  # cron counts from Sunday
        if day_any or dow_any:
            on_day = (day_any or at.day in day) and (dow_any or weekday in dow)
        else:
            on_day = at.day in day or weekday in dow  # both restricted: either will do
        return at.minute in minute and at.hour in hour and at.month in month and on_day

    return matches


def _values(text: str, name: str, low: int, high: int) -> set[int]:
    names = _NAMES.get(name, [])
    found: set[int] = set()
    for part in text.upper().split(","):
        span, _, step = part.partition("/")
        for index, word in enumerate(names):
            span = re.sub(rf"\b{word}\b", str(index + (1 if name == "month" else 0)), span)
        first, _, last = span.partition("-")
        a, b = (low, high) if span == "*" else (int(first), int(last or first))
        found.update(range(a, b + 1, int(step or 1)))
    return found
