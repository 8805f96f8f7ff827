"""What a proxy does with one request, read from the listeners, route configurations and
clusters istiod generated for it (configgen's protojson), following Envoy's documented
matching:

- listener: a gateway's HTTPS filter chain by SNI (`filterChainMatch.serverNames`, exact then
  `*.` suffix), its HTTP connection manager's RDS route configuration; a sidecar's outbound
  HTTP route configuration is named after the port;
- virtual host by domain: exact, then the longest `*.suffix`, then the longest `prefix*`,
  then `*` (Envoy's `VirtualHost.domains`);
- the first route of the virtual host whose match holds: `prefix` / `path` / `safeRegex` /
  `pathSeparatedPrefix` (case sensitive unless `caseSensitive: false`), every header
  matcher (`stringMatch` exact/prefix/suffix/contains/safeRegex, `presentMatch`,
  `invertMatch`; a missing header fails unless `treatMissingHeaderAsEmpty`);
- its action: `cluster` or `weightedClusters`, `timeout`, `retryPolicy`,
  `requestMirrorPolicies`, `redirect`, and the fault filter's `typedPerFilterConfig`;
- each destination cluster's transport socket (TLS), outlier detection and circuit breakers,
  with Envoy's defaults for unset fields (outlier_detection.proto, circuit_breaker.proto).

Pure: dicts in, a `Behaviour` out. `tools.simulate.envoy` checks the same requests against a
real Envoy where one is available.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import re2  # type: ignore[import-untyped]  # google-re2: the engine Envoy uses

from tools.simulate.matchers import header_matches

FAULT_FILTER: Final = "envoy.filters.http.fault"
HCM: Final = "envoy.filters.network.http_connection_manager"
UINT32_MAX: Final = 4294967295
PASSTHROUGH: Final = frozenset(
    {"PassthroughCluster", "BlackHoleCluster", "InboundPassthroughCluster"}
)

# Envoy's defaults for unset outlier detection fields (outlier_detection.proto).
OUTLIER_DEFAULTS: Final = {
    "consecutive5xx": 5,
    "enforcingConsecutive5xx": 100,
    "consecutiveLocalOriginFailure": 5,
    "enforcingConsecutiveLocalOriginFailure": 100,
    "interval": "10s",
    "baseEjectionTime": "30s",
    "maxEjectionPercent": 10,
    "enforcingSuccessRate": 100,
}
# Envoy's default healthy panic threshold (cluster.proto CommonLbConfig), percent.
PANIC_DEFAULT: Final = 50.0


def duration_ms(value: str | None) -> int | None:
    """A protojson Duration (`"3s"`, `"0.500s"`) in milliseconds."""
    if value is None:
        return None
    return round(float(value.rstrip("s")) * 1000)


@dataclass
class Behaviour:
    """What the proxy does with one request, as istiod configured it."""

    route_config: str | None = None
    virtual_host: str | None = None
    route: str | None = None
    destinations: list[dict[str, Any]] = field(default_factory=list)
    """`cluster`, `host`, `subset`, `weight` (percent of the total)."""
    mirror: dict[str, Any] | None = None
    timeout_ms: int | None = None
    retries: dict[str, Any] | None = None
    fault: dict[str, Any] | None = None
    redirect_https: bool = False
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per destination and mirror cluster: `tls`, `outlier`, `pool`."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_cluster_name(name: str) -> tuple[str, int, str | None] | None:
    """`outbound|8080|canary|host` -> (host, 8080, "canary"); None for other clusters."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != "outbound":
        return None
    return parts[3], int(parts[1]), parts[2] or None


# --- virtual hosts and routes ----------------------------------------------------------------


def _domain_rank(domain: str, host: str) -> tuple[int, int] | None:
    """Envoy's domain precedence: exact (0), suffix wildcard (1), prefix wildcard (2), `*` (3);
    longer wildcards first."""
    host = host.lower()
    domain = domain.lower()
    if domain == "*":
        return (3, 0)
    if domain.startswith("*"):
        return (
            (1, -len(domain)) if host.endswith(domain[1:]) and len(host) > len(domain) - 1 else None
        )
    if domain.endswith("*"):
        return (2, -len(domain)) if host.startswith(domain[:-1]) else None
    return (0, 0) if host == domain else None


