"""EnvoyFilter patches judged by Envoy's own protobuf definitions (xds-protos).

Istio passes an EnvoyFilter patch `value` through as xDS JSON, so the value must parse as
the Envoy message its `applyTo` names, and every `@type` inside must resolve to a message
Envoy knows. Parsing uses `ignore_unknown_fields=False`: a field Envoy does not know fails.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any, Final

import pytest
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2  # noqa: F401
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2  # noqa: F401
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from google.protobuf import json_format, message, symbol_database

from components.ratelimit import gateway, specs
from components.ratelimit.settings import (
    LocalRateLimitSettings,
    LocalRoute,
    QuotaSettings,
    ServiceRateLimit,
)
from components.traffic.settings import RetrySettings
from components.versions import istio_minor
from tools.charts import published_chart

TYPE_URL_PREFIX: Final = "type.googleapis.com/"

PATCH_MESSAGES: Final[dict[str, type[message.Message]]] = {
    "HTTP_FILTER": http_connection_manager_pb2.HttpFilter,
    "NETWORK_FILTER": listener_components_pb2.Filter,
    "VIRTUAL_HOST": route_components_pb2.VirtualHost,
    "HTTP_ROUTE": route_components_pb2.Route,
}
"""The Envoy message an EnvoyFilter patch value is, by its `applyTo`."""


def message_class(type_url: str) -> type[message.Message]:
    """The message class of an `@type` URL, from the protobuf symbol database."""
    if not type_url.startswith(TYPE_URL_PREFIX):
        raise ValueError(f"{type_url!r} is not a type.googleapis.com URL")
    name = type_url.removeprefix(TYPE_URL_PREFIX)
    cls: type[message.Message] = symbol_database.Default().GetSymbol(name)
    return cls


def typed_configs(value: Any) -> Iterator[dict[str, Any]]:
    """Every object with an `@type` key inside `value`, outermost first."""
    if isinstance(value, dict):
        if "@type" in value:
            yield value
        for item in value.values():
            yield from typed_configs(item)
    elif isinstance(value, list):
        for item in value:
            yield from typed_configs(item)


def parse_typed_config(config: dict[str, Any]) -> message.Message:
    """Parse one typed config as the message its `@type` names; unknown fields fail."""
    body = {k: v for k, v in config.items() if k != "@type"}
    return json_format.ParseDict(
        body, message_class(config["@type"])(), ignore_unknown_fields=False
    )


def parse_patch(patch: dict[str, Any]) -> list[message.Message]:
    """Parse a config patch's value as its `applyTo` message, then each typed config."""
    parsed: list[message.Message] = []
    cls = PATCH_MESSAGES[patch["applyTo"]]
    parsed.append(
        json_format.ParseDict(patch["patch"]["value"], cls(), ignore_unknown_fields=False)
    )
    parsed.extend(parse_typed_config(c) for c in typed_configs(patch["patch"]["value"]))
    return parsed


# --- tests ----------------------------------------------------------------------------------

ROUTES = ServiceRateLimit(
    routes=(
        LocalRoute(path_prefix="/status", requests_per_second=2000),
        LocalRoute(path_prefix="/identify", requests_per_second=200),
    )
)
MINORS = ("1.30",)


def _envoy_filters(render: Any) -> list[dict[str, Any]]:
    return [o for o in render.kubernetes_objects() if o["kind"] == "EnvoyFilter"]


def test_every_envoy_filter_patch_of_every_stack_parses_with_envoy_protos(
    stack_renders: Any, fixture_renders: Any
) -> None:
    checked: dict[str, int] = {}
    for stack, render in {**stack_renders, **fixture_renders}.items():
        for envoy_filter in _envoy_filters(render):
            for patch in envoy_filter["spec"]["configPatches"]:
                assert parse_patch(patch), (stack, envoy_filter["metadata"]["name"])
                checked[stack] = checked.get(stack, 0) + 1
    # The fixtures' rate limits (local and quota) make sure the parse sees every filter kind.
    assert sum(checked.get(stack, 0) for stack in fixture_renders) >= 10


def test_a_field_envoy_does_not_know_fails_the_parse() -> None:
    spec = specs.local_ratelimit_spec(
        "app", 8080, LocalRateLimitSettings(), ROUTES, proxy_minors=MINORS
    )
    broken = copy.deepcopy(spec["configPatches"][1])
    broken["patch"]["value"]["typed_per_filter_config"][specs.LOCAL_FILTER]["token_buckt"] = {}
    with pytest.raises(json_format.ParseError, match="token_buckt"):
        parse_patch(broken)


def test_an_unknown_type_url_fails() -> None:
    with pytest.raises(KeyError):
        message_class("type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope")


