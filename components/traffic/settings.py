"""Settings models of traffic management: routes, canaries, faults, exposure, gateways.

`MeshService` gets `delivery`, `calls` and a `traffic` block (`ServiceTraffic`);
`StackSettings` a `traffic` block (`TrafficSettings`). DestinationRule policy models are in
`policy.py`; rules across fields (weights name versions, retries fit the timeout,
references resolve, the ejection detection bound) in `rules.py`, called by the root model.

Durations use the Go / protobuf duration syntax Istio accepts (`250ms`, `1.5s`, `1m`) and
are stored canonically: whole seconds as `Ns`, otherwise seconds with three decimals.
Regexes must be RE2-compatible: Envoy matches with RE2, which has no lookarounds or
backreferences although Python's `re` accepts them.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal, TypeVar

from pydantic import AfterValidator, Field, model_validator

from components.naming import is_dns_label, is_dns_subdomain
from components.settings_types import (
    DnsLabel,
    Duration,
    HeaderName,
    OptionalDnsLabel,
    PublicHost,
    Re2Regex,
    RuleViolationError,
    SettingsModel,
    check_unique,
    duration_ms,
)
from components.traffic.policy import TrafficPolicySettings

_SERVICE_REF: Final = re.compile(r"^([^/]+)/([^/]+)$")


def _service_ref(value: str) -> str:
    parts = _SERVICE_REF.match(value)
    if parts is None or not (is_dns_label(parts.group(1)) and is_dns_label(parts.group(2))):
        raise ValueError("must be `<namespace>/<service>` of a mesh service")
    return value


ServiceRef = Annotated[str, AfterValidator(_service_ref)]
"""`<namespace>/<name>` of a service in `services`."""

RETRY_ON_POLICIES: Final = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
"""Envoy's HTTP and gRPC retry conditions (`x-envoy-retry-on`, `x-envoy-retry-grpc-on`)."""


def _retry_on(value: str) -> str:
    for condition in value.split(","):
        if condition not in RETRY_ON_POLICIES and not re.fullmatch(r"[1-5]\d\d", condition):
            raise ValueError(
                "must be a comma-separated list of Envoy retry conditions "
                "(e.g. connect-failure,refused-stream,5xx) or status codes; "
                f"{condition!r} is not one"
            )
    return value


def _non_empty(items: tuple[T, ...]) -> tuple[T, ...]:
    if not items:
        raise ValueError("must have at least one item")
    return items


T = TypeVar("T")
NonEmpty = Annotated[tuple[T, ...], AfterValidator(_non_empty)]
"""A non-empty list. Checked after its items, so one bad item is reported once (pydantic's
`min_length` would also report the list as too short)."""

# --- per-route settings -------------------------------------------------------------------


class StringMatchSetting(SettingsModel):
    """An Istio StringMatch: exactly one of `exact`, `prefix`, `regex`."""

    exact: str | None = Field(default=None, description="Exact value.")
    prefix: str | None = Field(default=None, description="Value prefix.")
    regex: Re2Regex | None = Field(default=None, description="RE2 regex (full match).")

    @model_validator(mode="after")
    def _exactly_one(self) -> StringMatchSetting:
        if sum(v is not None for v in (self.exact, self.prefix, self.regex)) != 1:
            raise RuleViolationError((), self.model_dump(exclude_none=True), ONE_MATCH_RULE)
        return self


ONE_MATCH_RULE: Final = "must set exactly one of exact, prefix, regex"


class RetrySettings(SettingsModel):
    """Retry policy of a route (`HTTPRetry`)."""

    attempts: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries after the first try. Default 2, Istio's default; 0 disables.",
    )
    per_try_timeout: Duration = Field(
        default="3s",
        description=(
            "Timeout of each try. Default 3s, so the first try and 2 retries fit in the "
            "default 10s route timeout."
        ),
    )
    retry_on: Annotated[str, AfterValidator(_retry_on)] = Field(
        default="connect-failure,refused-stream,reset-before-request,unavailable,cancelled",
        description=(
            "Envoy retry conditions. Default: only failures where the upstream never "
            "processed the request (safe for non-idempotent requests)."
        ),
    )