def select_virtual_host(route_config: Mapping[str, Any], host: str) -> Mapping[str, Any] | None:
    best: tuple[tuple[int, int], Mapping[str, Any]] | None = None
    for vhost in route_config.get("virtualHosts", []):
        for domain in vhost.get("domains", []):
            rank = _domain_rank(domain, host)
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, vhost)
    return best[1] if best else None


def route_matches(match: Mapping[str, Any], path: str, headers: Mapping[str, str]) -> bool:
    """Envoy's RouteMatch on the path (query string stripped) and headers."""
    path_only = path.split("?", 1)[0]
    sensitive = match.get("caseSensitive", True)
    subject = path_only if sensitive else path_only.lower()

    def norm(s: str) -> str:
        return s if sensitive else s.lower()

    if "prefix" in match:
        ok = subject.startswith(norm(match["prefix"]))
    elif "path" in match:
        ok = subject == norm(match["path"])
    elif "safeRegex" in match:
        ok = re2.fullmatch(match["safeRegex"]["regex"], path_only) is not None
    elif "pathSeparatedPrefix" in match:
        prefix = norm(match["pathSeparatedPrefix"])
        ok = subject == prefix or subject.startswith(prefix + "/")
    else:
        raise ValueError(f"unsupported path matcher {sorted(match)}")
    return ok and all(header_matches(h, headers) for h in match.get("headers", []))


def _percent(fraction: Mapping[str, Any] | None) -> float:
    """A FractionalPercent (or RuntimeFractionalPercent's default) as a percentage."""
    if fraction is None:
        return 100.0
    numerator = float(fraction.get("numerator", 0))
    denominator = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}[
        fraction.get("denominator", "HUNDRED")
    ]
    return round(numerator * 100 / denominator, 4)


def _fault(route: Mapping[str, Any], vhost: Mapping[str, Any]) -> dict[str, Any] | None:
    config = (route.get("typedPerFilterConfig") or {}).get(FAULT_FILTER) or (
        vhost.get("typedPerFilterConfig") or {}
    ).get(FAULT_FILTER)
    if not config:
        return None
    fault: dict[str, Any] = {}
    delay = config.get("delay")
    if delay:
        fault["delayMs"] = duration_ms(delay.get("fixedDelay"))
        fault["delayPercent"] = _percent(delay.get("percentage"))
    abort = config.get("abort")
    if abort:
        fault["abortStatus"] = abort.get("httpStatus")
        fault["abortPercent"] = _percent(abort.get("percentage"))
    return fault


def retry_conditions(retry_on: str, status_codes: Sequence[int] = ()) -> str:
    """Retry conditions as one sorted list: Envoy's `retriable-status-codes` with its
    `retriable_status_codes` reads as the codes themselves (Istio turns `503` in `retryOn`
    into that pair)."""
    conditions = {c for c in retry_on.split(",") if c}
    if "retriable-status-codes" in conditions and status_codes:
        conditions.discard("retriable-status-codes")
        conditions |= {str(code) for code in status_codes}
    return ",".join(sorted(conditions))


def _retries(action: Mapping[str, Any]) -> dict[str, Any] | None:
    policy = action.get("retryPolicy")
    if not policy:
        return None
    attempts = int(policy.get("numRetries", 1))
    if attempts == 0:
        return None
    return {
        "attempts": attempts,
        "perTryTimeoutMs": duration_ms(policy.get("perTryTimeout")),
        "retryOn": retry_conditions(
            policy.get("retryOn", ""), [int(c) for c in policy.get("retriableStatusCodes", [])]
        ),
    }


# --- clusters ----------------------------------------------------------------------------------


