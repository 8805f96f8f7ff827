"""Pure builders of the traffic objects' specs and of Flagger's Helm values.

Every function takes settings (and plain strings for values only known to components,
such as gateway references) and returns plain dicts; no Pulumi engine is involved, so each
is unit-tested directly. The components in `traffic_*.py` only wrap them in resources.

Route order in a VirtualService (Istio evaluates `http` routes top-down, first match wins):
exact endpoint routes, then prefix routes longest first, then the service's own traffic
(header-matched canary split, then the catch-all). A chaos drill puts, before every route, a
copy that additionally requires the chaos header and carries the fault, so drill requests
are routed exactly like normal ones and nothing else is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from components.naming import service_fqdn
from components.settings import MeshService
from components.traffic_settings import (
    CanarySettings,
    CorsSettings,
    EndpointRoute,
    FaultSettings,
    GatewaySettings,
    OutlierDetectionSettings,
    RetrySettings,
    StringMatchSetting,
    TrafficPolicySettings,
    duration_ms,
    merged_subset_policy,
)

MESH_GATEWAY: Final = "mesh"
"""Istio's reserved gateway name for all sidecars in the mesh."""

HTTPS_PORT: Final = 443
HTTP_PORT: Final = 80

LOADTESTER_RESOURCES: Final = {
    "requests": {"cpu": "10m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
"""The chart's requests (10m/64Mi) plus limits: it has none, so a load test (`hey`, `ghz`)
could take a node's CPU, and the policy pack rejects a container without limits. `resources`
replaces the chart's block whole, hence the requests restated."""

LOADTESTER_RELEASE: Final = "flagger-loadtester"
"""Helm release of the loadtester; the chart names its Service after it."""
LOADTESTER_PORT: Final = 80
"""The loadtester chart's Service port (`service.port`)."""

GHZ_HEALTH_PROTO: Final = "/tmp/ghz/health.proto"
"""`grpc.health.v1` proto in the loadtester image, so ghz needs no server reflection."""

SMOKE_TEST_TIMEOUT: Final = "30s"
LOAD_TEST_TIMEOUT: Final = "5s"
"""The loadtester starts `hey` in the background and answers at once; rollout webhooks'
timeouts must stay well inside the analysis interval."""


def service_host(service: MeshService) -> str:
    """The service's cluster-local FQDN, as VirtualServices and DestinationRules name it."""
    return service_fqdn(service.name, service.namespace)


def string_match(match: StringMatchSetting) -> dict[str, str]:
    """An Istio StringMatch."""
    return match.model_dump(exclude_none=True)


def retries_spec(retries: RetrySettings) -> dict[str, Any]:
    """`HTTPRetry`."""
    return {
        "attempts": retries.attempts,
        "perTryTimeout": retries.per_try_timeout,
        "retryOn": retries.retry_on,
    }


def cors_spec(cors: CorsSettings) -> dict[str, Any]:
    """`CorsPolicy` with the current `allowOrigins` (never the deprecated `allowOrigin`)."""
    spec: dict[str, Any] = {
        "allowOrigins": [string_match(o) for o in cors.allow_origins],
        "allowMethods": list(cors.allow_methods),
        "allowCredentials": cors.allow_credentials,
        "maxAge": cors.max_age,
    }
    if cors.allow_headers:
        spec["allowHeaders"] = list(cors.allow_headers)
    if cors.expose_headers:
        spec["exposeHeaders"] = list(cors.expose_headers)
    return spec


def fault_spec(fault: FaultSettings) -> dict[str, Any]:
    """`HTTPFaultInjection` with `percentage` (never the deprecated integer `percent`)."""
    spec: dict[str, Any] = {}
    if fault.delay is not None:
        spec["delay"] = {
            "fixedDelay": fault.delay.fixed_delay,
            "percentage": {"value": fault.delay.percentage},
        }
    if fault.abort is not None:
        spec["abort"] = {
            "httpStatus": fault.abort.http_status,
            "percentage": {"value": fault.abort.percentage},
        }
    return spec


def _destination(host: str, port: int, subset: str | None = None) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": host, "port": {"number": port}}
    if subset:
        destination["subset"] = subset
    return destination


def _and_header(
    matches: list[dict[str, Any]], header: str, match: dict[str, str]
) -> list[dict[str, Any]]:
    """Every match, additionally requiring the header (conditions in one match AND)."""
    if not matches:
        return [{"headers": {header: match}}]
    return [{**m, "headers": {**m.get("headers", {}), header: match}} for m in matches]


def stable_subset(service: MeshService, canary: CanarySettings) -> str:
    """The subset that serves requests outside a header canary."""
    return canary.stable or service.versions[0].name


def _own_routes(
    service: MeshService, name: str, matches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Routes that send `matches` to this service, applying its canary split and mirror."""
    host, port = service_host(service), service.port
    canary = service.traffic.canary
    if canary is None:
        return [
            {"name": name, "match": matches, "route": [{"destination": _destination(host, port)}]}
        ]
    split: dict[str, Any] = {
        "route": [
            {"destination": _destination(host, port, w.subset), "weight": w.weight}
            for w in canary.weights
        ]
    }
    if canary.mirror is not None:
        split["mirror"] = _destination(host, port, canary.mirror.subset)
        split["mirrorPercentage"] = {"value": canary.mirror.percentage}
    if canary.match is None:
        return [{"name": name, "match": matches, **split}]
    header_match = {"regex": canary.match.regex}
    stable = {"destination": _destination(host, port, stable_subset(service, canary))}
    return [
        {
            "name": f"{name}-canary",
            "match": _and_header(matches, canary.match.header, header_match),
            **split,
        },
        {"name": name, "match": matches, "route": [stable]},
    ]


def _route_order(route: EndpointRoute) -> tuple[int, int]:
    # Exact paths first, then longer prefixes before shorter ones: first match wins.
    if route.exact is not None:
        return (0, 0)
    return (1, -len(route.prefix or ""))


def http_routes(service: MeshService, backends: Mapping[str, MeshService]) -> list[dict[str, Any]]:
    """The `http` routes of a service's VirtualService, in evaluation order.

    `backends` maps `<namespace>/<name>` to the services endpoint routes may target.
    """
    traffic = service.traffic
    routes: list[tuple[dict[str, Any], str, RetrySettings, CorsSettings | None]] = []
    for endpoint in sorted(traffic.routes, key=_route_order):
        uri = (
            {"exact": endpoint.exact} if endpoint.exact is not None else {"prefix": endpoint.prefix}
        )
        matches = [{"uri": uri}]
        timeout = endpoint.timeout or traffic.timeout
        retries = endpoint.retries or traffic.retries
        cors = endpoint.cors or traffic.cors
        if endpoint.backend is None:
            for route in _own_routes(service, endpoint.name, matches):
                routes.append((route, timeout, retries, cors))
        else:
            backend = backends[endpoint.backend]
            destination = _destination(service_host(backend), backend.port)
            route = {
                "name": endpoint.name,
                "match": matches,
                "route": [{"destination": destination}],
            }
            routes.append((route, timeout, retries, cors))
    for route in _own_routes(service, "default", []):
        routes.append((route, traffic.timeout, traffic.retries, traffic.cors))

    rendered: list[dict[str, Any]] = []
    for route, timeout, retries, cors in routes:
        route["timeout"] = timeout
        route["retries"] = retries_spec(retries)
        if cors is not None:
            route["corsPolicy"] = cors_spec(cors)
        if not route["match"]:
            del route["match"]
        if traffic.fault is not None:
            drill = {
                **route,
                "name": f"{route['name']}-chaos-drill",
                "match": _and_header(
                    route.get("match", []), traffic.fault.header, {"exact": traffic.fault.value}
                ),
                "fault": fault_spec(traffic.fault),
            }
            rendered.append(drill)
        rendered.append(route)
    return rendered


def virtual_service_spec(
    service: MeshService,
    backends: Mapping[str, MeshService],
    gateway_refs: Sequence[str] = (),
) -> dict[str, Any]:
    """VirtualService of a static-delivery service.

    `gateway_refs` are `<namespace>/<name>` of the ingress Gateways it is exposed on; the
    mesh gateway is always bound so in-mesh callers get the same routes.
    """
    expose = service.traffic.expose
    hosts = [service_host(service), *(expose.hosts if expose else ())]
    return {
        "hosts": hosts,
        "gateways": [*gateway_refs, MESH_GATEWAY],
        "http": http_routes(service, backends),
    }


def _outlier_spec(outlier: OutlierDetectionSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        # Istio defaults consecutive5xxErrors to 5 when unset; 0 really disables it.
        "consecutive5xxErrors": outlier.consecutive_5xx_errors or 0,
        "interval": outlier.interval,
        "baseEjectionTime": outlier.base_ejection_time,
        "maxEjectionPercent": outlier.max_ejection_percent,
        "splitExternalLocalOriginErrors": outlier.split_external_local_origin_errors,
    }
    if outlier.consecutive_local_origin_failures is not None:
        spec["consecutiveLocalOriginFailures"] = outlier.consecutive_local_origin_failures
    if outlier.min_health_percent is not None:
        spec["minHealthPercent"] = outlier.min_health_percent
    return spec


def traffic_policy_spec(
    policy: TrafficPolicySettings, *, only_set: bool = False, tcp_pool: bool = True
) -> dict[str, Any]:
    """A DestinationRule `trafficPolicy`.

    `only_set`: emit only the sections the settings set (subset policies: Istio keeps the
    service-wide section a subset leaves unset, but replaces a section it sets as a whole,
    so subset policies are first merged with `merged_subset_policy`). `tcp_pool=False`
    drops the TCP pool,
    which Flagger's `Canary.spec.service.trafficPolicy` cannot carry.
    """
    fields = policy.model_fields_set if only_set else set(type(policy).model_fields)
    spec: dict[str, Any] = {}
    lb = policy.load_balancer
    if "load_balancer" in fields:
        if lb.consistent_hash is None:
            spec["loadBalancer"] = {"simple": lb.simple}
        elif lb.consistent_hash.http_cookie is not None:
            cookie = lb.consistent_hash.http_cookie
            spec["loadBalancer"] = {
                "consistentHash": {
                    "httpCookie": {"name": cookie.name, "path": cookie.path, "ttl": cookie.ttl}
                }
            }
        else:
            spec["loadBalancer"] = {
                "consistentHash": {"httpHeaderName": lb.consistent_hash.http_header_name}
            }
    pool = policy.connection_pool
    if "connection_pool" in fields and pool is not None:
        tcp = {
            "maxConnections": pool.max_connections,
            "connectTimeout": pool.connect_timeout,
        }
        http = {
            "http1MaxPendingRequests": pool.http1_max_pending_requests,
            "http2MaxRequests": pool.http2_max_requests,
            "maxRequestsPerConnection": pool.max_requests_per_connection,
            "maxRetries": pool.max_retries,
        }
        pool_spec = {
            key: {k: v for k, v in part.items() if v is not None}
            for key, part in (("tcp", tcp if tcp_pool else {}), ("http", http))
        }
        pool_spec = {k: v for k, v in pool_spec.items() if v}
        if pool_spec:
            spec["connectionPool"] = pool_spec
    if "outlier_detection" in fields and policy.outlier_detection is not None:
        spec["outlierDetection"] = _outlier_spec(policy.outlier_detection)
    return spec


ISTIO_MUTUAL: Final = {"mode": "ISTIO_MUTUAL"}
"""Client-side mTLS with Istio's certificates, stated explicitly: under STRICT
PeerAuthentication a policy that sets any other TLS mode would break every call."""


def destination_rule_spec(service: MeshService) -> dict[str, Any]:
    """DestinationRule of a static-delivery service: policy, mTLS and one subset per version."""
    traffic = service.traffic
    subsets = []
    for version in service.versions:
        subset: dict[str, Any] = {"name": version.name, "labels": dict(version.labels)}
        override = traffic.subset_policies.get(version.name)
        if override is not None:
            merged = merged_subset_policy(traffic.policy, override)
            subset["trafficPolicy"] = traffic_policy_spec(merged, only_set=True)
        subsets.append(subset)
    return {
        "host": service_host(service),
        "trafficPolicy": {**traffic_policy_spec(traffic.policy), "tls": dict(ISTIO_MUTUAL)},
        "subsets": subsets,
    }


def gateway_spec(gateway: GatewaySettings, selector: Mapping[str, str]) -> dict[str, Any]:
    """Ingress Gateway: HTTPS with the TLS Secret, and HTTP that only redirects to HTTPS."""
    hosts = list(gateway.hosts)
    return {
        "selector": dict(selector),
        "servers": [
            {
                "port": {"number": HTTPS_PORT, "name": "https", "protocol": "HTTPS"},
                "hosts": hosts,
                "tls": {
                    "mode": "SIMPLE",
                    "credentialName": gateway.credential_name,
                    "minProtocolVersion": gateway.min_protocol_version,
                },
            },
            {
                "port": {"number": HTTP_PORT, "name": "http", "protocol": "HTTP"},
                "hosts": hosts,
                "tls": {"httpsRedirect": True},
            },
        ],
    }


def sidecar_spec(
    namespace: str,
    calls: Iterable[str],
    services: Mapping[str, MeshService],
    *,
    istio_namespace: str,
    observability_namespace: str,
) -> dict[str, Any]:
    """Sidecar of a workload namespace: egress to itself, the control plane, observability
    and the services its services call, so each proxy's config grows with its dependencies.

    `calls` are `<namespace>/<name>` references, resolved through `services`.
    """
    hosts = {"./*", f"{istio_namespace}/*", f"{observability_namespace}/*"}
    for ref in calls:
        target = services[ref]
        if target.namespace != namespace and target.namespace not in {
            istio_namespace,
            observability_namespace,
        }:
            hosts.add(f"{target.namespace}/{service_host(target)}")
    return {"egress": [{"hosts": sorted(hosts)}]}


# --- Flagger ------------------------------------------------------------------------------


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
    return {
        "securityContext": {"enabled": True},
        "podSecurityContext": {"enabled": True},
        "resources": LOADTESTER_RESOURCES,
    }


def ejection_seconds(ms: int) -> float:
    """Milliseconds as seconds, for outputs."""
    return float(Decimal(ms) / 1000)
