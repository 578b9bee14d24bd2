"""Run the Pulumi program in infra/ in-process against recording mocks.

No Pulumi CLI, provider plugin or AWS account is involved: `pulumi.runtime.set_mocks` answers
every resource registration, and the program runs the way the Pulumi CLI's Python host runs it
(`runpy.run_path` on the `main:` directory, as `__main__`).
"""

from __future__ import annotations

import asyncio
import hashlib
import runpy
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pulumi
import pulumi.runtime
import pytest
from infra_helpers import ACCOUNT_ID, PUBLIC_IP, REGION, ZONES, ami_today, registry_digest
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import reset_options

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
PROJECT = "llmfleet"



# Provider functions the program calls, and what a real account would answer.
CALL_RESULTS: dict[str, dict[str, Any]] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": {
        "id": REGION, "names": ZONES, "zoneIds": [f"use1-az{i}" for i in range(1, 4)],
        "groupNames": [REGION],
    },
    "aws:index/getRegion:getRegion": {
        "id": REGION, "region": REGION, "name": REGION,
        "endpoint": f"ec2.{REGION}.amazonaws.com", "description": "US East (N. Virginia)",
    },
    "aws:index/getCallerIdentity:getCallerIdentity": {
        "id": ACCOUNT_ID, "accountId": ACCOUNT_ID, "userId": "AIDAEXAMPLE",
        "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/ci",
    },
    "aws:index/getPartition:getPartition": {
        "id": "aws", "partition": "aws", "dnsSuffix": "amazonaws.com",
        "reverseDnsPrefix": "com.amazonaws",
    },
    # The monitor's subnet: its data volume goes in the same zone.
    "aws:ec2/getSubnet:getSubnet": {
        "id": "subnet-0123456789abcdef0", "availabilityZone": ZONES[0],
        "availabilityZoneId": "use1-az1", "vpcId": "vpc-0123456789abcdef0",
    },
}



def _ssm_parameter(args: Mapping[str, Any]) -> dict[str, Any]:
    # Only the public AMI parameters are read at `pulumi up`; secrets never are.
    value = ami_today(args["name"])
    return {"id": args["name"], "name": args["name"], "type": "String", "value": value,
            "insecureValue": value, "version": 1,
            "arn": f"arn:aws:ssm:{REGION}::parameter{args['name']}"}


def _registry_image(args: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": args["name"], "name": args["name"],
            "sha256Digest": registry_digest(args["name"])}


# Provider functions whose answer depends on the arguments.
CALL_ANSWERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "aws:ssm/getParameter:getParameter": _ssm_parameter,
    "docker:index/getRegistryImage:getRegistryImage": _registry_image,
}

# EC2-style id prefixes, so an id that lands in the wrong argument is easy to spot.
ID_PREFIXES = {
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/natGateway:NatGateway": "nat",
    "aws:ec2/eip:Eip": "eipalloc",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "sgr",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt",
    "aws:ec2/instance:Instance": "i",
    "aws:ebs/volume:Volume": "vol",
}
# Resources whose physical name the provider makes up when the program gives none: the
# property it fills, and the longest name AWS accepts there. The provider appends a dash and 7
# random characters to the resource's name and refuses a result over the limit, so the mocks
# do too: a name that only fits for short stack names fails here, not on `pulumi up`.
AUTONAMED: dict[str, tuple[str, int]] = {
    "aws:autoscaling/group:Group": ("name", 255),
    "aws:iam/role:Role": ("name", 64),
    "aws:iam/instanceProfile:InstanceProfile": ("name", 128),
    "aws:ec2/launchTemplate:LaunchTemplate": ("name", 128),
    "aws:s3/bucket:Bucket": ("bucket", 63),
    "aws:lambda/function:Function": ("name", 64),
    "aws:cloudwatch/eventRule:EventRule": ("name", 64),
    "aws:cloudwatch/logGroup:LogGroup": ("name", 512),
}
AUTONAME_SUFFIX = 8  # "-" and 7 random characters


