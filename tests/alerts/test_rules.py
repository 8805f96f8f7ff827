"""Alert rules: they parse, `promtool` accepts them, and they fire only when they should.

The `promtool test rules` cases feed realistic series (Istio standard metrics, Envoy cluster
stats, the rate limit service's counter) and expect each alert FIRING on a broken service
and SILENT on a healthy one. promtool is not optional: CI installs Debian's `prometheus`
package, and a missing promtool fails these tests instead of skipping them.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from components.alerts import monitors, rules, traffic
from components.alerts.settings import AlertsSettings
from tests.conftest import STACKS, make_settings
from tools.render import PROJECT_DIR
from tools.verify import validate_manifest

DEFAULTS = AlertsSettings()
RUNBOOKS = "https://git.example.org/team/mesh/blob/abc1234/docs/alerts.md"


def _rules_by_signal(settings: AlertsSettings) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (r["alert"], r["labels"].get("signal", "")): r
        for r in rules.alert_rules(settings, runbook_base_url=RUNBOOKS)
    }


def _metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


# --- shape of the rules ---------------------------------------------------------------------


def test_every_required_alert_is_defined() -> None:
    assert {r["alert"] for r in rules.alert_rules(DEFAULTS, runbook_base_url=RUNBOOKS)} == set(
        rules.ALERT_NAMES
    )


@pytest.mark.parametrize(
    "rule", rules.alert_rules(DEFAULTS, runbook_base_url=RUNBOOKS), ids=lambda r: r["alert"]
)
def test_every_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
    assert rule["annotations"]["runbook_url"] == f"{RUNBOOKS}#{rule['alert'].lower()}"
    assert all(rule["annotations"][key].strip() for key in ("summary", "description"))


@pytest.mark.parametrize("alert", rules.ALERT_NAMES)
def test_every_alert_has_a_runbook_section_where_its_url_points(alert: str) -> None:
    docs = (PROJECT_DIR / "docs" / "alerts.md").read_text()
    assert f"\n### {alert}\n" in docs.split("\n## Runbooks\n", 1)[1]


def alerts_setting_keys(
    model: type[BaseModel] = AlertsSettings, prefix: str = "alerts."
) -> set[str]:
    """Every key of the alerts settings as a stack file spells it (`alerts.controlPlane.window`)."""
    keys = set()
    for name, field_info in model.model_fields.items():
        key = f"{prefix}{field_info.alias or name}"
        annotation = field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= alerts_setting_keys(annotation, f"{key}.")
        else:
            keys.add(key)
    return keys


def tuning_keys(section: str) -> list[str]:
    """The keys a runbook's `Tuned by` sentence names; `alerts.a.b`/`c` is `alerts.a.b` and
    `alerts.a.c`."""
    sentence = section.split("Tuned by", 1)[1].split(".\n", 1)[0] if "Tuned by" in section else ""
    keys = []
    for match in re.finditer(r"`(alerts\.[A-Za-z.]+)`((?:(?: \([^)]*\))?/`[A-Za-z]+`)*)", sentence):
        first = match.group(1)
        keys.append(first)
        keys += [
            f"{first.rsplit('.', 1)[0]}.{k}" for k in re.findall(r"/`([A-Za-z]+)`", match.group(2))
        ]
    return keys


@pytest.mark.parametrize("alert", rules.ALERT_NAMES)
def test_every_runbook_names_the_settings_that_tune_its_alert(alert: str) -> None:
    """Each alert's runbook ends with `Tuned by` and real keys of the alerts settings: an
    operator paged at night finds what to change without reading the model; a renamed key
    fails here instead of leaving the runbook wrong."""
    runbooks = (PROJECT_DIR / "docs" / "alerts.md").read_text().split("\n## Runbooks\n", 1)[1]
    section = runbooks.split(f"\n### {alert}\n", 1)[1].split("\n### ", 1)[0]
    named = tuning_keys(section)
    assert named, f"{alert}: no `Tuned by` sentence naming an `alerts.` key"
    assert set(named) - alerts_setting_keys() == set(), f"{alert}: keys not in the model"


def test_tuning_keys_reads_the_slash_shorthand() -> None:
    sentence = "Tuned by `alerts.rateLimit.threshold` (the share)/`for` and `alerts.rateWindow`.\n"
    assert tuning_keys(sentence) == [
        "alerts.rateLimit.threshold",
        "alerts.rateLimit.for",
        "alerts.rateWindow",
    ]
    assert "alerts.rateLimit.for" in alerts_setting_keys()


@pytest.mark.parametrize(
    "rule", rules.alert_rules(DEFAULTS, runbook_base_url=RUNBOOKS), ids=lambda r: r["alert"]
)
def test_every_expression_parses(rule: dict[str, Any]) -> None:
    promql_parser.parse(rule["expr"])


def test_defaults_are_the_documented_thresholds() -> None:
    by_signal = _rules_by_signal(DEFAULTS)
    errors = by_signal[("CanaryErrorRateHigh", "")]
    assert ") > 0.05\nand on (" in errors["expr"]
    assert (errors["for"], errors["labels"]["severity"]) == ("2m", "critical")
    latency = by_signal[("CanaryLatencyHigh", "")]
    assert ") > 1000\nand on (" in latency["expr"]
    assert ") >= 0.1\nor\n" in errors["expr"] and ") >= 0.99\n)" in errors["expr"]
    assert ") >= 0.1)\nunless on (" in latency["expr"]
    assert latency["expr"].startswith("(\nhistogram_quantile(0.95, ")
    assert latency["for"] == "2m"
    assert by_signal[("RateLimitExceeded", "http_429")]["expr"].endswith(") > 0.1")
    assert by_signal[("RateLimitExceeded", "grpc_local_rate_limit")]["expr"].endswith(") > 0.1")
    assert by_signal[("RateLimitExceeded", "ratelimit_service")]["expr"].endswith(") > 1")
    breaker = by_signal[("CircuitBreakerTriggered", "outlier_ejection")]
    assert breaker["expr"].endswith(") > 0") and breaker["for"] == "0s"
    assert '{reporter="destination"}[1m]' in errors["expr"]
    down = by_signal[("IstiodUnavailable", "")]
    assert (down["for"], down["labels"]["severity"]) == ("2m", "critical")
    for signal in ("send_error", "rejected"):
        push = by_signal[("IstiodXdsPushErrors", signal)]
        assert push["expr"].endswith("[5m])\n) > 0") and push["for"] == "0s"
    behind = by_signal[("IstiodProxiesBehind", "")]
    assert behind["expr"].endswith("[5m]))) > 10") and behind["for"] == "5m"


def test_thresholds_durations_and_severities_come_from_settings() -> None:
    settings = AlertsSettings.model_validate(
        {
            "rateWindow": "2m",
            "minRequestRate": 2,
            "canaryErrorRate": {"threshold": 0.02, "for": "1m", "severity": "warning"},
            "canaryLatency": {"thresholdMs": 250, "for": "3m", "severity": "critical"},
            "rateLimit": {"threshold": 0.3, "overLimitPerSecond": 7, "for": "10m"},
            "circuitBreaker": {"threshold": 5, "for": "30s", "severity": "info"},
            "controlPlane": {
                "unavailableFor": "5m",
                "unavailableSeverity": "warning",
                "window": "10m",
                "pushErrors": 3,
                "convergenceSeconds": 20,
                "convergenceFor": "15m",
                "severity": "critical",
            },
        }
    )
    by_signal = _rules_by_signal(settings)
    errors = by_signal[("CanaryErrorRateHigh", "")]
    assert ") > 0.02\nand on (" in errors["expr"] and "[2m]" in errors["expr"]
    assert ") >= 2\nor\n" in errors["expr"]
    assert (errors["for"], errors["labels"]["severity"]) == ("1m", "warning")
    assert "2% threshold for 1m" in errors["annotations"]["description"]
    latency = by_signal[("CanaryLatencyHigh", "")]
    assert ") > 250\nand on (" in latency["expr"]
    assert (latency["for"], latency["labels"]["severity"]) == ("3m", "critical")
    assert by_signal[("RateLimitExceeded", "http_429")]["expr"].endswith(") > 0.3")
    assert by_signal[("RateLimitExceeded", "ratelimit_service")]["expr"].endswith(") > 7")
    assert by_signal[("RateLimitExceeded", "http_429")]["for"] == "10m"
    breaker = by_signal[("CircuitBreakerTriggered", "pending_overflow")]
    assert breaker["expr"].endswith(") > 5")
    assert (breaker["for"], breaker["labels"]["severity"]) == ("30s", "info")
    assert breaker["annotations"]["runbook_url"] == f"{RUNBOOKS}#circuitbreakertriggered"
    down = by_signal[("IstiodUnavailable", "")]
    assert (down["for"], down["labels"]["severity"]) == ("5m", "warning")
    rejected = by_signal[("IstiodXdsPushErrors", "rejected")]
    assert rejected["expr"].endswith("[10m])\n) > 3")
    assert rejected["labels"]["severity"] == "critical"
    behind = by_signal[("IstiodProxiesBehind", "")]
    assert behind["expr"].endswith("[10m]))) > 20") and behind["for"] == "15m"


def test_rules_read_the_standard_metrics_the_rate_limit_counter_and_istiod() -> None:
    used = set().union(
        *(_metric_names(r["expr"]) for r in rules.alert_rules(DEFAULTS, runbook_base_url=RUNBOOKS))
    )
    assert used == {
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "ratelimit_service_rate_limit_over_limit",
        rules.EJECTIONS,
        rules.PENDING_OVERFLOW,
        rules.QUOTA_CHECK_ERRORS,
        *rules.QUOTA_VERDICTS,
        "up",
        "pilot_xds_pushes",
        "pilot_total_xds_rejects",
        "pilot_proxy_convergence_time_bucket",
    }


def test_istiod_alerts_read_the_job_the_istiod_service_monitor_gives_its_targets() -> None:
    monitor = monitors.istiod_service_monitor_spec(DEFAULTS, "istio-system")
    # The Prometheus Operator sets `job` to the value of the Service label `jobLabel` names.
    job = monitor["selector"]["matchLabels"][monitor["jobLabel"]]
    assert f'up{{job="{job}"}}' in _rules_by_signal(DEFAULTS)[("IstiodUnavailable", "")]["expr"]


# --- Envoy stats really exported ------------------------------------------------------------

SAMPLE_UPSTREAM = "outbound|8080||fingerprint-api.identity.svc.cluster.local"


def _exported(stat: str, regexps: tuple[str, ...]) -> bool:
    # proxyStatsMatcher regexps are Envoy StringMatcher safe_regex: a full match.
    return any(re.fullmatch(regexp, stat) for regexp in regexps)


@pytest.mark.parametrize("stack", STACKS)
def test_every_envoy_stat_an_alert_reads_is_exported_by_the_mesh(stack: str) -> None:
    from components.settings import load_settings
    from tools.render import load_stack_config

    config, _ = load_stack_config(stack)
    settings = load_settings(config)
    regexps = settings.proxy_stats_inclusion_regexps
    used = set().union(
        *(
            _metric_names(r["expr"])
            for r in rules.alert_rules(settings.alerts, runbook_base_url=RUNBOOKS)
        )
    )
    envoy_metrics = {name for name in used if name.startswith("envoy_")}
    assert envoy_metrics, "the circuit-breaker alert reads Envoy stats"
    for metric in envoy_metrics:
        assert metric in rules.ENVOY_STATS, f"{metric}: which Envoy stat is it?"
        stat = rules.ENVOY_STATS[metric].format(cluster=SAMPLE_UPSTREAM)
        assert _exported(stat, regexps), f"{stat} is not exported by proxyStatsMatcher {regexps}"


def test_envoy_stat_names_map_to_their_prometheus_names() -> None:
    # Envoy's Prometheus output: `envoy_` + stat with the cluster name moved to a label.
    for metric, stat in rules.ENVOY_STATS.items():
        stripped = stat.replace("cluster.{cluster}.", "cluster.")
        assert metric == "envoy_" + stripped.replace(".", "_")


def test_a_mesh_without_the_circuit_breaker_stats_fails_the_export_check() -> None:
    settings = make_settings(proxyStatsInclusionRegexps=[r".*http_local_rate_limit.*"])
    stat = rules.ENVOY_STATS[rules.EJECTIONS].format(cluster=SAMPLE_UPSTREAM)
    assert not _exported(stat, settings.proxy_stats_inclusion_regexps)


# --- promtool -------------------------------------------------------------------------------


def _write_rules(directory: Path, settings: AlertsSettings) -> Path:
    path = directory / "mesh-alerts.rules.yaml"
    path.write_text(
        yaml.safe_dump(
            {"groups": rules.rule_groups(settings, runbook_base_url=RUNBOOKS)}, sort_keys=False
        )
    )
    return path


def test_promtool_check_rules_accepts_the_rules(promtool: str, tmp_path: Path) -> None:
    for variant in (DEFAULTS, AlertsSettings.model_validate({"rateWindow": "5m"})):
        path = _write_rules(tmp_path, variant)
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert (
            f"SUCCESS: {len(rules.alert_rules(variant, runbook_base_url=RUNBOOKS))} rules found"
            in result.stdout
        )
        assert len(rules.alert_rules(variant, runbook_base_url=RUNBOOKS)) == 15


def test_promtool_check_rules_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    # Proves the check above can fail: the same file with one unparsable expression.
    groups = rules.rule_groups(DEFAULTS, runbook_base_url=RUNBOOKS)
    groups[0]["rules"][0]["expr"] = "sum by (destination_service (rate(x[1m]))"
    path = tmp_path / "broken.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


# Series below carry the label sets Istio and Envoy really emit (docs/alerts.md, "What the
# rules read"): all 25 labels of Istio's standard metrics, Envoy stats after Istio's tag
# extraction (no `_total` added), and the target labels the PodMonitor / ServiceMonitor add.

NAMESPACE = "identity"
SERVICE = f"fingerprint-api.{NAMESPACE}.svc.cluster.local"
UPSTREAM = f"outbound|8080||{SERVICE}"
MESH_CLUSTER = "us-east-1"
ENVOY_JOB = "istio-system/meshstack-envoy-stats"
GATEWAY = ("istio-ingressgateway", "istio-ingress")


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{selector}}}", "values": values}


def _proxy_target(workload: str, namespace: str, ip: str) -> dict[str, str]:
    """Labels the sidecar PodMonitor adds to every series scraped from a proxy's 15090."""
    return {
        "namespace": namespace,
        "pod": f"{workload}-6d5f8c7b9-x4k2p",
        "container": monitors.ENVOY_PROXY_CONTAINER,
        "endpoint": monitors.ENVOY_PROMETHEUS_PORT,
        "instance": f"{ip}:15090",
        "job": ENVOY_JOB,
    }


