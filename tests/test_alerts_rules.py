"""Alert rules: they parse, `promtool` accepts them, and they fire only when they should.

The `promtool test rules` cases feed realistic series (Istio standard metrics, Envoy cluster
stats, the rate limit service's counter) and expect each alert FIRING on a broken service
and SILENT on a healthy one. promtool is not optional: CI installs Debian's `prometheus`
package, and a missing promtool fails these tests instead of skipping them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from components.alerts import rules
from components.alerts.settings import AlertsSettings
from tests.conftest import STACKS, make_settings
from tools.verify import validate_manifest

DEFAULTS = AlertsSettings()
PROMTOOL_HELP = (
    "promtool is required by the alert tests and is not on PATH: install Debian's "
    "`prometheus` package (apt-get install prometheus), as CI does"
)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(PROMTOOL_HELP)
    return path


def _rules_by_signal(settings: AlertsSettings) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["alert"], r["labels"].get("signal", "")): r for r in rules.alert_rules(settings)}


def _metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


# --- shape of the rules ---------------------------------------------------------------------


def test_every_required_alert_is_defined() -> None:
    assert {r["alert"] for r in rules.alert_rules(DEFAULTS)} == set(rules.ALERT_NAMES)


@pytest.mark.parametrize("rule", rules.alert_rules(DEFAULTS), ids=lambda r: r["alert"])
def test_every_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
    assert rule["annotations"]["runbook_url"] == (
        "https://github.com/meshstack/meshstack/blob/main/docs/alerts.md#" + rule["alert"].lower()
    )
    assert all(rule["annotations"][key].strip() for key in ("summary", "description"))


@pytest.mark.parametrize("rule", rules.alert_rules(DEFAULTS), ids=lambda r: r["alert"])
def test_every_expression_parses(rule: dict[str, Any]) -> None:
    promql_parser.parse(rule["expr"])


def test_defaults_are_the_documented_thresholds() -> None:
    by_signal = _rules_by_signal(DEFAULTS)
    errors = by_signal[("CanaryErrorRateHigh", "")]
    assert ") > 0.05\nand on (" in errors["expr"]
    assert (errors["for"], errors["labels"]["severity"]) == ("2m", "critical")
    latency = by_signal[("CanaryLatencyHigh", "")]
    assert ") > 1000\nand on (" in latency["expr"]
    assert errors["expr"].endswith(") >= 0.1") and latency["expr"].endswith(") >= 0.1")
    assert latency["expr"].startswith("(\nhistogram_quantile(0.95, ")
    assert latency["for"] == "2m"
    assert by_signal[("RateLimitExceeded", "http_429")]["expr"].endswith(") > 0.1")
    assert by_signal[("RateLimitExceeded", "ratelimit_service")]["expr"].endswith(") > 1")
    assert by_signal[("CircuitBreakerTriggered", "outlier_ejection")]["expr"].endswith(") > 0")
    assert '{reporter="destination"}[1m]' in errors["expr"]


def test_thresholds_durations_and_severities_come_from_settings() -> None:
    settings = AlertsSettings.model_validate(
        {
            "runbookBaseUrl": "https://wiki.example.org/rb",
            "rateWindow": "2m",
            "minRequestRate": 2,
            "canaryErrorRate": {"threshold": 0.02, "for": "1m", "severity": "warning"},
            "canaryLatency": {"thresholdMs": 250, "for": "3m", "severity": "critical"},
            "rateLimit": {"threshold": 0.3, "overLimitPerSecond": 7, "for": "10m"},
            "circuitBreaker": {"threshold": 5, "for": "4m", "severity": "info"},
        }
    )
    by_signal = _rules_by_signal(settings)
    errors = by_signal[("CanaryErrorRateHigh", "")]
    assert ") > 0.02\nand on (" in errors["expr"] and "[2m]" in errors["expr"]
    assert errors["expr"].endswith(") >= 2")
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
    assert (breaker["for"], breaker["labels"]["severity"]) == ("4m", "info")
    assert breaker["annotations"]["runbook_url"] == (
        "https://wiki.example.org/rb#circuitbreakertriggered"
    )


def test_rules_read_the_standard_metrics_and_the_rate_limit_counter() -> None:
    used = set().union(*(_metric_names(r["expr"]) for r in rules.alert_rules(DEFAULTS)))
    assert used == {
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "ratelimit_service_rate_limit_over_limit",
        *rules.ENVOY_STATS,
    }


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
    used = set().union(*(_metric_names(r["expr"]) for r in rules.alert_rules(settings.alerts)))
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
    path.write_text(yaml.safe_dump({"groups": rules.rule_groups(settings)}, sort_keys=False))
    return path


def test_promtool_check_rules_accepts_the_rules(promtool: str, tmp_path: Path) -> None:
    for variant in (DEFAULTS, AlertsSettings.model_validate({"rateWindow": "5m"})):
        path = _write_rules(tmp_path, variant)
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 6 rules found" in result.stdout


def test_promtool_check_rules_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    # Proves the check above can fail: the same file with one unparsable expression.
    groups = rules.rule_groups(DEFAULTS)
    groups[0]["rules"][0]["expr"] = "sum by (destination_service (rate(x[1m]))"
    path = tmp_path / "broken.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


SERVICE = "fingerprint-api.identity.svc.cluster.local"
UPSTREAM = f"outbound|8080||{SERVICE}"


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{selector}}}", "values": values}


def _requests(reporter: str, version: str, code: str, per_scrape: float) -> dict[str, str]:
    labels = {
        "reporter": reporter,
        "destination_service": SERVICE,
        "destination_version": version,
        "response_code": code,
    }
    return _series("istio_requests_total", labels, f"0+{per_scrape:g}x40")


def _grpc_requests(version: str, code: str, grpc_status: str, per_scrape: float) -> dict[str, str]:
    """gRPC requests as the server sidecar reports them: the HTTP status (200 even for most
    failures) in `response_code`, the gRPC status in `grpc_response_status`."""
    labels = {
        "reporter": "destination",
        "destination_service": SERVICE,
        "destination_version": version,
        "request_protocol": "grpc",
        "response_code": code,
        "grpc_response_status": grpc_status,
    }
    return _series("istio_requests_total", labels, f"0+{per_scrape:g}x40")


def _latency(version: str, cumulative: dict[str, float]) -> list[dict[str, str]]:
    """Histogram buckets of `istio_request_duration_milliseconds`, counts per scrape."""
    return [
        _series(
            "istio_request_duration_milliseconds_bucket",
            {
                "reporter": "destination",
                "destination_service": SERVICE,
                "destination_version": version,
                "le": le,
            },
            f"0+{count:g}x40",
        )
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


def _canary(version: str) -> dict[str, str]:
    return {"destination_service": SERVICE, "destination_version": version}


HEALTHY_TRAFFIC = [
    _requests("destination", "stable", "200", 100),
    _requests("destination", "stable", "503", 1),
    _requests("destination", "canary", "200", 99),
    _requests("destination", "canary", "503", 1),
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
        "canary-5xx-silent-on-client-side-errors",
        "CanaryErrorRateHigh",
        [
            # The caller saw 503s (e.g. its own timeouts); the server answered fine.
            _requests("destination", "canary", "200", 100),
            _requests("source", "canary", "503", 50),
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
        "canary-5xx-silent-on-too-little-traffic",
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
        "canary-grpc-unavailable-fires",
        "CanaryErrorRateHigh",
        [
            # gRPC failures travel as HTTP 200 with grpc-status 14 (UNAVAILABLE).
            _grpc_requests("stable", "200", "0", 100),
            _grpc_requests("canary", "200", "0", 90),
            _grpc_requests("canary", "200", "14", 10),
        ],
        [Firing("", _canary("canary"), "10%")],
    ),
    Case(
        "canary-grpc-ok-silent",
        "CanaryErrorRateHigh",
        [
            _grpc_requests("stable", "200", "0", 100),
            _grpc_requests("canary", "200", "0", 100),
        ],
    ),
    Case(
        "canary-grpc-5xx-with-an-error-status-counts-once",
        "CanaryErrorRateHigh",
        [
            # A gRPC request failed with both 503 and UNAVAILABLE: 10%, not 20%.
            _grpc_requests("canary", "200", "0", 90),
            _grpc_requests("canary", "503", "14", 10),
        ],
        [Firing("", _canary("canary"), "10%")],
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
            _requests("source", "stable", "429", 20),
        ],
        [Firing("http_429", {"destination_service": SERVICE}, "20%")],
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
            _requests("source", "stable", "429", 2),
            _series(
                rules.RATELIMIT_OVER_LIMIT,
                {"domain": "meshstack-ingress", "key1": "x-api-key"},
                "0+3x40",
            ),
        ],
    ),
    Case(
        "outlier-ejections-fire",
        "CircuitBreakerTriggered",
        [
            _series(
                rules.EJECTIONS,
                {"cluster_name": UPSTREAM, "namespace": "identity", "pod": "client-1"},
                "0+1x40",
            ),
            _series(rules.PENDING_OVERFLOW, {"cluster_name": UPSTREAM, "pod": "client-1"}, "0x40"),
        ],
        [Firing("outlier_ejection", {"cluster_name": UPSTREAM}, "4")],
    ),
    Case(
        "pending-overflow-fires",
        "CircuitBreakerTriggered",
        [
            _series(rules.EJECTIONS, {"cluster_name": UPSTREAM, "pod": "client-1"}, "3x40"),
            _series(
                rules.PENDING_OVERFLOW, {"cluster_name": UPSTREAM, "pod": "client-1"}, "0+2x40"
            ),
        ],
        [Firing("pending_overflow", {"cluster_name": UPSTREAM}, "8")],
    ),
    Case(
        "circuit-breaker-silent-when-counters-stand-still",
        "CircuitBreakerTriggered",
        [
            # Old ejections (counter at 3) but none recently, and no overflow.
            _series(rules.EJECTIONS, {"cluster_name": UPSTREAM, "pod": "client-1"}, "3x40"),
            _series(rules.PENDING_OVERFLOW, {"cluster_name": UPSTREAM, "pod": "client-1"}, "0x40"),
        ],
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
    test = {
        "rule_files": [rules_file.name],
        "evaluation_interval": "15s",
        "tests": [
            {
                "name": case.name,
                "interval": "15s",
                "input_series": case.series,
                "alert_rule_test": [
                    {
                        "eval_time": case.eval_time,
                        "alertname": case.alert,
                        "exp_alerts": _expected_alerts(case),
                    }
                ],
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
    for alert in rules.ALERT_NAMES:
        assert any(c.alert == alert and c.firing for c in CASES), alert
        assert any(c.alert == alert and not c.firing for c in CASES), alert
    signals = {(c.alert, f.signal) for c in CASES for f in c.firing}
    assert signals == set(_rules_by_signal(DEFAULTS)), "every rule has a firing case"


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
            {"threshold": st.floats(min_value=0, max_value=1e4), "for": durations}
        ),
    }
)


@settings(max_examples=25, deadline=None)
@given(raw=alert_settings)
def test_any_valid_settings_give_rules_that_parse_and_validate(raw: dict[str, Any]) -> None:
    alerts = AlertsSettings.model_validate(raw)
    for rule in rules.alert_rules(alerts):
        promql_parser.parse(rule["expr"])
        assert f"[{alerts.rate_window}]" in rule["expr"]
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "meshstack-mesh-alerts", "namespace": "istio-system"},
        "spec": rules.prometheus_rule_spec(alerts),
    }
    assert validate_manifest(resource) == []
    errors = rules.alert_rules(alerts)[0]
    assert f") > {alerts.canary_error_rate.threshold:g}\nand on (" in errors["expr"]
    assert errors["for"] == alerts.canary_error_rate.for_
