"""Envoy's authorization decision on a sidecar's inbound listener, read from the listener
istiod generates (`virtualInbound`), for one connection and request.

What the sidecar does, in Envoy's terms (envoy `api/envoy/config/rbac/v3/rbac.proto`,
`source/extensions/filters/common/rbac/matchers.cc`, listener filter chain matching):

1. **Filter chain**: the connection lands on the chain whose `filterChainMatch` is the most
   specific match, criterion by criterion in Envoy's order (destination port, then transport
   protocol, then application protocols); at each step chains that name the value win over
   chains that leave it open, and there is no backtracking. No chain: the connection is
   closed. Istio puts only `tls` chains on a STRICT port, so plaintext there is refused
   before any policy runs; a PERMISSIVE port also has a `raw_buffer` chain.
2. **Filters in order**: every `envoy.filters.network.rbac` of the chain (no request
   headers: it sees the connection only), then, in the HTTP connection manager, every
   `envoy.filters.http.rbac`. Each must let the request through. istiod puts its DENY
   filter before its ALLOW filter, so DENY policies are decided first.
3. **One RBAC filter**: no `rules` lets everything through. Otherwise the policies are
   OR'ed: ALLOW (the default action) lets the request through only if a policy matches
   (so an ALLOW filter whose policies match nothing denies everything), DENY only if none
   matches, LOG always. A policy matches when one of its `permissions` and one of its
   `principals` match.
4. **Matchers**: `and_rules`/`and_ids` all, `or_rules`/`or_ids` one, `not_rule`/`not_id`
   the negation, `any` always; `destination_port` the connection's original destination
   port; `header` the request header (`:method` for an HTTP filter; none for a network
   filter), with `invert_match`; `authenticated` only on a TLS connection with a peer
   certificate, its `principal_name` matched against the certificate's URI SAN (Istio's
   `spiffe://<trust domain>/ns/<ns>/sa/<sa>`); `direct_remote_ip`, `remote_ip` and
   `source_ip` the peer's address (no proxy protocol or XFF here, so all three are the
   peer); string matchers `exact`, `prefix`, `suffix`, `contains`, `safe_regex` (RE2 full
   match), with `ignore_case`.

Anything else in a chain match or an RBAC policy (metadata, filter state, SNI, CEL
conditions, `ext_authz`) raises `UnmodelledError` instead of being guessed.

Pure: a listener dict (istiod's protojson) and a `Connection` in, a `Decision` out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tools.simulate.matchers import UnmodelledError, header_matches, string_matches

HTTP_RBAC: Final = "envoy.filters.http.rbac"
NETWORK_RBAC: Final = "envoy.filters.network.rbac"
HCM: Final = "envoy.filters.network.http_connection_manager"
UNMODELLED_FILTERS: Final = frozenset(
    {"envoy.filters.http.ext_authz", "envoy.filters.network.ext_authz"}
)


@dataclass(frozen=True)
class Connection:
    """One request as the destination's sidecar receives it."""

    port: int
    """The original destination port (the listener is `virtualInbound`, 15006)."""
    source_ip: str
    principal: str | None
    """The peer certificate's URI SAN; None: plaintext (no TLS)."""
    alpn: tuple[str, ...] = ()
    """ALPN the client offers (an Istio client sidecar: `istio-http/1.1`, `istio-h2`)."""
    method: str = "GET"
    path: str = "/"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    chain: str
    """The filter chain the connection landed on ("" when none)."""
    decided_by: str
    """`<filter>: <policy>` that allowed or denied, or why the connection was closed."""

    def text(self) -> str:
        verdict = "ALLOW" if self.allowed else "DENY"
        where = f" on chain {self.chain}" if self.chain else ""
        return f"{verdict}{where}: {self.decided_by}"


