"""Istio's authorization decision for one request to one workload, from rendered objects.

What a sidecar does with an inbound request, in Istio's documented terms (istio.io
reference "Authorization Policy" and "Peer Authentication", security.istio.io/v1):

1. Peer authentication: the port's mTLS mode is the most specific PeerAuthentication's
   (a workload selector's `portLevelMtls` entry, else its `mtls`; else the namespace's
   policy without selector; else the mesh-wide policy in the root namespace; else
   PERMISSIVE). A plaintext connection to a STRICT port is refused before any policy runs.
2. Authorization: the AuthorizationPolicies that apply are those of the workload's
   namespace whose `selector` matches its labels (no selector: every workload) and those of
   the root namespace likewise. CUSTOM is not used by this program and not evaluated. A
   request matching any DENY policy is denied; otherwise, if any ALLOW policy applies, it is
   allowed only when it matches one of them; with no ALLOW policy it is allowed.
3. Matching: a policy matches when one of its `rules` matches (no rules: matches nothing,
   for ALLOW "allow-nothing"); a rule when every present part matches: one of its `from`
   sources, one of its `to` operations, and every `when` condition (not evaluated here:
   raises). Inside a source or operation every field set must match; a list field matches
   when one item does, a `not*` field when none does. `principals` matches the peer's mTLS
   identity (absent for plaintext: then only `notPrincipals` can match), `*` any present
   identity, `prefix*` / `*suffix` as written; `ipBlocks` the connection's peer address;
   `ports` the destination port; `methods` and `paths` the HTTP request (paths exact,
   `prefix*`, `*suffix`); `requestPrincipals` the verified token's `<iss>/<sub>`; a `when`
   condition on `request.auth.claims[<claim>]` its `values` / `notValues` (any other key
   raises).
4. Request authentication: a token counts only when a RequestAuthentication applying to the
   workload (same namespace rules as above) has a jwtRule with its `iss` byte for byte
   (Envoy's jwt_authn compares issuers exactly) and, when the rule lists `audiences`, an
   `aud` among them. A token no rule accepts is rejected (401, `rejected-token`) before any
   policy runs, when a RequestAuthentication applies; with none, a token is not verified
   and gives the request no request principal. Signatures and expiry are not modelled: a
   token here is one the provider issued.

Pure: rendered documents and a `Request` in, a `Decision` out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

ROOT_NAMESPACE: Final = "istio-system"


@dataclass(frozen=True)
class Request:
    """One request as the destination's sidecar sees it."""

    port: int
    source_ip: str
    principal: str | None = None
    """The peer's mTLS identity (`cluster.local/ns/<ns>/sa/<sa>`); None for plaintext."""
    method: str = "GET"
    path: str = "/"
    token: Mapping[str, Any] | None = None
    """The JWT's payload as sent (`iss`, `sub`, claims); None without a token. Counted only
    when a RequestAuthentication of the workload accepts its issuer (`authenticated`)."""

    @property
    def request_principal(self) -> str | None:
        """`request.auth.principal`: `<iss>/<sub>` of the token."""
        if self.token is None:
            return None
        return f"{self.token.get('iss', '')}/{self.token.get('sub', '')}"


@dataclass(frozen=True)
class Workload:
    """The destination: its namespace and pod labels."""

    namespace: str
    labels: Mapping[str, str]


Decision = Literal["allowed", "denied", "refused-plaintext", "rejected-token"]


