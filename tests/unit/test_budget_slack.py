"""The budget's Slack poster: AWS Budgets notifications from SNS reach a (loopback) Slack
webhook read from SSM (moto), the webhook never reaches a log, and a refused post fails the
invocation so Lambda retries it, with the webhook read afresh."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from moto import mock_aws

from llmfleet.observability import budget_slack

REGION = "us-east-1"
PARAMETER = "/llmfleet/acme-prod/slack-webhook"
# What AWS Budgets publishes: a subject line and a plain-text body.
BUDGET_RECORD = {"EventSource": "aws:sns", "Sns": {
    "Type": "Notification",
    "Subject": "AWS Budgets: llmfleet-acme-prod has exceeded your alert threshold",
    "Message": "AWS Budget Notification December 01, 2026\nAWS Account 123456789012\n\n"
               "Dear AWS Customer,\n\nYou requested that we alert you when the ACTUAL Cost "
               "associated with your llmfleet-acme-prod budget is greater than $200.00 ...\n"}}


class Slack:
    """A loopback stand-in for Slack's incoming webhook: records what it is sent and answers
    with `status` and `body`."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.status, self.body = 200, b"ok"
        slack = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                slack.received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(slack.status)
                self.end_headers()
                self.wfile.write(slack.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def slack() -> Iterator[Slack]:
    stand_in = Slack()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv(budget_slack.PARAMETER_VARIABLE, PARAMETER)
    monkeypatch.setenv(budget_slack.STACK_VARIABLE, "acme-prod")
    monkeypatch.setattr(budget_slack, "_webhook", None)
    with mock_aws():
        yield boto3.client("ssm", region_name=REGION)


def webhook(ssm, url: str) -> None:
    ssm.put_parameter(Name=PARAMETER, Value=url, Type="SecureString", Overwrite=True)


def test_each_notification_is_posted_with_its_stack_and_the_webhook_stays_out_of_the_log(
        ssm, slack, capsys):
    webhook(ssm, f"{slack.url}/services/T000/B000/secret")
    second = {"Sns": {**BUDGET_RECORD["Sns"], "Subject": "AWS Budgets: forecast"}}

    assert budget_slack.handler({"Records": [BUDGET_RECORD, second]}, ssm=ssm) == {"posted": 2}
    assert [path for path, _ in slack.received] == ["/services/T000/B000/secret"] * 2
    first_text = slack.received[0][1]["text"]
    assert first_text.startswith("*[acme-prod] AWS Budgets: llmfleet-acme-prod has exceeded")
    assert "greater than $200.00" in first_text
    assert slack.received[1][1]["text"].startswith("*[acme-prod] AWS Budgets: forecast*")
    logged = capsys.readouterr().out
    assert logged.count("budget notification posted") == 2
    assert "secret" not in logged and slack.url not in logged


def test_a_refused_post_fails_the_invocation_and_the_next_reads_the_webhook_again(ssm, slack):
    webhook(ssm, f"{slack.url}/old")
    slack.status, slack.body = 404, b"no_service"
    with pytest.raises(budget_slack.SlackRefused, match="Slack answered 404: no_service") as e:
        budget_slack.handler({"Records": [BUDGET_RECORD]}, ssm=ssm)
    assert "/old" not in str(e.value)

    # The webhook was rotated in SSM meanwhile: Lambda's retry posts to the new one.
    webhook(ssm, f"{slack.url}/new")
    slack.status, slack.body = 200, b"ok"
    assert budget_slack.handler({"Records": [BUDGET_RECORD]}, ssm=ssm) == {"posted": 1}
    assert [path for path, _ in slack.received] == ["/old", "/new"]


def test_an_unreachable_slack_fails_the_invocation_with_the_reason(ssm):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    webhook(ssm, f"http://127.0.0.1:{port}/hook")
    with pytest.raises(budget_slack.SlackRefused, match="Slack unreachable"):
        budget_slack.handler({"Records": [BUDGET_RECORD]}, ssm=ssm)
