"""Who may call Jaeger in `make simulate`: Envoy's RBAC decision read from a sidecar's inbound
listener (tools/simulate/rbac.py), the calls a hub's settings promise or forbid
(tools/simulate/access.py), Jaeger in the registry fed to istiod, and the self-check's break.

The listeners below have the shape istiod 1.30 writes for Jaeger's pod (`virtualInbound`:
one chain per Service port with the `tls` transport, a second `raw_buffer` chain on a
PERMISSIVE port, the HTTP RBAC filter in each HTTP connection manager, the network RBAC
filter on TCP chains; policies `and`-of-`or` as pilot/pkg/security/authz/model builds
them). The tier itself (`make simulate`) runs the same reader on istiod's real output."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components.settings import StackSettings
from tests.conftest import stack_settings
from tools.render import Render
from tools.simulate import access, matchers, rbac, registry
from tools.stacks import stack_names

TD = "spiffe://cluster.local"
GRAFANA = f"{TD}/ns/monitoring/sa/grafana"
KIALI = f"{TD}/ns/observability/sa/kiali"
WORKLOAD = f"{TD}/ns/revenue/sa/revenue-engine"
INGRESS_BLOCK = ("10.8.32.0", 20)
ALPN_HTTP = ("istio-http/1.1",)
ALPN_GRPC = ("istio-h2",)


def _ports(*ports: int) -> dict[str, Any]:
    return {
        "andRules": {"rules": [{"orRules": {"rules": [{"destinationPort": p} for p in ports]}}]}
    }


def _principal_name(matcher: dict[str, Any]) -> dict[str, Any]:
    return {"orIds": {"ids": [{"authenticated": {"principalName": matcher}}]}}


ANY_IDENTITY = {"safeRegex": {"regex": ".+"}}
POLICIES: dict[str, Any] = {
    "rule[0]": {
        "permissions": [_ports(4317, 4318)],
        "principals": [{"andIds": {"ids": [_principal_name(ANY_IDENTITY)]}}],
    },
    "rule[1]": {
        "permissions": [_ports(16685)],
        "principals": [{"andIds": {"ids": [_principal_name({"exact": KIALI})]}}],
    },
    "rule[2]": {
        "permissions": [
            {
                "andRules": {
                    "rules": [
                        {
                            "orRules": {
                                "rules": [
                                    {"header": {"name": ":method", "stringMatch": {"exact": "GET"}}}
                                ]
                            }
                        },
                        {"orRules": {"rules": [{"destinationPort": 16686}]}},
                    ]
                }
            }
        ],
        "principals": [{"andIds": {"ids": [_principal_name({"exact": GRAFANA})]}}],
    },
    "rule[3]": {
        "permissions": [_ports(16686)],
        "principals": [
            {
                "andIds": {
                    "ids": [
                        {"notId": _principal_name(ANY_IDENTITY)},
                        {
                            "orIds": {
                                "ids": [
                                    {
                                        "directRemoteIp": {
                                            "addressPrefix": INGRESS_BLOCK[0],
                                            "prefixLen": INGRESS_BLOCK[1],
                                        }
                                    }
                                ]
                            }
                        },
                    ]
                }
            }
        ],
    },
}


def _http_rbac(policies: dict[str, Any], action: str | None = None) -> dict[str, Any]:
    rules: dict[str, Any] = {"policies": policies}
    if action:
        rules["action"] = action
    return {"name": rbac.HTTP_RBAC, "typedConfig": {"rules": rules}}


def _http_chain(name: str, match: dict[str, Any], *rbac_filters: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "filterChainMatch": match,
        "filters": [
            {"name": "istio.metadata_exchange"},
            {
                "name": rbac.HCM,
                "typedConfig": {
                    "httpFilters": [
                        *rbac_filters,
                        {"name": "envoy.filters.http.router"},
                    ]
                },
            },
        ],
    }


def _listener(policies: dict[str, Any] = POLICIES) -> dict[str, Any]:
    """Jaeger's inbound listener with 16686 PERMISSIVE and the other ports STRICT."""
    http = _http_rbac(policies)
    tcp_policies = {k: v for k, v in policies.items() if k != "rule[2]"}  # HTTP-only rule
    istio_alpn = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
    return {
        "name": "virtualInbound",
        "filterChains": [
            {"name": "virtualInbound-blackhole", "filterChainMatch": {"destinationPort": 15006}},
            {
                "name": "virtualInbound",
                "filterChainMatch": {"transportProtocol": "tls"},
                "filters": [
                    {
                        "name": rbac.NETWORK_RBAC,
                        "typedConfig": {"rules": {"policies": tcp_policies}},
                    }
                ],
            },
            *(
                _http_chain(
                    f"0.0.0.0_{p}", {"destinationPort": p, "transportProtocol": "tls"}, http
                )
                for p in (4317, 4318, 16685)
            ),
            _http_chain(
                "0.0.0.0_16686",
                {
                    "destinationPort": 16686,
                    "transportProtocol": "tls",
                    "applicationProtocols": istio_alpn,
                },
                http,
            ),
            _http_chain(
                "0.0.0.0_16686", {"destinationPort": 16686, "transportProtocol": "raw_buffer"}, http
            ),
        ],
    }


