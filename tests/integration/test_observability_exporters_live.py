"""The exporter-metric fixture the dashboards are checked against matches the real exporters
that run here: Debian's prometheus-node-exporter."""

from __future__ import annotations

from pathlib import Path
from urllib.request import urlopen

import pytest
import yaml

from llmfleet.local.dashboards import exporter_metrics_file
from llmfleet.local.sandbox.health import answers
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import launch, stop, wait_until
from llmfleet.local.simbackend import parse_exposition
from llmfleet.observability.prometheus import tool_binary
from llmfleet.observability.promql import family

pytestmark = pytest.mark.integration


def test_the_node_exporter_exposes_every_name_the_fixture_lists(tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    record = launch("node-exporter", "node_exporter", [
        tool_binary("prometheus-node-exporter", "node_exporter"),
        f"--web.listen-address=127.0.0.1:{port}",
    ], tmp_path / "node-exporter.log", url, url)
    try:
        assert wait_until(lambda: answers(url), 15), (tmp_path / "node-exporter.log").read_text()
        with urlopen(url, timeout=10) as response:
            _, _, samples = parse_exposition(response.read().decode())
    finally:
        stop(record)
    exposed = {family(sample.name) for sample in samples} | {s.name for s in samples}
    listed = yaml.safe_load(exporter_metrics_file().read_text())["node"]
    assert sorted(set(listed) - exposed) == []
