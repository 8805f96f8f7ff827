"""The ratelimit loader checker (tools/verify/ratelimit_config.py) and the generated configs.

The checker is tested against the upstream example and configs it must reject; then every
stack's generated config, and any valid quota settings, must load.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from components.ratelimit import specs
from components.ratelimit.settings import QuotaClient, QuotaScope, QuotaSettings, QuotaTier
from components.settings import load_settings
from tools.render import load_stack_config
from tools.verify import reference_dir
from tools.verify.ratelimit_config import loader_errors


def _example() -> Any:
    return yaml.safe_load((reference_dir() / "ratelimit" / "example-config.yaml").read_text())


def test_the_upstream_example_config_loads() -> None:
    assert loader_errors([_example()]) == []


def test_an_unknown_key_fails() -> None:
    config = {"domain": "d", "descriptors": [{"key": "k", "rate_limt": {}}]}
    assert loader_errors([config]) == [
        "file 0.descriptors[0]: config error, unknown key 'rate_limt'"
    ]


def test_units_are_case_insensitive_and_closed() -> None:
    def config(unit: str) -> dict[str, Any]:
        rate_limit = {"unit": unit, "requests_per_unit": 1}
        return {"domain": "d", "descriptors": [{"key": "k", "rate_limit": rate_limit}]}

    assert loader_errors([config("MINUTE")]) == []
    assert loader_errors([config("Day")]) == []
    assert loader_errors([config("fortnight")]) == [
        "file 0.descriptors[0].rate_limit: invalid rate limit unit 'fortnight'"
    ]


def test_unlimited_excludes_unit() -> None:
    rate_limit = {"unlimited": True, "unit": "second"}
    config = {"domain": "d", "descriptors": [{"key": "k", "rate_limit": rate_limit}]}
    assert loader_errors([config]) == [
        "file 0.descriptors[0].rate_limit: should not specify rate limit unit when unlimited"
    ]


def test_a_domain_is_loaded_once() -> None:
    config = {"domain": "d", "descriptors": []}
    assert loader_errors([config, config]) == ["file 1: duplicate domain 'd' in config file"]


def test_a_repeated_descriptor_fails() -> None:
    descriptor = {
        "key": "k",
        "value": "v",
        "rate_limit": {"unit": "second", "requests_per_unit": 1},
    }
    config = {"domain": "d", "descriptors": [descriptor, descriptor]}
    assert loader_errors([config]) == [
        "file 0.descriptors[1]: duplicate descriptor composite key ('k', 'v')"
    ]


def test_generated_configs_of_every_stack_load(stack_renders: Any) -> None:
    configs = []
    for stack, render in stack_renders.items():
        quota = load_settings(load_stack_config(stack)[0]).rate_limit.quota
        found = [
            yaml.safe_load(obj["data"][specs.CONFIG_FILE])
            for obj in render.kubernetes_objects()
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == specs.CONFIG_MAP_NAME
        ]
        assert len(found) == int(quota.enabled), f"{stack}: one config iff the quota is enabled"
        configs += found
    for config in configs:
        assert loader_errors([config]) == []


def test_tiers_clients_and_defaults_become_descriptors() -> None:
    quota = QuotaSettings(
        tiers=(
            QuotaTier(name="free", requests_per_unit=60),
            QuotaTier(name="pro", requests_per_unit=100, unit="second"),
            QuotaTier(name="internal", unlimited=True),
        ),
        clients=(QuotaClient(id="acme", tier="pro"), QuotaClient(id="ops", tier="internal")),
        anonymous_tier="free",
    )
    assert specs.ratelimit_config(quota) == {
        "domain": "meshstack",
        "descriptors": [
            {
                "key": "client_id",
                "value": "acme",
                "rate_limit": {"unit": "second", "requests_per_unit": 100},
            },
            {"key": "client_id", "value": "ops", "rate_limit": {"unlimited": True}},
            {"key": "client_id", "rate_limit": {"unit": "minute", "requests_per_unit": 60}},
            {
                "key": "client_class",
                "value": "anonymous",
                "descriptors": [
                    {
                        "key": "remote_address",
                        "rate_limit": {"unit": "minute", "requests_per_unit": 60},
                    }
                ],
            },
        ],
    }


_names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)


@st.composite
def _quotas(draw: st.DrawFn) -> QuotaSettings:
    names = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    tiers = tuple(
        QuotaTier(
            name=name,
            unlimited=draw(st.booleans()),
            requests_per_unit=draw(st.integers(1, 10_000)),
            unit=draw(st.sampled_from(["second", "minute", "hour", "day"])),
        )
        for name in names
    )
    ids = draw(st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True), unique=True))
    clients = tuple(QuotaClient(id=i, tier=draw(st.sampled_from(names))) for i in ids)
    anonymous_tier = draw(st.sampled_from(names))
    scopes = tuple(
        QuotaScope(
            name=f"scope{i}",
            path_prefixes=(f"/s{i}/",),
            tiers=tuple(
                {
                    t.name: t
                    for t in (
                        tiers[names.index(anonymous_tier)],
                        *draw(st.lists(st.sampled_from(tiers), max_size=3)),
                    )
                }.values()
            ),
        )
        for i in range(draw(st.integers(0, 2)))
    )
    return QuotaSettings(
        tiers=tiers,
        clients=clients,
        unknown_client_tier=draw(st.sampled_from(names)),
        anonymous_tier=anonymous_tier,
        scopes=scopes,
    )


@settings(max_examples=40, deadline=None)
@given(_quotas())
def test_any_valid_quota_settings_generate_a_loadable_config(quota: QuotaSettings) -> None:
    config = specs.ratelimit_config(quota)
    assert loader_errors([yaml.safe_load(yaml.safe_dump(config))]) == []
    assert len(config["descriptors"]) == len(quota.clients) + 2 + len(quota.scopes)