def _istio_labels(
    reporter: str,
    version: str,
    code: str,
    *,
    protocol: str = "http",
    grpc_status: str = "",
    flags: str = "-",
) -> dict[str, str]:
    """Every tag of `istio_requests_total` (istio/proxy `istio_stats.cc` `all_tags_`), for
    a request from the ingress gateway to fingerprint-api `version`, plus the target labels
    of the proxy that reported it (the server sidecar, or the gateway for `source`)."""
    source, source_ns = GATEWAY
    workload = f"fingerprint-api-{version}"
    reporting = (
        _proxy_target(workload, NAMESPACE, "10.4.1.7")
        if reporter == "destination"
        else _proxy_target(source, source_ns, "10.4.0.3")
    )
    return {
        "reporter": reporter,
        "source_workload": source,
        "source_workload_namespace": source_ns,
        "source_principal": f"spiffe://cluster.local/ns/{source_ns}/sa/{source}",
        "source_app": source,
        "source_version": "unknown",
        "source_canonical_service": source,
        "source_canonical_revision": "latest",
        "source_cluster": MESH_CLUSTER,
        "destination_workload": workload,
        "destination_workload_namespace": NAMESPACE,
        "destination_principal": f"spiffe://cluster.local/ns/{NAMESPACE}/sa/fingerprint-api",
        "destination_app": "fingerprint-api",
        "destination_version": version,
        "destination_service": SERVICE,
        "destination_service_name": "fingerprint-api",
        "destination_service_namespace": NAMESPACE,
        "destination_canonical_service": "fingerprint-api",
        "destination_canonical_revision": version,
        "destination_cluster": MESH_CLUSTER,
        "request_protocol": protocol,
        "response_code": code,
        "grpc_response_status": grpc_status,
        "response_flags": flags,
        # The server sidecar terminates mTLS; the gateway's outbound side reports `unknown`.
        "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
        **reporting,
    }


