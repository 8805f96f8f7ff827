"""Tracing, Jaeger, Kiali and the hub/spoke link: pure builders, components, stack renders."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pulumi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.istio.component import IstioMesh
from components.observability import jaeger_values as j
from components.observability import kiali_values as k
from components.observability import telemetry as t
from components.observability.hub import HUB_KEYS, HUB_OUTPUT, HubReference
from components.observability.jaeger import JaegerStack
from components.observability.settings import (
    JaegerSettings,
    KialiSettings,
    NamespaceTelemetry,
    TelemetrySettings,
)
from components.observability.telemetry import MeshTelemetry
from components.region import RegionMesh
from components.run_context import RunContext
from components.settings import SettingsError
from tests.conftest import (
    FIXTURE_DIR,
    RUN_CONTEXT,
    STACKS,
    by_name,
    make_settings,
    run_with_provider,
    stack_config,
    stack_settings,
)
from tools.charts import published_chart
from tools.manifests import SECRET_PLACEHOLDER, dump_yaml_documents
from tools.render import (
    STACK_REFERENCES_FILE,
    Render,
    RenderError,
    load_stack_references,
)
from tools.stacks import observability_role
from tools.verify import validate_helm_values, validate_manifest

CREDENTIAL_LINE = re.compile(
    r"^\s*(- )?(password|signing_key|client_secret|token|api_token)\s*:\s*(?P<value>\S.*)$"
)
JAEGER_INGRESS: dict[str, Any] = {
    "ingressHost": "jaeger.example.com",
    "ingressTlsSecret": "jaeger-tls",
    "ingressAuthUrl": "https://auth.example.com/oauth2/auth",
    "ingressSourceIpBlocks": ["10.0.32.0/20"],
}
"""A Jaeger UI Ingress with what it requires: TLS, authentication, the controller's
addresses."""
KIALI_INGRESS: dict[str, Any] = {
    "ingressHost": "kiali.example.com",
    "ingressTlsSecret": "kiali-tls",
}
"""A Kiali Ingress with the TLS it requires."""

# Whatever stacks exist: each spoke against the hub its stack file names.
HUBS = tuple(s for s in STACKS if observability_role(stack_config(s)) == "hub")
SPOKES = tuple(s for s in STACKS if s not in HUBS)


def hub_of(stack: str) -> str:
    """The hub stack a spoke's stack file names (`observability.hubStack`)."""
    return str(stack_config(stack)["meshstack:observability"]["hubStack"])


def jaeger_settings(**values: Any) -> JaegerSettings:
    return make_settings(observability={"jaeger": values}).observability.jaeger


def telemetry_object(spec: dict[str, Any], namespace: str = "istio-system") -> dict[str, Any]:
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": "mesh-default", "namespace": namespace},
        "spec": spec,
    }


# --- Jaeger: pure builders ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "name_override", "fullname_override", "expected"),
    [
        ("jaeger", "", "", "jaeger"),
        ("tracing", "", "", "tracing-jaeger"),
        ("prod-jaeger-eu", "", "", "prod-jaeger-eu"),
        ("tracing", "spans", "", "tracing-spans"),
        ("tracing", "", "traces", "traces"),
        ("r" * 60, "", "", "r" * 60 + "-ja"),
        ("r" * 62, "", "", "r" * 62),
    ],
)
def test_fullname_mirrors_the_chart_helper(
    release: str, name_override: str, fullname_override: str, expected: str
) -> None:
    assert j.jaeger_fullname(release, name_override, fullname_override) == expected


def test_badger_is_persistent_on_the_claim() -> None:
    values = j.jaeger_values(jaeger_settings(storage={"retention": "168h"}))
    backend = values["userconfig"]["extensions"]["jaeger_storage"]["backends"][j.STORE]
    assert backend == {
        "badger": {
            "directories": {"keys": "/badger/keys", "values": "/badger/values"},
            "ephemeral": False,
            "ttl": {"spans": "168h"},
        }
    }
    jaeger = values["jaeger"]
    assert jaeger["replicas"] == 1
    assert jaeger["serviceAccount"] == {"automountServiceAccountToken": False}
    assert jaeger["securityContext"]["runAsNonRoot"] is True
    assert jaeger["extraVolumes"] == [
        {"name": "badger-data", "persistentVolumeClaim": {"claimName": "jaeger-badger"}}
    ]
    assert jaeger["extraVolumeMounts"] == [{"name": "badger-data", "mountPath": "/badger"}]


def test_claim_is_single_writer_and_sized_from_settings() -> None:
    spec = j.badger_claim_spec(jaeger_settings(storage={"size": "50Gi", "storageClass": "gp3"}))
    assert spec == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "50Gi"}},
        "storageClassName": "gp3",
    }
    assert "storageClassName" not in j.badger_claim_spec(jaeger_settings())


def test_pipeline_is_wired_end_to_end() -> None:
    config = j.user_config(jaeger_settings())
    pipeline = config["service"]["pipelines"]["traces"]
    assert set(pipeline["receivers"]) <= set(config["receivers"])
    assert set(pipeline["processors"]) <= set(config["processors"])
    assert set(pipeline["exporters"]) <= set(config["exporters"])
    assert set(config["service"]["extensions"]) == set(config["extensions"])
    backends = config["extensions"]["jaeger_storage"]["backends"]
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] in backends
    assert config["extensions"]["jaeger_query"]["storage"]["traces"] in backends