def _allowed(
    port: int,
    principal: str | None,
    *,
    ip: str = "10.1.0.2",
    method: str = "GET",
    listener: dict[str, Any] | None = None,
) -> bool:
    alpn = () if principal is None else (ALPN_GRPC if port in (4317, 16685) else ALPN_HTTP)
    conn = rbac.Connection(port, ip, principal, alpn, method, "/api/traces")
    return rbac.inbound_decision(listener or _listener(), conn).allowed


# --- Envoy's RBAC semantics on the inbound listener -------------------------------------------


def test_grafanas_identity_gets_get_on_16686_and_nothing_on_16685() -> None:
    assert _allowed(16686, GRAFANA)
    assert not _allowed(16686, GRAFANA, method="POST"), "the rule's :method header is GET"
    assert not _allowed(16685, GRAFANA, method="POST")
    assert _allowed(16685, KIALI, method="POST")
    assert not _allowed(16686, KIALI), "Kiali's rule names 16685 only"


def test_otlp_takes_any_identity_but_a_strict_port_closes_plaintext_before_any_policy() -> None:
    for principal in (WORKLOAD, GRAFANA, f"{TD}/ns/elsewhere/sa/default"):
        assert _allowed(4317, principal, method="POST")
        assert _allowed(4318, principal, method="POST")
    conn = rbac.Connection(4317, "10.8.32.1", None, (), "POST", "/")
    decision = rbac.inbound_decision(_listener(), conn)
    assert not decision.allowed
    assert decision.chain == "", "4317 has only a tls chain: no chain, no policy"
    assert "no filter chain accepts plaintext on 4317" in decision.text()


def test_plaintext_on_the_permissive_port_passes_only_from_the_block_without_identity() -> None:
    assert _allowed(16686, None, ip="10.8.32.1")
    assert _allowed(16686, None, ip="10.8.47.254", method="POST"), "the rule names no method"
    assert not _allowed(16686, None, ip="10.8.48.1"), "one past the /20"
    # `notPrincipals: ["*"]` is not_id(authenticated .+): a meshed pod in the block is no Ingress.
    assert not _allowed(16686, WORKLOAD, ip="10.8.32.1")


def test_a_tcp_chain_drops_the_http_only_rule_and_still_denies_by_default() -> None:
    # An unnamed port lands on the catch-all tls chain with the network filter: no headers,
    # so only port- and identity-rules can match; 9999 is in none of them.
    assert not _allowed(9999, GRAFANA)
    assert _allowed(4317, WORKLOAD, listener=_listener()), "sanity: named chain still allows"
    decision = rbac.inbound_decision(
        _listener(), rbac.Connection(9999, "10.1.0.2", KIALI, ("istio",), "GET", "/")
    )
    assert decision.chain == "virtualInbound"
    assert decision.decided_by == f"{rbac.NETWORK_RBAC} no ALLOW policy matches"


def test_deny_filter_before_allow_wins_and_an_empty_allow_filter_denies_everything() -> None:
    listener = _listener()
    deny = _http_rbac({"deny-grafana": copy.deepcopy(POLICIES["rule[2]"])}, action="DENY")
    for chain in listener["filterChains"]:
        for network_filter in chain.get("filters", []):
            if network_filter["name"] == rbac.HCM:
                network_filter["typedConfig"]["httpFilters"].insert(0, deny)
    assert not _allowed(16686, GRAFANA, listener=listener)
    assert _allowed(16685, KIALI, method="POST", listener=listener), "DENY matched nothing"
    nothing = _listener({})
    assert not _allowed(4317, WORKLOAD, method="POST", listener=nothing)
    # A filter without `rules` enforces nothing.
    assert rbac.rbac_filter({}, rbac.Connection(1, "1.1.1.1", None), {}) == "allow: no rules"


