"""The app ServiceMonitor scrapes every pod of a service once, with Flagger's Services too.

Flagger (fluxcd/flagger v1.44 `pkg/router/kubernetes_default.go`, `reconcileService`)
creates three Services for a Canary targeting the Deployment `<name>` (whose pods it
relabels nothing; its primary copy's pods are `app: <name>-primary`):

- apex `<name>`: labels `app: <name>`, selector `app: <name>-primary`;
- `<name>-primary`: labels `app: <name>-primary`, selector `app: <name>-primary`;
- `<name>-canary`: labels `app: <name>-canary`, selector `app: <name>` (the canary pods).

The Prometheus Operator turns a ServiceMonitor into one target per endpoint of every
Service its selector matches, so a pod behind two selected Services is scraped twice.
"""

from __future__ import annotations

from typing import Any

from components.alerts.component import MeshAlerts
from components.istio.component import IstioMesh
from tests.conftest import make_settings, run_with_provider


def _flagger_services(name: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "labels": {"app": name}, "selector": {"app": f"{name}-primary"}},
        {
            "name": f"{name}-primary",
            "labels": {"app": f"{name}-primary"},
            "selector": {"app": f"{name}-primary"},
        },
        {"name": f"{name}-canary", "labels": {"app": f"{name}-canary"}, "selector": {"app": name}},
    ]


def _static_services(name: str) -> list[dict[str, Any]]:
    return [{"name": name, "labels": {"app": name}, "selector": {"app": name}}]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (`matchLabels`, `matchExpressions` with In/NotIn/Exists)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "NotIn" and labels.get(key) in expression["values"]:
            return False
        if operator == "Exists" and key not in labels:
            return False
    return True


def _scrapes_per_pod(
    monitor: dict[str, Any], services: list[dict[str, Any]], pods: dict[str, dict[str, str]]
) -> dict[str, int]:
    """How many targets Prometheus gets for each pod from this ServiceMonitor."""
    selected = [s for s in services if _matches(monitor["spec"]["selector"], s["labels"])]
    return {
        pod: sum(all(labels.get(k) == v for k, v in s["selector"].items()) for s in selected)
        for pod, labels in pods.items()
    }


def _app_monitor(delivery: str) -> dict[str, Any]:
    settings = make_settings(
        services=[
            {
                "name": "api",
                "namespace": "shop",
                "delivery": delivery,
                "metrics": {"port": "http-prom"},
            }
        ],
    )

    def build(opts: Any) -> None:
        mesh = IstioMesh("m", settings.istio, opts=opts)
        MeshAlerts(
            "al",
            mesh,
            settings.alerts,
            services=settings.services,
            dashboard=settings.dashboard,
            ratelimit_metrics=None,
            runbook_base_url="https://runbooks.test/alerts.md",
            opts=opts,
        )

    (monitor,) = (
        o
        for o in run_with_provider(build).kubernetes_objects()
        if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == "api"
    )
    return monitor


def test_a_progressive_service_has_its_primary_and_canary_pods_each_scraped_once() -> None:
    monitor = _app_monitor("progressive")
    pods = {"primary-pod": {"app": "api-primary"}, "canary-pod": {"app": "api"}}
    assert _scrapes_per_pod(monitor, _flagger_services("api"), pods) == {
        "primary-pod": 1,
        "canary-pod": 1,
    }
    # Both pods' series carry the service's name as `job`, as a static service's do.
    (endpoint,) = monitor["spec"]["endpoints"]
    assert {"action": "replace", "targetLabel": "job", "replacement": "api"} in endpoint[
        "relabelings"
    ]


def test_a_static_service_is_scraped_through_its_own_service() -> None:
    monitor = _app_monitor("static")
    pods = {"pod": {"app": "api"}}
    assert _scrapes_per_pod(monitor, _static_services("api"), pods) == {"pod": 1}
    assert monitor["spec"]["selector"] == {"matchLabels": {"app": "api"}}
    assert "relabelings" not in monitor["spec"]["endpoints"][0]
