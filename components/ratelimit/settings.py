"""Settings of the rate limiter: the per-pod local limit and the per-client quota service.

`RateLimitSettings` is `meshstack:rateLimit` on the stack; `ServiceRateLimit` is
`services[i].rateLimit`. Each default says what it is and why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal

from pydantic import Field, model_validator

from components.settings_types import (
    DnsLabel,
    HeaderName,
    PublicHost,
    RuleViolationError,
    SettingsModel,
    check_unique,
)

Unit = Literal["second", "minute", "hour", "day"]
"""Units of envoyproxy/ratelimit's `rate_limit.unit` (Envoy's RateLimitUnit enum)."""


class LocalRoute(SettingsModel):
    """A per-path local limit that replaces the service's default token bucket."""

    path_prefix: str = Field(
        pattern=r"^/[A-Za-z0-9._~/*-]*$",
        max_length=200,
        description="Request path prefix (an absolute path), e.g. `/status`. Required.",
    )
    requests_per_second: int = Field(
        ge=1,
        le=1_000_000,
        description=(
            "Requests per second per pod on this path prefix (bucket semantics as "
            "`requestsPerSecond`). Required."
        ),
    )


class ServiceRateLimit(SettingsModel):
    """`services[i].rateLimit`: the local (per-pod) limit of one service."""

    requests_per_second: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description=(
            "Requests per second per pod on the service port (one token bucket; under "
            "PERMISSIVE mTLS one for mTLS and one for plaintext callers). Default: "
            "`rateLimit.local.requestsPerSecond` of the stack, so services only set it "
            "when they differ."
        ),
    )
    routes: tuple[LocalRoute, ...] = Field(
        default=(),
        description=(
            "Per-path limits, e.g. a higher one for `/status` than for `/identify`. A "
            "request on one of these paths uses its bucket instead of the default. "
            "Default: none."
        ),
    )

    @model_validator(mode="after")
    def _unique_prefixes(self) -> ServiceRateLimit:
        check_unique(("routes",), "pathPrefix", [r.path_prefix for r in self.routes])
        return self


class LocalRateLimitSettings(SettingsModel):
    """`rateLimit.local`: the per-pod token bucket in every service's sidecar."""

    enabled: bool = Field(
        default=True,
        description=(
            "Add the local rate limit EnvoyFilter to every service. Default on: it is the "
            "last line of defence of a pod when the per-client quota fails open."
        ),
    )
    requests_per_second: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description=(
            "Default requests per second per pod on the service port (token bucket size "
            "and refill per second; under PERMISSIVE mTLS the plaintext callers get a "
            "second bucket). Default 1000: above normal per-pod load, below what a pod "
            "survives."
        ),
    )
    enforced_percent: int = Field(
        default=100,
        ge=0,
        le=100,
        description=(
            "`filter_enforced`: percent of over-limit requests actually rejected; the rest "
            "are only counted. Default 100; lower it to trial a new limit."
        ),
    )


class QuotaTier(SettingsModel):
    """A client tier of the per-client quota, e.g. free, pro, internal."""

    name: DnsLabel = Field(description="Tier name, e.g. `free`. Required.")
    requests_per_unit: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="Requests per client per `unit`. Required unless `unlimited`.",
    )
    unit: Unit = Field(default="minute", description="Quota window. Default `minute`.")
    unlimited: bool = Field(
        default=False,
        description="No quota (e.g. internal clients). Default off.",
    )

    @model_validator(mode="after")
    def _limit_or_unlimited(self) -> QuotaTier:
        if not self.unlimited and self.requests_per_unit == 0:
            raise RuleViolationError(
                ("requestsPerUnit",),
                self.requests_per_unit,
                "must be >= 1 unless unlimited is true",
            )
        return self


