"""Incidents against the evaluation clock: what on-call sees, phase by phase.

Each family below is one class of incident (issue 20). The series are what Istio's stats filter
and Envoy really emit (istio/proxy `istio_stats.cc`; docs/alerts.md "What the rules read"):

- a calling proxy or gateway reports `reporter="source"`; when the upstream sends no peer
  metadata (connection refused, no answer) it falls back to the endpoint's metadata, which
  has no app version: `destination_version="unknown"` but the real
  `destination_canonical_revision`, workload and cluster; with no host picked at all every
  destination label is `unknown` (canonical revision `latest`);
- every label combination is a series created on its first request with a non-zero value
  (`_` before it), and a series whose target stops being scraped ends with a stale marker;
- the PodMonitor's target labels (`namespace`, `pod`, `container`, `endpoint`, `instance`,
  `job`), scraped every `scrapeInterval`; rules evaluated every 30 s (the group's interval).

Each case asserts at several evaluation times: silent before and while healthy, firing within
the bound the runbook promises, and silent again once only history is left.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.alerts import monitors, rules
from components.alerts.settings import AlertsSettings
from tests.alerts.test_rules import _render, _rules_by_signal, _write_rules

DEFAULTS = AlertsSettings()
EU_LIKE = AlertsSettings.model_validate(
    {"minRequestRate": 0.5, "canaryErrorRate": {"threshold": 0.02, "for": "1m"}}
)
"""A region that judges canaries only from a request every two seconds, paging after 1m."""
SLOW_SCRAPES = AlertsSettings.model_validate({"scrapeInterval": "30s", "rateWindow": "2m"})

US, EU = "us-east-1", "eu-west-1"
NS = "revenue"
SERVICE = f"revenue-engine.{NS}.svc.cluster.local"
STEPS = 60
"""Samples per series: 15 minutes at 15 s scrapes."""


def _target(workload: str, namespace: str, ip: str) -> dict[str, str]:
    """Target labels the sidecar PodMonitor gives every series of one proxy."""
    return {
        "namespace": namespace,
        "pod": f"{workload}-7f9c6d5b8-k2m4q",
        "container": monitors.ENVOY_PROXY_CONTAINER,
        "endpoint": monitors.ENVOY_PROMETHEUS_PORT,
        "instance": f"{ip}:15090",
        "job": "istio-system/meshstack-envoy-stats",
    }


GATEWAY = ("istio-ingressgateway", "istio-ingress")


@dataclass(frozen=True)
class Peer:
    """What the reporting proxy knows of the destination."""

    version: str
    revision: str
    workload: str
    cluster: str


def _known(version: str, cluster: str = US) -> Peer:
    return Peer(version, version, f"revenue-engine-{version}", cluster)


def _no_metadata(version: str, cluster: str = US) -> Peer:
    """The upstream sent no peer metadata (refused, never answered): endpoint metadata only."""
    return Peer("unknown", version, f"revenue-engine-{version}", cluster)


NO_HOST = Peer("unknown", "latest", "unknown", "unknown")
"""No host was picked (`UH`, `NC`): nothing is known of the destination."""


def _requests(
    reporter: str,
    peer: Peer,
    code: str,
    values: str,
    *,
    flags: str = "-",
    source: tuple[str, str] = GATEWAY,
    source_cluster: str = US,
    protocol: str = "http",
    grpc_status: str = "",
) -> dict[str, str]:
    """One `istio_requests_total` series with all 25 tags and its reporter's target labels."""
    src, src_ns = source
    reporting = (
        _target(peer.workload, NS, "10.4.1.7")
        if reporter == "destination"
        else _target(src, src_ns, "10.4.0.3")
    )
    known = peer.workload != "unknown"
    labels = {
        "reporter": reporter,
        "source_workload": src,
        "source_workload_namespace": src_ns,
        "source_principal": f"spiffe://cluster.local/ns/{src_ns}/sa/{src}",
        "source_app": src,
        "source_version": "unknown",
        "source_canonical_service": src,
        "source_canonical_revision": "latest",
        "source_cluster": source_cluster,
        "destination_workload": peer.workload,
        "destination_workload_namespace": NS if known else "unknown",
        "destination_principal": (
            f"spiffe://cluster.local/ns/{NS}/sa/revenue-engine"
            if known and peer.version != "unknown"
            else "unknown"
        ),
        "destination_app": "revenue-engine" if peer.version != "unknown" else "unknown",
        "destination_version": peer.version,
        "destination_service": SERVICE,
        "destination_service_name": "revenue-engine",
        "destination_service_namespace": NS if known else "unknown",
        "destination_canonical_service": "revenue-engine" if known else "unknown",
        "destination_canonical_revision": peer.revision,
        "destination_cluster": peer.cluster,
        "request_protocol": protocol,
        "response_code": code,
        "grpc_response_status": grpc_status,
        "response_flags": flags,
        "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
        **reporting,
    }
    selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"istio_requests_total{{{selector}}}", "values": values}


