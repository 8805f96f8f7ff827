"""Pure spec builders of the traffic objects, without the engine; each object is also
validated against its upstream CRD (strict + CEL) and Helm values against chart defaults."""

from __future__ import annotations

from typing import Any

import pytest

from components.service_graph import ServiceGraph
from components.settings import MeshService, StackSettings
from components.traffic import delivery_specs, specs
from tests.conftest import make_settings
from tools.verify import validate_helm_values, validate_manifest


def stack(*services: dict[str, Any], **overrides: Any) -> StackSettings:
    return make_settings(services=list(services), **overrides)


def svc(name: str = "api", namespace: str = "shop", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "versions": [{"name": "stable"}, {"name": "canary"}],
        **fields,
    }


HEADER_CANARY = {
    "canary": {
        "match": {"header": "x-user-id", "regex": "^canary-.*"},
        "weights": [{"subset": "canary", "weight": 5}, {"subset": "stable", "weight": 95}],
    }
}


def valid(kind: str, spec: dict[str, Any], api: str = "networking.istio.io/v1") -> None:
    obj = {"apiVersion": api, "kind": kind, "metadata": {"name": "x", "namespace": "shop"}}
    assert validate_manifest({**obj, "spec": spec}) == []


def only(settings: StackSettings) -> MeshService:
    return settings.services[0]


# --- VirtualService -------------------------------------------------------------------------


def test_without_canary_everything_goes_to_the_host() -> None:
    service = only(stack(svc()))
    spec = specs.virtual_service_spec(service, {})
    assert spec["hosts"] == ["api.shop.svc.cluster.local"]
    assert spec["gateways"] == ["mesh"]
    [route] = spec["http"]
    assert "match" not in route
    assert route["route"] == [
        {"destination": {"host": "api.shop.svc.cluster.local", "port": {"number": 8080}}}
    ]
    assert route["timeout"] == "10s"
    assert route["retries"]["attempts"] == 2
    valid("VirtualService", spec)


def test_header_canary_splits_matching_requests_and_sends_the_rest_to_stable() -> None:
    service = only(stack(svc(traffic=HEADER_CANARY)))
    canary, rest = specs.http_routes(service, {})
    assert canary["match"] == [{"headers": {"x-user-id": {"regex": "^canary-.*"}}}]
    assert [(d["destination"]["subset"], d["weight"]) for d in canary["route"]] == [
        ("canary", 5),
        ("stable", 95),
    ]
    assert "match" not in rest
    assert [d["destination"]["subset"] for d in rest["route"]] == ["stable"]
    assert "weight" not in rest["route"][0]


def test_weighted_split_with_mirror_uses_current_fields() -> None:
    traffic = {
        "canary": {
            "weights": [{"subset": "stable", "weight": 80}, {"subset": "canary", "weight": 20}],
            "mirror": {"subset": "shadow", "percentage": 25, "sideEffectFree": True},
        }
    }
    versions = [{"name": "stable"}, {"name": "canary"}, {"name": "shadow"}]
    service = only(stack(svc(versions=versions, traffic=traffic)))
    [route] = specs.http_routes(service, {})
    assert [d["weight"] for d in route["route"]] == [80, 20]
    assert route["mirror"]["subset"] == "shadow"
    assert route["mirrorPercentage"] == {"value": 25.0}
    assert "mirrorPercent" not in route
    valid("VirtualService", specs.virtual_service_spec(service, {}))


def test_a_reads_only_mirror_copies_get_and_head_and_writes_take_the_split_alone() -> None:
    # Envoy copies every method it mirrors: the reads route (first match wins) carries the
    # mirror, and every other method takes the same split without it.
    traffic = {
        "canary": {
            "match": {"header": "x-user-id", "regex": "^canary-.*"},
            "weights": [{"subset": "stable", "weight": 80}, {"subset": "canary", "weight": 20}],
            "mirror": {"subset": "shadow", "readsOnly": True},
        }
    }
    versions = [{"name": "stable"}, {"name": "canary"}, {"name": "shadow"}]
    service = only(stack(svc(versions=versions, traffic=traffic)))
    reads, writes, rest = specs.http_routes(service, {})
    assert reads["name"] == "default-canary-reads"
    assert reads["match"] == [
        {"method": {"regex": "GET|HEAD"}, "headers": {"x-user-id": {"regex": "^canary-.*"}}}
    ]
    assert reads["mirror"]["subset"] == "shadow"
    assert writes["name"] == "default-canary" and "mirror" not in writes
    assert [d["weight"] for d in writes["route"]] == [d["weight"] for d in reads["route"]]
    assert "mirror" not in rest
    valid("VirtualService", specs.virtual_service_spec(service, {}))


