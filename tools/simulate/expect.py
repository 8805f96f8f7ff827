"""The calls a stack's settings promise or forbid, and what each must do, from the settings
alone (never from the rendered objects the simulation judges).

For every service: every declared caller (`calls`) and, for each public host, the ingress
gateway, on each endpoint route's path and the service's default path, with and without the
canary header and with the chaos-drill header; the paths an ALLOW rule opens to the ingress
gateway (`fromIngressGateway`); Prometheus reached in plain text by the proxies that query it;
and every service a scoped namespace does not declare, which its Sidecar must not reach.

Pure: settings in, `Call`s out (JSON-ready via `to_json`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import re2  # type: ignore[import-untyped]  # google-re2: the engine Envoy uses

from components.naming import service_fqdn
from components.settings import MeshService, StackSettings
from components.settings_types import duration_ms
from components.traffic.policy import (
    ConnectionPoolSettings,
    OutlierDetectionSettings,
    TrafficPolicySettings,
)
from components.traffic.settings import EndpointRoute, RetrySettings

READ_METHODS: Final = frozenset({"GET", "HEAD"})
"""What a `readsOnly` mirror copies (docs/traffic.md); every other method is not mirrored."""
INGRESS: Final = "ingress-gateway"
"""Caller name of the ingress gateway proxy."""
HTTPS_PORT: Final = 443
HTTP_PORT: Final = 80
ANY_PUBLIC_HOST: Final = "*"
"""Host of a gateway call whose settings name no host (an ALLOW rule for the gateway)."""

MATCHING_CANDIDATES: Final = (
    "canary-user-1",
    "canary-1",
    "user-00",
    "user-01",
    "00",
    "canary",
    "x",
)
NON_MATCHING_CANDIDATES: Final = ("stable-user-1", "user-57", "", "zz-99")


@dataclass(frozen=True)
class Destination:
    """One weighted destination: a service host, its subset (None: all pods), the weight."""

    host: str
    subset: str | None
    weight: int


@dataclass(frozen=True)
class ClusterPolicy:
    """What the settings promise on a destination cluster, in Envoy's effective terms."""

    tls: str
    """ISTIO_MUTUAL or DISABLE."""
    outlier: dict[str, Any] | None
    """None: no outlier detection. Else `consecutive5xx`, `consecutiveLocalOrigin` (enforced
    counts, 0 = off), `intervalMs`, `baseEjectionMs`, `maxEjectionPercent`,
    `healthyPanicThreshold`, `successRateEnforced`."""
    pool: dict[str, Any]
    """`maxConnections`, `maxPendingRequests`, `maxRequests`, `maxRetries`,
    `maxRequestsPerConnection`, `connectTimeoutMs`: None = Istio's default."""


@dataclass(frozen=True)
class Expectation:
    """What one call must do."""

    reachable: bool
    destinations: tuple[Destination, ...] = ()
    mirror: dict[str, Any] | None = None
    timeout_ms: int | None = None
    retries: dict[str, Any] | None = None
    fault: dict[str, Any] | None = None
    redirect_https: bool = False
    cluster_local: bool | None = None
    clusters: dict[str, ClusterPolicy] = field(default_factory=dict)
    """Policy per destination (and mirror) cluster, keyed `host|subset`."""
    why: str = ""


@dataclass(frozen=True)
class Call:
    """One simulated request: who sends it, where, and what the settings promise."""

    caller: str
    """`<namespace>/<service>` of a sidecar, or INGRESS."""
    host: str
    port: int
    path: str
    headers: dict[str, str]
    service: str
    """`<namespace>/<name>` the call is about (the callee)."""
    expect: Expectation

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cluster_key(host: str, subset: str | None) -> str:
    return f"{host}|{subset or ''}"


def sample_value(regex: str, *, matching: bool) -> str:
    """A header value the RE2 regex (full match, as Envoy's safe_regex) matches, or not."""
    candidates = MATCHING_CANDIDATES if matching else NON_MATCHING_CANDIDATES
    for value in candidates:
        if (re2.fullmatch(regex, value) is not None) == matching:
            return value
    raise ValueError(f"no sample header value {'matches' if matching else 'misses'} {regex!r}")


