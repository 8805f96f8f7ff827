"""Pure builders of the PromQL over Istio's request metrics that the alert rules read.

`istio_requests_total` and `istio_request_duration_milliseconds_bucket` as Istio's stats filter
emits them (istio/proxy `source/extensions/filters/http/istio_stats/istio_stats.cc`): both
reporters' views, the labels a calling proxy cannot know filled in, keyed by cluster. Plain
functions returning expressions; `rules.py` turns them into alerts.
"""

from __future__ import annotations

from typing import Final

RATE_LIMITED_FLAG: Final = "(.+,)?RL(,.+)?"
"""`response_flags` of a request a rate limiter answered (Envoy's `RL`, alone or among other
flags joined by `,`)."""

GRPC_SERVER_FAILURES: Final = {
    "2": "UNKNOWN",
    "4": "DEADLINE_EXCEEDED",
    "12": "UNIMPLEMENTED",
    "13": "INTERNAL",
    "14": "UNAVAILABLE",
    "15": "DATA_LOSS",
}
"""gRPC statuses that blame the server (the gRPC status-code guide's server-side codes and
Google's AIP-193 5xx mapping); client errors (`NOT_FOUND`, `INVALID_ARGUMENT`,
`PERMISSION_DENIED`, ...) and `RESOURCE_EXHAUSTED` (quota) do not count against a version."""

SHADOW_SEVERITY: Final = "warning"
"""Severity of a failing or slow shadow: it answers only mirrored copies, whose responses
Envoy discards, so no user feels it; worth fixing before it gets live traffic, not a page."""

ALL_FAILING_RATIO: Final = 0.99
"""Failed share at which a version is judged whatever its traffic: "every request fails",
with room for the float rounding of two separately summed rates."""


VERSION_KEY: Final = ("destination_cluster", "destination_service", "destination_version")
"""What a canary page names: the cluster the version runs in, the service and the version.
Keyed by cluster, so the hub's Prometheus (every region's series) never dilutes one region's
failing canary with another region's healthy traffic."""

_BY_VERSION: Final = ", ".join(VERSION_KEY)

NOT_THE_VERSIONS_FAULT: Final = "(.+,)?(FI|DI|RL|RLSE|UAEX)(,.+)?"
"""`response_flags` of requests that failed by design, not because of the version: fault
injection (`FI` abort, `DI` delay), a rate limit (`RL`) or the quota service (`RLSE`, paged by
`QuotaServiceFailing`), or external authorization (`UAEX`)."""

UNANSWERED_CODE: Final = "0"
"""`response_code` of a request that got no response at all (Envoy's `responseCode()` unset):
the peer hung up first, e.g. the caller timed out on a canary that never answers (`DC` at the
canary's own proxy)."""


def requests_rate(selector: str, window: str, *, metric: str = "istio_requests_total") -> str:
    """`rate()` of an Istio metric with the version and cluster a calling proxy could not learn
    filled in from what it did know.

    A calling proxy (`reporter="source"`) takes `destination_version` from the peer metadata
    the upstream sends back; a canary that refuses connections or never answers sends none,
    so Istio falls back to the endpoint's metadata (`workload;namespace;canonical
    service;canonical revision;cluster`, istio/proxy `extractEndpointMetadata` and
    `convertEndpointMetadata`), which has no app version: the caller reports
    `destination_version="unknown"` but the real `destination_canonical_revision` (the pod's
    `version` label unless `service.istio.io/canonical-revision` says otherwise). When no host
    was picked at all (`UH`, `NC`), `destination_cluster` is `unknown` too: the failure is then
    the caller's cluster's (`source_cluster`). `label_join` + `label_replace` copy the fallback
    only where the value is `unknown`; the helper labels keep every series distinct and are
    dropped by the `sum by` that follows.
    """
    expr = f"rate({metric}{{{selector}}}[{window}])"
    for target, fallback, helper in (
        ("destination_version", "destination_canonical_revision", "meshstack_version_fallback"),
        ("destination_cluster", "source_cluster", "meshstack_cluster_fallback"),
    ):
        expr = (
            f'label_replace(label_join({expr}, "{helper}", ";", "{target}", "{fallback}"), '
            f'"{target}", "$1", "{helper}", "unknown;(.+)")'
        )
    return expr


