"""Checks on the objects the Helm charts create (`tools.charts.expand`), like the program's own.

* `schema_problems`: strict Kubernetes 1.35 schemas, CRD schemas and CEL rules
  (`tools.verify.validate_manifest`), for every chart object;
* `policy_report`: the policy pack's offline runner over the program's registrations plus one
  registration per chart object, as Chart v4 registers them (children of the chart, with its
  provider; retained on delete exactly when annotated `helm.sh/resource-policy: keep`, as
  Chart v4 decides, so a chart CRD or namespace without it fails `crds-and-namespaces-retained`);
* `ownership_conflicts`: an object rendered by two charts, or by a chart and the program —
  two owners that would overwrite each other on every `pulumi up`;
* `secret_leaks`: a value the program passes as a secret appearing in an object that is not
  a Secret (program objects carry the render's `[secret]` placeholder, chart objects the
  secret's stand-in, plain or base64-encoded);
* `ineffective_values`: every value the program sets that differs from the chart's default
  must change the rendered objects; a value that changes nothing sits at a wrong path or is
  shadowed by another one. Justified exceptions: `INEFFECTIVE_VALUE_EXCEPTIONS`, the only
  place they are listed.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import yaml

from policy.offline import Report, evaluate
from tools.charts import (
    PROJECT_DIR,
    ChartObjects,
    helm_template,
    locate,
    object_key,
)
from tools.manifests import SECRET_PLACEHOLDER, canonical_object
from tools.render import HELM_CHART_TYPE, Registration, Render
from tools.verify import validate_manifest

KEEP_ANNOTATION: Final = "helm.sh/resource-policy"

INEFFECTIVE_VALUE_EXCEPTIONS: Final[Mapping[tuple[str, str], str]] = {
    ("istio-gateway", "labels.app"): (
        "equals what the chart derives from the release name (`app: <release>`); stated "
        "because `components.istio_values.gateway_values` must not depend on that naming rule"
    ),
    ("istio-gateway", "labels.istio"): (
        "equals what the chart derives from the release name (`istio: <release without "
        "istio->`); stated because the program's Gateway objects select on this label"
    ),
    ("kiali-server", "server.web_root"): (
        "`/kiali` is what the chart computes for an empty web_root outside OpenShift; stated "
        "so the web root cannot move under the Ingress and the program's links (kiali.py)"
    ),
}
"""(chart folder name, dotted value path) → why the program sets a value that changes no
rendered object. The only list of such exceptions; each needs its reason."""


VALUE_ECHOES: Final[Mapping[str, tuple[str, str, tuple[str, ...], str]]] = {
    "istiod": (
        "ConfigMap",
        "values",
        ("original-values", "merged-values"),
        "istiod's `values[-<revision>]` ConfigMap is a JSON copy of every value, 'rendered "
        "for debugging purposes and external tooling; modifying these values has no effect' "
        "(its own description); every value would change it",
    ),
}
"""chart folder name → (kind, name or `<name>-<revision>`, data keys, why): copies of the
values that the effective-values check leaves out, else every value would count as used."""


def _without_value_echoes(chart_name: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    echo = VALUE_ECHOES.get(chart_name)
    if echo is None:
        return objects
    kind, name, keys, _ = echo
    result = []
    for obj in objects:
        found = str((obj.get("metadata") or {}).get("name", ""))
        if obj.get("kind") == kind and (found == name or found.startswith(f"{name}-")):
            data = {k: v for k, v in (obj.get("data") or {}).items() if k not in keys}
            result.append({**obj, "data": data})
        else:
            result.append(obj)
    return result


def _ref(obj: Mapping[str, Any]) -> str:
    api_version, kind, namespace, name = object_key(obj)
    return f"{kind} {namespace + '/' if namespace else ''}{name} ({api_version})"


# --- schemas ----------------------------------------------------------------------------


def schema_problems(expanded: Iterable[ChartObjects]) -> list[str]:
    """Every schema, CRD and CEL problem of the chart objects, prefixed by the release."""
    return [
        f"release {chart.release.name}: {problem}"
        for chart in expanded
        for obj in chart.objects
        for problem in validate_manifest(obj)
    ]


# --- policy pack --------------------------------------------------------------------------


def _type_token(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    group_version = api_version if "/" in api_version else f"core/{api_version}"
    return f"kubernetes:{group_version}:{obj.get('kind', '')}"


def chart_registrations(render: Render, expanded: Iterable[ChartObjects]) -> list[Registration]:
    """One registration per chart object, as Chart v4 registers its children."""
    charts = {
        (str(r.inputs.get("name", r.name)), str(r.inputs.get("namespace", ""))): r
        for r in render.registrations
        if r.type == HELM_CHART_TYPE
    }
    registrations = []
    for chart in expanded:
        parent = charts.get((chart.release.name, chart.release.namespace))
        if parent is None:
            raise ValueError(f"release {chart.release.name} is not a chart of the render")
        for obj in chart.objects:
            _, _, namespace, name = object_key(obj)
            type_ = _type_token(obj)
            child = f"{parent.name}:{namespace + '/' if namespace else ''}{name}"
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            registrations.append(
                Registration(
                    urn=f"{parent.urn.rsplit('::', 1)[0]}${type_}::{child}",
                    type=type_,
                    name=child,
                    parent=parent.urn,
                    custom=True,
                    dependencies=[],
                    provider=parent.provider,
                    protect=False,
                    retain_on_delete=annotations.get(KEEP_ANNOTATION) == "keep",
                    inputs=dict(obj),
                )
            )
    return registrations


def with_chart_objects(render: Render, expanded: Iterable[ChartObjects]) -> Render:
    """The render as the engine would see it once Chart v4 registered the charts' objects."""
    return Render(
        stack=render.stack,
        registrations=[*render.registrations, *chart_registrations(render, expanded)],
        outputs=render.outputs,
    )


