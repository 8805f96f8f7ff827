"""Envoy bootstrap of the data-plane tier, built from a stack's offline render (pure).

The typed filter configs come from the rendered objects, never from a second copy: each
`<app>-local-ratelimit` EnvoyFilter becomes one listener standing in for that workload's
sidecar inbound chain, and the ingress gateway's EnvoyFilters plus the RequestAuthentication
`ratelimit-client-identity` become one listener standing in for the gateway. The program's
patches are applied with Istio's operations (INSERT_FIRST, INSERT_BEFORE the named filter,
MERGE into a virtual host or the connection manager, as protobuf MergeFrom: maps and
messages merge, repeated fields append).

Where istiod generates config, this module follows istiod's code (istio.io/istio at the
pinned 1.30.4 commit 9739e10eb9d7):

- jwt_authn from a RequestAuthentication: `pilot/pkg/security/authn/policy_applier.go`
  `convertToEnvoyJwtConfig`: one provider `origins-<i>` per jwtRule with `issuer`,
  `forward` (forwardOriginalToken), `claim_to_headers` (outputClaimToHeaders),
  `payload_in_metadata: payload` (`pilot/pkg/xds/filters/filters.go`), space-delimited
  `scope`/`permission` claims, `clear_route_cache` (true for gateways, `plugin/authn`), the
  JWKS inlined (`local_jwks.inline_string`: istiod fetches `jwksUri` itself unless
  PILOT_JWT_ENABLE_REMOTE_JWKS, `model/jwks_resolver.go` BuildLocalJwks); one rule on
  prefix `/` requiring `{origins-0 OR allow_missing}` (several issuers: the OR/AND form
  below); `bypass_cors_preflight: true`.
- the gateway's connection manager: `use_remote_address: true`
  (`pilot/pkg/networking/core/listener.go`, gateways), `xff_num_trusted_hops` 0 unless
  the program's NETWORK_FILTER patch merges one in.

Differences from production, stated by the tier: one Envoy process stands in for a pod's
sidecar (one listener per workload) and for the gateway; Istio's own filters (istio_authn,
metadata exchange, stats, RBAC, CORS, fault) are not in the chains, the upstream is a
local server (an HTTP sidecar's application is a direct response of its listener), the
ratelimit cluster points at a local ratelimit service in plaintext (in the mesh it is mTLS
through the sidecar), and the JWKS is a local test key's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

LOCAL_SUFFIX: Final = "-local-ratelimit"
GATEWAY_FILTERS: Final = ("ratelimit-filter", "ratelimit-actions")
CLIENT_IDENTITY: Final = "ratelimit-client-identity"
HCM: Final = "envoy.filters.network.http_connection_manager"
HCM_TYPE: Final = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER: Final = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
JWT_FILTER: Final = "envoy.filters.http.jwt_authn"
JWT_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
FILE_LOG_TYPE: Final = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
PROTOCOL_OPTIONS_TYPE: Final = (
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)
UPSTREAM_HTTP: Final = "dataplane_upstream_http"
UPSTREAM_GRPC: Final = "dataplane_upstream_grpc"
ACCESS_LOG_FORMAT: Final = (
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQ(:PATH)%\n"
)


class RenderError(ValueError):
    """The render does not hold what the tier needs (a missing or unexpected object)."""


def proto_merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`patch` merged into a copy of `base` like protobuf MergeFrom on JSON: messages and
    maps merge key by key, repeated fields append, scalars replace. `@type` must agree."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if key == "@type" and key in out and out[key] != value:
            raise RenderError(f"MERGE of {value} into {out[key]}")
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = proto_merge(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_http_filter_patches(
    chain: list[dict[str, Any]], patches: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The HTTP filter chain after Istio's HTTP_FILTER patches (INSERT_FIRST, INSERT_BEFORE
    the `subFilter` named in the match), in the order given (istiod applies EnvoyFilters by
    priority, then creation; within one object in list order)."""
    out = [copy.deepcopy(f) for f in chain]
    for patch in patches:
        if patch["applyTo"] != "HTTP_FILTER":
            continue
        operation, value = patch["patch"]["operation"], copy.deepcopy(patch["patch"]["value"])
        if operation == "INSERT_FIRST":
            out.insert(0, value)
        elif operation == "INSERT_BEFORE":
            anchor = patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
            names = [f["name"] for f in out]
            if anchor not in names:
                raise RenderError(f"INSERT_BEFORE {anchor}: not in the chain {names}")
            out.insert(names.index(anchor), value)
        else:
            raise RenderError(f"HTTP_FILTER operation {operation} is not modelled")
    return out