def _reported_by(reporter: str) -> str:
    return f'reporter="{reporter}"'


def _failed_selectors(reporter: str) -> tuple[str, str]:
    """Selectors of the requests a version failed, as `reporter` saw them: a 5xx or no answer
    at all, or a server-side gRPC status; not those failed by design."""
    statuses = "|".join(GRPC_SERVER_FAILURES)
    base = f'reporter="{reporter}", response_flags!~"{NOT_THE_VERSIONS_FAULT}"'
    return (
        f'{base}, response_code=~"5..|{UNANSWERED_CODE}"',
        f'{base}, request_protocol="grpc", grpc_response_status=~"{statuses}"',
    )


def canary_error_ratio_expr(window: str, reporter: str = "destination") -> str:
    """Failed share per cluster, service and version, as the proxies of one `reporter` saw it.

    A failure is a 5xx or an unanswered request (`response_code="0"`), or, for gRPC
    (`request_protocol="grpc"`), a server-side `grpc_response_status`
    (`GRPC_SERVER_FAILURES`): gRPC answers errors with HTTP 200 and the status in a trailer,
    and a client error such as `NOT_FOUND` is the caller's fault, like an HTTP 4xx. Requests
    failed by design (`NOT_THE_VERSIONS_FAULT`: fault injection, rate limits, quota service)
    do not count. The two selectors are joined with `or` before the `sum`: a series both
    select has one label set and is kept once, so nothing is counted twice.

    `reporter="destination"` is the version's own sidecar; `reporter="source"` the calling
    proxies and the ingress gateway (a gateway reports `source`, istio.io "Istio Standard
    Metrics"), which also see what the version's sidecar cannot: connections refused (`UF`,
    `URX`), no answer (`UT`), no healthy host (`UH`).
    """
    by = f"reporter, {_BY_VERSION}"
    http_errors, grpc_errors = _failed_selectors(reporter)
    return (
        f"sum by ({by}) (\n  {requests_rate(http_errors, window)}\n  or\n"
        f"  {requests_rate(grpc_errors, window)}\n)"
        f"\n/\nsum by ({by}) ({requests_rate(_reported_by(reporter), window)})"
    )


def enough_traffic_expr(window: str, min_rate: float, reporter: str = "destination") -> str:
    """Versions receiving at least `min_rate` requests per second, as `reporter` counts them.

    `and`-ed to the canary alerts: one failed or slow request out of three is not a
    verdict on a version.
    """
    by = f"reporter, {_BY_VERSION}"
    return f"sum by ({by}) ({requests_rate(_reported_by(reporter), window)}) >= {min_rate:g}"


def judged_errors_expr(window: str, threshold: float, min_rate: float, reporter: str) -> str:
    """Versions failing more than `threshold` of their requests in one reporter's view, with
    that view a verdict: enough traffic, or (almost) every request failing, however few there
    are (a canary failing all of its 0.2 requests a second is broken, not noise)."""
    ratio = canary_error_ratio_expr(window, reporter)
    return (
        f"(\n{ratio}\n) > {threshold:g}\nand on (reporter, {_BY_VERSION})\n(\n"
        f"{enough_traffic_expr(window, min_rate, reporter)}\nor\n"
        f"(\n{ratio}\n) >= {ALL_FAILING_RATIO:g}\n)"
    )


REPORTERS: Final = ("destination", "source")
"""Both views of a request: the version's own sidecar, and its callers (sidecars, gateways)."""