def cluster_tls(cluster: Mapping[str, Any]) -> str:
    """ISTIO_MUTUAL when every transport socket the cluster may use is Istio's mTLS (TLS
    with the SDS `default` certificate and the ROOTCA validation context), DISABLE when it has
    none; SIMPLE for other TLS."""
    sockets = []
    if "transportSocket" in cluster:
        sockets.append(cluster["transportSocket"])
    sockets += [m.get("transportSocket", {}) for m in cluster.get("transportSocketMatches", [])]
    kinds = set()
    for socket in sockets:
        if socket.get("name") != "envoy.transport_sockets.tls":
            kinds.add("DISABLE")
            continue
        context = socket.get("typedConfig", {}).get("commonTlsContext", {})
        certs = [c.get("name") for c in context.get("tlsCertificateSdsSecretConfigs", [])]
        kinds.add("ISTIO_MUTUAL" if "default" in certs else "SIMPLE")
    if not kinds:
        return "DISABLE"
    return "+".join(sorted(kinds))


def cluster_outlier(cluster: Mapping[str, Any]) -> dict[str, Any] | None:
    """Outlier detection as Envoy enforces it: counts whose enforcement is 0 read as 0 (off),
    unset fields at Envoy's defaults."""
    outlier = cluster.get("outlierDetection")
    if outlier is None:
        return None

    def get(key: str) -> Any:
        return outlier.get(key, OUTLIER_DEFAULTS[key])

    split = bool(outlier.get("splitExternalLocalOriginErrors"))
    panic = (cluster.get("commonLbConfig") or {}).get("healthyPanicThreshold")
    return {
        "consecutive5xx": int(get("consecutive5xx")) if int(get("enforcingConsecutive5xx")) else 0,
        "consecutiveLocalOrigin": int(get("consecutiveLocalOriginFailure"))
        if split and int(get("enforcingConsecutiveLocalOriginFailure"))
        else 0,
        "intervalMs": duration_ms(get("interval")),
        "baseEjectionMs": duration_ms(get("baseEjectionTime")),
        "maxEjectionPercent": int(get("maxEjectionPercent")),
        "healthyPanicThreshold": round(float((panic or {}).get("value", 0)))
        if panic is not None
        else PANIC_DEFAULT,
        "successRateEnforced": int(get("enforcingSuccessRate")),
    }