def test_endpoint_routes_exact_first_longest_prefix_next_and_backends() -> None:
    settings = stack(
        svc(
            traffic={
                "routes": [
                    {"name": "api", "prefix": "/api/v1"},
                    {"name": "admin", "prefix": "/api/v1/admin", "backend": "shop/admin"},
                    {
                        "name": "status",
                        "exact": "/status",
                        "timeout": "2s",
                        "retries": {"attempts": 1, "perTryTimeout": "1s"},
                    },
                ]
            }
        ),
        svc("admin", port=9000),
    )
    routes = specs.http_routes(settings.services[0], ServiceGraph(settings.services).by_ref())
    assert [r["name"] for r in routes] == ["status", "admin", "api", "default"]
    assert routes[0]["match"] == [{"uri": {"exact": "/status"}}]
    assert routes[0]["timeout"] == "2s"
    assert routes[0]["retries"] == {
        "attempts": 1,
        "perTryTimeout": "1s",
        "retryOn": "connect-failure,refused-stream,reset-before-request,unavailable,cancelled",
    }
    assert routes[1]["route"][0]["destination"] == {
        "host": "admin.shop.svc.cluster.local",
        "port": {"number": 9000},
    }


def test_cors_uses_allow_origins_string_matches() -> None:
    traffic = {
        "cors": {
            "allowOrigins": [{"exact": "https://a.example.com"}, {"regex": "https://.*\\.b\\.com"}],
            "allowMethods": ["GET", "POST"],
            "allowHeaders": ["content-type"],
            "exposeHeaders": ["x-request-id"],
            "allowCredentials": True,
            "maxAge": "10m",
        }
    }
    spec = specs.virtual_service_spec(only(stack(svc(traffic=traffic))), {})
    cors = spec["http"][0]["corsPolicy"]
    assert cors == {
        "allowOrigins": [{"exact": "https://a.example.com"}, {"regex": "https://.*\\.b\\.com"}],
        "allowMethods": ["GET", "POST"],
        "allowHeaders": ["content-type"],
        "exposeHeaders": ["x-request-id"],
        "allowCredentials": True,
        "maxAge": "600s",
    }
    assert "allowOrigin" not in cors
    valid("VirtualService", spec)


def test_health_and_status_routes_go_to_stable_without_split_or_mirror_unless_asked() -> None:
    # A probe or status poll says nothing about the canary; mirrored, it only loads the shadow.
    traffic = {
        "canary": {
            "weights": [{"subset": "stable", "weight": 80}, {"subset": "canary", "weight": 20}],
            "mirror": {"subset": "shadow", "sideEffectFree": True},
        },
        "routes": [
            {"name": "health", "exact": "/health"},
            {"name": "ready", "prefix": "/ready/"},
            {"name": "status", "exact": "/status", "canary": True},
            {"name": "api", "prefix": "/api"},
        ],
    }
    versions = [{"name": "stable"}, {"name": "canary"}, {"name": "shadow"}]
    routes = {
        r["name"]: r
        for r in specs.http_routes(only(stack(svc(versions=versions, traffic=traffic))), {})
    }
    for name in ("health", "ready"):
        assert routes[name]["route"] == [
            {
                "destination": {
                    "host": "api.shop.svc.cluster.local",
                    "port": {"number": 8080},
                    "subset": "stable",
                }
            }
        ]
        assert "mirror" not in routes[name]
    for name in ("status", "api"):
        assert [d["weight"] for d in routes[name]["route"]] == [80, 20]
        assert routes[name]["mirror"]["subset"] == "shadow"