def canary_errors_expr(window: str, threshold: float, min_rate: float) -> str:
    """Worst failed share of each version over both reporters' views.

    The views are judged separately and the larger share is the alert's value: a canary whose
    own metrics are gone (scrape failing, pods crash-looping) still fails in its callers' view,
    and requests seen by both proxies are never added together.
    """
    views = "\nor\n".join(
        f"(\n{judged_errors_expr(window, threshold, min_rate, r)}\n)" for r in REPORTERS
    )
    return f"max by ({_BY_VERSION}) (\n{views}\n)"


def live_versions_expr(window: str) -> str:
    """Versions some proxy routed requests to in the window, per cluster and service."""
    return f"sum by ({_BY_VERSION}) ({requests_rate(_reported_by('source'), window)})"


def shadow_versions_expr(window: str) -> str:
    """Versions that receive only mirrored copies: their own sidecar reports requests, no
    caller routed any to them, while callers do route to another version of the service.

    Envoy sends a mirrored copy from the router's shadow client, outside the calling proxy's
    HTTP filter chain, so Istio's stats filter of the caller reports only the request it
    routed (`reporter="source"`, the live version); the shadow's sidecar reports the copy
    (`reporter="destination"`, envoyproxy/envoy `source/common/router/router.cc`, shadow
    streams). A service whose callers are all outside the mesh has no caller view at all:
    none of its versions counts as a shadow.
    """
    served = f"sum by ({_BY_VERSION}) ({requests_rate(_reported_by('destination'), window)})"
    live = live_versions_expr(window)
    return (
        f"(\n{served}\nunless on ({_BY_VERSION})\n{live}\n)\n"
        "and on (destination_cluster, destination_service)\n"
        f"sum by (destination_cluster, destination_service) (\n{live}\n)"
    )


def canary_p95_latency_expr(window: str) -> str:
    """p95 request duration per cluster, service and version in milliseconds, as the version's
    own sidecar measured it."""
    rate = requests_rate(
        'reporter="destination"', window, metric="istio_request_duration_milliseconds_bucket"
    )
    return f"histogram_quantile(0.95, sum by ({_BY_VERSION}, le) ({rate}))"


SERVICE_KEY: Final = ("destination_cluster", "destination_service")
"""What a rate-limit page names: the service and the cluster where it is limited."""


def rejected_ratio_expr(window: str) -> str:
    """429 share per cluster and destination service, as the calling proxy saw it.

    `reporter="source"`: a 429 from the ingress gateway's limiter never reaches the
    destination sidecar, but the gateway (the source proxy) reports it, and so does the
    client sidecar for a limit enforced at the destination. A request the gateway refused
    reached no host, so its `destination_cluster` is the gateway's own (`requests_rate`).
    """
    by = ", ".join(SERVICE_KEY)
    rejected = requests_rate('reporter="source", response_code="429"', window)
    return (
        f"sum by ({by}) ({rejected})\n/\n"
        f"sum by ({by}) ({requests_rate(_reported_by('source'), window)})"
    )


def grpc_rate_limited_ratio_expr(window: str) -> str:
    """Share of a service's requests its local rate limiter refused over gRPC, per cluster.

    Envoy's local limiter answers a gRPC call with HTTP 200 and grpc-status
    `RESOURCE_EXHAUSTED` (with `rate_limited_as_resource_exhausted`) or `UNAVAILABLE`, never
    a 429, and only the refusing (destination) sidecar marks it `RL`; the caller sees an
    ordinary gRPC error.
    """
    by = ", ".join(SERVICE_KEY)
    server = 'reporter="destination"'
    return (
        f'sum by ({by}) (rate(istio_requests_total{{{server}, request_protocol="grpc", '
        f'response_flags=~"{RATE_LIMITED_FLAG}"}}[{window}]))\n/\n'
        f"sum by ({by}) (rate(istio_requests_total{{{server}}}[{window}]))"
    )