def apply_vhost_patches(
    vhost: dict[str, Any], patches: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The virtual host after the VIRTUAL_HOST MERGE patches whose match selects it (by
    `vhost.name`, or any vhost when the match names none)."""
    out = vhost
    for patch in patches:
        if patch["applyTo"] != "VIRTUAL_HOST":
            continue
        if patch["patch"]["operation"] != "MERGE":
            raise RenderError(f"VIRTUAL_HOST operation {patch['patch']['operation']}")
        wanted = patch["match"].get("routeConfiguration", {}).get("vhost", {}).get("name")
        if wanted is None or wanted == vhost["name"]:
            out = proto_merge(out, patch["patch"]["value"])
    return out


def apply_hcm_patches(hcm: dict[str, Any], patches: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The connection manager's typed config after NETWORK_FILTER MERGE patches on it."""
    out = hcm
    for patch in patches:
        if patch["applyTo"] != "NETWORK_FILTER":
            continue
        if patch["match"]["listener"]["filterChain"]["filter"]["name"] != HCM:
            raise RenderError("NETWORK_FILTER patch of a filter other than the HCM")
        if patch["patch"]["operation"] != "MERGE":
            raise RenderError(f"NETWORK_FILTER operation {patch['patch']['operation']}")
        out = proto_merge(out, patch["patch"]["value"]["typed_config"])
    return out


def jwt_authn_filter(request_authentication: Mapping[str, Any], jwks: str) -> dict[str, Any]:
    """istiod's jwt_authn filter for a RequestAuthentication on a gateway (module docstring:
    `convertToEnvoyJwtConfig`), with every rule's JWKS inlined as `jwks`."""
    providers: dict[str, Any] = {}
    inner_and: list[dict[str, Any]] = []
    outer_or: list[dict[str, Any]] = []
    for i, rule in enumerate(request_authentication["jwtRules"]):
        name = f"origins-{i}"
        provider: dict[str, Any] = {
            "issuer": rule["issuer"],
            "forward": bool(rule.get("forwardOriginalToken", False)),
            "payload_in_metadata": "payload",
            "normalize_payload_in_metadata": {
                "space_delimited_claims": sorted(
                    {"permission", "scope", *rule.get("spaceDelimitedClaims", [])}
                )
            },
            "clear_route_cache": True,
            "local_jwks": {"inline_string": jwks},
        }
        if rule.get("audiences"):
            provider["audiences"] = list(rule["audiences"])
        if rule.get("outputPayloadToHeader"):
            provider["forward_payload_header"] = rule["outputPayloadToHeader"]
        if rule.get("outputClaimToHeaders"):
            provider["claim_to_headers"] = [
                {"header_name": o["header"], "claim_name": o["claim"]}
                for o in rule["outputClaimToHeaders"]
            ]
        if rule.get("fromHeaders") or rule.get("fromParams") or rule.get("fromCookies"):
            raise RenderError("token locations other than the default are not modelled")
        providers[name] = provider
        inner_and.append(
            {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}
        )
        outer_or.append({"provider_name": name})
    if not providers:
        raise RenderError("RequestAuthentication without jwtRules")
    if len(inner_and) == 1:
        requires = inner_and[0]
    else:
        requires = {
            "requires_any": {
                "requirements": [*outer_or, {"requires_all": {"requirements": inner_and}}]
            }
        }
    return {
        "name": JWT_FILTER,
        "typed_config": {
            "@type": JWT_TYPE,
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": requires}],
            "bypass_cors_preflight": True,
        },
    }


@dataclass(frozen=True)
class Listener:
    """One listener of the tier's Envoy: what it stands in for and where it listens."""

    name: str
    port: int
    grpc: bool
    config: dict[str, Any]


def _hcm_listener(
    name: str, port: int, hcm: dict[str, Any], access_log: str | None
) -> dict[str, Any]:
    if access_log:
        hcm = {
            **hcm,
            "access_log": [
                {
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": FILE_LOG_TYPE,
                        "path": access_log,
                        "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                    },
                }
            ],
        }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}],
    }


def _direct_route() -> dict[str, Any]:
    """The application behind an HTTP sidecar: Envoy answers an admitted request itself
    (after every filter, the limiter included), so a 2000/s bucket can be overloaded on 2
    shared cores without a second proxy hop; gRPC and the gateway use the upstream."""
    return {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
    }


def _route(cluster: str, grpc: bool) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": cluster}
    if grpc:
        action["timeout"] = "0s"
    return {"match": {"prefix": "/"}, "route": action}


