"""The per-client quota at the ingress gateway: who the client is, and the two EnvoyFilters.

Pure builders, unit-tested without the engine. The client is identified only from a
verified JWT claim: `gateway_filter_spec` removes the client header from every request
first, `client_identity_spec` (a RequestAuthentication) writes it from the token's claim,
and `gateway_actions_spec` turns it into the descriptor the ratelimit service matches
(`specs.ratelimit_config`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from components.naming import service_fqdn
from components.ratelimit.settings import QuotaScope, QuotaSettings
from components.ratelimit.specs import (
    ANONYMOUS_DESCRIPTOR,
    CLIENT_DESCRIPTOR,
    ENVOY_FILTER_PRIORITY,
    GRPC_PORT,
    HCM,
    RATELIMIT_NAME,
    ROUTER,
    SCOPE_DESCRIPTOR,
    proxy_version_match,
)

GLOBAL_FILTER: Final = "envoy.filters.http.ratelimit"
HEADER_MUTATION_FILTER: Final = "envoy.filters.http.header_mutation"
"""Removes the client-supplied client header at the gateway (built into istio/proxy 1.30)."""
HEADER_MUTATION_TYPE: Final = (
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
)
CLIENT_IDENTITY_NAME: Final = "ratelimit-client-identity"
"""RequestAuthentication on the ingress gateway that writes the client header."""
GLOBAL_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
HCM_TYPE: Final = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


@dataclass(frozen=True)
class TokenIssuer:
    """A JWT issuer whose tokens identify quota clients at the ingress gateway."""

    issuer: str
    jwks_uri: str


def client_identity_spec(
    quota: QuotaSettings, selector: dict[str, str], issuers: Sequence[TokenIssuer]
) -> dict[str, Any]:
    """RequestAuthentication spec: the gateway verifies tokens and writes the client header.

    `outputClaimToHeaders` (Envoy `claim_to_headers`) sets `clientHeader` from the
    verified `clientClaim` only when a token of one of `issuers` is valid; the header is
    removed from every request before (`gateway_filter_spec`), so its presence at the
    ratelimit filter means a verified client. The token is forwarded
    (`forwardOriginalToken`): the services' own RequestAuthentications verify it again
    for their audiences and principals. Audiences are not checked here, for the same
    reason. A request with an invalid token of these issuers gets 401 at the gateway.
    """
    return {
        "selector": {"matchLabels": dict(selector)},
        "jwtRules": [
            {
                "issuer": issuer.issuer,
                "jwksUri": issuer.jwks_uri,
                "forwardOriginalToken": True,
                "outputClaimToHeaders": [
                    {"header": quota.client_header, "claim": quota.client_claim}
                ],
            }
            for issuer in issuers
        ],
    }


def ratelimit_cluster(namespace: str) -> str:
    """Envoy cluster of the ratelimit gRPC port, as Istio names outbound clusters."""
    return f"outbound|{GRPC_PORT}||{service_fqdn(RATELIMIT_NAME, namespace)}"


def _seconds(milliseconds: int) -> str:
    return f"{milliseconds / 1000:.3f}s"


def gateway_filter_spec(
    quota: QuotaSettings,
    selector: dict[str, str],
    namespace: str,
    *,
    proxy_minors: Sequence[str],
) -> dict[str, Any]:
    """EnvoyFilter spec: the global ratelimit filter in the ingress gateway.

    First patch: a header_mutation filter at the head of the gateway's HTTP filters
    (INSERT_FIRST, so before `envoy.filters.http.jwt_authn`, which Istio places ahead of
    any filter inserted before the router) removes a client-supplied `clientHeader`.
    jwt_authn then writes it only from a verified claim (`client_identity_spec`), and the
    ratelimit filter, inserted before the router, reads it last.

    With `trustedProxyHops` > 0 a third patch merges `xff_num_trusted_hops` into the
    gateway's connection managers, so the client address (the anonymous bucket's key,
    `gateway_actions_spec`) is the one the region's load balancer appended to
    `X-Forwarded-For`, not the load balancer's own. Istio's gateways already set
    `use_remote_address: true`; 0 keeps Istio's default (the TCP peer).
    """
    hops_patch: list[dict[str, Any]] = []
    if quota.trusted_proxy_hops:
        hops_patch.append(
            {
                "applyTo": "NETWORK_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "proxy": proxy_version_match(proxy_minors),
                    "listener": {"filterChain": {"filter": {"name": HCM}}},
                },
                "patch": {
                    "operation": "MERGE",
                    "value": {
                        "typed_config": {
                            "@type": HCM_TYPE,
                            "xff_num_trusted_hops": quota.trusted_proxy_hops,
                        }
                    },
                },
            }
        )
    return {
        "workloadSelector": {"labels": dict(selector)},
        "priority": ENVOY_FILTER_PRIORITY,
        "configPatches": [
            *hops_patch,
            {
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "proxy": proxy_version_match(proxy_minors),
                    "listener": {"filterChain": {"filter": {"name": HCM}}},
                },
                "patch": {
                    "operation": "INSERT_FIRST",
                    "value": {
                        "name": HEADER_MUTATION_FILTER,
                        "typed_config": {
                            "@type": HEADER_MUTATION_TYPE,
                            "mutations": {"request_mutations": [{"remove": quota.client_header}]},
                        },
                    },
                },
            },
            {
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "proxy": proxy_version_match(proxy_minors),
                    "listener": {
                        "filterChain": {"filter": {"name": HCM, "subFilter": {"name": ROUTER}}}
                    },
                },
                "patch": {
                    "operation": "INSERT_BEFORE",
                    "value": {
                        "name": GLOBAL_FILTER,
                        "typed_config": {
                            "@type": GLOBAL_TYPE,
                            "domain": quota.domain,
                            "failure_mode_deny": quota.failure_mode_deny,
                            "timeout": _seconds(quota.timeout_ms),
                            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                            "rate_limit_service": {
                                "grpc_service": {
                                    "envoy_grpc": {
                                        "cluster_name": ratelimit_cluster(namespace),
                                        "authority": service_fqdn(RATELIMIT_NAME, namespace),
                                    },
                                    "timeout": _seconds(quota.timeout_ms),
                                },
                                "transport_api_version": "V3",
                            },
                        },
                    },
                },
            },
        ],
    }


def gateway_actions_spec(
    quota: QuotaSettings, selector: dict[str, str], *, proxy_minors: Sequence[str]
) -> dict[str, Any]:
    """EnvoyFilter spec: the rate-limit actions on every gateway virtual host.

    The client header (written only from a verified claim, see `gateway_filter_spec`)
    becomes the `client_id` descriptor; `request_headers` produces nothing when the
    header is missing, so a second rate limit marks those requests anonymous and adds
    the client address (`remote_address`: the address the connection manager trusts,
    `trustedProxyHops`), the key of one anonymous bucket per address.
    """
    return {
        "workloadSelector": {"labels": dict(selector)},
        "configPatches": [
            {
                "applyTo": "VIRTUAL_HOST",
                "match": {
                    "context": "GATEWAY",
                    "proxy": proxy_version_match(proxy_minors),
                    "routeConfiguration": {"vhost": {"route": {"action": "ANY"}}},
                },
                "patch": {
                    "operation": "MERGE",
                    "value": {
                        "rate_limits": [
                            {"actions": _client_actions(quota)},
                            {"actions": _anonymous_actions(quota)},
                            *scope_rate_limits(quota),
                        ]
                    },
                },
            }
        ],
    }


def _client_actions(quota: QuotaSettings) -> list[dict[str, Any]]:
    return [
        {
            "request_headers": {
                "header_name": quota.client_header,
                "descriptor_key": CLIENT_DESCRIPTOR,
            }
        }
    ]


def _anonymous_actions(quota: QuotaSettings) -> list[dict[str, Any]]:
    key, value = ANONYMOUS_DESCRIPTOR
    return [
        {
            "header_value_match": {
                "descriptor_key": key,
                "descriptor_value": value,
                "expect_match": False,
                "headers": [{"name": quota.client_header, "present_match": True}],
            }
        },
        {"remote_address": {}},
    ]


def host_matcher(host: str) -> dict[str, Any]:
    """`:authority` is `host` with any port, in any case (a client may send
    `API.example.com:443`); `*.` stands for one or more labels, as in a Gateway's hosts.
    Envoy matches the whole value (`safe_regex`, RE2); one host per regex keeps its
    program size far below Envoy's default limit of 100 (`re2.max_program_size`)."""
    name = r"[^:]+\." + re.escape(host[2:]) if host.startswith("*.") else re.escape(host)
    regex = f"(?i){name}(?::[0-9]+)?"
    return {"name": ":authority", "string_match": {"safe_regex": {"regex": regex}}}