def _requests(
    reporter: str, version: str, code: str, per_scrape: float, *, flags: str = "-"
) -> dict[str, str]:
    labels = _istio_labels(reporter, version, code, flags=flags)
    return _series("istio_requests_total", labels, f"0+{per_scrape:g}x40")


def _grpc_requests(
    version: str,
    grpc_status: str,
    per_scrape: float,
    *,
    code: str = "200",
    flags: str = "-",
    values: str = "",
) -> dict[str, str]:
    """gRPC requests as the server sidecar reports them: the HTTP status (200 even for most
    failures, and for the local rate limiter's refusals) in `response_code`, the gRPC
    status in `grpc_response_status`."""
    labels = _istio_labels(
        "destination", version, code, protocol="grpc", grpc_status=grpc_status, flags=flags
    )
    return _series("istio_requests_total", labels, values or f"0+{per_scrape:g}x40")


def _latency(version: str, cumulative: dict[str, float]) -> list[dict[str, str]]:
    """Histogram buckets of `istio_request_duration_milliseconds`, counts per scrape."""
    labels = _istio_labels("destination", version, "200")
    return [
        _series(
            "istio_request_duration_milliseconds_bucket",
            {**labels, "le": le},
            f"0+{count:g}x40",
        )
        for le, count in cumulative.items()
    ]