class QuotaClient(SettingsModel):
    """A known client and its tier."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description=(
            "Value of the verified `clientClaim` for this client, e.g. `acme`. An "
            "identity, not a credential: it is written to a ConfigMap."
        ),
    )
    tier: DnsLabel = Field(description="Name of one of `tiers`.")


DEFAULT_TIERS: Final = (QuotaTier(name="free", requests_per_unit=60, unit="minute"),)
"""The tiers every quota has: a stack file lists only the tiers it adds, or one of these by
name to change it (`free` with other numbers)."""


class QuotaScope(SettingsModel):
    """A quota on part of the gateway's requests, counted on top of the region-wide one."""

    name: DnsLabel = Field(
        description=(
            "Scope name, e.g. `search`: the value of the `quota_scope` descriptor entry. Required."
        )
    )
    hosts: tuple[PublicHost, ...] = Field(
        default=(),
        description=(
            "Public hosts (`:authority`, any port, any case) whose requests it counts; each "
            "must be served by one of `traffic.gateways`. `*.example.com` matches every "
            "subdomain. Default: every host. With `pathPrefixes`, a request must match both."
        ),
    )
    path_prefixes: tuple[str, ...] = Field(
        default=(),
        description=(
            "Request path prefixes (the path as the client sent it, query included) whose "
            "requests it counts, e.g. `/search` (which also matches `/searches`; end it with "
            "`/` for one path segment). Default: every path."
        ),
    )
    tiers: tuple[QuotaTier, ...] = Field(
        min_length=1,
        description=(
            "The scope's limit per tier, by the quota's tier names (`free`, ...): a client "
            "of a listed tier gets one bucket of it for the scope's requests, besides its "
            "region-wide bucket, and a request must fit both. A tier not listed has no "
            "limit in the scope. Required."
        ),
    )

    @model_validator(mode="after")
    def _scoped(self) -> QuotaScope:
        if not self.hosts and not self.path_prefixes:
            raise RuleViolationError(
                ("hosts",),
                [],
                "must name a host, or pathPrefixes a prefix: a scope of every request is the "
                "region-wide quota (`tiers`)",
            )
        for index, prefix in enumerate(self.path_prefixes):
            if not re.fullmatch(r"/[A-Za-z0-9._~/*%-]{0,199}", prefix):
                raise RuleViolationError(
                    ("pathPrefixes", index),
                    prefix,
                    "must be an absolute request path prefix (letters, digits, / . _ ~ * % -)",
                )
        # Overlaps would count a request twice in the scope's bucket (one rate limit per
        # host and prefix, `gateway.scope_matches`).
        for where, values in (("hosts", self.hosts), ("pathPrefixes", self.path_prefixes)):
            for index, value in enumerate(values):
                covered = [
                    other
                    for other in values[:index]
                    if _covers(other, value, where) or _covers(value, other, where)
                ]
                if covered:
                    raise RuleViolationError(
                        (where, index),
                        value,
                        f"must not overlap {covered[0]!r}: a request would count twice",
                    )
        check_unique(("tiers",), "name", [t.name for t in self.tiers])
        return self


def _covers(wider: str, narrower: str, where: str) -> bool:
    if where == "pathPrefixes":
        return narrower.startswith(wider)
    return wider == narrower or served_by(narrower, [wider])


def served_by(host: str, gateway_hosts: Sequence[str]) -> bool:
    """Whether a Gateway with `gateway_hosts` serves `host` (`*.` matching any subdomain)."""
    return any(
        host == served or (served.startswith("*.") and host.endswith(served[1:]))
        for served in gateway_hosts
    )


