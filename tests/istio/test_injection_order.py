"""First `pulumi up`: every workload in an injected namespace starts after the sidecar injector.

The injector is a mutating webhook installed by istiod's chart. Pods are mutated only when
they are admitted, so a Deployment (or a chart's) created before istiod's chart has run
starts pods without a sidecar, and they stay so until the next rollout. These tests walk
the dependency graph the engine receives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from components.istio.component import IstioMesh
from components.ratelimit.component import RateLimiter
from tests.conftest import make_settings, run_with_provider
from tools.charts import published_chart
from tools.render import Registration, Render

WORKLOAD_TYPES = frozenset(
    {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:apps/v1:StatefulSet",
        "kubernetes:apps/v1:DaemonSet",
        "kubernetes:batch/v1:Job",
        "kubernetes:batch/v1:CronJob",
        # A chart installs its own Deployments when it runs.
        "kubernetes:helm.sh/v4:Chart",
    }
)
INJECTION_LABELS = ("istio-injection", "istio.io/rev")


def _namespace_of(registration: Registration) -> str | None:
    if registration.type == "kubernetes:helm.sh/v4:Chart":
        namespace = registration.inputs.get("namespace")
    else:
        namespace = registration.inputs.get("metadata", {}).get("namespace")
    return None if namespace is None else str(namespace)


def _injected_namespaces(registrations: Iterable[Registration]) -> set[str]:
    return {
        r.inputs["metadata"]["name"]
        for r in registrations
        if r.type == "kubernetes:core/v1:Namespace"
        and any(label in r.inputs["metadata"].get("labels", {}) for label in INJECTION_LABELS)
    }


def _waits_for(render: Render, registration: Registration, target: str) -> bool:
    """Whether `target` (a URN) is among the resource's dependencies, transitively."""
    edges = {r.urn: r.dependencies for r in render.registrations}
    seen: set[str] = set()
    todo = list(registration.dependencies)
    while todo:
        urn = todo.pop()
        if urn == target:
            return True
        if urn not in seen:
            seen.add(urn)
            todo.extend(edges.get(urn, ()))
    return False


def _istiods(render: Render) -> list[Registration]:
    return [
        r
        for r in render.registrations
        if r.type == "kubernetes:helm.sh/v4:Chart" and published_chart(r.inputs) == "istiod"
    ]


def _istiod(render: Render) -> Registration:
    (istiod,) = _istiods(render)
    return istiod


def _workloads_started_before_the_injector(render: Render) -> list[str]:
    istiod = _istiod(render)
    injected = _injected_namespaces(render.registrations)
    return [
        f"{r.name} ({_namespace_of(r)})"
        for r in render.registrations
        if r.type in WORKLOAD_TYPES
        and _namespace_of(r) in injected
        and not _waits_for(render, r, istiod.urn)
    ]


def test_every_workload_in_an_injected_namespace_waits_for_istiod(
    every_render: dict[str, Render],
) -> None:
    checked = 0
    for stack, render in every_render.items():
        if len(_istiods(render)) > 1:
            # A mesh halfway through a control-plane upgrade injects each namespace from its
            # tag's istiod; which one a workload must wait for is tests/istio/test_revisions.py's.
            continue
        injected = _injected_namespaces(render.registrations)
        checked += sum(
            r.type in WORKLOAD_TYPES and _namespace_of(r) in injected for r in render.registrations
        )
        assert _workloads_started_before_the_injector(render) == [], stack
    assert checked, "a fixture runs workloads in injected namespaces"


def test_quota_service_pods_are_admitted_after_the_injector_exists() -> None:
    settings = make_settings(rateLimit={"quota": {"enabled": True}})

    def build(opts: Any) -> None:
        mesh = IstioMesh("m", settings.istio, opts=opts)
        RateLimiter("rl", mesh, settings.rate_limit, services=settings.services, opts=opts)

    render = run_with_provider(build)
    deployments = {
        r.name for r in render.registrations if r.type == "kubernetes:apps/v1:Deployment"
    }
    assert deployments == {"rl-ratelimit", "rl-redis"}
    assert _workloads_started_before_the_injector(render) == []