def request_path(route: EndpointRoute) -> str:
    """A path the endpoint route must match: the exact path, or below the prefix."""
    if route.exact is not None:
        return route.exact
    return f"{(route.prefix or '/').rstrip('/')}/probe"


def settings_route(service: MeshService, path: str) -> EndpointRoute | None:
    """The endpoint route the settings send `path` to: exact paths first, then the longest
    matching prefix (docs/traffic.md, Routes); None for the service's default route. A
    progressive service has no endpoint routes (Flagger owns its routing)."""
    if service.delivery != "static":
        return None
    routes = service.traffic.routes
    for route in routes:
        if route.exact == path:
            return route
    prefixes = [r for r in routes if r.prefix is not None and path.startswith(r.prefix)]
    return max(prefixes, key=lambda r: len(r.prefix or ""), default=None)


def _retries(retries: RetrySettings) -> dict[str, Any] | None:
    if retries.attempts == 0:
        return None
    return {
        "attempts": retries.attempts,
        "perTryTimeoutMs": duration_ms(retries.per_try_timeout),
        "retryOn": ",".join(sorted(set(retries.retry_on.split(",")))),
    }


def _merged(base: Any, override: Any) -> Any:
    """Settings semantics of a subset policy section: the fields it sets win, the rest come
    from the service-wide section (docs/traffic.md, Resilience)."""
    if base is None or override is None:
        return override
    data = {name: getattr(base, name) for name in type(base).model_fields}
    data.update({name: getattr(override, name) for name in override.model_fields_set})
    return type(override).model_validate(data)


def subset_policy(service: MeshService, subset: str | None) -> TrafficPolicySettings:
    """The policy the settings give the cluster of `subset` (None: the whole service)."""
    policy = service.traffic.policy
    override = service.traffic.subset_policies.get(subset or "")
    if override is None:
        return policy
    fields = override.model_fields_set
    return TrafficPolicySettings.model_validate(
        {
            "load_balancer": override.load_balancer
            if "load_balancer" in fields
            else policy.load_balancer,
            "connection_pool": _merged(policy.connection_pool, override.connection_pool)
            if "connection_pool" in fields
            else policy.connection_pool,
            "outlier_detection": _merged(policy.outlier_detection, override.outlier_detection)
            if "outlier_detection" in fields
            else policy.outlier_detection,
        }
    )


def outlier_expectation(outlier: OutlierDetectionSettings | None) -> dict[str, Any] | None:
    if outlier is None:
        return None
    return {
        "consecutive5xx": outlier.consecutive_5xx_errors or 0,
        "consecutiveLocalOrigin": (
            outlier.consecutive_local_origin_failures or 0
            if outlier.split_external_local_origin_errors
            else 0
        ),
        "intervalMs": duration_ms(outlier.interval),
        "baseEjectionMs": duration_ms(outlier.base_ejection_time),
        "maxEjectionPercent": outlier.max_ejection_percent,
        "healthyPanicThreshold": outlier.min_health_percent or 0,
        "successRateEnforced": 0,
    }


def pool_expectation(pool: ConnectionPoolSettings | None, *, tcp: bool = True) -> dict[str, Any]:
    if pool is None:
        pool = ConnectionPoolSettings()
    return {
        "maxConnections": pool.max_connections if tcp else None,
        "connectTimeoutMs": duration_ms(pool.connect_timeout)
        if tcp and pool.connect_timeout
        else None,
        "maxPendingRequests": pool.http1_max_pending_requests,
        "maxRequests": pool.http2_max_requests,
        "maxRetries": pool.max_retries,
        "maxRequestsPerConnection": pool.max_requests_per_connection,
    }


