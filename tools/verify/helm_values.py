"""Check that Helm values the program sets are values the chart actually reads.

Helm silently ignores unknown keys, so a misspelt or renamed value deploys the
chart defaults without any error. A key is accepted when one of these knows it:

* the chart's default ``values.yaml`` (Istio charts nest the defaults under
  ``_internal_defaults_do_not_set`` while users set them at the top level);
* a commented-out example line in ``values.yaml`` at the child indentation of a
  block (``# maxUnavailable: 1`` under ``pdb:``), because charts document
  optional keys that way instead of giving them a default;
* ``values.schema.json`` when the chart has one (and the values must then also
  pass the schema, as ``helm install`` enforces it);
* for kiali-server, the Kiali CRD's ``spec`` schema, which describes the same
  configuration tree as the chart values (see SOURCES.md).

Below a default that is an empty mapping, null or a list, or below a
documented/free-form key, everything is accepted: those are free-form blocks
such as istiod ``meshConfig`` or jaeger ``userconfig``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the locked dev deps
import yaml

from components.versions import ISTIO_REPOSITORY
from tools.verify.crd import load_catalog
from tools.verify.reference import reference_dir

CHARTS = (
    "istio-base",
    "istiod",
    "istio-gateway",
    "flagger",
    "flagger-loadtester",
    "kiali-server",
    "jaeger",
)
_ISTIO_DEFAULTS_KEY = "_internal_defaults_do_not_set"

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/\"']+)\s*:(?:\s+(?P<value>.*))?$")
_LIST_LINE = re.compile(r"^(?P<indent> *)- ?")
# Only "# key: value" or "# key:" with exactly one space after the hash and a
# key starting in lower case: prose ("# Note: ...", "# Ref: ...") and nested
# example lines ("#   requests:") are deliberately not taken as documentation.
_COMMENT_KEY = re.compile(r"^(?P<indent> *)# (?P<key>[a-z_][A-Za-z0-9_]*):(?:\s.*)?$")
_BLOCK_SCALAR = re.compile(r"^[|>][-+0-9]*\s*(#.*)?$")

# Marks a list item on the indentation stack: comments inside list items do
# not document mapping keys.
_IN_LIST = "\x00list"

Path_ = tuple[str, ...]

# Keys whose subtree is data passed straight into a Kubernetes manifest or an
# opaque config (label/annotation maps, ResourceRequirements, Affinity, ...,
# and istiod's MeshConfig proto). Their defaults show one example, not the set
# of allowed keys, so nothing below them is checked against the defaults.
_FREE_FORM_KEY = re.compile(
    r"^(meshConfig|resources|affinity|nodeSelector|node_selector|tolerations|"
    r"securityContext|containerSecurityContext|podSecurityContext|security_context|"
    r"topologySpreadConstraints|.*[Aa]nnotations|.*[Ll]abels)$"
)


TEMPLATE_KEYS: dict[str, dict[Path_, str]] = {
    "istio-base": {
        ("base", "validationFailurePolicy"): (
            "read by templates/defaultrevision-validatingwebhookconfiguration.yaml; the "
            "chart's values.yaml neither sets nor documents it (istiod's documents it)"
        ),
    },
}
"""Keys a chart's templates read that its values.yaml does not show, with where. The full
render (`tools/verify/charts.py`, effective values) proves each one changes the objects."""


def documented_keys(text: str) -> frozenset[Path_]:
    """Key paths documented by commented-out example lines in a values.yaml."""
    stack: list[tuple[int, str]] = []
    child_indent: dict[Path_, int] = {}
    candidates: list[tuple[Path_, int, str]] = []
    block_scalar_indent: int | None = None

    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip(" ")
        if not stripped:
            continue
        indent = len(line) - len(stripped)
        if block_scalar_indent is not None:
            if indent > block_scalar_indent:
                continue  # inside a literal block: "# x:" here is data, not a comment
            block_scalar_indent = None
        if stripped.startswith("#"):
            match = _COMMENT_KEY.match(line)
            if match:
                parents = [key for level, key in stack if level < indent]
                if _IN_LIST not in parents:
                    candidates.append((tuple(parents), indent, match.group("key")))
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if _LIST_LINE.match(line):
            stack.append((indent, _IN_LIST))
            continue
        key_match = _KEY_LINE.match(line)
        if not key_match:
            continue
        parent = tuple(key for _, key in stack)
        child_indent.setdefault(parent, indent)
        stack.append((indent, key_match.group("key").strip("\"'")))
        if _BLOCK_SCALAR.match(key_match.group("value") or ""):
            block_scalar_indent = indent

    documented: set[Path_] = set()
    for parent, indent, key in candidates:
        expected = child_indent.get(parent)
        parent_indent = -1 if not parent else _indent_of(parent, child_indent)
        if (expected is not None and indent == expected) or (
            expected is None and indent > parent_indent
        ):
            documented.add((*parent, key))
    return frozenset(documented)


def _indent_of(path: Path_, child_indent: dict[Path_, int]) -> int:
    return child_indent.get(path[:-1], 0)


@dataclass(frozen=True)
class ChartReference:
    """Everything known about one chart's accepted values."""

    name: str
    defaults: dict[str, Any]
    documented: frozenset[Path_]
    schema: dict[str, Any] | None
    # JSON Schema (values.schema.json) leaves unlisted properties open unless
    # additionalProperties is false; a CRD structural schema closes them.
    schema_closed_by_default: bool


