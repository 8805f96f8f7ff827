"""Settings of the observability area: secure defaults, and one test per error message."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from components.observability.settings import ObservabilitySettings
from components.settings import SettingsError
from tests.conftest import FIXTURES, fixture_config, make_settings, settings_error

SPOKE: dict[str, Any] = {"role": "spoke", "hubStack": "hub-1"}


def test_defaults_are_a_secure_single_region_hub() -> None:
    obs = make_settings().observability
    assert obs.role == "hub" and obs.is_hub and obs.hub_stack == ""
    assert obs.telemetry.sampling_percentage == 100
    assert obs.jaeger.replicas == 1
    assert obs.jaeger.storage.type == "badger"
    assert obs.jaeger.storage.size == "20Gi"
    assert obs.jaeger.storage.retention == "72h"
    assert obs.jaeger.ingress_host == ""
    assert obs.kiali.auth_strategy == "token"
    assert obs.kiali.allow_anonymous is False
    assert obs.kiali.ingress_host == ""
    assert obs.kiali.view_only_mode is True


def test_external_store_may_scale() -> None:
    jaeger = make_settings(
        observability={
            "jaeger": {
                "replicas": 3,
                "storage": {"type": "opensearch", "serverUrls": ["https://os:9200"]},
            }
        }
    ).observability.jaeger
    assert jaeger.replicas == 3 and jaeger.storage.external


def test_spoke_names_its_hub() -> None:
    obs = make_settings(observability=SPOKE).observability
    assert not obs.is_hub
    assert obs.hub_stack == "hub-1"


def test_a_fully_qualified_hub_stack_is_refused_with_the_stack_name_to_use() -> None:
    assert settings_error(observability={**SPOKE, "hubStack": "acme/meshstack/hub-1"}) == (
        'meshstack:observability.hubStack = "acme/meshstack/hub-1": must be the hub\'s stack '
        "name ('hub-1'), not organization/project/stack: the organization and project are "
        "those of this run"
    )


def test_a_hub_stack_name_has_only_stack_name_characters() -> None:
    assert settings_error(observability={**SPOKE, "hubStack": "us east"}) == (
        'meshstack:observability.hubStack = "us east": must name the hub\'s stack '
        "(e.g. us-east-1) when role is 'spoke'"
    )


def test_badger_with_two_replicas_is_an_error() -> None:
    assert settings_error(observability={"jaeger": {"replicas": 2}}) == (
        "meshstack:observability.jaeger.replicas = 2: must be 1 with storage type 'badger' "
        "(each replica would keep its own part of every trace); use elasticsearch or "
        "opensearch to scale"
    )


def test_memory_with_two_replicas_is_an_error() -> None:
    message = settings_error(
        observability={"jaeger": {"replicas": 2, "storage": {"type": "memory"}}}
    )
    assert message.startswith(
        "meshstack:observability.jaeger.replicas = 2: must be 1 with storage type 'memory'"
    )


def test_external_store_needs_urls() -> None:
    assert settings_error(observability={"jaeger": {"storage": {"type": "elasticsearch"}}}) == (
        "meshstack:observability.jaeger.storage.serverUrls is not set: must list at least one URL "
        "for type 'elasticsearch'"
    )


def test_urls_only_for_external_stores() -> None:
    assert settings_error(
        observability={"jaeger": {"storage": {"serverUrls": ["http://es:9200"]}}}
    ) == (
        'meshstack:observability.jaeger.storage.serverUrls = ["http://es:9200"]: must be empty '
        "unless type is 'elasticsearch' or 'opensearch'"
    )


def test_sampling_percentage_is_bounded() -> None:
    assert settings_error(observability={"telemetry": {"samplingPercentage": 101}}) == (
        "meshstack:observability.telemetry.samplingPercentage = 101: must be less than or "
        "equal to 100"
    )
    assert settings_error(observability={"telemetry": {"samplingPercentage": -1}}) == (
        "meshstack:observability.telemetry.samplingPercentage = -1: must be greater than or "
        "equal to 0"
    )


def test_metric_override_must_change_a_tag() -> None:
    overrides = [{"metric": "REQUEST_COUNT"}]
    assert settings_error(observability={"telemetry": {"metricOverrides": overrides}}) == (
        "meshstack:observability.telemetry.metricOverrides[0].removeTags is not set: must name a "
        "tag to remove, or addTags a tag to add"
    )


def test_namespace_override_must_change_something() -> None:
    namespaces = [{"namespace": "shop"}]
    assert settings_error(observability={"telemetry": {"namespaces": namespaces}}) == (
        "meshstack:observability.telemetry.namespaces[0].samplingPercentage is not set: must be "
        "set, or accessLogging must be; an override must change something"
    )


def test_namespace_override_is_unique() -> None:
    namespaces = [
        {"namespace": "shop", "accessLogging": False},
        {"namespace": "shop", "samplingPercentage": 5},
    ]
    assert settings_error(observability={"telemetry": {"namespaces": namespaces}}) == (
        'meshstack:observability.telemetry.namespaces[1].namespace = "shop": must be unique; '
        "it is repeated"
    )


def test_namespace_override_needs_a_workload_namespace() -> None:
    namespaces = [{"namespace": "nowhere", "accessLogging": False}]
    assert settings_error(
        workloadNamespaces=["shop"], observability={"telemetry": {"namespaces": namespaces}}
    ) == (
        'meshstack:observability.telemetry.namespaces[0].namespace = "nowhere": must be a '
        "workload namespace of this region"
    )


def test_anonymous_needs_explicit_permission() -> None:
    assert settings_error(observability={"kiali": {"authStrategy": "anonymous"}}) == (
        'meshstack:observability.kiali.authStrategy = "anonymous": gives everyone full access; '
        "set allowAnonymous: true to accept that"
    )
    allowed = make_settings(
        observability={"kiali": {"authStrategy": "anonymous", "allowAnonymous": True}}
    )
    assert allowed.observability.kiali.auth_strategy == "anonymous"


def test_openid_needs_issuer_and_client() -> None:
    assert settings_error(observability={"kiali": {"authStrategy": "openid"}}) == (
        "meshstack:observability.kiali.openidIssuerUri is not set: must be set together with "
        "openidClientId when authStrategy is 'openid'"
    )


def test_grafana_urls_come_in_pairs() -> None:
    kiali = {"grafanaInternalUrl": "http://grafana.monitoring:3000"}
    assert settings_error(observability={"kiali": kiali}) == (
        "meshstack:observability.kiali.grafanaExternalUrl is not set: must be set together with "
        "grafanaInternalUrl (or both left empty)"
    )


def test_spoke_needs_a_hub_stack() -> None:
    assert settings_error(observability={"role": "spoke"}) == (
        "meshstack:observability.hubStack is not set: must name the hub's stack "
        "(e.g. us-east-1) when role is 'spoke'"
    )


def test_hub_has_no_hub_stack() -> None:
    assert settings_error(observability={"hubStack": "hub-1"}) == (
        "meshstack:observability.hubStack = \"hub-1\": must be empty when role is 'hub'"
    )


def test_spoke_runs_no_jaeger_or_kiali() -> None:
    assert settings_error(observability={**SPOKE, "jaeger": {"replicas": 1}}) == (
        "meshstack:observability.jaeger = {}: must not be set when role is 'spoke'; only the "
        "hub runs Jaeger and Kiali"
    )
    assert settings_error(observability={**SPOKE, "kiali": {"viewOnlyMode": False}}) == (
        'meshstack:observability.kiali = {"viewOnlyMode": false}: must set nothing but '
        "`enabled` when role is 'spoke'; only the hub runs Jaeger and Kiali"
    )


def test_a_spoke_may_turn_off_the_hub_kialis_access_and_nothing_else_of_kiali() -> None:
    spoke = make_settings(observability={**SPOKE, "kiali": {"enabled": False}})
    assert spoke.observability.kiali.enabled is False
    assert make_settings(observability=SPOKE).observability.kiali.enabled is True, (
        "by default one Kiali sees every region"
    )
    assert settings_error(
        observability={**SPOKE, "kiali": {"enabled": False, "viewOnlyMode": False}}
    ) == (
        'meshstack:observability.kiali = {"enabled": false, "viewOnlyMode": false}: must '
        "set nothing but `enabled` when role is 'spoke'; only the hub runs Jaeger and Kiali"
    )


def test_the_hub_cannot_turn_kiali_off() -> None:
    assert settings_error(observability={"kiali": {"enabled": False}}) == (
        "meshstack:observability.kiali.enabled = false: must be true when role is 'hub': the "
        "hub runs the mesh's only Kiali; `enabled: false` turns off a spoke's remote access "
        "for it"
    )


def test_ingress_host_must_be_a_dns_name() -> None:
    assert settings_error(observability={"jaeger": {"ingressHost": "Jaeger_UI"}}) == (
        'meshstack:observability.jaeger.ingressHost = "Jaeger_UI": must be a DNS host name '
        "(lowercase letters, digits, '-' and '.')"
    )


def test_a_ui_ingress_without_tls_is_refused() -> None:
    assert settings_error(
        observability={
            "jaeger": {"ingressHost": "j.example.com", "ingressAuthUrl": "https://a.example/x"}
        }
    ) == (
        "meshstack:observability.jaeger.ingressTlsSecret is not set: must name the TLS Secret for "
        "ingressHost; a UI Ingress is served over TLS only"
    )
    assert settings_error(observability={"kiali": {"ingressHost": "k.example.com"}}) == (
        "meshstack:observability.kiali.ingressTlsSecret is not set: must name the TLS Secret for "
        "ingressHost; a UI Ingress is served over TLS only"
    )


def test_a_jaeger_ingress_without_authentication_is_refused() -> None:
    jaeger = {"ingressHost": "j.example.com", "ingressTlsSecret": "j-tls"}
    assert settings_error(observability={"jaeger": jaeger}) == (
        "meshstack:observability.jaeger.ingressAuthUrl is not set: must be set (or "
        "ingressBasicAuthSecret) when ingressHost is set: the Jaeger UI has no login and "
        "shows every traced request"
    )


def test_jaeger_ingress_takes_one_authentication() -> None:
    jaeger = {
        "ingressHost": "j.example.com",
        "ingressTlsSecret": "j-tls",
        "ingressAuthUrl": "https://a.example/x",
        "ingressBasicAuthSecret": "htpasswd",
    }
    assert settings_error(observability={"jaeger": jaeger}) == (
        'meshstack:observability.jaeger.ingressBasicAuthSecret = "htpasswd": must be empty '
        "when ingressAuthUrl is set; choose one authentication"
    )


JAEGER_UI = {
    "ingressHost": "j.example.com",
    "ingressTlsSecret": "j-tls",
    "ingressAuthUrl": "https://a.example/x",
}


def test_a_jaeger_ingress_names_the_controller_addresses() -> None:
    # The controller's plaintext has no identity: without its addresses the Jaeger policy
    # could admit it only by admitting every plaintext caller.
    assert settings_error(observability={"jaeger": JAEGER_UI}) == (
        "meshstack:observability.jaeger.ingressSourceIpBlocks is not set: must list the Ingress "
        "controller's source addresses when ingressHost is set: its plaintext has no identity, "
        "and every other plaintext caller is denied"
    )
    everyone = {**JAEGER_UI, "ingressSourceIpBlocks": ["0.0.0.0/0"]}
    assert settings_error(observability={"jaeger": everyone}) == (
        'meshstack:observability.jaeger.ingressSourceIpBlocks[0] = "0.0.0.0/0": must not be '
        "every address: it would admit any plaintext caller to the unauthenticated query API"
    )
    host_bits = {**JAEGER_UI, "ingressSourceIpBlocks": ["10.0.32.1/20"]}
    assert settings_error(observability={"jaeger": host_bits}) == (
        'meshstack:observability.jaeger.ingressSourceIpBlocks[0] = "10.0.32.1/20": must be an '
        "IP address or a CIDR block without host bits (10.0.0.0/16)"
    )
    assert settings_error(
        observability={"jaeger": {"ingressSourceIpBlocks": ["10.0.32.0/20"]}}
    ) == (
        'meshstack:observability.jaeger.ingressSourceIpBlocks = ["10.0.32.0/20"]: must be '
        "empty without ingressHost: port 16686 is then mTLS-only and no plaintext caller can "
        "arrive"
    )


def test_jaeger_query_readers_are_service_accounts() -> None:
    assert settings_error(observability={"jaeger": {"queryServiceAccounts": ["grafana"]}}) == (
        'meshstack:observability.jaeger.queryServiceAccounts[0] = "grafana": must be '
        "`<namespace>/<serviceAccount>`"
    )


def test_jaeger_sign_in_page_needs_external_authentication() -> None:
    jaeger = {"ingressAuthSignin": "https://a.example/start"}
    assert settings_error(observability={"jaeger": jaeger}) == (
        'meshstack:observability.jaeger.ingressAuthSignin = "https://a.example/start": needs '
        "ingressAuthUrl (the sign-in page only serves external authentication)"
    )


def test_unknown_observability_key_is_a_typo() -> None:
    assert settings_error(observability={"samplingPercentage": 5}) == (
        "meshstack:observability.samplingPercentage is not a known setting; did you mean "
        "`telemetry.samplingPercentage`?"
    )


def test_observability_namespace_is_not_a_workload_namespace() -> None:
    assert settings_error(workloadNamespaces=["observability"]) == (
        'meshstack:observabilityNamespace = default "observability": must not be a workload '
        "namespace; Jaeger and Kiali own it"
    )


# --- the fixture stacks exercise every option ------------------------------------------------

HUB_ALTERNATIVES = {
    # One hub per mesh, so its mutually exclusive alternatives are exercised by the tests
    # (test_observability.py) instead: external and in-memory stores...
    "observability.jaeger.storage.serverUrls",
    "observability.jaeger.storage.indexPrefix",
    "observability.jaeger.storage.credentialsSecret",
    "observability.jaeger.storage.maxTraces",
    # ...basic authentication, the alternative to the hub's external authentication...
    "observability.jaeger.ingressBasicAuthSecret",
    # ...and the insecure, development-only non-defaults.
    "observability.kiali.allowAnonymous",
    "observability.kiali.viewOnlyMode",
}


def _option_paths(model: type[BaseModel], prefix: str) -> set[str]:
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or to_camel(name)}"
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            paths |= _option_paths(nested, f"{path}.")
        else:
            paths.add(path)
    return paths


def _set_paths(value: Any, prefix: str) -> set[str]:
    paths = {prefix}
    if isinstance(value, dict):
        for key, item in value.items():
            paths |= _set_paths(item, f"{prefix}.{key}")
    elif isinstance(value, list):
        for item in value:
            paths |= _set_paths(item, f"{prefix}[]")
    return paths


def test_the_fixture_stacks_exercise_every_observability_option() -> None:
    used: set[str] = set()
    for stack in FIXTURES:
        config = fixture_config(stack)
        used |= _set_paths(config.get("meshstack:observability", {}), "observability")
    expected = _option_paths(ObservabilitySettings, "observability.")
    assert expected - used - HUB_ALTERNATIVES == set()
    # Every list option is used with each of its item keys, too.
    item_keys = {
        "observability.telemetry.metricOverrides[]": ("metric", "mode", "removeTags", "addTags"),
        "observability.telemetry.namespaces[]": (
            "namespace",
            "samplingPercentage",
            "accessLogging",
        ),
    }
    for prefix, keys in item_keys.items():
        assert {f"{prefix}.{key}" for key in keys} <= used, prefix


def test_metric_override_may_not_remove_a_tag_something_reads() -> None:
    with pytest.raises(SettingsError) as caught:
        make_settings(
            observability={
                "telemetry": {
                    "metricOverrides": [
                        {
                            "metric": "REQUEST_COUNT",
                            "removeTags": ["response_code", "request_protocol"],
                        }
                    ]
                }
            }
        )
    assert str(caught.value).startswith(
        'meshstack:observability.telemetry.metricOverrides[0].removeTags[0] = "response_code": '
        "must not be a tag Kiali, Flagger, the alerts or the dashboard read (destination_cluster, "
    )
