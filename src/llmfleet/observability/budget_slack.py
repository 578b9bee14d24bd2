"""The budget's Slack messages: an AWS Lambda, subscribed to the stack's budget topic, posts
each AWS Budgets notification to the Slack incoming webhook the monitor's alerts use.

The webhook URL is a secret: it is read from its SSM SecureString parameter at the first
notification (and again after a failed post, in case it was rotated) and never logged.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

# Set by infra/cost_controls.py on the function.
PARAMETER_VARIABLE = "LLMFLEET_SLACK_WEBHOOK_PARAMETER"
STACK_VARIABLE = "LLMFLEET_STACK"
POST_TIMEOUT_S = 10

_webhook: str | None = None


class SlackRefused(RuntimeError):
    """Slack did not take the message; the invocation fails so Lambda retries it."""


def message_text(stack: str, subject: str | None, body: str) -> str:
    """One Slack message: which stack, AWS's subject line, and AWS's text as it came."""
    title = subject or "AWS Budgets notification"
    return f"*[{stack}] {title}*\n{body.strip()}"


def post(url: str, text: str, *, timeout_s: float = POST_TIMEOUT_S) -> None:
    request = urllib.request.Request(
        url, data=json.dumps({"text": text}).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            answer.read()
    except urllib.error.HTTPError as error:
        # Slack's body names the problem (invalid_payload, no_service); the URL stays out.
        detail = error.read(200).decode(errors="replace")
        raise SlackRefused(f"Slack answered {error.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError) as error:
        raise SlackRefused(f"Slack unreachable: {getattr(error, 'reason', error)}") from None


def handler(event: dict[str, Any], context: Any = None, *, ssm: Any = None) -> dict[str, int]:
    global _webhook
    stack = os.environ.get(STACK_VARIABLE, "llmfleet")
    records = [r["Sns"] for r in event.get("Records", []) if "Sns" in r]
    for sns in records:
        text = message_text(stack, sns.get("Subject"), sns.get("Message", ""))
        if _webhook is None:
            _webhook = _read_webhook(ssm)
        try:
            post(_webhook, text)
        except SlackRefused:
            _webhook = None
            raise
        print(json.dumps({"event": "budget notification posted", "stack": stack,
                          "subject": sns.get("Subject")}))
    return {"posted": len(records)}


def _read_webhook(ssm: Any) -> str:
    if ssm is None:
        import boto3

        ssm = boto3.client("ssm")
    name = os.environ[PARAMETER_VARIABLE]
    return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
