"""Where a drained spot node's replacement comes from (`llmfleet.autoscale.drain.plan`), one
case per rule."""

from __future__ import annotations

import pytest

from llmfleet.autoscale.drain import INTERRUPTION, REBALANCE, GroupView, plan

NODE = "i-0drained"


def group(name: str, *, desired: int, max_size: int, serving: int, draining: int = 0,
          members: tuple[str, ...] = (), capacity_rebalance: bool = False) -> GroupView:
    return GroupView(name=name, desired=desired, max_size=max_size,
                     capacity_rebalance=capacity_rebalance, members=frozenset(members),
                     serving=serving, draining=draining)


# The drained node is in the spot group, counted as draining: 2 desired, 1 other serving.
SPOT = dict(desired=2, max_size=4, serving=1, draining=1, members=(NODE, "i-0other"))
ON_DEMAND = dict(desired=0, max_size=2, serving=0)

CASES = [
    # (event, spot overrides, on-demand overrides, group raised, its new desired, reason text)
    (INTERRUPTION, {}, {}, "spot", 3, "spot"),
    (REBALANCE, {}, {}, "spot", 3, "spot"),
    (REBALANCE, {"capacity_rebalance": True}, {}, None, None, "Capacity Rebalancing launches"),
    # Capacity Rebalancing reacts to rebalance recommendations; an interruption warning that
    # finds no replacement on its way still raises the group.
    (INTERRUPTION, {"capacity_rebalance": True}, {}, "spot", 3, "spot"),
    (INTERRUPTION, {"max_size": 2}, {}, "ondemand", 1, "spot is short"),
    # Spot has launched less than it was asked for: launches are failing.
    (INTERRUPTION, {"desired": 3}, {}, "ondemand", 1, "spot is short"),
    (REBALANCE, {"capacity_rebalance": True, "max_size": 2}, {}, "ondemand", 1, "spot is short"),
    (INTERRUPTION, {"max_size": 2}, {"desired": 2, "serving": 2}, None, None,
     "no room: ondemand is at its maximum 2"),
    # A replacement is launching already (Capacity Rebalancing was first).
    (INTERRUPTION, {"serving": 2}, {}, None, None, "a replacement is launching"),
    # Weighted types: 3 units launched for a desired 2; desired 3 would launch nothing.
    (INTERRUPTION, {"serving": 1, "draining": 2}, {}, "spot", 4, "spot"),
    (INTERRUPTION, {"members": ("i-0other",)}, {}, None, None, "in neither GPU group"),
]


@pytest.mark.parametrize(("event", "spot", "on_demand", "raised", "desired", "reason"), CASES,
                         ids=[f"{c[0].split()[-2].lower()}-{i}" for i, c in enumerate(CASES)])
def test_plan_picks_the_group_and_its_new_desired_capacity(event, spot, on_demand, raised,
                                                           desired, reason):
    decided = plan(event, NODE, group("spot", **{**SPOT, **spot}),
                   group("ondemand", **{**ON_DEMAND, **on_demand}))

    assert (decided.group.name if decided.group else None) == raised
    assert decided.desired == desired
    assert reason in decided.reason


def test_a_node_of_the_on_demand_group_is_replaced_from_spot_first():
    decided = plan(INTERRUPTION, NODE, group("spot", desired=1, max_size=4, serving=1),
                   group("ondemand", desired=1, max_size=2, serving=0, draining=1,
                         members=(NODE,)))

    assert (decided.group.name, decided.desired) == ("spot", 2)
