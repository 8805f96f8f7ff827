"""Policy rules one by one: compliant passes, non-compliant fails, a missing property is safe.

The test doubles build `ResourceValidationArgs`/`StackValidationArgs` as pulumi-policy's
analyzer servicer does from an engine request: properties deserialized and wrapped in the
unknown-checking proxy, `PolicyResourceOptions` without `retain_on_delete` (the engine
does not send it), the resolved provider, the policy's config.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from components.constants import ISTIO_NAMESPACE
from policy import meshstack_policies as rules
from policy.offline import OfflineResourceOptions

PROJECT_DIR = Path(__file__).resolve().parents[2]
URN_PREFIX = "urn:pulumi:test::meshstack::"
EXPLICIT_PROVIDER = "meshstack-kubernetes"

# --- test doubles -------------------------------------------------------------------------


def engine_options(*, protect: bool = False) -> PolicyResourceOptions:
    """Options exactly as pulumi-policy 1.21 builds them from an analyzer request."""
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def provider(name: str = EXPLICIT_PROVIDER) -> PolicyProviderResource:
    urn = f"{URN_PREFIX}pulumi:providers:kubernetes::{name}"
    return PolicyProviderResource("pulumi:providers:kubernetes", {}, urn, name)


def resource_args(
    resource_type: str,
    props: Mapping[str, Any],
    *,
    opts: PolicyResourceOptions | None = None,
    provider_resource: PolicyProviderResource | None = None,
    config: Mapping[str, Any] | None = None,
) -> ResourceValidationArgs:
    return ResourceValidationArgs(
        resource_type,
        unknown_checking_proxy(deserialize_properties(dict(props))),
        f"{URN_PREFIX}{resource_type}::r",
        "r",
        opts or engine_options(),
        provider_resource or provider(),
        config,
    )


def stack_args(
    resources: list[tuple[str, Mapping[str, Any]]], config: Mapping[str, Any] | None = None
) -> StackValidationArgs:
    policy_resources = [
        PolicyResource(
            resource_type,
            unknown_checking_proxy(deserialize_properties(dict(props))),
            f"{URN_PREFIX}{resource_type}::r{index}",
            f"r{index}",
            engine_options(),
            provider(),
            None,
            [],
            {},
        )
        for index, (resource_type, props) in enumerate(resources)
    ]
    return StackValidationArgs(policy_resources, config)


def violations(
    rule: Callable[[Any, ReportViolation], None],
    args: ResourceValidationArgs | StackValidationArgs,
) -> list[str]:
    found: list[str] = []

    def report_violation(message: str, urn: str | None = None) -> None:
        found.append(message)

    rule(args, report_violation)
    return found


DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CHART = "kubernetes:helm.sh/v4:Chart"
RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "256Mi"},
}


def deployment(*containers: Mapping[str, Any], init: list[Any] | None = None) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": list(containers)}
    if init is not None:
        pod_spec["initContainers"] = init
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"template": {"spec": pod_spec}},
    }


def container(image: str = "ghcr.io/acme/api:1.4.2", **extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": image, "resources": RESOURCES, **extra}


# --- images pinned ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/acme/api:1.4.2",
        "registry.local:5000/acme/api:2024-01-01",
        "ghcr.io/acme/api@sha256:" + "a" * 64,
        "auto",
    ],
)
def test_pinned_images_pass(image: str) -> None:
    args = resource_args(DEPLOYMENT, deployment(container(image)))
    assert violations(rules.images_pinned, args) == []


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("ghcr.io/acme/api:latest", "uses the mutable tag latest"),
        ("ghcr.io/acme/api:LATEST", "uses the mutable tag latest"),
        ("ghcr.io/acme/api", "has no tag, so it resolves to latest"),
        ("nginx", "has no tag, so it resolves to latest"),
        ("registry.local:5000/acme/api", "has no tag, so it resolves to latest"),
        ("ghcr.io/acme/api:", "has an empty tag"),
    ],
)
def test_unpinned_images_fail(image: str, problem: str) -> None:
    args = resource_args(DEPLOYMENT, deployment(container(image)))
    assert violations(rules.images_pinned, args) == [
        f"apps/Deployment shop/api containers[app]: image {image!r} {problem}"
    ]


def test_init_containers_and_cronjobs_are_checked() -> None:
    init = [{"name": "migrate", "image": "ghcr.io/acme/migrate"}]
    args = resource_args(DEPLOYMENT, deployment(container(), init=init))
    assert violations(rules.images_pinned, args) == [
        "apps/Deployment shop/api initContainers[migrate]: image 'ghcr.io/acme/migrate' "
        "has no tag, so it resolves to latest"
    ]
    cronjob = {
        "metadata": {"name": "nightly", "namespace": "ops"},
        "spec": {
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [container("busybox")]}}}}
        },
    }
    assert violations(
        rules.images_pinned, resource_args("kubernetes:batch/v1:CronJob", cronjob)
    ) == [
        "batch/CronJob ops/nightly containers[app]: image 'busybox' "
        "has no tag, so it resolves to latest"
    ]


def test_images_missing_properties_are_safe() -> None:
    props: dict[str, Any]
    for props in (
        {},
        {"spec": {}},
        {"spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}},
    ):
        assert violations(rules.images_pinned, resource_args(DEPLOYMENT, props)) == []
    assert (
        violations(rules.images_pinned, resource_args(CHART, {"chart": "x", "version": "1.0.0"}))
        == []
    )
    assert violations(rules.images_pinned, resource_args("kubernetes:core/v1:ConfigMap", {})) == []


def test_an_image_known_only_after_deploy_is_left_to_the_engine() -> None:
    # The engine turns UnknownValueError into an advisory "cannot run during preview".
    args = resource_args(DEPLOYMENT, deployment(container(UNKNOWN_STRING_VALUE)))
    with pytest.raises(UnknownValueError):
        violations(rules.images_pinned, args)


def test_a_name_known_only_after_deploy_does_not_hide_a_violation() -> None:
    props = deployment(container("ghcr.io/acme/api:latest", name=UNKNOWN_STRING_VALUE))
    props["metadata"] = {"name": UNKNOWN_STRING_VALUE, "namespace": UNKNOWN_STRING_VALUE}
    assert violations(rules.images_pinned, resource_args(DEPLOYMENT, props)) == [
        "apps/Deployment containers[0]: image 'ghcr.io/acme/api:latest' uses the mutable tag latest"
    ]


def test_helm_values_images_pinned_pass() -> None:
    values = {
        "global": {"hub": "docker.io/istio", "tag": "1.30.4"},
        "pilot": {"image": "pilot"},  # bare name: the chart adds its hub and pinned tag
        "image": {"repository": "quay.io/kiali/kiali", "tag": "v2.29.0"},
        "gateway": {"image": "auto"},
        "sidecars": [{"image": "ghcr.io/acme/agent:0.3.1"}],
        "deployment": {"image_version": ""},  # empty: the chart's own appVersion
    }
    args = resource_args(CHART, {"chart": "any", "version": "1.0.0", "values": values})
    assert violations(rules.images_pinned, args) == []


def test_helm_values_unpinned_images_fail() -> None:
    values = {
        "global": {"tag": "latest"},
        "deployment": {"image_version": "latest"},
        "sidecars": [{"image": "ghcr.io/acme/agent"}],
        "proxy": {"image": "ghcr.io/acme/proxy:latest"},
    }
    args = resource_args(CHART, {"chart": "kiali-server", "version": "2.29.0", "values": values})
    assert violations(rules.images_pinned, args) == [
        "Helm chart kiali-server: values.global.tag: tag 'latest' is mutable",
        "Helm chart kiali-server: values.deployment.image_version: tag 'latest' is mutable",
        "Helm chart kiali-server: values.sidecars[0].image: image 'ghcr.io/acme/agent' "
        "has no tag, so it resolves to latest",
        "Helm chart kiali-server: values.proxy.image: image 'ghcr.io/acme/proxy:latest' "
        "uses the mutable tag latest",
    ]


_NAME = st.from_regex(r"[a-z][a-z0-9-]{0,10}(/[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)
_TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True).filter(
    lambda t: t.lower() != "latest"
)


@settings(max_examples=40, deadline=None)
@given(registry=st.sampled_from(["", "ghcr.io/", "registry.local:5000/"]), name=_NAME, tag=_TAG)
def test_image_problem_property(registry: str, name: str, tag: str) -> None:
    reference = f"{registry}{name}"
    assert rules.image_problem(f"{reference}:{tag}") is None
    assert rules.image_problem(f"{reference}@sha256:{'0' * 64}") is None
    if reference != rules.ISTIO_INJECTED_IMAGE:
        assert rules.image_problem(reference) == "has no tag, so it resolves to latest"
    assert rules.image_problem(f"{reference}:latest") == "uses the mutable tag latest"


# --- requests and limits ------------------------------------------------------------------


def test_containers_with_requests_and_limits_pass() -> None:
    args = resource_args(DEPLOYMENT, deployment(container(), init=[container()]))
    assert violations(rules.container_resources, args) == []


def test_missing_limits_fail() -> None:
    partial = container(
        resources={"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
    )
    args = resource_args(DEPLOYMENT, deployment(partial))
    assert violations(rules.container_resources, args) == [
        "apps/Deployment shop/api containers[app]: missing resources.limits.cpu"
    ]


def test_init_container_without_resources_fails() -> None:
    bare = {"name": "migrate", "image": "ghcr.io/acme/migrate:1.0.0"}
    args = resource_args("kubernetes:apps/v1:StatefulSet", deployment(container(), init=[bare]))
    assert violations(rules.container_resources, args) == [
        "apps/StatefulSet shop/api initContainers[migrate]: missing resources.requests.cpu, "
        "resources.requests.memory, resources.limits.cpu, resources.limits.memory"
    ]


def test_pod_without_resources_fails() -> None:
    pod = {"metadata": {"name": "debug"}, "spec": {"containers": [{"image": "busybox:1.36"}]}}
    assert violations(rules.container_resources, resource_args("kubernetes:core/v1:Pod", pod)) == [
        "Pod debug containers[0]: missing resources.requests.cpu, resources.requests.memory, "
        "resources.limits.cpu, resources.limits.memory"
    ]


def test_resources_missing_properties_are_safe() -> None:
    props: dict[str, Any]
    for props in ({}, {"spec": None}, {"spec": {"template": {}}}):
        assert violations(rules.container_resources, resource_args(DEPLOYMENT, props)) == []
    service = {"spec": {"containers": [{"name": "x"}]}}
    assert (
        violations(rules.container_resources, resource_args("kubernetes:core/v1:Service", service))
        == []
    )


# --- mesh-wide STRICT mTLS ----------------------------------------------------------------

PEER_AUTHENTICATION = "kubernetes:security.istio.io/v1:PeerAuthentication"


def peer_authentication(
    namespace: str = "istio-system", mode: str | None = "STRICT", **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = dict(spec)
    if mode is not None:
        body["mtls"] = {"mode": mode}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": body,
    }


NO_STRICT = "no PeerAuthentication without selector in istio-system sets mtls.mode STRICT"


def test_mesh_wide_strict_peer_authentication_passes() -> None:
    workload_exception = peer_authentication(
        "legacy", "PERMISSIVE", selector={"matchLabels": {"app": "old"}}
    )
    args = stack_args(
        [(PEER_AUTHENTICATION, peer_authentication()), (PEER_AUTHENTICATION, workload_exception)]
    )
    assert violations(rules.mesh_strict_mtls, args) == []


def test_beta_api_and_empty_selector_count_as_mesh_wide() -> None:
    beta = "kubernetes:security.istio.io/v1beta1:PeerAuthentication"
    args = stack_args([(beta, peer_authentication(selector={"matchLabels": {}}))])
    assert violations(rules.mesh_strict_mtls, args) == []


def test_missing_mesh_wide_strict_fails() -> None:
    assert violations(rules.mesh_strict_mtls, stack_args([])) == [NO_STRICT]
    elsewhere = stack_args([(PEER_AUTHENTICATION, peer_authentication("shop"))])
    assert violations(rules.mesh_strict_mtls, elsewhere) == [NO_STRICT]
    selected = peer_authentication(selector={"matchLabels": {"app": "api"}})
    assert violations(rules.mesh_strict_mtls, stack_args([(PEER_AUTHENTICATION, selected)])) == [
        NO_STRICT
    ]


def test_mesh_wide_permissive_fails() -> None:
    args = stack_args([(PEER_AUTHENTICATION, peer_authentication(mode="PERMISSIVE"))])
    assert violations(rules.mesh_strict_mtls, args) == [
        "mesh-wide PeerAuthentication r0 sets mtls.mode PERMISSIVE, not STRICT",
        NO_STRICT,
    ]


def test_peer_authentication_without_spec_is_safe() -> None:
    bare = {"metadata": {"name": "default", "namespace": "istio-system"}}
    assert violations(rules.mesh_strict_mtls, stack_args([(PEER_AUTHENTICATION, bare)])) == [
        "mesh-wide PeerAuthentication r0 sets mtls.mode UNSET, not STRICT",
        NO_STRICT,
    ]


def test_root_namespace_is_configurable_and_defaults_to_the_program_s() -> None:
    assert rules.DEFAULT_ROOT_NAMESPACE == ISTIO_NAMESPACE
    args = stack_args(
        [(PEER_AUTHENTICATION, peer_authentication("mesh-root"))], {"rootNamespace": "mesh-root"}
    )
    assert violations(rules.mesh_strict_mtls, args) == []


# --- authorization ------------------------------------------------------------------------

AUTHORIZATION_POLICY = "kubernetes:security.istio.io/v1:AuthorizationPolicy"


def authorization_policy(spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "policy", "namespace": "shop"},
        "spec": spec,
    }


ALLOWS_EVERYTHING = (
    "security.istio.io/AuthorizationPolicy shop/policy: rules[{}] allows every request"
)


@pytest.mark.parametrize(
    "spec",
    [
        {},  # ALLOW with no rules matches nothing: deny all
        {"action": "DENY", "rules": [{}]},
        {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}]}]},
        {"action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
        {"rules": [{"when": [{"key": "request.auth.claims[role]", "values": ["admin"]}]}]},
    ],
)
def test_narrow_authorization_policies_pass(spec: Any) -> None:
    args = resource_args(AUTHORIZATION_POLICY, authorization_policy(spec))
    assert violations(rules.no_allow_all_authorization, args) == []


@pytest.mark.parametrize(
    ("spec", "index"),
    [
        ({"rules": [{}]}, 0),
        ({"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}, {}]}, 1),
        ({"rules": [{"from": [{"source": {}}], "to": [{}], "when": []}]}, 0),
        ({"rules": [{"from": [{"source": {"principals": []}}]}]}, 0),
    ],
)
def test_allow_all_authorization_policies_fail(spec: Any, index: int) -> None:
    args = resource_args(AUTHORIZATION_POLICY, authorization_policy(spec))
    assert violations(rules.no_allow_all_authorization, args) == [ALLOWS_EVERYTHING.format(index)]


def test_authorization_policy_without_spec_is_safe() -> None:
    assert (
        violations(rules.no_allow_all_authorization, resource_args(AUTHORIZATION_POLICY, {})) == []
    )


# --- Kiali --------------------------------------------------------------------------------


def kiali_chart(strategy: str | None) -> dict[str, Any]:
    values = {"auth": {"strategy": strategy}} if strategy else {}
    return {"chart": "kiali-server", "version": "2.29.0", "values": values}


def test_kiali_with_login_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rules.STACK_ENV, "us-east-1")
    for strategy in ("token", "openid", None):
        assert (
            violations(rules.kiali_not_anonymous, resource_args(CHART, kiali_chart(strategy))) == []
        )


def test_anonymous_kiali_fails_outside_allowed_stacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rules.STACK_ENV, "us-east-1")
    args = resource_args(CHART, kiali_chart("anonymous"), config={"allowedStacks": ["dev"]})
    assert violations(rules.kiali_not_anonymous, args) == [
        "values.auth.strategy is anonymous on stack us-east-1, which is not in allowedStacks"
    ]


@pytest.mark.parametrize("stack", ["dev", "acme/meshstack/dev"])
def test_anonymous_kiali_passes_on_an_allowed_stack(
    monkeypatch: pytest.MonkeyPatch, stack: str
) -> None:
    monkeypatch.setenv(rules.STACK_ENV, stack)
    args = resource_args(CHART, kiali_chart("anonymous"), config={"allowedStacks": ["dev"]})
    assert violations(rules.kiali_not_anonymous, args) == []


def test_kiali_custom_resource_and_unknown_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rules.STACK_ENV, raising=False)
    kiali = {"metadata": {"name": "kiali"}, "spec": {"auth": {"strategy": "anonymous"}}}
    args = resource_args("kubernetes:kiali.io/v1alpha1:Kiali", kiali)
    assert violations(rules.kiali_not_anonymous, args) == [
        "spec.auth.strategy is anonymous on stack (unknown), which is not in allowedStacks"
    ]


def test_kiali_rule_ignores_other_charts_and_missing_values() -> None:
    other = {"chart": "jaeger", "values": {"auth": {"strategy": "anonymous"}}}
    assert violations(rules.kiali_not_anonymous, resource_args(CHART, other)) == []
    assert (
        violations(rules.kiali_not_anonymous, resource_args(CHART, {"chart": "kiali/kiali-server"}))
        == []
    )
    assert violations(rules.kiali_not_anonymous, resource_args(CHART, {})) == []


# --- Helm chart versions ------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.30.4", "v2.29.0", "1.0.0-rc.1", "0.38.0+build.5"])
def test_exact_chart_versions_pass(version: str) -> None:
    args = resource_args(CHART, {"chart": "istiod", "version": version})
    assert violations(rules.helm_chart_version_pinned, args) == []


@pytest.mark.parametrize(
    "version", ["^1.2.0", "~1", ">=1.0.0", "*", "1.x", "1.2", "1.2.3 || 1.3.0"]
)
def test_chart_version_ranges_fail(version: str) -> None:
    args = resource_args("kubernetes:helm.sh/v3:Release", {"chart": "istiod", "version": version})
    assert violations(rules.helm_chart_version_pinned, args) == [
        f"Helm chart istiod version {version!r} is a range, not one version"
    ]


def test_missing_chart_version_fails() -> None:
    for props in ({"chart": "istiod"}, {"chart": "istiod", "version": ""}):
        assert violations(rules.helm_chart_version_pinned, resource_args(CHART, props)) == [
            "Helm chart istiod has no version, so the newest is installed"
        ]


def test_a_chart_v4_without_inputs_is_the_real_engines_remote_component_not_a_missing_version() -> (
    None
):
    """A real `pulumi preview` gives analyzers Chart v4 as the provider registers it, with no
    properties at all: reporting "no version" there failed every real preview."""
    chart_v4 = resource_args(CHART, {})
    assert rules.engine_hides_chart_inputs(chart_v4)
    assert violations(rules.helm_chart_version_pinned, chart_v4) == []
    release = resource_args("kubernetes:helm.sh/v3:Release", {})
    assert not rules.engine_hides_chart_inputs(release)
    assert violations(rules.helm_chart_version_pinned, release) == [
        "Helm chart None has no version, so the newest is installed"
    ]


def test_charts_from_files_need_no_version() -> None:
    for chart in ("./charts/app", "https://example.com/charts/app-1.0.0.tgz"):
        assert (
            violations(rules.helm_chart_version_pinned, resource_args(CHART, {"chart": chart}))
            == []
        )
    assert violations(rules.helm_chart_version_pinned, resource_args(DEPLOYMENT, {})) == []


# --- providers ----------------------------------------------------------------------------


def test_explicit_provider_passes() -> None:
    args = resource_args(DEPLOYMENT, {}, provider_resource=provider())
    assert violations(rules.no_default_provider, args) == []


@pytest.mark.parametrize("name", ["default", "default_4_34_2"])
def test_default_provider_fails(name: str) -> None:
    args = resource_args(DEPLOYMENT, {}, provider_resource=provider(name))
    assert violations(rules.no_default_provider, args) == [
        f"uses the default Kubernetes provider {name}"
    ]


def test_resources_without_provider_are_safe() -> None:
    component = ResourceValidationArgs(CHART, {}, "urn", "c", engine_options(), None)
    assert violations(rules.no_default_provider, component) == []
    other = resource_args(
        "random:index/randomPassword:RandomPassword", {}, provider_resource=provider("default")
    )
    assert violations(rules.no_default_provider, other) == []


# --- retention ----------------------------------------------------------------------------

NAMESPACE = "kubernetes:core/v1:Namespace"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"


def offline_options(*, retain: bool, protect: bool = False) -> OfflineResourceOptions:
    return OfflineResourceOptions(protect=protect, retain_on_delete=retain, parent=None)


def test_retained_namespaces_and_crds_pass() -> None:
    for resource_type in (NAMESPACE, CRD):
        args = resource_args(
            resource_type, {"metadata": {"name": "x"}}, opts=offline_options(retain=True)
        )
        assert violations(rules.crds_and_namespaces_retained, args) == []


def test_protect_and_keep_annotation_count_as_retained() -> None:
    protected = resource_args(NAMESPACE, {}, opts=engine_options(protect=True))
    assert violations(rules.crds_and_namespaces_retained, protected) == []
    kept = {"metadata": {"name": "x", "annotations": {"helm.sh/resource-policy": "keep"}}}
    assert violations(rules.crds_and_namespaces_retained, resource_args(CRD, kept)) == []


def test_deletable_namespace_and_crd_fail() -> None:
    namespace = resource_args(
        NAMESPACE, {"metadata": {"name": "shop"}}, opts=offline_options(retain=False)
    )
    assert violations(rules.crds_and_namespaces_retained, namespace) == [
        "Namespace shop is deleted with the stack: set retainOnDelete"
    ]
    crd = {"metadata": {"name": "canaries.flagger.app"}}
    args = resource_args(CRD, crd, opts=offline_options(retain=False))
    assert violations(rules.crds_and_namespaces_retained, args) == [
        "apiextensions.k8s.io/CustomResourceDefinition canaries.flagger.app is deleted with "
        "the stack: set retainOnDelete"
    ]


def test_retention_unknown_to_the_engine_is_not_applicable() -> None:
    args = resource_args(NAMESPACE, {"metadata": {"name": "shop"}})
    with pytest.raises(_NotApplicableError) as raised:
        violations(rules.crds_and_namespaces_retained, args)
    assert raised.value.reason == "the engine does not pass retainOnDelete to policy packs"
    other = resource_args("kubernetes:core/v1:ConfigMap", {}, opts=offline_options(retain=False))
    assert violations(rules.crds_and_namespaces_retained, other) == []


# --- the pack -----------------------------------------------------------------------------


def test_pack_has_every_rule_once_and_all_are_mandatory() -> None:
    policies = rules.build_policies()
    assert [p.name for p in policies] == [
        "images-pinned",
        "container-resources",
        "mesh-strict-mtls",
        "no-allow-all-authorization",
        "kiali-not-anonymous",
        "helm-chart-version-pinned",
        "no-default-provider",
        "crds-and-namespaces-retained",
    ]
    assert {p.enforcement_level for p in policies} == {EnforcementLevel.MANDATORY}


def test_pack_config_file_matches_the_policies_config_schemas() -> None:
    config = json.loads((PROJECT_DIR / "policy" / "config.json").read_text())
    schemas = {p.name: p.config_schema for p in rules.build_policies() if p.config_schema}
    assert set(config) == set(schemas)
    for name, values in config.items():
        schema = schemas[name]
        assert schema is not None
        jsonschema.validate(
            values,
            {"type": "object", "properties": schema.properties, "additionalProperties": False},
        )


def kiali_server_config(strategy: str) -> dict[str, Any]:
    """The ConfigMap the kiali-server chart renders: what a real preview shows of Kiali."""
    return {
        "metadata": {
            "name": "kiali",
            "namespace": "observability",
            "labels": {"app.kubernetes.io/name": "kiali", "helm.sh/chart": "kiali-server-2.29.0"},
        },
        "data": {"config.yaml": f"auth:\n  strategy: {strategy}\nserver:\n  port: 20001\n"},
    }


def test_anonymous_kiali_is_caught_in_the_rendered_server_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(rules.STACK_ENV, "us-east-1")
    config_map = "kubernetes:core/v1:ConfigMap"
    args = resource_args(config_map, kiali_server_config("anonymous"))
    assert violations(rules.kiali_not_anonymous, args) == [
        "ConfigMap observability/kiali config.yaml auth.strategy is anonymous on stack "
        "us-east-1, which is not in allowedStacks"
    ]
    openid = resource_args(config_map, kiali_server_config("openid"))
    assert violations(rules.kiali_not_anonymous, openid) == []
    other = kiali_server_config("anonymous") | {"metadata": {"name": "x", "labels": {}}}
    assert violations(rules.kiali_not_anonymous, resource_args(config_map, other)) == []
    broken = kiali_server_config("anonymous") | {"data": {"config.yaml": "auth: [unclosed"}}
    assert violations(rules.kiali_not_anonymous, resource_args(config_map, broken)) == []