def test_string_matchers_are_envoys() -> None:
    name = f"{TD}/ns/monitoring/sa/grafana"
    assert matchers.string_matches({"exact": name}, name)
    assert not matchers.string_matches({"exact": name}, name + "-2")
    assert matchers.string_matches({"prefix": f"{TD}/ns/monitoring/sa/"}, name)
    assert matchers.string_matches({"suffix": "/sa/grafana"}, name)
    assert matchers.string_matches({"exact": "get", "ignoreCase": True}, "GET")
    # safe_regex is a full match (RE2), and `.+` needs a non-empty name.
    assert not matchers.string_matches({"safeRegex": {"regex": "spiffe://.+/ns/monitoring"}}, name)
    assert matchers.string_matches({"safeRegex": {"regex": ".+"}}, name)
    assert not matchers.string_matches({"safeRegex": {"regex": ".+"}}, "")


def test_header_matchers_invert_and_test_presence() -> None:
    get = {"name": ":method", "stringMatch": {"exact": "GET"}}
    assert matchers.header_matches(get, {":method": "GET"})
    assert not matchers.header_matches({**get, "invertMatch": True}, {":method": "GET"})
    assert matchers.header_matches({**get, "invertMatch": True}, {":method": "POST"})
    assert not matchers.header_matches(get, {}), "a network filter sees no request headers"
    assert matchers.header_matches({"name": "x-a", "presentMatch": False}, {}), "absent"


def test_filter_chain_choice_is_most_specific_without_backtracking() -> None:
    listener = _listener()
    # TLS without an Istio ALPN on 16686: the chain naming ALPNs does not match, and the
    # raw_buffer chain is another transport: closed, never the catch-all.
    conn = rbac.Connection(16686, "10.1.0.2", GRAFANA, ("h2",), "GET", "/")
    assert rbac.select_filter_chain(listener, conn) is None
    conn = rbac.Connection(16686, "10.1.0.2", GRAFANA, ALPN_HTTP, "GET", "/")
    chain = rbac.select_filter_chain(listener, conn)
    assert chain is not None
    assert chain["filterChainMatch"]["transportProtocol"] == "tls"


def test_matchers_the_reader_does_not_model_are_refused_not_guessed() -> None:
    policies = {"jwt": {"permissions": [{"any": True}], "principals": [{"metadata": {}}]}}
    with pytest.raises(matchers.UnmodelledError, match="principal"):
        _allowed(16686, GRAFANA, listener=_listener(policies))
    listener = _listener()
    listener["filterChains"][2]["filterChainMatch"]["serverNames"] = ["x"]
    with pytest.raises(matchers.UnmodelledError, match="serverNames"):
        _allowed(4317, GRAFANA, listener=listener)


# --- the calls a hub's settings promise --------------------------------------------------------


def _promise(calls: list[access.AccessCall], caller: str, port: int, method: str = "") -> bool:
    found = [
        c
        for c in calls
        if c.caller.startswith(caller) and c.port == port and (not method or c.method == method)
    ]
    assert found, (caller, port, method)
    assert len({c.allowed for c in found}) == 1
    return found[0].allowed


def test_fixture_hub_promises_come_from_its_settings() -> None:
    calls = access.jaeger_calls(stack_settings("fixture-hub"))
    assert _promise(calls, "monitoring/grafana", 16686, "GET")
    assert not _promise(calls, "monitoring/grafana", 16686, "POST")
    assert not _promise(calls, "monitoring/grafana", 16685)
    assert _promise(calls, "observability/kiali (Kiali)", 16685)
    assert not _promise(calls, "observability/kiali (Kiali)", 16686)
    assert not _promise(calls, "monitoring/default", 16686)
    assert not _promise(calls, "observability/default", 16685)
    assert _promise(calls, "observability/default", 4317), "OTLP from any identity"
    assert _promise(calls, "plaintext from 10.8.32.1 ", 16686, "POST")
    assert _promise(calls, "plaintext from 10.8.47.254 ", 16686, "GET")
    assert not _promise(calls, "plaintext from 10.8.32.1 ", 4317)
    assert not _promise(calls, "plaintext from 10.1.0.2", 16686)
    assert not _promise(calls, "identity/fingerprint-api (meshed, at 10.8.32.1", 16686)
    grafana = next(c for c in calls if c.principal == GRAFANA)
    assert grafana.connection().principal == GRAFANA


