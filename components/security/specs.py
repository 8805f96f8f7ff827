"""Pure builders of mesh security: PeerAuthentication, RequestAuthentication, policies.

Plain functions from settings to `security.istio.io/v1` specs, unit-tested without the
Pulumi engine; `MeshSecurity` only wires them into resources.

How the pieces combine in a workload namespace (Istio evaluates DENY before ALLOW, and
with any ALLOW policy present a request must match one of them):

- `allow-nothing` (`spec: {}`) makes the namespace default-deny;
- `allow-metrics-scraping` lets Prometheus (`security.prometheusServiceAccounts`) `GET`
  the namespace's metrics paths, and nothing else;
- `allow-public-paths` keeps `GET /health`, `/status`… reachable for every caller;
- `<service>-allow` holds the service's own rules (service accounts, gateway, JWT
  identities and claims, paths, methods);
- `<service>-allow-callers` lets in the services whose `calls` name this one;
- `<service>-allow-loadtester` lets Flagger's loadtester in, on the canary pods of a
  progressive service only (`app: <service>`, not `<service>-primary`);
- `<service>-allow-routed` lets in, on the routed paths only, the callers of every
  service whose endpoint routes send paths to this one (see `RoutedFrom`);
- `<service>-require-jwt` (DENY) rejects requests without a JWT on protected paths,
  except from the mesh identities the service's own ALLOW policies name (callers,
  `serviceAccounts` rules without `requestPrincipals`) and the identities admitted for
  one purpose (Prometheus where it scrapes, the loadtester on canary pods): DENY is
  evaluated before ALLOW, so without that exemption those ALLOW rules could never match;
- `<service>-jwt-via-<ns>-<name>` / `<service>-require-jwt-via-<ns>-<name>` carry the JWT
  requirement of a routing service onto the routed paths of this one.

No namespace is trusted as a whole: every exemption and every opening names principals.
Flagger's namespace (only in a region with progressive services) is default-deny too, and
its loadtester, which runs any command a caller sends it (`bash -c`), admits only the
Flagger controller (`flagger_namespace_policies`).

Sidecar ports 15020 (health probes rewritten by istiod, merged Prometheus metrics) and
15090 (Envoy stats) are served by the proxy itself and never reach authorization, so
kubelet probes and sidecar scraping work under default-deny without a rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from components.constants import (
    FLAGGER_SERVICE_ACCOUNT,
    LOADTESTER_APP,
    LOADTESTER_SERVICE_ACCOUNT,
    ingress_gateway_principal,
    workload_principal,
)
from components.security.settings import (
    AllowRule,
    IdentityProvider,
    JwtSettings,
    MtlsException,
)
from components.service_graph import ServiceId

MESH_WIDE_NAME: Final = "default"
"""Name of the mesh-wide PeerAuthentication, as Istio's docs call it."""

ALLOW_NOTHING: Final = "allow-nothing"
ALLOW_METRICS: Final = "allow-metrics-scraping"
ALLOW_PUBLIC: Final = "allow-public-paths"
LOADTESTER_ALLOW_FLAGGER: Final = "loadtester-allow-flagger"

METRICS_PATH: Final = "/metrics"
"""Path of a `MetricsEndpoint` (the quota service's metrics): the Prometheus convention."""


def flagger_principal(flagger_namespace: str) -> str:
    """Identity of the Flagger controller, which calls the loadtester's webhooks."""
    return workload_principal(flagger_namespace, FLAGGER_SERVICE_ACCOUNT)


def loadtester_principal(flagger_namespace: str) -> str:
    """Identity of Flagger's loadtester, which sends the canary's tests and load."""
    return workload_principal(flagger_namespace, LOADTESTER_SERVICE_ACCOUNT)


def caller_principals(callers: Iterable[ServiceId]) -> list[str]:
    """Identities of calling services: each workload is assumed to run as a service
    account named after its service (the convention `calls` relies on)."""
    return sorted({workload_principal(caller.namespace, caller.name) for caller in callers})


def callers_allow_spec(app: str, principals: Sequence[str]) -> dict[str, Any]:
    """ALLOW the services that declare `calls` to this one, on pods `app: <app>`."""
    return {
        "selector": _selector(app),
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": list(principals)}}]}],
    }


def ingress_gateway_allow_spec(app: str) -> dict[str, Any]:
    """ALLOW everything the ingress gateway forwards to pods `app: <app>` (an exposed
    service without rules of its own; with rules, the rules decide)."""
    return {
        "selector": _selector(app),
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": [ingress_gateway_principal()]}}]}],
    }