class QuotaSettings(SettingsModel):
    """`rateLimit.quota`: per-client quotas with envoyproxy/ratelimit behind the gateway."""

    enabled: bool = Field(
        default=False,
        description=(
            "Deploy the ratelimit service and Redis and enforce quotas at the ingress "
            "gateway. Default off: regions opt in; it adds two Deployments."
        ),
    )
    namespace: DnsLabel = Field(
        default="ratelimit",
        description=(
            "Namespace of the ratelimit service and Redis, created with injection so the "
            "gateway reaches it over mTLS. Default `ratelimit`."
        ),
    )
    domain: DnsLabel = Field(
        default="meshstack",
        description="Rate limit domain shared by the gateway filter and the config.",
    )
    client_header: HeaderName = Field(
        default="x-client-id",
        description=(
            "Header the ingress gateway writes from the verified `clientClaim` and keys "
            "the quota on. A client-supplied value is removed first, so only a valid token "
            "chooses a tier. Default `x-client-id`."
        ),
    )
    client_claim: str = Field(
        default="client_id",
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$",
        description=(
            "JWT claim that names the client (`outputClaimToHeaders` of the gateway's "
            "RequestAuthentication; `a.b` reads a nested claim). Default `client_id`, the "
            "OAuth client of an RFC 9068 access token. An identity, not a credential: "
            "the known ids are written to a ConfigMap."
        ),
    )
    tiers: tuple[QuotaTier, ...] = Field(
        default=DEFAULT_TIERS,
        description=(
            "Client tiers, added to the default `free` tier (60 requests per minute): list "
            "only the tiers you add (`pro`, `internal`), and `free` only to change its "
            "numbers. Default: `free` alone."
        ),
    )
    clients: tuple[QuotaClient, ...] = Field(
        default=(), description="Known clients and their tiers. Default: none."
    )
    scopes: tuple[QuotaScope, ...] = Field(
        default=(),
        description=(
            "Quotas on some hosts or paths only (e.g. `/search` at 10 per minute for "
            "`free`), each counted on top of the region-wide quota of `tiers`: a request in "
            "a scope must fit both. Default: none, the region-wide quota alone."
        ),
    )
    unknown_client_tier: DnsLabel = Field(
        default="free",
        description=(
            "Tier of a verified client whose claim value is not in `clients`; each such "
            "client gets its own bucket. Default `free`."
        ),
    )
    anonymous_tier: DnsLabel = Field(
        default="free",
        description=(
            "Tier of requests without a valid token carrying `clientClaim`, per client "
            "address as the ingress gateway sees it (`trustedProxyHops`): each address gets "
            "its own bucket, so one client cannot exhaust it for the others. Default "
            "`free`: anonymous traffic gets the least."
        ),
    )
    trusted_proxy_hops: int = Field(
        default=0,
        ge=0,
        le=5,
        description=(
            "Proxies in front of the ingress gateway that append the address they received "
            "a request from to `X-Forwarded-For` (an L7 load balancer: 1). The gateway takes "
            "the client address (the anonymous bucket's key) from that entry, counted from "
            "the right (Envoy `xff_num_trusted_hops`); entries further left are client-"
            "supplied and ignored. Default 0: the TCP peer, right behind an L4 load "
            "balancer that preserves client addresses (with SNAT every client behind one "
            "node shares a bucket). Set it to what the region's load balancer does: a "
            "value too high lets a client choose its address."
        ),
    )
    failure_mode_deny: bool = Field(
        default=False,
        description=(
            "Reject requests when the ratelimit service is unreachable. Default off (fail "
            "open): a quota outage must not become an API outage; the local per-pod "
            "limit still protects every service. Refused while the counters live in the "
            "program's single Redis pod: failing closed on it turns every Redis restart, "
            "eviction or node drain into an outage of the public API (docs/security.md)."
        ),
    )
    timeout_ms: int = Field(
        default=100,
        ge=5,
        le=10_000,
        description=(
            "How long the gateway waits for a quota decision. Default 100 ms: a slow "
            "quota service adds at most this to a request, then fails open."
        ),
    )
    replicas: int = Field(
        default=2,
        ge=1,
        le=20,
        description="ratelimit service replicas. Default 2, so a node drain keeps quotas.",
    )

    @model_validator(mode="after")
    def _tiers_unique_and_referenced_tiers_exist(self) -> QuotaSettings:
        check_unique(("tiers",), "name", [t.name for t in self.tiers])
        # The default tiers a stack file does not restate stay (checked as written first,
        # so an error's index is the stack file's).
        written = {t.name for t in self.tiers}
        implicit = tuple(t for t in DEFAULT_TIERS if t.name not in written)
        object.__setattr__(self, "tiers", (*implicit, *self.tiers))
        names = {t.name for t in self.tiers}
        allowed = f"must be one of the tiers {sorted(names)}"
        check_unique(("clients",), "id", [c.id for c in self.clients])
        for index, client in enumerate(self.clients):
            if client.tier not in names:
                raise RuleViolationError(("clients", index, "tier"), client.tier, allowed)
        for key, value in (
            ("unknownClientTier", self.unknown_client_tier),
            ("anonymousTier", self.anonymous_tier),
        ):
            if value not in names:
                raise RuleViolationError((key,), value, allowed)
        check_unique(("scopes",), "name", [scope.name for scope in self.scopes])
        used = {c.tier for c in self.clients} | {self.unknown_client_tier, self.anonymous_tier}
        for index, scope in enumerate(self.scopes):
            for tier_index, tier in enumerate(scope.tiers):
                if tier.name not in names:
                    raise RuleViolationError(
                        ("scopes", index, "tiers", tier_index, "name"), tier.name, allowed
                    )
            if not used & {t.name for t in scope.tiers}:
                raise RuleViolationError(
                    ("scopes", index, "tiers"),
                    [t.name for t in scope.tiers],
                    f"must list a tier some request is in ({sorted(used)}: the clients', "
                    "unknownClientTier, anonymousTier); else the scope limits nobody",
                )
        return self

    @model_validator(mode="after")
    def _fail_closed_needs_highly_available_backend(self) -> QuotaSettings:
        if self.failure_mode_deny:
            raise RuleViolationError(
                ("failureModeDeny",),
                True,
                "needs a highly available quota backend, and the quota counters live in "
                "one Redis pod (replicas 1, Recreate): every Redis restart, eviction or node "
                "drain would answer 500 for every request at the gateway. Keep false (the "
                "local per-pod limits still hold while the quota service is down); see "
                "docs/security.md, 'Failure mode'",
            )
        return self

    def tier(self, name: str) -> QuotaTier:
        """The tier called `name` (validated to exist)."""
        return next(t for t in self.tiers if t.name == name)

    def scope_tier(self, scope: QuotaScope, name: str) -> QuotaTier | None:
        """The scope's limit for tier `name`, or None: no limit in the scope."""
        return next((t for t in scope.tiers if t.name == name), None)