def test_listeners_bind_all_interfaces_on_the_service_ports() -> None:
    config = j.user_config(jaeger_settings())
    otlp = config["receivers"]["otlp"]["protocols"]
    query = config["extensions"]["jaeger_query"]
    assert otlp["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert otlp["http"]["endpoint"] == "0.0.0.0:4318"
    assert query["http"]["endpoint"] == "0.0.0.0:16686"
    assert query["grpc"]["endpoint"] == "0.0.0.0:16685"
    # The chart's probes call /status on 13133: healthcheckv2 must serve it there.
    assert config["extensions"]["healthcheckv2"]["http"]["endpoint"] == "0.0.0.0:13133"


def test_no_jaeger_v1_values_or_env() -> None:
    for storage in ({}, {"type": "memory"}):
        values = j.jaeger_values(jaeger_settings(storage=storage))
        assert set(values) == {"userconfig", "jaeger"}
        dumped = json.dumps(values)
        for v1 in ("SPAN_STORAGE_TYPE", "BADGER_", "allInOne", "all-in-one", "collector"):
            assert v1 not in dumped


def test_elasticsearch_credentials_come_from_the_secret_not_values() -> None:
    settings = jaeger_settings(
        replicas=2,
        storage={
            "type": "elasticsearch",
            "serverUrls": ["https://es-0:9200", "https://es-1:9200"],
            "indexPrefix": "mesh",
            "credentialsSecret": "jaeger-es",
        },
    )
    values = j.jaeger_values(settings)
    backend = values["userconfig"]["extensions"]["jaeger_storage"]["backends"][j.STORE]
    assert backend == {
        "elasticsearch": {
            "server_urls": ["https://es-0:9200", "https://es-1:9200"],
            "indices": {"index_prefix": "mesh"},
            "auth": {"basic": {"username": "${env:ES_USERNAME}", "password": "${env:ES_PASSWORD}"}},
        }
    }
    assert values["jaeger"]["replicas"] == 2
    assert values["jaeger"]["extraEnv"] == [
        {
            "name": "ES_USERNAME",
            "valueFrom": {"secretKeyRef": {"name": "jaeger-es", "key": "username"}},
        },
        {
            "name": "ES_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "jaeger-es", "key": "password"}},
        },
    ]
    assert "extraVolumes" not in values["jaeger"]


def test_opensearch_and_memory_backends() -> None:
    opensearch = jaeger_settings(storage={"type": "opensearch", "serverUrls": ["http://os:9200"]})
    backend = j.user_config(opensearch)["extensions"]["jaeger_storage"]["backends"][j.STORE]
    assert set(backend) == {"opensearch"} and "auth" not in backend["opensearch"]
    memory = j.user_config(jaeger_settings(storage={"type": "memory", "maxTraces": 5000}))
    assert memory["extensions"]["jaeger_storage"]["backends"][j.STORE] == {
        "memory": {"max_traces": 5000}
    }


def test_ingress_only_with_a_host() -> None:
    assert "ingress" not in j.jaeger_values(jaeger_settings())["jaeger"]
    ingress = j.jaeger_values(jaeger_settings(**JAEGER_INGRESS))["jaeger"]["ingress"]
    assert ingress == {
        "enabled": True,
        "ingressClassName": "nginx",
        "hosts": ["jaeger.example.com"],
        "pathType": "Prefix",
        "annotations": {
            "nginx.ingress.kubernetes.io/auth-url": "https://auth.example.com/oauth2/auth"
        },
        "tls": [{"hosts": ["jaeger.example.com"], "secretName": "jaeger-tls"}],
    }


def test_jaeger_ui_ingress_serves_only_authenticated_requests_over_tls() -> None:
    # ingress-nginx calls auth-url for every request and answers 401 (or redirects a browser
    # to auth-signin) unless it says 2xx; basic auth checks the htpasswd Secret instead.
    external = j.jaeger_values(
        jaeger_settings(**JAEGER_INGRESS, ingressAuthSignin="https://auth.example.com/start")
    )["jaeger"]["ingress"]
    assert external["annotations"] == {
        "nginx.ingress.kubernetes.io/auth-url": "https://auth.example.com/oauth2/auth",
        "nginx.ingress.kubernetes.io/auth-signin": "https://auth.example.com/start",
    }
    basic = j.jaeger_values(
        jaeger_settings(
            ingressHost="jaeger.example.com",
            ingressTlsSecret="jaeger-tls",
            ingressBasicAuthSecret="jaeger-htpasswd",
            ingressSourceIpBlocks=["10.0.32.0/20"],
        )
    )["jaeger"]["ingress"]
    assert basic["annotations"] == {
        "nginx.ingress.kubernetes.io/auth-type": "basic",
        "nginx.ingress.kubernetes.io/auth-secret": "jaeger-htpasswd",
        "nginx.ingress.kubernetes.io/auth-realm": "Jaeger",
    }
    assert basic["tls"] == [{"hosts": ["jaeger.example.com"], "secretName": "jaeger-tls"}]


def test_a_jaeger_config_change_rolls_the_pod_out() -> None:
    # Chart 4.11.1 mounts `user-config` with subPath: a running pod never sees a new
    # ConfigMap. Only a changed pod template restarts Jaeger, so the template must change
    # exactly when the collector config does.
    def template_labels(**jaeger: Any) -> dict[str, str]:
        labels: dict[str, str] = j.jaeger_values(jaeger_settings(**jaeger))["jaeger"]["podLabels"]
        return labels

    base = template_labels()
    assert template_labels(storage={"retention": "168h"}) != base
    assert template_labels(storage={"type": "memory"}) != base
    # Settings outside the config file (the pod's own resources) leave the label alone.
    assert template_labels(resources={"cpuRequest": "500m"}) == base
    assert all(len(value) <= 63 for value in base.values()), "a label value fits 63 characters"
    assert set(base) == {j.CONFIG_HASH_LABEL}


@pytest.mark.parametrize(
    "jaeger",
    [
        {},
        {**JAEGER_INGRESS, "storage": {"storageClass": "gp3"}},
        {"storage": {"type": "memory"}},
        {
            "replicas": 3,
            "storage": {
                "type": "elasticsearch",
                "serverUrls": ["https://es:9200"],
                "credentialsSecret": "es",
            },
        },
    ],
)
def test_every_jaeger_value_exists_in_the_chart(jaeger: dict[str, Any]) -> None:
    assert validate_helm_values("jaeger", j.jaeger_values(jaeger_settings(**jaeger))) == []


# --- Kiali: pure builders -----------------------------------------------------------------


def kiali_values(kiali: KialiSettings, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "prometheus_url": "http://prometheus:9090",
        "tracing_internal_url": "http://jaeger.observability.svc.cluster.local:16685",
        "tracing_external_url": "",
        "signing_key": "not-a-real-key",
    }
    return k.kiali_values(kiali, **{**arguments, **overrides})


def kiali_settings(**values: Any) -> KialiSettings:
    return make_settings(observability={"kiali": values}).observability.kiali


def test_kiali_reads_traces_from_the_grpc_query_api() -> None:
    tracing = kiali_values(kiali_settings())["external_services"]["tracing"]
    assert tracing == {
        "enabled": True,
        "provider": "jaeger",
        "internal_url": "http://jaeger.observability.svc.cluster.local:16685",
        "use_grpc": True,
    }


def test_kiali_defaults_to_token_login_and_no_ingress() -> None:
    values = kiali_values(kiali_settings())
    assert values["auth"] == {"strategy": "token"}
    assert "ingress" not in values["deployment"]
    assert values["external_services"]["prometheus"] == {
        "enabled": True,
        "url": "http://prometheus:9090",
    }
    assert values["external_services"]["grafana"] == {"enabled": False}
    # Deprecated after Kiali v2.11 and ignored (Kiali CRD): Istio's namespace is autodetected.
    assert "istio" not in values["external_services"]
    assert "istio_namespace" not in values
    assert values["clustering"]["autodetect_secrets"] == {
        "enabled": True,
        "label": "kiali.io/multiCluster=true",
    }


def test_kiali_openid_grafana_ingress_and_browser_links() -> None:
    settings = kiali_settings(
        authStrategy="openid",
        openidIssuerUri="https://sso.example.com/realms/p",
        openidClientId="kiali",
        **KIALI_INGRESS,
        grafanaInternalUrl="http://grafana.monitoring:3000",
        grafanaExternalUrl="https://grafana.example.com",
    )
    values = kiali_values(settings, tracing_external_url="https://jaeger.example.com")
    assert values["auth"] == {
        "strategy": "openid",
        "openid": {"issuer_uri": "https://sso.example.com/realms/p", "client_id": "kiali"},
    }
    assert values["deployment"]["ingress"]["enabled"] is True
    assert values["server"]["web_fqdn"] == "kiali.example.com"
    assert values["external_services"]["grafana"] == {
        "enabled": True,
        "internal_url": "http://grafana.monitoring:3000",
        "external_url": "https://grafana.example.com",
    }
    assert values["external_services"]["tracing"]["external_url"] == "https://jaeger.example.com"


def test_kiali_ingress_serves_https_as_its_web_schema_says() -> None:
    # Kiali builds its links and the OpenID redirect from `web_schema: https`; the Ingress
    # must then terminate TLS for that host, and still route /kiali to the Service port.
    values = kiali_values(kiali_settings(**KIALI_INGRESS, ingressClass="public-nginx"))
    assert values["server"]["web_schema"] == "https"
    spec = values["deployment"]["ingress"]["override_yaml"]["spec"]
    assert spec["tls"] == [{"hosts": ["kiali.example.com"], "secretName": "kiali-tls"}]
    assert spec["ingressClassName"] == "public-nginx"
    (rule,) = spec["rules"]
    assert rule["host"] == values["server"]["web_fqdn"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == values["server"]["web_root"]
    assert path["backend"]["service"] == {"name": "kiali", "port": {"number": k.SERVER_PORT}}


def test_tracing_browser_link_defaults_to_the_jaeger_ingress() -> None:
    with_ingress = make_settings(observability={"jaeger": JAEGER_INGRESS})
    assert k.tracing_external_url(with_ingress.observability) == "https://jaeger.example.com"
    assert k.tracing_external_url(make_settings().observability) == ""
    explicit = make_settings(observability={"kiali": {"tracingExternalUrl": "https://t.example"}})
    assert k.tracing_external_url(explicit.observability) == "https://t.example"


@pytest.mark.parametrize(
    "kiali",
    [
        {},
        {"authStrategy": "anonymous", "allowAnonymous": True, "viewOnlyMode": True},
        {
            "authStrategy": "openid",
            "openidIssuerUri": "https://sso.example.com",
            "openidClientId": "kiali",
            **KIALI_INGRESS,
            "grafanaInternalUrl": "http://grafana:3000",
            "grafanaExternalUrl": "https://grafana.example.com",
        },
    ],
)
def test_every_kiali_value_exists_in_the_chart_or_crd(kiali: dict[str, Any]) -> None:
    values = kiali_values(kiali_settings(**kiali), tracing_external_url="https://j.example")
    assert validate_helm_values("kiali-server", values) == []


def test_no_deprecated_kiali_url_keys() -> None:
    dumped = json.dumps(kiali_values(kiali_settings()))
    assert "in_cluster_url" not in dumped and '"url": "http://jaeger' not in dumped


# --- Telemetry: pure builders -------------------------------------------------------------


def test_mesh_telemetry_selects_tracing_and_access_log_providers() -> None:
    spec = t.mesh_telemetry_spec(TelemetrySettings(), tracing=True, access_logging=True)
    assert spec == {
        "tracing": [{"providers": [{"name": "jaeger-otlp"}], "randomSamplingPercentage": 100}],
        "accessLogging": [{"providers": [{"name": "envoy-json"}], "disabled": False}],
    }
    off = t.mesh_telemetry_spec(TelemetrySettings(), tracing=False, access_logging=False)
    assert off == {"accessLogging": [{"providers": [{"name": "envoy-json"}], "disabled": True}]}


def test_metric_tag_overrides() -> None:
    settings = make_settings(
        observability={
            "telemetry": {
                "metricOverrides": [
                    {"metric": "REQUEST_SIZE", "removeTags": ["source_principal"]},
                    {"mode": "SERVER", "addTags": {"request_host": "request.host"}},
                ]
            }
        }
    ).observability.telemetry
    metrics = t.mesh_telemetry_spec(settings, tracing=True, access_logging=True)["metrics"]
    assert metrics == [
        {
            "providers": [{"name": "prometheus"}],
            "overrides": [
                {
                    "match": {"metric": "REQUEST_SIZE", "mode": "CLIENT_AND_SERVER"},
                    "tagOverrides": {"source_principal": {"operation": "REMOVE"}},
                },
                {
                    "match": {"metric": "ALL_METRICS", "mode": "SERVER"},
                    "tagOverrides": {
                        "request_host": {"operation": "UPSERT", "value": "request.host"}
                    },
                },
            ],
        }
    ]
    assert validate_manifest(telemetry_object({"metrics": metrics})) == []


def test_namespace_override_changes_only_what_it_names() -> None:
    sampling = t.namespace_telemetry_spec(
        NamespaceTelemetry(namespace="shop", sampling_percentage=5), tracing=True
    )
    assert sampling == {
        "tracing": [{"providers": [{"name": "jaeger-otlp"}], "randomSamplingPercentage": 5}]
    }
    logs = t.namespace_telemetry_spec(
        NamespaceTelemetry(namespace="shop", access_logging=False), tracing=True
    )
    assert logs == {"accessLogging": [{"providers": [{"name": "envoy-json"}], "disabled": True}]}


def test_observability_namespace_reports_no_spans() -> None:
    spec = t.quiet_namespace_spec()
    assert spec["tracing"][0]["disableSpanReporting"] is True
    assert validate_manifest(telemetry_object(spec, "observability")) == []


@settings(max_examples=30, deadline=None)
@given(
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.booleans(),
    st.floats(min_value=0, max_value=100, allow_nan=False) | st.none(),
    st.booleans() | st.none(),
)
def test_any_valid_sampling_renders_a_valid_telemetry(
    mesh_sampling: float, access_logging: bool, ns_sampling: float | None, ns_logs: bool | None
) -> None:
    settings_ = TelemetrySettings(sampling_percentage=mesh_sampling)
    mesh = t.mesh_telemetry_spec(settings_, tracing=True, access_logging=access_logging)
    assert validate_manifest(telemetry_object(mesh)) == []
    if ns_sampling is not None or ns_logs is not None:
        override = NamespaceTelemetry(
            namespace="shop", sampling_percentage=ns_sampling, access_logging=ns_logs
        )
        spec = t.namespace_telemetry_spec(override, tracing=True)
        assert validate_manifest(telemetry_object(spec, "shop")) == []


# --- components under the mock runtime ----------------------------------------------------


@pytest.fixture(scope="module")
def hub_render() -> Render:
    settings = make_settings(
        services=[{"name": "cart", "namespace": "shop"}],
        observability={
            "telemetry": {"namespaces": [{"namespace": "shop", "accessLogging": False}]}
        },
    )
    return run_with_provider(
        lambda opts: RegionMesh("hub", settings, context=RUN_CONTEXT, opts=opts)
    )


def test_jaeger_installs_after_istiod_so_its_pods_are_injected(hub_render: Render) -> None:
    regs = by_name(hub_render)
    assert regs["hub-istio-istiod"].urn in regs["hub-jaeger-chart"].dependencies
    assert regs["hub-jaeger-ns"].urn not in regs["hub-istio-istiod"].dependencies
    types = {r.name: r.type for r in hub_render.registrations}
    assert types["hub-jaeger"] == "meshstack:observability:JaegerStack"
    assert types["hub-kiali"] == "meshstack:observability:KialiStack"
    assert types["hub-telemetry"] == "meshstack:observability:MeshTelemetry"


def test_every_child_is_parented_to_its_component(hub_render: Render) -> None:
    regs = by_name(hub_render)
    jaeger, kiali, telemetry = (regs[n].urn for n in ("hub-jaeger", "hub-kiali", "hub-telemetry"))
    assert regs["hub-jaeger-ns"].parent == jaeger
    assert regs["hub-jaeger-badger"].parent == jaeger
    assert regs["hub-jaeger-chart"].parent == jaeger
    assert regs["hub-kiali-signing-key"].parent == kiali
    assert regs["hub-kiali-chart"].parent == kiali
    for name in ("hub-telemetry-mesh-default", "hub-telemetry-shop", "hub-telemetry-observability"):
        assert regs[name].parent == telemetry
    for name in ("hub-jaeger", "hub-kiali", "hub-telemetry", "hub-istio"):
        assert regs[name].parent == regs["hub"].urn


def test_jaeger_namespace_and_claim_are_retained(hub_render: Render) -> None:
    regs = by_name(hub_render)
    assert regs["hub-jaeger-ns"].retain_on_delete
    assert regs["hub-jaeger-badger"].retain_on_delete
    assert regs["hub-jaeger-ns"].inputs["metadata"]["labels"]["istio-injection"] == "enabled"
    assert regs["hub-jaeger-badger"].urn in regs["hub-jaeger-chart"].dependencies


def test_planned_tracing_target_is_the_jaeger_stacks_own_endpoint() -> None:
    settings = make_settings(observabilityNamespace="traces")
    seen: dict[str, object] = {}

    def build(opts: pulumi.ResourceOptions) -> None:
        region = RegionMesh("hub", settings, context=RUN_CONTEXT, opts=opts)
        assert region.jaeger is not None
        planned = JaegerStack.tracing_target_for(settings.observability_namespace)
        pulumi.export("planned", pulumi.Output.all(planned.service, planned.port))
        actual = region.jaeger.tracing_target
        pulumi.export("actual", pulumi.Output.all(actual.service, actual.port))
        seen["ok"] = True

    render = run_with_provider(build)
    assert seen["ok"]
    assert render.outputs["planned"] == render.outputs["actual"]
    assert render.outputs["actual"] == ["jaeger.traces.svc.cluster.local", 4317]


def test_istio_tracing_provider_is_the_jaeger_service(hub_render: Render) -> None:
    regs = by_name(hub_render)
    mesh_config = regs["hub-istio-istiod"].inputs["values"]["meshConfig"]
    assert mesh_config["extensionProviders"][0] == {
        "name": "jaeger-otlp",
        "opentelemetry": {"service": "jaeger.observability.svc.cluster.local", "port": 4317},
    }
    assert "accessLogFile" not in mesh_config


def test_telemetry_waits_for_istiod_and_validates(hub_render: Render) -> None:
    regs = by_name(hub_render)
    istiod = regs["hub-istio-istiod"].urn
    telemetry = [r for r in hub_render.registrations if r.type.endswith(":Telemetry")]
    assert {r.name for r in telemetry} == {
        "hub-telemetry-mesh-default",
        "hub-telemetry-shop",
        "hub-telemetry-observability",
    }
    for r in telemetry:
        assert istiod in r.dependencies, r.name
    objects = [o for o in hub_render.kubernetes_objects() if o["kind"] == "Telemetry"]
    assert {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects} == {
        ("istio-system", "mesh-default"),
        ("shop", "namespace-default"),
        ("observability", "namespace-default"),
    }
    for obj in objects:
        assert validate_manifest(obj) == []


def test_kiali_waits_for_istiod_and_jaeger(hub_render: Render) -> None:
    regs = by_name(hub_render)
    dependencies = regs["hub-kiali-chart"].dependencies
    assert regs["hub-istio-istiod"].urn in dependencies
    assert regs["hub-jaeger-chart"].urn in dependencies


def test_signing_key_is_a_long_secret_random_password(hub_render: Render) -> None:
    regs = by_name(hub_render)
    password = regs["hub-kiali-signing-key"]
    assert password.type == "random:index/randomPassword:RandomPassword"
    assert password.inputs["length"] >= 32
    # The chart gets a reference to the Secret holding the key, never the key itself.
    values = regs["hub-kiali-chart"].inputs["values"]
    assert values["login_token"]["signing_key"] == k.SIGNING_KEY_REFERENCE
    secret = regs["hub-kiali-signing-key-secret"]
    assert secret.type == "kubernetes:core/v1:Secret"
    assert secret.inputs["stringData"] == SECRET_PLACEHOLDER
    assert password.urn in secret.dependencies


def test_every_object_and_value_of_the_hub_validates(hub_render: Render) -> None:
    for obj in hub_render.kubernetes_objects():
        assert validate_manifest(obj) == [], obj["metadata"]
    charts = {published_chart(c): c for c in hub_render.helm_charts()}
    assert validate_helm_values("jaeger", charts["jaeger"]["values"]) == []
    assert validate_helm_values("kiali-server", charts["kiali-server"]["values"]) == []


def test_anonymous_kiali_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(
        observability={"kiali": {"authStrategy": "anonymous", "allowAnonymous": True}}
    )
    with caplog.at_level(logging.WARNING):
        render = run_with_provider(
            lambda opts: RegionMesh("dev", settings, context=RUN_CONTEXT, opts=opts)
        )
    assert k.anonymous_warning() in caplog.messages
    chart = next(c for c in render.helm_charts() if published_chart(c) == "kiali-server")
    assert chart["values"]["auth"] == {"strategy": "anonymous"}


def test_token_kiali_logs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        run_with_provider(
            lambda opts: RegionMesh("prod", make_settings(), context=RUN_CONTEXT, opts=opts)
        )
    assert k.anonymous_warning() not in caplog.messages


def test_external_store_has_no_claim() -> None:
    settings = make_settings(
        observability={
            "jaeger": {
                "replicas": 2,
                "storage": {"type": "elasticsearch", "serverUrls": ["https://es:9200"]},
            }
        }
    )
    render = run_with_provider(
        lambda opts: RegionMesh("es", settings, context=RUN_CONTEXT, opts=opts)
    )
    assert not [r for r in render.registrations if r.type.endswith("PersistentVolumeClaim")]
    chart = next(c for c in render.helm_charts() if published_chart(c) == "jaeger")
    assert chart["values"]["jaeger"]["replicas"] == 2


def test_spoke_reads_the_hub_of_its_own_organization_and_runs_no_jaeger_or_kiali() -> None:
    context = RunContext(organization="acme", project="mesh", runbook_base_url="https://x/rb")
    hub_stack = "acme/mesh/hub"
    hub = {
        "otlpGrpcHost": "jaeger.obs.svc.cluster.local",
        "otlpGrpcPort": 4317,
        "queryGrpcUrl": "http://jaeger.obs.svc.cluster.local:16685",
    }
    settings = make_settings(observability={"role": "spoke", "hubStack": "hub"})

    def program() -> None:
        import pulumi_kubernetes as k8s

        opts = pulumi.ResourceOptions(providers=[k8s.Provider("test-kubernetes")])
        RegionMesh("spoke", settings, context=context, opts=opts)

    from tools.render import run_program

    render = run_program(
        "test", {}, program=program, stack_references={hub_stack: {HUB_OUTPUT: hub}}
    )
    regs = by_name(render)
    assert regs["spoke-hub"].type == "meshstack:observability:HubReference"
    reference = regs["spoke-hub-stack"]
    assert reference.type == "pulumi:pulumi:StackReference"
    assert reference.inputs["name"] == hub_stack
    assert reference.parent == regs["spoke-hub"].urn
    types = {r.type for r in render.registrations}
    assert "meshstack:observability:JaegerStack" not in types
    assert "meshstack:observability:KialiStack" not in types
    provider = regs["spoke-istio-istiod"].inputs["values"]["meshConfig"]["extensionProviders"][0]
    assert provider["opentelemetry"] == {"service": "jaeger.obs.svc.cluster.local", "port": 4317}
    # Only Kiali's remote ServiceAccount and RBAC, for the hub's Kiali to read this cluster.
    remote = regs["spoke-kiali-remote"]
    assert remote.type == "meshstack:observability:KialiRemoteAccess"
    for child in (
        "spoke-kiali-remote-ns",
        "spoke-kiali-remote-signing-key",
        "spoke-kiali-remote-chart",
    ):
        assert regs[child].parent == remote.urn
    assert regs["spoke-kiali-remote-ns"].retain_on_delete
    values = regs["spoke-kiali-remote-chart"].inputs["values"]
    assert values == {
        "deployment": {"remote_cluster_resources_only": True},
        "login_token": {"signing_key": k.SIGNING_KEY_REFERENCE},
    }
    assert validate_helm_values("kiali-server", values) == []


def test_a_spoke_with_kiali_off_gives_the_hubs_kiali_nothing_to_read_it_with() -> None:
    # Without Kiali's ServiceAccount on the spoke no remote-cluster Secret can authenticate
    # the hub's Kiali there: it shows the other clusters only.
    hub = {"otlpGrpcHost": "jaeger.obs.svc.cluster.local", "otlpGrpcPort": 4317}
    settings = make_settings(
        observability={"role": "spoke", "hubStack": "hub", "kiali": {"enabled": False}}
    )

    def program() -> None:
        import pulumi_kubernetes as k8s

        opts = pulumi.ResourceOptions(providers=[k8s.Provider("test-kubernetes")])
        RegionMesh("spoke", settings, context=RUN_CONTEXT, opts=opts)

    from tools.render import run_program

    hub_stack = RUN_CONTEXT.stack_reference_name("hub")
    render = run_program(
        "test", {}, program=program, stack_references={hub_stack: {HUB_OUTPUT: hub}}
    )
    assert not [r for r in render.registrations if "kiali" in r.type.lower() + r.name]
    assert not [
        o for o in render.kubernetes_objects() if o["metadata"].get("name") == "observability"
    ]
    assert "meshstack:observability:HubReference" in {r.type for r in render.registrations}


# The aborted program leaves the SDK's pending Output coroutines unawaited.
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_spoke_without_offline_outputs_names_the_missing_stack() -> None:
    settings = make_settings(observability={"role": "spoke", "hubStack": "nowhere"})
    with pytest.raises(
        RenderError, match="'organization/meshstack/nowhere' has no offline outputs"
    ):
        run_with_provider(
            lambda opts: HubReference("h", settings.observability, context=RUN_CONTEXT, opts=opts)
        )


def test_mesh_without_tracing_gets_no_tracing_telemetry() -> None:
    settings = make_settings()

    def build(opts: pulumi.ResourceOptions) -> None:
        mesh = IstioMesh("m", settings.istio, opts=opts)
        MeshTelemetry(
            "t",
            mesh,
            settings.observability.telemetry,
            access_logging=settings.access_logging,
            quiet_namespace="observability",
            opts=opts,
        )

    render = run_with_provider(build)
    objects = [o for o in render.kubernetes_objects() if o["kind"] == "Telemetry"]
    assert [o["metadata"]["name"] for o in objects] == ["mesh-default"]
    assert "tracing" not in objects[0]["spec"]


# --- the three stacks ---------------------------------------------------------------------


@pytest.mark.parametrize("hub", HUBS)
def test_kiali_traces_come_from_the_jaeger_of_the_same_render(
    stack_renders: dict[str, Render], hub: str
) -> None:
    render = stack_renders[hub]
    kiali = next(c for c in render.helm_charts() if published_chart(c) == "kiali-server")
    jaeger_query = render.outputs[HUB_OUTPUT]["queryGrpcUrl"]
    assert kiali["values"]["external_services"]["tracing"]["internal_url"] == jaeger_query
    assert jaeger_query.endswith(":16685")
    jaeger = next(c for c in render.helm_charts() if published_chart(c) == "jaeger")
    host = render.outputs[HUB_OUTPUT]["otlpGrpcHost"]
    assert host == f"{j.jaeger_fullname(jaeger['name'])}.{jaeger['namespace']}.svc.cluster.local"


@pytest.mark.parametrize("stack", HUBS)
def test_every_hub_output_key_names_its_own_endpoint(
    stack_renders: dict[str, Render], stack: str
) -> None:
    hub = stack_renders[stack].outputs[HUB_OUTPUT]
    jaeger = next(c for c in stack_renders[stack].helm_charts() if published_chart(c) == "jaeger")
    host = hub["otlpGrpcHost"]
    assert hub == {
        "otlpGrpcHost": host,
        "otlpGrpcPort": 4317,
        "otlpGrpcEndpoint": f"{host}:4317",
        "otlpHttpEndpoint": f"http://{host}:4318",
        "queryHttpUrl": f"http://{host}:16686",
        "queryGrpcUrl": f"http://{host}:16685",
        "namespace": jaeger["namespace"],
    }


@pytest.mark.parametrize("stack", SPOKES)
def test_spokes_send_spans_to_the_hub_collector(
    stack_renders: dict[str, Render], stack: str
) -> None:
    hub = stack_renders[hub_of(stack)].outputs[HUB_OUTPUT]
    istiod = next(c for c in stack_renders[stack].helm_charts() if published_chart(c) == "istiod")
    provider = istiod["values"]["meshConfig"]["extensionProviders"][0]
    assert provider["opentelemetry"] == {
        "service": hub["otlpGrpcHost"],
        "port": hub["otlpGrpcPort"],
    }
    assert HUB_OUTPUT not in stack_renders[stack].outputs
    charts = {published_chart(c): c for c in stack_renders[stack].helm_charts()}
    assert "jaeger" not in charts
    if not stack_settings(stack).observability.kiali.enabled:
        assert "kiali-server" not in charts, "kiali.enabled: false installs no remote access"
        return
    kiali = charts["kiali-server"]["values"]
    assert kiali["deployment"] == {"remote_cluster_resources_only": True}
    hub_kiali = next(
        c
        for c in stack_renders[hub_of(stack)].helm_charts()
        if published_chart(c) == "kiali-server"
    )
    # Kiali expects the same namespace and instance (release) name in every cluster.
    assert (charts["kiali-server"]["namespace"], charts["kiali-server"]["name"]) == (
        hub_kiali["namespace"],
        hub_kiali["name"],
    )


@pytest.mark.parametrize("stack", SPOKES)
def test_offline_outputs_of_a_spokes_hub_match_the_hub_render(
    stack_renders: dict[str, Render], stack: str
) -> None:
    hub = hub_of(stack)
    assert hub in HUBS, f"{stack}: meshstack:observability.hubStack {hub!r} is not a hub stack"
    reference = next(
        r for r in stack_renders[stack].registrations if r.type == "pulumi:pulumi:StackReference"
    )
    # The offline organization and this project, whatever the stack file's hub is.
    assert reference.inputs["name"] == f"organization/meshstack/{hub}"
    offline = load_stack_references()[reference.inputs["name"]]
    assert offline[HUB_OUTPUT] == stack_renders[hub].outputs[HUB_OUTPUT], (
        f"{STACK_REFERENCES_FILE}: {hub}'s {HUB_OUTPUT} differs from its render"
    )
    assert set(offline[HUB_OUTPUT]) == set(HUB_KEYS)


def test_fixture_spokes_read_the_fixture_hub_whose_offline_outputs_match_its_render(
    fixture_renders: dict[str, Render],
) -> None:
    offline = load_stack_references(stack_dir=FIXTURE_DIR)
    assert set(offline) == {"organization/meshstack/fixture-hub"}
    hub = fixture_renders["fixture-hub"].outputs[HUB_OUTPUT]
    assert offline["organization/meshstack/fixture-hub"][HUB_OUTPUT] == hub
    for spoke in ("fixture-spoke", "fixture-small-spoke"):
        istiod = next(
            c for c in fixture_renders[spoke].helm_charts() if published_chart(c) == "istiod"
        )
        provider = istiod["values"]["meshConfig"]["extensionProviders"][0]
        assert provider["opentelemetry"] == {
            "service": "jaeger.observability.svc.cluster.local",
            "port": 4317,
        }


def test_fixture_spokes_with_and_without_the_hub_kialis_remote_access(
    fixture_renders: dict[str, Render],
) -> None:
    # fixture-spoke keeps the default; fixture-small-spoke sets kiali.enabled: false.
    def kiali_charts(stack: str) -> list[dict[str, Any]]:
        charts = fixture_renders[stack].helm_charts()
        return [c for c in charts if published_chart(c) == "kiali-server"]

    (remote,) = kiali_charts("fixture-spoke")
    assert remote["values"]["deployment"] == {"remote_cluster_resources_only": True}
    assert kiali_charts("fixture-small-spoke") == []
    registered = {r.type for r in fixture_renders["fixture-small-spoke"].registrations}
    assert "meshstack:observability:KialiRemoteAccess" not in registered


def test_offline_outputs_are_keyed_by_stack_name(tmp_path: Path) -> None:
    (tmp_path / STACK_REFERENCES_FILE).parent.mkdir()
    (tmp_path / "Pulumi.yaml").write_text("name: proj\n")
    (tmp_path / STACK_REFERENCES_FILE).write_text("hub-1: {observabilityHub: {a: 1}}\n")
    assert load_stack_references(tmp_path) == {
        "organization/proj/hub-1": {"observabilityHub": {"a": 1}}
    }
    (tmp_path / STACK_REFERENCES_FILE).write_text("org/proj/hub-1: {observabilityHub: {}}\n")
    with pytest.raises(RenderError, match="must be keyed by stack name"):
        load_stack_references(tmp_path)


def test_stack_references_file_must_map_stacks_to_outputs(tmp_path: Path) -> None:
    (tmp_path / STACK_REFERENCES_FILE).parent.mkdir()
    (tmp_path / STACK_REFERENCES_FILE).write_text("org/p/s: [1, 2]\n")
    with pytest.raises(RenderError, match="must map stack names to their outputs"):
        load_stack_references(tmp_path)
    assert load_stack_references(tmp_path / "elsewhere") == {}


def test_no_secret_in_plain_text_in_any_render(stack_renders: dict[str, Render]) -> None:
    for stack, render in stack_renders.items():
        text = dump_yaml_documents(render.helm_charts()) + dump_yaml_documents(
            render.kubernetes_objects()
        )
        text += json.dumps(render.outputs)
        for chart in render.helm_charts():
            if published_chart(chart) == "kiali-server":
                assert chart["values"]["login_token"]["signing_key"] == k.SIGNING_KEY_REFERENCE
        # Every credential-like key with an inline value holds the secret placeholder,
        # an environment reference or a Secret reference, never a literal.
        for line in text.splitlines():
            match = CREDENTIAL_LINE.match(line)
            if match:
                value = match.group("value")
                assert (
                    SECRET_PLACEHOLDER in value
                    or "${env:" in value
                    or value == k.SIGNING_KEY_REFERENCE
                ), (stack, line)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["badger", "elasticsearch", "opensearch", "memory"]),
    st.integers(min_value=1, max_value=5),
    st.booleans(),
)
def test_jaeger_settings_either_scale_safely_or_fail_naming_replicas(
    storage_type: str, replicas: int, ingress: bool
) -> None:
    storage: dict[str, Any] = {"type": storage_type}
    if storage_type in ("elasticsearch", "opensearch"):
        storage["serverUrls"] = ["https://search:9200"]
    jaeger: dict[str, Any] = {"replicas": replicas, "storage": storage}
    if ingress:
        jaeger.update(JAEGER_INGRESS)
    single_writer = storage_type in ("badger", "memory")
    if single_writer and replicas > 1:
        with pytest.raises(SettingsError) as caught:
            make_settings(observability={"jaeger": jaeger})
        assert str(caught.value).startswith(
            f"meshstack:observability.jaeger.replicas = {replicas}: must be 1 with storage type"
        )
        return
    values = j.jaeger_values(make_settings(observability={"jaeger": jaeger}).observability.jaeger)
    assert values["jaeger"]["replicas"] == replicas
    assert validate_helm_values("jaeger", values) == []
    claims = values["jaeger"].get("extraVolumes", [])
    assert bool(claims) == (storage_type == "badger")