def scope_matches(scope: QuotaScope) -> list[list[dict[str, Any]]]:
    """The header matchers of a scope, one list (all must match) per host and path prefix.

    A request matches at most one of them: a scope's hosts and its prefixes do not overlap
    (`QuotaScope`), so it is counted once in the scope's bucket whichever list it matched.
    """
    hosts = [[host_matcher(h)] for h in scope.hosts] or [[]]
    paths = [[{"name": ":path", "string_match": {"prefix": p}}] for p in scope.path_prefixes]
    return [h + p for h in hosts for p in paths or [[]]]


def scope_rate_limits(quota: QuotaSettings) -> list[dict[str, Any]]:
    """Per scope, host and path prefix: the region-wide pair of rate limits behind a
    `quota_scope=<name>` entry.

    `header_value_match` adds that entry only when the request matches (`scope_matches`);
    Envoy drops a descriptor any of whose actions adds nothing (router_ratelimit.cc), so
    other requests get none of the scope's descriptors (`specs.scope_descriptor` is their
    config).
    """
    limits = []
    for scope in quota.scopes:
        for headers in scope_matches(scope):
            in_scope = {
                "header_value_match": {
                    "descriptor_key": SCOPE_DESCRIPTOR,
                    "descriptor_value": scope.name,
                    "headers": headers,
                }
            }
            limits.append({"actions": [in_scope, *_client_actions(quota)]})
            limits.append({"actions": [in_scope, *_anonymous_actions(quota)]})
    return limits
