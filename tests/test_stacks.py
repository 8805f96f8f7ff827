"""Every region stack renders offline, and everything it renders passes the real schemas.

Custom resources are checked against the upstream CRDs (strict, with CEL rules), core
objects with kubernetes-validate (strict), Helm values against each chart's defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.istio.component import NOT_APPLIED_ADDRESS
from components.versions import ISTIO_VERSION
from tests.conftest import STACKS, default_istiod, waits_for
from tools.charts import published_chart
from tools.manifests import SECRET_PLACEHOLDER
from tools.render import PROJECT_DIR, Render, render_stack, write_render
from tools.verify import validate_helm_values, validate_manifest
from tools.verify.helm_values import CHART_REFERENCE_DIRS


def _checkable(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without top-level fields that are Pulumi secrets: before deploy a
    Secret's `stringData` is only `[secret]`, which no schema can check."""
    return {k: v for k, v in obj.items() if v != SECRET_PLACEHOLDER}


@pytest.mark.parametrize("stack", STACKS)
def test_every_object_passes_its_schema(stack_renders: dict[str, Render], stack: str) -> None:
    objects = stack_renders[stack].kubernetes_objects()
    assert objects, "a stack renders at least its namespaces"
    errors = [e for obj in objects for e in validate_manifest(_checkable(obj))]
    assert errors == []


@pytest.mark.parametrize("stack", STACKS)
def test_every_helm_value_exists_in_its_chart(stack_renders: dict[str, Render], stack: str) -> None:
    charts = stack_renders[stack].helm_charts()
    assert charts
    for chart in charts:
        # Whatever the chart source (upstream, OCI mirror, directory): the published chart.
        key = published_chart(chart)
        assert key in CHART_REFERENCE_DIRS, f"no reference defaults for chart {key}"
        assert validate_helm_values(CHART_REFERENCE_DIRS[key], chart["values"]) == []


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_resource_uses_the_stack_provider(
    stack_renders: dict[str, Render], stack: str
) -> None:
    registrations = stack_renders[stack].registrations
    providers = [r for r in registrations if r.type == "pulumi:providers:kubernetes"]
    assert [p.name for p in providers] == [f"{stack}-kubernetes"]
    for r in registrations:
        if r.type.startswith("kubernetes:"):
            assert r.provider == providers[0].urn, f"{r.name} is not on the stack's provider"


MESH_APIS = (
    "networking.istio.io/",
    "security.istio.io/",
    "telemetry.istio.io/",
    "monitoring.coreos.com/",
    "flagger.app/",
)
"""API groups whose objects istiod validates (webhook) or whose CRDs come with the mesh's
charts: creating one before istiod is up fails or escapes validation."""


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_is_a_child_of_the_region(
    stack_renders: dict[str, Render], stack: str
) -> None:
    # Parent chains make `pulumi preview` show one tree per area and keep children's names
    # derived from their component's name; a resource outside the tree was created with the
    # caller's options merged in or without `parent=self`.
    registrations = stack_renders[stack].registrations
    by_urn = {r.urn: r for r in registrations}
    (region,) = [r for r in registrations if r.type == "meshstack:region:RegionMesh"]
    for r in registrations:
        if r.type.startswith("pulumi:providers:") or r is region:
            continue
        ancestor = r
        while ancestor.parent and ancestor.parent in by_urn and ancestor is not region:
            ancestor = by_urn[ancestor.parent]
        assert ancestor is region, f"{r.name} is outside the RegionMesh tree"


@pytest.mark.parametrize("stack", STACKS)
def test_mesh_custom_resources_wait_for_the_control_plane(
    stack_renders: dict[str, Render], stack: str
) -> None:
    # With revisions through the `default` tag's webhook, which waits for that istiod.
    render = stack_renders[stack]
    istiod = default_istiod(render)
    mesh_objects = [
        r for r in render.registrations if r.type.removeprefix("kubernetes:").startswith(MESH_APIS)
    ]
    assert mesh_objects
    for r in mesh_objects:
        assert istiod.urn in waits_for(render, r.urn), f"{r.name} does not wait for istiod"


@pytest.mark.parametrize("stack", STACKS)
def test_no_two_objects_share_a_kubernetes_identity(
    stack_renders: dict[str, Render], stack: str
) -> None:
    identities = [
        (
            o["apiVersion"].split("/")[0],
            o["kind"],
            o["metadata"].get("namespace"),
            o["metadata"]["name"],
        )
        for o in stack_renders[stack].kubernetes_objects()
    ]
    assert len(identities) == len(set(identities))


@pytest.mark.parametrize("stack", STACKS)
def test_namespaces_and_crds_are_never_deleted(
    stack_renders: dict[str, Render], stack: str
) -> None:
    for r in stack_renders[stack].registrations:
        if r.type in {
            "kubernetes:core/v1:Namespace",
            "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
        }:
            assert r.retain_on_delete, r.name