def mesh_peer_authentication_spec() -> dict[str, Any]:
    """Mesh-wide STRICT mTLS: in the root namespace, without a selector."""
    return {"mtls": {"mode": "STRICT"}}


def exception_peer_authentication_spec(exception: MtlsException) -> dict[str, Any]:
    """A narrow exception: the whole namespace, some workloads, or some of their ports.

    A port-level exception keeps the workload's other ports STRICT explicitly, so the
    exception can never widen beyond the listed ports.
    """
    spec: dict[str, Any] = {}
    if exception.selector:
        spec["selector"] = {"matchLabels": dict(exception.selector)}
    if exception.ports:
        spec["mtls"] = {"mode": "STRICT"}
        spec["portLevelMtls"] = {str(port): {"mode": exception.mode} for port in exception.ports}
    else:
        spec["mtls"] = {"mode": exception.mode}
    return spec


def allow_nothing_spec() -> dict[str, Any]:
    """Default-deny: an ALLOW policy without rules matches nothing (Istio's `allow-nothing`)."""
    return {}


def metrics_scraping_spec(principals: Iterable[str], paths: Iterable[str]) -> dict[str, Any]:
    """ALLOW Prometheus (`principals`) to `GET` the metrics `paths`, and nothing else.

    Paths, not ports: ServiceMonitors name their ports, AuthorizationPolicy `ports` are
    numbers the settings do not know.
    """
    return {
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": sorted(set(principals))}}],
                "to": [{"operation": {"methods": ["GET"], "paths": sorted(set(paths))}}],
            }
        ],
    }


def loadtester_allow_spec(app: str, principal: str) -> dict[str, Any]:
    """ALLOW Flagger's loadtester on the canary pods `app: <app>` of a progressive service."""
    return {
        "selector": _selector(app),
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": [principal]}}]}],
    }


def flagger_namespace_policies(flagger_namespace: str) -> Mapping[str, dict[str, Any]]:
    """Flagger's namespace: default-deny, and the loadtester admits only the controller.

    The loadtester runs what a webhook's payload says (`type: bash` → `bash -c`), so
    any other caller could run commands under the loadtester's identity.
    """
    return {
        ALLOW_NOTHING: allow_nothing_spec(),
        LOADTESTER_ALLOW_FLAGGER: {
            "selector": _selector(LOADTESTER_APP),
            "action": "ALLOW",
            "rules": [
                {"from": [{"source": {"principals": [flagger_principal(flagger_namespace)]}}]}
            ],
        },
    }


def public_paths_spec(paths: Sequence[str]) -> dict[str, Any]:
    """ALLOW `GET`/`HEAD` of the health endpoints, from anyone."""
    return {
        "action": "ALLOW",
        "rules": [{"to": [{"operation": {"methods": ["GET", "HEAD"], "paths": list(paths)}}]}],
    }


def _selector(app: str) -> dict[str, Any]:
    return {"matchLabels": {"app": app}}


def _rule(rule: AllowRule) -> dict[str, Any]:
    source: dict[str, Any] = {}
    principals = [workload_principal(*account.split("/", 1)) for account in rule.service_accounts]
    if rule.from_ingress_gateway:
        principals.append(ingress_gateway_principal())
    if principals:
        source["principals"] = principals
    if rule.request_principals:
        source["requestPrincipals"] = list(rule.request_principals)
    if rule.ip_blocks:
        source["ipBlocks"] = list(rule.ip_blocks)
    operation: dict[str, Any] = {}
    if rule.paths:
        operation["paths"] = list(rule.paths)
    if rule.methods:
        operation["methods"] = list(rule.methods)
    if rule.ports:
        operation["ports"] = [str(port) for port in rule.ports]
    result: dict[str, Any] = {}
    if source:
        result["from"] = [{"source": source}]
    if operation:
        result["to"] = [{"operation": operation}]
    if rule.claims:
        result["when"] = [
            {"key": f"request.auth.claims[{claim}]", "values": list(values)}
            for claim, values in sorted(rule.claims.items())
        ]
    return result


def service_allow_spec(app: str, rules: Sequence[AllowRule]) -> dict[str, Any]:
    """ALLOW the service's own rules, on pods `app: <app>`."""
    return {"selector": _selector(app), "action": "ALLOW", "rules": [_rule(r) for r in rules]}


def request_authentication_spec(
    app: str, jwt: JwtSettings, provider: IdentityProvider
) -> dict[str, Any]:
    """RequestAuthentication: pods `app: <app>` accept tokens of `provider`, the mesh-wide
    identity provider `jwt.provider` names (one issuer string in every region)."""
    rule: dict[str, Any] = {
        "issuer": provider.issuer,
        "jwksUri": provider.jwks_uri,
        "forwardOriginalToken": jwt.forward_original_token,
    }
    if jwt.audiences:
        rule["audiences"] = list(jwt.audiences)
    if jwt.output_payload_to_header:
        rule["outputPayloadToHeader"] = jwt.output_payload_to_header
    return {"selector": _selector(app), "jwtRules": [rule]}