class CorsSettings(SettingsModel):
    """CORS policy of a route (`CorsPolicy`, with the current `allowOrigins`)."""

    allow_origins: NonEmpty[StringMatchSetting] = Field(
        description="Allowed origins (StringMatch list). Required."
    )
    allow_methods: tuple[str, ...] = Field(
        default=("GET",), description="Allowed methods. Default GET only: least privilege."
    )
    allow_headers: tuple[str, ...] = Field(default=(), description="Allowed request headers.")
    expose_headers: tuple[str, ...] = Field(default=(), description="Exposed response headers.")
    allow_credentials: bool = Field(
        default=False, description="Allow credentials. Default off: least privilege."
    )
    max_age: Duration = Field(
        default="1h", description="Preflight cache time. Default 1h: fewer preflights."
    )

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsSettings:
        if self.allow_credentials:
            for index, origin in enumerate(self.allow_origins):
                if origin.exact == "*" or origin.regex in {".*", ".+"}:
                    raise RuleViolationError(
                        ("allowOrigins", index),
                        origin.model_dump(exclude_none=True),
                        "must name origins when allowCredentials is true, not match any origin",
                    )
        return self


HEALTH_PATHS: Final = ("/health", "/healthz", "/ready", "/status")
"""Health and status paths (the default `security.publicPaths`): no split unless asked."""


class EndpointRoute(SettingsModel):
    """A route for one endpoint: a path match, its backend and its own resilience settings."""

    name: DnsLabel = Field(description="Route name (Envoy stats and access logs show it).")
    prefix: str | None = Field(
        default=None,
        description=(
            "URI prefix, e.g. `/api/v1/revenue`. Set exactly one of `prefix` and `exact`."
        ),
    )
    exact: str | None = Field(
        default=None,
        description="Exact URI, e.g. `/status`. Set exactly one of `prefix` and `exact`.",
    )
    backend: ServiceRef | None = Field(
        default=None,
        description="`<namespace>/<service>` that serves the endpoint. Default: this service.",
    )
    timeout: Duration | None = Field(default=None, description="Default: the service's timeout.")
    retries: RetrySettings | None = Field(
        default=None, description="Default: the service's retries."
    )
    cors: CorsSettings | None = Field(default=None, description="Default: the service's CORS.")
    canary: bool | None = Field(
        default=None,
        description=(
            "Whether the route takes the service's `canary` split and mirror. Default: yes, "
            "except on a health or status path (`/health`, `/healthz`, `/ready`, `/status`, "
            "exact or as the prefix), which goes to the stable version only: a probe or "
            "status poll tells nothing about the canary, and mirrored it only loads the shadow."
        ),
    )

    @property
    def takes_canary(self) -> bool:
        """`canary`, or its default: every route but a health or status one."""
        if self.canary is not None:
            return self.canary
        return (self.exact or self.prefix or "").rstrip("/") not in HEALTH_PATHS

    @model_validator(mode="after")
    def _one_path_match(self) -> EndpointRoute:
        paths = [p for p in (self.prefix, self.exact) if p is not None]
        if len(paths) != 1:
            raise RuleViolationError(("prefix",), self.prefix, "set exactly one of prefix, exact")
        key = "prefix" if self.prefix is not None else "exact"
        if not paths[0].startswith("/"):
            raise RuleViolationError((key,), paths[0], "must be a path starting with '/'")
        if "*" in paths[0]:
            # A literal path: Istio matches it verbatim, and the authorization policies
            # built from routes turn a prefix into `<prefix>*`, where a `*` inside is invalid.
            raise RuleViolationError((key,), paths[0], "must be a literal path without '*'")
        return self


class HeaderMatch(SettingsModel):
    """Requests whose header matches an RE2 regex."""

    header: HeaderName = Field(description="Header name, lowercase, e.g. `x-user-id`.")
    regex: Re2Regex = Field(description="RE2 regex the whole value must match.")


class SubsetWeight(SettingsModel):
    """Share of traffic for one subset."""

    subset: DnsLabel = Field(description="A version name of the service.")
    weight: int = Field(ge=0, le=100, description="Percent of traffic, 0-100.")


