"""The DestinationRule traffic policy: its settings and how Istio and Envoy apply them.

Models of a policy (load balancer, connection pool, outlier detection), the merge Istio
does of a subset policy over the service-wide one (`merged_subset_policy`), the policies
Envoy ends up with (`effective_policies`), the clusters traffic reaches with their outlier
detection and fewest hosts (`ejection_clusters`), whether Envoy can eject from them at all
(`can_eject`) and the time to the first ejection (`ejection_detection_ms`, formula in
docs/traffic.md). Pure: used by the
settings rules (`rules.py`), the spec builders and the components' outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, TypeVar

from pydantic import Field, model_validator

from components.settings_types import (
    Duration,
    HeaderName,
    RuleViolationError,
    SettingsModel,
    duration_ms,
)

if TYPE_CHECKING:
    # Types only: the root model imports this package, so importing it at runtime would
    # be a cycle.
    from components.settings import MeshService


class CookieSettings(SettingsModel):
    """Cookie for consistent hashing; Envoy creates it when `ttl` is set."""

    name: str = Field(min_length=1, description="Cookie name.")
    path: str = Field(default="/", description="Cookie path. Default `/`.")
    ttl: Duration = Field(default="1h", description="Cookie lifetime. Default 1h.")


class ConsistentHashSettings(SettingsModel):
    """Session affinity by header or cookie."""

    http_header_name: HeaderName | None = Field(default=None, description="Hash on a header.")
    http_cookie: CookieSettings | None = Field(default=None, description="Hash on a cookie.")

    @model_validator(mode="after")
    def _one_key(self) -> ConsistentHashSettings:
        if (self.http_header_name is None) == (self.http_cookie is None):
            raise RuleViolationError((), None, "set exactly one of httpHeaderName, httpCookie")
        return self


class LoadBalancerSettings(SettingsModel):
    """Load balancer: a simple policy or consistent hashing."""

    simple: Literal["ROUND_ROBIN", "LEAST_REQUEST"] | None = Field(
        default="LEAST_REQUEST",
        description="Default LEAST_REQUEST: Istio's default, best for uneven request costs.",
    )
    consistent_hash: ConsistentHashSettings | None = Field(
        default=None, description="Set it (and `simple: null`) for session affinity."
    )

    @model_validator(mode="after")
    def _one_policy(self) -> LoadBalancerSettings:
        if self.consistent_hash is not None and "simple" not in self.model_fields_set:
            object.__setattr__(self, "simple", None)
        if (self.simple is None) == (self.consistent_hash is None):
            raise RuleViolationError((), None, "set exactly one of simple, consistentHash")
        return self


class ConnectionPoolSettings(SettingsModel):
    """Circuit-breaking limits. Unset fields keep Istio's defaults (effectively unlimited)."""

    max_connections: int | None = Field(default=None, ge=1, description="TCP connections.")
    connect_timeout: Duration | None = Field(default=None, description="TCP connect timeout.")
    http1_max_pending_requests: int | None = Field(
        default=None, ge=1, description="Queued requests."
    )
    http2_max_requests: int | None = Field(default=None, ge=1, description="Active requests.")
    max_requests_per_connection: int | None = Field(
        default=None, ge=1, description="Requests per connection; 1 disables keep-alive."
    )
    max_retries: int | None = Field(default=None, ge=0, description="Concurrent retries.")