def _steady(per_scrape: float, samples: int = STEPS) -> str:
    return f"0+{per_scrape:g}x{samples}"


def _from(start: int, per_scrape: float, samples: int = STEPS) -> str:
    """A series created by its first request at scrape `start` (absent before)."""
    return f"_x{start} {per_scrape:g}+{per_scrape:g}x{samples - start}"


def _until(stop: int, per_scrape: float, samples: int = STEPS) -> str:
    """A counter that stops growing after scrape `stop` (traffic went elsewhere)."""
    return f"0+{per_scrape:g}x{stop} {stop * per_scrape:g}x{samples - stop}"


def _between(start: int, stop: int, per_scrape: float, samples: int = STEPS) -> str:
    """A series created at scrape `start` that stops growing after scrape `stop`."""
    total = (stop - start + 1) * per_scrape
    return f"_x{start} {per_scrape:g}+{per_scrape:g}x{stop - start} {total:g}x{samples - stop - 1}"


def _envoy(metric: str, cluster_name: str, target: dict[str, str], values: str) -> dict[str, str]:
    labels = {"cluster_name": cluster_name, **target}
    selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{selector}}}", "values": values}


@dataclass(frozen=True)
class Page:
    """An alert expected firing: its signal (rule), labels beyond the rule's, `$value` text."""

    signal: str
    labels: dict[str, str]
    value: str


@dataclass(frozen=True)
class Incident:
    name: str
    alert: str
    series: list[dict[str, Any]]
    checks: list[tuple[str, list[Page]]]
    """(evaluation time, alerts firing then); an empty list asserts silence."""
    settings: AlertsSettings = DEFAULTS
    severity: dict[str, str] = field(default_factory=dict)
    """Expected severity by signal, when a case asserts it explicitly."""


def _canary(version: str, cluster: str = US) -> dict[str, str]:
    return {
        "destination_cluster": cluster,
        "destination_service": SERVICE,
        "destination_version": version,
    }


def _expected(incident: Incident, pages: list[Page]) -> list[dict[str, Any]]:
    by_signal = _rules_by_signal(incident.settings)
    expected = []
    for page in pages:
        rule = by_signal[(incident.alert, page.signal)]
        if page.signal in incident.severity:
            assert rule["labels"]["severity"] == incident.severity[page.signal]
        expected.append(
            {
                "exp_labels": {**rule["labels"], **page.labels},
                "exp_annotations": {
                    key: _render(text, page.labels, page.value)
                    for key, text in rule["annotations"].items()
                },
            }
        )
    return expected


def _run(promtool: str, directory: Path, incident: Incident) -> subprocess.CompletedProcess[str]:
    rules_file = _write_rules(directory, incident.settings)
    test = {
        "rule_files": [rules_file.name],
        "evaluation_interval": rules.EVALUATION_INTERVAL,
        "tests": [
            {
                "name": incident.name,
                "interval": incident.settings.scrape_interval,
                "input_series": incident.series,
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": incident.alert,
                        "exp_alerts": _expected(incident, pages),
                    }
                    for at, pages in incident.checks
                ],
            }
        ],
    }
    path = directory / "incident.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return subprocess.run(
        [promtool, "test", "rules", path.name],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )


# Live traffic of a healthy mesh: the gateway routes 80/20 to v1/v2, both sidecars agree.
HEALTHY = [
    _requests("source", _known("v1"), "200", _steady(80)),
    _requests("destination", _known("v1"), "200", _steady(80)),
    _requests("source", _known("v2"), "200", _steady(20)),
    _requests("destination", _known("v2"), "200", _steady(20)),
]

BROKEN_AT = 12
"""Scrape index at which the incidents start: 3m (scraped at 3m, first seen at 3m15s)."""

# --- 1. a failing canary pages whichever proxy observes it ---------------------------------

CALLER_VIEW = [
    Incident(
        "canary-refusing-connections-pages-from-the-gateways-view-within-4-minutes",
        "CanaryErrorRateHigh",
        [
            *HEALTHY[:2],
            # From 3m v2's pods refuse connections: its sidecar sees nothing, the gateway
            # answers 503 URX after its retries, knowing v2 only from endpoint metadata.
            _requests("source", _known("v2"), "200", _until(BROKEN_AT, 20)),
            _requests("destination", _known("v2"), "200", _until(BROKEN_AT, 20)),
            _requests("source", _no_metadata("v2"), "503", _from(BROKEN_AT, 20), flags="URX"),
        ],
        [
            ("3m", []),
            # rateWindow 1m + for 2m + one evaluation + one scrape after 3m.
            ("6m45s", [Page("", _canary("v2"), "100%")]),
        ],
    ),
    Incident(
        "canary-timing-out-at-0.2-requests-a-second-pages-within-3-minutes",
        "CanaryErrorRateHigh",
        [
            *HEALTHY[:2],
            # 3 requests per 15s scrape: below minRequestRate 0.5. From 3m v2 never answers:
            # the gateway times out (504 UT), v2's sidecar records the hang-up (0, DC).
            _requests("source", _known("v2"), "200", _until(BROKEN_AT, 3)),
            _requests("destination", _known("v2"), "200", _until(BROKEN_AT, 3)),
            _requests("source", _no_metadata("v2"), "504", _from(BROKEN_AT, 3), flags="UT"),
            _requests("destination", _known("v2"), "0", _from(BROKEN_AT, 3), flags="DC"),
        ],
        [("3m", []), ("5m45s", [Page("", _canary("v2"), "100%")])],
        settings=EU_LIKE,
    ),
    Incident(
        "canary-whose-app-has-no-listener-pages-from-its-own-sidecar",
        "CanaryErrorRateHigh",
        [
            *HEALTHY[:2],
            _requests("source", _known("v2"), "200", _steady(19)),
            _requests("destination", _known("v2"), "200", _steady(19)),
            # 1 in 20 requests is answered "no response" by v2's proxy (code 0, DC), 5%+.
            _requests("destination", _known("v2"), "0", _from(BROKEN_AT, 2), flags="DC"),
        ],
        [("3m", []), ("7m", [Page("", _canary("v2"), "9.524%")])],
    ),
    Incident(
        "every-v2-host-ejected-pages-for-the-service-in-the-callers-cluster",
        "CanaryErrorRateHigh",
        [
            *HEALTHY,
            # No healthy host left in v2's subset: the gateway answers 503 UH and knows
            # nothing of a destination (version `unknown`, revision `latest`, cluster
            # `unknown`): the page names the service and the gateway's cluster.
            _requests("source", NO_HOST, "503", _from(BROKEN_AT, 20), flags="UH"),
        ],
        [("3m", []), ("7m", [Page("", _canary("latest"), "100%")])],
    ),
    Incident(
        "a-healthy-mesh-and-a-past-outage-are-silent",
        "CanaryErrorRateHigh",
        [
            *HEALTHY[:2],
            _requests("source", _known("v2"), "200", _steady(20)),
            _requests("destination", _known("v2"), "200", _steady(20)),
            # v2 refused half the connections for 4 minutes starting at 1m, then recovered: the
            # page fired then and resolved; at 10m only history is left.
            _requests("source", _no_metadata("v2"), "503", _between(4, 20, 20), flags="URX"),
        ],
        [("5m", [Page("", _canary("v2"), "50%")]), ("10m", []), ("14m", [])],
    ),
    Incident(
        "injected-faults-and-rate-limits-are-not-failures-of-the-version",
        "CanaryErrorRateHigh",
        [
            *HEALTHY,
            _requests("source", _known("v2"), "503", _steady(20), flags="FI"),
            _requests("source", NO_HOST, "429", _steady(20), flags="RL"),
            _requests("source", NO_HOST, "500", _steady(20), flags="RLSE"),
        ],
        [("5m", []), ("10m", [])],
    ),
]