class Registered(NamedTuple):
    """One resource the program asked Pulumi to create; compares equal to a plain tuple."""

    type: str
    name: str
    inputs: dict[str, Any]


class Options(NamedTuple):
    """Resource options as the engine receives them."""

    ignore_changes: list[str]
    depends_on: list[str]  # URNs
    delete_before_replace: bool


class RecordingMocks(pulumi.runtime.Mocks):
    """Stands in for the engine and every provider, keeps each registration, and answers with
    outputs shaped like AWS's: ids, ARNs, auto-generated names, the EIP's address. Inputs are
    echoed back, so `resolve:ssm:` image ids pass through as given."""

    def __init__(self) -> None:
        self.registered: list[Registered] = []
        self.calls: list[str] = []
        self.call_args: list[tuple[str, dict[str, Any]]] = []
        self.ids: dict[tuple[str, str], str] = {}  # (type, name) -> the id the mock gave it
        # (type, name) -> the options the engine receives, in its own (camelCase) names.
        self.options: dict[tuple[str, str], Options] = {}
        self.outputs: dict[tuple[str, str], dict[str, Any]] = {}  # what the mock answered

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        self.registered.append(Registered(args.typ, args.name, inputs))
        suffix = hashlib.sha256(args.name.encode()).hexdigest()[:17]
        outputs = dict(inputs)
        if args.typ in AUTONAMED:
            field, limit = AUTONAMED[args.typ]
            if field not in inputs:
                outputs[field] = _autoname(args.typ, args.name, suffix[:7], limit)
        # Groups, roles, profiles, buckets and functions use their name as id; EC2 resources an
        # id of their own.
        physical = (f"{ID_PREFIXES[args.typ]}-{suffix}" if args.typ in ID_PREFIXES
                    else outputs.get("name") or outputs.get("bucket") or f"{args.name}-id")
        outputs.setdefault("arn", _arn(args.typ, physical))
        if args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            outputs["latestVersion"] = 1
        elif args.typ == "aws:ec2/eip:Eip":
            outputs.update(allocationId=physical, publicIp=PUBLIC_IP)
        elif args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"mock-password-{suffix}"
        self.ids[args.typ, args.name] = physical
        self.outputs[args.typ, args.name] = outputs
        return physical, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append(args.token)
        self.call_args.append((args.token, dict(args.args)))
        if args.token in CALL_ANSWERS:
            return CALL_ANSWERS[args.token](args.args)
        if args.token not in CALL_RESULTS:
            # An empty answer would only surface later as a confusing KeyError: say which
            # call needs a mock.
            raise NotImplementedError(f"no mock for provider function {args.token}")
        return CALL_RESULTS[args.token]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.registered if r.type == typ]

    def names(self, typ: str) -> list[str]:
        return sorted(r.name for r in self.registered if r.type == typ)

    def one(self, typ: str, name: str) -> dict[str, Any]:
        """The inputs of the one resource of `typ` named `name`."""
        found = [r.inputs for r in self.registered if r.type == typ and r.name == name]
        assert len(found) == 1, f"{len(found)} resources {typ} named {name}"
        return found[0]


# ARNs in AWS's own formats where IAM policies name them (parliament checks those).
ARN_FORMATS = {
    "aws:autoscaling/group:Group": "arn:aws:autoscaling:{region}:{account}:autoScalingGroup:"
                                   "4f9a2a5e-0c1d-4b7e-9f00-0123456789ab:autoScalingGroupName/{name}",
    "aws:lambda/function:Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "aws:cloudwatch/eventRule:EventRule": "arn:aws:events:{region}:{account}:rule/{name}",
    "aws:cloudwatch/logGroup:LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}",
}


def _arn(typ: str, physical: str) -> str:
    if typ in ARN_FORMATS:
        return ARN_FORMATS[typ].format(region=REGION, account=ACCOUNT_ID, name=physical)
    service, _, kind = typ.split(":")[1].partition("/")
    # IAM is global: its ARNs name no region.
    region = "" if service == "iam" else REGION
    return f"arn:aws:{service}:{region}:{ACCOUNT_ID}:{kind}/{physical}"


