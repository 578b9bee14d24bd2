"""The recording rules the autoscaler reads do what its windows assume (promtool test rules)."""

import shutil
from pathlib import Path

from llmfleet.config import FleetConfig
from llmfleet.observability.prometheus import promtool
from llmfleet.observability.rules import render_rules

PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "autoscale_test.yml"


def test_the_autoscalers_rules_behave_as_the_promtool_tests_say(tmp_path):
    (tmp_path / "rules.yml").write_text(render_rules(FleetConfig()))
    shutil.copy(PROMTOOL_TESTS, tmp_path / "autoscale_test.yml")
    result = promtool("test", "rules", tmp_path / "autoscale_test.yml")
    assert result.ok, result.output
