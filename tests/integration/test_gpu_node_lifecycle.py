"""The GPU node's lifecycle script (images/gpu-node/llmfleet-lifecycle), run by bash with the
real AWS CLI, as on a node: it completes the launching hook only once vLLM answers, gives up
with ABANDON when vLLM never does, lets requests finish before it completes the terminating
hook, and marks a broken node unhealthy.

What cannot run here stands on loopback: the instance metadata service (IMDSv2), a vLLM that
answers /health and /metrics as told, and the Auto Scaling endpoint, which records each call
the CLI makes (the CLI checks every flag against AWS's service model before it sends it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from llmfleet.local.sandbox.processes import wait_until

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "gpu-node" / "llmfleet-lifecycle"
AWS_CLI = Path(sys.executable).with_name("aws")
INSTANCE = "i-0123456789abcdef0"
GROUP = "acme-prod-gpu-spot"
XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"


class Node:
    """What the script sees: IMDS's answers, vLLM's state and the Auto Scaling calls."""

    def __init__(self) -> None:
        self.target = "InService"
        self.healthy = False
        self.running = 0
        self.waiting = 0
        self.metrics_reads = 0
        self.health_probes = 0
        self.target_reads = 0
        self.calls: list[dict[str, str]] = []
        self.no_action_waiting = False
        self.lock = threading.Lock()

    def reads_more(self, count: int) -> bool:
        """Waits until the script has read the target state `count` more times."""
        seen = self.target_reads
        return wait_until(lambda: self.target_reads >= seen + count, 30, interval_s=0.05)

    def actions(self, name: str) -> list[dict[str, str]]:
        with self.lock:
            return [c for c in self.calls if c["Action"] == name]


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _handlers(node: Node) -> tuple[type, type, type]:
    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def answer(self, status: int, body: str, kind: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Imds(Quiet):
        def do_PUT(self):
            if self.path == "/latest/api/token":
                self.answer(200, "token-1")
            else:
                self.answer(404, "")

        def do_GET(self):
            # IMDSv2 only: without the session token there is no answer.
            if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
                self.answer(401, "")
            elif self.path == "/latest/meta-data/instance-id":
                self.answer(200, INSTANCE)
            elif self.path == "/latest/meta-data/autoscaling/target-lifecycle-state":
                with node.lock:
                    node.target_reads += 1
                self.answer(200, node.target)
            else:
                self.answer(404, "")

    class Vllm(Quiet):
        def do_GET(self):
            with node.lock:
                if self.path == "/health":
                    node.health_probes += 1
                    self.answer(200 if node.healthy else 503, "")
                elif self.path == "/metrics":
                    node.metrics_reads += 1
                    labels = '{engine="0",model_name="m"}'
                    self.answer(200, (
                        "# TYPE vllm:num_requests_running gauge\n"
                        f"vllm:num_requests_running{labels} {node.running}.0\n"
                        "# TYPE vllm:num_requests_waiting gauge\n"
                        f"vllm:num_requests_waiting{labels} {node.waiting}.0\n"))
                else:
                    self.answer(404, "")

    class AutoScaling(Quiet):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            call = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            with node.lock:
                node.calls.append(call)
            action = call["Action"]
            if action == "CompleteLifecycleAction" and node.no_action_waiting:
                self.answer(400, f"<ErrorResponse xmlns='{XMLNS}'><Error><Type>Sender</Type>"
                                 "<Code>ValidationError</Code><Message>No active Lifecycle "
                                 f"Action found with instance ID {INSTANCE}</Message></Error>"
                                 "<RequestId>r</RequestId></ErrorResponse>", "text/xml")
                return
            result = f"<{action}Result></{action}Result>"
            if action == "DescribeAutoScalingInstances":
                result = (f"<{action}Result><AutoScalingInstances><member>"
                          f"<InstanceId>{INSTANCE}</InstanceId>"
                          f"<AutoScalingGroupName>{GROUP}</AutoScalingGroupName>"
                          "<AvailabilityZone>us-east-1a</AvailabilityZone>"
                          "<LifecycleState>Pending:Wait</LifecycleState>"
                          "<HealthStatus>HEALTHY</HealthStatus>"
                          "<ProtectedFromScaleIn>false</ProtectedFromScaleIn>"
                          f"</member></AutoScalingInstances></{action}Result>")
            self.answer(200, f"<{action}Response xmlns='{XMLNS}'>{result}<ResponseMetadata>"
                             f"<RequestId>r</RequestId></ResponseMetadata></{action}Response>",
                        "text/xml")

    return Imds, Vllm, AutoScaling


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, dict[str, str]]]:
    state = Node()
    servers = [_serve(h) for h in _handlers(state)]
    imds, vllm, autoscaling = (s.server_address[1] for s in servers)
    env = {
        "PATH": f"{AWS_CLI.parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{autoscaling}",
        "LLMFLEET_REGION": "us-east-1",
        "LLMFLEET_VLLM_PORT": str(vllm),
        "LLMFLEET_LAUNCH_HOOK": "llmfleet-launching",
        "LLMFLEET_TERMINATE_HOOK": "llmfleet-terminating",
        "LLMFLEET_READY_WITHIN_S": "60",
        "LLMFLEET_DRAIN_WITHIN_S": "60",
        "LLMFLEET_IMDS": f"http://127.0.0.1:{imds}",
        "LLMFLEET_POLL_S": "0.1",
    }
    yield state, env
    for server in servers:
        server.shutdown()
        server.server_close()


def start(env: dict[str, str], command: str, **overrides: str) -> subprocess.Popen:
    assert AWS_CLI.exists(), f"the AWS CLI is not installed at {AWS_CLI}: run the bootstrap"
    return subprocess.Popen(["bash", str(SCRIPT), command], env={**env, **overrides},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout_s: float = 60) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout_s)
    finally:
        process.kill()
    return process.returncode, out, err


def test_a_node_joins_only_once_vllm_answers(node):
    state, env = node
    process = start(env, "ready")
    try:
        assert wait_until(lambda: state.health_probes >= 5, 30, interval_s=0.05)
        assert state.actions("CompleteLifecycleAction") == []  # vLLM still loading
        state.healthy = True
        code, out, err = finish(process)
    finally:
        process.kill()

    assert code == 0, err
    [call] = state.actions("CompleteLifecycleAction")
    assert {k: call[k] for k in ("AutoScalingGroupName", "LifecycleHookName", "InstanceId",
                                 "LifecycleActionResult")} == {
        "AutoScalingGroupName": GROUP, "LifecycleHookName": "llmfleet-launching",
        "InstanceId": INSTANCE, "LifecycleActionResult": "CONTINUE"}
    assert f"llmfleet-launching of {INSTANCE} completed with CONTINUE" in out


def test_a_node_whose_vllm_never_answers_abandons_its_launch(node):
    state, env = node

    code, _, err = finish(start(env, "ready", LLMFLEET_READY_WITHIN_S="1"))

    assert code == 1
    assert "did not answer /health in 1 s" in err
    [call] = state.actions("CompleteLifecycleAction")
    assert call["LifecycleActionResult"] == "ABANDON"


def test_a_reboot_in_service_has_no_action_to_complete_and_is_no_error(node):
    state, env = node
    state.healthy, state.no_action_waiting = True, True

    code, out, err = finish(start(env, "ready"))

    assert code == 0, err
    assert "no llmfleet-launching action waits" in out


def test_a_node_leaving_service_completes_once_its_requests_are_done(node):
    state, env = node
    state.running, state.waiting = 3, 1
    process = start(env, "drain")
    try:
        assert state.reads_more(3)
        assert state.metrics_reads == 0 and state.calls == []  # in service: nothing to do
        state.target = "Terminated"
        assert wait_until(lambda: state.metrics_reads >= 5, 30, interval_s=0.05)
        assert state.actions("CompleteLifecycleAction") == []  # 4 requests still there
        state.running, state.waiting = 0, 0
        code, out, err = finish(process)
    finally:
        process.kill()

    assert code == 0, err
    [call] = state.actions("CompleteLifecycleAction")
    assert (call["LifecycleHookName"], call["LifecycleActionResult"]) == (
        "llmfleet-terminating", "CONTINUE")
    assert "leaving service (target Terminated)" in out


def test_a_node_launched_into_the_warm_pool_is_not_leaving(node):
    state, env = node
    state.target = "Warmed:Stopped"  # on its way into the warm pool: it never served
    process = start(env, "drain")
    try:
        assert state.reads_more(3)
        assert process.poll() is None and state.calls == []
        state.target = "InService"  # out of the pool, in service
        assert state.reads_more(3)
        assert process.poll() is None and state.calls == []
        state.target = "Terminated"
        code, _, err = finish(process)
    finally:
        process.kill()

    assert code == 0, err
    assert len(state.actions("CompleteLifecycleAction")) == 1


def test_a_drain_ends_at_its_limit_even_with_requests_left(node):
    state, env = node
    state.running = 2
    process = start(env, "drain", LLMFLEET_DRAIN_WITHIN_S="1")
    try:
        assert state.reads_more(2)
        state.target = "Terminated"
        code, _, err = finish(process)
    finally:
        process.kill()

    assert code == 0, err
    assert state.running == 2 and len(state.actions("CompleteLifecycleAction")) == 1


def test_a_broken_node_marks_itself_unhealthy(node):
    state, env = node

    code, _, err = finish(start(env, "unhealthy"))

    assert code == 0, err
    [call] = state.actions("SetInstanceHealth")
    assert (call["InstanceId"], call["HealthStatus"], call["ShouldRespectGracePeriod"]) == (
        INSTANCE, "Unhealthy", "false")


def test_an_unknown_command_is_a_usage_error(node):
    _, env = node
    code, _, err = finish(start(env, "sideways"))
    assert code == 2 and "usage: llmfleet-lifecycle ready|drain|unhealthy" in err


def test_the_script_is_what_the_node_installs():
    assert os.access(SCRIPT, os.X_OK), "the script must be executable in the repository"