# --- 2. a canary whose own metrics vanish --------------------------------------------------

VANISHED = [
    Incident(
        "canary-crash-looping-with-its-scrape-gone-pages-from-the-callers-view",
        "CanaryErrorRateHigh",
        [
            *HEALTHY[:2],
            _requests("source", _known("v2"), "200", _until(BROKEN_AT, 20)),
            # v2's pods crash: their target is gone (stale marker, then no samples) while
            # the gateway gets 503 UF from the dying hosts.
            {
                **_requests("destination", _known("v2"), "200", ""),
                "values": f"0+20x{BROKEN_AT - 1} stale",
            },
            _requests("source", _no_metadata("v2"), "503", _from(BROKEN_AT, 20), flags="UF"),
        ],
        [("3m", []), ("6m45s", [Page("", _canary("v2"), "100%")])],
    ),
    Incident(
        "canary-whose-scrape-fails-while-callers-see-30s-scrapes-of-failures-pages",
        "CanaryErrorRateHigh",
        [
            _requests("source", _known("v1"), "200", _steady(160, 30)),
            _requests("source", _known("v2"), "200", _until(6, 40, 30)),
            # v2's sidecar series end (its last scrape at 2m30s): nothing from its view.
            {
                **_requests("destination", _known("v2"), "200", ""),
                "values": "0+40x5 stale",
            },
            _requests("source", _no_metadata("v2"), "503", _from(6, 40, 30), flags="URX"),
        ],
        [("3m", []), ("8m", [Page("", _canary("v2"), "100%")])],
        settings=SLOW_SCRAPES,
    ),
]

# --- 3. the hub names the region and never dilutes it --------------------------------------

REGIONS = [
    Incident(
        "a-canary-failing-in-eu-pages-for-eu-however-much-healthy-traffic-us-has",
        "CanaryErrorRateHigh",
        [
            # The hub's Prometheus holds both regions. us-east-1: v2 healthy at 10x the
            # traffic; eu-west-1: v2 fails 10% of its requests from 3m.
            _requests("destination", _known("v2", US), "200", _steady(200)),
            _requests("source", _known("v2", US), "200", _steady(200)),
            _requests("destination", _known("v2", EU), "200", _steady(18), source_cluster=EU),
            _requests("source", _known("v2", EU), "200", _steady(18), source_cluster=EU),
            _requests(
                "destination", _known("v2", EU), "503", _from(BROKEN_AT, 2), source_cluster=EU
            ),
            _requests("source", _known("v2", EU), "503", _from(BROKEN_AT, 2), source_cluster=EU),
        ],
        [("3m", []), ("7m", [Page("", _canary("v2", EU), "10%")])],
    ),
    Incident(
        "eu-callers-failing-over-to-a-broken-us-canary-page-for-us",
        "CanaryErrorRateHigh",
        [
            *HEALTHY,
            # eu-west-1's callers fail over to us-east-1's v2, which refuses them.
            _requests(
                "source",
                _no_metadata("v2", US),
                "503",
                _from(BROKEN_AT, 20),
                flags="UF",
                source_cluster=EU,
            ),
        ],
        # Half of v2's requests (the eu callers') fail: the page is us-east-1's v2.
        [("3m", []), ("7m", [Page("", _canary("v2", US), "50%")])],
    ),
]

# --- 4. a shadow warns, never pages --------------------------------------------------------