def cluster_policy(service: MeshService, subset: str | None) -> ClusterPolicy:
    policy = subset_policy(service, subset)
    return ClusterPolicy(
        tls="ISTIO_MUTUAL",
        outlier=outlier_expectation(policy.outlier_detection),
        pool=pool_expectation(policy.connection_pool),
    )


@dataclass(frozen=True)
class _Variant:
    label: str
    headers: dict[str, str]
    canary: bool
    drill: bool


def _variants(service: MeshService) -> list[_Variant]:
    traffic = service.traffic
    variants = [_Variant("plain", {}, canary=False, drill=False)]
    canary = traffic.canary
    if service.delivery == "static" and canary is not None and canary.match is not None:
        variants[0] = _Variant(
            "plain",
            {canary.match.header: sample_value(canary.match.regex, matching=False)},
            canary=False,
            drill=False,
        )
        variants.append(
            _Variant(
                "canary",
                {canary.match.header: sample_value(canary.match.regex, matching=True)},
                canary=True,
                drill=False,
            )
        )
    if traffic.fault is not None and service.delivery == "static":
        drill = {traffic.fault.header: traffic.fault.value}
        variants += [
            _Variant(f"{v.label}+drill", {**v.headers, **drill}, canary=v.canary, drill=True)
            for v in list(variants)
        ]
    return variants


def _fault(service: MeshService) -> dict[str, Any] | None:
    fault = service.traffic.fault
    if fault is None:
        return None
    spec: dict[str, Any] = {}
    if fault.delay is not None:
        spec["delayMs"] = duration_ms(fault.delay.fixed_delay)
        spec["delayPercent"] = fault.delay.percentage
    if fault.abort is not None:
        spec["abortStatus"] = fault.abort.http_status
        spec["abortPercent"] = fault.abort.percentage
    return spec


def request_method(path: str) -> str:
    """The method of a simulated call: POST for the market-data API's paths (gRPC calls are
    POSTs), GET otherwise. The real Envoy sends it and the evaluator matches it (`:method`)."""
    return "POST" if path.startswith("/market") else "GET"


def _split(
    service: MeshService, variant: _Variant, route: EndpointRoute | None, method: str
) -> tuple[tuple[Destination, ...], dict[str, Any] | None]:
    """Destinations and mirror of the service's own traffic for one header variant, on an
    endpoint route (None: the default route), for a request of `method`."""
    host = service_fqdn(service.name, service.namespace)
    if service.delivery == "progressive":
        # Flagger's steady state: the primary takes everything (canary weight 0).
        primary = service_fqdn(f"{service.name}-primary", service.namespace)
        return (Destination(primary, None, 100),), None
    canary = service.traffic.canary
    if canary is None:
        return (Destination(host, None, 100),), None
    stable = canary.stable or service.versions[0].name
    if route is not None and not route.takes_canary:
        # A health or status route goes to the stable version only, unless it asks.
        return (Destination(host, stable, 100),), None
    if canary.match is not None and not variant.canary:
        return (Destination(host, stable, 100),), None
    destinations = tuple(Destination(host, w.subset, w.weight) for w in canary.weights if w.weight)
    mirror = None
    if canary.mirror is not None and (not canary.mirror.reads_only or method in READ_METHODS):
        mirror = {"host": host, "subset": canary.mirror.subset, "percent": canary.mirror.percentage}
    return destinations, mirror


