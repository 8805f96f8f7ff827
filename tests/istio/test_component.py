"""Mock-runtime tests of the components: children, parents, providers, dependencies."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from pulumi.runtime.mocks import MockResourceArgs

from components.istio import values
from components.istio.component import NOT_APPLIED_ADDRESS, UNKNOWN_ADDRESS, IstioMesh
from components.region import RegionMesh
from tests.conftest import RUN_CONTEXT, by_name, make_settings, run_with_provider
from tools import render as render_tool
from tools.manifests import UNKNOWN_PLACEHOLDER
from tools.render import HELM_CHART_TYPE, Render

SETTINGS = make_settings(
    services=[
        {"name": "a", "namespace": "shop"},
        {"name": "b", "namespace": "bank"},
    ]
)


@pytest.fixture(scope="module")
def mesh_render() -> Render:
    return run_with_provider(lambda opts: IstioMesh("m", SETTINGS.istio, opts=opts))


def test_istio_mesh_children(mesh_render: Render) -> None:
    names = by_name(mesh_render)
    assert set(names) == {
        "test-kubernetes",
        "m",
        "m-istio-system",
        "m-ns-shop",
        "m-ns-bank",
        "m-ingress-ns",
        "m-egress-ns",
        "m-base",
        "m-istiod",
        "m-ingress-gateway",
        "m-egress-gateway",
        "m-eastwest-gateway",
        "m-cross-network-gateway",
        "m-ingress-service",
    }
    assert [r.name for r in mesh_render.registrations if r.read] == ["m-ingress-service"]
    # A first preview creates the ingress chart: the read's ID is still unknown, so the
    # engine skips it (a known ID would fail: the Service does not exist yet).
    assert names["m-ingress-service"].read == UNKNOWN_PLACEHOLDER
    component = names["m"]
    for name, registration in names.items():
        if name not in {"m", "test-kubernetes"}:
            assert registration.parent == component.urn, f"{name} is not parented to the mesh"


def test_install_order_base_istiod_then_gateways_in_parallel(mesh_render: Render) -> None:
    names = by_name(mesh_render)
    assert names["m-base"].urn in names["m-istiod"].dependencies
    gateways = {f"m-{key}-gateway" for key in ("ingress", "egress", "eastwest")}
    for gateway in gateways:
        dependencies = names[gateway].dependencies
        assert names["m-istiod"].urn in dependencies, gateway
        assert not {names[other].urn for other in gateways} & set(dependencies), gateway


def test_cross_network_gateway_waits_for_istiod_and_selects_the_east_west_gateway(
    mesh_render: Render,
) -> None:
    names = by_name(mesh_render)
    gateway = names["m-cross-network-gateway"]
    assert names["m-istiod"].urn in gateway.dependencies
    assert gateway.inputs["metadata"] == {
        "name": "cross-network-gateway",
        "namespace": "istio-system",
    }
    assert gateway.inputs["spec"]["selector"] == {"istio": "eastwestgateway"}
    charts = {c["name"]: c for c in mesh_render.helm_charts()}
    eastwest = charts["istio-eastwestgateway"]
    assert eastwest["namespace"] == "istio-system"
    assert eastwest["values"]["networkGateway"] == "network-test-region"


def test_namespaces_are_retained_and_injected(mesh_render: Render) -> None:
    names = by_name(mesh_render)
    for name in ("m-istio-system", "m-ns-shop", "m-ns-bank", "m-ingress-ns", "m-egress-ns"):
        assert names[name].retain_on_delete, name
    assert names["m-ns-shop"].inputs["metadata"]["labels"]["istio-injection"] == "enabled"
    assert names["m-ingress-ns"].inputs["metadata"]["labels"]["istio-injection"] == "enabled"
    assert "istio-injection" not in names["m-istio-system"].inputs["metadata"]["labels"]


def test_charts_are_pinned_and_get_their_values(mesh_render: Render) -> None:
    charts = {c["name"]: c for c in mesh_render.helm_charts()}
    assert set(charts) == {
        "istio-base",
        "istiod",
        "istio-ingressgateway",
        "istio-egressgateway",
        "istio-eastwestgateway",
    }
    for chart in charts.values():
        assert chart["version"] == "1.30.4"
        assert chart["repository"] == "https://blob.istio.io/istio-release/charts"
    assert charts["istiod"]["namespace"] == "istio-system"
    assert charts["istio-ingressgateway"]["namespace"] == "istio-ingress"
    assert charts["istiod"]["values"]["global"]["meshID"] == "meshstack"


def test_egress_and_east_west_gateways_are_optional() -> None:
    settings = make_settings(egressGateway=False, eastWestGateway=False)
    render = run_with_provider(lambda opts: IstioMesh("m", settings.istio, opts=opts))
    names = by_name(render)
    for gone in (
        "m-egress-gateway",
        "m-egress-ns",
        "m-eastwest-gateway",
        "m-cross-network-gateway",
    ):
        assert gone not in names


def test_revision_labels_namespaces_and_names_istiod() -> None:
    settings = make_settings(
        istioRevisions=[{"name": "canary", "version": "1.30.4", "tags": ["default", "prod"]}],
        namespaceRevisions={"s": "prod"},
        services=[{"name": "a", "namespace": "s"}],
    )
    render = run_with_provider(lambda opts: IstioMesh("m", settings.istio, opts=opts))
    names = by_name(render)
    assert names["m-ns-s"].inputs["metadata"]["labels"]["istio.io/rev"] == "prod"
    assert "istio-injection" not in names["m-ns-s"].inputs["metadata"]["labels"]
    assert {c["name"] for c in render.helm_charts()} >= {"istiod-canary"}
    assert "m-istiod" not in names


def test_custom_resources_wait_for_the_control_plane() -> None:
    def build(opts: pulumi.ResourceOptions) -> None:
        mesh = IstioMesh("m", make_settings().istio, opts=opts)
        pulumi.CustomResource(
            "kubernetes:networking.istio.io/v1:Sidecar",
            "probe",
            {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar"},
            opts=mesh.custom_resource_options(parent=mesh),
        )

    names = by_name(run_with_provider(build))
    assert names["m-istiod"].urn in names["probe"].dependencies
    assert names["probe"].parent == names["m"].urn


def test_unknown_workload_namespace_is_an_error() -> None:
    def build(opts: pulumi.ResourceOptions) -> None:
        mesh = IstioMesh("m", make_settings().istio, opts=opts)
        with pytest.raises(KeyError, match="not a workload namespace"):
            mesh.workload_namespace("nope")

    run_with_provider(build)


def test_region_mesh_composes_istio_and_exports_outputs() -> None:
    outputs: dict[str, object] = {}

    def build(opts: pulumi.ResourceOptions) -> None:
        region = RegionMesh("r", SETTINGS, context=RUN_CONTEXT, opts=opts)
        outputs["namespaces"] = region.workload_namespaces
        pulumi.export("namespaces", region.workload_namespaces)
        pulumi.export("version", region.istio_version)
        pulumi.export("address", region.ingress_address)

    render = run_with_provider(build)
    names = by_name(render)
    assert names["r-istio"].parent == names["r"].urn
    assert render.outputs["namespaces"] == ["bank", "shop"]
    assert render.outputs["version"] == "1.30.4"
    assert render.outputs["address"] == "[unknown: known after deploy]"


class DeployedMocks(render_tool.RenderMocks):
    """A run after the charts exist: a Chart's `resources` are its objects' IDs (the program
    turns resource references off, `__main__.py`), and the ingress Service has a load
    balancer address."""

    def __init__(self, address: dict[str, str] | None) -> None:
        super().__init__()
        self.address = address
        self.reads: list[tuple[str, str]] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ == HELM_CHART_TYPE:
            release = f"{args.inputs['namespace']}/{args.inputs['name']}"
            return None, {"resources": [release, f"{release}-sa"]}
        if args.resource_id and args.typ == "kubernetes:core/v1:Service":
            self.reads.append((args.name, args.resource_id))
            ingress = [self.address] if self.address else []
            return args.resource_id, {"status": {"loadBalancer": {"ingress": ingress}}}
        return super().new_resource(args)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ({"ip": "203.0.113.7"}, "203.0.113.7"),
        ({"hostname": "lb.example.com"}, "lb.example.com"),
        (None, UNKNOWN_ADDRESS),
    ],
)
def test_ingress_address_is_read_from_the_gateway_charts_service_by_name(
    monkeypatch: pytest.MonkeyPatch, address: dict[str, str] | None, expected: str
) -> None:
    """The one chart object the program reads: the ingress gateway's Service, which the
    istio-gateway chart names after its release, read by `<namespace>/<release>` once the
    chart's objects exist (a first preview, where they do not, is the test above)."""
    mocks = DeployedMocks(address)
    monkeypatch.setattr(render_tool, "RenderMocks", lambda _references=None: mocks)

    def build(opts: pulumi.ResourceOptions) -> None:
        region = RegionMesh("r", SETTINGS, context=RUN_CONTEXT, opts=opts)
        pulumi.export("address", region.ingress_address)

    render = run_with_provider(build)
    assert mocks.reads == [
        ("r-istio-ingress-service", f"{values.INGRESS.namespace}/{values.INGRESS.release}")
    ]
    assert render.outputs["address"] == expected


def test_without_a_cluster_the_ingress_address_is_not_read() -> None:
    """With `renderYamlToDirectory` the provider has no cluster and refuses every read, so
    the mesh reads nothing and says why the address is absent."""

    def build(opts: pulumi.ResourceOptions) -> None:
        mesh = IstioMesh("m", SETTINGS.istio, applied=False, opts=opts)
        pulumi.export("address", mesh.ingress_address)

    render = run_with_provider(build)
    assert [r.name for r in render.registrations if r.read] == []
    assert render.outputs["address"] == NOT_APPLIED_ADDRESS