def test_chaos_drill_only_touches_requests_with_the_header() -> None:
    traffic = {
        **HEADER_CANARY,
        # `canary: true`: a status route takes the split only when it asks.
        "routes": [{"name": "status", "exact": "/status", "canary": True}],
        "fault": {
            "value": "drill",
            "delay": {"fixedDelay": "2s", "percentage": 50},
            "abort": {"httpStatus": 503, "percentage": 10},
        },
    }
    routes = specs.http_routes(only(stack(svc(traffic=traffic))), {})
    drills = routes[0::2]
    normal = routes[1::2]
    assert [r["name"] for r in normal] == ["status-canary", "status", "default-canary", "default"]
    for drill, plain in zip(drills, normal, strict=True):
        assert drill["name"] == f"{plain['name']}-chaos-drill"
        assert drill["fault"] == {
            "delay": {"fixedDelay": "2s", "percentage": {"value": 50.0}},
            "abort": {"httpStatus": 503, "percentage": {"value": 10.0}},
        }
        assert drill["route"] == plain["route"], "drill requests are routed like normal ones"
        for match in drill["match"]:
            assert match["headers"]["x-chaos-drill"] == {"exact": "drill"}
        assert "fault" not in plain
    assert drills[0]["match"] == [
        {
            "uri": {"exact": "/status"},
            "headers": {"x-user-id": {"regex": "^canary-.*"}, "x-chaos-drill": {"exact": "drill"}},
        }
    ]
    valid("VirtualService", specs.virtual_service_spec(only(stack(svc(traffic=traffic))), {}))


def test_no_fault_by_default() -> None:
    routes = specs.http_routes(only(stack(svc(traffic=HEADER_CANARY))), {})
    assert all("fault" not in r for r in routes)


def test_public_service_binds_gateway_and_mesh() -> None:
    settings = stack(
        svc(traffic={"expose": {"gateway": "public", "hosts": ["api.example.com"]}}),
        traffic={
            "gateways": [{"name": "public", "hosts": ["*.example.com"], "credentialName": "t"}]
        },
    )
    spec = specs.virtual_service_spec(only(settings), {}, ["istio-ingress/public"])
    assert spec["hosts"] == ["api.shop.svc.cluster.local", "api.example.com"]
    assert spec["gateways"] == ["istio-ingress/public", "mesh"]


# --- DestinationRule ------------------------------------------------------------------------


def test_destination_rule_subsets_policy_and_mtls() -> None:
    traffic = {
        "policy": {
            "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}},
            "connectionPool": {
                "maxConnections": 100,
                "connectTimeout": "2s",
                "http1MaxPendingRequests": 10,
                "http2MaxRequests": 50,
                "maxRequestsPerConnection": 5,
                "maxRetries": 3,
            },
            "outlierDetection": {
                "consecutive5xxErrors": 5,
                "consecutiveLocalOriginFailures": 3,
                "splitExternalLocalOriginErrors": True,
                "interval": "5s",
                "baseEjectionTime": "30s",
                "maxEjectionPercent": 30,
                "minHealthPercent": 50,
            },
        },
        "subsetPolicies": {"canary": {"connectionPool": {"maxConnections": 10}}},
    }
    spec = specs.destination_rule_spec(only(stack(svc(traffic=traffic))))
    assert spec["host"] == "api.shop.svc.cluster.local"
    policy = spec["trafficPolicy"]
    assert policy["tls"] == {"mode": "ISTIO_MUTUAL"}
    assert policy["loadBalancer"] == {"consistentHash": {"httpHeaderName": "x-user-id"}}
    assert policy["connectionPool"] == {
        "tcp": {"maxConnections": 100, "connectTimeout": "2s"},
        "http": {
            "http1MaxPendingRequests": 10,
            "http2MaxRequests": 50,
            "maxRequestsPerConnection": 5,
            "maxRetries": 3,
        },
    }
    assert policy["outlierDetection"] == {
        "consecutive5xxErrors": 5,
        "consecutiveLocalOriginFailures": 3,
        "splitExternalLocalOriginErrors": True,
        "interval": "5s",
        "baseEjectionTime": "30s",
        "maxEjectionPercent": 30,
        "minHealthPercent": 50,
    }
    assert "minRequestVolume" not in policy["outlierDetection"]
    assert "consecutiveErrors" not in policy["outlierDetection"]
    assert spec["subsets"] == [
        {"name": "stable", "labels": {"version": "stable"}},
        {
            "name": "canary",
            "labels": {"version": "canary"},
            # Istio replaces a whole section a subset sets, so the service-wide pool is
            # merged in (the subset's field wins); sections it leaves unset are inherited.
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": {"maxConnections": 10, "connectTimeout": "2s"},
                    "http": policy["connectionPool"]["http"],
                }
            },
        },
    ]
    valid("DestinationRule", spec)