SHADOW = [
    Incident(
        "a-failing-shadow-warns-and-does-not-page",
        "CanaryErrorRateHigh",
        [
            *HEALTHY,
            # v3 gets only mirrored copies: its sidecar reports them, no caller does.
            _requests("destination", _known("v3"), "200", _until(BROKEN_AT, 25)),
            _requests("destination", _known("v3"), "500", _from(BROKEN_AT, 25)),
        ],
        [("3m", []), ("7m", [Page("shadow", _canary("v3"), "100%")])],
        severity={"shadow": "warning"},
    ),
    Incident(
        "a-live-canary-failing-beside-a-shadow-still-pages",
        "CanaryErrorRateHigh",
        [
            *HEALTHY[:2],
            _requests("source", _known("v2"), "200", _steady(18)),
            _requests("destination", _known("v2"), "200", _steady(18)),
            _requests("source", _known("v2"), "503", _from(BROKEN_AT, 2)),
            _requests("destination", _known("v2"), "503", _from(BROKEN_AT, 2)),
            _requests("destination", _known("v3"), "200", _steady(25)),
        ],
        [("3m", []), ("7m", [Page("", _canary("v2"), "10%")])],
    ),
]


def _latency(peer: Peer, cumulative: dict[str, float]) -> list[dict[str, str]]:
    """`istio_request_duration_milliseconds_bucket` of a version's own sidecar, per scrape."""
    base = _requests("destination", peer, "200", "")["series"]
    name = "istio_request_duration_milliseconds_bucket"
    return [
        {
            "series": base.replace("istio_requests_total{", f'{name}{{le="{le}", ', 1),
            "values": _steady(count),
        }
        for le, count in cumulative.items()
    ]


SHADOW.append(
    Incident(
        "a-slow-shadow-warns-while-the-live-versions-are-fast",
        "CanaryLatencyHigh",
        [
            *HEALTHY,
            *_latency(_known("v1"), {"100": 80, "1000": 80, "2500": 80, "+Inf": 80}),
            # v3's mirrored copies take 1-2.5s: p95 ~2.4s, above the 1s threshold.
            _requests("destination", _known("v3"), "200", _steady(25)),
            *_latency(_known("v3"), {"100": 0, "1000": 0, "2500": 25, "+Inf": 25}),
        ],
        [("8m", [Page("shadow", _canary("v3"), "2425")])],
        severity={"shadow": "warning"},
    )
)

# --- 5. the quota service failing ----------------------------------------------------------

QUOTA_SCOPE = {
    "source_cluster": EU,
    "source_workload_namespace": GATEWAY[1],
    "source_workload": GATEWAY[0],
}
GATEWAY_PROXY = _target(GATEWAY[0], GATEWAY[1], "10.4.0.3")
ROUTE = f"outbound|8080|v1|{SERVICE}"

QUOTA = [
    Incident(
        "redis-down-with-failure-mode-deny-pages-within-2-minutes",
        "QuotaServiceFailing",
        [
            _requests("source", _known("v1", EU), "200", _until(BROKEN_AT, 100), source_cluster=EU),
            # From 3m the gateway answers every public request 500 RLSE, before any upstream.
            _requests(
                "source", NO_HOST, "500", _from(BROKEN_AT, 100), flags="RLSE", source_cluster=EU
            ),
        ],
        [("3m", []), ("5m15s", [Page("denied", QUOTA_SCOPE, "100%")])],
        severity={"denied": "critical"},
    ),
    Incident(
        "quota-service-failing-open-warns-that-quotas-are-off",
        "QuotaServiceFailing",
        [
            _requests("source", _known("v1"), "200", _steady(100)),
            _envoy("envoy_cluster_ratelimit_ok", ROUTE, GATEWAY_PROXY, _until(BROKEN_AT, 95)),
            _envoy("envoy_cluster_ratelimit_over_limit", ROUTE, GATEWAY_PROXY, _steady(5)),
            # Quota checks fail from 3m and the requests pass unchecked.
            _envoy("envoy_cluster_ratelimit_error", ROUTE, GATEWAY_PROXY, _from(BROKEN_AT, 95)),
            _envoy(
                "envoy_cluster_ratelimit_failure_mode_allowed",
                ROUTE,
                GATEWAY_PROXY,
                _from(BROKEN_AT, 95),
            ),
        ],
        [
            ("3m", []),
            ("5m15s", [Page("errors", {"namespace": GATEWAY[1]}, "95%")]),
        ],
        severity={"errors": "warning"},
    ),
    Incident(
        "a-healthy-quota-service-refusing-clients-over-their-quota-is-silent",
        "QuotaServiceFailing",
        [
            _requests("source", _known("v1"), "200", _steady(90)),
            _requests("source", NO_HOST, "429", _steady(10), flags="RL"),
            _envoy("envoy_cluster_ratelimit_ok", ROUTE, GATEWAY_PROXY, _steady(90)),
            _envoy("envoy_cluster_ratelimit_over_limit", ROUTE, GATEWAY_PROXY, _steady(10)),
        ],
        [("5m", []), ("10m", [])],
    ),
]

