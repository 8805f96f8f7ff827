"""The pure parts of `make simulate` (tools/simulate): the calls the settings promise, reading
istiod's generated configuration the way Envoy matches requests, the comparison, the
registry fed to istiod's config generator, and the deliberate break of the self-check.

The config generator itself (Go) and the real Envoy run in the tier (`make simulate`), which
breaks a VirtualService in a copy of each render and fails unless the break is caught."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest

from tests.conftest import stack_settings
from tools.simulate import compare, envoy, evaluate, expect, registry
from tools.simulate.run import sabotaged
from tools.stacks import stack_names

FINGERPRINT = "fingerprint-api.identity.svc.cluster.local"
REVENUE = "revenue-engine.revenue.svc.cluster.local"


def _call(calls: list[expect.Call], **match: Any) -> expect.Call:
    found = [c for c in calls if all(getattr(c, k) == v for k, v in match.items())]
    assert len(found) >= 1, match
    return found[0]


# --- expectations from the settings --------------------------------------------------------------


def test_header_canary_through_the_gateway_is_the_settings_split() -> None:
    calls = expect.expected_calls(stack_settings("fixture-hub"))
    canary = _call(
        calls,
        caller=expect.INGRESS,
        host="api.us.example.com",
        path="/identify/probe",
        headers={"x-user-id": "canary-user-1"},
    )
    assert canary.expect.destinations == (
        expect.Destination(FINGERPRINT, "canary", 5),
        expect.Destination(FINGERPRINT, "stable", 95),
    )
    # A status route takes no canary split unless it asks, even for a canary user.
    status = _call(
        calls,
        caller=expect.INGRESS,
        host="api.us.example.com",
        path="/status",
        headers={"x-user-id": "canary-user-1"},
    )
    assert status.expect.destinations == (expect.Destination(FINGERPRINT, "stable", 100),)
    assert status.expect.timeout_ms == 2000
    assert status.expect.retries == {
        "attempts": 1,
        "perTryTimeoutMs": 500,
        "retryOn": "cancelled,connect-failure,refused-stream,reset-before-request,unavailable",
    }
    plain = _call(
        calls, caller=expect.INGRESS, path="/status", headers={"x-user-id": "stable-user-1"}
    )
    assert plain.expect.destinations == (expect.Destination(FINGERPRINT, "stable", 100),)
    health = _call(calls, caller=expect.INGRESS, path="/health")
    assert health.expect.retries is None, "attempts: 0 is no retry policy"


def test_weighted_split_with_mirror_and_merged_subset_policy() -> None:
    calls = expect.expected_calls(stack_settings("fixture-hub"))
    call = _call(calls, caller="identity/fingerprint-api", host=REVENUE, path="/")
    assert call.expect.mirror == {"host": REVENUE, "subset": "v3", "percent": 25.0}
    v2 = call.expect.clusters[f"{REVENUE}|v2"]
    assert v2.tls == "ISTIO_MUTUAL"
    assert v2.outlier is not None
    # v2 sets 5xx 3 and 1m; the rest (local-origin 3, 30 %, min health 50) is service-wide.
    assert v2.outlier["consecutive5xx"] == 3
    assert v2.outlier["consecutiveLocalOrigin"] == 3
    assert v2.outlier["baseEjectionMs"] == 60_000
    assert v2.outlier["maxEjectionPercent"] == 30
    assert v2.outlier["healthyPanicThreshold"] == 50
    assert v2.pool["maxConnections"] == 50
    assert v2.pool["maxPendingRequests"] == 100, "merged in from the service-wide pool"


def test_endpoint_route_to_another_service_and_faults_only_with_the_drill_header() -> None:
    calls = expect.expected_calls(stack_settings("fixture-spoke"))
    admin = _call(calls, host=REVENUE, path="/api/v1/admin/probe")
    assert admin.expect.destinations == (
        expect.Destination("admin-service.revenue.svc.cluster.local", None, 100),
    )
    assert admin.expect.mirror is None
    drills = [c for c in calls if "x-chaos-drill" in c.headers]
    assert drills
    assert all(
        c.expect.fault
        == {"delayMs": 2000, "delayPercent": 50.0, "abortStatus": 503, "abortPercent": 10.0}
        for c in drills
    )
    assert all(c.expect.fault is None for c in calls if "x-chaos-drill" not in c.headers)


def test_forbidden_calls_are_the_undeclared_services_of_other_namespaces() -> None:
    calls = expect.expected_calls(stack_settings("fixture-hub"))
    forbidden = {(c.caller, c.service) for c in calls if not c.expect.reachable}
    assert ("identity/fingerprint-api", "revenue/admin-service") in forbidden
    assert ("identity/fingerprint-api", "markets/market-data") in forbidden
    assert ("identity/fingerprint-api", "revenue/revenue-engine") not in forbidden, "declared"
    assert not any(caller.split("/")[0] == callee.split("/")[0] for caller, callee in forbidden)


@pytest.mark.parametrize("stack", stack_names())
def test_every_declared_triple_and_forbidden_call_is_simulated(stack: str) -> None:
    settings = stack_settings(stack)
    calls = expect.expected_calls(settings)
    forbidden = sum(not c.expect.reachable for c in calls)
    assert len(calls) >= expect.declared_triples(settings) + forbidden
    assert all(c.expect.why for c in calls)


def test_gateway_rule_without_public_host_is_checked_on_any_host() -> None:
    settings = stack_settings("fixture-hub")
    calls = expect.expected_calls(settings)
    market = [c for c in calls if c.service == "markets/market-data" and c.caller == expect.INGRESS]
    paths = {c.path for c in market if c.port == expect.HTTPS_PORT}
    assert {"/market.v1.MarketData/Get", "/market.v1.MarketData/List"} <= paths
    assert all(c.host == "markets.us.example.com" for c in market)


def test_header_samples_follow_re2_full_match() -> None:
    assert expect.sample_value("^canary-.*", matching=True) == "canary-user-1"
    assert expect.sample_value("^canary-.*", matching=False) == "stable-user-1"
    assert expect.sample_value(".*0[0-4]", matching=True) == "user-00"
    with pytest.raises(ValueError, match="no sample header value"):
        expect.sample_value("[0-9]{12}", matching=True)


def test_settings_route_order_is_exact_then_longest_prefix() -> None:
    service = stack_settings("fixture-hub").services[0]
    assert (route := expect.settings_route(service, "/status")) and route.name == "status"
    assert (route := expect.settings_route(service, "/identify/x")) and route.name == "identify"
    assert expect.settings_route(service, "/other") is None


# --- reading istiod's configuration like Envoy ----------------------------------------------------


def _cluster(subset: str) -> str:
    return f"outbound|8080|{subset}|{REVENUE}"


ROUTE_CONFIG: dict[str, Any] = {
    "name": "8080",
    "virtualHosts": [
        {
            "name": "allow_any",
            "domains": ["*"],
            "routes": [
                {
                    "name": "allow_any",
                    "match": {"prefix": "/"},
                    "route": {"cluster": "PassthroughCluster"},
                }
            ],
        },
        {
            "name": "wild",
            "domains": ["*.revenue.svc.cluster.local"],
            "routes": [
                {"name": "wild", "match": {"prefix": "/"}, "route": {"cluster": _cluster("v9")}}
            ],
        },
        {
            "name": f"{REVENUE}:8080",
            "domains": [REVENUE, "revenue-engine.revenue"],
            "routes": [
                {
                    "name": "canary",
                    "match": {
                        "prefix": "/",
                        "caseSensitive": True,
                        "headers": [
                            {
                                "name": "x-user-id",
                                "stringMatch": {"safeRegex": {"regex": "^canary-.*"}},
                            }
                        ],
                    },
                    "route": {"cluster": _cluster("v2"), "timeout": "3s"},
                },
                {
                    "name": "default",
                    "match": {"prefix": "/"},
                    "typedPerFilterConfig": {
                        evaluate.FAULT_FILTER: {
                            "abort": {
                                "httpStatus": 503,
                                "percentage": {"numerator": 10, "denominator": "HUNDRED"},
                            }
                        }
                    },
                    "route": {
                        "weightedClusters": {
                            "clusters": [
                                {"name": _cluster("v1"), "weight": 80},
                                {"name": _cluster("v2"), "weight": 20},
                            ]
                        },
                        "timeout": "8s",
                        "retryPolicy": {
                            "retryOn": "connect-failure,retriable-status-codes",
                            "numRetries": 3,
                            "perTryTimeout": "0.500s",
                            "retriableStatusCodes": [503],
                        },
                        "requestMirrorPolicies": [
                            {
                                "cluster": _cluster("v3"),
                                "runtimeFraction": {
                                    "defaultValue": {"numerator": 250000, "denominator": "MILLION"}
                                },
                            }
                        ],
                    },
                },
            ],
        },
    ],
}
CLUSTERS: list[dict[str, Any]] = [
    {
        "name": _cluster("v1"),
        "outlierDetection": {
            "consecutive5xx": 3,
            "enforcingConsecutive5xx": 100,
            "interval": "5s",
            "enforcingSuccessRate": 0,
        },
        "circuitBreakers": {"thresholds": [{"maxConnections": 50, "maxRetries": 4294967295}]},
        "transportSocket": {
            "name": "envoy.transport_sockets.tls",
            "typedConfig": {
                "commonTlsContext": {"tlsCertificateSdsSecretConfigs": [{"name": "default"}]}
            },
        },
    },
    {"name": _cluster("v2")},
    {"name": _cluster("v3")},
]
PROXY: dict[str, Any] = {"routes": [ROUTE_CONFIG], "clusters": CLUSTERS}


def _evaluate(host: str = REVENUE, headers: dict[str, str] | None = None) -> evaluate.Behaviour:
    return evaluate.evaluate(
        PROXY, route_config="8080", host=host, path="/x", headers=headers or {}
    )


def test_exact_domain_wins_then_suffix_wildcard_then_any() -> None:
    assert _evaluate().virtual_host == f"{REVENUE}:8080"
    assert _evaluate(host="other.revenue.svc.cluster.local").virtual_host == "wild"
    assert _evaluate(host="example.com").destinations[0]["cluster"] == "PassthroughCluster"


def test_first_matching_route_with_a_header_regex() -> None:
    canary = _evaluate(headers={"X-User-Id": "canary-7"})
    assert canary.route == "canary"
    assert canary.timeout_ms == 3000
    assert _evaluate(headers={"x-user-id": "x-canary-7"}).route == "default", "full match"


def test_weights_mirror_retries_fault_and_cluster_policy_are_read() -> None:
    behaviour = _evaluate()
    assert [(d["subset"], d["weight"]) for d in behaviour.destinations] == [("v1", 80), ("v2", 20)]
    assert behaviour.mirror is not None
    assert (behaviour.mirror["subset"], behaviour.mirror["percent"]) == ("v3", 25.0)
    assert behaviour.retries == {
        "attempts": 3,
        "perTryTimeoutMs": 500,
        "retryOn": "503,connect-failure",
    }
    assert behaviour.fault == {"abortStatus": 503, "abortPercent": 10.0}
    v1 = behaviour.clusters[_cluster("v1")]
    assert v1["tls"] == "ISTIO_MUTUAL"
    assert v1["outlier"]["consecutive5xx"] == 3
    assert v1["outlier"]["baseEjectionMs"] == 30_000, "Envoy's default"
    assert v1["outlier"]["maxEjectionPercent"] == 10, "Envoy's default"
    assert v1["pool"]["maxConnections"] == 50
    assert v1["pool"]["maxRetries"] is None, "Istio's unlimited"
    assert behaviour.clusters[_cluster("v2")]["tls"] == "DISABLE"


def test_require_tls_redirects_plain_requests_only() -> None:
    config = copy.deepcopy(ROUTE_CONFIG)
    config["virtualHosts"][2]["requireTls"] = "ALL"
    proxy = {"routes": [config], "clusters": CLUSTERS}
    plain = evaluate.evaluate(proxy, route_config="8080", host=REVENUE, path="/", headers={})
    assert plain.redirect_https
    secure = evaluate.evaluate(
        proxy, route_config="8080", host=REVENUE, path="/", headers={}, tls=True
    )
    assert not secure.redirect_https


def test_gateway_route_configuration_is_chosen_by_sni() -> None:
    def chain(names: list[str], rds: str) -> dict[str, Any]:
        return {
            "filterChainMatch": {"serverNames": names},
            "filters": [{"name": evaluate.HCM, "typedConfig": {"rds": {"routeConfigName": rds}}}],
        }

    listeners = [
        {
            "address": {"socketAddress": {"portValue": 443}},
            "filterChains": [
                chain(["*.shop.example.com"], "wild"),
                chain(["api.example.com"], "api"),
            ],
        }
    ]
    assert evaluate.gateway_route_config(listeners, 443, "api.example.com") == "api"
    assert evaluate.gateway_route_config(listeners, 443, "a.shop.example.com") == "wild"
    assert evaluate.gateway_route_config(listeners, 443, "other.com") is None


# --- comparison ---------------------------------------------------------------------------------


def _promise() -> expect.Call:
    return expect.Call(
        caller="identity/fingerprint-api",
        host=REVENUE,
        port=8080,
        path="/x",
        headers={},
        service="revenue/revenue-engine",
        expect=expect.Expectation(
            reachable=True,
            destinations=(
                expect.Destination(REVENUE, "v1", 80),
                expect.Destination(REVENUE, "v2", 20),
            ),
            mirror={"host": REVENUE, "subset": "v3", "percent": 25.0},
            timeout_ms=8000,
            retries={"attempts": 3, "perTryTimeoutMs": 500, "retryOn": "503,connect-failure"},
            fault={"abortStatus": 503, "abortPercent": 10.0},
            why="test",
        ),
    )


def test_what_istio_does_as_promised_has_no_difference() -> None:
    assert compare.differences(_promise(), _evaluate(), [], None) == []


def test_a_changed_weight_timeout_or_mirror_is_a_difference() -> None:
    proxy = copy.deepcopy(PROXY)
    action = proxy["routes"][0]["virtualHosts"][2]["routes"][1]["route"]
    action["weightedClusters"]["clusters"][0]["weight"] = 95
    action["weightedClusters"]["clusters"][1]["weight"] = 5
    broken = evaluate.evaluate(proxy, route_config="8080", host=REVENUE, path="/x", headers={})
    assert compare.differences(_promise(), broken, [], None) == ["destinations"]
    action["weightedClusters"]["clusters"][0]["weight"] = 80
    action["weightedClusters"]["clusters"][1]["weight"] = 20
    action["timeout"] = "10s"
    del action["requestMirrorPolicies"]
    broken = evaluate.evaluate(proxy, route_config="8080", host=REVENUE, path="/x", headers={})
    assert compare.differences(_promise(), broken, [], None) == ["timeout", "mirror"]


def test_an_unreachable_promise_fails_when_a_virtual_host_routes_the_host() -> None:
    forbidden = expect.Call(
        caller="x/y",
        host=REVENUE,
        port=8080,
        path="/",
        headers={},
        service="revenue/x",
        expect=expect.Expectation(reachable=False, why="test"),
    )
    assert compare.differences(forbidden, _evaluate(), [], None) == [
        "reachable although outside the Sidecar"
    ]
    outside = _evaluate(host="example.com")
    assert compare.differences(forbidden, outside, [_cluster("v1")], None) == []


def test_mismatch_line_names_stack_caller_host_path_promise_and_istio() -> None:
    line = compare.mismatch_line("s", _promise(), "v1 80 %", "v1 95 %", ["destinations"])
    assert line == (
        f"simulate: MISMATCH s: identity/fingerprint-api -> {REVENUE}:8080/x: settings promise "
        "v1 80 %; Istio would v1 95 % (destinations)"
    )


# --- registry and Flagger -------------------------------------------------------------------


def test_flagger_objects_follow_its_router() -> None:
    canary: dict[str, Any] = {
        "metadata": {"namespace": "revenue"},
        "spec": {
            "targetRef": {"name": "admin"},
            "service": {
                "port": 8080,
                "portDiscovery": True,
                "hosts": ["admin.example.com"],
                "gateways": ["istio-ingress/public", "mesh"],
                "timeout": "10s",
                "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            },
        },
    }
    vs, *rules = registry.flagger_objects(canary)
    assert vs["spec"]["hosts"] == ["admin.example.com", "admin"]
    assert vs["spec"]["http"][0]["route"] == [
        {"destination": {"host": "admin-primary", "port": {"number": 8080}}, "weight": 100},
        {"destination": {"host": "admin-canary", "port": {"number": 8080}}, "weight": 0},
    ]
    assert vs["spec"]["http"][0]["timeout"] == "10s"
    assert [r["spec"]["host"] for r in rules] == ["admin-canary", "admin-primary"]
    mesh_only = copy.deepcopy(canary)
    mesh_only["spec"]["service"]["gateways"] = ["mesh"]
    vs = registry.flagger_objects(mesh_only)[0]
    assert "port" not in vs["spec"]["http"][0]["route"][0]["destination"]


def test_registry_has_flagger_services_versions_and_the_gateway() -> None:
    settings = stack_settings("fixture-hub")
    canary = {
        "kind": "Canary",
        "metadata": {"namespace": "markets", "name": "market-data"},
        "spec": {"targetRef": {"name": "market-data"}, "service": {"port": 9090}},
    }
    istiod = {"name": "istiod", "chart": "istiod", "values": {"meshConfig": {"a": 1}}}
    payload, added = registry.registry_input(settings, [canary], [istiod])
    services = {f"{s['namespace']}/{s['name']}": s for s in payload["services"]}
    assert not services["markets/market-data-canary"]["endpoints"], "canary scaled to zero"
    assert {e["labels"]["app"] for e in services["markets/market-data"]["endpoints"]} == {
        "market-data-primary"
    }
    engine = services["revenue/revenue-engine"]["endpoints"]
    assert sum(e["labels"].get("track") == "next" for e in engine) == 4, "v2's minReplicas"
    assert {p["id"] for p in payload["proxies"]} >= {expect.INGRESS, "revenue/revenue-engine"}
    assert payload["meshConfig"].strip() == "a: 1"
    assert added == [
        "VirtualService markets/market-data (as Flagger writes it)",
        "DestinationRule markets/market-data-canary (as Flagger writes it)",
        "DestinationRule markets/market-data-primary (as Flagger writes it)",
    ]


def test_self_check_breaks_a_called_virtual_service_in_a_copy() -> None:
    vs: dict[str, Any] = {
        "kind": "VirtualService",
        "metadata": {"namespace": "n", "name": "a"},
        "spec": {
            "hosts": ["a.n.svc.cluster.local"],
            "http": [
                {
                    "name": "split",
                    "timeout": "8s",
                    "route": [
                        {"destination": {"host": "a"}, "weight": 80},
                        {"destination": {"host": "a"}, "weight": 20},
                    ],
                }
            ],
        },
    }
    manifests = [vs]
    broken = sabotaged(manifests, {"a.n.svc.cluster.local"})
    assert broken is not None
    documents, what = broken
    assert [d["weight"] for d in documents[0]["spec"]["http"][0]["route"]] == [20, 80]
    assert what == "VirtualService n/a route split: weights swapped"
    assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == [80, 20], "a copy"
    assert sabotaged(manifests, {"other"}) is None
    single = copy.deepcopy(vs)
    single["spec"]["http"][0]["route"] = [{"destination": {"host": "a"}}]
    documents, what = sabotaged([single], {"a.n.svc.cluster.local"}) or ([], "")
    assert documents[0]["spec"]["http"][0]["timeout"] == "16s"


# --- the real Envoy's part ---------------------------------------------------------------------


def test_envoy_gets_the_route_configuration_with_only_the_listed_changes() -> None:
    prepared, clusters = envoy.prepared_route_config(ROUTE_CONFIG)
    assert clusters == {"PassthroughCluster", *(_cluster(s) for s in ("v1", "v2", "v3", "v9"))}
    default = prepared["virtualHosts"][2]["routes"][1]
    assert "typedPerFilterConfig" not in default
    assert default["responseHeadersToAdd"] == [
        {"header": {"key": envoy.ROUTE_HEADER, "value": "default"}}
    ]
    assert default["route"] == ROUTE_CONFIG["virtualHosts"][2]["routes"][1]["route"]


def test_sampled_shares_are_judged_within_four_standard_deviations() -> None:
    behaviour = _evaluate()
    seen = envoy.Observed(
        routes=Counter({"default": 400}),
        clusters=Counter({_cluster("v1"): 320, _cluster("v2"): 80}),
        mirrored={_cluster("v3"): 100},
    )
    assert envoy.disagreements(behaviour, seen, 400) == []
    seen.clusters = Counter({_cluster("v1"): 380, _cluster("v2"): 20})
    assert envoy.disagreements(behaviour, seen, 400) == [
        f"Envoy sent 95.0 % to {_cluster('v1')}, weight 80",
        f"Envoy sent 5.0 % to {_cluster('v2')}, weight 20",
    ]


def test_no_envoy_binary_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHSTACK_ENVOY", "/nonexistent/envoy")
    with pytest.raises(envoy.EnvoyError) as caught:
        envoy.find_envoy()
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("no Envoy binary: set MESHSTACK_ENVOY")


def test_a_cluster_local_host_istiod_treats_as_mesh_wide_is_a_difference() -> None:
    promise = _promise()
    local = expect.Call(
        **{
            **promise.__dict__,
            "expect": expect.Expectation(**{**promise.expect.__dict__, "cluster_local": True}),
        }
    )
    assert compare.differences(local, _evaluate(), [], True) == []
    assert compare.differences(local, _evaluate(), [], False) == [
        "cluster-local True promised, istiod treats the host as mesh-wide"
    ]