def sidecar_listener(
    envoy_filter: Mapping[str, Any], service_port: int, *, grpc: bool, port: int
) -> Listener:
    """The inbound chain of one workload's sidecar with its local rate limit EnvoyFilter:
    HTTP filters `[router]` patched, the inbound vhost `inbound|http|<port>` patched."""
    spec = envoy_filter["spec"]
    app = spec["workloadSelector"]["labels"]["app"]
    for patch in spec["configPatches"]:
        if patch["match"]["context"] != "SIDECAR_INBOUND":
            raise RenderError(f"{app}: a local limit patch outside SIDECAR_INBOUND")
        wanted = patch["match"].get("listener", {}).get("portNumber")
        if wanted is not None and wanted != service_port:
            raise RenderError(f"{app}: patch for port {wanted}, service port {service_port}")
    vhost = apply_vhost_patches(
        {
            "name": f"inbound|http|{service_port}",
            "domains": ["*"],
            "routes": [_route(UPSTREAM_GRPC, grpc) if grpc else _direct_route()],
        },
        spec["configPatches"],
    )
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": f"inbound_{app}",
        "codec_type": "AUTO",
        "route_config": {"name": f"inbound|{service_port}", "virtual_hosts": [vhost]},
        "http_filters": apply_http_filter_patches([ROUTER], spec["configPatches"]),
    }
    name = f"sidecar-{app}"
    return Listener(name, port, grpc, _hcm_listener(name, port, hcm, None))


def gateway_listener(
    gateway_filters: Sequence[Mapping[str, Any]],
    request_authentication: Mapping[str, Any] | None,
    jwks: str,
    *,
    port: int,
    access_log: str,
) -> Listener:
    """The ingress gateway's chain: Istio's `[jwt_authn?, router]` with the program's
    patches from `ratelimit-filter` and `ratelimit-actions` (in render order)."""
    patches = [p for f in gateway_filters for p in f["spec"]["configPatches"]]
    for patch in patches:
        if patch["match"]["context"] != "GATEWAY":
            raise RenderError("a gateway patch outside the GATEWAY context")
    base: list[dict[str, Any]] = []
    if request_authentication is not None:
        base.append(jwt_authn_filter(request_authentication["spec"], jwks))
    base.append(ROUTER)
    vhost = apply_vhost_patches(
        {"name": "gateway", "domains": ["*"], "routes": [_route(UPSTREAM_HTTP, False)]}, patches
    )
    hcm = apply_hcm_patches(
        {
            "@type": HCM_TYPE,
            "stat_prefix": "outbound_0.0.0.0_8443",
            "codec_type": "AUTO",
            "use_remote_address": True,
            "route_config": {"name": "https.443", "virtual_hosts": [vhost]},
            "http_filters": apply_http_filter_patches(base, patches),
        },
        patches,
    )
    return Listener("gateway", port, False, _hcm_listener("gateway", port, hcm, access_log))


def passthrough_listener(port: int) -> Listener:
    """A listener with only the router, answering itself like an HTTP sidecar listener: the
    load generator's ceiling through this Envoy, the most a limited listener can be offered."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "passthrough",
        "codec_type": "AUTO",
        "route_config": {
            "name": "passthrough",
            "virtual_hosts": [
                {"name": "passthrough", "domains": ["*"], "routes": [_direct_route()]}
            ],
        },
        "http_filters": [ROUTER],
    }
    return Listener("passthrough", port, False, _hcm_listener("passthrough", port, hcm, None))


def ratelimit_cluster_name(gateway_filters: Sequence[Mapping[str, Any]]) -> str:
    """The cluster the rendered ratelimit filter calls (`envoy_grpc.cluster_name`)."""
    for envoy_filter in gateway_filters:
        for patch in envoy_filter["spec"]["configPatches"]:
            config = patch["patch"]["value"].get("typed_config", {})
            service = config.get("rate_limit_service")
            if service:
                return str(service["grpc_service"]["envoy_grpc"]["cluster_name"])
    raise RenderError("no ratelimit filter in the gateway's EnvoyFilters")


def _cluster(name: str, port: int, *, http2: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": PROTOCOL_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def bootstrap(
    listeners: list[Listener],
    *,
    admin_port: int,
    upstream_http: int,
    upstream_grpc: int,
    ratelimit: tuple[str, int] | None,
) -> dict[str, Any]:
    """The bootstrap: admin on loopback, the listeners, the upstream and ratelimit clusters."""
    clusters = [
        _cluster(UPSTREAM_HTTP, upstream_http, http2=False),
        _cluster(UPSTREAM_GRPC, upstream_grpc, http2=True),
    ]
    if ratelimit is not None:
        clusters.append(_cluster(ratelimit[0], ratelimit[1], http2=True))
    return {
        "node": {"id": "dataplane", "cluster": "dataplane"},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [listener.config for listener in listeners],
            "clusters": clusters,
        },
    }
