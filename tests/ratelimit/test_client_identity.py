"""Quota tiers are chosen by a verified JWT claim, never by a header the client sends.

A request walks the ingress gateway's HTTP filters in order. The model below keeps what
decides the quota descriptor: Istio's gateway chain has `envoy.filters.http.jwt_authn`
(present when a RequestAuthentication selects the gateway) ahead of the router; the
program's EnvoyFilters add filters with Istio's patch operations (INSERT_FIRST at the
head, INSERT_BEFORE the named filter); jwt_authn writes each `outputClaimToHeaders`
header (Envoy `claim_to_headers`; the model appends, the case in which a client's
copy would survive) only for a token of a configured issuer that verifies; the
ratelimit filter builds descriptors from the virtual host's `rate_limits`
(`request_headers`: first value, nothing when absent; `header_value_match` when all its
headers match, or none with `expect_match: false`; `remote_address`: the client address
the connection manager trusts); a rate limit any of whose actions adds nothing sends no
descriptor. The ratelimit service then takes each descriptor's limit from its config
(`_limit`, as its GetLimit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2: the engine Envoy uses

from components.istio.component import IstioMesh
from components.ratelimit import gateway, specs
from components.ratelimit.component import RateLimiter
from tests.conftest import make_settings, run_with_provider, stack_settings
from tools.render import Render

ISSUER = "https://auth.example.com"
QUOTA = {
    "enabled": True,
    "tiers": [
        {"name": "free", "requestsPerUnit": 60},
        {"name": "internal", "unlimited": True},
    ],
    "clients": [{"id": "billing-batch", "tier": "internal"}],
}
SETTINGS = make_settings(
    identityProviders={"auth": {"issuer": ISSUER, "jwksUri": f"{ISSUER}/jwks.json"}},
    services=[{"name": "api", "namespace": "shop", "jwt": {"provider": "auth"}}],
    rateLimit={"quota": QUOTA},
)


@dataclass(frozen=True)
class Token:
    issuer: str
    claims: dict[str, str]
    valid: bool


def _gateway_objects() -> list[dict[str, Any]]:
    def build(opts: Any) -> None:
        mesh = IstioMesh("m", SETTINGS.istio, opts=opts)
        RateLimiter(
            "rl",
            mesh,
            SETTINGS.rate_limit,
            services=SETTINGS.services,
            token_issuers=(gateway.TokenIssuer(ISSUER, f"{ISSUER}/jwks.json"),),
            opts=opts,
        )

    return [
        o
        for o in run_with_provider(build).kubernetes_objects()
        if o["metadata"].get("namespace") == "istio-ingress"
    ]


def _http_filters(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gateway's HTTP filters after Istio applied the program's HTTP_FILTER patches."""
    authenticated = any(o["kind"] == "RequestAuthentication" for o in objects)
    chain: list[dict[str, Any]] = [{"name": "envoy.filters.http.jwt_authn"}] * authenticated
    chain.append({"name": "envoy.filters.http.router"})
    for envoy_filter in (o for o in objects if o["kind"] == "EnvoyFilter"):
        for patch in envoy_filter["spec"]["configPatches"]:
            if patch["applyTo"] != "HTTP_FILTER":
                continue
            value, operation = patch["patch"]["value"], patch["patch"]["operation"]
            if operation == "INSERT_FIRST":
                chain.insert(0, value)
            elif operation == "INSERT_BEFORE":
                before = patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
                names = [f["name"] for f in chain]
                if before in names:
                    chain.insert(names.index(before), value)
            else:
                raise AssertionError(f"the model does not know {operation}")
    return chain


CLIENT_ADDRESS = "203.0.113.7"
ANONYMOUS = [specs.ANONYMOUS_DESCRIPTOR, (specs.ADDRESS_DESCRIPTOR, CLIENT_ADDRESS)]


