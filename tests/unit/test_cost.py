"""The hourly cost estimate: each line from the config's prices, at min, typical and max."""

from __future__ import annotations

import pytest

from llmfleet.config import validate
from llmfleet.local.cost import HOURS_PER_MONTH, estimate_hourly_cost, on_share

PRICES = {
    "on_demand": {"g6.xlarge": 0.8, "g5.xlarge": 1.0, "t3.small": 0.02},
    "spot": {"g6.xlarge": 0.4, "g5.xlarge": 0.5},
    "nat_gateway_hour": 0.045,
    "public_ipv4_hour": 0.005,
    "gp3_gib_month": 0.073,  # 0.0001 per GiB-hour
}


# The scaler's CloudWatch metrics at the default intervals (sync 10 s, a decision a minute).
CLOUDWATCH = (5 * 0.30 / HOURS_PER_MONTH + 360 * 0.01 / 1000 + 60 * 5 * 0.01 / 1000)


def _config(**sections):
    base = {
        "fleet": {"instance_types": [{"type": "g6.xlarge"}, {"type": "g5.xlarge", "weight": 2}],
                  "min_size": 0, "desired": 3, "max_size": 8},
        "on_demand": {"min_size": 1, "max_size": 2, "warm_pool": 1},
        "gpu_node": {"root_volume_gib": 100},
        "edge": {"root_volume_gib": 20},
        "monitor": {"enabled": False},  # priced on its own below
        "prices": PRICES,
    }
    return validate({**base, **sections}, "test")


def test_typical_scale_prices_the_cheapest_type_per_unit_plus_the_always_on_parts():
    typical = estimate_hourly_cost(_config()).typical

    lines = {line.item: (line.count, round(line.usd_per_hour, 6)) for line in typical.lines}
    # g5 at 0.5 for 2 units beats g6 at 0.4 for 1: 3 units take two g5.xlarge.
    assert lines == {
        "g5.xlarge (spot, spot group)": (2, 1.0),
        "g6.xlarge (on-demand fallback, always on)": (1, 0.8),
        "t3.small (edge, on-demand)": (1, 0.02),
        # 3 running GPU nodes, 100 GiB each; 1 in the warm pool, the edge's 20 and the 1 of
        # its Redis volume.
        "gp3 GiB (running GPU nodes)": (300, 0.03),
        "gp3 GiB (the warm pool's stopped nodes, edge, its Redis volume)": (121, 0.0121),
        # The edge's EIP, and each running GPU node (no NAT, so they have public addresses).
        "public IPv4 addresses (edge, monitor)": (1, 0.005),
        "public IPv4 addresses (GPU nodes)": (3, 0.015),
        # 5 metrics (1.50 a month), a put every 10 s, 5 metrics read a minute.
        "CloudWatch: the fleet's load for the scaler": (1, round(CLOUDWATCH, 6)),
    }
    assert round(CLOUDWATCH * HOURS_PER_MONTH, 3) == 6.318  # 1.50 + 2.628 + 2.19
    assert typical.usd_per_hour == pytest.approx(1.8821 + CLOUDWATCH)
    assert typical.usd_per_month == pytest.approx((1.8821 + CLOUDWATCH) * HOURS_PER_MONTH)


def test_at_minimum_only_the_always_on_parts_remain():
    minimum = estimate_hourly_cost(_config(on_demand={"min_size": 0, "warm_pool": 0})).minimum

    assert minimum.gpu_units == 0
    assert [line.item for line in minimum.lines] == [
        "t3.small (edge, on-demand)",
        "gp3 GiB (the warm pool's stopped nodes, edge, its Redis volume)",
        "public IPv4 addresses (edge, monitor)",
        "CloudWatch: the fleet's load for the scaler",
    ]
    assert minimum.usd_per_hour == pytest.approx(0.02 + 21 * 0.0001 + 0.005 + CLOUDWATCH)


def test_nat_adds_the_gateway_and_takes_the_nodes_public_addresses_away():
    maximum = estimate_hourly_cost(_config(network={"nat": True})).maximum

    lines = {line.item: line for line in maximum.lines}
    assert lines["NAT gateway (before data processing)"].usd_per_hour == 0.045
    assert lines["public IPv4 addresses (edge, monitor)"].count == 1
    assert "public IPv4 addresses (GPU nodes)" not in lines
    assert maximum.gpu_units == 8