class RecordingMonitor(MockMonitor):
    """The mocks' engine, keeping the options of each registration (the mocks themselves see
    only the inputs)."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks

    def RegisterResource(self, request: Any) -> Any:
        self.recording.options[request.type, request.name] = Options(
            ignore_changes=list(request.ignoreChanges), depends_on=list(request.dependencies),
            delete_before_replace=request.deleteBeforeReplace)
        return super().RegisterResource(request)


def _autoname(typ: str, name: str, random: str, limit: int) -> str:
    physical = f"{name}-{random}"
    if len(physical) > limit:
        raise ValueError(f"{typ} {name!r}: its generated name {physical!r} has {len(physical)} "
                         f"characters; AWS allows {limit}")
    return physical


class Program:
    """Runs infra/ once under the mocks and hands back its stack exports as plain values."""

    def __init__(self, mocks: RecordingMocks) -> None:
        self.mocks = mocks

    def run(self, config_env: Mapping[str, str], stack: str, *, preview: bool = False
            ) -> dict[str, Any]:
        """Run with `config_env` as the stack config (flat keys, JSON strings) of `stack`, as
        `pulumi up` does, or as `pulumi preview` does."""

        def main() -> Mapping[str, Any]:
            runpy.run_path(str(INFRA), run_name="__main__")
            return pulumi.runtime.get_root_resource().outputs

        return self.run_inline(config_env, stack, main, preview=preview)

    def run_inline(self, config_env: Mapping[str, str], stack: str,
                   build: Callable[[], Mapping[str, Any]], *, preview: bool = False
                   ) -> dict[str, Any]:
        """Run `build` as the program of `stack` (one component on its own, say), and hand
        back the outputs it returns as plain values."""
        # Config and mocks first: the program reads both at import time.
        pulumi.runtime.set_all_config(dict(config_env), [])
        pulumi.runtime.set_mocks(self.mocks, project=PROJECT, stack=stack, preview=preview,
                                 monitor=RecordingMonitor(self.mocks))
        resolved: list[dict[str, Any]] = []

        @pulumi.runtime.test
        def program() -> pulumi.Output:
            return pulumi.Output.all(**build()).apply(resolved.append)

        # The decorator awaits the returned chain and every outstanding registration, and
        # re-raises what the program raised only after that, so `mocks.registered` is complete
        # whether the run succeeded or not.
        program()
        # The guard: tests assert on these plain values outside any apply. Had the apply not run
        # (the program never ran, or a value stayed unknown as in a preview), this fails rather
        # than a test passing silently.
        assert len(resolved) == 1, "the stack exports were never resolved"
        return resolved[0]


def _reset_pulumi_runtime() -> None:
    # The root stack resource, the settings (monitor, project, stack, preview) and the config
    # map are module-level ContextVars, and pytest runs every test in one context: reset them
    # all. infra/'s modules are dropped so each run imports them afresh, as a new process would.
    reset_options()
    pulumi.runtime.set_all_config({}, [])
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or "/").parent == INFRA:
            del sys.modules[name]


@pytest.fixture(autouse=True)
def fresh_pulumi_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and leaves Pulumi's globals pristine, so test order never matters."""
    # The CLI passes config in PULUMI_CONFIG; one left in the shell would leak into every run.
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    # Pulumi creates futures on the thread's current loop as soon as set_mocks registers the
    # root stack, and an earlier asyncio.run() (in any test) leaves the thread without one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _reset_pulumi_runtime()
    yield
    _reset_pulumi_runtime()
    loop.run_until_complete(loop.shutdown_default_executor())
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def mocks() -> RecordingMocks:
    return RecordingMocks()


@pytest.fixture
def program(mocks: RecordingMocks) -> Program:
    return Program(mocks)
