"""Pure builders of progressive delivery: Flagger's Canary spec and the Helm values of
Flagger and its loadtester.

A `Canary` carries in `spec.service` everything the VirtualService and DestinationRules
Flagger generates must have (routes' timeout, retries, CORS, the traffic policy), built
with the same route and policy builders as a static service's (`specs.py`). Plain dicts, no
Pulumi engine: `delivery.py` wraps them in resources.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from components.settings_types import duration_ms
from components.traffic import handoff
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

LOADTESTER_RESOURCES: Final = {
    "requests": {"cpu": "10m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
"""The chart's requests (10m/64Mi) plus limits: it has none, so a load test (`hey`, `ghz`)
could take a node's CPU, and the policy pack rejects a container without limits. `resources`
replaces the chart's block whole, hence the requests restated."""

LOADTESTER_RELEASE: Final = "flagger-loadtester"
"""Helm release of the loadtester; the chart names its Service after it."""

GHZ_HEALTH_PROTO: Final = "/tmp/ghz/health.proto"
"""`grpc.health.v1` proto in the loadtester image, so ghz needs no server reflection."""

SMOKE_TEST_TIMEOUT: Final = "30s"
LOAD_TEST_TIMEOUT: Final = "5s"
"""The loadtester starts `hey` in the background and answers at once; rollout webhooks'
timeouts must stay well inside the analysis interval."""


LOAD_TEST_WORKERS: Final = 2
"""Concurrent workers of the HTTP load test (`hey -c`)."""

GRPC_SERVER_FAILURES: Final = {
    "UNKNOWN": 2,
    "DEADLINE_EXCEEDED": 4,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
}
"""gRPC status codes that mean the server failed (not the caller: NOT_FOUND,
INVALID_ARGUMENT, PERMISSION_DENIED … are client errors). Istio reports them in the
`grpc_response_status` label of `istio_requests_total`; the HTTP status of such a call is 200."""

GRPC_SUCCESS_RATE: Final = "grpc-success-rate"
"""MetricTemplate (in Flagger's namespace) that judges gRPC canaries."""


def _selector(*extra: str) -> str:
    # The labels Flagger's built-in Istio query uses: server-side reports of the target's
    # workload (`{{ target }}` is a regex over the primary and canary workload names).
    labels = [
        'reporter="destination"',
        'destination_workload_namespace="{{ namespace }}"',
        'destination_workload=~"{{ target }}"',
        *extra,
    ]
    return "istio_requests_total{" + ", ".join(labels) + "}[{{ interval }}]"


def grpc_success_rate_query() -> str:
    """Percent of the canary's requests that did not fail server-side, in Flagger's template
    syntax: Flagger's built-in `request-success-rate` with the gRPC server-failure codes
    also counted as failures (a failing gRPC call is HTTP 200, which the built-in counts as
    a success). HTTP 5xx without a gRPC status (e.g. Envoy's own 503) still counts."""
    failures = "|".join(str(code) for code in GRPC_SERVER_FAILURES.values())
    ok = _selector('response_code!~"5.*"', f'grpc_response_status!~"{failures}"')
    return f"sum(rate({ok})) / sum(rate({_selector()})) * 100"


def metric_template_spec(prometheus_url: str) -> dict[str, Any]:
    """`flagger.app/v1beta1` MetricTemplate `grpc-success-rate`."""
    return {
        "provider": {"type": "prometheus", "address": prometheus_url},
        "query": grpc_success_rate_query(),
    }


CANARY_ANNOTATIONS: Final = {"pulumi.com/deletionPropagationPolicy": "background"}
"""How Pulumi deletes a Canary. Its default, foreground, has the garbage collector delete the
Canary's dependents (`-primary`, Flagger's Services and routes) while Flagger's finalizer is
still scaling the target Deployment back up (`revertOnDeletion`): the service would have no
pods in between. In the background the dependents go only once the finalizer has reverted
everything and the Canary is gone; Pulumi still waits for the Canary itself."""


WAIT_FOR_ANNOTATION: Final = "pulumi.com/waitFor"


def canary_annotations(*, handing_over: bool) -> dict[str, str]:
    """A Canary's annotations; in the update that switches its service from static delivery,
    Pulumi also waits until Flagger has initialized it, which it does only after taking the
    service's VirtualService over (`components.traffic.handoff`)."""
    annotations = dict(CANARY_ANNOTATIONS)
    if handing_over:
        annotations[WAIT_FOR_ANNOTATION] = handoff.INITIALIZED_CONDITION
    return annotations


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
        # ghz's `-q` is the total rate over all workers. The loadtester image ships the
        # health proto: without it ghz needs server reflection, which services need not enable.
        return (
            f"ghz -z {duration} -q {qps} -c 2 --insecure --proto={GHZ_HEALTH_PROTO} "
            f"--call grpc.health.v1.Health/Check {_canary_address(service)}"
        )
    workers, per_worker = hey_rate(qps)
    return f"hey -z {duration} -q {per_worker} -c {workers} http://{_canary_address(service)}/"


