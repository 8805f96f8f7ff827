"""The config-loading rules of envoyproxy/ratelimit, as a checker for generated configs.

`loader_errors` lists what the ratelimit service's loader would reject in a set of
config files (the ConfigMap `components.ratelimit.specs.ratelimit_config` fills).
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

__all__ = ["UNITS", "VALID_KEYS", "loader_errors"]

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
