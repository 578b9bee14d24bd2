"""The edge's services (`llmfleet.services`) as systemd units, for the edge's cloud-init.

Our own programs get a whole unit, `llmfleet-<name>.service`; programs Debian packages with a
unit of their own (nginx, Redis, the exporters) get a drop-in that orders them and, where the
record says so, replaces their command line. Plain functions of plain values, so tests render
them without Pulumi and check them with the real `systemd-analyze verify`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmfleet.services import Placement, Service

UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class UnitFile:
    path: str
    content: str


def unit_name(service: Service) -> str:
    return service.packaged_unit or f"llmfleet-{service.name}.service"


def unit_files(services: Sequence[Service], place: Placement) -> list[UnitFile]:
    """One unit or drop-in per service, ordered after the services it needs."""
    names = {s.name: unit_name(s) for s in services}
    units = [_unit(s, place, [names[n] for n in s.after if n in names]) for s in services]
    return [u for u in units if u is not None]


def start_commands(services: Sequence[Service]) -> list[list[str]]:
    """runcmd lines, in start order: enable and start our units; restart the packaged ones,
    which started on install before their settings and drop-ins were in place."""
    return [
        ["systemctl", "restart", unit_name(s)] if s.packaged_unit
        else ["systemctl", "enable", "--now", unit_name(s)]
        for s in services
    ]


def exec_line(argv: Sequence[str]) -> str:
    """A command line in systemd's own quoting: words with spaces or quotes in double quotes;
    `${VAR}` stays for systemd to expand from the unit's environment."""
    return " ".join(_quote(word) for word in argv)


def _unit(service: Service, place: Placement, after: list[str]) -> UnitFile | None:
    unit = [f"After={' '.join(after)}", f"Wants={' '.join(after)}"] if after else []
    if service.data_dir:
        unit += [f"RequiresMountsFor={service.data_dir}"]
    if service.packaged_unit:
        lines = ["[Unit]", *unit] if unit else []
        if service.replaces_command:
            lines += ["[Service]", *_credentials(service, place), "ExecStart=",
                      f"ExecStart={exec_line(service.argv)}", "Restart=always", "RestartSec=5"]
        if not lines:  # the package's unit as it is (Redis reads our settings file)
            return None
        return UnitFile(f"{UNIT_DIR}/{service.packaged_unit}.d/llmfleet.conf",
                        "\n".join(lines) + "\n")
    lines = ["[Unit]", f"Description={service.summary}", *unit, "", "[Service]"]
    if service.user:
        lines += [f"User={service.user}"]
    if service.groups:
        lines += [f"SupplementaryGroups={' '.join(service.groups)}"]
    if service.environment_file:
        lines += [f"EnvironmentFile={service.environment_file}"]
    if service.runtime_directory:
        lines += [f"RuntimeDirectory={service.runtime_directory}"]
    lines += [*_credentials(service, place), f"ExecStart={exec_line(service.argv)}"]
    if service.health and service.health.startswith("http"):
        # Started means answering: whatever is ordered after it finds it serving.
        lines += ["ExecStartPost=/usr/bin/curl --silent --fail --output /dev/null --retry 30 "
                  f"--retry-delay 1 --retry-connrefused {service.health}"]
    lines += ["Restart=always", "RestartSec=2"]
    if service.user:
        lines += ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes"]
    lines += ["", "[Install]", "WantedBy=multi-user.target"]
    return UnitFile(f"{UNIT_DIR}/{unit_name(service)}", "\n".join(lines) + "\n")


def _credentials(service: Service, place: Placement) -> list[str]:
    # The secret files stay root-only; systemd hands the service a private copy (%d).
    return [f"LoadCredential={name}:{place.secret_source(name)}" for name in service.secrets]


def _quote(word: str) -> str:
    if word and not any(c in word for c in ' \t"\'\\;'):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
