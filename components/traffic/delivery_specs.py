"""Pure builders of progressive delivery: Flagger's Canary spec and the Helm values of
Flagger and its loadtester.

A `Canary` carries in `spec.service` everything the VirtualService and DestinationRules
Flagger generates must have (routes' timeout, retries, CORS, the traffic policy), built
with the same route and policy builders as a static service's (`specs.py`). Plain dicts, no
Pulumi engine: `delivery.py` wraps them in resources.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from components.settings_types import duration_ms
from components.traffic.specs import (
    ISTIO_MUTUAL,
    MESH_GATEWAY,
    cors_spec,
    retries_spec,
    traffic_policy_spec,
)

if TYPE_CHECKING:
    # Types only: the root model imports this package, so importing it at runtime would
    # be a cycle.
    from components.settings import MeshService

LOADTESTER_RELEASE: Final = "flagger-loadtester"
"""Helm release of the loadtester; the chart names its Service after it."""

GHZ_HEALTH_PROTO: Final = "/tmp/ghz/health.proto"
"""`grpc.health.v1` proto in the loadtester image, so ghz needs no server reflection."""

SMOKE_TEST_TIMEOUT: Final = "30s"
LOAD_TEST_TIMEOUT: Final = "5s"
"""The loadtester starts `hey` in the background and answers at once; rollout webhooks'
timeouts must stay well inside the analysis interval."""


def flagger_interval(duration: str) -> str:
    """A whole-second duration in Flagger's `^[0-9]+(m|s)` format, in minutes when exact."""
    seconds = duration_ms(duration) // 1000
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def loadtester_url(namespace: str) -> str:
    """URL of the loadtester's Service, as Flagger webhooks call it."""
    return f"http://{LOADTESTER_RELEASE}.{namespace}/"


def _canary_address(service: MeshService) -> str:
    # Flagger creates `<name>-canary` selecting only the canary pods.
    return f"{service.name}-canary.{service.namespace}:{service.port}"


def smoke_test_command(service: MeshService) -> str:
    """Pre-rollout acceptance test, run by the loadtester through its sidecar (mTLS)."""
    if service.protocol == "grpc":
        return f"grpc_health_probe -addr={_canary_address(service)}"
    path = service.traffic.progressive.acceptance_path
    return f"curl -sf http://{_canary_address(service)}{path}"


def load_test_command(service: MeshService) -> str:
    """Load generated for the canary during each analysis interval."""
    progressive = service.traffic.progressive
    duration = flagger_interval(progressive.interval)
    qps = progressive.load_test_qps
    if service.protocol == "grpc":
        # The loadtester image ships the health proto: without it ghz needs server
        # reflection, which services need not enable.
        return (
            f"ghz -z {duration} -q {qps} -c 2 --insecure --proto={GHZ_HEALTH_PROTO} "
            f"--call grpc.health.v1.Health/Check {_canary_address(service)}"
        )
    return f"hey -z {duration} -q {qps} -c 2 http://{_canary_address(service)}/"


def canary_service_spec(service: MeshService, gateway_refs: Sequence[str]) -> dict[str, Any]:
    """`Canary.spec.service`: everything the VirtualService and DestinationRules Flagger
    generates must carry, since Flagger overwrites any other owner's edits."""
    traffic = service.traffic
    spec: dict[str, Any] = {
        "port": service.port,
        "targetPort": service.port,
        "portName": service.protocol,
        "gateways": [*gateway_refs, MESH_GATEWAY],
        "timeout": traffic.timeout,
        "retries": retries_spec(traffic.retries),
        "trafficPolicy": {
            **traffic_policy_spec(traffic.policy, tcp_pool=False),
            "tls": dict(ISTIO_MUTUAL),
        },
    }
    if traffic.expose is not None:
        spec["hosts"] = list(traffic.expose.hosts)
    if traffic.cors is not None:
        spec["corsPolicy"] = cors_spec(traffic.cors)
    if service.metrics is not None:
        # Flagger's generated Services (`<name>`, `-primary`, `-canary`) carry only `port`
        # unless port discovery adds the Deployment's other named container ports, such as
        # the metrics port the app ServiceMonitor scrapes.
        spec["portDiscovery"] = True
    return spec


def canary_spec(
    service: MeshService, gateway_refs: Sequence[str], loadtester_namespace: str
) -> dict[str, Any]:
    """`flagger.app/v1beta1` Canary of a `delivery: progressive` service.

    It targets the Deployment named after the service and never sets replicas (Flagger
    and the HPA own them). Webhooks live inside `analysis`, where Flagger reads them.
    """
    progressive = service.traffic.progressive
    interval = flagger_interval(progressive.interval)
    url = loadtester_url(loadtester_namespace)
    analysis: dict[str, Any] = {
        "interval": interval,
        "threshold": progressive.threshold,
        "maxWeight": progressive.max_weight,
        "stepWeight": progressive.step_weight,
        "metrics": [
            {
                "name": "request-success-rate",
                "thresholdRange": {"min": progressive.success_rate_min},
                "interval": interval,
            },
            {
                "name": "request-duration",
                "thresholdRange": {"max": progressive.duration_max_ms},
                "interval": interval,
            },
        ],
        "webhooks": [
            {
                "name": "acceptance-test",
                "type": "pre-rollout",
                "url": url,
                "timeout": SMOKE_TEST_TIMEOUT,
                "metadata": {"type": "bash", "cmd": smoke_test_command(service)},
            },
            {
                "name": "load-test",
                "type": "rollout",
                "url": url,
                "timeout": LOAD_TEST_TIMEOUT,
                "metadata": {"cmd": load_test_command(service)},
            },
        ],
    }
    if progressive.mirror:
        analysis["mirror"] = True
    if progressive.session_affinity_cookie:
        analysis["sessionAffinity"] = {"cookieName": progressive.session_affinity_cookie}
    spec: dict[str, Any] = {
        "provider": "istio",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service.name},
        "service": canary_service_spec(service, gateway_refs),
        "analysis": analysis,
    }
    if progressive.autoscaler:
        spec["autoscalerRef"] = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "name": progressive.autoscaler,
        }
    return spec


def flagger_values(prometheus_url: str, cluster_name: str) -> dict[str, Any]:
    """Flagger's Helm values: Istio provider, the stack's Prometheus, chart-shipped CRDs."""
    return {
        "meshProvider": "istio",
        "metricsServer": prometheus_url,
        "clusterName": cluster_name,
        # The CRDs come from the chart's crds/ folder, which Chart v4 installs and the
        # program retains; the template copy would be a second owner of the same objects.
        "crd": {"create": False},
    }


def loadtester_values() -> dict[str, Any]:
    """The loadtester's Helm values: hardened container; it stays in the mesh (mTLS)."""
    # The chart's own hardened contexts (read-only root, non-root user), off by default.
    # `rbac.create` (with no rules) gives the loadtester its own service account,
    # `flagger-loadtester`, instead of the namespace's `default`: the identity that
    # MeshSecurity admits on canary pods only (docs/security.md).
    return {
        "securityContext": {"enabled": True},
        "podSecurityContext": {"enabled": True},
        "rbac": {"create": True},
    }
