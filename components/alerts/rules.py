"""Pure builders of the mesh's Prometheus scrape objects and alert rules.

Plain functions from settings to dicts, unit-tested without the Pulumi engine and checked
with promql-parser and `promtool`. `MeshAlerts` (`component.py`) only wraps them in custom
resources.

Every alert reads a metric that really exists:

- `istio_requests_total` and `istio_request_duration_milliseconds_bucket` are Istio's
  standard metrics, on by default;
- the Envoy cluster stats (`envoy_cluster_*`) exist only because IstioMesh's
  `proxyStatsMatcher.inclusionRegexps` exports them; `ENVOY_STATS` names the Envoy stat behind
  each Prometheus name so the tests can check the regexps really match it;
- `ratelimit_service_rate_limit_over_limit` is the envoyproxy/ratelimit service's counter
  (with `USE_PROMETHEUS=true`), labelled by rate limit `domain`;
- `up`, `pilot_xds_pushes`, `pilot_total_xds_rejects` and `pilot_proxy_convergence_time` come
  from istiod's monitoring port (`pilot/pkg/xds/monitoring.go`, `pilot/pkg/model/push_context.go`;
  Istio's exporter adds no `_total` to its counters), scraped by the istiod ServiceMonitor.
"""

from __future__ import annotations

from typing import Any, Final

from components.alerts.settings import EVALUATION_INTERVAL_SECONDS, AlertsSettings

ALERT_NAMES: Final = (
    "CanaryErrorRateHigh",
    "CanaryLatencyHigh",
    "RateLimitExceeded",
    "CircuitBreakerTriggered",
    "IstiodUnavailable",
    "IstiodXdsPushErrors",
    "IstiodProxiesBehind",
)
"""Every alert of the PrometheusRule, in rule order."""

RULE_GROUP: Final = "meshstack.mesh"
"""Name of the one rule group."""

EVALUATION_INTERVAL: Final = f"{EVALUATION_INTERVAL_SECONDS}s"
"""`interval` of the rule group, set explicitly because the settings' detection-time rules
(`circuit_breaker_detection_error`) count in evaluations."""


ISTIOD_JOB_LABEL: Final = "istio"
"""Service label the istiod ServiceMonitor takes the `job` label from (`jobLabel`)."""

ISTIOD_SERVICE_SELECTOR: Final = {ISTIOD_JOB_LABEL: "pilot"}
"""Labels of every istiod Service, whatever its revision."""

ISTIOD_JOB: Final = ISTIOD_SERVICE_SELECTOR[ISTIOD_JOB_LABEL]
"""`job` of every istiod target: the Prometheus Operator sets it to the value of the
Service's `jobLabel` label, `istio: pilot`."""

XDS_PUSHES: Final = "pilot_xds_pushes"
"""istiod's push counter; `type` is the xDS type (`cds`, `eds`, ...) for pushes sent and
`<type>_senderr` for pushes that failed to send with an unexpected gRPC error."""
XDS_SEND_ERRORS: Final = ".+_senderr"
XDS_REJECTS: Final = "pilot_total_xds_rejects"
"""Configs a proxy answered with a NACK, by xDS `type` (`cds`, `lds`, `ecds`, ...)."""
PROXY_CONVERGENCE: Final = "pilot_proxy_convergence_time_bucket"
"""Seconds from a config change until a proxy has received all of it (histogram)."""

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

ALL_FAILING_RATIO: Final = 0.99
"""Failed share at which a version is judged whatever its traffic: "every request fails",
with room for the float rounding of two separately summed rates."""

EJECTIONS: Final = "envoy_cluster_outlier_detection_ejections_enforced_total"
PENDING_OVERFLOW: Final = "envoy_cluster_upstream_rq_pending_overflow"
RATELIMIT_OVER_LIMIT: Final = "ratelimit_service_rate_limit_over_limit"


ENVOY_STATS: Final = {
    EJECTIONS: "cluster.{cluster}.outlier_detection.ejections_enforced_total",
    PENDING_OVERFLOW: "cluster.{cluster}.upstream_rq_pending_overflow",
}
"""Envoy stat name behind each Prometheus metric the alerts read. Envoy's Prometheus output
prefixes `envoy_`, moves the cluster name into the `cluster_name` label and joins the rest
with `_`; counters keep their name (no `_total` is added: the ejection counter's own name
ends in `_total`). `proxyStatsMatcher` regexps are matched against these stat names."""


def _selector(labels: dict[str, str]) -> str:
    return ", ".join(f'{key}="{value}"' for key, value in labels.items())


