"""How the gateway reads keys and words its answers to nginx: pure functions, no Redis."""

import pytest

from llmfleet.config import ConfigError, FleetConfig, validate
from llmfleet.gateway import answers
from llmfleet.gateway.keys import digest, key_id, looks_like_key
from llmfleet.gateway.leases import lease_from_syslog
from llmfleet.gateway.limiter import LocalWindow, Verdict
from llmfleet.gateway.server import extract_key

KEY = "sk-lf-" + "A" * 43


@pytest.mark.parametrize(
    ("headers", "found", "problem"),
    [
        ({"authorization": f"Bearer {KEY}"}, KEY, ""),
        ({"authorization": f"bearer   {KEY}  "}, KEY, ""),
        ({"x-api-key": KEY}, KEY, ""),
        ({}, None, "did not provide an API key"),
        ({"authorization": "Bearer"}, None, "Malformed Authorization header"),
        ({"authorization": "Bearer    "}, None, "Malformed Authorization header"),
        ({"authorization": f"Basic {KEY}"}, None, "Malformed Authorization header"),
        ({"authorization": "Bearer sk-lf-short"}, None, "Incorrect API key"),
        ({"authorization": "Bearer " + "k" * 10_000}, None, "Incorrect API key"),
        ({"authorization": "Bearer sk-lf-\udcff" + "A" * 42}, None, "Incorrect API key"),
        ({"x-api-key": "   "}, None, "did not provide an API key"),
    ],
)
def test_the_key_comes_from_bearer_or_x_api_key_and_anything_else_says_why(headers, found,
                                                                           problem):
    key, message = extract_key(headers)
    assert key == found
    assert problem in message


def test_keys_are_recognised_by_shape_and_identified_by_digest_only():
    assert looks_like_key(KEY)
    assert not looks_like_key(KEY + "x")
    assert digest(KEY) != KEY and len(digest(KEY)) == 64
    assert key_id(digest(KEY)) == digest(KEY)[:12]


@pytest.mark.parametrize(("ms", "text"), [(0, "0ms"), (20.4, "20ms"), (1000, "1s"),
                                          (6500, "6.5s"), (59_999, "59.999s"),
                                          (60_000, "1m0s"), (90_400, "1m30s")])
def test_reset_durations_use_openais_form(ms, text):
    assert answers.duration(ms) == text


def test_admitted_answers_carry_openai_rate_headers_and_unlimited_carries_none():
    limited = answers.admitted(Verdict("ok", "uni", "free", 10, 7, 60_000))
    assert limited.status == 200
    assert limited.headers["x-ratelimit-limit-requests"] == "10"
    assert limited.headers["x-ratelimit-remaining-requests"] == "7"
    assert limited.headers["x-ratelimit-reset-requests"] == "1m0s"
    unlimited = answers.admitted(Verdict("ok", "bank", "enterprise"))
    assert not any(h.startswith("x-ratelimit") for h in unlimited.headers)


def test_rate_limited_is_a_403_that_tells_nginx_to_answer_429_with_retry_after():
    answer = answers.rate_limited(Verdict("limited", "uni", "free", 10, 0, 59_000, 5_200), 60)
    assert answer.status == 403
    assert answer.headers["x-llmfleet-deny"] == "rate_limited"
    assert answer.headers["retry-after"] == "6"  # whole seconds, rounded up
    assert "limit 10 per 1m0s" in answer.headers["x-llmfleet-message"]
    assert answer.reason == "rate_limited"


def test_messages_are_safe_inside_a_json_string():
    message = answers.safe('He said "hi"\\ and left\n{}')
    assert '"' not in message and "\\" not in message and "\n" not in message


def test_local_window_admits_n_per_window_then_refuses_until_the_oldest_leaves():
    window = LocalWindow()
    results = [window.admit("k", 3, 60).outcome for _ in range(4)]
    assert results == ["ok", "ok", "ok", "limited"]
    refused = window.admit("k", 3, 60)
    assert 59_000 < refused.retry_after_ms <= 60_000
    assert window.admit("other", 3, 60).admitted  # every key has its own window


def test_nginx_syslog_lines_carry_the_lease():
    line = b"<190>Nov 28 01:02:03 llmfleet_lease: abc123:req-9"
    assert lease_from_syslog(line) == "abc123:req-9"
    assert lease_from_syslog(b"<190>Nov 28 01:02:03 something else") is None


def test_default_tiers_are_the_seeds():
    tiers = FleetConfig().rate_limits.tiers
    assert (tiers["free"].requests, tiers["paid"].requests) == (10, 60)
    assert tiers["enterprise"].unlimited
    assert tiers["free"].fail_mode == "closed" and tiers["paid"].fail_mode == "open"


@pytest.mark.parametrize(
    ("tiers", "key", "allowed"),
    [
        ({"Gold": {"requests": 5}}, "rate_limits.tiers", "'Gold' is not an allowed name"),
        ({"gold": {"requests": 0}}, "rate_limits.tiers.gold.requests", "or 'unlimited'"),
        ({"gold": {"requests": "lots"}}, "rate_limits.tiers.gold.requests", "or 'unlimited'"),
        ({"gold": {"requests": 5, "fail_mode": "maybe"}}, "rate_limits.tiers.gold.fail_mode",
         "'open' or 'closed'"),
        ({"gold": {"requests": 5, "window_s": 0}}, "rate_limits.tiers.gold.window_s",
         "greater than 0"),
        ({"gold": {"requests": 5, "max_concurrent": 0}},
         "rate_limits.tiers.gold.max_concurrent", "greater than or equal to 1"),
        ({"gold": {}}, "rate_limits.tiers.gold.requests", "required"),
    ],
)
def test_bad_tier_config_names_the_key(tiers, key, allowed):
    with pytest.raises(ConfigError) as caught:
        validate({"rate_limits": {"tiers": tiers}}, "t")
    (issue,) = caught.value.issues
    assert issue.key == key and allowed in str(issue)
