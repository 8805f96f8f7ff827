"""What a stack deploys, in a page: the summary `make render` prints and writes.

`tools.render` writes `build/<stack>/summary.md` and prints it: the Istio release and
revisions, then per area (the `meshstack:<area>:` component each object was registered
under, its Helm charts' objects included) the kinds it creates, and per service (every
`namespace/name` of the `ejectionDetectionSeconds` output) how its traffic is split,
mirrored and rolled out, where it is exposed, its outlier detection, request
authentication, authorization and local rate limits, as the rendered objects say.

Pure functions over plain render data (objects, releases, outputs), tested in
tests/tools/test_summary.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

AREA_ORDER: Final = (
    "istio",
    "traffic",
    "observability",
    "alerts",
    "ratelimit",
    "security",
    "guardrails",
    "region",
)
"""Areas in the order of the architecture (README); `region` holds what region.py makes."""

PRIMARY_SUFFIX: Final = "-primary"
"""Flagger's copy of a progressive service's workload (`<name>-primary`) is that service."""


@dataclass(frozen=True)
class ChartRelease:
    """One Helm release of a render and its rendered objects."""

    name: str
    chart: str
    version: str
    namespace: str
    area: str
    objects: Sequence[Mapping[str, Any]]


def _kinds(objects: Iterable[Mapping[str, Any]]) -> str:
    counts = Counter(str(o.get("kind", "?")) for o in objects)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def _area_key(area: str) -> tuple[int, str]:
    return (AREA_ORDER.index(area) if area in AREA_ORDER else len(AREA_ORDER), area)


def area_lines(
    program: Sequence[tuple[str, Mapping[str, Any]]], releases: Sequence[ChartRelease]
) -> list[str]:
    """One entry per area: the program's objects by kind, then each chart and its count."""
    by_area: dict[str, list[Mapping[str, Any]]] = {}
    for area, obj in program:
        by_area.setdefault(area, []).append(obj)
    areas = sorted(set(by_area) | {r.area for r in releases}, key=_area_key)
    lines = []
    for area in areas:
        objects = by_area.get(area, [])
        lines.append(
            f"- {area}: {len(objects)} objects" + (f": {_kinds(objects)}" if objects else "")
        )
        for release in sorted((r for r in releases if r.area == area), key=lambda r: r.name):
            lines.append(
                f"  - chart {release.chart} {release.version} as `{release.name}` in "
                f"{release.namespace}: {len(release.objects)} objects ({_kinds(release.objects)})"
            )
    return lines


def app_of(obj: Mapping[str, Any]) -> str | None:
    """The `app` a program object is for: its label, or its workload selector's."""
    spec: Mapping[str, Any] = obj.get("spec") or {}
    metadata = obj.get("metadata") or {}
    candidates = (
        (metadata.get("labels") or {}).get("app"),
        ((spec.get("selector") or {}).get("matchLabels") or {}).get("app"),
        ((spec.get("workloadSelector") or {}).get("labels") or {}).get("app"),
    )
    app = next((c for c in candidates if isinstance(c, str)), None)
    return app.removesuffix(PRIMARY_SUFFIX) if app else None


def _subset(destination: Mapping[str, Any]) -> str:
    host = str(destination.get("host", "?"))
    subset = destination.get("subset")
    return str(subset) if subset else host.split(".", maxsplit=1)[0]


def _route_line(route: Mapping[str, Any]) -> str:
    destinations = route.get("route") or []
    if len(destinations) == 1:
        split = f"all to {_subset(destinations[0].get('destination') or {})}"
    else:
        split = ", ".join(
            f"{_subset(d.get('destination') or {})} {d.get('weight', 0)} %" for d in destinations
        )
    parts = [split]
    if route.get("mirror"):
        percent = (route.get("mirrorPercentage") or {}).get("value", 100)
        parts.append(f"mirror to {_subset(route['mirror'])} {percent} %")
    if route.get("fault"):
        parts.append("fault injection")
    return f"route {route.get('name', '(unnamed)')}: {'; '.join(parts)}"


def _canary_line(canary: Mapping[str, Any]) -> str:
    analysis = canary.get("spec", {}).get("analysis") or {}
    return (
        f"progressive (Flagger Canary): +{analysis.get('stepWeight', '?')} % every "
        f"{analysis.get('interval', '?')} up to {analysis.get('maxWeight', '?')} %, rolled "
        f"back after {analysis.get('threshold', '?')} failed checks"
    )