# --- 6. overflow names the workload --------------------------------------------------------

INBOUND = "inbound|8080||"
SHEDDING = _target("revenue-engine-v2", NS, "10.4.1.8")
CALM = _target("admin-service", "admin", "10.4.1.9")

OVERFLOW = [
    Incident(
        "inbound-overflow-names-the-pod-that-sheds-not-every-workload-on-the-port",
        "CircuitBreakerTriggered",
        [
            _envoy(rules.PENDING_OVERFLOW, INBOUND, SHEDDING, "0x12 0+4x48"),
            _envoy(rules.PENDING_OVERFLOW, INBOUND, CALM, "0x60"),
            _envoy(rules.EJECTIONS, INBOUND, SHEDDING, "0x60"),
            _envoy(rules.EJECTIONS, INBOUND, CALM, "0x60"),
        ],
        [
            ("3m", []),
            (
                "4m",
                [
                    Page(
                        "pending_overflow",
                        {"cluster_name": INBOUND, "namespace": NS, "pod": SHEDDING["pod"]},
                        "12",
                    )
                ],
            ),
        ],
    ),
]

# --- 7. circuit breaker threshold: what it ignores -----------------------------------------

UPSTREAM = f"outbound|8080|v2|{SERVICE}"
CALLERS = [_target(f"checkout-{i}", "shop", f"10.4.3.{i}") for i in (1, 2)]
ONE_HOST_TWO_CALLERS = [
    _envoy(rules.EJECTIONS, UPSTREAM, caller, "0x20 1x40") for caller in CALLERS
]

BREAKER = [
    Incident(
        "one-bad-host-ejected-by-two-callers-pages-within-60s-at-threshold-0",
        "CircuitBreakerTriggered",
        ONE_HOST_TWO_CALLERS,
        [("5m", []), ("5m30s", [Page("outlier_ejection", {"cluster_name": UPSTREAM}, "2")])],
    ),
    Incident(
        "threshold-2-ignores-one-bad-host-ejected-by-two-callers",
        "CircuitBreakerTriggered",
        ONE_HOST_TWO_CALLERS,
        [("5m30s", []), ("6m", [])],
        settings=AlertsSettings.model_validate({"circuitBreaker": {"threshold": 2}}),
    ),
    Incident(
        "threshold-1-pages-on-one-bad-host-ejected-by-two-callers",
        "CircuitBreakerTriggered",
        ONE_HOST_TWO_CALLERS,
        [("5m", []), ("5m30s", [Page("outlier_ejection", {"cluster_name": UPSTREAM}, "2")])],
        settings=AlertsSettings.model_validate({"circuitBreaker": {"threshold": 1}}),
    ),
]

INCIDENTS = [*CALLER_VIEW, *VANISHED, *REGIONS, *SHADOW, *QUOTA, *OVERFLOW, *BREAKER]


@pytest.mark.parametrize("incident", INCIDENTS, ids=lambda i: i.name)
def test_incident(promtool: str, tmp_path: Path, incident: Incident) -> None:
    result = _run(promtool, tmp_path, incident)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_canary_seen_only_by_its_callers_would_be_missed_by_the_servers_view(
    promtool: str, tmp_path: Path
) -> None:
    # The harness can fail: expecting silence where callers see v2 refuse every connection.
    incident = CALLER_VIEW[0]
    wrong = Incident(incident.name, incident.alert, incident.series, [("6m45s", [])])
    result = _run(promtool, tmp_path, wrong)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