class MirrorSettings(SettingsModel):
    """Copy live traffic to a shadow subset; its responses are discarded.

    Only for idempotent traffic: a mirrored write is executed by the shadow too. The shadow
    must get no live weight, or it would process the same requests twice.
    """

    subset: DnsLabel = Field(
        description="A version name of the service with no (or 0) weight in `weights`."
    )
    percentage: float = Field(
        default=100.0, gt=0, le=100, description="Percent of requests mirrored. Default 100."
    )
    reads_only: bool = Field(
        default=False,
        description=(
            "Mirror only `GET` and `HEAD` (a `:method` route before the split without mirror): "
            "the shadow never executes a write. Not for gRPC (every call a `POST`). Default off."
        ),
    )
    side_effect_free: bool = Field(
        default=False,
        description=(
            "The statement that the mirror target's writes change nothing outside it (its "
            "own datastore, no calls onwards): required to mirror every method of a service "
            "that accepts writes (a gRPC service, or an HTTP one whose authorization allows "
            "methods other than GET/HEAD/OPTIONS); Envoy copies every method. Default off."
        ),
    )


class CanarySettings(SettingsModel):
    """Static canary: a weighted split, optionally only for requests matching a header."""

    match: HeaderMatch | None = Field(
        default=None,
        description=(
            "Only matching requests get the split; all others go 100% to `stable`. The "
            "split is per request, not per user: Envoy picks a subset for every request "
            "(consistent hashing only applies inside it). To pin users, let the regex pick "
            "them (e.g. ids ending `0[0-4]`) and give the canary weight 100. Default: the "
            "split applies to all traffic."
        ),
    )
    weights: NonEmpty[SubsetWeight] = Field(
        description=(
            "Subset weights, summing to 100, applied per request (a user's requests land "
            "on every subset in these proportions). Required."
        )
    )
    stable: OptionalDnsLabel = Field(
        default="",
        description="Subset for requests outside `match`. Default: the first version.",
    )
    mirror: MirrorSettings | None = Field(
        default=None,
        description=(
            "Mirror target. Default: no mirroring. Idempotent traffic only: a mirrored "
            "write runs twice."
        ),
    )

    @model_validator(mode="after")
    def _weights_sum_to_100(self) -> CanarySettings:
        check_unique(("weights",), "subset", [w.subset for w in self.weights])
        total = sum(w.weight for w in self.weights)
        if total != 100:
            raise RuleViolationError(
                ("weights",),
                [w.weight for w in self.weights],
                f"must sum to 100; they sum to {total}",
            )
        return self


class FaultDelay(SettingsModel):
    """Injected delay."""

    fixed_delay: Duration = Field(description="Delay added to each affected request.")
    percentage: float = Field(
        default=100.0, gt=0, le=100, description="Percent of drill requests. Default 100."
    )


class FaultAbort(SettingsModel):
    """Injected error response."""

    http_status: int = Field(ge=400, le=599, description="Status returned, 400-599.")
    percentage: float = Field(
        default=100.0, gt=0, le=100, description="Percent of drill requests. Default 100."
    )


class FaultSettings(SettingsModel):
    """A chaos drill: faults only for requests carrying the chaos header."""

    header: HeaderName = Field(
        default="x-chaos-drill",
        description="Header that opts a request into the drill. Default `x-chaos-drill`.",
    )
    value: str = Field(
        default="true", min_length=1, description="Exact header value. Default `true`."
    )
    delay: FaultDelay | None = Field(default=None, description="Default: no delay.")
    abort: FaultAbort | None = Field(default=None, description="Default: no abort.")

    @model_validator(mode="after")
    def _some_fault(self) -> FaultSettings:
        if self.delay is None and self.abort is None:
            raise RuleViolationError((), None, "must set delay, abort or both")
        return self


# --- exposure and progressive delivery ----------------------------------------------------


class ExposeSettings(SettingsModel):
    """Serve the service on public hosts through an ingress Gateway."""

    gateway: DnsLabel = Field(description="Name of an entry of `traffic.gateways`.")
    hosts: NonEmpty[PublicHost] = Field(
        description="Public hosts; each must be served by the gateway."
    )