def test_without_an_ingress_no_plaintext_is_promised() -> None:
    calls = access.jaeger_calls(stack_settings("two-revisions"))
    assert calls
    assert not [c for c in calls if c.principal is None and c.allowed]
    assert _promise(calls, "monitoring/kube-prometheus-stack-grafana", 16686, "GET")


@pytest.mark.parametrize("stack", stack_names())
def test_every_hub_stack_gets_jaeger_calls_and_no_spoke_does(stack: str) -> None:
    settings = stack_settings(stack)
    calls = access.jaeger_calls(settings)
    if not settings.observability.is_hub:
        assert calls == []
        return
    jaeger = settings.observability.jaeger
    for account in jaeger.query_service_accounts:
        reader = access.identity(*account.split("/", 1))
        assert any(c.principal == reader and c.allowed and c.port == 16686 for c in calls)
    for port in (16686, 16685, 4317):
        assert {c.allowed for c in calls if c.port == port} == {True, False}, port
    for port in (16686, 16685):
        others = [c for c in calls if c.caller.endswith("(another pod)") and c.port == port]
        assert others and not any(c.allowed for c in others)
    assert any(c.principal is None and c.allowed for c in calls) == bool(jaeger.ingress_host)


def test_judge_reports_a_widened_principal_on_the_fixture_hub() -> None:
    settings = stack_settings("fixture-hub")
    records, lines = access.judge("fixture-hub", settings, [_listener()])
    assert lines == []
    assert len(records) == len(access.jaeger_calls(settings))
    wide = copy.deepcopy(POLICIES)
    kiali = wide["rule[1]"]["principals"][0]["andIds"]["ids"][0]["orIds"]["ids"][0]
    kiali["authenticated"]["principalName"] = {"prefix": f"{TD}/ns/observability/sa/"}
    records, lines = access.judge("fixture-hub", settings, [_listener(wide)])
    assert [r["caller"] for r in records if r["mismatch"]] == [
        "observability/default (another pod)"
    ]
    assert lines[0].startswith(
        "simulate: MISMATCH fixture-hub: observability/default (another pod) -> "
        "jaeger.observability.svc.cluster.local:16685 POST"
    )
    assert "settings promise DENY (gRPC query: Kiali only)" in lines[0]


# --- registry and self-check ---------------------------------------------------------------------


def _hub(renders: dict[str, Render]) -> tuple[Render, StackSettings]:
    render = renders["fixture-hub"]
    return render, stack_settings("fixture-hub")


def test_the_hubs_registry_has_jaeger_as_the_chart_names_it(
    fixture_renders: dict[str, Render],
) -> None:
    render, settings = _hub(fixture_renders)
    payload, _ = registry.registry_input(
        settings, render.kubernetes_objects(), render.helm_charts()
    )
    proxy = next(p for p in payload["proxies"] if p["id"] == access.jaeger_proxy(settings))
    service = next(s for s in payload["services"] if s["name"] == "jaeger")
    assert proxy["namespace"] == service["namespace"] == "observability"
    assert proxy["labels"]["app.kubernetes.io/component"] == "all-in-one"
    assert "checksum/user-config" in proxy["labels"], "the chart's podLabels"
    assert service["endpoints"][0]["serviceAccount"] == "jaeger"
    protocols = {p["port"]: p["protocol"] for p in service["ports"]}
    assert protocols[16686] == "HTTP" and protocols[16685] == "GRPC"
    assert protocols[4317] == "GRPC" and protocols[5778] == "", "unnamed: istiod sniffs"
    spoke = fixture_renders["fixture-spoke"]
    payload, _ = registry.registry_input(
        stack_settings("fixture-spoke"), spoke.kubernetes_objects(), spoke.helm_charts()
    )
    assert not [p for p in payload["proxies"] if p["id"].endswith("/jaeger")]


def test_self_check_widens_one_principal_of_jaegers_policy_in_a_copy(
    fixture_renders: dict[str, Render],
) -> None:
    render, settings = _hub(fixture_renders)
    manifests = render.kubernetes_objects()
    broken = access.widened_policy(manifests, settings)
    assert broken is not None
    documents, what = broken
    assert what == (
        "AuthorizationPolicy observability/jaeger-allow-callers rule 1: principal "
        "cluster.local/ns/observability/sa/kiali widened to cluster.local/ns/observability/sa/*"
    )
    assert documents != manifests, "the copy changed"
    assert (
        access.widened_policy(
            [d for d in manifests if d["kind"] != "AuthorizationPolicy"], settings
        )
        is None
    )