def hey_rate(qps: int) -> tuple[int, int]:
    """`(c, q)` for hey so that the total rate `c x q` is exactly `qps`: hey's `-q` limits
    each of its `-c` workers, so `-q qps -c 2` would send twice the load. Two workers when
    the rate splits evenly, one otherwise."""
    workers = LOAD_TEST_WORKERS if qps % LOAD_TEST_WORKERS == 0 else 1
    return workers, math.ceil(qps / workers)


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
    # Flagger's generated Services (`<name>`, `-primary`, `-canary`) carry only `port`
    # unless port discovery adds the Deployment's other named container ports, such as the
    # metrics port the app ServiceMonitor scrapes. Stated either way: see FLAGGER_WRITES.
    spec["portDiscovery"] = service.metrics is not None
    return spec


FLAGGER_WRITES: Final = ("spec.service.portDiscovery", "spec.analysis.webhooks[].muteAlert")
"""Fields Flagger writes into the Canary when it stores it whole (`Update`, when it adds its
finalizer: `pkg/controller/finalizer.go`): its Go types serialize them without `omitempty`
(`pkg/apis/flagger/v1beta1/canary.go`), so the API server records Flagger as their manager
from then on. `webhooks` is an atomic list, so Flagger owns all of it: an apply of a list
without `muteAlert: false` is a server-side apply conflict, and every later `pulumi up` that
touches the Canary failed (found by `make progressive`). The program states both with the
values Flagger writes, which makes the two managers agree instead of conflict."""


def canary_spec(
    service: MeshService, gateway_refs: Sequence[str], loadtester_namespace: str
) -> dict[str, Any]:
    """`flagger.app/v1beta1` Canary of a `delivery: progressive` service.

    It targets the Deployment named after the service and never sets replicas (Flagger
    and the HPA own them). Webhooks live inside `analysis`, where Flagger reads them.
    """
    progressive = service.traffic.progressive
    interval = flagger_interval(progressive.interval)
    window = flagger_interval(progressive.metrics_interval)
    url = loadtester_url(loadtester_namespace)
    success: dict[str, Any] = {"name": "request-success-rate"}
    if service.protocol == "grpc":
        # Flagger's built-in counts `response_code!~"5.*"`, and a failed gRPC call is HTTP
        # 200: the template also counts the server-side gRPC failure codes.
        success = {
            "name": GRPC_SUCCESS_RATE,
            "templateRef": {"name": GRPC_SUCCESS_RATE, "namespace": loadtester_namespace},
        }
    analysis: dict[str, Any] = {
        "interval": interval,
        "threshold": progressive.threshold,
        "maxWeight": progressive.max_weight,
        "stepWeight": progressive.step_weight,
        "metrics": [
            {
                **success,
                "thresholdRange": {"min": progressive.success_rate_min},
                "interval": window,
            },
            {
                "name": "request-duration",
                "thresholdRange": {"max": progressive.duration_max_ms},
                "interval": window,
            },
        ],
        "webhooks": [
            {
                "name": "acceptance-test",
                "type": "pre-rollout",
                "muteAlert": False,
                "url": url,
                "timeout": SMOKE_TEST_TIMEOUT,
                "metadata": {"type": "bash", "cmd": smoke_test_command(service)},
            },
            {
                "name": "load-test",
                "type": "rollout",
                "muteAlert": False,
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
        # Deleting the Canary (`pulumi destroy`, or retiring progressive delivery) then
        # scales the target Deployment back up and points the apex Service and the routes
        # at it before Kubernetes garbage-collects `-primary`; without it the target stays
        # at 0 replicas and the service has no pods.
        "revertOnDeletion": True,
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
    # MeshSecurity admits on canary pods only (docs/security.md). `rules: None` renders the
    # Role's rules as null: the chart's default `[]` is stored by the API server as absent,
    # which left a perpetual `+ rules: []` diff on every preview after the first up.
    return {
        "securityContext": {"enabled": True},
        "podSecurityContext": {"enabled": True},
        "rbac": {"create": True, "rules": None},
        "resources": LOADTESTER_RESOURCES,
    }
