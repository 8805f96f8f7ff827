"""Cross-field rules of the security settings, as plain functions over narrow arguments.

Each checks a rule that spans more than one model (a service's protocol and its `jwt` and
`authorization`, or `security.mtlsExceptions` and the services they cover) and raises
`RuleViolationError` with one line naming the key. The root model (`components.settings`)
calls them from its validators, so the key paths are relative to what it validates: a
service (`services[i]`) or the stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from components.constants import workload_apps
from components.security.settings import (
    AllowRule,
    IdentityProvider,
    JwtSettings,
    MtlsException,
)
from components.settings_types import RuleViolationError

if TYPE_CHECKING:
    from components.settings import MeshService

_GRPC_PATH: Final = (
    r"^(\*|/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+/(\*|[A-Za-z_][A-Za-z0-9_]*\*?))$"
)
"""What a gRPC request's `:path` can match: `/<package.Service>/<Method>`, a method prefix
(`/pkg.Svc/Get*`), every method of a service (`/pkg.Svc/*`), or `*`. The package is
required, so the REST-style default `/api/*` is not mistaken for a gRPC service `api`."""


def check_grpc_protected_paths(protocol: str, jwt: JwtSettings | None) -> None:
    """A `grpc` service's `jwt.protectedPaths` are gRPC paths: no gRPC request has another
    path, so any other protected path would never deny anything."""
    if protocol != "grpc" or jwt is None:
        return
    for index, path in enumerate(jwt.protected_paths):
        if not re.match(_GRPC_PATH, path):
            raise RuleViolationError(
                ("jwt", "protectedPaths", index),
                path,
                "must be `*` or `/<package.Service>/<Method>` (`*` method or suffix allowed) "
                "on a grpc service; no gRPC request has another path",
            )


def check_allow_rules_can_match(
    protocol: str, jwt: JwtSettings | None, rules: Sequence[AllowRule]
) -> None:
    """Each of a service's `authorization` rules can match a request it receives.

    A rule that can never match is an error, not a silent deny: `requestPrincipals` (and
    so `claims`) exist only with the service's own RequestAuthentication (`jwt`), and a
    `grpc` service only receives `POST /<package.Service>/<Method>`.
    """
    grpc = protocol == "grpc"
    for index, rule in enumerate(rules):
        where = ("authorization", index)
        if rule.request_principals and jwt is None:
            raise RuleViolationError(
                (*where, "requestPrincipals"),
                list(rule.request_principals),
                "needs the service's jwt: without a RequestAuthentication no request has a "
                "request principal",
            )
        if not grpc:
            continue
        for position, method in enumerate(rule.methods):
            if method != "POST":
                raise RuleViolationError(
                    (*where, "methods", position),
                    method,
                    "must be POST on a grpc service: every gRPC call is a POST",
                )
        for position, path in enumerate(rule.paths):
            if not re.match(_GRPC_PATH, path) or path == "*":
                raise RuleViolationError(
                    (*where, "paths", position),
                    path,
                    "must be `/<package.Service>/<Method>` (`*` method or suffix allowed) on a "
                    "grpc service; gRPC calls have no other path",
                )


def check_gateway_rules_routed(exposed: bool, rules: Sequence[AllowRule]) -> None:
    """A `fromIngressGateway` rule needs the service exposed (`traffic.expose`).

    The ingress gateway only sends a service the requests of the public hosts a Gateway-bound
    VirtualService routes to it (Flagger's, for a progressive service): without `expose` no
    route exists, the rule never matches, and the reads it "opens through the gateway" get
    404 at the gateway (found by `make simulate`: Istio 1.30.4's generated gateway routes
    for market-data had no virtual host for it).
    """
    if exposed:
        return
    for index, rule in enumerate(rules):
        if rule.from_ingress_gateway:
            raise RuleViolationError(
                ("authorization", index, "fromIngressGateway"),
                True,
                "needs traffic.expose: the ingress gateway routes only to services exposed on "
                "a public host, so without it this rule never matches",
            )


READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
"""HTTP methods that change nothing (RFC 9110 safe methods)."""


def accepts_writes(protocol: str, rules: Sequence[AllowRule]) -> bool:
    """Whether a service may receive requests that change state: every gRPC call is a
    `POST` whose method may write; an HTTP service unless its ALLOW rules (default-deny
    admits nothing else) each name methods, all of them safe."""
    if protocol == "grpc" or not rules:
        return True
    return any(not rule.methods or not set(rule.methods) <= READ_METHODS for rule in rules)


def check_rule_ports_are_extra_ports(port: int, rules: Sequence[AllowRule]) -> None:
    """An `authorization` rule's `ports` are the workload's other ports (a metrics port).

    Every request of the service arrives on its own `port`, so a rule whose `ports` hold it
    and that names no source matches every caller of the API: the allow-all that an empty
    rule is refused for, spelt with a port.
    """
    for index, rule in enumerate(rules):
        sourced = (
            rule.service_accounts
            or rule.request_principals
            or rule.from_ingress_gateway
            or rule.ip_blocks
        )
        if port in rule.ports and not sourced:
            raise RuleViolationError(
                ("authorization", index, "ports", rule.ports.index(port)),
                port,
                "is the service's own port: without a source this rule admits every caller "
                "of the API; ports are for the workload's other ports (e.g. a metrics port), "
                "name a source (serviceAccounts, requestPrincipals, ipBlocks) instead",
            )


def _admits_plaintext(rule: AllowRule, port: int | None) -> bool:
    """Whether a rule can match a plaintext request (no mTLS identity), on `port` if set:
    no identity source, and it names the callers' addresses or the port."""
    if rule.service_accounts or rule.from_ingress_gateway:
        return False
    if rule.ip_blocks:
        return port is None or not rule.ports or port in rule.ports
    return bool(rule.ports) and (port is None or port in rule.ports)


def check_mtls_exceptions_admit_plaintext(
    exceptions: Sequence[MtlsException], services: Sequence[MeshService]
) -> None:
    """Each PERMISSIVE/DISABLE exception needs an ALLOW rule plaintext clients can match.

    Plaintext callers have no mTLS identity, so under default-deny every identity-based
    ALLOW answers them 403: an exception without a `ports` or `ipBlocks` rule (and no
    identity source) on a service it covers only admits clients to reject them. An
    exception selecting `app` covers the service of that name and its Flagger primary.
    """
    for index, exception in enumerate(exceptions):
        app = exception.selector.get("app")
        covered = [
            s
            for s in services
            if s.namespace == exception.namespace
            and (app is None or app in workload_apps(s.name, progressive=True))
        ]
        for position, exception_port in enumerate(exception.ports):
            collides = [s.name for s in covered if s.port == exception_port]
            if collides:
                raise RuleViolationError(
                    ("security", "mtlsExceptions", index, "ports", position),
                    exception_port,
                    f"is the service port of {collides[0]}: a port-level exception is for the "
                    "workload's other ports (its plaintext callers are admitted by port, "
                    "without an identity); for plaintext API callers leave out `ports` and "
                    "admit them by ipBlocks",
                )
        rules = [rule for s in covered for rule in s.authorization]
        ports: tuple[int | None, ...] = exception.ports or (None,)
        for port in ports:
            if not any(_admits_plaintext(rule, port) for rule in rules):
                where = f"port {port} of " if port is not None else ""
                raise RuleViolationError(
                    ("security", "mtlsExceptions", index),
                    exception.name,
                    f"needs an authorization rule for {where}the services it covers with "
                    "`ports` or `ipBlocks` and no serviceAccounts/fromIngressGateway: "
                    "plaintext clients have no identity, every other ALLOW answers them 403",
                )


def check_identity_providers(providers: Mapping[str, IdentityProvider]) -> None:
    """One identity provider per issuer: two names for one `iss` would give a workload
    two jwtRules of one issuer, which Istio leaves undefined."""
    seen: dict[str, str] = {}
    for name, provider in providers.items():
        if provider.issuer in seen:
            raise RuleViolationError(
                ("identityProviders", name, "issuer"),
                provider.issuer,
                f"is already the issuer of identity provider {seen[provider.issuer]!r}; "
                "declare each issuer once",
            )
        seen[provider.issuer] = name


def check_jwt_providers(
    providers: Mapping[str, IdentityProvider], services: Sequence[MeshService]
) -> None:
    """Each service's `jwt.provider` is declared, and its `requestPrincipals` are spelled
    with that provider's issuer (`<iss>/<sub>`; Envoy compares `iss` byte for byte, so
    another spelling matches no token)."""
    for index, service in enumerate(services):
        if service.jwt is None:
            continue
        provider = providers.get(service.jwt.provider)
        if provider is None:
            raise RuleViolationError(
                ("services", index, "jwt", "provider"),
                service.jwt.provider,
                f"must name one of identityProviders ({', '.join(sorted(providers)) or 'none'})",
            )
        for position, rule in enumerate(service.authorization):
            for at, principal in enumerate(rule.request_principals):
                if principal.startswith("*") or principal.startswith(f"{provider.issuer}/"):
                    continue
                raise RuleViolationError(
                    ("services", index, "authorization", position, "requestPrincipals", at),
                    principal,
                    f"must be `{provider.issuer}/<subject>` (issuer of identity provider "
                    f"{service.jwt.provider!r}) or start with `*`: no token has another `iss`",
                )
