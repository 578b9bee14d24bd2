"""Where the sandbox's alerts go when no Slack webhook is configured: an Alertmanager webhook
receiver that prints one line per alert, so `tail -f` on its log shows what would have paged.

    python -m llmfleet.local.alert_sink --host 127.0.0.1 --port PORT

Alertmanager posts to `/alerts`; `GET /health` answers 200.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def format_alert(alert: dict[str, Any]) -> str:
    """One log line: time, status, name, severity, labels that say where, summary, value,
    runbook."""
    labels = alert.get("labels", {})
    notes = alert.get("annotations", {})
    where = " ".join(f"{k}={v}" for k, v in sorted(labels.items())
                     if k not in ("alertname", "severity"))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return (f"{now} ALERT {alert.get('status', '?').upper()} {labels.get('alertname', '?')} "
            f"severity={labels.get('severity', '-')} {where} | {notes.get('summary', '')} "
            f"(value {notes.get('value', '-')}) runbook={notes.get('runbook_url', '-')}")


def make_server(host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length))
                alerts = payload["alerts"]
            except (ValueError, KeyError, TypeError):
                self._answer(400)
                return
            for alert in alerts:
                print(format_alert(alert), flush=True)
            self._answer(200)

        def do_GET(self) -> None:
            self._answer(200 if self.path == "/health" else 404)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # the alert lines are the log

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmfleet.local.alert_sink",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port)
    print(f"alert sink on http://{args.host}:{server.server_port}/alerts pid={os.getpid()}",
          flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