def test_local_filter_is_inserted_before_the_router_with_the_direct_typed_config() -> None:
    spec = specs.local_ratelimit_spec(
        "app", 8080, LocalRateLimitSettings(), ServiceRateLimit(), proxy_minors=MINORS
    )
    assert spec["workloadSelector"] == {"labels": {"app": "app"}}
    (patch,) = spec["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER"
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    assert patch["match"]["listener"]["filterChain"]["filter"] == {
        "name": "envoy.filters.network.http_connection_manager",
        "subFilter": {"name": "envoy.filters.http.router"},
    }
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    value = patch["patch"]["value"]
    assert value["name"] == "envoy.filters.http.local_ratelimit"
    config = value["typed_config"]
    assert config["@type"] == (
        "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
    )
    assert "TypedStruct" not in str(spec)
    assert config["token_bucket"] == {
        "max_tokens": 1000,
        "tokens_per_fill": 1000,
        "fill_interval": "1s",
    }, "default: 1000 requests per second per pod"
    assert config["stat_prefix"] == "http_local_rate_limiter"
    assert config["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"
    assert config["filter_enabled"]["default_value"] == {"numerator": 100, "denominator": "HUNDRED"}
    assert config["filter_enforced"]["default_value"]["numerator"] == 100
    assert config["response_headers_to_add"][0]["header"] == {
        "key": "x-local-rate-limit",
        "value": "true",
    }


def test_enforced_percent_and_service_rate_come_from_settings() -> None:
    config = specs.local_ratelimit_config(
        LocalRateLimitSettings(requests_per_second=300, enforced_percent=50),
        ServiceRateLimit(requests_per_second=40),
    )
    assert config["filter_enforced"]["default_value"]["numerator"] == 50
    assert config["token_bucket"]["max_tokens"] == 40


def test_per_route_limits_are_keyed_by_the_filter_name_on_the_inbound_vhost() -> None:
    spec = specs.local_ratelimit_spec(
        "app", 9090, LocalRateLimitSettings(), ROUTES, proxy_minors=MINORS
    )
    vhost = spec["configPatches"][1]
    assert vhost["applyTo"] == "VIRTUAL_HOST"
    assert vhost["match"]["routeConfiguration"] == {"vhost": {"name": "inbound|http|9090"}}
    assert vhost["patch"]["operation"] == "MERGE"
    per_filter = vhost["patch"]["value"]["typed_per_filter_config"]
    # Envoy >= 1.29 looks the per-route config up by the inserted filter's name (#32074).
    assert list(per_filter) == [spec["configPatches"][0]["patch"]["value"]["name"]]
    config = per_filter[specs.LOCAL_FILTER]
    buckets = {
        d["entries"][0]["value"]: d["token_bucket"]["tokens_per_fill"]
        for d in config["descriptors"]
    }
    assert buckets == {"/status": 2000, "/identify": 200}
    assert buckets["/status"] > buckets["/identify"]
    assert config["always_consume_default_token_bucket"] is False
    matchers = [a["actions"][0]["header_value_match"]["headers"][0] for a in config["rate_limits"]]
    assert matchers == [
        {"name": ":path", "string_match": {"prefix": "/status"}},
        {"name": ":path", "string_match": {"prefix": "/identify"}},
    ]


def test_every_patch_applies_to_the_proxies_of_the_regions_istio_minors_only(
    stack_renders: Any,
) -> None:
    """istiod applies a patch only to proxies whose `ISTIO_VERSION` the pattern matches (Go
    `regexp.MatchString`, unanchored unless the pattern anchors it): every patch reaches every
    patch release of the minors the region's istiods run, and no proxy of another minor."""
    for render in stack_renders.values():
        minors = {istio_minor(r["version"]) for r in render.outputs["istioRevisions"].values()}
        for envoy_filter in _envoy_filters(render):
            for patch in envoy_filter["spec"]["configPatches"]:
                pattern = patch["match"]["proxy"]["proxyVersion"]
                assert len(pattern) <= 1024, "Istio 1.30.4 refuses longer expressions"
                for minor in minors:
                    for release in ("0", "4", "12"):
                        assert re.search(pattern, f"{minor}.{release}"), (pattern, minor)
                major, number = (int(x) for x in next(iter(minors)).split("."))
                for other in (f"{major}.{number + 9}", f"{major}.{number // 10}", "2.30"):
                    if other not in minors:
                        assert not re.search(pattern, f"{other}.0"), (pattern, other)


def test_during_a_minor_upgrade_patches_apply_to_the_proxies_of_both_minors() -> None:
    spec = specs.local_ratelimit_spec(
        "app", 8080, LocalRateLimitSettings(), ROUTES, proxy_minors=("1.31", "1.30")
    )
    for patch in spec["configPatches"]:
        pattern = patch["match"]["proxy"]["proxyVersion"]
        assert pattern == r"^(1\.30|1\.31)\."
        assert re.search(pattern, "1.30.4") and re.search(pattern, "1.31.0")
        assert not re.search(pattern, "1.32.0") and not re.search(pattern, "1.3.0")


def test_hub_fixture_fingerprint_api_allows_more_status_than_identify(
    fixture_renders: Any,
) -> None:
    (envoy_filter,) = [
        f
        for f in _envoy_filters(fixture_renders["fixture-hub"])
        if f["metadata"]["name"] == "fingerprint-api-local-ratelimit"
    ]
    assert envoy_filter["metadata"]["namespace"] == "identity"
    vhost = envoy_filter["spec"]["configPatches"][1]["patch"]["value"]
    config = vhost["typed_per_filter_config"][specs.LOCAL_FILTER]
    limits = {
        d["entries"][0]["value"]: d["token_bucket"]["max_tokens"] for d in config["descriptors"]
    }
    assert limits["/status"] > limits["/identify"]
    assert config["token_bucket"]["max_tokens"] == 500


def test_local_rate_limit_stats_are_exported_by_the_mesh(stack_renders: Any) -> None:
    for render in stack_renders.values():
        istiods = [c for c in render.helm_charts() if published_chart(c) == "istiod"]
        assert istiods
        for istiod in istiods:  # each revision's proxies export them
            matcher = istiod["values"]["meshConfig"]["defaultConfig"]["proxyStatsMatcher"]
            assert ".*http_local_rate_limit.*" in matcher["inclusionRegexps"]
            assert ".*ratelimit.*" in matcher["inclusionRegexps"]


def test_gateway_filter_calls_the_ratelimit_cluster_over_v3() -> None:
    quota = QuotaSettings(enabled=True, namespace="rl", timeout_ms=250)
    spec = gateway.gateway_filter_spec(
        quota, {"istio": "ingressgateway"}, "rl", proxy_minors=MINORS
    )
    assert spec["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    _strip_client_header, patch = spec["configPatches"]
    assert patch["match"]["context"] == "GATEWAY"
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    value = patch["patch"]["value"]
    assert value["name"] == "envoy.filters.http.ratelimit"
    config = value["typed_config"]
    assert config["@type"] == (
        "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
    )
    assert config["domain"] == "meshstack"
    assert config["failure_mode_deny"] is False, "default: fail open"
    assert config["timeout"] == "0.250s"
    service = config["rate_limit_service"]
    assert service["transport_api_version"] == "V3"
    assert service["grpc_service"]["envoy_grpc"]["cluster_name"] == (
        "outbound|8081||ratelimit.rl.svc.cluster.local"
    )
    assert parse_patch(patch)


def test_gateway_actions_turn_the_client_header_into_the_descriptor() -> None:
    quota = QuotaSettings(enabled=True, client_header="x-api-client")
    spec = gateway.gateway_actions_spec(quota, {"istio": "ingressgateway"}, proxy_minors=MINORS)
    (patch,) = spec["configPatches"]
    assert patch["applyTo"] == "VIRTUAL_HOST"
    assert patch["match"]["context"] == "GATEWAY"
    by_header, anonymous = patch["patch"]["value"]["rate_limits"]
    assert by_header["actions"] == [
        {"request_headers": {"header_name": "x-api-client", "descriptor_key": "client_id"}}
    ]
    match = anonymous["actions"][0]["header_value_match"]
    assert match["expect_match"] is False
    assert match["headers"] == [{"name": "x-api-client", "present_match": True}]
    assert (match["descriptor_key"], match["descriptor_value"]) == specs.ANONYMOUS_DESCRIPTOR
    assert parse_patch(patch)


# --- how many token buckets a pod really has --------------------------------------------------


def _inbound_http_chains(
    service_port: int, other_ports: tuple[int, ...], permissive: bool
) -> list[dict[str, Any]]:
    """The HTTP filter chains of a sidecar's virtual inbound listener (15006), reduced to
    what an EnvoyFilter match reads: Istio builds one HCM chain per inbound port (keyed by
    `destination_port`), a plaintext `raw_buffer` twin of each under PERMISSIVE, and the
    passthrough chains for ports no Service declares (no `destination_port`)."""
    transports = ("tls", "raw_buffer") if permissive else ("tls",)
    chains = [
        {"destination_port": port, "transport_protocol": transport, "filters": [specs.HCM]}
        for port in (service_port, *other_ports)
        for transport in transports
    ]
    chains.append(
        {"destination_port": None, "transport_protocol": "raw_buffer", "filters": [specs.HCM]}
    )
    return chains


def _patched_chains(patch: dict[str, Any], chains: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chains an HTTP_FILTER patch applies to on the virtual inbound listener, with
    Istio's rules (`pilot/pkg/networking/core/envoyfilter/listener_patch.go`
    `filterChainMatch`): on a virtual listener `portNumber` is compared with the chain's
    `destination_port`; `filterChain.filter.name` must name one of the chain's filters."""
    listener = patch["match"]["listener"]
    port = listener.get("portNumber", 0)
    chain_match = listener.get("filterChain", {})
    return [
        chain
        for chain in chains
        if (port == 0 or chain["destination_port"] == port)
        and chain_match.get("filter", {}).get("name") in chain["filters"]
        and chain_match.get("transportProtocol", chain["transport_protocol"])
        == chain["transport_protocol"]
    ]


def test_a_strict_pod_has_one_local_bucket_for_its_service_port() -> None:
    # Envoy keeps one token bucket per local_ratelimit filter instance (shared by the
    # workers), and each inbound filter chain has its own HCM and filter instance: the limit
    # is per pod only if exactly one chain of the pod gets the filter.
    (patch, *_) = specs.local_ratelimit_spec(
        "app", 8080, LocalRateLimitSettings(), ServiceRateLimit(), proxy_minors=MINORS
    )["configPatches"]
    chains = _inbound_http_chains(8080, other_ports=(9090, 15020), permissive=False)
    assert [c["destination_port"] for c in _patched_chains(patch, chains)] == [8080]


def test_a_permissive_pod_has_a_bucket_for_mtls_and_one_for_plaintext_callers() -> None:
    # What docs/security.md states: under PERMISSIVE the limit holds separately for mesh
    # (mTLS) and plaintext callers of the port, so a pod takes at most twice the limit.
    (patch, *_) = specs.local_ratelimit_spec(
        "app", 8080, LocalRateLimitSettings(), ServiceRateLimit(), proxy_minors=MINORS
    )["configPatches"]
    chains = _inbound_http_chains(8080, other_ports=(9090,), permissive=True)
    patched = _patched_chains(patch, chains)
    assert {(c["destination_port"], c["transport_protocol"]) for c in patched} == {
        (8080, "tls"),
        (8080, "raw_buffer"),
    }


# --- gRPC -------------------------------------------------------------------------------------


def test_a_grpc_service_is_limited_with_resource_exhausted_which_routes_do_not_retry() -> None:
    spec = specs.local_ratelimit_spec(
        "app", 9090, LocalRateLimitSettings(), ROUTES, proxy_minors=MINORS, grpc=True
    )
    default, vhost = spec["configPatches"]
    for config in (
        default["patch"]["value"]["typed_config"],
        vhost["patch"]["value"]["typed_per_filter_config"][specs.LOCAL_FILTER],
    ):
        # Without it Envoy maps the local 429 to grpc-status UNAVAILABLE (local_rate_limit.proto).
        assert config["rate_limited_as_resource_exhausted"] is True
    for parsed in parse_patch(default) + parse_patch(vhost):
        assert parsed is not None
    # The routes' default retry conditions retry UNAVAILABLE, not RESOURCE_EXHAUSTED.
    retry_on = RetrySettings().retry_on.split(",")
    assert "unavailable" in retry_on
    assert "resource-exhausted" not in retry_on and "envoy-ratelimited" not in retry_on


def test_an_http_service_keeps_the_plain_429() -> None:
    config = specs.local_ratelimit_config(LocalRateLimitSettings(), ServiceRateLimit())
    assert "rate_limited_as_resource_exhausted" not in config


RELATIVE_OPERATIONS: Final = frozenset({"INSERT_BEFORE", "INSERT_AFTER", "REPLACE", "REMOVE"})
"""Patch operations whose result depends on what other EnvoyFilters did first (istioctl's
EnvoyPatchAnalyzer; MERGE, ADD and INSERT_FIRST are not among them)."""


def test_envoy_filters_with_relative_patches_have_a_priority(every_render: Any) -> None:
    """Istio orders EnvoyFilters of equal priority by creation time, so a relative patch at
    the default priority 0 lands in a different place when an object is recreated
    (`istioctl analyze` IST0151/IST0155, found by make e2e): each has a nonzero one."""
    for stack, render in every_render.items():
        for obj in render.kubernetes_objects():
            if obj["kind"] != "EnvoyFilter":
                continue
            operations = {p["patch"]["operation"] for p in obj["spec"]["configPatches"]}
            if operations & RELATIVE_OPERATIONS:
                name = f"{stack} {obj['metadata']['namespace']}/{obj['metadata']['name']}"
                assert obj["spec"].get("priority", 0) != 0, name