def _calls_to(
    service: MeshService,
    services: Mapping[str, MeshService],
    *,
    caller: str,
    host: str,
    port: int,
    cluster_local: bool | None,
    extra_paths: Iterable[str] = (),
) -> list[Call]:
    """Every path and header variant of a call from `caller` to `service` at `host:port`:
    each endpoint route's, the default route's (`/`) and `extra_paths`."""
    traffic = service.traffic
    ref = f"{service.namespace}/{service.name}"
    paths: list[tuple[str, EndpointRoute | None]] = []
    if service.delivery == "static":
        paths = [(request_path(r), r) for r in traffic.routes]
    paths.append(("/", None))
    for extra in extra_paths:
        if extra not in {p for p, _ in paths}:
            paths.append((extra, settings_route(service, extra)))
    calls = []
    for path, route in paths:
        for variant in _variants(service):
            timeout = (route.timeout if route else None) or traffic.timeout
            retries = (route.retries if route else None) or traffic.retries
            if route is not None and route.backend is not None:
                backend = services[route.backend]
                backend_host = service_fqdn(backend.name, backend.namespace)
                if backend.delivery == "progressive":
                    destinations: tuple[Destination, ...] = (Destination(backend_host, None, 100),)
                else:
                    destinations = (Destination(backend_host, None, 100),)
                mirror = None
                policies = {cluster_key(backend_host, None): cluster_policy(backend, None)}
                why = f"route {route.name} -> {route.backend}"
            else:
                destinations, mirror = _split(service, variant, route, request_method(path))
                policies = {}
                for d in destinations:
                    if service.delivery == "progressive":
                        policies[cluster_key(d.host, None)] = ClusterPolicy(
                            tls="ISTIO_MUTUAL",
                            outlier=outlier_expectation(traffic.policy.outlier_detection),
                            # Flagger's Canary trafficPolicy carries no TCP pool.
                            pool=pool_expectation(traffic.policy.connection_pool, tcp=False),
                        )
                    else:
                        policies[cluster_key(d.host, d.subset)] = cluster_policy(service, d.subset)
                if mirror is not None:
                    policies[cluster_key(mirror["host"], mirror["subset"])] = cluster_policy(
                        service, mirror["subset"]
                    )
                why = f"route {route.name}" if route else "default route"
                if variant.canary:
                    why += ", canary header"
            calls.append(
                Call(
                    caller=caller,
                    host=host,
                    port=port,
                    path=path,
                    headers=dict(variant.headers),
                    service=ref,
                    expect=Expectation(
                        reachable=True,
                        destinations=destinations,
                        mirror=mirror,
                        timeout_ms=duration_ms(timeout),
                        retries=_retries(retries),
                        fault=_fault(service) if variant.drill else None,
                        cluster_local=cluster_local,
                        clusters=policies,
                        why=why,
                    ),
                )
            )
    return calls


def _gateway_paths(service: MeshService) -> list[str]:
    """Paths the service's ALLOW rules open to the ingress gateway (`fromIngressGateway`),
    as requests (`*` dropped)."""
    paths = []
    for rule in service.authorization:
        if getattr(rule, "from_ingress_gateway", False):
            paths += [p.rstrip("*") or "/" for p in (rule.paths or ("/",))]
    return paths


def expected_calls(settings: StackSettings) -> list[Call]:
    """Every call the settings promise or forbid, in settings order."""
    services = {f"{s.namespace}/{s.name}": s for s in settings.services}
    local_hosts = set(settings.cluster_local_hosts)
    calls: list[Call] = []
    for service in settings.services:
        host = service_fqdn(service.name, service.namespace)
        cluster_local = host in local_hosts
        for caller in settings.services:
            if f"{service.namespace}/{service.name}" in caller.calls:
                calls += _calls_to(
                    service,
                    services,
                    caller=f"{caller.namespace}/{caller.name}",
                    host=host,
                    port=service.port,
                    cluster_local=cluster_local,
                )
        expose = service.traffic.expose
        for public in expose.hosts if expose else ():
            calls += _calls_to(
                service,
                services,
                caller=INGRESS,
                host=public,
                port=HTTPS_PORT,
                cluster_local=None,
                extra_paths=_gateway_paths(service),
            )
            calls.append(
                Call(
                    caller=INGRESS,
                    host=public,
                    port=HTTP_PORT,
                    path="/",
                    headers={},
                    service=f"{service.namespace}/{service.name}",
                    expect=Expectation(
                        reachable=True, redirect_https=True, why="HTTP redirects to HTTPS"
                    ),
                )
            )
        for path in () if expose else _gateway_paths(service):
            # No public host: the rule's paths must still reach the service on some host.
            calls.append(
                Call(
                    caller=INGRESS,
                    host=ANY_PUBLIC_HOST,
                    port=HTTPS_PORT,
                    path=path,
                    headers={},
                    service=f"{service.namespace}/{service.name}",
                    expect=Expectation(
                        reachable=True,
                        destinations=_split(
                            service,
                            _Variant("plain", {}, False, False),
                            settings_route(service, path),
                            request_method(path),
                        )[0],
                        why="an ALLOW rule opens this path to the ingress gateway",
                    ),
                )
            )
    calls += _prometheus_calls(settings)
    calls += _forbidden_calls(settings)
    return calls