def policy_report(render: Render, expanded: Iterable[ChartObjects]) -> Report:
    """The policy pack's offline report over the program's and the charts' objects."""
    config = json.loads((PROJECT_DIR / "policy" / "config.json").read_text())
    return evaluate(with_chart_objects(render, expanded), config)


# --- ownership ----------------------------------------------------------------------------


def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    # The same object under two API versions of its group is still one object.
    api_version, kind, namespace, name = object_key(obj)
    group = api_version.rpartition("/")[0]
    return group, kind, namespace, name


def ownership_conflicts(
    program_objects: Iterable[Mapping[str, Any]], expanded: Iterable[ChartObjects]
) -> list[str]:
    """Objects with more than one owner (the program and/or several chart releases)."""
    owners: dict[tuple[str, str, str, str], list[str]] = {}
    examples: dict[tuple[str, str, str, str], Mapping[str, Any]] = {}
    for obj in program_objects:
        owners.setdefault(_identity(obj), []).append("the program")
        examples.setdefault(_identity(obj), obj)
    for chart in expanded:
        for obj in chart.objects:
            owners.setdefault(_identity(obj), []).append(f"release {chart.release.name}")
            examples.setdefault(_identity(obj), obj)
    return [
        f"{_ref(examples[key])} is created by {' and '.join(found)}"
        for key, found in sorted(owners.items())
        if len(found) > 1
    ]


# --- secrets ------------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def secret_leaks(
    program_objects: Iterable[Mapping[str, Any]], expanded: Iterable[ChartObjects]
) -> list[str]:
    """Objects other than Secrets that contain a value the program passes as a secret."""
    expanded = list(expanded)
    needles = {SECRET_PLACEHOLDER: "a secret of the program"}
    for chart in expanded:
        for stand_in, path in chart.secret_stand_ins.items():
            where = f"secret value {path} of release {chart.release.name}"
            needles[stand_in] = where
            needles[base64.b64encode(stand_in.encode()).decode()] = f"{where} (base64)"
    found = []
    everything = [("the program", o) for o in program_objects]
    everything += [(f"release {c.release.name}", o) for c in expanded for o in c.objects]
    for owner, obj in everything:
        if obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1":
            continue
        text = "\n".join(_strings(obj))
        for needle, what in needles.items():
            if needle in text:
                found.append(f"{_ref(obj)} of {owner} contains {what}")
    return found


# --- effective values ---------------------------------------------------------------------

_MISSING: Final = object()
_ISTIO_DEFAULTS_KEY: Final = "_internal_defaults_do_not_set"


def chart_defaults(directory: Path) -> dict[str, Any]:
    """A chart's default values (Istio's are nested under `_internal_defaults_do_not_set`)."""
    defaults = yaml.safe_load((directory / "values.yaml").read_text()) or {}
    if isinstance(defaults.get(_ISTIO_DEFAULTS_KEY), dict):
        return {
            **defaults[_ISTIO_DEFAULTS_KEY],
            **{k: v for k, v in defaults.items() if k != _ISTIO_DEFAULTS_KEY},
        }
    return dict(defaults)


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every value set: mappings are descended, anything else is a leaf."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif path:
        yield path, value


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _substitute(values: dict[str, Any], path: tuple[str, ...], new: Any) -> dict[str, Any]:
    """`values` with the value at `path` replaced by `new`, or removed for `_MISSING`."""
    result = copy.deepcopy(values)
    node = result
    for key in path[:-1]:
        node = node[key]
    if new is _MISSING:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(new)
    return result


@dataclass(frozen=True)
class IneffectiveValue:
    release: str
    chart: str
    path: str
    value: Any

    def __str__(self) -> str:
        return (
            f"release {self.release} ({self.chart}): values.{self.path} = "
            f"{json.dumps(self.value)} renders exactly what the chart default renders"
        )


def ineffective_values(
    expanded: Iterable[ChartObjects],
    helm: Path,
    *,
    project_dir: Path = PROJECT_DIR,
    exceptions: Mapping[tuple[str, str], str] = INEFFECTIVE_VALUE_EXCEPTIONS,
    workers: int = 4,
) -> list[IneffectiveValue]:
    """Values the program sets, differing from the chart default, that change no object.

    Each such value is put back to the chart's default (removed where the chart has none)
    and the chart rendered again; an identical result means the value has no effect.
    """
    jobs = []
    for chart in expanded:
        directory, _ = locate(chart.release, project_dir)
        defaults = chart_defaults(directory)
        chart_name = chart.folder.rsplit("-", 1)[0]
        for path, value in _leaves(chart.values):
            if value == _lookup(defaults, path):
                continue
            if (chart_name, ".".join(path)) in exceptions:
                continue
            variant = _substitute(chart.values, path, _lookup(defaults, path))
            jobs.append((chart, directory, chart_name, path, value, variant))

    def unchanged(job: tuple[Any, ...]) -> IneffectiveValue | None:
        chart, directory, chart_name, path, value, variant = job
        release = replace(chart.release, values=variant)
        objects = sorted(
            (canonical_object(o) for o in helm_template(helm, release, directory, variant)),
            key=object_key,
        )
        if _without_value_echoes(chart_name, objects) != _without_value_echoes(
            chart_name, chart.objects
        ):
            return None
        return IneffectiveValue(chart.release.name, chart_name, ".".join(path), value)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [found for found in pool.map(unchanged, jobs) if found is not None]
