"""The `images` config section: image references as registries read them, the stack's cache
prefixes, and one-line errors for bad pins and credentials."""

from __future__ import annotations

import pytest

from llmfleet.config import ConfigError, ImageReference, validate
from llmfleet.config.images import CACHE_PREFIX_MAX, cache_prefix

DIGEST = "sha256:" + "0f" * 32


@pytest.mark.parametrize(("reference", "registry", "repository", "tag", "digest"), [
    ("vllm/vllm-openai:v0.11.0", "registry-1.docker.io", "vllm/vllm-openai", "v0.11.0", None),
    ("redis:7", "registry-1.docker.io", "library/redis", "7", None),
    ("docker.io/vllm/vllm-openai:v1", "registry-1.docker.io", "vllm/vllm-openai", "v1", None),
    ("quay.io/prometheus/node-exporter:v1.8.2", "quay.io", "prometheus/node-exporter",
     "v1.8.2", None),
    (f"nvcr.io/nvidia/k8s/dcgm-exporter@{DIGEST}", "nvcr.io", "nvidia/k8s/dcgm-exporter", None,
     DIGEST),
    (f"localhost:5000/team/model:2@{DIGEST}", "localhost:5000", "team/model", "2", DIGEST),
])
def test_references_split_the_way_registries_read_them(reference, registry, repository, tag,
                                                       digest):
    parsed = ImageReference.parse(reference)
    assert (parsed.registry, parsed.repository, parsed.tag, parsed.digest) == (
        registry, repository, tag, digest)


def test_a_pinned_reference_goes_by_digest_through_the_cache_or_from_the_registry():
    ref = ImageReference.parse("vllm/vllm-openai:v0.11.0")
    assert ref.upstream == "docker.io/vllm/vllm-openai:v0.11.0"
    assert ref.pinned(DIGEST) == f"docker.io/vllm/vllm-openai@{DIGEST}"
    assert ref.pinned(DIGEST, via="1.dkr.ecr.r.amazonaws.com/s/docker-hub") == (
        f"1.dkr.ecr.r.amazonaws.com/s/docker-hub/vllm/vllm-openai@{DIGEST}")


@pytest.mark.parametrize(("reference", "says"), [
    ("vllm/vllm-openai", "names no tag or digest"),
    ("quay.io/Prometheus/node-exporter:v1", "lowercase"),
    ("vllm/vllm-openai@sha256:abc", "64 hex digits"),
])
def test_a_bad_reference_is_refused_when_the_config_loads(reference, says):
    with pytest.raises(ConfigError) as error:
        validate({"model": {"name": "m", "vllm_image": reference}}, "test.yaml")
    assert says in str(error.value) and "model.vllm_image" in str(error.value)


def test_cache_prefixes_are_the_stacks_own_and_fit_ecrs_limit():
    assert cache_prefix("university-prod", "docker-hub") == "university-prod/docker-hub"
    long = cache_prefix("a-very-long-stack-name-for-a-client", "docker-hub")
    other = cache_prefix("a-very-long-stack-name-for-a-clinic", "docker-hub")
    odd = cache_prefix("Acme_Prod", "quay")
    for prefix in (long, other, odd):
        assert len(prefix) <= CACHE_PREFIX_MAX
        assert prefix == prefix.lower() and "_" not in prefix
    assert long != other


@pytest.mark.parametrize(("images", "says"), [
    ({"amis": {"us-east-1": {"gpu": "ami-0123456789abcdef0"}}},
     "names ['gpu']; the roles are ['edge', 'gpu_node', 'monitor']"),
    ({"amis": {"useast1": {"edge": "ami-0123456789abcdef0"}}}, "not an AWS region"),
    ({"amis": {"us-east-1": {"edge": "ubuntu-24.04"}}}, "ami-"),
    ({"registry_credentials": {"quay.io": "arn:aws:secretsmanager:us-east-1:123456789012:"
                                          "secret:ecr-pullthroughcache/q"}},
     "takes credentials for"),
    ({"registry_credentials": {"ghcr.io": "arn:aws:secretsmanager:us-east-1:123456789012:"
                                          "secret:github"}}, "ecr-pullthroughcache/"),
    ({"keep_last": 0}, "keep_last"),
])
def test_bad_images_settings_name_the_key_and_what_is_allowed(images, says):
    with pytest.raises(ConfigError) as error:
        validate({"images": images}, "test.yaml")
    assert says in str(error.value)
