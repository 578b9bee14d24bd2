"""The sandbox's autoscaler as the rest of the sandbox sees it: its bounds, its process (started
last by `up --autoscale`, stopped first by `down`) and the report it keeps of its decisions,
which `status` and `top` read. The loop itself is `llmfleet.local.autoscaler`.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from llmfleet.autoscale.policy import ScalerState
from llmfleet.config import FleetConfig
from llmfleet.config.model import BackendKind
from llmfleet.local.sandbox.run import SandboxError, SandboxRun
from llmfleet.local.simulator.capacity import sandbox_concurrency

PROCESS = "autoscaler"  # its name and kind in the sandbox's records
REPORT_FILE = "autoscaler.json"
MAX_BACKENDS = 32  # as many as `sandbox.backends` allows


@dataclass(frozen=True)
class LastDecision:
    time: float  # seconds since the epoch
    reason: str
    desired: int
    drain: tuple[str, ...] = ()


@dataclass(frozen=True)
class AutoscalerReport:
    """What the autoscaler last decided, and what it remembers for its next decision."""

    policy: str
    desired: int
    last_decision: LastDecision | None = None
    scaler: ScalerState | None = None
    minimum: int = 1
    maximum: int = 1

    def to_json(self) -> dict[str, Any]:
        """The `autoscaler` entry of `status --json`."""
        last = self.last_decision
        return {"policy": self.policy, "desired": self.desired,
                "minimum": self.minimum, "maximum": self.maximum,
                "last_decision": {**asdict(last), "drain": list(last.drain)} if last else None}

    def summary(self) -> str:
        """One line for people: the policy, the size it wants, and why."""
        last = self.last_decision
        why = (f"{last.reason} ({datetime.fromtimestamp(last.time):%H:%M:%S})" if last
               else "no decision yet")
        wanted = f"{self.desired} backend{'' if self.desired == 1 else 's'}"
        return f"{self.policy}: {wanted} wanted ({self.minimum} to {self.maximum}); {why}"

    def save(self, path: Path) -> None:
        candidate = path.with_name(path.name + ".tmp")
        candidate.write_text(json.dumps({
            **self.to_json(), "scaler": asdict(self.scaler) if self.scaler else None,
        }, indent=2))
        os.replace(candidate, path)  # status never reads half a report


def read_report(path: Path) -> AutoscalerReport | None:
    """The report at `path`; None before the autoscaler wrote one."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise SandboxError(f"cannot read the autoscaler's report {path}: {error}") from None
    last = data.get("last_decision")
    return AutoscalerReport(
        policy=data["policy"], desired=data["desired"],
        minimum=data.get("minimum", 1), maximum=data.get("maximum", 1),
        last_decision=LastDecision(**{**last, "drain": tuple(last["drain"])}) if last else None,
        scaler=ScalerState(**data["scaler"]) if data.get("scaler") else None,
    )


def policy_config(config: FleetConfig, max_backends: int | None) -> FleetConfig:
    """The config the policy decides with in the sandbox: at least one backend (the edge needs
    one), at most `max_backends` (default `fleet.max_size`). Its backends are of one kind, the
    policy's spot group; the sandbox does not act on the on-demand count of a decision."""
    fleet, starting = config.fleet, config.sandbox.backends
    low = max(1, fleet.min_size)
    high = fleet.max_size if max_backends is None else max_backends
    if not 1 <= high <= MAX_BACKENDS:
        raise SandboxError(f"--max-backends must be from 1 to {MAX_BACKENDS}, got {high}")
    if high < low:
        raise SandboxError(f"--max-backends {high} is below fleet.min_size {low}; the "
                           "autoscaler keeps at least that many backends")
    if starting > high:
        raise SandboxError(f"the sandbox starts {starting} backends, more than the autoscaler's "
                           f"maximum {high} (--max-backends, default fleet.max_size)")
    bounded = fleet.model_copy(update={"min_size": low, "max_size": high, "spot": True,
                                       "desired": max(low, starting)})
    return config.model_copy(update={"fleet": bounded})


def aws_paced_notes(config: FleetConfig) -> list[str]:
    """What in `autoscaling` is set for AWS's GPU nodes and misleads the adaptive policy over
    simulated backends: a lead time of minutes against a boot of seconds projects a closed
    loop's speed-up (arrivals grow as backends join) that far ahead; a utilisation made for a
    T4's 32 slots plans a fraction of a request per backend of a few."""
    a, sandbox = config.autoscaling, config.sandbox
    if a.policy != "adaptive" or sandbox.backend is not BackendKind.SIMULATED:
        return []
    notes = []
    serves_s = sandbox.boot_delay_s + config.edge.sync_interval_s
    if a.scale_out_lead_s > 10 * max(serves_s, 1.0):
        notes.append(
            f"note: autoscaling.scale_out_lead_s is {a.scale_out_lead_s:g} s (a GPU node's "
            f"cold start on AWS); a simulated backend serves about {serves_s:g} s after it is "
            f"asked for. For a sandbox run set it near {math.ceil(serves_s) + 2}: else the "
            "arrival trend is projected that far ahead and the policy asks for far more "
            "backends than the load needs")
    slots = sandbox_concurrency(config)
    if slots is not None and a.slo_utilisation * slots < 1:
        notes.append(
            f"note: autoscaling.slo_utilisation {a.slo_utilisation:g} of a backend's "
            f"{slots:g} slots plans for less than one request per backend while arrivals "
            f"rise. For a sandbox run set it to at least {1 / slots:g} (0.5 plans half the "
            "slots)")
    return notes


def start_autoscaler(run: SandboxRun, max_backends: int | None) -> None:
    """The autoscaler loop as a process of the sandbox, healthy once it has written its first
    report (it does so once it finds itself in the sandbox's records)."""
    assert run.state is not None and run.state.monitor_ports is not None
    bounds = policy_config(run.config, max_backends).fleet
    report = run.state_dir / REPORT_FILE
    report.unlink(missing_ok=True)  # an earlier run's report would pass the health check
    run.state.autoscaler_file = str(report)
    run.save()
    run.say(f"starting the autoscaler ({run.config.autoscaling.policy}, "
            f"{bounds.min_size} to {bounds.max_size} backends)")
    command = [sys.executable, "-m", "llmfleet.local.autoscaler",
               "--state-dir", str(run.state_dir), "--max-backends", str(bounds.max_size)]
    run.wait_healthy([run.launch(PROCESS, PROCESS, command, "", f"file://{report}")])
