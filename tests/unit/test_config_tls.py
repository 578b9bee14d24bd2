"""edge.tls: each mode names what it needs, and plain HTTP is refused open to the world unless
the override says so."""

import pytest

from llmfleet.config import ConfigError, validate
from llmfleet.config.aws import TlsMode

WORLD_V4, WORLD_V6, CAMPUS = ["0.0.0.0/0"], ["::/0"], ["198.51.100.0/24"]
ACME = {"mode": "acme", "domain": "api.example.com", "email": "ops@example.com"}
CERTIFICATE = {"mode": "certificate", "certificate_parameter": "/llmfleet/s/tls-chain",
               "key_parameter": "/llmfleet/s/tls-key"}


def problems(edge: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate({"edge": edge}, "test.yaml")
    return [str(issue) for issue in caught.value.issues]


@pytest.mark.parametrize(("cidrs", "tls"), [
    ([], {}),  # the default: reachable from nowhere, so nothing to protect yet
    (CAMPUS, {}),
    (CAMPUS, {"mode": "off"}),
    (CAMPUS, {"mode": False}),  # YAML 1.1's reading of an unquoted `off`
    (WORLD_V4, {"mode": "off", "plain_http_from_anywhere": True}),
    (WORLD_V4, ACME),
    (WORLD_V6, CERTIFICATE),
])
def test_these_edges_are_valid(cidrs, tls):
    config = validate({"edge": {"allowed_cidrs": cidrs, "tls": tls}}, "test.yaml")
    assert config.edge.tls.mode is TlsMode(tls.get("mode") or "off")


@pytest.mark.parametrize("cidrs", [WORLD_V4, WORLD_V6, [*CAMPUS, *WORLD_V4]])
def test_plain_http_open_to_the_world_is_refused_and_the_message_says_the_ways_out(cidrs):
    [problem] = problems({"allowed_cidrs": cidrs})
    assert problem.startswith("edge:")
    for way_out in ("tls.mode to acme", "certificate", "narrow allowed_cidrs",
                    "tls.plain_http_from_anywhere: true"):
        assert way_out in problem


@pytest.mark.parametrize(("tls", "expected"), [
    ({"mode": "acme"}, ["mode acme needs domain", "mode acme needs email"]),
    ({"mode": "certificate", "domain": "api.example.com"},
     ["mode certificate needs certificate_parameter", "mode certificate needs key_parameter",
      "domain applies to mode acme only"]),
    ({**ACME, "plain_http_from_anywhere": True},
     ["plain_http_from_anywhere applies to mode off only"]),
    ({**CERTIFICATE, "key_parameter": CERTIFICATE["certificate_parameter"]},
     ["certificate_parameter and key_parameter must differ"]),
])
def test_each_mode_names_every_key_it_lacks_or_does_not_take_in_one_pass(tls, expected):
    [problem] = problems({"tls": tls})
    assert problem.startswith("edge.tls:")
    for part in expected:
        assert part in problem


def test_bad_values_are_named_with_what_is_allowed_all_at_once():
    found = problems({"tls": {"mode": "acm", "domain": "API.example.com", "email": "ops",
                              "key_parameter": "tls-key"}})
    assert len(found) == 4
    assert found[0] == "edge.tls.mode: got \"acm\"; must be 'acme', 'certificate' or 'off'"
    assert "edge.tls.domain" in found[1] and "a DNS name" in found[1]
    assert "edge.tls.email" in found[2] and "an e-mail address" in found[2]
    assert "edge.tls.key_parameter" in found[3] and "starting with '/'" in found[3]
