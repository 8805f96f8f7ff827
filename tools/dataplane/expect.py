"""What a stack's settings promise, as numbers the data-plane tier checks (pure).

Expectations come from the settings (`StackSettings`), never from the render under test:
the render is what runs, the settings are what it must do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from components.constants import workload_apps
from components.ratelimit.settings import served_by

if TYPE_CHECKING:
    from components.ratelimit.settings import QuotaScope, QuotaSettings, QuotaTier
    from components.settings import StackSettings

TOLERANCE: Final = 0.10
"""The admitted rate must be within ±10 % of the configured one."""
OVERLOAD: Final = 1.5
"""Offered load per bucket, as a multiple of its rate, when the load generator can."""
LOAD_SECONDS: Final = 4.0
"""How long each local bucket is loaded."""
MIN_OVERLOAD: Final = 1.4
"""The least overload that measures a bucket in `LOAD_SECONDS`: the full bucket (one second
of tokens) drains within the run, so the refill decides what is admitted at its end."""
MIN_OVER_SHARE: Final = 0.05
"""At least this share of a run must be over the limit, or the bucket was never empty."""
CEILING_SHARE: Final = 0.8
"""Share of the load generator's measured ceiling a run may ask for."""


@dataclass(frozen=True)
class LocalCase:
    """One local token bucket of one workload's sidecar."""

    app: str
    service_port: int
    grpc: bool
    path: str
    """A request path that lands in this bucket."""
    rate: int
    """Requests per second per pod (bucket size = one second of them)."""
    enforced_percent: int


def local_cases(settings: StackSettings) -> list[LocalCase]:
    """Every local bucket the settings declare: the service default and each route, per
    workload (`app`, and `<app>-primary` for a progressive service)."""
    local = settings.rate_limit.local
    if not local.enabled:
        return []
    cases = []
    for service in settings.services:
        grpc = service.protocol == "grpc"
        default = service.rate_limit.requests_per_second or local.requests_per_second
        prefixes = [r.path_prefix for r in service.rate_limit.routes]
        # A path under no route prefix: the service default. gRPC paths are methods.
        default_path = "/grpc.health.v1.Health/Check" if grpc else "/dataplane/default"
        if any(default_path.startswith(p) for p in prefixes):
            raise ValueError(f"{service.name}: {default_path} falls under a route prefix")
        for app in workload_apps(service.name, service.delivery == "progressive"):
            cases.append(
                LocalCase(app, service.port, grpc, default_path, default, local.enforced_percent)
            )
            if grpc:
                if service.rate_limit.routes:
                    raise ValueError(f"{service.name}: per-path limits on gRPC are not modelled")
                continue
            for route in service.rate_limit.routes:
                path = route.path_prefix.rstrip("/") + "/dataplane"
                cases.append(
                    LocalCase(
                        app,
                        service.port,
                        grpc,
                        path,
                        route.requests_per_second,
                        local.enforced_percent,
                    )
                )
    return cases


@dataclass(frozen=True)
class LocalOutcome:
    """What one run of a local bucket must show, from `LocalCase` and the load sent."""

    admitted_by_bucket: float
    """Requests within the bucket: a full bucket of `rate` plus `rate` per second."""
    rejected: float
    """Over-limit requests answered with the limiter's status (`enforcedPercent` of them)."""


def local_outcome(case: LocalCase, sent: int, seconds: float) -> LocalOutcome:
    """Token bucket of `rate` tokens refilled at `rate`/s (`specs._token_bucket`: burst =
    one second), full at the start, under `sent` requests spread over `seconds`."""
    admitted = min(float(sent), case.rate * (1.0 + seconds))
    over = sent - admitted
    return LocalOutcome(admitted, over * case.enforced_percent / 100)


def offered_rate(rate: int, ceiling: float) -> float:
    """The load to offer a bucket of `rate`/s: `OVERLOAD` x rate, capped at `CEILING_SHARE`
    of the measured ceiling (generator + Envoy + upstream), never under `MIN_OVERLOAD` x
    rate (the least that measures the bucket; whether it was reached is checked)."""
    return max(min(rate * OVERLOAD, ceiling * CEILING_SHARE), rate * MIN_OVERLOAD)


def enforced_slack(over: int, enforced_percent: int) -> float:
    """How far the rejected count may stray from `enforcedPercent` of the over-limit ones:
    Envoy draws each request's enforcement at random (a runtime fractional percent), so
    four binomial standard deviations, at least 5."""
    p = enforced_percent / 100
    return max(5.0, 4 * math.sqrt(over * p * (1 - p)))


def admitted_rate(case: LocalCase, admitted: float, seconds: float) -> float:
    """The per-second rate an observed `admitted` count means (the initial burst removed)."""
    return (admitted - case.rate) / seconds