def canary_error_ratio_expr(window: str) -> str:
    """Failed share per service version, as seen by the receiving sidecar.

    A failure is a 5xx, or, for gRPC (`request_protocol="grpc"`), a server-side
    `grpc_response_status` (`GRPC_SERVER_FAILURES`): gRPC answers errors with HTTP 200 and the
    status in a trailer, so `response_code` alone misses them, and a client error such as
    `NOT_FOUND` is the caller's fault, like an HTTP 4xx. A gRPC call the local rate limiter
    refused (flag `RL`, status `UNAVAILABLE` or `RESOURCE_EXHAUSTED`) is the limiter doing
    its job, counted by `RateLimitExceeded`, not a failure of the version. The two selectors
    are joined with `or` before the `sum`: a series both select has one label set and is
    kept once, so nothing is counted twice.
    """
    by = "destination_service, destination_version"
    server = _selector({"reporter": "destination"})
    statuses = "|".join(GRPC_SERVER_FAILURES)
    http_errors = f'istio_requests_total{{{server}, response_code=~"5.."}}'
    grpc_errors = (
        f'istio_requests_total{{{server}, request_protocol="grpc", '
        f'grpc_response_status=~"{statuses}", response_flags!~"{RATE_LIMITED_FLAG}"}}'
    )
    return (
        f"sum by ({by}) (\n  rate({http_errors}[{window}])\n  or\n"
        f"  rate({grpc_errors}[{window}])\n)"
        f"\n/\nsum by ({by}) (rate(istio_requests_total{{{server}}}[{window}]))"
    )


def enough_traffic_expr(window: str, min_rate: float) -> str:
    """Service versions receiving at least `min_rate` requests per second.

    `and`-ed to the canary alerts: one failed or slow request out of three is not a
    verdict on a version.
    """
    by = "destination_service, destination_version"
    return (
        f'sum by ({by}) (rate(istio_requests_total{{reporter="destination"}}[{window}]))'
        f" >= {min_rate:g}"
    )


def judged_for_errors_expr(window: str, min_rate: float) -> str:
    """Service versions whose error share is a verdict: enough traffic, or (almost) every
    request failing, however few there are; a canary failing all of its 0.2 requests a
    second is broken, not noise."""
    return (
        f"(\n{enough_traffic_expr(window, min_rate)}\nor\n"
        f"(\n{canary_error_ratio_expr(window)}\n) >= {ALL_FAILING_RATIO:g}\n)"
    )


def canary_p95_latency_expr(window: str) -> str:
    """p95 request duration per service version in milliseconds."""
    return (
        "histogram_quantile(0.95, sum by (destination_service, destination_version, le) "
        f'(rate(istio_request_duration_milliseconds_bucket{{reporter="destination"}}[{window}])))'
    )


def rejected_ratio_expr(window: str) -> str:
    """429 share per destination service, as the calling proxy saw it.

    `reporter="source"`: a 429 from the ingress gateway's limiter never reaches the
    destination sidecar, but the gateway (the source proxy) reports it, and so does the
    client sidecar for a limit enforced at the destination.
    """
    by = "destination_service"
    return (
        f'sum by ({by}) (rate(istio_requests_total{{reporter="source", response_code="429"}}'
        f"[{window}]))\n/\n"
        f'sum by ({by}) (rate(istio_requests_total{{reporter="source"}}[{window}]))'
    )


def grpc_rate_limited_ratio_expr(window: str) -> str:
    """Share of a service's requests its local rate limiter refused over gRPC.

    Envoy's local limiter answers a gRPC call with HTTP 200 and grpc-status
    `RESOURCE_EXHAUSTED` (with `rate_limited_as_resource_exhausted`) or `UNAVAILABLE`, never
    a 429, and only the refusing (destination) sidecar marks it `RL`; the caller sees an
    ordinary gRPC error.
    """
    by = "destination_service"
    server = 'reporter="destination"'
    return (
        f'sum by ({by}) (rate(istio_requests_total{{{server}, request_protocol="grpc", '
        f'response_flags=~"{RATE_LIMITED_FLAG}"}}[{window}]))\n/\n'
        f"sum by ({by}) (rate(istio_requests_total{{{server}}}[{window}]))"
    )


def over_limit_expr(window: str) -> str:
    """Over-limit decisions per second of the global rate limit service, per domain."""
    return f"sum by (domain) (rate({RATELIMIT_OVER_LIMIT}[{window}]))"


def envoy_increase_expr(metric: str, window: str) -> str:
    """Increase of an Envoy cluster counter over the window, per upstream cluster."""
    return f"sum by (cluster_name) (increase({metric}[{window}]))"


def istiod_down_expr() -> str:
    """Present (value 1) when no istiod target is up, including when none is discovered."""
    return f'absent(up{{job="{ISTIOD_JOB}"}} == 1)'


