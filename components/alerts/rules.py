"""Pure builders of the mesh's Prometheus scrape objects and alert rules.

Plain functions from settings to dicts, unit-tested without the Pulumi engine and checked
with promql-parser and `promtool`; the expressions over Istio's request metrics are built in
`traffic.py`. `MeshAlerts` (`component.py`) only wraps them in custom
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
from components.alerts.traffic import (
    SHADOW_SEVERITY,
    VERSION_KEY,
    canary_errors_expr,
    canary_p95_latency_expr,
    enough_traffic_expr,
    grpc_rate_limited_ratio_expr,
    rejected_ratio_expr,
    shadow_versions_expr,
)

BY_VERSION: Final = ", ".join(VERSION_KEY)

ALERT_NAMES: Final = (
    "CanaryErrorRateHigh",
    "CanaryLatencyHigh",
    "RateLimitExceeded",
    "QuotaServiceFailing",
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

EJECTIONS: Final = "envoy_cluster_outlier_detection_ejections_enforced_total"
PENDING_OVERFLOW: Final = "envoy_cluster_upstream_rq_pending_overflow"
RATELIMIT_OVER_LIMIT: Final = "ratelimit_service_rate_limit_over_limit"
QUOTA_CHECK_ERRORS: Final = "envoy_cluster_ratelimit_error"
QUOTA_VERDICTS: Final = ("envoy_cluster_ratelimit_ok", "envoy_cluster_ratelimit_over_limit")
"""The global rate limit filter's verdict counters, `cluster.<route's cluster>.ratelimit.
{ok,over_limit,error,failure_mode_allowed}` on the proxy that calls the quota service (the
ingress gateway), created on first use (envoyproxy/envoy
`docs/root/configuration/http/http_filters/rate_limit_filter.rst`, Statistics). `error` counts
every failed call of the quota service whatever `failure_mode_deny` says; `failure_mode_allowed`
the ones let through anyway. Every quota check ends in exactly one of `ok`, `over_limit`,
`error`, so their sum is the number of checks."""

QUOTA_SERVICE_ERROR_FLAG: Final = "(.+,)?RLSE(,.+)?"
"""`response_flags` of a request refused because the quota service failed and
`failure_mode_deny` is set: Envoy's rate limit filter answers it 500 and sets
`RateLimitServiceError` (`RLSE`). With fail-open the request goes on, unflagged."""

SCRAPE_CLUSTER: Final = "cluster"
"""Label naming the region of a series that carries no mesh cluster of its own (Envoy's
cluster stats): the hub's Prometheus (Thanos, federation) adds it per source cluster. In a
single-cluster Prometheus the label is absent and the `by` clauses ignore it."""


ENVOY_STATS: Final = {
    EJECTIONS: "cluster.{cluster}.outlier_detection.ejections_enforced_total",
    PENDING_OVERFLOW: "cluster.{cluster}.upstream_rq_pending_overflow",
    QUOTA_CHECK_ERRORS: "cluster.{cluster}.ratelimit.error",
    "envoy_cluster_ratelimit_ok": "cluster.{cluster}.ratelimit.ok",
    "envoy_cluster_ratelimit_over_limit": "cluster.{cluster}.ratelimit.over_limit",
}
"""Envoy stat name behind each Prometheus metric the alerts read. Envoy's Prometheus output
prefixes `envoy_`, moves the cluster name into the `cluster_name` label and joins the rest
with `_`; counters keep their name (no `_total` is added: the ejection counter's own name
ends in `_total`). `proxyStatsMatcher` regexps are matched against these stat names."""


def _selector(labels: dict[str, str]) -> str:
    return ", ".join(f'{key}="{value}"' for key, value in labels.items())


def over_limit_expr(window: str) -> str:
    """Over-limit decisions per second of the global rate limit service, per domain (and per
    `cluster` where the hub's Prometheus adds it)."""
    return f"sum by ({SCRAPE_CLUSTER}, domain) (rate({RATELIMIT_OVER_LIMIT}[{window}]))"


OUTLIER_KEY: Final = (SCRAPE_CLUSTER, "cluster_name")
"""Ejections are counted per upstream cluster, summed over every calling proxy of a region:
each caller ejects a bad host on its own, so one bad host seen by N callers is N ejections."""

OVERFLOW_KEY: Final = (SCRAPE_CLUSTER, "namespace", "pod", "cluster_name")
"""Overflows are counted per proxy: Istio applies a DestinationRule's connection pool to the
server's inbound cluster too (`inbound|<port>||`, the same name on every pod of every
workload on that port), so the pod and its namespace (the PodMonitor's target labels) say
which workload sheds requests; for an outbound cluster they name the caller."""


def envoy_increase_expr(metric: str, window: str, by: tuple[str, ...] = OUTLIER_KEY) -> str:
    """Increase of an Envoy cluster counter over the window, per `by`."""
    return f"sum by ({', '.join(by)}) (increase({metric}[{window}]))"


QUOTA_GATEWAY_KEY: Final = ("source_cluster", "source_workload_namespace", "source_workload")
"""The proxy that asks the quota service (the ingress gateway), and its cluster."""


def quota_denied_ratio_expr(window: str) -> str:
    """Share of the requests a proxy answered 500 because the quota service failed, as that
    proxy reports them (the ingress gateway reports `source`)."""
    by = ", ".join(QUOTA_GATEWAY_KEY)
    refused = f'reporter="source", response_flags=~"{QUOTA_SERVICE_ERROR_FLAG}"'
    return (
        f"sum by ({by}) (rate(istio_requests_total{{{refused}}}[{window}]))\n/\n"
        f'sum by ({by}) (rate(istio_requests_total{{reporter="source"}}[{window}]))'
    )


QUOTA_PROXY_KEY: Final = (SCRAPE_CLUSTER, "namespace")
"""The namespace of the proxies calling the quota service (the gateway's), per cluster."""


def quota_error_ratio_expr(window: str) -> str:
    """Share of quota checks that failed (quota service or Redis down, slow or refusing).

    Every check ends `ok`, `over_limit` or `error`; each counter is created on its first use,
    so a missing `ok`/`over_limit` counts as 0 where `error` exists.
    """
    by = ", ".join(QUOTA_PROXY_KEY)
    failed = f"sum by ({by}) (rate({QUOTA_CHECK_ERRORS}[{window}]))"
    others = " + ".join(
        f"(sum by ({by}) (rate({metric}[{window}])) or 0 * {failed})" for metric in QUOTA_VERDICTS
    )
    return f"{failed}\n/\n({failed} + {others})"


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
    quota = settings.quota_service
    version = (
        "{{ $labels.destination_service }} version {{ $labels.destination_version }} in "
        "cluster {{ $labels.destination_cluster }}"
    )
    shadow = shadow_versions_expr(window)
    failing = canary_errors_expr(window, errors.threshold, settings.min_request_rate)
    slow = (
        f"(\n{canary_p95_latency_expr(window)}\n) > {latency.threshold_ms:g}"
        f"\nand on ({BY_VERSION})\n"
        f"sum without (reporter) ({enough_traffic_expr(window, settings.min_request_rate)})"
    )
    errors_description = (
        "{{ $value | humanizePercentage }} of the requests to "
        f"{version} failed (5xx, no answer, or a server-side gRPC status) over {window} in "
        "the view of its own sidecar or of its callers, whichever is worse, above the "
        f"{_percent(errors.threshold)} threshold for {errors.for_}."
    )
    latency_description = (
        f'p95 latency of {version} is {{{{ $value | printf "%.0f" }}}}ms over {window}, '
        f"above the {latency.threshold_ms:g}ms threshold for {latency.for_}."
    )
    return [
        _alert(
            "CanaryErrorRateHigh",
            f"{failing}\nunless on ({BY_VERSION})\n(\n{shadow}\n)",
            for_=errors.for_,
            severity=errors.severity,
            summary=f"{version} fails too many requests",
            description=f"{errors_description} If this is a canary, roll it back.",
        ),
        _alert(
            "CanaryErrorRateHigh",
            f"{failing}\nand on ({BY_VERSION})\n(\n{shadow}\n)",
            for_=errors.for_,
            severity=SHADOW_SEVERITY,
            labels={"signal": "shadow"},
            summary=f"Shadow {version} fails mirrored requests",
            description=(
                f"{errors_description} It receives only mirrored copies, whose answers "
                "nobody sees: fix it before it gets live traffic."
            ),
        ),
        _alert(
            "CanaryLatencyHigh",
            f"{slow}\nunless on ({BY_VERSION})\n(\n{shadow}\n)",
            for_=latency.for_,
            severity=latency.severity,
            summary=f"{version} is slow",
            description=latency_description,
        ),
        _alert(
            "CanaryLatencyHigh",
            f"{slow}\nand on ({BY_VERSION})\n(\n{shadow}\n)",
            for_=latency.for_,
            severity=SHADOW_SEVERITY,
            labels={"signal": "shadow"},
            summary=f"Shadow {version} is slow",
            description=f"{latency_description} It receives only mirrored copies.",
        ),
        _alert(
            "RateLimitExceeded",
            f"(\n{rejected_ratio_expr(window)}\n) > {limit.threshold:g}",
            for_=limit.for_,
            severity=limit.severity,
            labels={"signal": "http_429"},
            summary=(
                "{{ $labels.destination_service }} rejects many requests with 429 in "
                "cluster {{ $labels.destination_cluster }}"
            ),
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
            summary=(
                "{{ $labels.destination_service }} rate-limits many gRPC calls in cluster "
                "{{ $labels.destination_cluster }}"
            ),
            description=(
                "{{ $value | humanizePercentage }} of the requests to "
                "{{ $labels.destination_service }} were gRPC calls its local rate limit "
                "refused (HTTP 200, grpc-status RESOURCE_EXHAUSTED or UNAVAILABLE, flag RL) "
                f"over {window}, above the {_percent(limit.threshold)} threshold for "
                f"{limit.for_}."
            ),
        ),
        _alert(
            "QuotaServiceFailing",
            f"(\n{quota_denied_ratio_expr(window)}\n) > {quota.threshold:g}",
            for_=quota.for_,
            severity=quota.severity,
            labels={"signal": "denied"},
            summary=(
                "{{ $labels.source_workload }} answers requests 500 because the quota "
                "service fails (cluster {{ $labels.source_cluster }})"
            ),
            description=(
                "{{ $value | humanizePercentage }} of the requests through "
                "{{ $labels.source_workload_namespace }}/{{ $labels.source_workload }} in "
                "cluster {{ $labels.source_cluster }} were refused with 500 (flag RLSE) over "
                f"{window}: the rate limit service failed and failureModeDeny is on. Above "
                f"the {_percent(quota.threshold)} threshold for {quota.for_}."
            ),
        ),
        _alert(
            "QuotaServiceFailing",
            f"(\n{quota_error_ratio_expr(window)}\n) > {quota.threshold:g}",
            for_=quota.for_,
            severity=quota.errors_severity,
            labels={"signal": "errors"},
            summary="Quota checks of the proxies in {{ $labels.namespace }} fail",
            description=(
                "{{ $value | humanizePercentage }} of the quota checks by the proxies in "
                "{{ $labels.namespace }} failed over "
                f"{window} (Envoy's ratelimit.error), above the {_percent(quota.threshold)} "
                f"threshold for {quota.for_}: with failureModeDeny off per-client quotas are "
                "not enforced, with it on those requests are answered 500."
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
                f"{{{{ $labels.cluster_name }}}} in {window}, counted over every calling "
                f"proxy (threshold {breaker.threshold:g}): upstream hosts keep failing."
            ),
        ),
        _alert(
            "CircuitBreakerTriggered",
            f"{envoy_increase_expr(PENDING_OVERFLOW, window, OVERFLOW_KEY)} > "
            f"{breaker.threshold:g}",
            for_=breaker.for_,
            severity=breaker.severity,
            labels={"signal": "pending_overflow"},
            summary=(
                "Circuit breaker of {{ $labels.cluster_name }} in pod "
                "{{ $labels.namespace }}/{{ $labels.pod }} sheds requests"
            ),
            description=(
                "{{ $value | humanize }} requests of pod {{ $labels.namespace }}/"
                "{{ $labels.pod }} to {{ $labels.cluster_name }} overflowed "
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