def _header_matches(matcher: dict[str, Any], headers: dict[str, list[str]]) -> bool:
    """Envoy's HeaderMatcher as the program writes them: `present_match`, or a
    `string_match` with `prefix` or `safe_regex` (RE2, the whole value must match)."""
    values = headers.get(matcher["name"])
    if "present_match" in matcher:
        return (values is not None) is bool(matcher["present_match"])
    if values is None:
        return False
    string_match = matcher["string_match"]
    if "prefix" in string_match:
        return bool(values[0].startswith(string_match["prefix"]))
    return re2.fullmatch(string_match["safe_regex"]["regex"], values[0]) is not None


def _descriptors(
    objects: list[dict[str, Any]],
    headers: dict[str, list[str]],
    token: Token | None,
    address: str = CLIENT_ADDRESS,
) -> list[list[tuple[str, str]]]:
    """The descriptors the gateway sends to the ratelimit service for this request."""
    headers = {k: list(v) for k, v in headers.items()}
    (actions,) = (o for o in objects if o["metadata"]["name"] == "ratelimit-actions")
    rate_limits = actions["spec"]["configPatches"][0]["patch"]["value"]["rate_limits"]
    rules = [
        rule
        for o in objects
        if o["kind"] == "RequestAuthentication"
        for rule in o["spec"]["jwtRules"]
    ]
    for http_filter in _http_filters(objects):
        name = http_filter["name"]
        if name == gateway.HEADER_MUTATION_FILTER:
            for mutation in http_filter["typed_config"]["mutations"]["request_mutations"]:
                headers.pop(mutation["remove"], None)
        elif name == "envoy.filters.http.jwt_authn" and token and token.valid:
            for rule in rules:
                if rule["issuer"] == token.issuer:
                    for output in rule.get("outputClaimToHeaders", []):
                        if output["claim"] in token.claims:
                            headers.setdefault(output["header"], []).append(
                                token.claims[output["claim"]]
                            )
        elif name == gateway.GLOBAL_FILTER:
            descriptors = []
            for rate_limit in rate_limits:
                entries = []
                for action in rate_limit["actions"]:
                    if "request_headers" in action:
                        spec = action["request_headers"]
                        if spec["header_name"] not in headers:
                            break
                        entries.append((spec["descriptor_key"], headers[spec["header_name"]][0]))
                    elif "remote_address" in action:
                        entries.append(("remote_address", address))
                    else:
                        match = action["header_value_match"]
                        matched = all(_header_matches(h, headers) for h in match["headers"])
                        if matched != match.get("expect_match", True):
                            break
                        entries.append((match["descriptor_key"], match["descriptor_value"]))
                else:
                    descriptors.append(entries)
            return descriptors
    raise AssertionError("the ratelimit filter is not in the gateway's chain")


SPOOFED = {"x-client-id": ["billing-batch"]}


def test_a_spoofed_client_header_without_a_token_is_anonymous() -> None:
    assert _descriptors(_gateway_objects(), SPOOFED, token=None) == [ANONYMOUS]


def test_a_spoofed_client_header_with_an_invalid_token_is_anonymous() -> None:
    forged = Token(ISSUER, {"client_id": "billing-batch"}, valid=False)
    assert _descriptors(_gateway_objects(), SPOOFED, forged) == [ANONYMOUS]


def test_a_verified_claim_chooses_the_tier_whatever_the_client_sends() -> None:
    token = Token(ISSUER, {"client_id": "acme-mobile"}, valid=True)
    assert _descriptors(_gateway_objects(), SPOOFED, token) == [
        [(specs.CLIENT_DESCRIPTOR, "acme-mobile")]
    ]
    billing = Token(ISSUER, {"client_id": "billing-batch"}, valid=True)
    assert _descriptors(_gateway_objects(), {}, billing) == [
        [(specs.CLIENT_DESCRIPTOR, "billing-batch")]
    ]


def test_a_token_of_another_issuer_or_without_the_claim_is_anonymous() -> None:
    objects = _gateway_objects()
    elsewhere = Token("https://evil.example.com", {"client_id": "billing-batch"}, valid=True)
    no_claim = Token(ISSUER, {"sub": "someone"}, valid=True)
    for token in (elsewhere, no_claim):
        assert _descriptors(objects, SPOOFED, token) == [ANONYMOUS]