def istiod_increase_expr(selector: str, window: str) -> str:
    """Increase of an istiod counter over the window, per `type`.

    istiod creates a counter series on its first increment, with that value: increase()
    needs two samples and would never see a first rejection, so a series younger than the
    window counts with its whole value.
    """
    return (
        f"sum by (type) (\n  ({selector} unless {selector} offset {window})\n  or\n"
        f"  increase({selector}[{window}])\n)"
    )


def proxy_convergence_p99_expr(window: str) -> str:
    """p99 seconds from a config change until a proxy has all of it, over every istiod."""
    return f"histogram_quantile(0.99, sum by (le) (rate({PROXY_CONVERGENCE}[{window}])))"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def runbook_url(runbook_base_url: str, alert: str) -> str:
    """Where `alert`'s runbook is: its section (lowercase name) under the runbook base."""
    return f"{runbook_base_url}#{alert.lower()}"


def _with_runbook(rule: dict[str, Any], runbook_base_url: str) -> dict[str, Any]:
    annotations = {
        **rule["annotations"],
        "runbook_url": runbook_url(runbook_base_url, rule["alert"]),
    }
    return {**rule, "annotations": annotations}


def _alert(
    alert: str,
    expr: str,
    *,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "alert": alert,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **(labels or {})},
        "annotations": {
            "summary": summary,
            "description": description,
        },
    }


def alert_rules(settings: AlertsSettings, *, runbook_base_url: str) -> list[dict[str, Any]]:
    """The alerting rules, thresholds and durations from settings.

    `RateLimitExceeded` and `CircuitBreakerTriggered` have one rule per signal, told apart by
    the `signal` label, so each fires with the labels that identify its cause. Each rule's
    `runbook_url` is its section under `runbook_base_url` (resolved by `__main__.py`:
    `alerts.runbookBaseUrl`, else the deployed commit's docs/alerts.md).
    """
    return [_with_runbook(rule, runbook_base_url) for rule in _rules(settings)]


def _rules(settings: AlertsSettings) -> list[dict[str, Any]]:
    window = settings.rate_window
    errors = settings.canary_error_rate
    latency = settings.canary_latency
    limit = settings.rate_limit
    breaker = settings.circuit_breaker
    version = "{{ $labels.destination_service }} version {{ $labels.destination_version }}"
    by = "destination_service, destination_version"
    return [
        _alert(
            "CanaryErrorRateHigh",
            f"(\n{canary_error_ratio_expr(window)}\n) > {errors.threshold:g}"
            f"\nand on ({by})\n{judged_for_errors_expr(window, settings.min_request_rate)}",
            for_=errors.for_,
            severity=errors.severity,
            summary=f"{version} fails too many requests",
            description=(
                "{{ $value | humanizePercentage }} of the requests to "
                f"{version} failed (5xx, or a server-side gRPC status) over {window}, "
                "above the "
                f"{_percent(errors.threshold)} threshold for {errors.for_}. If this is a "
                "canary, roll it back."
            ),
        ),
        _alert(
            "CanaryLatencyHigh",
            f"(\n{canary_p95_latency_expr(window)}\n) > {latency.threshold_ms:g}"
            f"\nand on ({by})\n{enough_traffic_expr(window, settings.min_request_rate)}",
            for_=latency.for_,
            severity=latency.severity,
            summary=f"{version} is slow",
            description=(
                f'p95 latency of {version} is {{{{ $value | printf "%.0f" }}}}ms over {window}, '
                f"above the {latency.threshold_ms:g}ms threshold for {latency.for_}."
            ),
        ),
        _alert(
            "RateLimitExceeded",
            f"(\n{rejected_ratio_expr(window)}\n) > {limit.threshold:g}",
            for_=limit.for_,
            severity=limit.severity,
            labels={"signal": "http_429"},
            summary="{{ $labels.destination_service }} rejects many requests with 429",
            description=(
                "{{ $value | humanizePercentage }} of the requests to "
                "{{ $labels.destination_service }} were rejected with 429 Too Many Requests "
                f"over {window}, above the {_percent(limit.threshold)} threshold for "
                f"{limit.for_}."
            ),
        ),
        _alert(
            "RateLimitExceeded",
            f"{over_limit_expr(window)} > {limit.over_limit_per_second:g}",
            for_=limit.for_,
            severity=limit.severity,
            labels={"signal": "ratelimit_service"},
            summary="Rate limit domain {{ $labels.domain }} is over its limit",
            description=(
                "The rate limit service decides over-limit {{ $value | humanize }} times a "
                "second for domain {{ $labels.domain }}, above the "
                f"{limit.over_limit_per_second:g}/s threshold for {limit.for_}."
            ),
        ),
        _alert(
            "RateLimitExceeded",
            f"(\n{grpc_rate_limited_ratio_expr(window)}\n) > {limit.threshold:g}",
            for_=limit.for_,
            severity=limit.severity,
            labels={"signal": "grpc_local_rate_limit"},
            summary="{{ $labels.destination_service }} rate-limits many gRPC calls",
            description=(
                "{{ $value | humanizePercentage }} of the requests to "
                "{{ $labels.destination_service }} were gRPC calls its local rate limit "
                "refused (HTTP 200, grpc-status RESOURCE_EXHAUSTED or UNAVAILABLE, flag RL) "
                f"over {window}, above the {_percent(limit.threshold)} threshold for "
                f"{limit.for_}."
            ),
        ),
        _alert(
            "CircuitBreakerTriggered",
            f"{envoy_increase_expr(EJECTIONS, window)} > {breaker.threshold:g}",
            for_=breaker.for_,
            severity=breaker.severity,
            labels={"signal": "outlier_ejection"},
            summary="Envoy ejects hosts of {{ $labels.cluster_name }}",
            description=(
                "Outlier detection ejected {{ $value | humanize }} hosts of "
                f"{{{{ $labels.cluster_name }}}} in {window} (threshold "
                f"{breaker.threshold:g}): upstream hosts keep failing."
            ),
        ),
        _alert(
            "CircuitBreakerTriggered",
            f"{envoy_increase_expr(PENDING_OVERFLOW, window)} > {breaker.threshold:g}",
            for_=breaker.for_,
            severity=breaker.severity,
            labels={"signal": "pending_overflow"},
            summary="Circuit breaker of {{ $labels.cluster_name }} sheds requests",
            description=(
                "{{ $value | humanize }} requests to {{ $labels.cluster_name }} overflowed "
                f"the pending-request limit in {window} (threshold {breaker.threshold:g}) "
                "and were answered 503 with flag UO."
            ),
        ),
        *_control_plane_rules(settings),
    ]