MIN_ANALYSIS_INTERVAL_MS: Final = 10_000
"""Flagger runs rollout webhooks inside each interval; their timeouts (the load test's 5s)
must stay below it."""

MIN_METRICS_INTERVAL_MS: Final = 60_000
"""Shortest Flagger metric window: at least four scrapes at the usual 15s, so one missed
scrape does not leave `rate()` without the two samples it needs (Flagger counts "no
values" as a failed check)."""


class ProgressiveSettings(SettingsModel):
    """Flagger analysis of a `delivery: progressive` service."""

    interval: Duration = Field(
        default="1m",
        description=(
            "Analysis interval, whole seconds and at least 10s (the rollout webhooks' "
            "timeouts must fit inside it). Default 1m."
        ),
    )
    threshold: int = Field(default=5, ge=1, le=100, description="Failed checks before rollback.")
    max_weight: int = Field(default=50, ge=1, le=100, description="Max canary weight. Default 50.")
    step_weight: int = Field(default=10, ge=1, le=100, description="Weight step. Default 10.")
    metrics_interval: Duration = Field(
        default="1m",
        description=(
            "Window of Flagger's metric queries, whole seconds and at least 1m (four 15s "
            "scrapes: a shorter window fails the check on one missed scrape). Independent of "
            "`interval`. Default 1m."
        ),
    )
    success_rate_min: float = Field(
        default=99.0,
        ge=0,
        le=100,
        description=(
            "Min request success rate, %. HTTP: Flagger's `request-success-rate` (non-5xx). "
            "gRPC: the `grpc-success-rate` MetricTemplate, which also counts the server-side "
            "gRPC failures (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, "
            "DATA_LOSS) that travel as HTTP 200. Default 99."
        ),
    )
    duration_max_ms: int = Field(
        default=500,
        ge=1,
        description=(
            "Max P99 request duration, ms (Flagger's `request-duration` metric). Default 500."
        ),
    )
    acceptance_path: str = Field(
        default="/",
        pattern=r"^/\S*$",
        description="Path the pre-rollout smoke test must get a 2xx from. Default `/`.",
    )
    load_test_qps: int = Field(
        default=10,
        ge=1,
        le=1000,
        description=(
            "Total load test requests/s against the canary (hey's `-q` is per worker, so "
            "the program sets `-c`/`-q` with c x q = this). Default 10."
        ),
    )
    mirror: bool = Field(
        default=False,
        description=(
            "Flagger's `analysis.mirror`: copy traffic to the canary before shifting it. Every "
            "method is copied, so a service that accepts writes needs "
            "`mirrorSideEffectFree`. Default off."
        ),
    )
    mirror_side_effect_free: bool = Field(
        default=False,
        description=(
            "The statement that the canary's writes change nothing outside it, required for "
            "`mirror` on a service that accepts writes (gRPC, or HTTP whose authorization "
            "allows methods other than GET/HEAD/OPTIONS). Default off."
        ),
    )
    session_affinity_cookie: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_-]*$",
        description=(
            "Flagger `sessionAffinity`: a client routed to the canary gets this cookie and "
            "stays on the canary for the rest of the run (clients that keep cookies, i.e. "
            "browsers). Default: none, so the weight split is per request."
        ),
    )
    retire: bool = Field(
        default=False,
        description=(
            "Step 1 of leaving progressive delivery: the program deletes the Canary and "
            "creates no routing for the service (Flagger, with `revertOnDeletion`, scales the "
            "Deployment back up and removes its VirtualService). Step 2, in a later update: "
            "`delivery: static`. See docs/traffic.md. Default off."
        ),
    )
    autoscaler: OptionalDnsLabel = Field(
        default="",
        description=(
            "Name of the Deployment's HPA, if any (the Canary's `autoscalerRef`). Default: none."
        ),
    )

    @model_validator(mode="after")
    def _steps(self) -> ProgressiveSettings:
        if self.step_weight > self.max_weight:
            raise RuleViolationError(
                ("stepWeight",), self.step_weight, f"must be <= maxWeight ({self.max_weight})"
            )
        if duration_ms(self.interval) % 1000:
            raise RuleViolationError(
                ("interval",), self.interval, "must be whole seconds (Flagger's format)"
            )
        if duration_ms(self.interval) < MIN_ANALYSIS_INTERVAL_MS:
            raise RuleViolationError(
                ("interval",),
                self.interval,
                "must be at least 10s: the rollout webhooks' timeouts must fit inside it",
            )
        if duration_ms(self.metrics_interval) % 1000:
            raise RuleViolationError(
                ("metricsInterval",),
                self.metrics_interval,
                "must be whole seconds (Flagger's format)",
            )
        if duration_ms(self.metrics_interval) < MIN_METRICS_INTERVAL_MS:
            raise RuleViolationError(
                ("metricsInterval",),
                self.metrics_interval,
                "must be at least 1m: a shorter window over 15s scrapes fails the check "
                "when one scrape is missed",
            )
        return self


