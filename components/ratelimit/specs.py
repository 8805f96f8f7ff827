"""Pure builders of the rate limiter: EnvoyFilter specs, ratelimit config, Kubernetes objects.

Plain functions from settings to dicts, unit-tested without the Pulumi engine; the
`RateLimiter` component only wires them into resources.

EnvoyFilter patches use Envoy's xDS JSON (snake_case field names) with the direct typed
config (`@type: type.googleapis.com/...`), never `TypedStruct`: the tests parse every
typed config with Envoy's own protobuf definitions, so a field Envoy does not know fails
them. Every patch is scoped to the proxy minors the region runs (`match.proxy.proxyVersion`):
EnvoyFilters patch Envoy internals, so an Istio upgrade must re-test them before they apply
to a newer Envoy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from components.constants import workload_principal
from components.naming import service_fqdn
from components.ratelimit.settings import (
    LocalRateLimitSettings,
    QuotaScope,
    QuotaSettings,
    QuotaTier,
    ServiceRateLimit,
)
from components.versions import RATELIMIT_IMAGE, REDIS_IMAGE

LOCAL_FILTER: Final = "envoy.filters.http.local_ratelimit"
"""Name the local filter is inserted with, and the `typed_per_filter_config` key: since
Envoy 1.29 the per-route config is looked up by this name (envoyproxy/envoy#32074)."""

HCM: Final = "envoy.filters.network.http_connection_manager"
ROUTER: Final = "envoy.filters.http.router"
LOCAL_TYPE: Final = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)
ENVOY_FILTER_PRIORITY: Final = 10
"""`priority` of the EnvoyFilters with relative patches (INSERT_BEFORE the router, ...).

Istio applies EnvoyFilters by ascending priority, then by creation time. With the default
0, where these filters land among other priority-0 filters that patch the same chain
depends on which object was created first, which changes when one is recreated (`istioctl
analyze` IST0151, and IST0155 with `proxyVersion`, found by make e2e). 10 puts them after
every default-priority filter, in the same place whatever the creation order.
"""
LIMITED_HEADER: Final = "x-local-rate-limit"
"""Response header on requests the local limiter rejected, so clients and logs can tell a
local 429 from an upstream one."""

LOCAL_PATH_DESCRIPTOR: Final = "path_prefix"
CLIENT_DESCRIPTOR: Final = "client_id"
"""Descriptor key of the per-client quota: the client header's value."""
ANONYMOUS_DESCRIPTOR: Final = ("client_class", "anonymous")
"""Descriptor entry of requests without the client header."""
ADDRESS_DESCRIPTOR: Final = "remote_address"
"""Key of the entry Envoy's `remote_address` rate-limit action adds: the client address the
gateway's connection manager trusts (`xff_num_trusted_hops`), so anonymous requests are
counted per address (envoy: source/common/router/router_ratelimit.cc, RemoteAddressAction)."""
SCOPE_DESCRIPTOR: Final = "quota_scope"
"""Key of the first entry of a scoped quota's descriptors; its value is the scope's name."""

RATELIMIT_NAME: Final = "ratelimit"
REDIS_NAME: Final = "redis"
REDIS_SECRET_NAME: Final = "ratelimit-redis"
REDIS_SECRET_KEY: Final = "password"
CONFIG_MAP_NAME: Final = "ratelimit-config"
GRPC_PORT: Final = 8081
HTTP_PORT: Final = 8080
METRICS_PORT: Final = 9090
REDIS_PORT: Final = 6379
RUNTIME_ROOT: Final = "/data"
RUNTIME_SUBDIRECTORY: Final = "ratelimit"
CONFIG_FILE: Final = "config.yaml"

