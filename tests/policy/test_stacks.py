"""The whole policy pack over offline renders: every stack passes, every insecure variant fails.

`policy.offline.evaluate` feeds a render to the pack as the engine would during a preview,
with the pack config CI uses (`policy/config.json`). The insecure variants are mutated
copies of renders: of the real stacks where they already hold the object in question, and
of a small compliant program (Istio plus one object of each kind the rules look at) for
the kinds other components will add to the stacks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from components.helm import install_chart
from components.istio.component import IstioMesh
from components.settings_types import ChartSource
from components.versions import KIALI_SERVER
from policy.offline import Finding, Report, evaluate
from tests.conftest import STACKS, make_settings, run_with_provider
from tools.charts import published_chart
from tools.render import Registration, Render

PACK_CONFIG: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[2] / "policy" / "config.json").read_text()
)
IMAGE = "ghcr.io/acme/api:1.4.2"


def check(render: Render) -> Report:
    return evaluate(render, PACK_CONFIG)


# --- the real stacks ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_has_no_violations(stack_renders: dict[str, Render], stack: str) -> None:
    assert check(stack_renders[stack]).violations == []


@pytest.mark.parametrize("stack", STACKS)
def test_every_rule_decides_every_resource_offline(
    stack_renders: dict[str, Render], stack: str
) -> None:
    report = check(stack_renders[stack])
    assert report.unknown == [], "a rule read a value known only after deploy"
    assert report.not_applicable == [], "the render carries everything the rules need"


def first(render: Render, type_suffix: str, name_suffix: str = "") -> Registration:
    return next(
        r
        for r in render.registrations
        if r.type.endswith(type_suffix) and r.name.endswith(name_suffix)
    )


def mutated(render: Render, mutate: Callable[[Render], None]) -> Render:
    copied = copy.deepcopy(render)
    mutate(copied)
    return copied


@pytest.mark.parametrize("stack", STACKS)
def test_stack_variants_are_caught(stack_renders: dict[str, Render], stack: str) -> None:
    render = stack_renders[stack]

    def unpin_istiod(r: Render) -> None:
        first(r, ":Chart", "-istiod").inputs["version"] = "~1.30"

    report = check(mutated(render, unpin_istiod))
    istiod_chart = first(render, ":Chart", "-istiod").inputs["chart"]  # as the source names it
    assert [v.message for v in report.of("helm-chart-version-pinned")] == [
        f"Helm chart {istiod_chart} version '~1.30' is a range, not one version"
    ]

    def istio_tag_latest(r: Render) -> None:
        first(r, ":Chart", "-istiod").inputs["values"]["global"]["tag"] = "latest"

    report = check(mutated(render, istio_tag_latest))
    assert [v.message for v in report.of("images-pinned")] == [
        f"Helm chart {istiod_chart}: values.global.tag: tag 'latest' is mutable"
    ]

    def default_provider(r: Render) -> None:
        first(r, ":Namespace", "-istio-system").provider = ""

    report = check(mutated(render, default_provider))
    namespace = first(render, ":Namespace", "-istio-system")
    assert report.of("no-default-provider") == [
        Finding(
            "no-default-provider", namespace.urn, "uses the default Kubernetes provider default"
        )
    ]

    def deletable_namespace(r: Render) -> None:
        first(r, ":Namespace", "-istio-system").retain_on_delete = False

    report = check(mutated(render, deletable_namespace))
    assert report.of("crds-and-namespaces-retained") == [
        Finding(
            "crds-and-namespaces-retained",
            namespace.urn,
            "Namespace istio-system is deleted with the stack: set retainOnDelete",
        )
    ]


# --- a compliant program with every kind the rules look at ----------------------------------

RESOURCES = {
    "requests": {"cpu": "100m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "256Mi"},
}


# The Deployment and the CRD are registered through CustomResource: same type token
# (`kubernetes:apps/v1:Deployment`) and same camelCase inputs as the typed classes, without
# making mypy resolve the typed classes' large overloads.
API_POD_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "api"}},
    "spec": {
        "initContainers": [{"name": "init", "image": IMAGE, "resources": RESOURCES}],
        "containers": [{"name": "api", "image": IMAGE, "resources": RESOURCES}],
    },
}
CRD_SPEC: dict[str, Any] = {
    "group": "acme.io",
    "names": {"kind": "Widget", "plural": "widgets"},
    "scope": "Namespaced",
    "versions": [{"name": "v1", "served": True, "storage": True}],
}


def compliant_program(opts: pulumi.ResourceOptions) -> None:
    mesh = IstioMesh(
        "m", make_settings(services=[{"name": "api", "namespace": "shop"}]).istio, opts=opts
    )
    istio_cr = mesh.custom_resource_options(mesh)
    mtls_spec: dict[str, Any] = {"mtls": {"mode": "STRICT"}}
    k8s.apiextensions.CustomResource(
        "m-mtls",
        api_version="security.istio.io/v1",
        kind="PeerAuthentication",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="default", namespace="istio-system"),
        spec=mtls_spec,
        opts=istio_cr,
    )
    deny_all_spec: dict[str, Any] = {}
    k8s.apiextensions.CustomResource(
        "m-deny-all",
        api_version="security.istio.io/v1",
        kind="AuthorizationPolicy",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="deny-all", namespace="shop"),
        spec=deny_all_spec,
        opts=istio_cr,
    )
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "api"}},
        "template": API_POD_TEMPLATE,
    }
    k8s.apiextensions.CustomResource(
        "m-api",
        api_version="apps/v1",
        kind="Deployment",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="api", namespace="shop"),
        spec=deployment_spec,
        opts=pulumi.ResourceOptions(parent=mesh),
    )
    k8s.apiextensions.CustomResource(
        "m-crd",
        api_version="apiextensions.k8s.io/v1",
        kind="CustomResourceDefinition",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="widgets.acme.io"),
        spec=CRD_SPEC,
        opts=pulumi.ResourceOptions(parent=mesh, retain_on_delete=True),
    )
    kiali_values: dict[str, Any] = {"auth": {"strategy": "token"}}
    install_chart(
        "m-kiali",
        KIALI_SERVER,
        release="kiali",
        namespace="observability",
        values=kiali_values,
        parent=mesh,
        source=ChartSource(),
    )


@pytest.fixture(scope="module")
def program_render() -> Render:
    return run_with_provider(compliant_program)


def test_compliant_program_has_no_violations(program_render: Render) -> None:
    report = check(program_render)
    assert report.violations == []
    assert report.unknown == []
    assert report.not_applicable == []
    # Every rule had something to look at.
    types = {r.type for r in program_render.registrations}
    assert {
        "kubernetes:security.istio.io/v1:PeerAuthentication",
        "kubernetes:security.istio.io/v1:AuthorizationPolicy",
        "kubernetes:apps/v1:Deployment",
        "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
        "kubernetes:core/v1:Namespace",
        "kubernetes:helm.sh/v4:Chart",
    } <= types


def _pod_spec(r: Render) -> dict[str, Any]:
    spec: dict[str, Any] = first(r, ":Deployment").inputs["spec"]["template"]["spec"]
    return spec


def _latest_image(r: Render) -> None:
    _pod_spec(r)["containers"][0]["image"] = "ghcr.io/acme/api:latest"


def _drop_init_limits(r: Render) -> None:
    del _pod_spec(r)["initContainers"][0]["resources"]["limits"]


def _remove_strict_mtls(r: Render) -> None:
    r.registrations.remove(first(r, ":PeerAuthentication"))


def _permissive_mtls(r: Render) -> None:
    first(r, ":PeerAuthentication").inputs["spec"]["mtls"]["mode"] = "PERMISSIVE"


def _allow_all(r: Render) -> None:
    first(r, ":AuthorizationPolicy").inputs["spec"] = {"action": "ALLOW", "rules": [{}]}


def _anonymous_kiali(r: Render) -> None:
    first(r, ":Chart", "-kiali").inputs["values"]["auth"]["strategy"] = "anonymous"


def _unpinned_kiali(r: Render) -> None:
    del first(r, ":Chart", "-kiali").inputs["version"]


def _deployment_on_default_provider(r: Render) -> None:
    first(r, ":Deployment").provider = ""


def _deletable_crd(r: Render) -> None:
    first(r, ":CustomResourceDefinition").retain_on_delete = False


def _deletable_namespace(r: Render) -> None:
    first(r, ":Namespace", "-ns-shop").retain_on_delete = False


VARIANTS = {
    "latest image": (
        _latest_image,
        "images-pinned",
        "apps/Deployment shop/api containers[api]: image 'ghcr.io/acme/api:latest' "
        "uses the mutable tag latest",
    ),
    "no limits": (
        _drop_init_limits,
        "container-resources",
        "apps/Deployment shop/api initContainers[init]: missing resources.limits.cpu, "
        "resources.limits.memory",
    ),
    "no STRICT mTLS": (
        _remove_strict_mtls,
        "mesh-strict-mtls",
        "no PeerAuthentication without selector in istio-system sets mtls.mode STRICT",
    ),
    "allow-all policy": (
        _allow_all,
        "no-allow-all-authorization",
        "security.istio.io/AuthorizationPolicy shop/deny-all: rules[0] allows every request",
    ),
    "anonymous Kiali": (
        _anonymous_kiali,
        "kiali-not-anonymous",
        "values.auth.strategy is anonymous on stack test, which is not in allowedStacks",
    ),
    "unpinned chart": (
        _unpinned_kiali,
        "helm-chart-version-pinned",
        "Helm chart kiali-server has no version, so the newest is installed",
    ),
    "default provider": (
        _deployment_on_default_provider,
        "no-default-provider",
        "uses the default Kubernetes provider default",
    ),
    "deletable CRD": (
        _deletable_crd,
        "crds-and-namespaces-retained",
        "apiextensions.k8s.io/CustomResourceDefinition widgets.acme.io is deleted with the "
        "stack: set retainOnDelete",
    ),
    "deletable namespace": (
        _deletable_namespace,
        "crds-and-namespaces-retained",
        "Namespace shop is deleted with the stack: set retainOnDelete",
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_insecure_variant_is_caught_by_its_rule(program_render: Render, variant: str) -> None:
    mutate, policy, message = VARIANTS[variant]
    report = check(mutated(program_render, mutate))
    assert [(v.policy, v.message) for v in report.violations] == [(policy, message)]


def test_permissive_mesh_wide_mtls_is_caught(program_render: Render) -> None:
    report = check(mutated(program_render, _permissive_mtls))
    assert [v.message for v in report.of("mesh-strict-mtls")] == [
        "mesh-wide PeerAuthentication m-mtls sets mtls.mode PERMISSIVE, not STRICT",
        "no PeerAuthentication without selector in istio-system sets mtls.mode STRICT",
    ]


def test_pack_config_allows_anonymous_kiali_on_listed_stacks(program_render: Render) -> None:
    render = mutated(program_render, _anonymous_kiali)
    report = evaluate(render, {"kiali-not-anonymous": {"allowedStacks": ["test"]}})
    assert report.violations == []


def test_violations_name_the_resource(program_render: Render) -> None:
    report = check(mutated(program_render, _latest_image))
    assert [v.urn for v in report.violations] == [first(program_render, ":Deployment").urn]


def test_compliant_program_objects_pass_the_strict_validators(program_render: Render) -> None:
    # The compliant baseline must be a valid program, or a variant could be "caught" for
    # the wrong reason.
    from tools.verify import validate_helm_values, validate_manifest

    problems = [p for obj in program_render.kubernetes_objects() for p in validate_manifest(obj)]
    kiali = next(
        c for c in program_render.helm_charts() if published_chart(c) == KIALI_SERVER.chart
    )
    problems += validate_helm_values("kiali-server", kiali["values"])
    assert problems == []