class ServiceTraffic(SettingsModel):
    """How one service is routed: static canary, endpoints, faults and resilience."""

    timeout: Duration = Field(
        default="10s", description="Route timeout. Default 10s: Istio's default is none."
    )
    retries: RetrySettings = Field(
        default_factory=RetrySettings, description="Default: 2 safe retries of 3s."
    )
    cors: CorsSettings | None = Field(default=None, description="Default: no CORS policy.")
    canary: CanarySettings | None = Field(default=None, description="Default: no canary.")
    routes: tuple[EndpointRoute, ...] = Field(default=(), description="Per-endpoint routes.")
    fault: FaultSettings | None = Field(default=None, description="Default: no drill.")
    policy: TrafficPolicySettings = Field(
        default_factory=TrafficPolicySettings, description="Service-wide DestinationRule policy."
    )
    subset_policies: dict[str, TrafficPolicySettings] = Field(
        default_factory=dict,
        description=(
            "Per-version policy overrides, keyed by version name. The fields a subset sets "
            "win; the rest of `connectionPool` / `outlierDetection` is merged in from "
            "`policy`. Default: none."
        ),
    )
    expose: ExposeSettings | None = Field(default=None, description="Default: mesh-internal.")
    progressive: ProgressiveSettings = Field(
        default_factory=ProgressiveSettings,
        description="Flagger analysis; used when `delivery: progressive`.",
    )


def _secret_name(value: str) -> str:
    if not is_dns_subdomain(value):
        raise ValueError("must be a Kubernetes Secret name")
    return value


SecretName = Annotated[str, AfterValidator(_secret_name)]


class GatewaySettings(SettingsModel):
    """An ingress Gateway for public hosts: HTTPS, and HTTP redirected to HTTPS."""

    name: DnsLabel = Field(description="Gateway name, in the ingress gateway's namespace.")
    hosts: NonEmpty[PublicHost] = Field(
        description="Hosts it serves, e.g. `api.example.com`, `*.example.com`."
    )
    credential_name: SecretName = Field(
        description="TLS Secret in the ingress gateway's namespace. Required."
    )
    min_protocol_version: Literal["TLSV1_2", "TLSV1_3"] = Field(
        default="TLSV1_2",
        description="Minimum TLS version. Default TLSV1_2: TLS 1.0/1.1 are deprecated (RFC 8996).",
    )


class TrafficSettings(SettingsModel):
    """Stack-wide traffic settings."""

    gateways: tuple[GatewaySettings, ...] = Field(
        default=(), description="Ingress Gateways. Default: none."
    )
    ejection_detection_bound: Duration = Field(
        default="1m",
        validate_default=True,
        description=(
            "Max allowed ejection detection time of every outlier detection: N consecutive "
            "errors x outlierRequestGap, as Envoy ejects inline on the N-th error "
            "(docs/traffic.md). Default 1m."
        ),
    )
    outlier_request_gap: Duration = Field(
        default="1s",
        description=(
            "Assumed longest gap between requests to a failing host, used by the "
            "detection-time formula (docs/traffic.md). Default 1s."
        ),
    )
    sidecar_scoping: bool = Field(
        default=True, description="One Sidecar per workload namespace. Default on."
    )
    flagger_namespace: DnsLabel = Field(
        default="flagger-system",
        description=(
            "Namespace of Flagger and its loadtester (created with injection on). "
            "Default `flagger-system`."
        ),
    )