def _control_plane_rules(settings: AlertsSettings) -> list[dict[str, Any]]:
    """istiod alerts: down, failing to push or pushing configs proxies reject, slow to
    converge. The error counters fire for as long as an error is in `controlPlane.window`
    (no `for`): istiod pushes sporadically, so a rejection is an event, not a level."""
    plane = settings.control_plane
    window = plane.window
    sent = f'{XDS_PUSHES}{{type=~"{XDS_SEND_ERRORS}"}}'
    return [
        _alert(
            "IstiodUnavailable",
            istiod_down_expr(),
            for_=plane.unavailable_for,
            severity=plane.unavailable_severity,
            summary="No istiod is up",
            description=(
                f'No istiod target (job "{ISTIOD_JOB}") has been up for '
                f"{plane.unavailable_for}: new pods get no sidecar (or are refused by the "
                "injection webhook), certificates are not renewed and proxies keep their "
                "last config."
            ),
        ),
        _alert(
            "IstiodXdsPushErrors",
            f"{istiod_increase_expr(sent, window)} > {plane.push_errors:g}",
            for_="0s",
            severity=plane.severity,
            labels={"signal": "send_error"},
            summary="istiod fails to send {{ $labels.type }} config to proxies",
            description=(
                "istiod failed to send {{ $value | humanize }} {{ $labels.type }} pushes "
                f"in {window} (threshold {plane.push_errors:g}): proxies miss config updates."
            ),
        ),
        _alert(
            "IstiodXdsPushErrors",
            f"{istiod_increase_expr(XDS_REJECTS, window)} > {plane.push_errors:g}",
            for_="0s",
            severity=plane.severity,
            labels={"signal": "rejected"},
            summary="Proxies reject {{ $labels.type }} config from istiod",
            description=(
                "Proxies rejected {{ $value | humanize }} {{ $labels.type }} configs in "
                f"{window} (threshold {plane.push_errors:g}) and keep running their "
                "previous config."
            ),
        ),
        _alert(
            "IstiodProxiesBehind",
            f"{proxy_convergence_p99_expr(window)} > {plane.convergence_seconds:g}",
            for_=plane.convergence_for,
            severity=plane.severity,
            summary="Proxies take long to receive config changes",
            description=(
                "p99 time from a config change until a proxy has all of it is "
                f'{{{{ $value | printf "%.1f" }}}}s over {window}, above '
                f"{plane.convergence_seconds:g}s for {plane.convergence_for}."
            ),
        ),
    ]


def rule_groups(settings: AlertsSettings, *, runbook_base_url: str) -> list[dict[str, Any]]:
    """`spec.groups` of the PrometheusRule (and, as is, a Prometheus rules file's `groups`)."""
    alerts = alert_rules(settings, runbook_base_url=runbook_base_url)
    return [{"name": RULE_GROUP, "interval": EVALUATION_INTERVAL, "rules": alerts}]


def prometheus_rule_spec(settings: AlertsSettings, *, runbook_base_url: str) -> dict[str, Any]:
    """`spec` of the PrometheusRule."""
    return {"groups": rule_groups(settings, runbook_base_url=runbook_base_url)}
