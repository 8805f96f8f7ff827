"""How the offline render writes Kubernetes objects: placeholders, key order, YAML.

Shared by the program's render (`tools.render`) and the chart expansion (`tools.charts`),
so both files of a render (`manifests.yaml`, `charts.yaml`) read alike and diff cleanly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import yaml

UNKNOWN_PLACEHOLDER: Final = "[unknown: known after deploy]"
"""What a value known only after deploy reads as in a render."""
SECRET_PLACEHOLDER: Final = "[secret]"
"""What a secret reads as in a render."""


_LEADING_KEYS: Final = ("apiVersion", "kind", "metadata")


def canonical(value: Any) -> Any:
    """Keys sorted at every level, so renders diff cleanly and never depend on order."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def canonical_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A Kubernetes object with apiVersion, kind and metadata first, the rest sorted."""
    leading = {k: canonical(obj[k]) for k in _LEADING_KEYS if k in obj}
    rest = {k: canonical(obj[k]) for k in sorted(obj) if k not in _LEADING_KEYS}
    return {**leading, **rest}


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """YAML dumper that keeps key order and writes multi-line strings as blocks; libyaml's
    emitter when PyYAML has it (the pure-Python one was two thirds of `make render`)."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml_documents(documents: list[Any]) -> str:
    """YAML documents, keys in the order given, multi-line strings as blocks."""
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=100)
