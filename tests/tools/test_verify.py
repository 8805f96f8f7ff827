"""Tests for tools.verify: the checks must accept real-world objects and reject broken ones."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from tools.verify import reference_dir, validate_helm_values, validate_manifest
from tools.verify.cel import (
    SUPPORTED_FUNCTIONS,
    CelRuleError,
    compile_rule,
    evaluate_rule,
    parse_go_duration,
    rule_function_names,
)
from tools.verify.core import KUBERNETES_SCHEMA_VERSION, is_custom_resource, validate_core
from tools.verify.crd import CrdCatalog, default_catalog, is_transition_rule, load_catalog
from tools.verify.helm_values import documented_keys, load_chart
from tools.verify.reference import ENV_VAR, ReferenceDirError

Obj = dict[str, Any]


def meta(name: str, namespace: str = "mesh") -> Obj:
    return {"name": name, "namespace": namespace}


VIRTUAL_SERVICE: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": meta("reviews"),
    "spec": {
        "hosts": ["reviews.mesh.svc.cluster.local"],
        "gateways": ["mesh"],
        "http": [
            {
                "name": "primary",
                "match": [{"uri": {"prefix": "/api"}}],
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
                ],
                "timeout": "2s",
                "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx"},
                "corsPolicy": {
                    "allowOrigins": [{"exact": "https://example.com"}],
                    "allowMethods": ["GET", "POST"],
                    "maxAge": "24h",
                },
            }
        ],
    },
}

DESTINATION_RULE: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": meta("reviews"),
    "spec": {
        "host": "reviews",
        "trafficPolicy": {
            "connectionPool": {"http": {"http1MaxPendingRequests": 100}},
            "outlierDetection": {
                "consecutive5xxErrors": 5,
                "interval": "10s",
                "baseEjectionTime": "30s",
                "maxEjectionPercent": 50,
            },
        },
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    },
}

GATEWAY: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Gateway",
    "metadata": meta("public"),
    "spec": {
        "selector": {"istio": "ingressgateway"},
        "servers": [
            {
                "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                "hosts": ["shop.example.com"],
                "tls": {"mode": "SIMPLE", "credentialName": "shop-cert"},
            }
        ],
    },
}

ENVOY_FILTER: Obj = {
    "apiVersion": "networking.istio.io/v1alpha3",
    "kind": "EnvoyFilter",
    "metadata": meta("ratelimit"),
    "spec": {
        "workloadSelector": {"labels": {"istio": "ingressgateway"}},
        "configPatches": [
            {
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "listener": {
                        "filterChain": {
                            "filter": {
                                "name": "envoy.filters.network.http_connection_manager",
                                "subFilter": {"name": "envoy.filters.http.router"},
                            }
                        }
                    },
                },
                "patch": {
                    "operation": "INSERT_BEFORE",
                    "value": {
                        "name": "envoy.filters.http.ratelimit",
                        "typed_config": {"@type": "type.googleapis.com/x", "domain": "rl"},
                    },
                },
            }
        ],
    },
}

PEER_AUTHENTICATION: Obj = {
    "apiVersion": "security.istio.io/v1",
    "kind": "PeerAuthentication",
    "metadata": meta("default", "istio-system"),
    "spec": {"mtls": {"mode": "STRICT"}},
}

AUTHORIZATION_POLICY: Obj = {
    "apiVersion": "security.istio.io/v1",
    "kind": "AuthorizationPolicy",
    "metadata": meta("allow-frontend"),
    "spec": {
        "selector": {"matchLabels": {"app": "reviews"}},
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": ["cluster.local/ns/mesh/sa/frontend"]}}],
                "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}],
            }
        ],
    },
}

TELEMETRY: Obj = {
    "apiVersion": "telemetry.istio.io/v1",
    "kind": "Telemetry",
    "metadata": meta("mesh-default", "istio-system"),
    "spec": {
        "tracing": [{"providers": [{"name": "jaeger"}], "randomSamplingPercentage": 10.0}],
        "accessLogging": [{"providers": [{"name": "envoy"}]}],
    },
}

CANARY: Obj = {
    "apiVersion": "flagger.app/v1beta1",
    "kind": "Canary",
    "metadata": meta("reviews"),
    "spec": {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "reviews"},
        "service": {
            "port": 9080,
            "gateways": ["mesh"],
            "hosts": ["reviews"],
            "mirror": [{"backendRef": {"name": "reviews-mirror", "port": 9080}}],
        },
        "analysis": {
            "interval": "1m",
            "threshold": 5,
            "maxWeight": 50,
            "stepWeight": 10,
            "metrics": [
                {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}
            ],
            "webhooks": [
                {
                    "name": "load-test",
                    "url": "http://flagger-loadtester.test/",
                    "timeout": "5s",
                    "metadata": {"cmd": "hey -z 1m -q 10 -c 2 http://reviews:9080/"},
                }
            ],
        },
    },
}

PROMETHEUS_RULE: Obj = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": meta("mesh-alerts", "monitoring"),
    "spec": {
        "groups": [
            {
                "name": "mesh",
                "rules": [
                    {
                        "alert": "HighErrorRate",
                        "expr": 'sum(rate(istio_requests_total{response_code=~"5.."}[5m])) > 1',
                        "for": "10m",
                        "labels": {"severity": "page"},
                        "annotations": {"summary": "5xx rate is high"},
                    },
                    {
                        "record": "mesh:requests:rate5m",
                        "expr": "sum(rate(istio_requests_total[5m]))",
                    },
                ],
            }
        ]
    },
}

POD_MONITOR: Obj = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PodMonitor",
    "metadata": meta("envoy-stats", "monitoring"),
    "spec": {
        "selector": {
            "matchExpressions": [{"key": "istio-prometheus-ignore", "operator": "DoesNotExist"}]
        },
        "namespaceSelector": {"any": True},
        "podMetricsEndpoints": [
            {
                "path": "/stats/prometheus",
                "interval": "15s",
                "relabelings": [
                    {
                        "action": "keep",
                        "sourceLabels": ["__meta_kubernetes_pod_container_name"],
                        "regex": "istio-proxy",
                    }
                ],
            }
        ],
    },
}

SERVICE_MONITOR: Obj = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": meta("istiod", "monitoring"),
    "spec": {
        "selector": {"matchLabels": {"app": "istiod"}},
        "namespaceSelector": {"matchNames": ["istio-system"]},
        "endpoints": [{"port": "http-monitoring", "interval": "15s"}],
    },
}

KIALI: Obj = {
    "apiVersion": "kiali.io/v1alpha1",
    "kind": "Kiali",
    "metadata": meta("kiali", "istio-system"),
    "spec": {
        "auth": {"strategy": "anonymous"},
        "deployment": {"namespace": "istio-system", "replicas": 1},
        "external_services": {
            "prometheus": {"url": "http://prometheus.monitoring:9090"},
            "tracing": {"enabled": True, "internal_url": "http://jaeger-query.tracing:16685"},
        },
    },
}

GOOD_CUSTOM_RESOURCES = [
    VIRTUAL_SERVICE,
    DESTINATION_RULE,
    GATEWAY,
    ENVOY_FILTER,
    PEER_AUTHENTICATION,
    AUTHORIZATION_POLICY,
    TELEMETRY,
    CANARY,
    PROMETHEUS_RULE,
    POD_MONITOR,
    SERVICE_MONITOR,
    KIALI,
]


def modified(obj: Obj, path: str, value: Any) -> Obj:
    """A deep copy of ``obj`` with the dotted ``path`` (ints index lists) set to ``value``."""
    result = copy.deepcopy(obj)
    node: Any = result
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return result


def only_error(obj: Obj) -> str:
    errors = validate_manifest(obj)
    assert len(errors) == 1, errors
    return errors[0]


# -- CEL -------------------------------------------------------------------------


def test_every_cel_rule_compiles_and_uses_only_supported_functions() -> None:
    rules = default_catalog().rules()
    # SOURCES.md counts 309 rule-bearing nodes in istio.yaml alone; all four files hold 363 rules.
    assert len(rules) == 363
    for rule in set(rules):
        compile_rule(rule)
        unsupported = rule_function_names(rule) - SUPPORTED_FUNCTIONS
        assert not unsupported, f"{rule!r} uses {unsupported}"


# Probe values per schema type; every rule must evaluate cleanly on at least one
# probe of its node's type, which proves that each function it reaches exists.
_RULE_PROBES: dict[str, list[Any]] = {
    "string": ["1ms", "https://example.com/jwks", "ghcr.io/acme/filter:v1", "HTTP", "a"],
    "integer": [80],
    "array": [[{"number": 1}], ["a"]],
    "object": [
        {},
        {"80": "x"},
        {"group": "", "kind": "Service", "port": 80},
        {"address": "10.0.0.1"},
        {"wasm": {}},
    ],
}


def test_every_cel_rule_runs() -> None:
    checked: set[tuple[str, str]] = set()
    for node, entry in default_catalog().rule_sites():
        rule, node_type = entry["rule"], str(node.get("type"))
        if is_transition_rule(rule) or (rule, node_type) in checked:
            continue
        checked.add((rule, node_type))
        outcomes = []
        for probe in _RULE_PROBES[node_type]:
            try:
                outcomes.append(evaluate_rule(rule, probe))
            except CelRuleError:
                continue
        assert outcomes, f"{rule!r} failed to evaluate on every {node_type} probe"
    assert len({rule for rule, _ in checked}) == 37


def test_function_name_extraction_sees_methods_and_macros() -> None:
    names = rule_function_names(
        "isURL(self) && url(self).getScheme() == '' && self.all(k, k != '')"
    )
    assert names == {"isURL", "url", "getScheme", "all"}


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("1ms", 1_000_000),
        ("1.5s", 1_500_000_000),
        ("2h45m", 9_900_000_000_000),
        ("-300ms", -300_000_000),
        ("0", 0),
        ("999999ns", 999_999),
        ("1us", 1_000),
        ("1\u00b5s", 1_000),
    ],
)
def test_go_duration_syntax(text: str, nanos: int) -> None:
    assert parse_go_duration(text) == nanos


@pytest.mark.parametrize("text", ["", "1", "1d", "s", "1.5", "ms1", "1h-5m"])
def test_go_duration_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_duration_rule_is_exact_below_a_microsecond() -> None:
    rule = "duration(self) >= duration('1ms')"
    assert evaluate_rule(rule, "1ms")
    assert evaluate_rule(rule, "2h45m")
    assert not evaluate_rule(rule, "999999ns")  # rounding to microseconds would pass this
    assert not evaluate_rule(rule, "0.5ms")


def test_kubernetes_string_and_url_functions() -> None:
    unix = (
        'self.startsWith("unix://") ? '
        '(self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true'
    )
    assert evaluate_rule(unix, "unix:///var/run/socket")
    assert not evaluate_rule(unix, "unix://relative")
    scheme = 'url(self).getScheme() in ["http", "https"]'
    assert evaluate_rule(scheme, "https://auth.example.com/jwks")
    assert not evaluate_rule(scheme, "ftp://example.com/")
    wasm = (
        'isURL(self) ? (url(self).getScheme() in ["", "http", "https", "oci", "file"]) : '
        '(isURL("http://" + self) && '
        'url("http://" + self).getScheme() in ["", "http", "https", "oci", "file"])'
    )
    assert evaluate_rule(wasm, "oci://ghcr.io/acme/filter:v1")
    assert evaluate_rule(wasm, "ghcr.io/acme/filter:v1")
    assert not evaluate_rule(wasm, "ftp://example.com/filter.wasm")
    keys = (
        'self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))'
    )
    assert evaluate_rule(keys, {"app": "x"})
    assert not evaluate_rule(keys, {"-bad": "x"})


def test_evaluation_errors_are_raised_not_swallowed() -> None:
    with pytest.raises(CelRuleError, match="out of range"):
        evaluate_rule('self.substring(7, 8) == "/"', "abc")
    with pytest.raises(CelRuleError, match="invalid duration"):
        evaluate_rule("duration(self) >= duration('1ms')", "soon")


def test_transition_rules_are_recognised() -> None:
    assert is_transition_rule("self == oldSelf")
    assert not is_transition_rule("self.oldSelfish == 1")


# -- CRD validation: accepted objects ---------------------------------------------------


@pytest.mark.parametrize("obj", GOOD_CUSTOM_RESOURCES, ids=lambda o: str(o["kind"]))
def test_known_good_custom_resources_validate(obj: Obj) -> None:
    assert validate_manifest(obj) == []


# -- CRD validation: rejected objects ---------------------------------------------------


def test_unknown_spec_field_is_rejected() -> None:
    bad = modified(DESTINATION_RULE, "spec.trafficPolicy.outlierDetection.minRequestVolume", 5)
    assert only_error(bad) == (
        "DestinationRule/mesh/reviews: spec.trafficPolicy.outlierDetection.minRequestVolume: "
        'unknown field "minRequestVolume"'
    )


def test_unknown_nested_field_is_rejected() -> None:
    bad = modified(VIRTUAL_SERVICE, "spec.http.0.route.0.destination.subsett", "v1")
    assert only_error(bad).endswith(
        'spec.http[0].route[0].destination.subsett: unknown field "subsett"'
    )


def test_unknown_top_level_field_is_rejected() -> None:
    bad = copy.deepcopy(PEER_AUTHENTICATION)
    bad["specs"] = {}
    assert only_error(bad).endswith('specs: unknown field "specs"')
    # status belongs to controllers and is discarded on create, so it is not checked.
    assert validate_manifest(dict(PEER_AUTHENTICATION, status={"anything": 1})) == []


def test_wrong_type_is_rejected() -> None:
    bad = modified(VIRTUAL_SERVICE, "spec.http.0.route.0.weight", "90")
    assert only_error(bad).endswith(
        "spec.http[0].route[0].weight: must be of type integer, got string"
    )


def test_int32_range_and_minimum_are_enforced() -> None:
    bad = modified(VIRTUAL_SERVICE, "spec.http.0.retries.attempts", 2**31)
    assert (
        "spec.http[0].retries.attempts: 2147483648 does not fit in int32"
        in validate_manifest(bad)[0]
    )


def test_enum_violation_is_rejected() -> None:
    bad = modified(PEER_AUTHENTICATION, "spec.mtls.mode", "STRICTEST")
    assert only_error(bad).startswith(
        "PeerAuthentication/istio-system/default: spec.mtls.mode: unsupported value 'STRICTEST'"
    )


def test_pattern_uses_re2_syntax() -> None:
    # Prometheus' pattern "^(?i)(abort|warn)?$" is RE2 syntax that Python's re rejects.
    good = modified(PROMETHEUS_RULE, "spec.groups.0.partial_response_strategy", "Warn")
    assert validate_manifest(good) == []
    bad = modified(PROMETHEUS_RULE, "spec.groups.0.partial_response_strategy", "retry")
    assert only_error(bad) == (
        "PrometheusRule/monitoring/mesh-alerts: spec.groups[0].partial_response_strategy: "
        "'retry' does not match pattern '^(?i)(abort|warn)?$'"
    )


def test_cel_duration_rule_failure_names_path_and_message() -> None:
    bad = modified(VIRTUAL_SERVICE, "spec.http.0.timeout", "0.5ms")
    assert only_error(bad) == (
        "VirtualService/mesh/reviews: spec.http[0].timeout: Invalid value: "
        "must be a valid duration greater than 1ms"
    )


def test_cel_duration_parse_failure_is_reported() -> None:
    bad = modified(VIRTUAL_SERVICE, "spec.http.0.timeout", "2 seconds")
    error = only_error(bad)
    assert "spec.http[0].timeout: Invalid value: error evaluating CEL rule" in error


def test_cel_mutual_exclusion_rule_with_has() -> None:
    bad = modified(
        AUTHORIZATION_POLICY, "spec.targetRefs", [{"kind": "Service", "name": "reviews"}]
    )
    assert only_error(bad) == (
        "AuthorizationPolicy/mesh/allow-frontend: spec: Invalid value: "
        "only one of targetRefs or selector can be set"
    )


SERVICE_ENTRY: Obj = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "ServiceEntry",
    "metadata": meta("payments-api"),
    "spec": {
        "hosts": ["api.payments.example.com"],
        "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
        "location": "MESH_EXTERNAL",
        "resolution": "STATIC",
        "endpoints": [{"address": "10.0.0.1", "ports": {"https": 443}}],
    },
}


def test_cel_rules_on_map_keys_and_map_values() -> None:
    assert validate_manifest(SERVICE_ENTRY) == []
    bad = modified(SERVICE_ENTRY, "spec.endpoints.0.ports", {"-bad": 443, "ok": 0})
    assert validate_manifest(bad) == [
        "ServiceEntry/mesh/payments-api: spec.endpoints[0].ports.ok: Invalid value: "
        "port must be between 1-65535",
        "ServiceEntry/mesh/payments-api: spec.endpoints[0].ports: Invalid value: "
        "port name must be valid",
    ]


def test_cel_rule_with_conditional_has() -> None:
    bad = modified(SERVICE_ENTRY, "spec.resolution", "NONE")
    assert only_error(bad) == (
        "ServiceEntry/mesh/payments-api: spec: Invalid value: NONE mode cannot set endpoints"
    )


def test_cel_rule_needing_defaults_runs_after_defaulting() -> None:
    # Flagger's backendRef rule reads self.group and self.kind, which only exist
    # after the API server applies their schema defaults.
    bad = modified(CANARY, "spec.service.mirror.0.backendRef", {"name": "reviews-mirror"})
    assert only_error(bad).endswith(
        "spec.service.mirror[0].backendRef: Invalid value: Must have port for Service reference"
    )


def test_oneof_mutual_exclusion_from_openapi() -> None:
    bad = modified(VIRTUAL_SERVICE, "spec.http.0.corsPolicy.allowOrigins.0.prefix", "https://")
    assert only_error(bad).endswith(
        "spec.http[0].corsPolicy.allowOrigins[0]: only one of exact, prefix, regex may be set "
        "(found exact, prefix)"
    )


def test_generic_one_of_is_enforced() -> None:
    alert_provider: Obj = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "AlertProvider",
        "metadata": meta("slack"),
        "spec": {"type": "slack", "address": "https://hooks.slack.com/x"},
    }
    assert validate_manifest(alert_provider) == []
    del alert_provider["spec"]["address"]
    assert only_error(alert_provider) == (
        "AlertProvider/mesh/slack: spec: must match exactly one of: "
        "{type, address} | {type, secretRef} (matched 0)"
    )


def test_wrong_group_for_telemetry_is_rejected() -> None:
    bad = dict(TELEMETRY, apiVersion="networking.istio.io/v1")
    assert only_error(bad) == (
        "Telemetry/istio-system/mesh-default: apiVersion: no served CRD for apiVersion "
        "'networking.istio.io/v1' kind 'Telemetry'; served versions: telemetry.istio.io/v1, "
        "telemetry.istio.io/v1alpha1"
    )


def test_envoy_filter_only_served_as_v1alpha3() -> None:
    bad = dict(ENVOY_FILTER, apiVersion="networking.istio.io/v1")
    assert "served versions: networking.istio.io/v1alpha3" in only_error(bad)


def test_deprecated_version_is_rejected() -> None:
    # None of the reference CRDs deprecates a version today, so use a minimal CRD.
    catalog = CrdCatalog(
        [
            {
                "spec": {
                    "group": "example.io",
                    "names": {"kind": "Widget"},
                    "scope": "Cluster",
                    "versions": [
                        {"name": "v1beta1", "served": True, "deprecated": True},
                        {
                            "name": "v1",
                            "served": True,
                            "schema": {"openAPIV3Schema": {"type": "object"}},
                        },
                    ],
                }
            }
        ]
    )
    old = {"apiVersion": "example.io/v1beta1", "kind": "Widget", "metadata": {"name": "w"}}
    assert catalog.validate(old) == [
        "Widget//w: apiVersion: apiVersion 'example.io/v1beta1' of kind 'Widget' is "
        "deprecated; served versions: example.io/v1, example.io/v1beta1"
    ]
    assert catalog.validate(dict(old, apiVersion="example.io/v1")) == []
    namespaced = dict(old, apiVersion="example.io/v1", metadata={"name": "w", "namespace": "x"})
    assert catalog.validate(namespaced) == [
        "Widget/x/w: metadata.namespace: Forbidden: not allowed on a cluster-scoped kind"
    ]


def test_message_expression_and_rule_errors_on_a_synthetic_crd() -> None:
    catalog = CrdCatalog(
        [
            {
                "spec": {
                    "group": "example.io",
                    "names": {"kind": "Widget"},
                    "scope": "Namespaced",
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "spec": {
                                            "type": "object",
                                            "properties": {"size": {"type": "integer"}},
                                            "x-kubernetes-validations": [
                                                {
                                                    "rule": "self.size < 10",
                                                    "messageExpression": "'size ' + "
                                                    "string(self.size) + ' is too big'",
                                                },
                                                {"rule": "self.size != oldSelf.size"},
                                            ],
                                        }
                                    },
                                }
                            },
                        }
                    ],
                }
            }
        ]
    )
    widget: Obj = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": meta("w")}
    assert catalog.validate(dict(widget, spec={"size": 3})) == []
    assert catalog.validate(dict(widget, spec={"size": 12})) == [
        "Widget/mesh/w: spec: Invalid value: size 12 is too big"
    ]
    # A rule that cannot be evaluated (self.size is absent) is reported, not skipped.
    (error,) = catalog.validate(dict(widget, spec={}))
    assert error.startswith("Widget/mesh/w: spec: Invalid value: error evaluating CEL rule")


def test_missing_namespace_is_rejected() -> None:
    bad = copy.deepcopy(GATEWAY)
    del bad["metadata"]["namespace"]
    assert only_error(bad) == (
        "Gateway//public: metadata.namespace: Required value (the kind is namespaced)"
    )


@pytest.mark.parametrize("name", ["Reviews", "reviews_v1", "-reviews", "x" * 254])
def test_bad_metadata_name_is_rejected(name: str) -> None:
    bad = modified(GATEWAY, "metadata.name", name)
    assert "metadata.name: Invalid value" in only_error(bad)


def test_bad_labels_are_rejected() -> None:
    bad = modified(GATEWAY, "metadata.labels", {"app": "x" * 64, "bad key!": "v"})
    errors = validate_manifest(bad)
    assert len(errors) == 2, errors
    assert any("metadata.labels: Invalid key 'bad key!'" in e for e in errors)
    assert any("metadata.labels['app']: Invalid value" in e for e in errors)


def test_null_in_non_nullable_field_is_rejected() -> None:
    bad = modified(GATEWAY, "spec.selector", None)
    assert only_error(bad).endswith("spec.selector: must not be null (field is not nullable)")


def test_catalog_is_cached() -> None:
    assert load_catalog(reference_dir()) is default_catalog()


# -- Built-in kinds --------------------------------------------------------------


NAMESPACE: Obj = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {"name": "mesh", "labels": {"istio-injection": "enabled"}},
}
CONFIG_MAP: Obj = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": meta("ratelimit-config"),
    "data": {"config.yaml": "domain: rl\n"},
}
DEPLOYMENT: Obj = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": meta("reviews"),
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "reviews"}},
        "template": {
            "metadata": {"labels": {"app": "reviews", "version": "v1"}},
            "spec": {
                "containers": [
                    {
                        "name": "reviews",
                        "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
                        "ports": [{"containerPort": 9080, "name": "http"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    }
                ]
            },
        },
    },
}


@pytest.mark.parametrize("obj", [NAMESPACE, CONFIG_MAP, DEPLOYMENT], ids=lambda o: str(o["kind"]))
def test_valid_builtin_objects_pass(obj: Obj) -> None:
    assert validate_manifest(obj) == []
    assert not is_custom_resource(obj)


def test_deployment_with_unknown_field_fails() -> None:
    bad = modified(DEPLOYMENT, "spec.template.spec.containers.0.imagePullPolicyy", "Always")
    assert validate_core(bad) == [
        "Deployment/mesh/reviews: spec.template.spec.containers[0]: Additional properties are "
        "not allowed ('imagePullPolicyy' was unexpected)"
    ]


def test_builtin_wrong_type_and_metadata_are_reported() -> None:
    bad = modified(DEPLOYMENT, "spec.replicas", "two")
    bad["metadata"]["name"] = "Reviews"
    errors = validate_core(bad)
    assert any(
        e.startswith("Deployment/mesh/Reviews: spec.replicas: 'two' is not of type") for e in errors
    )
    assert any("metadata.name: Invalid value 'Reviews'" in e for e in errors)


def test_cluster_scoped_builtin_rejects_namespace() -> None:
    bad = modified(NAMESPACE, "metadata.namespace", "default")
    assert validate_core(bad) == [
        "Namespace/default/mesh: metadata.namespace: Forbidden: "
        "not allowed on a cluster-scoped kind"
    ]


def test_builtin_names_that_become_dns_labels() -> None:
    service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("9reviews"),
        "spec": {"ports": [{"port": 9080, "targetPort": "http"}]},
    }
    assert validate_core(service) == [
        "Service/mesh/9reviews: metadata.name: Invalid value '9reviews': "
        "must be an RFC 1035 label (at most 63 characters)"
    ]
    assert validate_core(modified(service, "metadata.name", "reviews")) == []
    assert validate_core(modified(NAMESPACE, "metadata.name", "a.b")) == [
        "Namespace//a.b: metadata.name: Invalid value 'a.b': "
        "must be an RFC 1123 label (at most 63 characters)"
    ]


def test_unknown_builtin_kind_is_an_error() -> None:
    errors = validate_core({"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": meta("x")})
    assert errors == [
        f"Deploymnet/mesh/x: apiVersion: no Kubernetes {KUBERNETES_SCHEMA_VERSION} schema for "
        "apiVersion 'apps/v1' kind 'Deploymnet'"
    ]


def test_is_custom_resource_uses_crd_groups() -> None:
    assert all(is_custom_resource(o) for o in GOOD_CUSTOM_RESOURCES)
    assert not is_custom_resource({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress"})


# -- Helm values -----------------------------------------------------------------


def test_valid_istiod_values_pass() -> None:
    values = {
        "base": {"validationFailurePolicy": "Fail"},
        "pdb": {"maxUnavailable": 1},
        "global": {
            "meshID": "meshstack",
            "multiCluster": {"clusterName": "eu-west-1"},
            "network": "eu-west-1-net",
        },
        "meshConfig": {"anything": {"nested": True}, "accessLogFile": "/dev/stdout"},
        "autoscaleMin": 2,
        "resources": {"limits": {"cpu": "1"}},
        "podAnnotations": {"example.com/team": "mesh"},
    }
    assert validate_helm_values("istiod", values) == []


def test_istiod_unknown_value_fails_with_full_path() -> None:
    assert validate_helm_values("istiod", {"pilot": {"autoscaleMin": 2}}) == [
        "istiod: values.pilot.autoscaleMin is not a value of the chart"
    ]
    assert validate_helm_values("istiod", {"global": {"multiCluster": {"clustername": "x"}}}) == [
        "istiod: values.global.multiCluster.clustername is not a value of the chart"
    ]


def test_commented_keys_are_parsed_with_indentation() -> None:
    text = (
        "a:\n"
        "  b: 1\n"
        "  # documented: yes\n"
        "  # Note: prose, not a key\n"
        "  # nested:\n"
        "  #   deeper: 1\n"
        "  list:\n"
        "    - x: 1\n"
        "      # inlist: 1\n"
        "  script: |\n"
        "    # fake: 1\n"
        "# top: 1\n"
    )
    assert documented_keys(text) == {("a", "documented"), ("a", "nested"), ("top",)}


def test_istiod_documented_keys_come_from_comments() -> None:
    documented = load_chart(reference_dir(), "istiod").documented
    assert ("base", "validationFailurePolicy") in documented
    assert ("pdb", "maxUnavailable") in documented


def test_gateway_schema_is_enforced() -> None:
    assert validate_helm_values("istio-gateway", {"service": {"type": "LoadBalancer"}}) == []
    assert validate_helm_values("istio-gateway", {"service": {"type": 5}}) == [
        "istio-gateway: values.service.type: 5 is not of type 'string'"
    ]
    errors = validate_helm_values("istio-gateway", {"replicas": 3})
    assert "istio-gateway: values.replicas is not a value of the chart" in errors
    assert any("'replicas' was unexpected" in e for e in errors)


def test_kiali_key_known_only_to_the_crd_passes() -> None:
    defaults = load_chart(reference_dir(), "kiali-server").defaults
    assert "url" not in defaults["external_services"]["prometheus"]  # keeps the test meaningful
    values = {"external_services": {"prometheus": {"url": "http://prometheus:9090"}}}
    assert validate_helm_values("kiali-server", values) == []


def test_unknown_kiali_key_fails() -> None:
    values = {"external_services": {"prometheus": {"urll": "http://prometheus:9090"}}}
    assert validate_helm_values("kiali-server", values) == [
        "kiali-server: values.external_services.prometheus.urll is not a value of the chart"
    ]


def test_jaeger_v1_keys_fail_and_free_form_config_passes() -> None:
    values = {"userconfig": {"service": {"pipelines": {}}}, "allInOne": {"enabled": True}}
    assert validate_helm_values("jaeger", values) == [
        "jaeger: values.allInOne.enabled is not a value of the chart"
    ]


def test_unknown_chart_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown chart 'istio-cni'"):
        validate_helm_values("istio-cni", {})


# -- Reference directory -----------------------------------------------------------


def test_env_var_overrides_reference_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = reference_dir()
    copy_dir = tmp_path / "reference"
    (copy_dir / "charts").mkdir(parents=True)
    shutil.copytree(source / "charts" / "istio-base", copy_dir / "charts" / "istio-base")
    monkeypatch.setenv(ENV_VAR, str(copy_dir))
    assert reference_dir() == copy_dir
    assert validate_helm_values("istio-base", {"global": {"istioNamespace": "x"}}) == []
    with pytest.raises(ValueError, match="unknown chart 'istiod'"):
        validate_helm_values("istiod", {})


def test_missing_reference_dir_names_the_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(ReferenceDirError, match=ENV_VAR):
        reference_dir()