@pytest.mark.parametrize("stack", STACKS)
def test_stack_outputs_name_what_an_operator_needs(
    stack_renders: dict[str, Render], stack: str
) -> None:
    outputs = stack_renders[stack].outputs
    assert outputs["region"] == stack
    revisions = outputs["istioRevisions"]
    (default,) = [r for r in revisions.values() if "default" in r["tags"]]
    assert outputs["istioVersion"] == default["version"], "the default tag's release"
    assert outputs["versions"]["chart/istiod"] == ISTIO_VERSION
    assert outputs["versions"]["chart/flagger"] == "1.44.0"
    assert all(":" in v for k, v in outputs["versions"].items() if k.startswith("image/"))
    assert outputs["istioNamespace"] == "istio-system"
    assert outputs["ingressGatewayAddress"] == "[unknown: known after deploy]"
    assert outputs["workloadNamespaces"]


def test_render_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_render(render_stack(STACKS[0]), first)
    write_render(render_stack(STACKS[0]), second)
    for name in ("manifests.yaml", "helm.yaml", "resources.json", "outputs.json"):
        assert (first / name).read_text() == (second / name).read_text(), name


@pytest.mark.parametrize("stack", STACKS)
def test_manifests_are_sorted_by_api_version_kind_namespace_name(
    stack_renders: dict[str, Render], stack: str
) -> None:
    objects = stack_renders[stack].kubernetes_objects()
    keys = [
        (o["apiVersion"], o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        for o in objects
    ]
    assert keys == sorted(keys)


def test_resources_json_describes_every_resource(tmp_path: Path) -> None:
    render = render_stack(STACKS[-1])
    write_render(render, tmp_path)
    resources = json.loads((tmp_path / "resources.json").read_text())
    assert len(resources) == len(render.registrations)
    for resource in resources:
        assert set(resource) == {
            "urn",
            "type",
            "name",
            "parent",
            "dependencies",
            "provider",
            "protect",
            "retain_on_delete",
            "read",
        }
    urns = [r["urn"] for r in resources]
    reads = {r["type"] for r in resources if r["read"]}
    assert "kubernetes:core/v1:Service" in reads, "the ingress Service is read, not managed"
    assert len(urns) == len(set(urns)), "URNs are unique"


def _project_copy(tmp_path: Path, stack_config: dict[str, Any]) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        (project / name).write_text((PROJECT_DIR / name).read_text())
    (project / "Pulumi.bad.yaml").write_text(yaml.safe_dump({"config": stack_config}))
    return project


def _render_cli(project: Path, stack: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.render", stack, "--project-dir", str(project)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )


def test_settings_error_exits_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    project = _project_copy(tmp_path, {"meshstack:region": "bad", "meshstack:istiodReplicas": 1})
    result = _render_cli(project, "bad")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "render bad: invalid stack settings: Pulumi.bad.yaml:2: meshstack:istiodReplicas = 1: "
        "must be greater "
        "than or equal to 2"
    ]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (project / "build").exists()


def test_rendering_yaml_needs_no_cluster_and_reads_nothing(tmp_path: Path) -> None:
    """With renderYamlToDirectory the provider refuses a context or kubeconfig beside it, and
    the SDK would fill an unset kubeconfig from $KUBECONFIG: the provider gets an empty one
    and no context even when the stack file names one, and nothing is read from a cluster."""
    project = _project_copy(
        tmp_path,
        {
            "meshstack:region": "lab-1",
            "meshstack:kubeContext": "mesh-lab-1",
            "meshstack:renderYamlToDirectory": "rendered",
        },
    )
    render = render_stack("bad", project)
    provider = next(r for r in render.registrations if r.type == "pulumi:providers:kubernetes")
    assert provider.inputs["kubeconfig"] == ""
    assert "context" not in provider.inputs
    assert provider.inputs["renderYamlToDirectory"] == "rendered"
    assert not any(r.read for r in render.registrations if r.type.startswith("kubernetes:"))
    assert render.outputs["ingressGatewayAddress"] == NOT_APPLIED_ADDRESS


def test_cli_renders_any_stack_file(tmp_path: Path) -> None:
    project = _project_copy(tmp_path, {"meshstack:region": "lab-1"})
    result = _render_cli(project, "bad")
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (project / "build" / "bad").iterdir())
    assert written == [
        "charts.yaml",
        "helm.yaml",
        "manifests.yaml",
        "outputs.json",
        "resources.json",
        "summary.md",
    ]
    summary = (project / "build" / "bad" / "summary.md").read_text()
    assert summary.startswith("## bad: what the stack deploys\n")
    assert summary in result.stdout, "the summary is printed as written"


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_disable_default_kubernetes_provider(stack: str) -> None:
    config = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert config["pulumi:disable-default-providers"] == ["kubernetes"]
    assert config["meshstack:region"] == stack, f"Pulumi.{stack}.yaml: region must be {stack}"
