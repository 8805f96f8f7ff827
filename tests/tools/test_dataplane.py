"""The pure parts of the data-plane tier (tools/dataplane): the Envoy bootstrap it builds from
a render, istiod's JWT translation, and the expectations it derives from the settings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401 (registers types)
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2  # noqa: F401
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2  # noqa: F401
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from tests.conftest import make_settings, stack_settings
from tools.dataplane import envoy_config as ec
from tools.dataplane import expect
from tools.dataplane.run import source_args
from tools.render import Render

JWKS = json.dumps({"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}]})


def test_proto_merge_merges_messages_appends_lists_and_replaces_scalars() -> None:
    base = {"a": {"x": 1, "y": [1]}, "s": "old", "l": [{"k": 1}]}
    merged = ec.proto_merge(base, {"a": {"y": [2], "z": 3}, "s": "new", "l": [{"k": 2}]})
    assert merged == {"a": {"x": 1, "y": [1, 2], "z": 3}, "s": "new", "l": [{"k": 1}, {"k": 2}]}
    assert base["a"] == {"x": 1, "y": [1]}, "the input is not modified"
    with pytest.raises(ec.RenderError):
        ec.proto_merge({"@type": "a"}, {"@type": "b"})


def _patch(operation: str, name: str, before: str | None = None) -> dict[str, Any]:
    listener: dict[str, Any] = {"filterChain": {"filter": {"name": ec.HCM}}}
    if before:
        listener["filterChain"]["filter"]["subFilter"] = {"name": before}
    return {
        "applyTo": "HTTP_FILTER",
        "match": {"context": "GATEWAY", "listener": listener},
        "patch": {"operation": operation, "value": {"name": name}},
    }


def test_http_filter_patches_insert_as_istio_does() -> None:
    chain = ec.apply_http_filter_patches(
        [{"name": "jwt"}, ec.ROUTER],
        [
            _patch("INSERT_FIRST", "first"),
            _patch("INSERT_BEFORE", "rl", "envoy.filters.http.router"),
        ],
    )
    assert [f["name"] for f in chain] == ["first", "jwt", "rl", "envoy.filters.http.router"]
    with pytest.raises(ec.RenderError, match="not in the chain"):
        ec.apply_http_filter_patches([ec.ROUTER], [_patch("INSERT_BEFORE", "x", "missing")])
    with pytest.raises(ec.RenderError, match="not modelled"):
        ec.apply_http_filter_patches([ec.ROUTER], [_patch("REPLACE", "x")])


RULE = {
    "issuer": "https://issuer.example",
    "jwksUri": "https://issuer.example/jwks",
    "forwardOriginalToken": True,
    "outputClaimToHeaders": [{"header": "x-client-id", "claim": "client_id"}],
}


def test_one_issuer_translates_as_istiod_does() -> None:
    jwt = ec.jwt_authn_filter({"jwtRules": [RULE]}, JWKS)
    config = jwt["typed_config"]
    (provider,) = config["providers"].values()
    assert list(config["providers"]) == ["origins-0"]
    assert provider["claim_to_headers"] == [
        {"header_name": "x-client-id", "claim_name": "client_id"}
    ]
    assert provider["forward"] is True
    assert provider["payload_in_metadata"] == "payload"
    assert provider["local_jwks"] == {"inline_string": JWKS}
    # A token, if present, must verify; a request without one passes (allow_missing).
    assert config["rules"] == [
        {
            "match": {"prefix": "/"},
            "requires": {
                "requires_any": {
                    "requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]
                }
            },
        }
    ]
    assert config["bypass_cors_preflight"] is True
    body = {k: v for k, v in config.items() if k != "@type"}
    json_format.ParseDict(body, config_pb2.JwtAuthentication(), ignore_unknown_fields=False)


def test_two_issuers_translate_to_istiods_or_of_and() -> None:
    other = {**RULE, "issuer": "https://other.example"}
    config = ec.jwt_authn_filter({"jwtRules": [RULE, other]}, JWKS)["typed_config"]
    requirements = config["rules"][0]["requires"]["requires_any"]["requirements"]
    assert requirements[:2] == [{"provider_name": "origins-0"}, {"provider_name": "origins-1"}]
    inner = requirements[2]["requires_all"]["requirements"]
    assert [r["requires_any"]["requirements"][0] for r in inner] == requirements[:2]


def _objects(render: Render) -> list[dict[str, Any]]:
    return render.kubernetes_objects()


def _bootstrap(render: Render) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    objects = _objects(render)
    settings = stack_settings(render.stack)
    services = {s.name: s for s in settings.services}
    listeners = []
    local_filters = [
        o
        for o in objects
        if o["kind"] == "EnvoyFilter" and o["metadata"]["name"].endswith(ec.LOCAL_SUFFIX)
    ]
    for i, obj in enumerate(local_filters):
        app = obj["spec"]["workloadSelector"]["labels"]["app"]
        service = services[app.removesuffix("-primary")]
        listeners.append(
            ec.sidecar_listener(obj, service.port, grpc=service.protocol == "grpc", port=20000 + i)
        )
    gateway = [
        o
        for o in objects
        if o["kind"] == "EnvoyFilter" and o["metadata"]["name"] in ec.GATEWAY_FILTERS
    ]
    cluster = None
    if gateway:
        (authn,) = (o for o in objects if o["metadata"]["name"] == ec.CLIENT_IDENTITY)
        listeners.append(
            ec.gateway_listener(gateway, authn, JWKS, port=21000, access_log="/dev/null")
        )
        cluster = (ec.ratelimit_cluster_name(gateway), 22000)
    boot = ec.bootstrap(
        listeners, admin_port=23000, upstream_http=24000, upstream_grpc=24001, ratelimit=cluster
    )
    return boot, local_filters + gateway


def test_every_stack_becomes_a_bootstrap_envoy_parses(stack_renders: dict[str, Render]) -> None:
    for render in stack_renders.values():
        boot, _ = _bootstrap(render)
        json_format.ParseDict(boot, bootstrap_pb2.Bootstrap(), ignore_unknown_fields=False)


def _hcm(boot: dict[str, Any], name: str) -> dict[str, Any]:
    (listener,) = (x for x in boot["static_resources"]["listeners"] if x["name"] == name)
    return dict(listener["filter_chains"][0]["filters"][0]["typed_config"])


def test_listeners_carry_the_rendered_typed_configs(every_render: dict[str, Render]) -> None:
    checked = 0
    for render in every_render.values():
        boot, filters = _bootstrap(render)
        for obj in filters:
            name = obj["metadata"]["name"]
            if not name.endswith(ec.LOCAL_SUFFIX):
                continue
            app = obj["spec"]["workloadSelector"]["labels"]["app"]
            hcm = _hcm(boot, f"sidecar-{app}")
            (inserted,) = (p for p in obj["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER")
            assert hcm["http_filters"] == [inserted["patch"]["value"], ec.ROUTER], name
            checked += 1
        if any(o["metadata"]["name"] == "ratelimit-filter" for o in filters):
            hcm = _hcm(boot, "gateway")
            names = [f["name"] for f in hcm["http_filters"]]
            assert names == [
                "envoy.filters.http.header_mutation",
                ec.JWT_FILTER,
                "envoy.filters.http.ratelimit",
                "envoy.filters.http.router",
            ], render.stack
            (vhost,) = hcm["route_config"]["virtual_hosts"]
            (actions,) = (o for o in filters if o["metadata"]["name"] == "ratelimit-actions")
            rendered = actions["spec"]["configPatches"][0]["patch"]["value"]["rate_limits"]
            assert vhost["rate_limits"] == rendered
            assert hcm["use_remote_address"] is True
            hops = stack_settings(render.stack).rate_limit.quota.trusted_proxy_hops
            assert hcm.get("xff_num_trusted_hops", 0) == hops, render.stack
            checked += 1
    assert checked


def test_local_cases_come_from_the_settings() -> None:
    settings = make_settings(
        services=[
            {
                "name": "api",
                "namespace": "shop",
                "rateLimit": {
                    "requestsPerSecond": 50,
                    "routes": [{"pathPrefix": "/status", "requestsPerSecond": 900}],
                },
            },
            {"name": "feed", "namespace": "shop", "port": 9090, "protocol": "grpc"},
        ],
        rateLimit={"local": {"requestsPerSecond": 300, "enforcedPercent": 40}},
    )
    cases = {(c.app, c.path): c for c in expect.local_cases(settings)}
    assert cases[("api", "/dataplane/default")].rate == 50
    assert cases[("api", "/status/dataplane")].rate == 900
    feed = cases[("feed", "/grpc.health.v1.Health/Check")]
    assert (feed.rate, feed.grpc, feed.enforced_percent) == (300, True, 40)
    off = make_settings(rateLimit={"local": {"enabled": False}})
    assert expect.local_cases(off) == []


def test_a_token_bucket_admits_a_burst_then_its_rate() -> None:
    case = expect.LocalCase("a", 8080, False, "/", 100, 50)
    outcome = expect.local_outcome(case, sent=450, seconds=3.0)
    assert outcome.admitted_by_bucket == 400  # 100 at once + 100/s for 3 s
    assert outcome.rejected == 25  # half of the 50 over the limit
    assert expect.admitted_rate(case, 400, 3.0) == 100
    assert expect.local_outcome(case, sent=50, seconds=3.0).rejected == 0
    assert expect.within(109, 100) and not expect.within(111, 100)


def test_partial_enforcement_is_a_binomial_draw() -> None:
    assert expect.enforced_slack(304, 100) == 5, "every over-limit request is rejected"
    assert 34 < expect.enforced_slack(304, 50) < 35  # 4 * sqrt(304 / 4)


def test_offered_load_stays_under_the_generators_ceiling() -> None:
    assert expect.offered_rate(100, ceiling=10_000) == 150
    assert expect.offered_rate(2000, ceiling=3600) == 2880
    # Never under 1.4x: a run that cannot reach it fails rather than measuring nothing.
    assert expect.offered_rate(2000, ceiling=2500) == 2800


def test_tier_cases_cover_each_listed_tier_and_the_unlisted_one() -> None:
    quota = stack_settings("fixture-hub").rate_limit.quota
    cases = expect.tier_cases(quota)
    assert {c.tier for c in cases} >= {c.tier for c in quota.clients}
    (unlisted,) = (c for c in cases if not c.known)
    assert unlisted.tier == quota.unknown_client_tier
    assert unlisted.client not in {c.id for c in quota.clients}


def test_scope_cases_send_in_and_outside_each_scope_what_the_settings_admit() -> None:
    # fixture-hub: `search` (api.us.example.com, /search/ and /v1/search: free 10/min,
    # pro 20/s) and `shop` (*.shop.example.com: free 30/min); free is 60/min region-wide.
    cases = {c.scope: c for c in expect.scope_cases(stack_settings("fixture-hub").rate_limit.quota)}
    assert set(cases) == {"search", "shop"}, "pro is per second: not modelled by a burst"
    search = cases["search"]
    assert (search.authority, search.path) == ("api.us.example.com", "/search/dataplane")
    assert search.outside == ("api.us.example.com", "/dataplane-outside")
    assert (search.tier, search.listed, search.admitted, search.unit) == (
        "free",
        False,
        10,
        "minute",
    )
    assert search.outside_admitted, "10 of the region's 60 spent: the client still has 50"
    shop = cases["shop"]
    assert (shop.authority, shop.outside) == (
        "dataplane.shop.example.com",
        ("outside.dp.test", "/dataplane"),
    )
    assert shop.admitted == 30


def test_a_scope_larger_than_the_region_wide_quota_admits_the_region_wide_one() -> None:
    scope = {
        "name": "big",
        "pathPrefixes": ["/big/"],
        "tiers": [{"name": "free", "requestsPerUnit": 100, "unit": "minute"}],
    }
    quota = make_settings(rateLimit={"quota": {"enabled": True, "scopes": [scope]}})
    (case,) = expect.scope_cases(quota.rate_limit.quota)
    assert (case.admitted, case.outside_admitted, case.client) == (60, False, "dataplane-scope-big")


def test_quota_windows_are_aligned_to_their_unit() -> None:
    assert expect.window_remaining("minute", 120.0) == 60
    assert expect.window_remaining("minute", 179.5) == 0.5
    assert expect.window_remaining("second", 10.25) == 0.75


def test_the_client_address_follows_the_trusted_hops() -> None:
    assert source_args(0, 3) == ["-src", "127.0.0.4"]
    (flag, header) = source_args(2, 7)
    assert flag == "-H"
    entries = header.removeprefix("x-forwarded-for: ").split(", ")
    # Envoy takes the client from the Nth entry counted from the right (N trusted hops).
    assert entries[-2] == "203.0.113.7"
    assert len(entries) == 3, "one client-written entry further left, ignored"