def test_an_on_demand_fleet_uses_on_demand_prices():
    config = _config(fleet={"instance_types": [{"type": "g6.xlarge"}], "desired": 2,
                            "spot": False})
    typical = estimate_hourly_cost(config).typical
    assert typical.lines[0].item == "g6.xlarge (on-demand, spot group)"
    assert typical.lines[0].usd_per_hour == pytest.approx(1.6)


def test_a_type_without_a_price_names_the_key_to_add():
    config = _config(fleet={"instance_types": [{"type": "p5.48xlarge"}]})
    with pytest.raises(ValueError, match=r"llmfleet:prices\.spot\.p5\.48xlarge"):
        estimate_hourly_cost(config)


def test_the_estimate_serialises_for_a_cli():
    as_dict = estimate_hourly_cost(_config(prices={**PRICES, "pkr_per_usd": 300})).as_dict()
    assert set(as_dict) == {"min", "typical", "max", "on_share", "pkr_per_usd"}
    assert as_dict["typical"]["usd_per_hour"] == round(1.8821 + CLOUDWATCH, 4)
    assert as_dict["typical"]["pkr_per_month"] == round((1.8821 + CLOUDWATCH) * HOURS_PER_MONTH
                                                        * 300)
    # No schedule: the month is the month.
    assert as_dict["on_share"] == 1
    assert as_dict["typical"]["usd_per_month_scheduled"] == as_dict["typical"]["usd_per_month"]


def test_the_monitor_adds_its_instance_its_disks_and_without_nat_an_address():
    monitor = {"instance_type": "t4g.small", "root_volume_gib": 10, "data_volume_gib": 30}
    idle = {"min_size": 0, "warm_pool": 0}
    minimum = estimate_hourly_cost(_config(monitor=monitor, on_demand=idle)).minimum

    lines = {line.item: (line.count, round(line.usd_per_hour, 6)) for line in minimum.lines}
    assert lines["t4g.small (monitor, on-demand)"] == (1, 0.0168)  # the built-in price
    assert lines["gp3 GiB (monitor: root and Prometheus' volume)"] == (40, 0.004)
    # No GPU node at the minimum: the edge's EIP and the monitor's address.
    assert lines["public IPv4 addresses (edge, monitor)"] == (2, 0.01)
    with_nat = estimate_hourly_cost(
        _config(monitor=monitor, on_demand=idle, network={"nat": True})).minimum
    assert {line.item: line.count for line in with_nat.lines}[
        "public IPv4 addresses (edge, monitor)"] == 1


@pytest.mark.parametrize(("stop", "start", "hours_up_a_week"), [
    ("0 23 * * *", "0 7 * * MON-FRI", 5 * 16),  # nights, and Friday night to Monday morning
    ("0 22 * * *", "0 8 * * *", 7 * 14),
    ("30 18 * * 1-5", "0 9 * * 1-5", 5 * 9.5),  # office hours; the weekend stays off
])
def test_the_schedule_gives_the_share_of_the_week_the_gpus_are_up(stop, start, hours_up_a_week):
    config = _config(off_hours={"time_zone": "Asia/Karachi", "stop": stop, "start": start})
    assert on_share(config.off_hours) == pytest.approx(hours_up_a_week / 168)


def test_off_hours_take_the_gpu_lines_away_and_leave_the_rest():
    config = _config(off_hours={"stop": "0 23 * * *", "start": "0 7 * * MON-FRI"})
    estimate = estimate_hourly_cost(config)
    typical = estimate.typical
    follows = sum(line.usd_per_hour for line in typical.lines if line.follows_schedule)
    stays = typical.usd_per_hour - follows
    assert follows == pytest.approx(1.0 + 0.8 + 0.03 + 0.015)  # GPU nodes, disks, addresses
    assert typical.usd_per_month_on(estimate.on_share) == pytest.approx(
        HOURS_PER_MONTH * (stays + follows * 80 / 168))
