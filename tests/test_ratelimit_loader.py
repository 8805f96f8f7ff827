"""The config-loading rules of envoyproxy/ratelimit, as a checker for generated configs.

Mirrors `src/config/config_impl.go` at the commit the image pins (see
`reference/ratelimit` and its SOURCES.md): only the loader's `validKeys` are accepted
anywhere in the document (`metadata` values are free-form), `unit` is one of second,
minute, hour, day in any case, `unlimited: true` excludes `unit`, a limited rule needs a
unit, `key` is required, a (key, value) pair appears once per level, and every domain
appears once across the loaded files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from components.ratelimit import specs
from components.ratelimit.settings import QuotaClient, QuotaSettings, QuotaTier
from components.settings import load_settings
from tools.render import load_stack_config
from tools.verify import reference_dir

VALID_KEYS: Final = frozenset(
    {
        "domain",
        "key",
        "value",
        "descriptors",
        "rate_limit",
        "unit",
        "requests_per_unit",
        "unlimited",
        "name",
        "replaces",
        "shadow_mode",
        "detailed_metric",
        "value_to_metric",
        "share_threshold",
        "quota_mode",
        "metadata",
    }
)
UNITS: Final = frozenset({"second", "minute", "hour", "day"})
_DOCUMENT_KEYS: Final = frozenset({"domain", "descriptors"})
_DESCRIPTOR_KEYS: Final = VALID_KEYS - {"domain", "unit", "requests_per_unit", "unlimited"}
_RATE_LIMIT_KEYS: Final = frozenset({"unit", "requests_per_unit", "unlimited", "name", "replaces"})
_BOOL_KEYS: Final = (
    "shadow_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "quota_mode",
)


def _unknown(keys: Iterable[str], allowed: frozenset[str], where: str) -> list[str]:
    return [f"{where}: config error, unknown key {k!r}" for k in keys if k not in allowed]


def _rate_limit_errors(rate_limit: Any, where: str) -> list[str]:
    if not isinstance(rate_limit, Mapping):
        return [f"{where}: rate_limit must be a map"]
    errors = _unknown(rate_limit, _RATE_LIMIT_KEYS, where)
    unlimited = rate_limit.get("unlimited", False)
    if not isinstance(unlimited, bool):
        errors.append(f"{where}: unlimited must be a bool")
    unit = rate_limit.get("unit")
    if unlimited:
        if unit is not None:
            errors.append(f"{where}: should not specify rate limit unit when unlimited")
    elif not isinstance(unit, str) or unit.lower() not in UNITS:
        errors.append(f"{where}: invalid rate limit unit {unit!r}")
    requests = rate_limit.get("requests_per_unit", 0)
    if not isinstance(requests, int) or isinstance(requests, bool) or requests < 0:
        errors.append(f"{where}: requests_per_unit must be an unsigned integer")
    for index, replace in enumerate(rate_limit.get("replaces") or []):
        if not isinstance(replace, Mapping) or set(replace) != {"name"}:
            errors.append(f"{where}.replaces[{index}]: must be {{name: ...}}")
    return errors


def _descriptor_errors(descriptors: Any, where: str) -> list[str]:
    if not isinstance(descriptors, list):
        return [f"{where}: descriptors must be a list"]
    errors: list[str] = []
    seen: set[tuple[str, str]] = set()
    for index, descriptor in enumerate(descriptors):
        here = f"{where}[{index}]"
        if not isinstance(descriptor, Mapping):
            errors.append(f"{here}: descriptor must be a map")
            continue
        errors += _unknown(descriptor, _DESCRIPTOR_KEYS, here)
        key = descriptor.get("key")
        if not isinstance(key, str) or not key:
            errors.append(f"{here}: descriptor has empty key")
            continue
        composite = (key, str(descriptor.get("value", "")))
        if composite in seen:
            errors.append(f"{here}: duplicate descriptor composite key {composite!r}")
        seen.add(composite)
        for flag in _BOOL_KEYS:
            if flag in descriptor and not isinstance(descriptor[flag], bool):
                errors.append(f"{here}: {flag} must be a bool")
        if "rate_limit" in descriptor:
            errors += _rate_limit_errors(descriptor["rate_limit"], f"{here}.rate_limit")
        if "descriptors" in descriptor:
            errors += _descriptor_errors(descriptor["descriptors"], f"{here}.descriptors")
    return errors


def loader_errors(documents: Iterable[Any]) -> list[str]:
    """Every rule the ratelimit service's loader would reject, over all loaded files."""
    errors: list[str] = []
    domains: set[str] = set()
    for number, document in enumerate(documents):
        where = f"file {number}"
        if not isinstance(document, Mapping):
            errors.append(f"{where}: config must be a map")
            continue
        errors += _unknown(document, _DOCUMENT_KEYS, where)
        domain = document.get("domain")
        if not isinstance(domain, str) or not domain:
            errors.append(f"{where}: config file cannot have empty domain")
        elif domain in domains:
            errors.append(f"{where}: duplicate domain {domain!r} in config file")
        else:
            domains.add(domain)
        errors += _descriptor_errors(document.get("descriptors", []), f"{where}.descriptors")
    return errors


# --- tests ----------------------------------------------------------------------------------


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
                "rate_limit": {"unit": "minute", "requests_per_unit": 60},
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
    return QuotaSettings(
        tiers=tiers,
        clients=clients,
        unknown_client_tier=draw(st.sampled_from(names)),
        anonymous_tier=draw(st.sampled_from(names)),
    )


@settings(max_examples=40, deadline=None)
@given(_quotas())
def test_any_valid_quota_settings_generate_a_loadable_config(quota: QuotaSettings) -> None:
    config = specs.ratelimit_config(quota)
    assert loader_errors([yaml.safe_load(yaml.safe_dump(config))]) == []
    assert len(config["descriptors"]) == len(quota.clients) + 2