def test_ui_ingresses_get_a_plaintext_exception_for_their_port_only() -> None:
    settings = make_settings(
        observability={
            "jaeger": {**JAEGER_INGRESS, "ingressHost": "traces.example.com"},
            "kiali": KIALI_INGRESS,
        }
    )
    render = run_with_provider(
        lambda opts: RegionMesh("hub", settings, context=RUN_CONTEXT, opts=opts)
    )
    regs = by_name(render)
    exceptions = {
        o["metadata"]["name"]: o
        for o in render.kubernetes_objects()
        if o["kind"] == "PeerAuthentication" and o["metadata"]["namespace"] == "observability"
    }
    assert set(exceptions) == {"jaeger-ingress", "kiali-ingress"}
    assert exceptions["jaeger-ingress"]["spec"]["portLevelMtls"] == {
        "16686": {"mode": "PERMISSIVE"}
    }
    assert exceptions["kiali-ingress"]["spec"]["portLevelMtls"] == {"20001": {"mode": "PERMISSIVE"}}
    assert exceptions["jaeger-ingress"]["spec"]["selector"]["matchLabels"] == j.pod_labels()
    assert regs["hub-jaeger-ingress-mtls"].parent == regs["hub-jaeger"].urn
    assert regs["hub-istio-istiod"].urn in regs["hub-kiali-ingress-mtls"].dependencies
    for obj in exceptions.values():
        assert validate_manifest(obj) == []


def test_no_plaintext_exception_without_an_ingress(hub_render: Render) -> None:
    names = {r.name for r in hub_render.registrations}
    assert "hub-jaeger-ingress-mtls" not in names
    assert "hub-kiali-ingress-mtls" not in names