class OutlierDetectionSettings(SettingsModel):
    """Passive health checking: eject hosts that keep failing."""

    consecutive_5xx_errors: int | None = Field(
        default=5,
        ge=1,
        alias="consecutive5xxErrors",
        description="5xx (and local-origin, unless split) failures in a row. Default 5.",
    )
    consecutive_local_origin_failures: int | None = Field(
        default=None,
        ge=1,
        description="Connect failures/timeouts in a row; needs splitExternalLocalOriginErrors.",
    )
    split_external_local_origin_errors: bool = Field(
        default=False, description="Count local-origin failures apart from 5xx. Default off."
    )
    interval: Duration = Field(default="10s", description="Sweep interval. Default 10s.")
    base_ejection_time: Duration = Field(
        default="30s", description="Ejection time, times the ejection count. Default 30s."
    )
    max_ejection_percent: int = Field(
        default=50,
        ge=0,
        le=100,
        description="At most this share ejected. Default 50: half the hosts keep serving.",
    )
    min_health_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Ejection stops below this healthy share. Default: unset (Istio's 0).",
    )

    @model_validator(mode="after")
    def _a_trigger(self) -> OutlierDetectionSettings:
        if self.consecutive_local_origin_failures is not None:
            if not self.split_external_local_origin_errors:
                raise RuleViolationError(
                    ("consecutiveLocalOriginFailures",),
                    self.consecutive_local_origin_failures,
                    "takes effect only with splitExternalLocalOriginErrors: true",
                )
        elif self.consecutive_5xx_errors is None:
            raise RuleViolationError(
                ("consecutive5xxErrors",),
                None,
                "set consecutive5xxErrors or consecutiveLocalOriginFailures",
            )
        return self

    @property
    def errors_needed(self) -> int:
        """Consecutive failures before the slowest configured trigger fires."""
        counts = (self.consecutive_5xx_errors, self.consecutive_local_origin_failures)
        return max(c for c in counts if c is not None)


class TrafficPolicySettings(SettingsModel):
    """A DestinationRule traffic policy (service-wide or per subset)."""

    load_balancer: LoadBalancerSettings = Field(
        default_factory=LoadBalancerSettings, description="Default LEAST_REQUEST."
    )
    connection_pool: ConnectionPoolSettings | None = Field(
        default=None, description="Default: Istio's limits."
    )
    outlier_detection: OutlierDetectionSettings | None = Field(
        default_factory=OutlierDetectionSettings,
        description="Default on (5 errors, 10s, 30s, 50%); null disables it.",
    )


def can_eject(max_ejection_percent: int, hosts: int) -> bool:
    """Whether Envoy can eject a host from a cluster of `hosts` hosts at all.

    Envoy ejects only while `100 x (ejected + 1) / hosts <= max_ejection_percent`, and
    Istio never sets `always_eject_one_host`, so the first ejection needs
    `100 <= max_ejection_percent x hosts` (at 50% a 1-pod subset never ejects; at 30% a
    subset needs 4 pods).
    """
    return max_ejection_percent * hosts >= 100


def ejection_detection_ms(outlier: OutlierDetectionSettings, request_gap: str) -> int:
    """Time from a host starting to fail to its ejection, in milliseconds, while the
    `maxEjectionPercent` cap leaves room: `N x request_gap`.

    Envoy ejects inline on the N-th consecutive error (N: the larger configured
    consecutive-error count), not at the `interval` sweep, and those errors arrive no
    faster than the host gets requests (`request_gap`: the assumed longest gap between
    two). When the cap is reached, the refused ejection resets the counter and room is
    only made when an ejected host returns at a sweep, so a saturated cluster takes at
    least `baseEjectionTime + interval + N x request_gap` (docs/traffic.md).
    """
    return outlier.errors_needed * duration_ms(request_gap)


M = TypeVar("M", ConnectionPoolSettings, OutlierDetectionSettings)


def _deep_merged(base: M | None, override: M) -> M:
    """`base` with the fields `override` sets replaced (validated again as a whole)."""
    if base is None:
        return override
    data = {name: getattr(base, name) for name in type(base).model_fields}
    data.update({name: getattr(override, name) for name in override.model_fields_set})
    return type(override).model_validate(data)


def merged_subset_policy(
    service: TrafficPolicySettings, subset: TrafficPolicySettings
) -> TrafficPolicySettings:
    """A subset policy with the service-wide `connectionPool` / `outlierDetection` merged in.

    Istio's `MergeTrafficPolicy` replaces a whole section (`connectionPool`,
    `outlierDetection`, `loadBalancer`) when the subset sets it, so a subset that sets one
    field of a section would otherwise drop every other service-wide field of it. The
    result sets the same sections as `subset` (fields it sets win); a section the subset
    leaves unset is inherited by Istio as is. Raises pydantic's ValidationError when the
    merged outlier detection breaks its rules.
    """
    fields = subset.model_fields_set
    data: dict[str, object] = {name: getattr(subset, name) for name in fields}
    if "connection_pool" in fields and subset.connection_pool is not None:
        data["connection_pool"] = _deep_merged(service.connection_pool, subset.connection_pool)
    if "outlier_detection" in fields and subset.outlier_detection is not None:
        data["outlier_detection"] = _deep_merged(
            service.outlier_detection, subset.outlier_detection
        )
    return TrafficPolicySettings.model_validate(data)


