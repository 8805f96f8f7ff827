"""Pure builders of the traffic objects' specs: VirtualService, DestinationRule, Gateway,
Sidecar (Flagger's Canary and Helm values are in `delivery_specs.py`).

Every function takes settings (and plain strings for values only known to components,
such as gateway references) and returns plain dicts; no Pulumi engine is involved, so each
is unit-tested directly. The components (`canary.py`, `gateway.py`, `sidecar.py`) only wrap
them in resources.

Route order in a VirtualService (Istio evaluates `http` routes top-down, first match wins):
exact endpoint routes, then prefix routes longest first, then the service's own traffic
(header-matched canary split, then the catch-all). A chaos drill puts, before every route, a
copy that additionally requires the chaos header and carries the fault, so drill requests
are routed exactly like normal ones and nothing else is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from components.naming import service_fqdn
from components.traffic.policy import (
    OutlierDetectionSettings,
    TrafficPolicySettings,
    merged_subset_policy,
)
from components.traffic.settings import (
    CanarySettings,
    CorsSettings,
    EndpointRoute,
    FaultSettings,
    GatewaySettings,
    RetrySettings,
    StringMatchSetting,
)

if TYPE_CHECKING:
    # Types only: the root model imports this package, so importing it at runtime would
    # be a cycle.
    from components.settings import MeshService

MESH_GATEWAY: Final = "mesh"
"""Istio's reserved gateway name for all sidecars in the mesh."""

HTTPS_PORT: Final = 443
HTTP_PORT: Final = 80


def service_host(service: MeshService) -> str:
    """The service's cluster-local FQDN, as VirtualServices and DestinationRules name it."""
    return service_fqdn(service.name, service.namespace)


def string_match(match: StringMatchSetting) -> dict[str, str]:
    """An Istio StringMatch."""
    return match.model_dump(exclude_none=True)


def retries_spec(retries: RetrySettings) -> dict[str, Any]:
    """`HTTPRetry`; with `attempts: 0` (retries off) nothing else.

    Istio's validation (`validateHTTPRetry`, pkg/config/validation) rejects a policy that
    sets `perTryTimeout` or `retryOn` when attempts is 0, so its validating webhook would
    refuse the whole VirtualService.
    """
    if retries.attempts == 0:
        return {"attempts": 0}
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


READ_METHODS_REGEX: Final = "GET|HEAD"
"""`:method` of the requests a `readsOnly` mirror copies (RE2, matched in full by Istio)."""


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
    split_routes = [{"name": name, "match": matches, **split}]
    if canary.mirror is not None:
        mirror = {
            "mirror": _destination(host, port, canary.mirror.subset),
            "mirrorPercentage": {"value": canary.mirror.percentage},
        }
        if canary.mirror.reads_only:
            # Reads first, with the mirror; every other method takes the same split without.
            reads = [{**m, "method": {"regex": READ_METHODS_REGEX}} for m in matches or [{}]]
            split_routes = [
                {"name": f"{name}-reads", "match": reads, **split, **mirror},
                *split_routes,
            ]
        else:
            split_routes = [{**split_routes[0], **mirror}]
    if canary.match is None:
        return split_routes
    header_match = {"regex": canary.match.regex}
    stable = {"destination": _destination(host, port, stable_subset(service, canary))}
    canary_routes = [
        {
            **route,
            "name": route["name"].replace(name, f"{name}-canary", 1),
            "match": _and_header(route["match"], canary.match.header, header_match),
        }
        for route in split_routes
    ]
    return [*canary_routes, {"name": name, "match": matches, "route": [stable]}]


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
            canary = traffic.canary
            if canary is not None and not endpoint.takes_canary:
                stable = _destination(service_host(service), service.port)
                stable["subset"] = stable_subset(service, canary)
                health: dict[str, Any] = {
                    "name": endpoint.name,
                    "match": matches,
                    "route": [{"destination": stable}],
                }
                routes.append((health, timeout, retries, cors))
                continue
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


def apex_destination_rule_spec(service: MeshService) -> dict[str, Any]:
    """DestinationRule of a progressive service's apex host `<name>`, for routes that send
    to it directly: the service-wide policy (with its outlier detection, which Istio needs
    before it applies locality failover) and mTLS; no subsets (Flagger routes by host)."""
    return {
        "host": service_host(service),
        "trafficPolicy": {**traffic_policy_spec(service.traffic.policy), "tls": dict(ISTIO_MUTUAL)},
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
    callees: Iterable[MeshService],
    *,
    istio_namespace: str,
    observability_namespace: str,
    extra_hosts: Iterable[str] = (),
) -> dict[str, Any]:
    """Sidecar of an injected namespace: egress to itself, the control plane, observability,
    the services its services call (`callees`) and `extra_hosts` (`<namespace>/<host>`
    entries of system namespaces, e.g. Prometheus for Flagger), so each proxy's config
    grows with its dependencies.
    """
    hosts = {"./*", f"{istio_namespace}/*", f"{observability_namespace}/*", *extra_hosts}
    for target in callees:
        if target.namespace != namespace and target.namespace not in {
            istio_namespace,
            observability_namespace,
        }:
            hosts.add(f"{target.namespace}/{service_host(target)}")
    return {
        "egress": [
            {"hosts": distinct_egress_hosts(namespace, hosts, root_namespace=istio_namespace)}
        ]
    }


def distinct_egress_hosts(
    namespace: str, hosts: Iterable[str], *, root_namespace: str
) -> list[str]:
    """`hosts` without the entries Istio counts twice, sorted.

    Istio's Sidecar validation reads `./<host>` as `<namespace>/<host>` and warns
    "duplicated egress host" for any other entry of a namespace that also has `<ns>/*`
    (pkg/config/validation, `istioctl validate` in make e2e found `./*` beside
    `observability/*` in the observability namespace). `<ns>/*` already covers them.
    Not in the root namespace: a Sidecar there is the mesh-wide default, where `./*` means
    each workload's own namespace, not the root's, so nothing is merged.
    """
    by_namespace: dict[str, set[str]] = {}
    for entry in hosts:
        ns, host = entry.split("/", 1)
        resolved = namespace if ns == "." and namespace != root_namespace else ns
        by_namespace.setdefault(resolved, set()).add(host)
    distinct: list[str] = []
    for ns, names in by_namespace.items():
        written = "." if ns == "." or (ns == namespace != root_namespace) else ns
        distinct += [f"{written}/*"] if "*" in names else [f"{written}/{n}" for n in names]
    return sorted(distinct)


def canary_host(service: MeshService) -> str:
    """Sidecar egress entry of the `<name>-canary` Service Flagger generates (the
    loadtester's smoke and load tests call it)."""
    fqdn = service_fqdn(f"{service.name}-canary", service.namespace)
    return f"{service.namespace}/{fqdn}"


def in_cluster_host(url: str) -> str | None:
    """Sidecar egress entry (`<namespace>/*`) of a URL's in-cluster Service host
    (`<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`); None for any other
    host, which is outside the registry and needs no entry."""
    host = urlsplit(url).hostname or ""
    labels = host.split(".")
    suffix = labels[2:]
    if len(labels) >= 2 and suffix in ([], ["svc"], ["svc", "cluster", "local"]):
        return f"{labels[1]}/*"
    return None