def test_the_gateway_verifies_tokens_and_forwards_them_to_the_services() -> None:
    (authn,) = (o for o in _gateway_objects() if o["kind"] == "RequestAuthentication")
    (rule,) = authn["spec"]["jwtRules"]
    assert rule["issuer"] == ISSUER
    # The services' RequestAuthentications verify the same token again.
    assert rule["forwardOriginalToken"] is True
    assert rule["outputClaimToHeaders"] == [{"header": "x-client-id", "claim": "client_id"}]
    assert authn["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}


def test_the_client_claim_is_a_setting() -> None:
    quota = SETTINGS.rate_limit.quota.model_copy(update={"client_claim": "azp"})
    spec = gateway.client_identity_spec(
        quota,
        {"istio": "ingressgateway"},
        (gateway.TokenIssuer(ISSUER, f"{ISSUER}/jwks.json"),),
    )
    assert spec["jwtRules"][0]["outputClaimToHeaders"] == [
        {"header": "x-client-id", "claim": "azp"}
    ]


def test_no_stack_lets_a_header_choose_a_quota_tier(every_render: dict[str, Render]) -> None:
    with_quotas = 0
    for stack, render in every_render.items():
        quota = stack_settings(stack).rate_limit.quota
        if not quota.enabled:
            continue
        with_quotas += 1
        objects = [
            o
            for o in render.kubernetes_objects()
            if o["metadata"].get("namespace") == "istio-ingress"
        ]
        for client in quota.clients:
            spoofed = {quota.client_header: [client.id]}
            assert _descriptors(objects, spoofed, token=None) == [ANONYMOUS], (
                stack,
                client.id,
            )
    assert with_quotas, "a fixture sells quotas, so this invariant checks something"


def test_anonymous_requests_are_counted_per_client_address() -> None:
    objects = _gateway_objects()
    one = _descriptors(objects, SPOOFED, None, address="198.51.100.1")
    other = _descriptors(objects, {}, None, address="198.51.100.2")
    assert one != other, "two anonymous clients must not share one bucket"
    config = specs.ratelimit_config(SETTINGS.rate_limit.quota)
    (anonymous,) = (d for d in config["descriptors"] if d["key"] == "client_class")
    # No value on the nested entry: the service keeps one counter per address.
    assert anonymous["descriptors"] == [
        {"key": "remote_address", "rate_limit": {"unit": "minute", "requests_per_unit": 60}}
    ]
    assert "rate_limit" not in anonymous, "no region-wide anonymous bucket above the addresses"


def test_trusted_proxy_hops_set_the_gateways_client_address() -> None:
    quota = SETTINGS.rate_limit.quota
    selector = {"istio": "ingressgateway"}
    plain = gateway.gateway_filter_spec(quota, selector, "ratelimit", proxy_minors=("1.30",))
    assert all(p["applyTo"] == "HTTP_FILTER" for p in plain["configPatches"]), (
        "0 hops: Istio's default, the TCP peer"
    )
    behind_lb = quota.model_copy(update={"trusted_proxy_hops": 1})
    spec = gateway.gateway_filter_spec(behind_lb, selector, "ratelimit", proxy_minors=("1.30",))
    (hops,) = (p for p in spec["configPatches"] if p["applyTo"] == "NETWORK_FILTER")
    assert hops["match"]["context"] == "GATEWAY"
    assert hops["patch"]["operation"] == "MERGE"
    assert hops["patch"]["value"]["typed_config"] == {
        "@type": gateway.HCM_TYPE,
        "xff_num_trusted_hops": 1,
    }


# --- scoped quotas --------------------------------------------------------------------------


def _limit(config: dict[str, Any], entries: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The limit the ratelimit service applies to one descriptor (src/config/config_impl.go
    GetLimit): per entry, the descriptor with that key and value, else the key's value-less
    one; the last entry's `rate_limit`, or None (no limit)."""
    level: list[dict[str, Any]] = config["descriptors"]
    found: dict[str, Any] | None = None
    for key, value in entries:
        by_value = [d for d in level if d["key"] == key and d.get("value") == value]
        by_key = [d for d in level if d["key"] == key and "value" not in d]
        if not (by_value or by_key):
            return None
        found = (by_value or by_key)[0]
        level = found.get("descriptors", [])
    return None if found is None else found.get("rate_limit")


def _hub_gateway(fixture_renders: dict[str, Render]) -> list[dict[str, Any]]:
    return [
        o
        for o in fixture_renders["fixture-hub"].kubernetes_objects()
        if o["metadata"].get("namespace") == "istio-ingress"
    ]


def _request(authority: str, path: str) -> dict[str, list[str]]:
    return {":authority": [authority], ":path": [path]}


def _hub_quota(
    fixture_renders: dict[str, Render],
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """fixture-hub's gateway objects, its quota service's configuration and the issuer the
    gateway verifies client tokens of."""
    objects = _hub_gateway(fixture_renders)
    config = specs.ratelimit_config(stack_settings("fixture-hub").rate_limit.quota)
    issuer = next(
        r["issuer"]
        for o in objects
        if o["kind"] == "RequestAuthentication"
        for r in o["spec"]["jwtRules"]
    )
    return objects, config, issuer


def test_a_scoped_quota_counts_only_its_hosts_and_paths_on_top_of_the_region_wide_one(
    fixture_renders: dict[str, Render],
) -> None:
    # fixture-hub: scope `search` on api.us.example.com under /search/ and /v1/search
    # (free 10/min, pro 20/s, internal unlisted), scope `shop` on *.shop.example.com.
    objects, config, issuer = _hub_quota(fixture_renders)
    acme = Token(issuer, {"client_id": "acme-mobile"}, valid=True)
    region = [(specs.CLIENT_DESCRIPTOR, "acme-mobile")]
    scoped = [(specs.SCOPE_DESCRIPTOR, "search"), *region]
    for authority, path in (
        ("api.us.example.com", "/search/items?q=1"),
        ("API.us.example.com:443", "/v1/search"),
        ("api.us.example.com", "/v1/searches"),  # a prefix, not a path segment
    ):
        assert _descriptors(objects, _request(authority, path), acme) == [region, scoped]
    assert _limit(config, scoped) == {"unit": "second", "requests_per_unit": 20}
    assert _limit(config, region) == {"unit": "second", "requests_per_unit": 100}
    for authority, path in (
        ("api.us.example.com", "/search"),  # not under /search/
        ("api.us.example.com", "/v2/search"),
        ("markets.us.example.com", "/search/items"),  # another host
        ("api.us.example.com.evil.example", "/search/items"),
    ):
        assert _descriptors(objects, _request(authority, path), acme) == [region], path
    # Anonymous requests are scoped per address, too.
    anonymous = _descriptors(objects, _request("a.shop.example.com", "/"), token=None)
    assert anonymous == [ANONYMOUS, [(specs.SCOPE_DESCRIPTOR, "shop"), *ANONYMOUS]]
    assert _limit(config, anonymous[1]) == {"unit": "minute", "requests_per_unit": 30}
    assert _descriptors(objects, _request("shop.example.com", "/"), token=None) == [ANONYMOUS]


def test_a_tier_a_scope_does_not_list_has_no_limit_there(
    fixture_renders: dict[str, Render],
) -> None:
    objects, config, issuer = _hub_quota(fixture_renders)
    # billing-batch is `internal`, which `search` does not list: its id must not fall back
    # to the scope's value-less (unknown client, free) entry.
    billing = Token(issuer, {"client_id": "billing-batch"}, valid=True)
    request = _request("api.us.example.com", "/search/x")
    _, scoped = _descriptors(objects, request, billing)
    assert _limit(config, scoped) == {"unlimited": True}
    unknown = Token(issuer, {"client_id": "someone-new"}, valid=True)
    _, scoped = _descriptors(objects, request, unknown)
    assert _limit(config, scoped) == {"unit": "minute", "requests_per_unit": 10}