RATELIMIT_RESOURCES: Final = {
    "requests": {"cpu": "100m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "256Mi"},
}
REDIS_RESOURCES: Final = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
REDIS_MAX_MEMORY: Final = "400mb"
"""Below the container's 512Mi limit, so Redis evicts keys instead of being OOM-killed."""


def proxy_version_match(proxy_minors: Sequence[str]) -> dict[str, str]:
    """`match.proxy` of every patch: the Istio minors the region's proxies run (`^1\\.30\\.`,
    or `^(1\\.30|1\\.31)\\.` while two revisions of an upgrade run side by side).

    istiod applies a patch to a proxy only if this regular expression matches the proxy's
    `ISTIO_VERSION` metadata (`1.30.4`); a proxy of a minor not listed gets no patch, so a
    patch checked for one Envoy never reaches another by accident, and during a minor
    upgrade both revisions' proxies keep their limits. Istio 1.30.4 refuses expressions over
    1024 characters; this one is a few per minor.
    """
    minors = sorted(set(proxy_minors))
    if not minors:
        raise ValueError("proxy_version_match needs at least one Istio minor")
    escaped = "|".join(re.escape(minor) for minor in minors)
    return {"proxyVersion": f"^({escaped})\\." if len(minors) > 1 else f"^{escaped}\\."}


def _fractional_percent(runtime_key: str, percent: int) -> dict[str, Any]:
    return {
        "runtime_key": runtime_key,
        "default_value": {"numerator": percent, "denominator": "HUNDRED"},
    }


def _token_bucket(requests_per_second: int) -> dict[str, Any]:
    # Burst = one second of traffic; refilled every second.
    return {
        "max_tokens": requests_per_second,
        "tokens_per_fill": requests_per_second,
        "fill_interval": "1s",
    }


def local_ratelimit_config(
    local: LocalRateLimitSettings, service: ServiceRateLimit, *, grpc: bool = False
) -> dict[str, Any]:
    """The `LocalRateLimit` typed config of one service, with its per-path descriptors.

    `grpc`: the service speaks gRPC. Envoy then answers a limited call with HTTP 200 and a
    grpc-status mapped from 429, UNAVAILABLE by default, which every route's
    `retryOn: unavailable` retries, multiplying the load on a pod that is already over
    its limit. `rate_limited_as_resource_exhausted` makes it RESOURCE_EXHAUSTED, which
    gRPC clients and Istio's retry policies treat as final.
    """
    requests_per_second = service.requests_per_second or local.requests_per_second
    config: dict[str, Any] = {
        "@type": LOCAL_TYPE,
        "stat_prefix": "http_local_rate_limiter",
        "token_bucket": _token_bucket(requests_per_second),
        "filter_enabled": _fractional_percent("local_rate_limit_enabled", 100),
        "filter_enforced": _fractional_percent("local_rate_limit_enforced", local.enforced_percent),
        "response_headers_to_add": [
            {
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                "header": {"key": LIMITED_HEADER, "value": "true"},
            }
        ],
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
    }
    if grpc:
        config["rate_limited_as_resource_exhausted"] = True
    if service.routes:
        config["rate_limits"] = [
            {
                "actions": [
                    {
                        "header_value_match": {
                            "descriptor_key": LOCAL_PATH_DESCRIPTOR,
                            "descriptor_value": route.path_prefix,
                            "headers": [
                                {"name": ":path", "string_match": {"prefix": route.path_prefix}}
                            ],
                        }
                    }
                ]
            }
            for route in service.routes
        ]
        config["descriptors"] = [
            {
                "entries": [{"key": LOCAL_PATH_DESCRIPTOR, "value": route.path_prefix}],
                "token_bucket": _token_bucket(route.requests_per_second),
            }
            for route in service.routes
        ]
        # A path with its own bucket must not also drain the default one, or a higher
        # `/status` limit would be capped by the service default.
        config["always_consume_default_token_bucket"] = False
    return config


def local_ratelimit_spec(
    app: str,
    port: int,
    local: LocalRateLimitSettings,
    service: ServiceRateLimit,
    *,
    proxy_minors: Sequence[str],
    grpc: bool = False,
) -> dict[str, Any]:
    """EnvoyFilter spec: the local limiter in the inbound sidecar of pods `app: <app>`.

    The HTTP_FILTER patch inserts the filter before the router with the service default,
    on the service port's inbound filter chains only (`listener.portNumber`). Envoy keeps
    one token bucket per filter instance, and the inbound listener has one HTTP filter
    chain per port: unscoped, the patch would give the metrics port, every other port and
    the passthrough chains a bucket each, so a pod would accept a multiple of the limit.
    Under PERMISSIVE mTLS the port has a plaintext twin of its mTLS chain, with its own
    bucket (docs/security.md says what the limit is then). Per-path limits go in a
    VIRTUAL_HOST patch on the inbound vhost of the service port (`inbound|http|<port>`),
    as `typed_per_filter_config` keyed by the filter's name.
    """
    config = local_ratelimit_config(local, service, grpc=grpc)
    patches: list[dict[str, Any]] = [
        {
            "applyTo": "HTTP_FILTER",
            "match": {
                "context": "SIDECAR_INBOUND",
                "proxy": proxy_version_match(proxy_minors),
                "listener": {
                    # On the virtual inbound listener Istio matches `portNumber` against
                    # each filter chain's destination port (envoyfilter/listener_patch.go).
                    "portNumber": port,
                    "filterChain": {"filter": {"name": HCM, "subFilter": {"name": ROUTER}}},
                },
            },
            "patch": {
                "operation": "INSERT_BEFORE",
                "value": {
                    "name": LOCAL_FILTER,
                    "typed_config": local_ratelimit_config(
                        local,
                        ServiceRateLimit(requests_per_second=service.requests_per_second),
                        grpc=grpc,
                    ),
                },
            },
        }
    ]
    if service.routes:
        patches.append(
            {
                "applyTo": "VIRTUAL_HOST",
                "match": {
                    "context": "SIDECAR_INBOUND",
                    "proxy": proxy_version_match(proxy_minors),
                    "routeConfiguration": {"vhost": {"name": f"inbound|http|{port}"}},
                },
                "patch": {
                    "operation": "MERGE",
                    "value": {"typed_per_filter_config": {LOCAL_FILTER: config}},
                },
            }
        )
    return {
        "workloadSelector": {"labels": {"app": app}},
        "priority": ENVOY_FILTER_PRIORITY,
        "configPatches": patches,
    }


# --- per-client quota ----------------------------------------------------------------------


def _rate_limit(tier: QuotaTier) -> dict[str, Any]:
    if tier.unlimited:
        return {"unlimited": True}
    return {"unit": tier.unit, "requests_per_unit": tier.requests_per_unit}


def ratelimit_config(quota: QuotaSettings) -> dict[str, Any]:
    """The ratelimit service's config: one descriptor per known client, then the defaults.

    A `client_id` descriptor without a value gives every unknown client its own bucket
    of `unknownClientTier`. Requests without the header are `client_class=anonymous`
    with a nested `remote_address` entry without a value: each client address gets its
    own bucket of `anonymousTier` (the service keys a descriptor without a value on the
    request's value, ratelimit: src/config/config_impl.go GetLimit, src/limiter/cache_key.go),
    so one anonymous client cannot spend the others' quota.
    """
    descriptors: list[dict[str, Any]] = [
        {
            "key": CLIENT_DESCRIPTOR,
            "value": client.id,
            "rate_limit": _rate_limit(quota.tier(client.tier)),
        }
        for client in quota.clients
    ]
    descriptors.append(
        {"key": CLIENT_DESCRIPTOR, "rate_limit": _rate_limit(quota.tier(quota.unknown_client_tier))}
    )
    descriptors.append(_anonymous(quota.tier(quota.anonymous_tier)))
    descriptors += [scope_descriptor(quota, scope) for scope in quota.scopes]
    return {"domain": quota.domain, "descriptors": descriptors}


def _anonymous(tier: QuotaTier) -> dict[str, Any]:
    key, value = ANONYMOUS_DESCRIPTOR
    return {
        "key": key,
        "value": value,
        "descriptors": [{"key": ADDRESS_DESCRIPTOR, "rate_limit": _rate_limit(tier)}],
    }


def scope_descriptor(quota: QuotaSettings, scope: QuotaScope) -> dict[str, Any]:
    """`quota_scope=<name>` with the region-wide tree below it, limited by the scope's tiers.

    Envoy sends it only for the scope's requests (`gateway.scope_rate_limits`), on top of
    the region-wide descriptors, and the service answers over-limit if any is. A tier the
    scope does not list has no limit in it: its known clients get `unlimited` when the
    unknown-client tier is listed (else their id would fall back to that value-less entry,
    GetLimit), and the unknown or anonymous entry is left out when its tier is not listed.
    """
    unknown = quota.scope_tier(scope, quota.unknown_client_tier)
    nested: list[dict[str, Any]] = []
    for client in quota.clients:
        tier = quota.scope_tier(scope, client.tier)
        if tier is not None or unknown is not None:
            limit = _rate_limit(tier) if tier is not None else {"unlimited": True}
            nested.append({"key": CLIENT_DESCRIPTOR, "value": client.id, "rate_limit": limit})
    if unknown is not None:
        nested.append({"key": CLIENT_DESCRIPTOR, "rate_limit": _rate_limit(unknown)})
    anonymous = quota.scope_tier(scope, quota.anonymous_tier)
    if anonymous is not None:
        nested.append(_anonymous(anonymous))
    return {"key": SCOPE_DESCRIPTOR, "value": scope.name, "descriptors": nested}


# --- Kubernetes objects of the quota service -------------------------------------------------

_RESTRICTED_CONTAINER: Final = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


def _pod_security(user: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _labels(app: str) -> dict[str, str]:
    return {"app": app, "app.kubernetes.io/part-of": "meshstack-ratelimit"}


def ratelimit_deployment_spec(quota: QuotaSettings) -> dict[str, Any]:
    """Deployment spec of envoyproxy/ratelimit, Redis-backed, config from the ConfigMap."""
    namespace = quota.namespace
    config_dir = f"{RUNTIME_ROOT}/{RUNTIME_SUBDIRECTORY}/config"
    env = {
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "REDIS_SOCKET_TYPE": "tcp",
        "REDIS_TYPE": "SINGLE",
        "REDIS_URL": f"{service_fqdn(REDIS_NAME, namespace)}:{REDIS_PORT}",
        "RUNTIME_ROOT": RUNTIME_ROOT,
        "RUNTIME_SUBDIRECTORY": RUNTIME_SUBDIRECTORY,
        # The ConfigMap volume swaps a symlink on update: watch the subdirectory, skip
        # Kubernetes' `..data` dot-files (envoyproxy/ratelimit README).
        "RUNTIME_WATCH_ROOT": "false",
        "RUNTIME_IGNOREDOTFILES": "true",
        "USE_STATSD": "false",
        "USE_PROMETHEUS": "true",
        "PROMETHEUS_ADDR": f":{METRICS_PORT}",
        "PROMETHEUS_PATH": "/metrics",
    }
    return {
        "replicas": quota.replicas,
        "selector": {"matchLabels": {"app": RATELIMIT_NAME}},
        # Surge, never dip: a rollout keeps every ready pod until its replacement is ready.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": _labels(RATELIMIT_NAME),
                "annotations": {
                    # Merged into the sidecar's scrape endpoint (enablePrometheusMerge).
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(METRICS_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": {
                "serviceAccountName": RATELIMIT_NAME,
                "automountServiceAccountToken": False,
                "securityContext": _pod_security(65534),
                "topologySpreadConstraints": _spread(RATELIMIT_NAME),
                "containers": [
                    {
                        "name": RATELIMIT_NAME,
                        "image": RATELIMIT_IMAGE,
                        "command": ["/bin/ratelimit"],
                        "env": [
                            *({"name": k, "value": v} for k, v in env.items()),
                            {
                                "name": "REDIS_AUTH",
                                "valueFrom": {
                                    "secretKeyRef": {
                                        "name": REDIS_SECRET_NAME,
                                        "key": REDIS_SECRET_KEY,
                                    }
                                },
                            },
                        ],
                        "ports": [
                            {"name": "http", "containerPort": HTTP_PORT},
                            {"name": "grpc", "containerPort": GRPC_PORT},
                            {"name": "http-metrics", "containerPort": METRICS_PORT},
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/healthcheck", "port": HTTP_PORT},
                            "periodSeconds": 5,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/healthcheck", "port": HTTP_PORT},
                            "initialDelaySeconds": 10,
                            "periodSeconds": 10,
                        },
                        "resources": RATELIMIT_RESOURCES,
                        "securityContext": _RESTRICTED_CONTAINER,
                        "volumeMounts": [
                            {"name": "config", "mountPath": config_dir, "readOnly": True}
                        ],
                    }
                ],
                "volumes": [{"name": "config", "configMap": {"name": CONFIG_MAP_NAME}}],
            },
        },
    }


def _spread(app: str) -> list[dict[str, Any]]:
    """Spread the pods over zones and nodes, so one node drain or zone outage takes at most
    its share. `ScheduleAnyway`: a region with fewer nodes than replicas still runs them all."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": app}},
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def ratelimit_disruption_budget_spec() -> dict[str, Any]:
    """PodDisruptionBudget of the ratelimit pods: a drain evicts one at a time, waiting for
    its replacement to be ready (with `replicas: 1` it still lets the drain proceed)."""
    return {"maxUnavailable": 1, "selector": {"matchLabels": {"app": RATELIMIT_NAME}}}


def redis_deployment_spec() -> dict[str, Any]:
    """Deployment spec of Redis: a password-protected, non-persistent counter store.

    Counters live for at most one quota window, so Redis keeps no snapshot (`--save ""`)
    and runs read-only with an emptyDir for its working directory.
    """
    return {
        "replicas": 1,
        # Two Redis pods would split the counters; replace, never overlap.
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": {"app": REDIS_NAME}},
        "template": {
            "metadata": {"labels": _labels(REDIS_NAME)},
            "spec": {
                "serviceAccountName": REDIS_NAME,
                "automountServiceAccountToken": False,
                # uid 999 is the `redis` user of the official image.
                "securityContext": _pod_security(999),
                "containers": [
                    {
                        "name": REDIS_NAME,
                        "image": REDIS_IMAGE,
                        "args": [
                            "--requirepass",
                            "$(REDIS_PASSWORD)",
                            "--save",
                            "",
                            "--appendonly",
                            "no",
                            "--maxmemory",
                            REDIS_MAX_MEMORY,
                            "--maxmemory-policy",
                            "volatile-ttl",
                        ],
                        "env": [
                            {
                                "name": "REDIS_PASSWORD",
                                "valueFrom": {
                                    "secretKeyRef": {
                                        "name": REDIS_SECRET_NAME,
                                        "key": REDIS_SECRET_KEY,
                                    }
                                },
                            }
                        ],
                        "ports": [{"name": "tcp-redis", "containerPort": REDIS_PORT}],
                        "readinessProbe": {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 5},
                        "livenessProbe": {
                            "tcpSocket": {"port": REDIS_PORT},
                            "initialDelaySeconds": 10,
                            "periodSeconds": 10,
                        },
                        "resources": REDIS_RESOURCES,
                        "securityContext": _RESTRICTED_CONTAINER,
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }


def ratelimit_service_spec() -> dict[str, Any]:
    """Service of the ratelimit pods; the gRPC port is named `grpc-…` so Istio speaks h2."""
    return {
        "selector": {"app": RATELIMIT_NAME},
        "ports": [
            {"name": "http-ratelimit", "port": HTTP_PORT, "targetPort": HTTP_PORT},
            {"name": "grpc-ratelimit", "port": GRPC_PORT, "targetPort": GRPC_PORT},
            {"name": "http-metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
        ],
    }


def metrics_port_name() -> str:
    """Name of the ratelimit Service's Prometheus port (`METRICS_PORT`)."""
    ports = ratelimit_service_spec()["ports"]
    return str(next(p["name"] for p in ports if p["port"] == METRICS_PORT))


def redis_service_spec() -> dict[str, Any]:
    """Service of Redis; `tcp-` so Istio treats it as opaque TCP (still mTLS)."""
    return {
        "selector": {"app": REDIS_NAME},
        "ports": [{"name": "tcp-redis", "port": REDIS_PORT, "targetPort": REDIS_PORT}],
    }


def ratelimit_allow_specs(namespace: str, gateway_principal: str) -> dict[str, dict[str, Any]]:
    """AuthorizationPolicy specs that open exactly the quota service's two paths.

    The namespace is default-deny like every workload namespace (MeshSecurity): only the
    ingress gateway may call ratelimit's gRPC port, only ratelimit may reach Redis.
    """
    return {
        "allow-gateway-to-ratelimit": {
            "selector": {"matchLabels": {"app": RATELIMIT_NAME}},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"principals": [gateway_principal]}}],
                    "to": [{"operation": {"ports": [str(GRPC_PORT)]}}],
                }
            ],
        },
        "allow-ratelimit-to-redis": {
            "selector": {"matchLabels": {"app": REDIS_NAME}},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [
                        {"source": {"principals": [workload_principal(namespace, RATELIMIT_NAME)]}}
                    ],
                    "to": [{"operation": {"ports": [str(REDIS_PORT)]}}],
                }
            ],
        },
    }