def test_subset_outlier_detection_keeps_the_service_wide_fields_it_does_not_set() -> None:
    traffic = {
        "policy": {
            "outlierDetection": {
                "consecutive5xxErrors": 7,
                "consecutiveLocalOriginFailures": 3,
                "splitExternalLocalOriginErrors": True,
                "interval": "5s",
                "maxEjectionPercent": 30,
                "minHealthPercent": 50,
            },
        },
        "subsetPolicies": {"canary": {"outlierDetection": {"baseEjectionTime": "1m"}}},
    }
    spec = specs.destination_rule_spec(only(stack(svc(traffic=traffic))))
    canary = next(s for s in spec["subsets"] if s["name"] == "canary")
    assert canary["trafficPolicy"] == {
        "outlierDetection": {
            "consecutive5xxErrors": 7,
            "consecutiveLocalOriginFailures": 3,
            "splitExternalLocalOriginErrors": True,
            "interval": "5s",
            "baseEjectionTime": "60s",
            "maxEjectionPercent": 30,
            "minHealthPercent": 50,
        }
    }
    valid("DestinationRule", spec)


def test_cookie_hash_and_disabled_5xx_trigger() -> None:
    traffic = {
        "policy": {
            "loadBalancer": {"consistentHash": {"httpCookie": {"name": "s", "ttl": "30m"}}},
            "outlierDetection": {
                "consecutive5xxErrors": None,
                "consecutiveLocalOriginFailures": 5,
                "splitExternalLocalOriginErrors": True,
            },
        }
    }
    spec = specs.destination_rule_spec(only(stack(svc(traffic=traffic))))
    assert spec["trafficPolicy"]["loadBalancer"] == {
        "consistentHash": {"httpCookie": {"name": "s", "path": "/", "ttl": "1800s"}}
    }
    # Istio reads an unset consecutive5xxErrors as 5; 0 is what disables it.
    assert spec["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] == 0
    valid("DestinationRule", spec)


def test_outlier_detection_can_be_turned_off() -> None:
    traffic = {"policy": {"loadBalancer": {"simple": "ROUND_ROBIN"}, "outlierDetection": None}}
    policy = specs.destination_rule_spec(only(stack(svc(traffic=traffic))))["trafficPolicy"]
    assert policy == {"loadBalancer": {"simple": "ROUND_ROBIN"}, "tls": {"mode": "ISTIO_MUTUAL"}}


# --- Gateway and Sidecar --------------------------------------------------------------------


def test_gateway_https_simple_and_http_redirect() -> None:
    settings = make_settings(
        traffic={
            "gateways": [
                {"name": "public", "hosts": ["api.example.com"], "credentialName": "api-tls"}
            ]
        }
    )
    spec = specs.gateway_spec(settings.traffic.gateways[0], {"istio": "ingressgateway"})
    https, http = spec["servers"]
    assert spec["selector"] == {"istio": "ingressgateway"}
    assert https["port"] == {"number": 443, "name": "https", "protocol": "HTTPS"}
    assert https["tls"] == {
        "mode": "SIMPLE",
        "credentialName": "api-tls",
        "minProtocolVersion": "TLSV1_2",
    }
    assert http["port"] == {"number": 80, "name": "http", "protocol": "HTTP"}
    assert http["tls"] == {"httpsRedirect": True}
    assert https["hosts"] == http["hosts"] == ["api.example.com"]
    valid("Gateway", spec)


def test_sidecar_allows_own_namespace_control_plane_observability_and_calls() -> None:
    settings = stack(
        svc("web", "front", calls=["shop/api", "front/cache"]),
        svc("api", "shop"),
        svc("cache", "front"),
    )
    graph = ServiceGraph(settings.services)
    spec = specs.sidecar_spec(
        "front",
        [graph.service(callee) for callee in graph.namespace_callees("front")],
        istio_namespace="istio-system",
        observability_namespace="observability",
    )
    assert spec == {
        "egress": [
            {
                "hosts": [
                    "./*",
                    "istio-system/*",
                    "observability/*",
                    "shop/api.shop.svc.cluster.local",
                ]
            }
        ]
    }
    valid("Sidecar", spec)


def istio_duplicated_egress_hosts(namespace: str, hosts: list[str]) -> list[str]:
    """The entries Istio's Sidecar validation warns about ("duplicated egress host"),
    as pkg/config/validation/validation.go walks them: `.` is the Sidecar's namespace, and
    a namespace's `*` and its other entries are duplicates of each other in either order."""
    seen: dict[str, set[str]] = {}
    duplicated = []
    for entry in hosts:
        ns, svc = entry.split("/", 1)
        ns = namespace if ns == "." else ns
        names = seen.setdefault(ns, set())
        if (svc != "*" and (svc in names or "*" in names)) or (svc == "*" and names):
            duplicated.append(entry)
        names.add(svc)
    return duplicated


def test_the_observability_namespace_sidecar_lists_no_host_twice() -> None:
    """In the observability namespace `./*` is `observability/*`: listing both made
    `istioctl validate` warn "duplicated egress host" (make e2e)."""
    spec = specs.sidecar_spec(
        "observability",
        [],
        istio_namespace="istio-system",
        observability_namespace="observability",
        extra_hosts=[
            "flagger-system/flagger.flagger-system.svc.cluster.local",
            "flagger-system/*",
        ],
    )
    hosts = spec["egress"][0]["hosts"]
    assert istio_duplicated_egress_hosts("observability", hosts) == []
    assert hosts == ["./*", "flagger-system/*", "istio-system/*"]
    assert istio_duplicated_egress_hosts("observability", ["./*", "observability/*"]) == [
        "observability/*"
    ]


def test_in_the_root_namespace_own_namespace_and_root_stay_two_entries() -> None:
    """A Sidecar in the root namespace is the mesh-wide default: its `./*` is each
    workload's own namespace, so `istio-system/*` is a different entry and must stay."""
    spec = specs.sidecar_spec(
        "istio-system", [], istio_namespace="istio-system", observability_namespace="observability"
    )
    assert spec["egress"][0]["hosts"] == ["./*", "istio-system/*", "observability/*"]


# --- Flagger --------------------------------------------------------------------------------


PROGRESSIVE = {"name": "api", "namespace": "shop", "delivery": "progressive"}


def test_canary_defaults() -> None:
    service = only(stack(PROGRESSIVE))
    spec = delivery_specs.canary_spec(service, [], "flagger-system")
    assert spec["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert "autoscalerRef" not in spec
    analysis = spec["analysis"]
    assert (analysis["interval"], analysis["threshold"]) == ("1m", 5)
    assert (analysis["maxWeight"], analysis["stepWeight"]) == (50, 10)
    assert analysis["metrics"] == [
        {"name": "request-success-rate", "thresholdRange": {"min": 99.0}, "interval": "1m"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
    ]
    smoke, load = analysis["webhooks"]
    assert smoke["type"] == "pre-rollout"
    assert smoke["url"] == load["url"] == "http://flagger-loadtester.flagger-system/"
    assert smoke["metadata"] == {"type": "bash", "cmd": "curl -sf http://api-canary.shop:8080/"}
    assert load["type"] == "rollout"
    # hey's -q is per worker: 2 workers x 5 requests/s = the default 10 requests/s.
    assert load["metadata"]["cmd"] == "hey -z 1m -q 5 -c 2 http://api-canary.shop:8080/"
    assert "webhooks" not in spec, "webhooks belong inside analysis"
    assert "mirror" not in analysis and "sessionAffinity" not in analysis
    service_spec = spec["service"]
    assert service_spec["gateways"] == ["mesh"]
    assert service_spec["trafficPolicy"]["tls"] == {"mode": "ISTIO_MUTUAL"}
    assert "replicas" not in str(spec)
    valid("Canary", spec, "flagger.app/v1beta1")


def test_canary_options_grpc_and_no_tcp_pool() -> None:
    service = only(
        stack(
            {
                **PROGRESSIVE,
                "port": 9090,
                "protocol": "grpc",
                "traffic": {
                    "timeout": "20s",
                    "cors": {"allowOrigins": [{"exact": "https://a.example.com"}]},
                    "policy": {"connectionPool": {"maxConnections": 9, "http2MaxRequests": 99}},
                    "expose": {"gateway": "public", "hosts": ["api.example.com"]},
                    "progressive": {
                        "interval": "30s",
                        "mirror": True,
                        "mirrorSideEffectFree": True,
                        "sessionAffinityCookie": "canary",
                        "autoscaler": "api-hpa",
                        "successRateMin": 99.5,
                        "durationMaxMs": 250,
                    },
                },
            },
            traffic={
                "gateways": [
                    {"name": "public", "hosts": ["api.example.com"], "credentialName": "t"}
                ]
            },
        )
    )
    spec = delivery_specs.canary_spec(service, ["istio-ingress/public"], "fd")
    assert spec["autoscalerRef"] == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "name": "api-hpa",
    }
    analysis = spec["analysis"]
    assert analysis["interval"] == "30s"
    assert analysis["mirror"] is True
    assert analysis["sessionAffinity"] == {"cookieName": "canary"}
    smoke, load = analysis["webhooks"]
    assert smoke["metadata"]["cmd"] == "grpc_health_probe -addr=api-canary.shop:9090"
    # The image's health proto, so the load test works without gRPC server reflection.
    assert load["metadata"]["cmd"] == (
        "ghz -z 30s -q 10 -c 2 --insecure --proto=/tmp/ghz/health.proto "
        "--call grpc.health.v1.Health/Check api-canary.shop:9090"
    )
    service_spec = spec["service"]
    assert service_spec["portDiscovery"] is False, "stated: Flagger writes it (FLAGGER_WRITES)"
    assert service_spec["portName"] == "grpc"
    assert service_spec["hosts"] == ["api.example.com"]
    assert service_spec["gateways"] == ["istio-ingress/public", "mesh"]
    assert service_spec["timeout"] == "20s"
    assert service_spec["corsPolicy"]["allowOrigins"] == [{"exact": "https://a.example.com"}]
    # Flagger's CRD has no TCP connection pool: only the HTTP part is carried over.
    assert service_spec["trafficPolicy"]["connectionPool"] == {"http": {"http2MaxRequests": 99}}
    valid("Canary", spec, "flagger.app/v1beta1")


@pytest.mark.parametrize(("duration", "text"), [("1m", "1m"), ("90s", "90s"), ("2m", "2m")])
def test_flagger_interval_format(duration: str, text: str) -> None:
    assert delivery_specs.flagger_interval(duration) == text


def test_flagger_and_loadtester_values_exist_in_their_charts() -> None:
    values = delivery_specs.flagger_values("http://prometheus.monitoring:9090", "us-east-1")
    assert values["meshProvider"] == "istio"
    assert values["metricsServer"] == "http://prometheus.monitoring:9090"
    assert values["crd"] == {"create": False}
    assert validate_helm_values("flagger", values) == []
    assert validate_helm_values("flagger-loadtester", delivery_specs.loadtester_values()) == []


def test_canary_discovers_ports_when_app_metrics_are_scraped() -> None:
    # Flagger's generated Services only carry `service.port` without port discovery, so
    # the ServiceMonitor would find no metrics port on them.
    service = only(stack(svc(delivery="progressive", metrics={"port": "http-prom"})))
    spec = delivery_specs.canary_spec(service, [], "fd")
    assert spec["service"]["portDiscovery"] is True
    valid("Canary", spec, api="flagger.app/v1beta1")


def test_the_canary_states_what_flagger_writes_back_so_updates_do_not_conflict() -> None:
    # Flagger stores the Canary whole when it adds its finalizer; its Go types write
    # `muteAlert` and `portDiscovery` even when false, so the API server makes Flagger a
    # manager of the atomic `webhooks` list. Applying a list without `muteAlert: false` then
    # conflicts (server-side apply), and every later `pulumi up` of the Canary fails; with
    # the values Flagger writes, both managers agree (found by `make progressive`).
    service = only(stack(svc(delivery="progressive")))
    spec = delivery_specs.canary_spec(service, [], "fd")
    assert [w["muteAlert"] for w in spec["analysis"]["webhooks"]] == [False, False]
    assert spec["service"]["portDiscovery"] is False
    valid("Canary", spec, api="flagger.app/v1beta1")


def test_a_route_with_retries_off_sends_only_attempts_0_which_istio_accepts() -> None:
    """Istio's validateHTTPRetry rejects `perTryTimeout`/`retryOn` beside `attempts: 0`
    ("http retry policy configured when attempts are set to 0"), so the validating webhook
    would refuse the whole VirtualService; `istioctl validate` in `make e2e` found it."""
    settings = stack(
        svc(
            traffic={
                "routes": [
                    {
                        "name": "health",
                        "exact": "/health",
                        "timeout": "1s",
                        "retries": {"attempts": 0, "perTryTimeout": "1s"},
                    }
                ]
            }
        )
    )
    routes = specs.http_routes(settings.services[0], ServiceGraph(settings.services).by_ref())
    assert routes[0]["retries"] == {"attempts": 0}