def _selects(spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _applying(
    documents: Iterable[Mapping[str, Any]], kind: str, workload: Workload, root: str
) -> list[Mapping[str, Any]]:
    return [
        d
        for d in documents
        if d
        and d.get("kind") == kind
        and str(d.get("apiVersion", "")).startswith("security.istio.io/")
        and d["metadata"].get("namespace") in (workload.namespace, root)
        and _selects(d.get("spec") or {}, workload.labels)
    ]


def mtls_mode(
    documents: Iterable[Mapping[str, Any]],
    workload: Workload,
    port: int,
    root: str = ROOT_NAMESPACE,
) -> str:
    """The effective PeerAuthentication mode of `port` on `workload`."""
    policies = _applying(documents, "PeerAuthentication", workload, root)

    def rank(doc: Mapping[str, Any]) -> int:
        spec = doc.get("spec") or {}
        if doc["metadata"].get("namespace") == workload.namespace:
            return 2 if spec.get("selector") else 1
        return 0

    for doc in sorted(policies, key=rank, reverse=True):
        spec = doc.get("spec") or {}
        port_level = (spec.get("portLevelMtls") or {}).get(str(port))
        if port_level and spec.get("selector"):
            return str(port_level.get("mode", "PERMISSIVE"))
        mode = (spec.get("mtls") or {}).get("mode")
        if mode and mode != "UNSET":
            return str(mode)
    return "PERMISSIVE"


def _string_match(pattern: str, value: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _ip_match(blocks: Sequence[str], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(b, strict=False) for b in blocks)


def _source_matches(source: Mapping[str, Any], request: Request) -> bool:
    principal = request.principal
    request_principal = request.request_principal
    checks = {
        "principals": lambda v: (
            principal is not None and any(_string_match(p, principal) for p in v)
        ),
        "notPrincipals": lambda v: (
            principal is None or not any(_string_match(p, principal) for p in v)
        ),
        "ipBlocks": lambda v: _ip_match(v, request.source_ip),
        "notIpBlocks": lambda v: not _ip_match(v, request.source_ip),
        "namespaces": lambda v: (
            principal is not None and any(_string_match(n, _namespace_of(principal)) for n in v)
        ),
        "notNamespaces": lambda v: (
            principal is None or not any(_string_match(n, _namespace_of(principal)) for n in v)
        ),
        "requestPrincipals": lambda v: (
            request_principal is not None and any(_string_match(p, request_principal) for p in v)
        ),
        "notRequestPrincipals": lambda v: (
            request_principal is None or not any(_string_match(p, request_principal) for p in v)
        ),
    }
    return _fields_match(source, checks)


def _namespace_of(principal: str) -> str:
    parts = principal.split("/")
    return parts[parts.index("ns") + 1] if "ns" in parts else ""


def _operation_matches(operation: Mapping[str, Any], request: Request) -> bool:
    checks = {
        "ports": lambda v: str(request.port) in v,
        "notPorts": lambda v: str(request.port) not in v,
        "methods": lambda v: request.method in v,
        "notMethods": lambda v: request.method not in v,
        "paths": lambda v: any(_string_match(p, request.path) for p in v),
        "notPaths": lambda v: not any(_string_match(p, request.path) for p in v),
    }
    return _fields_match(operation, checks)


def _fields_match(fields: Mapping[str, Any], checks: Mapping[str, Any]) -> bool:
    for key, value in fields.items():
        if key not in checks:
            raise ValueError(f"authorization field {key!r} is not evaluated here")
        if not checks[key](value):
            return False
    return True


CLAIM_KEY: Final = "request.auth.claims["
SPACE_DELIMITED_CLAIMS: Final = frozenset({"scope", "permission"})
"""Claims Istio splits on spaces before matching (a `scope` of "read write" matches `read`)."""


def _condition_matches(condition: Mapping[str, Any], request: Request) -> bool:
    """A `when` condition on a token claim (a list claim matches when one item does)."""
    key = str(condition.get("key", ""))
    if not (key.startswith(CLAIM_KEY) and key.endswith("]")):
        raise ValueError(f"`when` key {key!r} is not evaluated here")
    name = key[len(CLAIM_KEY) : -1]
    if "][" in name:
        raise ValueError(f"`when` key {key!r}: nested claims are not evaluated here")
    claim = (request.token or {}).get(name)
    present = [] if claim is None else claim if isinstance(claim, list) else [claim]
    values = [str(v) for v in present]
    if name in SPACE_DELIMITED_CLAIMS:
        values = [part for v in values for part in v.split()]
    if "values" in condition and not any(
        _string_match(p, v) for p in condition["values"] for v in values
    ):
        return False
    return not any(_string_match(p, v) for p in condition.get("notValues") or [] for v in values)


def _rule_matches(rule: Mapping[str, Any], request: Request) -> bool:
    if not all(_condition_matches(c, request) for c in rule.get("when") or []):
        return False
    sources = rule.get("from")
    if sources and not any(_source_matches(s.get("source") or {}, request) for s in sources):
        return False
    operations = rule.get("to")
    return not operations or any(
        _operation_matches(o.get("operation") or {}, request) for o in operations
    )


def _policy_matches(spec: Mapping[str, Any], request: Request) -> bool:
    return any(_rule_matches(rule or {}, request) for rule in spec.get("rules") or [])


def decide(
    documents: Sequence[Mapping[str, Any]],
    workload: Workload,
    request: Request,
    root: str = ROOT_NAMESPACE,
) -> Decision:
    """What `workload`'s sidecar does with `request` (module docstring)."""
    if request.principal is None and mtls_mode(documents, workload, request.port, root) == "STRICT":
        return "refused-plaintext"
    verified = authenticated(documents, workload, request, root)
    if verified is None:
        return "rejected-token"
    request = verified
    policies = [
        d.get("spec") or {} for d in _applying(documents, "AuthorizationPolicy", workload, root)
    ]
    for spec in policies:
        if spec.get("action", "ALLOW") == "CUSTOM":
            raise ValueError("CUSTOM authorization is not evaluated here")
    if any(s.get("action") == "DENY" and _policy_matches(s, request) for s in policies):
        return "denied"
    allows = [s for s in policies if s.get("action", "ALLOW") == "ALLOW"]
    if not allows:
        return "allowed"
    return "allowed" if any(_policy_matches(s, request) for s in allows) else "denied"


def _audiences(token: Mapping[str, Any]) -> set[str]:
    aud = token.get("aud")
    return {str(a) for a in aud} if isinstance(aud, list) else {str(aud)} if aud else set()


def _accepts(rule: Mapping[str, Any], token: Mapping[str, Any]) -> bool:
    """Whether a jwtRule accepts the token: its issuer exactly, an audience when it lists any."""
    if token.get("iss") != rule.get("issuer"):
        return False
    audiences = {str(a) for a in rule.get("audiences") or []}
    return not audiences or bool(audiences & _audiences(token))


def authenticated(
    documents: Sequence[Mapping[str, Any]],
    workload: Workload,
    request: Request,
    root: str = ROOT_NAMESPACE,
) -> Request | None:
    """`request` as the workload's RequestAuthentications leave it (module docstring, 4): the
    token kept if a rule accepts it, dropped if none applies, None (rejected) otherwise."""
    token = request.token
    if token is None:
        return request
    rules = [
        rule
        for doc in _applying(documents, "RequestAuthentication", workload, root)
        for rule in (doc.get("spec") or {}).get("jwtRules") or []
    ]
    if not rules:
        return replace(request, token=None)
    return request if any(_accepts(rule, token) for rule in rules) else None