def check_quota_scope_hosts(quota: QuotaSettings, gateway_hosts: Sequence[str]) -> None:
    """A scope's host must be one the ingress gateways serve, or it would never count."""
    for index, scope in enumerate(quota.scopes):
        for host_index, host in enumerate(scope.hosts):
            if not served_by(host, gateway_hosts):
                raise RuleViolationError(
                    ("rateLimit", "quota", "scopes", index, "hosts", host_index),
                    host,
                    f"must be served by a gateway of traffic.gateways ({sorted(gateway_hosts)})",
                )


def check_quota_clients_can_be_identified(quota: QuotaSettings, issuers: Sequence[str]) -> None:
    """Known clients need a JWT issuer: the gateway names a client only from a verified
    claim (`clientClaim`), so with no issuer their tiers could never apply."""
    if quota.enabled and quota.clients and not issuers:
        raise RuleViolationError(
            ("rateLimit", "quota", "clients"),
            [client.id for client in quota.clients],
            "need a JWT issuer (services[].jwt) to identify clients at the gateway; "
            "without one every request is anonymous",
        )


class RateLimitSettings(SettingsModel):
    """`meshstack:rateLimit`: local per-pod limits and per-client quotas."""

    local: LocalRateLimitSettings = Field(
        default=LocalRateLimitSettings(), description="Per-pod token bucket. Default on."
    )
    quota: QuotaSettings = Field(
        default=QuotaSettings(), description="Per-client quotas. Default off."
    )