def _envoy(metric: str, values: str, *, caller: str = "revenue-engine-v1") -> dict[str, str]:
    """An Envoy cluster stat of `caller`'s sidecar for the fingerprint-api upstream: the
    cluster name moved into `cluster_name` by Istio's tag regex, no other stat tag."""
    labels = {"cluster_name": UPSTREAM, **_proxy_target(caller, "revenue", "10.4.2.9")}
    return _series(metric, labels, values)


CALLER_OVERFLOW = {
    "cluster_name": UPSTREAM,
    "namespace": "revenue",
    "pod": _proxy_target("revenue-engine-v1", "revenue", "10.4.2.9")["pod"],
}
"""Labels of a pending-overflow alert of `_envoy`'s caller: overflows are counted per pod."""

ISTIOD_TARGET = {
    "app": "istiod",
    "container": "discovery",
    "endpoint": monitors.ISTIOD_MONITORING_PORT,
    "instance": "10.4.0.12:15014",
    "job": rules.ISTIOD_JOB,
    "namespace": "istio-system",
    "pod": "istiod-7c9d6b5f4-q8zlm",
    "service": "istiod",
}
"""Target labels of istiod's monitoring port through the `meshstack-istiod` ServiceMonitor
(`jobLabel: istio` takes `job` from the Service's `istio: pilot`, `targetLabels: [app]`)."""


def _istiod(metric: str, values: str, **labels: str) -> dict[str, str]:
    return _series(metric, {**labels, **ISTIOD_TARGET}, values)


def _convergence(cumulative: dict[str, float]) -> list[dict[str, str]]:
    """`pilot_proxy_convergence_time` buckets (istiod's boundaries), counts per scrape."""
    return [
        _istiod(rules.PROXY_CONVERGENCE, f"0+{count:g}x40", le=le)
        for le, count in cumulative.items()
    ]