TEMPLATE_READ_KEYS: dict[str, frozenset[Path_]] = {
    # jaeger 4.11.1 templates/jaeger/jaeger-deploy.yaml reads `.Values.jaeger.podLabels`
    # (pod-template labels) although values.yaml neither sets nor documents it.
    "jaeger": frozenset({("jaeger", "podLabels")}),
}
"""Keys a pinned chart's templates read that its values.yaml does not mention."""


@lru_cache(maxsize=16)
def load_chart(directory: Path, chart: str) -> ChartReference:
    """Read one chart's defaults, documented keys and schema."""
    chart_dir = directory / "charts" / chart
    if not (chart_dir / "values.yaml").is_file():
        raise ValueError(f"unknown chart {chart!r}: no {chart_dir / 'values.yaml'}")
    text = (chart_dir / "values.yaml").read_text(encoding="utf-8")
    defaults = yaml.safe_load(text) or {}
    documented = documented_keys(text) | TEMPLATE_READ_KEYS.get(chart, frozenset())
    if _ISTIO_DEFAULTS_KEY in defaults:
        defaults = defaults[_ISTIO_DEFAULTS_KEY] or {}
        documented = frozenset(p[1:] for p in documented if p[:1] == (_ISTIO_DEFAULTS_KEY,))
    schema: dict[str, Any] | None = None
    closed = False
    schema_file = chart_dir / "values.schema.json"
    if schema_file.is_file():
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
    elif chart == "kiali-server":
        kiali = load_catalog(directory).versions[("kiali.io/v1alpha1", "Kiali")]
        schema = kiali.schema["properties"]["spec"]
        closed = True
    return ChartReference(chart, defaults, documented, schema, closed)


_ANY: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    # values.schema.json refers to its $defs with local JSON pointers only.
    while isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _schema_child(
    node: dict[str, Any] | None, key: str, ref: ChartReference
) -> tuple[bool, dict[str, Any] | None]:
    """Whether the schema at ``node`` allows ``key``, and the child schema.

    A child of None means "no schema here"; ``_ANY`` means anything goes.
    """
    if node is None or ref.schema is None:
        return False, None
    node = _resolve(node, ref.schema)
    properties = node.get("properties", {})
    if key in properties:
        return True, _resolve(properties[key], ref.schema)
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        return True, _resolve(additional, ref.schema)
    if additional is False:
        return False, None
    if node.get("x-kubernetes-preserve-unknown-fields") or additional is True:
        return True, _ANY
    if not ref.schema_closed_by_default:
        return True, _ANY
    return False, None


def _leaves(value: Any, path: Path_) -> Iterator[Path_]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _leaves(child, (*path, str(key)))
    else:
        yield path


def _check(
    values: dict[str, Any],
    defaults: dict[str, Any] | None,
    schema: dict[str, Any] | None,
    path: Path_,
    *,
    ref: ChartReference,
    errors: list[str],
) -> None:
    for raw_key, value in values.items():
        key = str(raw_key)
        child_path = (*path, key)
        in_defaults = defaults is not None and key in defaults
        default = defaults.get(key) if defaults is not None else None
        schema_ok, child_schema = _schema_child(schema, key, ref)
        if in_defaults and (
            not (isinstance(default, dict) and default) or _FREE_FORM_KEY.match(key)
        ):
            continue  # free-form below an empty/null/list/scalar default or a data map
        if child_path in ref.documented or child_path in TEMPLATE_KEYS.get(ref.name, {}):
            continue
        if child_schema is _ANY:
            continue
        if not (in_defaults or schema_ok):
            errors.extend(
                f"{ref.name}: values.{'.'.join(leaf)} is not a value of the chart"
                for leaf in _leaves(value, child_path)
            )
            continue
        if isinstance(value, dict):
            child_defaults = default if in_defaults and isinstance(default, dict) else None
            _check(value, child_defaults, child_schema, child_path, ref=ref, errors=errors)


REFERENCE_CHART_DIRS: dict[tuple[str, str], str] = {
    (ISTIO_REPOSITORY, "base"): "istio-base",
    (ISTIO_REPOSITORY, "istiod"): "istiod",
    (ISTIO_REPOSITORY, "gateway"): "istio-gateway",
    ("https://flagger.app", "flagger"): "flagger",
    ("https://flagger.app", "loadtester"): "flagger-loadtester",
    ("https://kiali.org/helm-charts", "kiali-server"): "kiali-server",
    ("https://jaegertracing.github.io/helm-charts", "jaeger"): "jaeger",
}
"""(repository, published chart name) -> directory under reference/charts with its defaults."""

CHART_REFERENCE_DIRS: dict[str, str] = {
    chart: folder for (_, chart), folder in REFERENCE_CHART_DIRS.items()
}
"""Published chart name -> directory under reference/charts: what a chart's values are checked
against whichever source (`meshstack:chartSource`) the stack takes it from."""


def validate_helm_values(chart: str, values: dict[str, Any]) -> list[str]:
    """Problems with ``values`` for ``chart`` (a directory under reference/charts)."""
    ref = load_chart(reference_dir(), chart)
    errors: list[str] = []
    root_schema = None
    if ref.schema is not None:
        root_schema = _resolve(ref.schema, ref.schema)
    _check(values, ref.defaults, root_schema, (), ref=ref, errors=errors)
    if ref.schema is not None and not ref.schema_closed_by_default:
        validator = jsonschema.Draft7Validator(ref.schema)
        for error in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.path))):
            location = ".".join(str(p) for p in error.absolute_path)
            where = f"values.{location}" if location else "values"
            errors.append(f"{chart}: {where}: {error.message}")
    return errors