def require_jwt_spec(
    app: str,
    jwt: JwtSettings,
    public_paths: Sequence[str],
    *,
    exempt_principals: Sequence[str] = (),
    paths: Sequence[str] | None = None,
) -> dict[str, Any]:
    """DENY requests without a valid JWT on the protected paths (or on `paths`).

    RequestAuthentication alone accepts requests that carry no token. The public health
    paths stay exempt, so health checks keep working. `exempt_principals` are the mesh
    identities the workload's ALLOW policies let in by identity alone
    (`jwt_exempt_principals`, Prometheus where it scrapes, the loadtester on canary pods):
    DENY is evaluated before ALLOW, so without the exemption those ALLOW rules could never
    match; the ALLOW policies still bound what each may do. No namespace is exempt. The
    ingress gateway is never exempt: it forwards end users' requests.
    """
    operation: dict[str, Any] = {"paths": list(jwt.protected_paths if paths is None else paths)}
    if public_paths:
        operation["notPaths"] = list(public_paths)
    source: dict[str, Any] = {"notRequestPrincipals": ["*"]}
    exempt = sorted(set(exempt_principals) - {ingress_gateway_principal()})
    if exempt:
        source["notPrincipals"] = exempt
    return {
        "selector": _selector(app),
        "action": "DENY",
        "rules": [{"from": [{"source": source}], "to": [{"operation": operation}]}],
    }


def jwt_exempt_principals(
    rules: Sequence[AllowRule], caller_principals: Iterable[str]
) -> list[str]:
    """Mesh identities a workload's ALLOW policies let in without a token: its callers and
    the `serviceAccounts` of rules that do not also require `requestPrincipals`. Never the
    ingress gateway (it carries end users' requests, which must bring a token)."""
    principals = set(caller_principals)
    for rule in rules:
        if not rule.request_principals:
            principals.update(
                workload_principal(*account.split("/", 1)) for account in rule.service_accounts
            )
    return sorted(principals - {ingress_gateway_principal()})


def route_path(prefix: str | None, exact: str | None) -> str:
    """The AuthorizationPolicy path of an endpoint route's URI match (`exact` or `prefix`):
    Istio policy paths match a prefix with a trailing `*`."""
    if exact is not None:
        return exact
    if prefix is None:
        raise ValueError("an endpoint route has `prefix` or `exact`")
    return f"{prefix}*"


def _intersect(routed: str, protected: str) -> str | None:
    """The policy path both patterns match, or None. Patterns are `*`, `/exact` or
    `/prefix*` (the settings allow nothing else)."""
    if protected == "*":
        return routed
    if routed == "*":
        return protected
    routed_prefix, protected_prefix = routed.endswith("*"), protected.endswith("*")
    if not routed_prefix and not protected_prefix:
        return routed if routed == protected else None
    if not protected_prefix:
        return protected if protected.startswith(routed[:-1]) else None
    if not routed_prefix:
        return routed if routed.startswith(protected[:-1]) else None
    if routed[:-1].startswith(protected[:-1]):
        return routed
    if protected[:-1].startswith(routed[:-1]):
        return protected
    return None


def intersect_paths(routed: Sequence[str], protected: Sequence[str]) -> list[str]:
    """Policy paths matched by one of `routed` AND one of `protected` (exactly, no
    over- or under-approximation: both sides are exact paths or prefixes)."""
    found = {_intersect(r, p) for r in routed for p in protected}
    return sorted(path for path in found if path is not None)


@dataclass(frozen=True)
class RoutedFrom:
    """Endpoint routes of service `namespace/name` (X) whose backend is this workload (Y).

    X's VirtualService is applied by the CALLER's sidecar (or the ingress gateway), so Y
    receives those requests with the caller's identity, not X's: the callers of X (and
    the gateway when X is exposed) must be allowed on Y for the routed `paths`, and X's
    JWT requirement must hold on them at Y too.
    """

    namespace: str
    name: str
    paths: tuple[str, ...]
    principals: tuple[str, ...]
    jwt: JwtSettings | None = None


def routed_allow_spec(app: str, routed: Sequence[RoutedFrom]) -> dict[str, Any]:
    """ALLOW, on pods `app: <app>`, each routing service's callers on its routed paths."""
    return {
        "selector": _selector(app),
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": list(r.principals)}}],
                "to": [{"operation": {"paths": list(r.paths)}}],
            }
            for r in routed
            if r.principals
        ],
    }