def cluster_pool(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """Circuit breaker thresholds (default priority) and connection settings; Istio's
    "unlimited" (2^32-1) and unset read as None."""
    thresholds = ((cluster.get("circuitBreakers") or {}).get("thresholds") or [{}])[0]

    def limit(key: str) -> int | None:
        value = thresholds.get(key)
        return None if value is None or int(value) >= UINT32_MAX else int(value)

    options = (cluster.get("typedExtensionProtocolOptions") or {}).get(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {}
    )
    per_connection = (options.get("commonHttpProtocolOptions") or {}).get(
        "maxRequestsPerConnection"
    )
    return {
        "maxConnections": limit("maxConnections"),
        "connectTimeoutMs": duration_ms(cluster.get("connectTimeout")),
        "maxPendingRequests": limit("maxPendingRequests"),
        "maxRequests": limit("maxRequests"),
        "maxRetries": limit("maxRetries"),
        "maxRequestsPerConnection": int(per_connection) if per_connection else None,
    }


def cluster_summary(cluster: Mapping[str, Any] | None) -> dict[str, Any]:
    if cluster is None:
        return {"missing": True}
    return {
        "tls": cluster_tls(cluster),
        "outlier": cluster_outlier(cluster),
        "pool": cluster_pool(cluster),
    }


# --- listeners ----------------------------------------------------------------------------------


def _sni_rank(names: Sequence[str], host: str) -> tuple[int, int] | None:
    if not names:
        return (2, 0)
    ranks = [r for n in names if (r := _domain_rank(n, host)) is not None and r[0] < 3]
    return min(ranks) if ranks else None


def gateway_route_config(
    listeners: Sequence[Mapping[str, Any]], port: int, host: str
) -> str | None:
    """The RDS route configuration a gateway listener on `port` uses for `host` (by SNI)."""
    best: tuple[tuple[int, int], str] | None = None
    for listener in listeners:
        address = (listener.get("address") or {}).get("socketAddress") or {}
        if int(address.get("portValue", 0)) != port:
            continue
        for chain in listener.get("filterChains", []):
            rank = _sni_rank((chain.get("filterChainMatch") or {}).get("serverNames", []), host)
            if rank is None:
                continue
            for filt in chain.get("filters", []):
                if filt.get("name") != HCM:
                    continue
                rds = (filt.get("typedConfig") or {}).get("rds") or {}
                name = rds.get("routeConfigName")
                if name and (best is None or rank < best[0]):
                    best = (rank, name)
    return best[1] if best else None


# --- one request ----------------------------------------------------------------------------------


def evaluate(
    proxy: Mapping[str, Any],
    *,
    route_config: str | None,
    host: str,
    path: str,
    headers: Mapping[str, str],
    tls: bool = False,
) -> Behaviour:
    """What `proxy` (configgen's listeners/routes/clusters for it) does with the request
    (`tls`: it arrived over TLS, which a virtual host's `requireTls` checks)."""
    behaviour = Behaviour(route_config=route_config)
    configs = {r["name"]: r for r in (proxy.get("routes") or [])}
    clusters = {c["name"]: c for c in (proxy.get("clusters") or [])}
    config = configs.get(route_config or "")
    if config is None:
        behaviour.notes.append(f"no route configuration {route_config!r}")
        return behaviour
    vhost = select_virtual_host(config, host)
    if vhost is None:
        behaviour.notes.append(f"no virtual host for {host}")
        return behaviour
    behaviour.virtual_host = vhost.get("name")
    if vhost.get("requireTls") in {"ALL", "EXTERNAL_ONLY"} and not tls:
        # Envoy answers 301 to https for every request of the virtual host.
        behaviour.redirect_https = True
        return behaviour
    lowered = {k.lower(): v for k, v in headers.items()}
    route = next(
        (r for r in vhost.get("routes", []) if route_matches(r.get("match", {}), path, lowered)),
        None,
    )
    if route is None:
        behaviour.notes.append("no route matches (404)")
        return behaviour
    behaviour.route = route.get("name")
    if "redirect" in route:
        behaviour.redirect_https = bool(route["redirect"].get("httpsRedirect"))
        return behaviour
    action = route.get("route")
    if action is None:
        behaviour.notes.append(f"route action {sorted(set(route) - {'match', 'name'})}")
        return behaviour
    if "cluster" in action:
        weighted = [(action["cluster"], 1)]
    else:
        weighted = [
            (c["name"], int(c.get("weight", 0)))
            for c in (action.get("weightedClusters") or {}).get("clusters", [])
        ]
    total = sum(w for _, w in weighted) or 1
    for name, weight in weighted:
        parsed = parse_cluster_name(name)
        behaviour.destinations.append(
            {
                "cluster": name,
                "host": parsed[0] if parsed else name,
                "subset": parsed[2] if parsed else None,
                "weight": round(weight * 100 / total, 4),
            }
        )
        behaviour.clusters[name] = cluster_summary(clusters.get(name))
    mirrors = action.get("requestMirrorPolicies") or []
    if mirrors:
        mirror = mirrors[0]
        parsed = parse_cluster_name(mirror["cluster"])
        behaviour.mirror = {
            "cluster": mirror["cluster"],
            "host": parsed[0] if parsed else mirror["cluster"],
            "subset": parsed[2] if parsed else None,
            "percent": _percent((mirror.get("runtimeFraction") or {}).get("defaultValue")),
        }
        behaviour.clusters[mirror["cluster"]] = cluster_summary(clusters.get(mirror["cluster"]))
    behaviour.timeout_ms = duration_ms(action.get("timeout", "15s"))
    behaviour.retries = _retries(action)
    behaviour.fault = _fault(route, vhost)
    return behaviour


def mesh_clusters(proxy: Mapping[str, Any], host: str) -> list[str]:
    """The proxy's outbound clusters of `host` (a Sidecar keeps those of hosts its
    VirtualServices route to even when the host itself is outside its egress)."""
    return [
        c["name"]
        for c in (proxy.get("clusters") or [])
        if (parsed := parse_cluster_name(c["name"])) is not None and parsed[0] == host
    ]