def prometheus_target(settings: StackSettings) -> tuple[str, str, int]:
    """(namespace, service, port) of `prometheusUrl` (an in-cluster Service host)."""
    url = urlsplit(settings.prometheus_url)
    labels = (url.hostname or "").split(".")
    return labels[1], labels[0], url.port or (443 if url.scheme == "https" else 80)


def _prometheus_calls(settings: StackSettings) -> list[Call]:
    """Flagger (when a service is progressive) and Kiali (hub) query Prometheus in plain
    text: it has no sidecar, so mTLS would fail."""
    namespace, name, port = prometheus_target(settings)
    host = service_fqdn(name, namespace)
    callers = []
    if any(s.delivery == "progressive" for s in settings.services):
        callers.append(f"{settings.traffic.flagger_namespace}/flagger")
    if settings.observability.role == "hub":
        callers.append(f"{settings.observability_namespace}/kiali")
    plain = ClusterPolicy(tls="DISABLE", outlier=None, pool=pool_expectation(None))
    return [
        Call(
            caller=caller,
            host=host,
            port=port,
            path="/api/v1/query",
            headers={},
            service=f"{namespace}/{name}",
            expect=Expectation(
                reachable=True,
                destinations=(Destination(host, None, 100),),
                clusters={cluster_key(host, None): plain},
                why="plain text to Prometheus",
            ),
        )
        for caller in callers
    ]


def scoped_namespaces(settings: StackSettings) -> list[str]:
    """Workload namespaces with a Sidecar (settings order, distinct)."""
    if not settings.traffic.sidecar_scoping:
        return []
    return list(dict.fromkeys(s.namespace for s in settings.services))


def _forbidden_calls(settings: StackSettings) -> list[Call]:
    """From each scoped namespace's first service, each service in another namespace that no
    service of the namespace declares in `calls`: outside its Sidecar, unreachable."""
    calls = []
    for namespace in scoped_namespaces(settings):
        members = [s for s in settings.services if s.namespace == namespace]
        declared = {ref for s in members for ref in s.calls}
        for target in settings.services:
            ref = f"{target.namespace}/{target.name}"
            if target.namespace == namespace or ref in declared:
                continue
            calls.append(
                Call(
                    caller=f"{members[0].namespace}/{members[0].name}",
                    host=service_fqdn(target.name, target.namespace),
                    port=target.port,
                    path="/",
                    headers={},
                    service=ref,
                    expect=Expectation(
                        reachable=False, why=f"{ref} is not declared in {namespace}'s calls"
                    ),
                )
            )
    return calls


def declared_triples(settings: StackSettings) -> int:
    """(caller, callee, route) triples the settings declare: each declared caller and each
    public host of a service, times its routes (endpoint routes plus the default)."""
    total = 0
    for service in settings.services:
        routes = 1 + (len(service.traffic.routes) if service.delivery == "static" else 0)
        callers = sum(f"{service.namespace}/{service.name}" in c.calls for c in settings.services)
        expose = service.traffic.expose
        callers += len(expose.hosts) if expose else 0
        total += callers * routes
    return total


def describe_destinations(destinations: Iterable[Destination]) -> str:
    parts = []
    for d in destinations:
        name = d.host.split(".")[0]
        parts.append(f"{name}{'/' + d.subset if d.subset else ''} {d.weight} %")
    return ", ".join(parts) or "nothing"
