"""Every taggable resource carries the stack's tags, and instances and disks get them too."""

from __future__ import annotations

import pytest
from infra_helpers import ALL_STACKS, GROUP, LAUNCH_TEMPLATE, group_tag_map, stack_config_env

# AWS resource types that take no tags (associations, attachments, inline policies, the
# bucket's access block, EventBridge targets, Lambda permissions): everything else the program
# registers must carry the stack's tags.
UNTAGGABLE = {
    "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:cloudwatch/eventTarget:EventTarget",
    "aws:lambda/permission:Permission",
    "aws:ec2/volumeAttachment:VolumeAttachment",
    "aws:autoscaling/schedule:Schedule",
    "aws:ecr/pullThroughCacheRule:PullThroughCacheRule",
}
# Not tagged themselves; the tags are for what AWS creates from them.
TAGS_FOR_WHAT_THEY_CREATE = {
    "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate": "resourceTags",
}


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_taggable_resource_carries_the_stack_tags(program, mocks, stack):
    exports = program.run(stack_config_env(stack), stack=stack)

    stack_tags = exports["tags"]
    aws_resources = [r for r in mocks.registered if r.type.startswith("aws:")]
    assert len(aws_resources) > 30
    for resource in aws_resources:
        if resource.type in UNTAGGABLE:
            assert "tags" not in resource.inputs, f"{resource.type} is taggable after all"
            continue
        if resource.type == GROUP:
            tags = group_tag_map(resource.inputs)
            # Copied onto every instance the group launches: discovery and cost reports.
            assert all(t["propagateAtLaunch"] for t in resource.inputs["tags"]), resource.name
        elif resource.type in TAGS_FOR_WHAT_THEY_CREATE:
            assert "tags" not in resource.inputs
            tags = resource.inputs.get(TAGS_FOR_WHAT_THEY_CREATE[resource.type], {})
        else:
            tags = resource.inputs.get("tags", {})
        assert stack_tags.items() <= tags.items(), f"{resource.type} {resource.name}"


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_disks_and_network_interfaces_are_tagged_at_launch(program, mocks, stack):
    exports = program.run(stack_config_env(stack), stack=stack)

    for template in mocks.of_type(LAUNCH_TEMPLATE):
        specs = {s["resourceType"]: s["tags"] for s in template.inputs["tagSpecifications"]}
        assert set(specs) == {"volume", "network-interface"}
        for tags in specs.values():
            assert exports["tags"].items() <= tags.items()


def test_groups_say_which_role_and_capacity_their_instances_have(program, mocks):
    program.run(stack_config_env("example"), stack="example")

    roles = {r.name: group_tag_map(r.inputs) for r in mocks.of_type(GROUP)}
    assert roles["acme-prod-gpu-spot"]["llmfleet:role"] == "gpu-node"
    assert roles["acme-prod-gpu-ondemand"]["llmfleet:role"] == "gpu-node"
    assert roles["acme-prod-edge-group"]["llmfleet:role"] == "edge"
    assert {name: tags["Name"] for name, tags in roles.items()} == {
        "acme-prod-gpu-spot": "acme-prod-gpu-spot",
        "acme-prod-gpu-ondemand": "acme-prod-gpu-ondemand",
        "acme-prod-edge-group": "acme-prod-edge",
    }