def _exposure(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    hosts: list[str] = []
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj.get("kind") == "VirtualService":
            hosts += [h for h in spec.get("hosts") or [] if not str(h).endswith(".cluster.local")]
        if obj.get("kind") == "Canary":
            hosts += [str(h) for h in (spec.get("service") or {}).get("hosts") or []]
    return [f"exposed as {', '.join(sorted(set(hosts)))}"] if hosts else []


def _outlier(objects: Sequence[Mapping[str, Any]], ejection: Any) -> list[str]:
    for obj in objects:
        if obj.get("kind") not in {"DestinationRule", "Canary"}:
            continue
        spec = obj.get("spec") or {}
        policy = spec.get("trafficPolicy") or (spec.get("service") or {}).get("trafficPolicy")
        detection = (policy or {}).get("outlierDetection")
        if detection:
            errors = detection.get("consecutive5xxErrors", "?")
            eject = "never ejects" if ejection is None else f"ejects a failing host in {ejection} s"
            return [
                f"outlier detection: {errors} consecutive 5xx per {detection.get('interval', '?')}"
                f", out for {detection.get('baseEjectionTime', '?')} ({eject})"
            ]
    return []


def _security(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    actions = Counter(
        str((o.get("spec") or {}).get("action", "ALLOW"))
        for o in objects
        if o.get("kind") == "AuthorizationPolicy"
    )
    jwt = any(o.get("kind") == "RequestAuthentication" for o in objects)
    limits = sum(1 for o in objects if o.get("kind") == "EnvoyFilter")
    lines = []
    if actions or jwt:
        policies = ", ".join(f"{n} {action}" for action, n in sorted(actions.items()))
        jwt_text = "JWT validated; " if jwt else ""
        lines.append(f"security: {jwt_text}authorization policies {policies or 'none'}")
    if limits:
        lines.append(f"local rate limit: {limits} EnvoyFilter(s)")
    return lines


def service_lines(
    services: Iterable[str],
    program: Sequence[Mapping[str, Any]],
    ejection_seconds: Mapping[str, Any],
) -> list[str]:
    """Per service (`namespace/name`): routing, rollout, exposure, resilience, security."""
    lines = []
    # One pass over the objects, not one per service (quadratic at 400 services).
    by_service: dict[tuple[Any, str | None], list[Mapping[str, Any]]] = {}
    for o in program:
        key = ((o.get("metadata") or {}).get("namespace"), app_of(o))
        by_service.setdefault(key, []).append(o)
    for service in sorted(services):
        namespace, name = service.split("/", 1)
        objects = by_service.get((namespace, name), [])
        details: list[str] = []
        for obj in objects:
            if obj.get("kind") == "Canary":
                details.append(_canary_line(obj))
        for obj in objects:
            if obj.get("kind") == "VirtualService":
                details += [_route_line(r) for r in (obj.get("spec") or {}).get("http") or []]
        details += _exposure(objects)
        details += _outlier(objects, ejection_seconds.get(service))
        details += _security(objects)
        lines.append(f"- {service}: {len(objects)} objects ({_kinds(objects) or 'none'})")
        lines += [f"  - {detail}" for detail in details]
    return lines


def render_summary(
    stack: str,
    program: Sequence[tuple[str, Mapping[str, Any]]],
    releases: Sequence[ChartRelease],
    outputs: Mapping[str, Any],
    *,
    hub: str | None = None,
) -> str:
    """The whole summary (Markdown): headline, areas, services."""
    chart_objects = sum(len(r.objects) for r in releases)
    revisions = outputs.get("istioRevisions") or {}
    running = ", ".join(
        f"{name} {entry.get('version')} [{', '.join(entry.get('tags') or [])}]"
        for name, entry in sorted(revisions.items())
    )
    role = f"observability spoke of {hub}" if hub else "observability hub"
    namespaces = ", ".join(outputs.get("workloadNamespaces") or []) or "none"
    lines = [
        f"## {stack}: what the stack deploys",
        "",
        f"Istio {outputs.get('istioVersion', '?')} (revisions: {running or 'none'}), {role}; "
        f"workload namespaces: {namespaces}.",
        f"{len(program) + chart_objects} Kubernetes objects: {len(program)} from the program, "
        f"{chart_objects} from {len(releases)} Helm charts.",
        "",
        "### Per area",
        "",
        *area_lines(program, releases),
        "",
        "### Per service",
        "",
    ]
    ejection = outputs.get("ejectionDetectionSeconds") or {}
    services = service_lines(ejection, [obj for _, obj in program], ejection)
    lines += services or ["- none"]
    return "\n".join(lines) + "\n"
