"""What a stack costs per hour at its smallest, typical and largest size, from the config's
prices (`llmfleet:prices`): GPU nodes, the edge, the monitor, disks, public IPv4 addresses and
NAT.

An estimate, not a bill: spot prices move, data transfer and NAT traffic are left out, and the
spot group is priced at its cheapest type per capacity unit, the pool price-capacity-optimized
leans to when capacity allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmfleet.config import FleetConfig

HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class CostLine:
    item: str
    count: float
    usd_per_hour: float  # for all `count` of them


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


@dataclass(frozen=True)
class CostEstimate:
    minimum: ScaleCost  # fleet.min_size
    typical: ScaleCost  # fleet.desired
    maximum: ScaleCost  # fleet.max_size

    def as_dict(self) -> dict[str, object]:
        return {
            scale.scale: {
                "gpu_units": scale.gpu_units,
                "usd_per_hour": round(scale.usd_per_hour, 4),
                "usd_per_month": round(scale.usd_per_month, 2),
                "lines": [
                    {"item": line.item, "count": line.count,
                     "usd_per_hour": round(line.usd_per_hour, 4)}
                    for line in scale.lines
                ],
            }
            for scale in (self.minimum, self.typical, self.maximum)
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
                + config.edge.root_volume_gib)

    lines = [
        CostLine(f"{cheapest.type} ({market.replace('_', '-')}, spot group)", spot_nodes,
                 spot_nodes * _price(table, market, cheapest.type)),
        CostLine(f"{fallback_type} (on-demand fallback, always on)", fallback_nodes,
                 fallback_nodes * _price(prices.on_demand, "on_demand", fallback_type)),
        CostLine(f"{config.edge.instance_type} (edge, on-demand)", 1,
                 _price(prices.on_demand, "on_demand", config.edge.instance_type)),
        CostLine("gp3 GiB (GPU nodes running and in the warm pool, edge)", disk_gib,
                 disk_gib * prices.gp3_gib_month / HOURS_PER_MONTH),
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
    public_ips = 1 + (0 if config.network.nat else running_gpu_nodes + monitor.enabled)
    lines.append(
        CostLine("public IPv4 addresses", public_ips, public_ips * prices.public_ipv4_hour))
    if config.network.nat:
        lines.append(CostLine("NAT gateway (before data processing)", 1, prices.nat_gateway_hour))
    return ScaleCost(scale, units, tuple(line for line in lines if line.count))


def _price(table: dict[str, float], market: str, instance_type: str) -> float:
    try:
        return table[instance_type]
    except KeyError:
        raise ValueError(
            f"no {market.replace('_', '-')} price for {instance_type}: add "
            f"llmfleet:prices.{market}.{instance_type} (USD per hour) to the stack"
        ) from None