def effective_policies(
    policy: TrafficPolicySettings, subset_policies: Mapping[str, TrafficPolicySettings]
) -> list[tuple[tuple[str, ...], TrafficPolicySettings]]:
    """The service-wide policy and each subset policy that sets its own outlier detection,
    merged over the service-wide one (`merged_subset_policy`), as Envoy gets them, each
    with its key path under a service's `traffic` block.

    A subset policy that leaves `outlierDetection` unset inherits the service's.
    """
    return [(("policy",), policy)] + [
        (("subsetPolicies", name), merged_subset_policy(policy, subset))
        for name, subset in subset_policies.items()
        if "outlier_detection" in subset.model_fields_set
    ]


ALL_PODS: Final = "all pods"
"""Cluster of the service host without a subset."""


class EjectionCluster(NamedTuple):
    """One Envoy cluster with its own outlier detector, as the settings describe it."""

    name: str
    """Subset name, Flagger host, or `ALL_PODS`."""
    path: tuple[str, ...]
    """Key path (under a service's `traffic`) of the policy that applies to it."""
    outlier: OutlierDetectionSettings | None
    hosts: int
    """Fewest hosts it has (`versions[].minReplicas`)."""


def routed_clusters(service: MeshService) -> dict[str, int]:
    """The Envoy clusters the service's traffic goes to, with the fewest hosts each has.

    Each DestinationRule subset and each Flagger host is its own cluster with its own
    outlier detector. Static: the whole service (other services' routes and a service
    without canary send there) and every subset the canary sends live or mirrored traffic
    to. Progressive: Flagger's `-primary` and `-canary`, each running the Deployment's
    minimum.
    """
    replicas = {v.name: v.min_replicas for v in service.versions}
    if service.delivery == "progressive":
        fewest = min(replicas.values())
        return {f"{service.name}-primary": fewest, f"{service.name}-canary": fewest}
    clusters = {ALL_PODS: sum(replicas.values())}
    canary = service.traffic.canary
    if canary is not None:
        subsets = [w.subset for w in canary.weights if w.weight]
        if canary.match is not None:
            subsets.append(canary.stable or service.versions[0].name)
        if canary.mirror is not None:
            subsets.append(canary.mirror.subset)
        clusters.update({s: replicas[s] for s in subsets if s in replicas})
    return clusters


def ejection_clusters(
    policy: TrafficPolicySettings,
    subset_policies: Mapping[str, TrafficPolicySettings],
    clusters: Mapping[str, int],
) -> list[EjectionCluster]:
    """Each routed cluster with the outlier detection Envoy gets for it: the subset's own
    (merged over the service-wide one) when it sets one, else the service-wide one."""
    result = []
    for name, hosts in clusters.items():
        subset = subset_policies.get(name)
        if subset is not None and "outlier_detection" in subset.model_fields_set:
            merged = merged_subset_policy(policy, subset)
            path: tuple[str, ...] = ("subsetPolicies", name)
            result.append(EjectionCluster(name, path, merged.outlier_detection, hosts))
        else:
            result.append(EjectionCluster(name, ("policy",), policy.outlier_detection, hosts))
    return result


def ejection_seconds(service: MeshService, request_gap: str) -> float | None:
    """Slowest time to the first ejection of a failing host over the service's routed
    clusters, in seconds (`ejection_detection_ms`).

    None ("never") when outlier detection is off, or when the cap keeps some routed
    cluster from ever ejecting (the settings reject that, `rules.py`).
    """
    traffic = service.traffic
    clusters = ejection_clusters(traffic.policy, traffic.subset_policies, routed_clusters(service))
    times = []
    for cluster in clusters:
        if cluster.outlier is None:
            continue
        if not can_eject(cluster.outlier.max_ejection_percent, cluster.hosts):
            return None
        times.append(ejection_detection_ms(cluster.outlier, request_gap))
    return float(Decimal(max(times)) / 1000) if times else None