def _render(template: str, labels: dict[str, str], value: str) -> str:
    """Prometheus' template expansion, for the few forms the rules use."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    return re.sub(r"\{\{ \$value \| [^}]+ \}\}", value, text)


@dataclass(frozen=True)
class Firing:
    """An alert expected to be firing, with the labels of the alert and the `$value` text."""

    signal: str
    labels: dict[str, str]
    value: str


@dataclass(frozen=True)
class Case:
    name: str
    alert: str
    series: list[dict[str, str]]
    firing: list[Firing] = field(default_factory=list)
    settings: AlertsSettings = DEFAULTS
    eval_time: str = "8m"
    silent_at: str = ""
    """Also expect no alert at this earlier time (before the cause is scraped)."""


def _canary(version: str) -> dict[str, str]:
    return {
        "destination_cluster": MESH_CLUSTER,
        "destination_service": SERVICE,
        "destination_version": version,
    }


HEALTHY_TRAFFIC = [
    _requests("destination", "stable", "200", 100),
    _requests("destination", "stable", "503", 1),
    _requests("destination", "canary", "200", 99),
    _requests("destination", "canary", "503", 1),
]

EU_LIKE = AlertsSettings.model_validate(
    {"minRequestRate": 0.5, "canaryErrorRate": {"threshold": 0.02, "for": "1m"}}
)
"""A region that judges canaries only from a request every two seconds."""

SLOW_SCRAPES = AlertsSettings.model_validate({"scrapeInterval": "30s", "rateWindow": "2m"})

CONVERGENCE_BUCKETS = ("0.1", "0.5", "1", "3", "5", "10", "20", "30", "+Inf")

# A server-side gRPC failure among client errors: only the server's share counts.
SERVER_FAILURE_CASES = [
    Case(
        f"canary-pages-on-grpc-{name.lower().replace('_', '-')}-not-on-the-client-errors-beside-it",
        "CanaryErrorRateHigh",
        [
            _grpc_requests("canary", "0", 60),
            _grpc_requests("canary", "5", 20),  # NOT_FOUND
            _grpc_requests("canary", "3", 10),  # INVALID_ARGUMENT
            _grpc_requests("canary", code, 10),
        ],
        [Firing("", _canary("canary"), "10%")],
    )
    for code, name in traffic.GRPC_SERVER_FAILURES.items()
]

CASES = [
    Case(
        "canary-5xx-fires",
        "CanaryErrorRateHigh",
        [
            _requests("destination", "stable", "200", 100),
            _requests("destination", "stable", "503", 1),
            _requests("destination", "canary", "200", 90),
            _requests("destination", "canary", "503", 10),
        ],
        [Firing("", _canary("canary"), "10%")],
    ),
    Case("canary-5xx-silent-when-healthy", "CanaryErrorRateHigh", HEALTHY_TRAFFIC),
    Case(
        "canary-5xx-silent-on-injected-faults",
        "CanaryErrorRateHigh",
        [
            # The caller's own VirtualService fault injection aborted half the requests
            # with 503 (flag FI) before they left; the server answered every other one.
            _requests("destination", "canary", "200", 50),
            _requests("source", "canary", "200", 50),
            _requests("source", "canary", "503", 50, flags="FI"),
        ],
    ),
    Case(
        "canary-3pct-5xx-fires-at-a-2pct-threshold",
        "CanaryErrorRateHigh",
        [
            _requests("destination", "canary", "200", 97),
            _requests("destination", "canary", "503", 3),
        ],
        [Firing("", _canary("canary"), "3%")],
        settings=AlertsSettings.model_validate({"canaryErrorRate": {"threshold": 0.02}}),
    ),
    Case(
        "canary-3pct-5xx-silent-at-the-default-threshold",
        "CanaryErrorRateHigh",
        [
            _requests("destination", "canary", "200", 97),
            _requests("destination", "canary", "503", 3),
        ],
    ),
    Case(
        "canary-failing-half-its-requests-on-too-little-traffic-is-not-judged",
        "CanaryErrorRateHigh",
        [
            # Half the requests fail, but there are only 4 a minute: below minRequestRate.
            _requests("destination", "canary", "200", 0.5),
            _requests("destination", "canary", "503", 0.5),
        ],
    ),
    Case(
        "canary-5xx-on-little-traffic-fires-when-every-version-is-judged",
        "CanaryErrorRateHigh",
        [
            _requests("destination", "canary", "200", 0.5),
            _requests("destination", "canary", "503", 0.5),
        ],
        [Firing("", _canary("canary"), "50%")],
        settings=AlertsSettings.model_validate({"minRequestRate": 0}),
    ),
    Case(
        "a-canary-failing-every-request-at-0.2-per-second-pages-within-5-minutes",
        "CanaryErrorRateHigh",
        [
            # 3 requests per 15s scrape = 0.2/s, below minRequestRate 0.5: all succeed for
            # 3 minutes, then every one fails from the scrape at 3m15s.
            _series(
                "istio_requests_total",
                _istio_labels("destination", "canary", "200"),
                "0+3x12 36x28",
            ),
            _series(
                "istio_requests_total",
                _istio_labels("destination", "canary", "503"),
                "_x12 3+3x28",
            ),
        ],
        [Firing("", _canary("canary"), "100%")],
        settings=EU_LIKE,
        eval_time="8m",
        silent_at="3m",
    ),
    Case(
        "a-canary-answering-every-grpc-call-with-not-found-is-not-paged",
        "CanaryErrorRateHigh",
        # NOT_FOUND is the caller asking for what is not there, like an HTTP 404.
        [_grpc_requests("canary", "5", 30)],
    ),
    Case(
        "canary-grpc-unavailable-fires",
        "CanaryErrorRateHigh",
        [
            # gRPC failures travel as HTTP 200 with grpc-status 14 (UNAVAILABLE).
            _grpc_requests("stable", "0", 100),
            _grpc_requests("canary", "0", 90),
            _grpc_requests("canary", "14", 10),
        ],
        [Firing("", _canary("canary"), "10%")],
    ),
    Case(
        "canary-grpc-ok-silent",
        "CanaryErrorRateHigh",
        [
            _grpc_requests("stable", "0", 100),
            _grpc_requests("canary", "0", 100),
        ],
    ),
    *SERVER_FAILURE_CASES,
    Case(
        "canary-grpc-5xx-with-an-error-status-counts-once",
        "CanaryErrorRateHigh",
        [
            # A gRPC request failed with both 503 and UNAVAILABLE: 10%, not 20%.
            _grpc_requests("canary", "0", 90),
            _grpc_requests("canary", "14", 10, code="503"),
        ],
        [Firing("", _canary("canary"), "10%")],
    ),
    Case(
        "grpc-calls-refused-by-the-local-rate-limit-do-not-page-as-canary-errors",
        "CanaryErrorRateHigh",
        [
            # Without rate_limited_as_resource_exhausted the limiter answers UNAVAILABLE,
            # with it RESOURCE_EXHAUSTED; both HTTP 200 with flag RL at the server sidecar.
            _grpc_requests("canary", "0", 70),
            _grpc_requests("canary", "14", 20, flags="RL"),
            _grpc_requests("canary", "8", 10, flags="RL"),
        ],
    ),
    Case(
        "canary-slow-fires",
        "CanaryLatencyHigh",
        [
            *HEALTHY_TRAFFIC,
            *_latency("stable", {"50": 60, "100": 100, "500": 100, "1000": 100, "2500": 100}),
            *_latency("stable", {"+Inf": 100}),
            # 10% answer within 500ms, the rest between 1s and 2.5s: p95 ~ 2417ms.
            *_latency("canary", {"50": 0, "100": 5, "500": 10, "1000": 10, "2500": 100}),
            *_latency("canary", {"+Inf": 100}),
        ],
        [Firing("", _canary("canary"), "2417")],
    ),
    Case(
        "canary-slow-silent-on-too-little-traffic",
        "CanaryLatencyHigh",
        [
            _requests("destination", "canary", "200", 0.5),
            *_latency("canary", {"50": 0, "100": 0, "500": 0, "1000": 0, "2500": 0.5}),
            *_latency("canary", {"+Inf": 0.5}),
        ],
    ),
    Case(
        "canary-fast-silent",
        "CanaryLatencyHigh",
        [
            *HEALTHY_TRAFFIC,
            *_latency("canary", {"50": 60, "100": 100, "500": 100, "1000": 100, "2500": 100}),
            *_latency("canary", {"+Inf": 100}),
        ],
    ),
    Case(
        "http-429-fires",
        "RateLimitExceeded",
        [
            _requests("source", "stable", "200", 80),
            _requests("source", "stable", "429", 20, flags="RL"),
        ],
        [
            Firing(
                "http_429",
                {"destination_cluster": MESH_CLUSTER, "destination_service": SERVICE},
                "20%",
            )
        ],
    ),
    Case(
        "grpc-calls-the-local-rate-limit-refuses-as-resource-exhausted-fire-rate-limit-exceeded",
        "RateLimitExceeded",
        [
            _grpc_requests("stable", "0", 80),
            _grpc_requests("stable", "8", 20, flags="RL"),
        ],
        [
            Firing(
                "grpc_local_rate_limit",
                {"destination_cluster": MESH_CLUSTER, "destination_service": SERVICE},
                "20%",
            )
        ],
    ),
    Case(
        "grpc-calls-the-local-rate-limit-refuses-as-unavailable-fire-rate-limit-exceeded",
        "RateLimitExceeded",
        [
            _grpc_requests("stable", "0", 80),
            _grpc_requests("stable", "14", 20, flags="RL"),
        ],
        [
            Firing(
                "grpc_local_rate_limit",
                {"destination_cluster": MESH_CLUSTER, "destination_service": SERVICE},
                "20%",
            )
        ],
    ),
    Case(
        "grpc-unavailable-from-the-server-itself-is-not-counted-as-rate-limiting",
        "RateLimitExceeded",
        [
            _grpc_requests("stable", "0", 80),
            _grpc_requests("stable", "14", 20),
        ],
    ),
    Case(
        "ratelimit-service-over-limit-fires",
        "RateLimitExceeded",
        [
            _series(
                rules.RATELIMIT_OVER_LIMIT,
                {"domain": "meshstack-ingress", "key1": "x-api-key"},
                "0+60x40",
            )
        ],
        [Firing("ratelimit_service", {"domain": "meshstack-ingress"}, "4")],
    ),
    Case(
        "rate-limits-silent-when-few-requests-are-limited",
        "RateLimitExceeded",
        [
            _requests("source", "stable", "200", 98),
            _requests("source", "stable", "429", 2, flags="RL"),
            _grpc_requests("canary", "0", 98),
            _grpc_requests("canary", "8", 2, flags="RL"),
            _series(
                rules.RATELIMIT_OVER_LIMIT,
                {"domain": "meshstack-ingress", "key1": "x-api-key"},
                "0+3x40",
            ),
        ],
    ),
    Case(
        "a-single-ejection-of-one-host-fires-within-60s",
        "CircuitBreakerTriggered",
        [
            # Created with the cluster at 0; one host ejected, first scraped at 5m15s
            # (between two evaluations, the later one at 5m30s), never again.
            _envoy(rules.EJECTIONS, "0x20 1x20"),
            _envoy(rules.PENDING_OVERFLOW, "0x40"),
        ],
        [Firing("outlier_ejection", {"cluster_name": UPSTREAM}, "1")],
        eval_time="5m30s",
        silent_at="5m",
    ),
    Case(
        "a-single-ejection-fires-within-60s-with-30s-scrapes",
        "CircuitBreakerTriggered",
        [
            _envoy(rules.EJECTIONS, "0x10 1x10"),
            _envoy(rules.PENDING_OVERFLOW, "0x20"),
        ],
        [Firing("outlier_ejection", {"cluster_name": UPSTREAM}, "1")],
        settings=SLOW_SCRAPES,
        eval_time="5m30s",
        silent_at="5m",
    ),
    Case(
        "pending-overflow-fires",
        "CircuitBreakerTriggered",
        [
            _envoy(rules.EJECTIONS, "3x40"),
            _envoy(rules.PENDING_OVERFLOW, "0+2x40"),
        ],
        [Firing("pending_overflow", CALLER_OVERFLOW, "8")],
    ),
    Case(
        "a-burst-of-pending-overflows-fires-within-60s",
        "CircuitBreakerTriggered",
        [
            _envoy(rules.EJECTIONS, "0x40"),
            _envoy(rules.PENDING_OVERFLOW, "0x20 5x20"),
        ],
        [Firing("pending_overflow", CALLER_OVERFLOW, "5")],
        eval_time="5m30s",
        silent_at="5m",
    ),
    Case(
        "circuit-breaker-silent-when-counters-stand-still",
        "CircuitBreakerTriggered",
        [
            # Old ejections (counter at 3) but none recently, and no overflow.
            _envoy(rules.EJECTIONS, "3x40"),
            _envoy(rules.PENDING_OVERFLOW, "0x40"),
        ],
    ),
    Case(
        "istiod-down-for-2-minutes-fires-istiod-unavailable",
        "IstiodUnavailable",
        [_istiod("up", "1x12 0x28")],
        [Firing("", {}, "1")],
        eval_time="6m",
        silent_at="4m",
    ),
    Case(
        "no-istiod-target-at-all-fires-istiod-unavailable",
        "IstiodUnavailable",
        [
            _series(
                "up",
                {"job": "apiserver", "namespace": "default", "instance": "10.0.0.1:443"},
                "1x40",
            )
        ],
        [Firing("", {}, "1")],
    ),
    Case(
        "one-istiod-of-two-up-is-silent",
        "IstiodUnavailable",
        [
            _istiod("up", "1x40"),
            _series(
                "up",
                {**ISTIOD_TARGET, "instance": "10.4.0.13:15014", "pod": "istiod-7c9d6b5f4-w2rtn"},
                "1x12 0x28",
            ),
        ],
    ),
    Case(
        "a-first-config-rejected-by-a-proxy-fires-within-60s",
        "IstiodXdsPushErrors",
        [
            # istiod creates the series on the first NACK, with value 1 (scraped at 5m15s).
            _istiod(rules.XDS_PUSHES, "0+40x40", type="lds"),
            _istiod(rules.XDS_REJECTS, "_x21 1x19", type="lds"),
        ],
        [Firing("rejected", {"type": "lds"}, "1")],
        eval_time="5m30s",
        silent_at="5m",
    ),
    Case(
        "repeated-config-rejections-fire",
        "IstiodXdsPushErrors",
        [
            _istiod(rules.XDS_PUSHES, "0+40x40", type="cds"),
            _istiod(rules.XDS_REJECTS, "3+1x40", type="cds"),
        ],
        [Firing("rejected", {"type": "cds"}, "20")],
    ),
    Case(
        "xds-send-errors-fire",
        "IstiodXdsPushErrors",
        [
            _istiod(rules.XDS_PUSHES, "0+40x40", type="eds"),
            _istiod(rules.XDS_PUSHES, "2+1x40", type="eds_senderr"),
        ],
        [Firing("send_error", {"type": "eds_senderr"}, "20")],
    ),
    Case(
        "successful-pushes-and-old-rejections-are-silent",
        "IstiodXdsPushErrors",
        [
            _istiod(rules.XDS_PUSHES, "0+40x40", type="cds"),
            _istiod(rules.XDS_PUSHES, "2x40", type="cds_senderr"),
            _istiod(rules.XDS_REJECTS, "3x40", type="cds"),
        ],
    ),
    Case(
        "proxies-converging-in-28s-at-p99-fire-istiod-proxies-behind",
        "IstiodProxiesBehind",
        # 95 of every 100 proxies converge within 1s, 5 take 20-30s: p99 = 28s.
        _convergence(
            dict(zip(CONVERGENCE_BUCKETS, (10, 60, 95, 95, 95, 95, 95, 100, 100), strict=True))
        ),
        [Firing("", {}, "28.0")],
        eval_time="10m",
    ),
    Case(
        "proxies-converging-within-a-second-are-silent",
        "IstiodProxiesBehind",
        _convergence(
            dict(zip(CONVERGENCE_BUCKETS, (10, 60, 100, 100, 100, 100, 100, 100, 100), strict=True))
        ),
        eval_time="10m",
    ),
]


def _expected_alerts(case: Case) -> list[dict[str, Any]]:
    by_signal = _rules_by_signal(case.settings)
    expected = []
    for firing in case.firing:
        rule = by_signal[(case.alert, firing.signal)]
        expected.append(
            {
                "exp_labels": {**rule["labels"], **firing.labels},
                "exp_annotations": {
                    key: _render(text, firing.labels, firing.value)
                    for key, text in rule["annotations"].items()
                },
            }
        )
    return expected


def _unit_test_file(directory: Path, case: Case) -> Path:
    rules_file = _write_rules(directory, case.settings)
    checks = [
        {
            "eval_time": case.eval_time,
            "alertname": case.alert,
            "exp_alerts": _expected_alerts(case),
        }
    ]
    if case.silent_at:
        checks.insert(0, {"eval_time": case.silent_at, "alertname": case.alert, "exp_alerts": []})
    test = {
        "rule_files": [rules_file.name],
        # The group's own interval: detection times depend on it.
        "evaluation_interval": rules.EVALUATION_INTERVAL,
        "tests": [
            {
                "name": case.name,
                "interval": case.settings.scrape_interval,
                "input_series": case.series,
                "alert_rule_test": checks,
            }
        ],
    }
    path = directory / "mesh-alerts.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return path


def _promtool_test(promtool: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_promtool_unit_test(promtool: str, tmp_path: Path, case: Case) -> None:
    result = _promtool_test(promtool, _unit_test_file(tmp_path, case))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    # Imported here: the incident scenarios reuse this module's helpers.
    from tests.alerts.test_incidents import INCIDENTS

    firing = {(c.alert, f.signal) for c in CASES for f in c.firing} | {
        (i.alert, page.signal) for i in INCIDENTS for _, pages in i.checks for page in pages
    }
    silent = {c.alert for c in CASES if not c.firing} | {
        i.alert for i in INCIDENTS if all(not pages for _, pages in i.checks)
    }
    assert silent == set(rules.ALERT_NAMES), "every alert has a silent case"
    assert firing == set(_rules_by_signal(DEFAULTS)), "every rule has a firing case"


def test_promtool_unit_test_catches_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    # Proves the unit tests can fail: a healthy service expected to fire.
    case = Case(
        "wrong",
        "CanaryErrorRateHigh",
        HEALTHY_TRAFFIC,
        [Firing("", _canary("canary"), "1%")],
    )
    result = _promtool_test(promtool, _unit_test_file(tmp_path, case))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


# --- any valid settings give valid rules ----------------------------------------------------

durations = st.sampled_from(["30s", "1m", "90s", "2m", "5m", "1h"])
ratios = st.floats(min_value=0.001, max_value=0.999, allow_nan=False)
severities = st.sampled_from(["critical", "warning", "info"])
alert_settings = st.fixed_dictionaries(
    {
        "rateWindow": st.sampled_from(["1m", "2m", "5m"]),
        "canaryErrorRate": st.fixed_dictionaries(
            {"threshold": ratios, "for": durations, "severity": severities}
        ),
        "canaryLatency": st.fixed_dictionaries(
            {"thresholdMs": st.floats(min_value=0.5, max_value=1e6), "for": durations}
        ),
        "rateLimit": st.fixed_dictionaries(
            {"threshold": ratios, "overLimitPerSecond": st.floats(min_value=0.01, max_value=1e5)}
        ),
        "circuitBreaker": st.fixed_dictionaries(
            # Only what fits sub-minute detection; the settings tests cover the rest.
            {"threshold": st.floats(min_value=0, max_value=1e4), "for": st.sampled_from(["0s"])}
        ),
        "controlPlane": st.fixed_dictionaries(
            {
                "unavailableFor": durations,
                "window": st.sampled_from(["1m", "5m", "10m"]),
                "pushErrors": st.floats(min_value=0, max_value=1e4),
                "convergenceSeconds": st.floats(min_value=0.1, max_value=29.9),
                "convergenceFor": durations,
            }
        ),
    }
)


@settings(max_examples=25, deadline=None)
@given(raw=alert_settings)
def test_any_valid_settings_give_rules_that_parse_and_validate(raw: dict[str, Any]) -> None:
    alerts = AlertsSettings.model_validate(raw)
    for rule in rules.alert_rules(alerts, runbook_base_url=RUNBOOKS):
        promql_parser.parse(rule["expr"])
        if rule["alert"] == "IstiodUnavailable":
            continue
        window = alerts.control_plane.window if "Istiod" in rule["alert"] else alerts.rate_window
        assert f"[{window}]" in rule["expr"]
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "meshstack-mesh-alerts", "namespace": "istio-system"},
        "spec": rules.prometheus_rule_spec(alerts, runbook_base_url=RUNBOOKS),
    }
    assert validate_manifest(resource) == []
    errors = rules.alert_rules(alerts, runbook_base_url=RUNBOOKS)[0]
    assert f") > {alerts.canary_error_rate.threshold:g}\nand on (" in errors["expr"]
    assert errors["for"] == alerts.canary_error_rate.for_