def inbound_listener(listeners: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The sidecar's `virtualInbound` listener."""
    for listener in listeners:
        if listener.get("name") == "virtualInbound":
            return listener
    raise UnmodelledError("the proxy has no virtualInbound listener")


# --- filter chain ------------------------------------------------------------------------------


def _port_criterion(match: Mapping[str, Any], conn: Connection) -> bool | None:
    port = match.get("destinationPort")
    return None if port is None else int(port) == conn.port


def _transport_criterion(match: Mapping[str, Any], conn: Connection) -> bool | None:
    transport = match.get("transportProtocol")
    if not transport:
        return None
    return bool(transport == ("tls" if conn.principal is not None else "raw_buffer"))


def _alpn_criterion(match: Mapping[str, Any], conn: Connection) -> bool | None:
    protocols = match.get("applicationProtocols")
    if not protocols:
        return None
    return any(p in protocols for p in conn.alpn)


CHAIN_CRITERIA: Final[tuple[Callable[[Mapping[str, Any], Connection], bool | None], ...]] = (
    _port_criterion,
    _transport_criterion,
    _alpn_criterion,
)
"""Envoy's order for the criteria Istio's inbound chains use."""
UNMODELLED_CHAIN_FIELDS: Final = (
    "prefixRanges",
    "serverNames",
    "directSourcePrefixRanges",
    "sourceType",
    "sourcePrefixRanges",
    "sourcePorts",
    "addressSuffix",
    "suffixLen",
)


def select_filter_chain(listener: Mapping[str, Any], conn: Connection) -> Mapping[str, Any] | None:
    """The chain Envoy picks for the connection (None: no chain, the connection is closed)."""
    candidates = list(listener.get("filterChains") or [])
    for chain in candidates:
        match = chain.get("filterChainMatch") or {}
        for name in UNMODELLED_CHAIN_FIELDS:
            if match.get(name):
                raise UnmodelledError(f"filter chain {chain.get('name')} matches on {name}")
    for criterion in CHAIN_CRITERIA:
        results = [(c, criterion(c.get("filterChainMatch") or {}, conn)) for c in candidates]
        named = [c for c, r in results if r is True]
        candidates = named or [c for c, r in results if r is None]
        if not candidates:
            break
    if not candidates:
        default = listener.get("defaultFilterChain")
        return dict(default) if default else None
    chosen: Mapping[str, Any] = candidates[0]
    return chosen


# --- matchers ----------------------------------------------------------------------------------


def cidr_contains(cidr: Mapping[str, Any], address: str) -> bool:
    """Envoy's CidrRange: `addressPrefix` / `prefixLen` (absent: 0)."""
    network = ipaddress.ip_network(
        f"{cidr['addressPrefix']}/{int(cidr.get('prefixLen') or 0)}", strict=False
    )
    ip = ipaddress.ip_address(address)
    return ip.version == network.version and ip in network


def permission_matches(
    permission: Mapping[str, Any], conn: Connection, headers: Mapping[str, str]
) -> bool:
    if "andRules" in permission:
        return all(permission_matches(p, conn, headers) for p in permission["andRules"]["rules"])
    if "orRules" in permission:
        return any(permission_matches(p, conn, headers) for p in permission["orRules"]["rules"])
    if "notRule" in permission:
        return not permission_matches(permission["notRule"], conn, headers)
    if permission.get("any"):
        return True
    if "destinationPort" in permission:
        return int(permission["destinationPort"]) == conn.port
    if "destinationPortRange" in permission:
        span = permission["destinationPortRange"]
        return int(span.get("start", 0)) <= conn.port < int(span.get("end", 0))
    if "header" in permission:
        return header_matches(permission["header"], headers)
    if "urlPath" in permission:
        # A network filter has no request: no path to match (PathMatcher: no :path, false).
        if ":path" not in headers:
            return False
        return string_matches(permission["urlPath"]["path"], headers[":path"].split("?", 1)[0])
    raise UnmodelledError(f"permission {sorted(permission)}")


def principal_matches(
    principal: Mapping[str, Any], conn: Connection, headers: Mapping[str, str]
) -> bool:
    if "andIds" in principal:
        return all(principal_matches(p, conn, headers) for p in principal["andIds"]["ids"])
    if "orIds" in principal:
        return any(principal_matches(p, conn, headers) for p in principal["orIds"]["ids"])
    if "notId" in principal:
        return not principal_matches(principal["notId"], conn, headers)
    if principal.get("any"):
        return True
    if "authenticated" in principal:
        if conn.principal is None:
            return False  # no TLS peer: not authenticated (AuthenticatedMatcher)
        name = (principal["authenticated"] or {}).get("principalName")
        return name is None or string_matches(name, conn.principal)
    for key in ("directRemoteIp", "remoteIp", "sourceIp"):
        if key in principal:
            return cidr_contains(principal[key], conn.source_ip)
    if "header" in principal:
        return header_matches(principal["header"], headers)
    raise UnmodelledError(f"principal {sorted(principal)}")


def policy_matches(policy: Mapping[str, Any], conn: Connection, headers: Mapping[str, str]) -> bool:
    """One of the permissions and one of the principals (and no condition)."""
    if policy.get("condition") or policy.get("checkedCondition"):
        raise UnmodelledError("RBAC policy with a CEL condition")
    return any(permission_matches(p, conn, headers) for p in policy.get("permissions", [])) and any(
        principal_matches(p, conn, headers) for p in policy.get("principals", [])
    )


def rbac_filter(config: Mapping[str, Any], conn: Connection, headers: Mapping[str, str]) -> str:
    """`allow: <why>` or `deny: <why>` for one RBAC filter's config."""
    if "matcher" in config:
        raise UnmodelledError("RBAC filter with a `matcher` tree")
    rules = config.get("rules")
    if rules is None:
        return "allow: no rules"
    action = rules.get("action", "ALLOW")
    matched = [
        name
        for name, policy in sorted((rules.get("policies") or {}).items())
        if policy_matches(policy, conn, headers)
    ]
    if action == "ALLOW":
        return f"allow: {matched[0]}" if matched else "deny: no ALLOW policy matches"
    if action == "DENY":
        return f"deny: {matched[0]}" if matched else "allow: no DENY policy matches"
    return "allow: LOG"


def inbound_decision(listener: Mapping[str, Any], conn: Connection) -> Decision:
    """Whether the sidecar lets `conn` through to the workload, and what decided it."""
    chain = select_filter_chain(listener, conn)
    if chain is None:
        transport = "TLS" if conn.principal is not None else "plaintext"
        return Decision(False, "", f"no filter chain accepts {transport} on {conn.port}")
    chain_name = str(chain.get("name", ""))
    headers = {":method": conn.method, ":path": conn.path}
    reasons: list[str] = []
    for network_filter in chain.get("filters") or []:
        name = network_filter.get("name")
        config = network_filter.get("typedConfig") or {}
        if name in UNMODELLED_FILTERS:
            raise UnmodelledError(f"{name} on chain {chain_name}")
        if name == NETWORK_RBAC:
            verdict = rbac_filter(config, conn, {})
            if verdict.startswith("deny"):
                return Decision(False, chain_name, f"{NETWORK_RBAC} {verdict[6:]}")
            reasons.append(f"{NETWORK_RBAC} {verdict[7:]}")
        if name == HCM:
            for http_filter in config.get("httpFilters") or []:
                http_name = http_filter.get("name")
                if http_name in UNMODELLED_FILTERS:
                    raise UnmodelledError(f"{http_name} on chain {chain_name}")
                if http_name != HTTP_RBAC:
                    continue
                verdict = rbac_filter(http_filter.get("typedConfig") or {}, conn, headers)
                if verdict.startswith("deny"):
                    return Decision(False, chain_name, f"{HTTP_RBAC} {verdict[6:]}")
                reasons.append(f"{HTTP_RBAC} {verdict[7:]}")
    return Decision(True, chain_name, "; ".join(reasons) or "no RBAC filter")
