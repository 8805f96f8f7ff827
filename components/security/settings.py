"""Settings of mesh security: mTLS exceptions, JWT rules and authorization rules.

`SecuritySettings` is `meshstack:security` on the stack; `IdentityProvider` is each entry of
the mesh-wide `meshstack:identityProviders`; `JwtSettings` and `AllowRule` are
`services[i].jwt` and `services[i].authorization`. The mesh-wide mTLS mode and the
default-deny policies are not settings: they are always on, only narrow exceptions are.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, Literal

from pydantic import Field, model_validator

from components.settings_types import (
    DnsLabel,
    LabelValue,
    OptionalHeaderName,
    Port,
    RuleViolationError,
    SettingsModel,
)

HTTP_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_PATH: Final = r"^(\*|/[A-Za-z0-9._~/{}*-]*)$"
_PRINCIPAL: Final = r"^(\*|[^\s/]+/\S+)$"
_SERVICE_ACCOUNT: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"


class MtlsException(SettingsModel):
    """A narrow mTLS exception: one namespace, or some ports of some workloads."""

    name: DnsLabel = Field(description="PeerAuthentication name. Required.")
    namespace: DnsLabel = Field(description="Namespace the exception applies in. Required.")
    mode: Literal["PERMISSIVE", "DISABLE"] = Field(
        default="PERMISSIVE",
        description=(
            "mTLS mode of the exception. Default `PERMISSIVE`: plaintext is accepted but "
            "mesh clients still use mTLS."
        ),
    )
    selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        description="Pod labels the exception applies to. Default: the whole namespace.",
    )
    ports: tuple[Port, ...] = Field(
        default=(),
        description=(
            "Only these container ports get `mode` (portLevelMtls); the rest of the "
            "workload stays STRICT. Needs `selector`. Default: all ports."
        ),
    )

    @model_validator(mode="after")
    def _ports_need_selector(self) -> MtlsException:
        if self.ports and not self.selector:
            raise RuleViolationError(
                ("ports",),
                list(self.ports),
                "needs a selector: Istio applies port-level mTLS only to selected workloads",
            )
        return self


class IdentityProvider(SettingsModel):
    """`identityProviders.<name>`: one JWT issuer of the whole mesh."""

    issuer: str = Field(
        pattern=r"^\S+$",
        max_length=512,
        description=(
            "Token `iss`, exactly as the provider writes it, e.g. `https://auth.x`: Envoy "
            "compares it byte for byte, so a trailing slash makes another issuer. Required."
        ),
    )
    jwks_uri: str = Field(
        pattern=r"^https://\S+$",
        max_length=2048,
        description="HTTPS URL of the issuer's public keys. Required (https only).",
    )


class JwtSettings(SettingsModel):
    """`services[i].jwt`: the identity provider a service accepts tokens of
    (RequestAuthentication), and where a token is required."""

    provider: DnsLabel = Field(
        description=(
            "Name of the identity provider (`identityProviders`) whose tokens the service "
            "accepts. Required."
        ),
    )
    audiences: tuple[str, ...] = Field(
        default=(),
        description=(
            "Accepted `aud` values. Default: any (Istio's default); set it. Per service, not "
            "per provider: each API is its own audience."
        ),
    )
    forward_original_token: bool = Field(
        default=False,
        description=(
            "Forward the `Authorization` header to the app. Default off: the app gets "
            "the verified claims instead and cannot leak the bearer token."
        ),
    )
    output_payload_to_header: OptionalHeaderName = Field(
        default="x-jwt-payload",
        description=(
            "Header that carries the verified payload (base64) to the app. Default "
            "`x-jwt-payload`; empty: none."
        ),
    )
    protected_paths: tuple[str, ...] = Field(
        default=("/api/*",),
        min_length=1,
        description=(
            "Paths where a request WITHOUT a token is denied (RequestAuthentication "
            "alone accepts them). Default `/api/*`. A `grpc` service has only "
            "`/<package.Service>/<Method>` paths (forms of those, or `*`), so set it there."
        ),
    )

    @model_validator(mode="after")
    def _protected_paths_are_paths(self) -> JwtSettings:
        for index, path in enumerate(self.protected_paths):
            _check_path(("protectedPaths", index), path)
        return self


def _check_path(path: tuple[str | int, ...], value: str) -> None:
    if not re.match(_PATH, value) or ("*" in value[1:-1]):
        raise RuleViolationError(
            path, value, "must be `*` or an absolute path with `*` only at the start or end"
        )


class AllowRule(SettingsModel):
    """One ALLOW rule of a service: who (sources) may do what (paths, methods)."""

    service_accounts: tuple[str, ...] = Field(
        default=(),
        description=(
            "Calling workloads as `<namespace>/<serviceAccount>` (mTLS identity). Default: none."
        ),
    )
    from_ingress_gateway: bool = Field(
        default=False,
        description="Allow the region's ingress gateway as a caller. Default off.",
    )
    request_principals: tuple[str, ...] = Field(
        default=(),
        description=(
            "JWT identities `<issuer>/<subject>`, or `*` for any valid token; needs the "
            "service's `jwt`. Default: none."
        ),
    )
    claims: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description=(
            "Required JWT claim values, e.g. `{role: [admin]}`; needs `requestPrincipals`. "
            "Default: none."
        ),
    )
    paths: tuple[str, ...] = Field(
        default=(),
        description=(
            "Paths (`*` only at the start or end). Default: any path. On a `grpc` service: "
            "`/<package.Service>/<Method>`, the method `*` or `Prefix*`."
        ),
    )
    methods: tuple[Method, ...] = Field(
        default=(), description="Methods. Default: any. On a `grpc` service only `POST`."
    )
    ports: tuple[Port, ...] = Field(
        default=(),
        description=(
            "Container ports. Default: any. E.g. a metrics port scraped in plaintext under a "
            "port-level mTLS exception (plaintext callers have no identity to match)."
        ),
    )
    ip_blocks: tuple[str, ...] = Field(
        default=(),
        description=(
            "Callers' source addresses, IPs or CIDR blocks (`source.ipBlocks`, the "
            "connection's peer address). Default: none. E.g. plaintext clients admitted by "
            "an mTLS exception, which have no identity to match."
        ),
    )

    @model_validator(mode="after")
    def _well_formed_and_not_allow_all(self) -> AllowRule:
        for index, account in enumerate(self.service_accounts):
            if not re.match(_SERVICE_ACCOUNT, account):
                raise RuleViolationError(
                    ("serviceAccounts", index), account, "must be `<namespace>/<serviceAccount>`"
                )
        for index, principal in enumerate(self.request_principals):
            if not re.match(_PRINCIPAL, principal):
                raise RuleViolationError(
                    ("requestPrincipals", index), principal, "must be `<issuer>/<subject>` or `*`"
                )
        for index, path in enumerate(self.paths):
            _check_path(("paths", index), path)
        for index, block in enumerate(self.ip_blocks):
            try:
                ipaddress.ip_network(block, strict=True)
            except ValueError:
                raise RuleViolationError(
                    ("ipBlocks", index),
                    block,
                    "must be an IP address or a CIDR block without host bits, e.g. 10.40.0.0/16",
                ) from None
        if self.claims and not self.request_principals:
            raise RuleViolationError(
                ("claims",),
                dict(self.claims),
                "needs requestPrincipals: claims exist only on requests with a valid JWT",
            )
        sources = (
            self.service_accounts
            or self.request_principals
            or self.from_ingress_gateway
            or self.ip_blocks
        )
        if not sources and not self.paths and not self.methods and not self.ports:
            raise RuleViolationError(
                (),
                self.model_dump(by_alias=True),
                "must name a source, a path, a method or a port: an empty rule allows everything",
            )
        return self


class SecuritySettings(SettingsModel):
    """`meshstack:security`: exceptions to the secure defaults, and Prometheus' identity.

    No namespace is trusted as a whole: each identity outside a service's own rules is
    admitted for one purpose (Prometheus on metrics paths, Flagger's loadtester on canary
    pods), see docs/security.md."""

    mtls_exceptions: tuple[MtlsException, ...] = Field(
        default=(),
        description=(
            "Narrow exceptions to the mesh-wide STRICT mTLS, per namespace or per port. "
            "Each needs an `authorization` rule of a service it covers with `ports` (each "
            "exception port) or `ipBlocks` and no identity source. Default: none."
        ),
    )
    prometheus_service_accounts: tuple[str, ...] = Field(
        default=("monitoring/kube-prometheus-stack-prometheus",),
        min_length=1,
        description=(
            "The Prometheus that scrapes application metrics over mTLS, as "
            "`<namespace>/<serviceAccount>`. Admitted only to `GET` the metrics paths "
            "(`services[i].metrics.path`, the quota service's `/metrics`), never to the "
            "rest of a workload. Default `monitoring/kube-prometheus-stack-prometheus`, the "
            "account kube-prometheus-stack creates for the release `kube-prometheus-stack` "
            "(`<fullname>-prometheus`) that `alerts.prometheusSelectorLabels` defaults to."
        ),
    )
    public_paths: tuple[str, ...] = Field(
        default=("/health", "/healthz", "/ready", "/status"),
        description=(
            "Paths any caller may GET (or HEAD) on every workload, so health checks keep working "
            "under default-deny. Default: the usual health endpoints."
        ),
    )

    @model_validator(mode="after")
    def _exception_names_unique_paths_and_accounts_valid(self) -> SecuritySettings:
        names: set[tuple[str, str]] = set()
        for index, exception in enumerate(self.mtls_exceptions):
            key = (exception.namespace, exception.name)
            if key in names:
                raise RuleViolationError(
                    ("mtlsExceptions", index, "name"),
                    exception.name,
                    f"must be unique in namespace {exception.namespace!r}; it is repeated",
                )
            names.add(key)
        for index, path in enumerate(self.public_paths):
            _check_path(("publicPaths", index), path)
        for index, account in enumerate(self.prometheus_service_accounts):
            if not re.match(_SERVICE_ACCOUNT, account):
                raise RuleViolationError(
                    ("prometheusServiceAccounts", index),
                    account,
                    "must be `<namespace>/<serviceAccount>`",
                )
        return self
