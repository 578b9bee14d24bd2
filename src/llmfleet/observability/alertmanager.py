"""Render Alertmanager's config from images/monitor/alertmanager.yml.j2 and check it with amtool.

Alerts go to Slack when `alerts.slack_webhook_file` is set, else to a local webhook sink (the
sandbox's log of alerts) when one is given; critical ones also page through PagerDuty when a
routing-key file is configured. Only file paths are rendered, never the secrets in them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import jinja2

from llmfleet.config import FleetConfig
from llmfleet.observability.prometheus import ToolCheck, tool_binary
from llmfleet.observability.promql import duration
from llmfleet.paths import images_dir


def notification_template() -> Path:
    """The Go templates that shape Slack and PagerDuty messages."""
    return images_dir() / "monitor" / "llmfleet.tmpl"


def render_alertmanager_config(config: FleetConfig, *, sink_url: str | None = None,
                               template_file: str | Path | None = None) -> str:
    """alertmanager.yml text. `template_file` is where llmfleet.tmpl is on the host that runs
    Alertmanager (default: this checkout's copy)."""
    alerts = config.alerts
    if alerts.slack_webhook_file is not None:
        receiver = "slack"
    elif sink_url is not None:
        receiver = "local-sink"
    else:
        receiver = "none"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(images_dir() / "monitor"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )
    return env.get_template("alertmanager.yml.j2").render(
        stack=config.stack_name,
        template_file=str(template_file or notification_template()),
        default_receiver=receiver,
        group_wait=duration(alerts.group_wait_s),
        group_interval=duration(alerts.group_interval_s),
        repeat_interval=duration(alerts.repeat_interval_s),
        slack_webhook_file=_path(alerts.slack_webhook_file),
        slack_channel=alerts.slack_channel,
        sink_url=sink_url if receiver == "local-sink" else None,
        pagerduty_routing_key_file=_path(alerts.pagerduty_routing_key_file),
    )


def aws_alertmanager_config(config: FleetConfig, *, slack_webhook_file: str | None,
                            pagerduty_routing_key_file: str | None,
                            template_file: str) -> str:
    """The monitor host's alertmanager.yml: Slack and PagerDuty when their secrets' files are
    given (the stack's `monitor` section names the SSM parameters they come from), else a
    receiver that sends nowhere. `alerts.slack_webhook_file` and
    `alerts.pagerduty_routing_key_file`, paths on the sandbox's machine, play no part."""
    alerts = config.alerts.model_copy(update={
        "slack_webhook_file": Path(slack_webhook_file) if slack_webhook_file else None,
        "pagerduty_routing_key_file": (Path(pagerduty_routing_key_file)
                                       if pagerduty_routing_key_file else None),
    })
    return render_alertmanager_config(config.model_copy(update={"alerts": alerts}),
                                      template_file=template_file)


def check_alertmanager_config(path: Path) -> ToolCheck:
    """Run `amtool check-config` on a rendered file."""
    result = subprocess.run([tool_binary("amtool"), "check-config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    return ToolCheck(result.returncode == 0, (result.stdout + result.stderr).strip())


def _path(value: Path | None) -> str | None:
    return str(value.expanduser()) if value is not None else None
