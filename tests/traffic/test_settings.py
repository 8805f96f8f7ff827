"""Traffic settings: documented defaults, the duration and RE2 parsers, and one test per
error message (the exact one-line text)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from components.settings import SettingsError
from components.settings_types import format_duration, parse_duration_ms, re2_problem
from components.traffic.policy import OutlierDetectionSettings, ejection_detection_ms
from components.traffic.settings import ServiceTraffic, TrafficSettings
from tests.conftest import make_settings

GATEWAY = {"name": "public", "hosts": ["api.example.com"], "credentialName": "api-tls"}


def service(traffic: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "api",
        "namespace": "shop",
        "versions": [{"name": "stable"}, {"name": "canary"}],
    }
    if traffic is not None:
        base["traffic"] = traffic
    return {**base, **fields}


def error_of(*services: dict[str, Any], **overrides: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        make_settings(services=list(services), **overrides)
    message = str(caught.value)
    assert "\n" not in message, "settings errors are one line"
    return message


# --- defaults -------------------------------------------------------------------------------


def test_service_traffic_defaults_are_safe() -> None:
    traffic = ServiceTraffic()
    assert traffic.timeout == "10s"
    assert (traffic.retries.attempts, traffic.retries.per_try_timeout) == (2, "3s")
    assert "5xx" not in traffic.retries.retry_on, "5xx retries re-run non-idempotent requests"
    assert traffic.canary is None and traffic.fault is None and traffic.cors is None
    assert traffic.policy.load_balancer.simple == "LEAST_REQUEST"
    assert traffic.policy.connection_pool is None
    outlier = traffic.policy.outlier_detection
    assert outlier is not None
    assert (outlier.consecutive_5xx_errors, outlier.interval) == (5, "10s")
    assert (outlier.base_ejection_time, outlier.max_ejection_percent) == ("30s", 50)
    assert traffic.expose is None
    progressive = traffic.progressive
    assert (progressive.interval, progressive.threshold) == ("1m", 5)
    assert (progressive.max_weight, progressive.step_weight) == (50, 10)
    assert (progressive.success_rate_min, progressive.duration_max_ms) == (99.0, 500)


def test_stack_traffic_defaults() -> None:
    traffic = TrafficSettings()
    assert traffic.gateways == ()
    assert traffic.ejection_detection_bound == "60s"
    assert traffic.outlier_request_gap == "1s"
    assert traffic.sidecar_scoping is True
    assert traffic.flagger_namespace == "flagger-system"


def test_service_defaults_static_and_calls_nothing() -> None:
    parsed = make_settings(services=[service()]).services[0]
    assert parsed.delivery == "static"
    assert parsed.calls == ()


def test_gateway_defaults_to_tls_1_2() -> None:
    settings = make_settings(traffic={"gateways": [GATEWAY]})
    assert settings.traffic.gateways[0].min_protocol_version == "TLSV1_2"


def test_consistent_hash_alone_clears_the_default_simple_policy() -> None:
    traffic = {"policy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}}}}
    lb = make_settings(services=[service(traffic)]).services[0].traffic.policy.load_balancer
    assert lb.simple is None
    assert lb.consistent_hash is not None


# --- parsers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("250ms", 250), ("1.5s", 1500), ("1m", 60_000), ("1h2m", 3_720_000), ("1500us", 1.5)],
)
def test_durations_parse_go_syntax(text: str, ms: float) -> None:
    assert parse_duration_ms(text) == Decimal(str(ms))


@pytest.mark.parametrize(("ms", "text"), [(250, "0.250s"), (1500, "1.500s"), (60_000, "60s")])
def test_durations_format_canonically(ms: int, text: str) -> None:
    assert format_duration(Decimal(ms)) == text


@pytest.mark.parametrize("pattern", ["(?=x)y", "(?<!x)y", r"(a)\1", "a++", r"a\Z"])
def test_python_only_regex_constructs_are_not_re2(pattern: str) -> None:
    assert re2_problem(pattern) is not None


@pytest.mark.parametrize("pattern", ["^canary-.*", r"https://[a-z]+\.example\.com", "(?i)abc"])
def test_re2_regexes_are_accepted(pattern: str) -> None:
    assert re2_problem(pattern) is None


def test_ejection_happens_inline_on_the_nth_error_not_at_the_sweep() -> None:
    # Envoy ejects on the N-th consecutive error; the interval sweep only returns hosts.
    outlier = OutlierDetectionSettings(consecutive_5xx_errors=5, interval="10s")
    assert ejection_detection_ms(outlier, "1s") == 5 * 1000
    split = OutlierDetectionSettings(
        consecutive_5xx_errors=2,
        consecutive_local_origin_failures=4,
        split_external_local_origin_errors=True,
        interval="5s",
    )
    assert ejection_detection_ms(split, "500ms") == 4 * 500, "the slower trigger counts"


# --- one test per error message --------------------------------------------------------------

P = "meshstack:services[0] (api).traffic"

ERRORS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "duration syntax",
        {"timeout": "10 seconds"},
        {},
        f'{P}.timeout = "10 seconds": must be a duration like 250ms, 1.5s or 1m '
        "(units ns, us, ms, s, m, h) of at least 1ms",
    ),
    (
        "duration below 1ms",
        {"timeout": "500us"},
        {},
        f'{P}.timeout = "500us": must be a duration like 250ms, 1.5s or 1m '
        "(units ns, us, ms, s, m, h) of at least 1ms",
    ),
    (
        "regex not RE2",
        {
            "canary": {
                "match": {"header": "x-user-id", "regex": "(?!admin).*"},
                "weights": [{"subset": "stable", "weight": 100}],
            }
        },
        {},
        f'{P}.canary.match.regex = "(?!admin).*": must be an RE2 regex (Envoy\'s engine; '
        "no lookarounds or backreferences): invalid perl operator: (?!",
    ),
    (
        "header name",
        {
            "canary": {
                "match": {"header": "X-User", "regex": ".*"},
                "weights": [{"subset": "stable", "weight": 100}],
            }
        },
        {},
        f'{P}.canary.match.header = "X-User": must be a lowercase HTTP header name '
        "(letters, digits, '-', '_'); Istio matches header names in lowercase",
    ),
    (
        "weight out of range",
        {"canary": {"weights": [{"subset": "stable", "weight": 120}]}},
        {},
        f"{P}.canary.weights[0].weight = 120: must be less than or equal to 100",
    ),
    (
        "weights sum",
        {
            "canary": {
                "weights": [{"subset": "stable", "weight": 80}, {"subset": "canary", "weight": 10}]
            }
        },
        {},
        f"{P}.canary.weights = [80, 10]: must sum to 100; they sum to 90",
    ),
    (
        "weights repeat a subset",
        {
            "canary": {
                "weights": [{"subset": "stable", "weight": 50}, {"subset": "stable", "weight": 50}]
            }
        },
        {},
        f'{P}.canary.weights[1].subset = "stable": must be unique; it is repeated',
    ),
    (
        "weight subset unknown",
        {"canary": {"weights": [{"subset": "v9", "weight": 100}]}},
        {},
        f'{P}.canary.weights[0].subset = "v9": must be a version of the service (canary, stable)',
    ),
    (
        "stable subset unknown",
        {"canary": {"weights": [{"subset": "stable", "weight": 100}], "stable": "v9"}},
        {},
        f'{P}.canary.stable = "v9": must be a version of the service (canary, stable)',
    ),
    (
        "mirror target unknown",
        {
            "canary": {
                "weights": [{"subset": "stable", "weight": 100}],
                "mirror": {"subset": "shadow"},
            }
        },
        {},
        f'{P}.canary.mirror.subset = "shadow": mirror target must be a version of the '
        "service (canary, stable)",
    ),
    (
        "mirror target also gets live weight",
        {
            "canary": {
                "weights": [{"subset": "stable", "weight": 80}, {"subset": "canary", "weight": 20}],
                "mirror": {"subset": "canary"},
            }
        },
        {},
        f'{P}.canary.mirror.subset = "canary": must not also get live traffic (weight 20): it '
        "would process mirrored requests twice; mirror to a shadow version without weight",
    ),
    (
        "subset policy for unknown version",
        {"subsetPolicies": {"v9": {"connectionPool": {"maxConnections": 1}}}},
        {},
        f'{P}.subsetPolicies.v9 = "v9": must be a version of the service (canary, stable)',
    ),
    (
        "retries exceed the service timeout",
        {"timeout": "5s", "retries": {"attempts": 2, "perTryTimeout": "2s"}},
        {},
        f'{P}.retries.perTryTimeout = "2s": (attempts + 1) x perTryTimeout = 6s must fit '
        "in timeout (5s)",
    ),
    (
        "retries exceed a route timeout",
        {"routes": [{"name": "status", "exact": "/status", "timeout": "1s"}]},
        {},
        f'{P}.routes[0].retries.perTryTimeout = default "3s": (attempts + 1) x perTryTimeout '
        "= 9s must fit in timeout (1s)",
    ),
    (
        "retry condition unknown",
        {"retries": {"retryOn": "5xx,sometimes"}},
        {},
        f'{P}.retries.retryOn = "5xx,sometimes": must be a comma-separated list of Envoy retry '
        "conditions (e.g. connect-failure,refused-stream,5xx) or status codes; "
        "'sometimes' is not one",
    ),
    (
        "route without a path",
        {"routes": [{"name": "status"}]},
        {},
        f"{P}.routes[0].prefix is not set: set exactly one of prefix, exact",
    ),
    (
        "route path not absolute",
        {"routes": [{"name": "status", "exact": "status"}]},
        {},
        f"{P}.routes[0].exact = \"status\": must be a path starting with '/'",
    ),
    (
        "route path with a wildcard",
        {"routes": [{"name": "api", "prefix": "/api/*/v1"}]},
        {},
        f"{P}.routes[0].prefix = \"/api/*/v1\": must be a literal path without '*'",
    ),
    (
        "route names repeat",
        {"routes": [{"name": "a", "exact": "/a"}, {"name": "a", "exact": "/b"}]},
        {},
        f'{P}.routes[1].name = "a": must be unique; it is repeated',
    ),
    (
        "route backend malformed",
        {"routes": [{"name": "a", "exact": "/a", "backend": "admin"}]},
        {},
        f'{P}.routes[0].backend = "admin": must be `<namespace>/<service>` of a mesh service',
    ),
    (
        "route backend unknown",
        {"routes": [{"name": "a", "exact": "/a", "backend": "shop/admin"}]},
        {},
        f'{P}.routes[0].backend = "shop/admin": must be `<namespace>/<name>` of a service',
    ),
    (
        "string match with two kinds",
        {"cors": {"allowOrigins": [{"exact": "https://a.example.com", "prefix": "https://"}]}},
        {},
        f'{P}.cors.allowOrigins[0] = {{"exact": "https://a.example.com", "prefix": '
        '"https://"}: must set exactly one of exact, prefix, regex',
    ),
    (
        "credentials with any origin",
        {"cors": {"allowOrigins": [{"regex": ".*"}], "allowCredentials": True}},
        {},
        f'{P}.cors.allowOrigins[0] = {{"regex": ".*"}}: must name origins when '
        "allowCredentials is true, not match any origin",
    ),
    (
        "fault without a fault",
        {"fault": {"header": "x-chaos-drill"}},
        {},
        f"{P}.fault = null: must set delay, abort or both",
    ),
    (
        "fault status out of range",
        {"fault": {"abort": {"httpStatus": 200}}},
        {},
        f"{P}.fault.abort.httpStatus = 200: must be greater than or equal to 400",
    ),
    (
        "load balancer with both",
        {
            "policy": {
                "loadBalancer": {
                    "simple": "ROUND_ROBIN",
                    "consistentHash": {"httpHeaderName": "x-user-id"},
                }
            }
        },
        {},
        f"{P}.policy.loadBalancer = null: set exactly one of simple, consistentHash",
    ),
    (
        "consistent hash on nothing",
        {"policy": {"loadBalancer": {"consistentHash": {}}}},
        {},
        f"{P}.policy.loadBalancer.consistentHash = null: set exactly one of httpHeaderName, "
        "httpCookie",
    ),
    (
        "local-origin failures without the split",
        {"policy": {"outlierDetection": {"consecutiveLocalOriginFailures": 3}}},
        {},
        f"{P}.policy.outlierDetection.consecutiveLocalOriginFailures = 3: takes effect only "
        "with splitExternalLocalOriginErrors: true",
    ),
    (
        "outlier detection without a trigger",
        {"policy": {"outlierDetection": {"consecutive5xxErrors": None}}},
        {},
        f"{P}.policy.outlierDetection.consecutive5xxErrors = null: set consecutive5xxErrors "
        "or consecutiveLocalOriginFailures",
    ),
    (
        "minRequestVolume does not exist",
        {"policy": {"outlierDetection": {"minRequestVolume": 10}}},
        {},
        f"{P}.policy.outlierDetection.minRequestVolume is not a known setting "
        "(check the spelling; see README config reference)",
    ),
    (
        "ejection detection over the bound",
        {"policy": {"outlierDetection": {"consecutive5xxErrors": 61}}},
        {},
        f"{P}.policy.outlierDetection.consecutive5xxErrors = 61: ejection detection 61s "
        "(61 errors x outlierRequestGap 1s) exceeds traffic.ejectionDetectionBound (60s)",
    ),
    (
        "subset ejection detection over the bound",
        {"subsetPolicies": {"canary": {"outlierDetection": {"consecutive5xxErrors": 70}}}},
        {},
        f"{P}.subsetPolicies.canary.outlierDetection.consecutive5xxErrors = 70: ejection "
        "detection 70s (70 errors x outlierRequestGap 1s) exceeds "
        "traffic.ejectionDetectionBound (60s)",
    ),
    (
        "outlier detection that can never eject",
        {},
        {"versions": [{"name": "stable", "minReplicas": 1}]},
        f"{P}.policy.outlierDetection.maxEjectionPercent = default 50: can never eject from "
        "'all pods' (1 pods, versions[].minReplicas): Envoy ejects only while "
        "100 x (ejected+1) / pods <= maxEjectionPercent; needs maxEjectionPercent >= 100 or "
        "minReplicas >= 2",
    ),
    (
        "progressive metrics window not whole seconds",
        {"progressive": {"metricsInterval": "90.5s"}},
        {"delivery": "progressive"},
        f'{P}.progressive.metricsInterval = "90.500s": must be whole seconds (Flagger\'s format)',
    ),
    (
        "progressive metrics window under a minute",
        {"progressive": {"metricsInterval": "30s"}},
        {"delivery": "progressive"},
        f'{P}.progressive.metricsInterval = "30s": must be at least 1m: a shorter window over '
        "15s scrapes fails the check when one scrape is missed",
    ),
    (
        "static service that still sets progressive",
        {"progressive": {"retire": True}},
        {},
        f'{P}.progressive = "set": must be unset for delivery: static; to leave progressive '
        "delivery, first deploy progressive.retire: true, then switch to static without "
        "this block",
    ),
    (
        "subset outlier detection invalid once merged over the service's",
        {
            "policy": {
                "outlierDetection": {
                    "consecutive5xxErrors": None,
                    "consecutiveLocalOriginFailures": 3,
                    "splitExternalLocalOriginErrors": True,
                }
            },
            "subsetPolicies": {
                "canary": {"outlierDetection": {"splitExternalLocalOriginErrors": False}}
            },
        },
        {},
        f'{P}.subsetPolicies.canary.outlierDetection = "set": merged over '
        "traffic.policy.outlierDetection (as Istio applies it): takes effect only with "
        "splitExternalLocalOriginErrors: true",
    ),
    (
        "progressive step above max",
        {"progressive": {"stepWeight": 60}},
        {"delivery": "progressive"},
        f"{P}.progressive.stepWeight = 60: must be <= maxWeight (50)",
    ),
    (
        "progressive interval not whole seconds",
        {"progressive": {"interval": "1.5s"}},
        {"delivery": "progressive"},
        f'{P}.progressive.interval = "1.500s": must be whole seconds (Flagger\'s format)',
    ),
    (
        "progressive interval too short for the webhooks",
        {"progressive": {"interval": "5s"}},
        {"delivery": "progressive"},
        f'{P}.progressive.interval = "5s": must be at least 10s: the rollout webhooks\' '
        "timeouts must fit inside it",
    ),
    (
        "progressive and static canary",
        {"canary": {"weights": [{"subset": "stable", "weight": 100}]}},
        {"delivery": "progressive"},
        f'{P}.canary = "set": must be unset for delivery: progressive; Flagger owns this '
        "service's routing",
    ),
    (
        "progressive with a chaos drill",
        {"fault": {"abort": {"httpStatus": 503}}},
        {"delivery": "progressive"},
        f'{P}.fault = "set": must be unset for delivery: progressive; Flagger owns this '
        "service's routing",
    ),
    (
        "delivery unknown",
        {},
        {"delivery": "blue-green"},
        "meshstack:services[0] (api).delivery = \"blue-green\": must be 'static' or 'progressive'",
    ),
    (
        "calls malformed",
        {},
        {"calls": ["payments"]},
        'meshstack:services[0] (api).calls[0] = "payments": must be `<namespace>/<service>` of a '
        "mesh service",
    ),
    (
        "calls unknown",
        {},
        {"calls": ["bank/ledger"]},
        'meshstack:services[0] (api).calls[0] = "bank/ledger": must be `<namespace>/<name>` '
        "of a service",
    ),
    (
        "exposed on an unknown gateway",
        {"expose": {"gateway": "private", "hosts": ["api.example.com"]}},
        {},
        f'{P}.expose.gateway = "private": must be one of traffic.gateways (public)',
    ),
    (
        "exposed host not on the gateway",
        {"expose": {"gateway": "public", "hosts": ["shop.example.org"]}},
        {},
        f"{P}.expose.hosts[0] = \"shop.example.org\": must be served by gateway 'public'",
    ),
    (
        "exposed host malformed",
        {"expose": {"gateway": "public", "hosts": ["API"]}},
        {},
        f'{P}.expose.hosts[0] = "API": must be a lowercase DNS name like api.example.com or '
        "*.example.com",
    ),
]


@pytest.mark.parametrize(
    ("traffic", "fields", "expected"),
    [pytest.param(t, f, e, id=name) for name, t, f, e in ERRORS],
)
def test_service_traffic_errors(
    traffic: dict[str, Any], fields: dict[str, Any], expected: str
) -> None:
    assert error_of(service(traffic, **fields), traffic={"gateways": [GATEWAY]}) == expected


def test_gateway_names_are_unique() -> None:
    message = error_of(traffic={"gateways": [GATEWAY, GATEWAY]})
    assert (
        message == 'meshstack:traffic.gateways[1].name = "public": must be unique; it is repeated'
    )


def test_gateway_secret_name_is_a_kubernetes_name() -> None:
    message = error_of(traffic={"gateways": [{**GATEWAY, "credentialName": "API TLS"}]})
    assert message == (
        'meshstack:traffic.gateways[0].credentialName = "API TLS": must be a Kubernetes Secret name'
    )


def test_gateway_tls_below_1_2_is_rejected() -> None:
    message = error_of(traffic={"gateways": [{**GATEWAY, "minProtocolVersion": "TLSV1_1"}]})
    assert message == (
        "meshstack:traffic.gateways[0].minProtocolVersion = \"TLSV1_1\": must be 'TLSV1_2' "
        "or 'TLSV1_3'"
    )


def test_ejection_bound_is_configurable() -> None:
    slow = {"policy": {"outlierDetection": {"consecutive5xxErrors": 10, "interval": "1m"}}}
    settings = make_settings(services=[service(slow)], traffic={"ejectionDetectionBound": "2m"})
    assert settings.traffic.ejection_detection_bound == "120s"
