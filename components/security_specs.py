"""Pure builders of mesh security: PeerAuthentication, RequestAuthentication, policies.

Plain functions from settings to `security.istio.io/v1` specs, unit-tested without the
Pulumi engine; `MeshSecurity` only wires them into resources.

How the pieces combine in a workload namespace (Istio evaluates DENY before ALLOW, and
with any ALLOW policy present a request must match one of them):

- `allow-nothing` (`spec: {}`) makes the namespace default-deny;
- `allow-trusted-namespaces` lets Prometheus (app metrics ports), the observability
  namespace and the Flagger load tester in;
- `allow-public-paths` keeps `GET /health`, `/status`… reachable for every caller;
- `<service>-allow` holds the service's own rules (service accounts, gateway, JWT
  identities and claims, paths, methods);
- `<service>-allow-callers` lets in the services whose `calls` name this one;
- `<service>-require-jwt` (DENY) rejects requests without a JWT on protected paths.

Sidecar ports 15020 (health probes rewritten by istiod, merged Prometheus metrics) and
15090 (Envoy stats) are served by the proxy itself and never reach authorization, so
kubelet probes and sidecar scraping work under default-deny without a rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from components.istio_values import INGRESS
from components.security_settings import AllowRule, JwtSettings, MtlsException

TRUST_DOMAIN: Final = "cluster.local"
"""Istio's default trust domain; the program does not set `meshConfig.trustDomain`."""

MESH_WIDE_NAME: Final = "default"
"""Name of the mesh-wide PeerAuthentication, as Istio's docs call it."""

ALLOW_NOTHING: Final = "allow-nothing"
ALLOW_TRUSTED: Final = "allow-trusted-namespaces"
ALLOW_PUBLIC: Final = "allow-public-paths"


def workload_principal(namespace: str, service_account: str) -> str:
    """The mTLS identity of a workload, as AuthorizationPolicy `principals` match it."""
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def ingress_gateway_principal() -> str:
    """Identity of the ingress gateway: the chart names its service account after the
    release (`istio_values.INGRESS`), in the gateway's namespace."""
    return workload_principal(INGRESS.namespace, INGRESS.release)


PRIMARY_SUFFIX: Final = "-primary"
"""Flagger runs a progressive service's stable pods as `<name>-primary`, relabelled
`app: <name>-primary`, next to the canary pods that keep `app: <name>`."""


def workload_apps(name: str, progressive: bool) -> tuple[str, ...]:
    """The `app` label values of a service's pods: with Flagger, also the primary's."""
    return (name, f"{name}{PRIMARY_SUFFIX}") if progressive else (name,)


def caller_principals(calls: Iterable[tuple[str, str]]) -> list[str]:
    """Identities of calling services, `(namespace, name)`: each workload is assumed to run
    as a service account named after its service (the convention `calls` relies on)."""
    return sorted({workload_principal(namespace, name) for namespace, name in calls})


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


def trusted_namespaces_spec(namespaces: Iterable[str]) -> dict[str, Any]:
    """ALLOW every request from workloads of the trusted namespaces (mTLS-verified)."""
    return {
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"namespaces": sorted(set(namespaces))}}]}],
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


def request_authentication_spec(app: str, jwt: JwtSettings) -> dict[str, Any]:
    """RequestAuthentication: which issuer's tokens pods `app: <app>` accept."""
    rule: dict[str, Any] = {
        "issuer": jwt.issuer,
        "jwksUri": jwt.jwks_uri,
        "forwardOriginalToken": jwt.forward_original_token,
    }
    if jwt.audiences:
        rule["audiences"] = list(jwt.audiences)
    if jwt.output_payload_to_header:
        rule["outputPayloadToHeader"] = jwt.output_payload_to_header
    return {"selector": _selector(app), "jwtRules": [rule]}


def require_jwt_spec(
    app: str, jwt: JwtSettings, trusted_namespaces: Iterable[str], public_paths: Sequence[str]
) -> dict[str, Any]:
    """DENY requests without a valid JWT on the protected paths.

    RequestAuthentication alone accepts requests that carry no token. The trusted
    namespaces (Prometheus, load tester) and the public health paths stay exempt, so
    scraping, canary load tests and health checks keep working.
    """
    operation: dict[str, Any] = {"paths": list(jwt.protected_paths)}
    if public_paths:
        operation["notPaths"] = list(public_paths)
    return {
        "selector": _selector(app),
        "action": "DENY",
        "rules": [
            {
                "from": [
                    {
                        "source": {
                            "notRequestPrincipals": ["*"],
                            "notNamespaces": sorted(set(trusted_namespaces)),
                        }
                    }
                ],
                "to": [{"operation": operation}],
            }
        ],
    }


def namespace_policies(
    trusted_namespaces: Iterable[str], public_paths: Sequence[str]
) -> Mapping[str, dict[str, Any]]:
    """The AuthorizationPolicies every workload namespace gets, by metadata name."""
    policies = {
        ALLOW_NOTHING: allow_nothing_spec(),
        ALLOW_TRUSTED: trusted_namespaces_spec(trusted_namespaces),
    }
    if public_paths:
        policies[ALLOW_PUBLIC] = public_paths_spec(public_paths)
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
    trusted_namespaces: Iterable[str],
    public_paths: Sequence[str],
    exposed: bool = False,
) -> list[Policy]:
    """The per-workload objects of pods `app: <app>`, named after `app`.

    `exposed`: the ingress gateway forwards to this service (it is exposed, or the backend
    of an exposed route); without rules of its own it then accepts the gateway.
    """
    policies: list[Policy] = []
    if jwt is not None:
        policies.append(
            Policy("RequestAuthentication", f"{app}-jwt", request_authentication_spec(app, jwt))
        )
        policies.append(
            Policy(
                "AuthorizationPolicy",
                f"{app}-require-jwt",
                require_jwt_spec(app, jwt, trusted_namespaces, public_paths),
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
    return policies