def namespace_policies(
    public_paths: Sequence[str],
    *,
    scrapers: Sequence[str] = (),
    metrics_paths: Iterable[str] = (),
) -> Mapping[str, dict[str, Any]]:
    """The AuthorizationPolicies a workload namespace gets, by metadata name: default-deny,
    the public paths, and Prometheus (`scrapers`) on the namespace's `metrics_paths`."""
    policies = {ALLOW_NOTHING: allow_nothing_spec()}
    if public_paths:
        policies[ALLOW_PUBLIC] = public_paths_spec(public_paths)
    paths = sorted(set(metrics_paths))
    if scrapers and paths:
        policies[ALLOW_METRICS] = metrics_scraping_spec(scrapers, paths)
    return policies


@dataclass(frozen=True)
class Policy:
    """One security object of a workload: kind, metadata name and spec."""

    kind: str
    name: str
    spec: dict[str, Any]


def service_policies(
    app: str,
    *,
    jwt: JwtSettings | None,
    rules: Sequence[AllowRule],
    caller_principals: Sequence[str],
    public_paths: Sequence[str],
    providers: Mapping[str, IdentityProvider],
    scrapers: Sequence[str] = (),
    loadtester: str | None = None,
    exposed: bool = False,
    routed: Sequence[RoutedFrom] = (),
) -> list[Policy]:
    """The per-workload objects of pods `app: <app>`, named after `app`.

    `providers`: the mesh's identity providers, by the names `jwt.provider` uses.
    `scrapers`: Prometheus' identities when it scrapes this workload (its ALLOW is the
    namespace's `allow-metrics-scraping`; here it is only exempt from the JWT DENY).
    `loadtester`: the loadtester's identity when these are the canary pods of a
    progressive service. `exposed`: the ingress gateway forwards to this service (it is
    exposed); without rules of its own it then accepts the gateway. `routed`: other
    services' endpoint routes to this one (`RoutedFrom`).
    """
    policies: list[Policy] = []
    exempt = sorted(
        {
            *jwt_exempt_principals(
                rules, [*caller_principals, *(p for r in routed for p in r.principals)]
            ),
            *scrapers,
            *([loadtester] if loadtester else []),
        }
    )
    if jwt is not None:
        policies.append(
            Policy(
                "RequestAuthentication",
                f"{app}-jwt",
                request_authentication_spec(app, jwt, providers[jwt.provider]),
            )
        )
        policies.append(
            Policy(
                "AuthorizationPolicy",
                f"{app}-require-jwt",
                require_jwt_spec(app, jwt, public_paths, exempt_principals=exempt),
            )
        )
    issuers = {providers[jwt.provider].issuer} if jwt is not None else set()
    for source in routed:
        if source.jwt is None:
            continue
        protected = intersect_paths(source.paths, source.jwt.protected_paths)
        if not protected:
            continue
        via = f"via-{source.namespace}-{source.name}"
        provider = providers[source.jwt.provider]
        if provider.issuer not in issuers:
            # One jwtRule per issuer: Istio leaves several rules of one issuer undefined.
            issuers.add(provider.issuer)
            policies.append(
                Policy(
                    "RequestAuthentication",
                    f"{app}-jwt-{via}",
                    request_authentication_spec(app, source.jwt, provider),
                )
            )
        policies.append(
            Policy(
                "AuthorizationPolicy",
                f"{app}-require-jwt-{via}",
                require_jwt_spec(
                    app,
                    source.jwt,
                    public_paths,
                    exempt_principals=exempt,
                    paths=protected,
                ),
            )
        )
    if rules:
        policies.append(
            Policy("AuthorizationPolicy", f"{app}-allow", service_allow_spec(app, rules))
        )
    if exposed and not rules:
        policies.append(
            Policy(
                "AuthorizationPolicy",
                f"{app}-allow-ingress-gateway",
                ingress_gateway_allow_spec(app),
            )
        )
    if caller_principals:
        policies.append(
            Policy(
                "AuthorizationPolicy",
                f"{app}-allow-callers",
                callers_allow_spec(app, caller_principals),
            )
        )
    if loadtester:
        policies.append(
            Policy(
                "AuthorizationPolicy",
                f"{app}-allow-loadtester",
                loadtester_allow_spec(app, loadtester),
            )
        )
    if any(r.principals for r in routed):
        policies.append(
            Policy("AuthorizationPolicy", f"{app}-allow-routed", routed_allow_spec(app, routed))
        )
    return policies