def within(observed: float, expected: float, tolerance: float = TOLERANCE) -> bool:
    return abs(observed - expected) <= tolerance * expected


@dataclass(frozen=True)
class TierCase:
    """One quota tier, exercised through a client that the settings put in it."""

    tier: str
    client: str
    """The `clientClaim` value of the test token."""
    known: bool
    """A listed client (`clients`), or an unlisted one (`unknownClientTier`)."""
    limit: int | None
    """Requests per `unit`; None: unlimited."""
    unit: str


def _limit(tier: QuotaTier) -> int | None:
    return None if tier.unlimited else tier.requests_per_unit


def tier_cases(quota: QuotaSettings) -> list[TierCase]:
    """One case per tier a listed client is in, plus the unknown-client tier."""
    cases = []
    seen = set()
    for client in quota.clients:
        if client.tier in seen:
            continue
        seen.add(client.tier)
        tier = quota.tier(client.tier)
        cases.append(TierCase(tier.name, client.id, True, _limit(tier), tier.unit))
    unknown = quota.tier(quota.unknown_client_tier)
    listed = {c.id for c in quota.clients}
    name = next(
        f"dataplane-unlisted-{i}"
        for i in range(len(listed) + 1)
        if f"dataplane-unlisted-{i}" not in listed
    )
    cases.append(TierCase(unknown.name, name, False, _limit(unknown), unknown.unit))
    return cases


UNIT_SECONDS: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def window_remaining(unit: str, now: float) -> float:
    """Seconds left in the current quota window: envoyproxy/ratelimit's windows are aligned
    to the unit (the cache key carries `now / unit * unit`, src/limiter/cache_key.go)."""
    size = UNIT_SECONDS[unit]
    return size - (now % size)


@dataclass(frozen=True)
class ScopeCase:
    """One tier of one scoped quota, exercised by a client in that tier."""

    scope: str
    tier: str
    client: str | None
    """The `clientClaim` value of the test token; None: an anonymous client."""
    listed: bool
    """A client of `clients`, whose buckets earlier scenarios may have spent."""
    authority: str
    path: str
    """A request the scope counts."""
    outside: tuple[str, str]
    """`(authority, path)` of a request no scope counts (the same host where it can)."""
    admitted: int
    """In-scope requests admitted from fresh windows: the smaller of the scope's limit and
    the tier's region-wide one, which each of them also spends."""
    outside_admitted: bool
    """Whether the region-wide bucket still admits a request outside the scope after that."""
    unit: str


def _in_scope(scope: QuotaScope, authority: str, path: str) -> bool:
    host_ok = not scope.hosts or served_by(authority, scope.hosts)
    return host_ok and (not scope.path_prefixes or path.startswith(scope.path_prefixes))


def scope_cases(quota: QuotaSettings) -> list[ScopeCase]:
    """One case per scope and limited tier that some client class is in, when its limit
    and the region-wide one share a unit (else which bucket empties first depends on the
    clock) and a burst can spend it (not per second, at most 5000)."""
    cases = []
    for scope in quota.scopes:
        authority = scope.hosts[0].replace("*.", "dataplane.", 1) if scope.hosts else "dp.test"
        path = (scope.path_prefixes[0] if scope.path_prefixes else "/") + "dataplane"
        outside = next(
            (a, p)
            for a, p in ((authority, "/dataplane-outside"), ("outside.dp.test", "/dataplane"))
            if not any(_in_scope(s, a, p) for s in quota.scopes)
        )
        for tier in scope.tiers:
            region = quota.tier(tier.name)
            # A fresh client where the tier has one (an unlisted id, an anonymous address):
            # a listed client's buckets must first wait for the next window (a minute).
            listed = [c.id for c in quota.clients if c.tier == tier.name]
            client: str | None
            if quota.unknown_client_tier == tier.name:
                client = f"dataplane-scope-{scope.name}"
            elif quota.anonymous_tier == tier.name:
                client = None
            elif listed and tier.unit == "minute":
                client = listed[0]
            else:
                continue
            if tier.unlimited or tier.unit == "second" or tier.requests_per_unit > 5000:
                continue
            if not region.unlimited and region.unit != tier.unit:
                continue
            limits = [tier.requests_per_unit]
            limits += [] if region.unlimited else [region.requests_per_unit]
            admitted = min(limits)
            outside_admitted = region.unlimited or region.requests_per_unit > admitted
            cases.append(
                ScopeCase(
                    scope.name,
                    tier.name,
                    client,
                    client in listed,
                    authority,
                    path,
                    outside,
                    admitted,
                    outside_admitted,
                    tier.unit,
                )
            )
    return cases
