"""What a stack left behind on AWS: everything still tagged `llmfleet:stack=<stack>` after
`pulumi destroy` (or instead of it), listed and, when asked, deleted.

Each kind of resource is listed through its own service's API with a tag filter (the Resource
Groups Tagging API does not see every kind), and deleted with that service's delete call. Only
what carries the stack's tag is touched; a failed deletion is reported with AWS's reason, and
the sweep goes on with the rest. boto3's standard settings apply (credentials, `AWS_PROFILE`,
`AWS_ENDPOINT_URL`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

STACK_TAG = "llmfleet:stack"


@dataclass(frozen=True)
class Leftover:
    region: str
    kind: str
    id: str
    detail: str = ""  # what a person needs to recognise it (size, name, state)


@dataclass(frozen=True)
class Outcome:
    leftover: Leftover
    deleted: bool
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.leftover), "deleted": self.deleted, "error": self.error}


Clients = Callable[[str], Any]  # service name -> boto3 client for one region


@dataclass(frozen=True)
class Kind:
    name: str
    find: Callable[[Clients, str], Iterator[tuple[str, str]]]  # -> (id, detail)
    delete: Callable[[Clients, str], None]


def _ec2_filter(stack: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{STACK_TAG}", "Values": [stack]}]


def _instances(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    pages = c("ec2").get_paginator("describe_instances").paginate(Filters=[
        *_ec2_filter(stack),
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
    for page in pages:
        for reservation in page["Reservations"]:
            for i in reservation["Instances"]:
                yield i["InstanceId"], f"{i['InstanceType']} {i['State']['Name']}"


def _volumes(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    for page in c("ec2").get_paginator("describe_volumes").paginate(Filters=_ec2_filter(stack)):
        for v in page["Volumes"]:
            yield v["VolumeId"], f"{v['Size']} GiB {v['State']}"


def _snapshots(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    pages = c("ec2").get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], Filters=_ec2_filter(stack))
    for page in pages:
        for s in page["Snapshots"]:
            yield s["SnapshotId"], f"{s['VolumeSize']} GiB of {s.get('VolumeId', '?')}"


def _interfaces(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    pages = c("ec2").get_paginator("describe_network_interfaces").paginate(
        Filters=_ec2_filter(stack))
    for page in pages:
        for n in page["NetworkInterfaces"]:
            yield n["NetworkInterfaceId"], n.get("Status", "")


def _addresses(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    for a in c("ec2").describe_addresses(Filters=_ec2_filter(stack))["Addresses"]:
        yield a["AllocationId"], a.get("PublicIp", "")


def _launch_templates(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    pages = c("ec2").get_paginator("describe_launch_templates").paginate(
        Filters=_ec2_filter(stack))
    for page in pages:
        for t in page["LaunchTemplates"]:
            yield t["LaunchTemplateId"], t["LaunchTemplateName"]


def _log_groups(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    logs = c("logs")
    for page in logs.get_paginator("describe_log_groups").paginate():
        for group in page["logGroups"]:
            tags = logs.list_tags_for_resource(resourceArn=group["arn"].removesuffix(":*"))
            if tags.get("tags", {}).get(STACK_TAG) == stack:
                yield group["logGroupName"], f"{group.get('storedBytes', 0)} bytes"


def _functions(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    functions = c("lambda")
    for page in functions.get_paginator("list_functions").paginate():
        for f in page["Functions"]:
            if functions.list_tags(Resource=f["FunctionArn"])["Tags"].get(STACK_TAG) == stack:
                yield f["FunctionName"], f.get("Runtime", "")


def _repositories(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    ecr = c("ecr")
    for page in ecr.get_paginator("describe_repositories").paginate():
        for r in page["repositories"]:
            tags = ecr.list_tags_for_resource(resourceArn=r["repositoryArn"])["tags"]
            if any(t["Key"] == STACK_TAG and t["Value"] == stack for t in tags):
                yield r["repositoryName"], r["repositoryUri"]


def _parameters(c: Clients, stack: str) -> Iterator[tuple[str, str]]:
    pages = c("ssm").get_paginator("describe_parameters").paginate(
        ParameterFilters=[{"Key": f"tag:{STACK_TAG}", "Values": [stack]}])
    for page in pages:
        for p in page["Parameters"]:
            yield p["Name"], p.get("Type", "")


# In an order that deletes what holds others first: instances before their volumes and
# interfaces, volumes before nothing, snapshots after the volumes they came from.
KINDS: tuple[Kind, ...] = (
    Kind("instance", _instances,
         lambda c, i: c("ec2").terminate_instances(InstanceIds=[i])),
    Kind("volume", _volumes, lambda c, i: c("ec2").delete_volume(VolumeId=i)),
    Kind("snapshot", _snapshots, lambda c, i: c("ec2").delete_snapshot(SnapshotId=i)),
    Kind("network-interface", _interfaces,
         lambda c, i: c("ec2").delete_network_interface(NetworkInterfaceId=i)),
    Kind("elastic-ip", _addresses, lambda c, i: c("ec2").release_address(AllocationId=i)),
    Kind("launch-template", _launch_templates,
         lambda c, i: c("ec2").delete_launch_template(LaunchTemplateId=i)),
    Kind("log-group", _log_groups, lambda c, i: c("logs").delete_log_group(logGroupName=i)),
    Kind("lambda-function", _functions,
         lambda c, i: c("lambda").delete_function(FunctionName=i)),
    Kind("ecr-repository", _repositories,
         lambda c, i: c("ecr").delete_repository(repositoryName=i, force=True)),
    Kind("ssm-parameter", _parameters, lambda c, i: c("ssm").delete_parameter(Name=i)),
)


def find(session: Any, stack: str, regions: Sequence[str],
         kinds: Sequence[Kind] = KINDS) -> Iterator[Leftover | Outcome]:
    """Everything tagged with `stack` in `regions`. A kind that cannot be listed (no
    permission, a service not in the region) comes back as a failed Outcome with the reason."""
    for region in regions:
        clients = _clients(session, region)
        for kind in kinds:
            try:
                for found_id, detail in kind.find(clients, stack):
                    yield Leftover(region, kind.name, found_id, detail)
            except (ClientError, BotoCoreError) as error:
                yield Outcome(Leftover(region, kind.name, "*", "could not list"), False,
                              _reason(error))


def delete(session: Any, leftovers: Sequence[Leftover],
           kinds: Sequence[Kind] = KINDS) -> list[Outcome]:
    """Delete each leftover; a failure is reported with AWS's reason, and the rest go on."""
    by_name = {k.name: k for k in kinds}
    outcomes = []
    for leftover in leftovers:
        try:
            by_name[leftover.kind].delete(_clients(session, leftover.region), leftover.id)
            outcomes.append(Outcome(leftover, True))
        except (ClientError, BotoCoreError) as error:
            outcomes.append(Outcome(leftover, False, _reason(error)))
    return outcomes


def _clients(session: Any, region: str) -> Clients:
    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in made:
            made[service] = session.client(service, region_name=region)
        return made[service]

    return client


def _reason(error: Exception) -> str:
    if isinstance(error, ClientError):
        e = error.response.get("Error", {})
        return f"{e.get('Code', 'Error')}: {e.get('Message', '')}".strip()
    return str(error)
