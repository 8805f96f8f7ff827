"""Full render: every Helm chart expanded with the pinned Helm and checked like the program's
own objects (schemas, policy pack, ownership, secrets, effective values), on every stack."""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import stat
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from components.helm import chart_reference
from components.istio.values import INGRESS
from components.observability.kiali_values import (
    SIGNING_KEY_ITEM,
    SIGNING_KEY_REFERENCE,
    SIGNING_KEY_SECRET,
)
from components.settings_types import ChartSource
from components.traffic.delivery_specs import LOADTESTER_RESOURCES
from components.versions import (
    FLAGGER_LOADTESTER,
    ISTIO_BASE,
    ISTIO_VERSION,
    KIALI_SERVER,
    istio_charts,
)
from tests.conftest import settings_error
from tools import charts, install_helm
from tools import render as render_tool
from tools.manifests import SECRET_PLACEHOLDER, UNKNOWN_PLACEHOLDER
from tools.render import Render, render_stack
from tools.simulate import registry as simulate_registry
from tools.verify import charts as checks
from tools.verify.helm_values import REFERENCE_CHART_DIRS

PROJECT_DIR = Path(__file__).resolve().parents[1]
STACKS = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml")
    for p in PROJECT_DIR.glob("Pulumi.*.yaml")
    if p.name.count(".") == 2
)

Expanded = dict[str, tuple[Render, list[charts.ChartObjects]]]


@pytest.fixture(scope="session")
def helm() -> Path:
    return charts.helm_binary()


@pytest.fixture(scope="session")
def expanded(helm: Path) -> Expanded:
    """Each stack rendered in directory mode (the local charts) and its charts expanded."""
    result = {}
    for stack in STACKS:
        render = render_stack(stack, chart_source=charts.directory_source())
        result[stack] = (render, charts.expand(render.helm_charts(), helm=helm))
    return result


def _release(expanded: Expanded, stack: str, name: str) -> charts.ChartObjects:
    return next(c for c in expanded[stack][1] if c.release.name == name)


def _objects(chart: charts.ChartObjects, kind: str) -> list[dict[str, Any]]:
    return [o for o in chart.objects if o["kind"] == kind]


def test_stacks_are_discovered_from_the_stack_files() -> None:
    assert len(STACKS) >= 3
    assert all((PROJECT_DIR / f"Pulumi.{s}.yaml").is_file() for s in STACKS)


# --- chart sources ------------------------------------------------------------------------


def test_every_pinned_chart_folder_matches_its_checksum() -> None:
    root = charts.charts_dir()
    for pin in charts.PINS:
        charts.verify_chart_dir(root / pin.folder, pin)
    assert {p.folder for p in charts.PINS} == {p.name for p in root.iterdir() if p.is_dir()}


def test_an_edited_or_missing_chart_folder_is_refused(tmp_path: Path) -> None:
    pin = charts.pin_for_folder(KIALI_SERVER.folder)
    assert pin is not None
    copy = tmp_path / pin.folder
    _copy_tree(charts.charts_dir() / pin.folder, copy)
    charts.verify_chart_dir(copy, pin)
    (copy / "values.yaml").write_text((copy / "values.yaml").read_text() + "# edited\n")
    with pytest.raises(charts.ChartError, match="tree SHA-256"):
        charts.verify_chart_dir(copy, pin)
    with pytest.raises(charts.ChartError, match="does not exist"):
        charts.verify_chart_dir(tmp_path / "absent", pin)


def _copy_tree(source: Path, target: Path) -> None:
    for path in source.rglob("*"):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())
            destination.chmod(stat.S_IRUSR | stat.S_IWUSR)


def _package(folder: Path, chart: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=f"{chart}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def test_chart_cache_fills_from_the_repository_and_checks_the_package_digest(
    tmp_path: Path,
) -> None:
    base = charts.pin_for_folder(KIALI_SERVER.folder)
    assert base is not None
    package = _package(charts.charts_dir() / base.folder, base.chart)
    pin = replace(base, package_sha256=charts.sha256(package))
    url = f"{pin.repository}/{pin.chart}-{pin.version}.tgz"
    index = {"entries": {pin.chart: [{"version": pin.version, "urls": [url]}]}}
    served = {f"{pin.repository}/index.yaml": yaml.safe_dump(index).encode(), url: package}
    fetched: list[str] = []

    def fetch(address: str) -> bytes:
        fetched.append(address)
        return served[address]

    cache = tmp_path / "cache"
    assert charts.fill_cache(cache, [pin], fetch) == [pin.folder]
    assert charts.tree_digest(cache / pin.folder) == (pin.files, pin.tree_sha256)
    charts.verify_chart_dir(cache / pin.folder, pin)
    assert charts.fill_cache(cache, [pin], fetch) == []  # present and verified: no download
    assert len(fetched) == 2

    (cache / pin.folder / "values.yaml").write_text("edited: true\n")
    with pytest.raises(charts.ChartError, match="differs from the package"):
        charts.verify_chart_dir(cache / pin.folder, pin)

    served[url] = package + b"\0"
    with pytest.raises(charts.ChartError, match="package SHA-256"):
        charts.fill_cache(tmp_path / "other", [pin], fetch)
    with pytest.raises(charts.ChartError, match="no pinned package SHA-256"):
        charts.fill_cache(tmp_path / "other", [replace(pin, package_sha256=None)], fetch)


# --- the pinned Helm ----------------------------------------------------------------------


def test_helm_is_the_pinned_helm_3_built_from_the_go_module(helm: Path) -> None:
    version = install_helm.pinned_version()
    assert version.startswith("v3.20.")
    assert install_helm.reported_version(helm) == version
    assert install_helm.pinned_hash().startswith("h1:")
    if helm == install_helm.binary_path():
        install_helm.verify(helm)


def test_a_helm_of_another_version_stops_the_render(tmp_path: Path) -> None:
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\necho v3.18.0\n")
    fake.chmod(0o755)
    with pytest.raises(install_helm.HelmInstallError, match=r"is Helm v3\.18\.0, the render needs"):
        install_helm.check_version(fake)


# --- chart source setting -----------------------------------------------------------------


def test_chart_source_defaults_to_the_upstream_repositories() -> None:
    from tests.conftest import make_settings

    assert make_settings().chart_source == ChartSource(kind="upstream", location="")
    assert chart_reference(ISTIO_BASE, ChartSource()) == ("base", ISTIO_BASE.repository)


RETIRED_ISTIO_HOST = "istio-release.storage.googleapis.com"


def test_no_istio_chart_source_renovate_comment_or_verifier_names_the_retired_host() -> None:
    """Istio publishes nothing there from 1.31 and switches it off after the last scream
    test (2026-12-08/09): a default `upstream` source pointing there stops every `pulumi up`."""
    for chart in (*istio_charts(ISTIO_VERSION).__dict__.values(),):
        assert chart.repository == "https://blob.istio.io/istio-release/charts"
        assert chart.oci_repository == "oci://ghcr.io/istio/release/charts"
    assert {p.repository for p in charts.PINS if p.chart in ("base", "istiod", "gateway")} == {
        "https://blob.istio.io/istio-release/charts"
    }
    assert not any(RETIRED_ISTIO_HOST in repository for repository, _ in REFERENCE_CHART_DIRS)
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_DIR, capture_output=True, text=True, check=True
    ).stdout.split()
    naming = {
        path: [
            line
            for line in (PROJECT_DIR / path).read_text().splitlines()
            if RETIRED_ISTIO_HOST in line
        ]
        for path in tracked
        if (PROJECT_DIR / path).is_file()
        and path != "tests/test_charts.py"
        and RETIRED_ISTIO_HOST in (PROJECT_DIR / path).read_text(errors="ignore")
    }
    # Only prose that says it is retired may name it: never a value, a renovate comment or a URL.
    assert set(naming) <= {"components/versions.py", "docs/upgrades.md"}, sorted(naming)
    for lines in naming.values():
        for line in lines:
            assert "retired" in line and "=" not in line and "renovate" not in line, line


def test_upstream_oci_takes_istio_charts_from_istios_registry_and_the_others_from_theirs() -> None:
    source = ChartSource(kind="upstream-oci")
    for chart in istio_charts(ISTIO_VERSION).__dict__.values():
        assert chart_reference(chart, source) == (
            f"oci://ghcr.io/istio/release/charts/{chart.chart}",
            "",
        )
    assert chart_reference(KIALI_SERVER, source) == (
        "kiali-server",
        "https://kiali.org/helm-charts",
    ), "no OCI registry of its own: its Helm repository"
    assert "location" in settings_error(chartSource={"kind": "upstream-oci", "location": "x"})


def test_an_upstream_oci_release_expands_from_the_pinned_folder(helm: Path) -> None:
    chart = ISTIO_BASE
    reference, repository = chart_reference(chart, ChartSource(kind="upstream-oci"))
    (expanded,) = charts.expand(
        [
            {
                "name": "istio-base",
                "chart": reference,
                "version": chart.version,
                "repository": repository,
                "namespace": "istio-system",
                "values": {},
            }
        ],
        helm=helm,
    )
    assert expanded.folder == f"istio-base-{ISTIO_VERSION}"
    assert any(o["kind"] == "CustomResourceDefinition" for o in expanded.objects)


def test_chart_source_oci_and_directory_references() -> None:
    oci = ChartSource(kind="oci", location="oci://registry.example.com/helm-mirror")
    assert chart_reference(ISTIO_BASE, oci) == ("oci://registry.example.com/helm-mirror/base", "")
    directory = ChartSource(kind="directory", location="vendor/charts")
    assert chart_reference(ISTIO_BASE, directory) == ("vendor/charts/istio-base-1.30.4", "")
    assert chart_reference(FLAGGER_LOADTESTER, directory)[0].endswith("flagger-loadtester-0.38.0")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"kind": "oci", "location": "registry.example.com/x"}, "meshstack:chartSource.location"),
        ({"kind": "oci", "location": "oci://Registry/x/"}, "OCI registry prefix"),
        ({"kind": "directory"}, "must name the directory"),
        ({"kind": "upstream", "location": "x"}, "must be empty when kind is 'upstream'"),
        ({"kind": "git"}, "meshstack:chartSource.kind"),
        ({"kind": "upstream", "path": "x"}, "is not a known setting"),
    ],
)
def test_chart_source_errors_are_one_line(source: dict[str, str], expected: str) -> None:
    assert expected in settings_error(chartSource=source)


def test_directory_mode_installs_every_chart_from_a_local_folder(expanded: Expanded) -> None:
    for render, _ in expanded.values():
        for chart in render.helm_charts():
            folder = Path(str(chart["chart"]))
            assert charts.pin_for_folder(folder.name) is not None, chart["chart"]
            assert chart["repository"] == ""
            assert chart["version"] == charts.pin_for_folder(folder.name).version  # type: ignore[union-attr]


# --- the expansion ------------------------------------------------------------------------


def test_every_chart_of_every_stack_renders_objects(expanded: Expanded) -> None:
    for stack, (render, expansion) in expanded.items():
        assert [c.release.name for c in expansion] == [c["name"] for c in render.helm_charts()]
        for chart in expansion:
            assert chart.objects, f"{stack}: release {chart.release.name} rendered nothing"
            assert chart.objects == sorted(chart.objects, key=charts.object_key)
            for obj in chart.objects:
                assert "helm.sh/hook" not in (obj["metadata"].get("annotations") or {})


def test_charts_yaml_traces_every_object_to_its_release(expanded: Expanded) -> None:
    for _, expansion in expanded.values():
        text = charts.dump_charts(expansion)
        pairs = charts.load_charts(text)
        assert pairs == [(c.release.name, o) for c in expansion for o in c.objects]
        assert text.count(charts.RELEASE_COMMENT) == len(pairs)


def test_expansion_is_deterministic(expanded: Expanded, helm: Path) -> None:
    stack = min(STACKS, key=lambda s: len(expanded[s][1]))
    render, expansion = expanded[stack]
    again = charts.expand(render.helm_charts(), helm=helm, workers=1)
    assert charts.dump_charts(again) == charts.dump_charts(expansion)


def test_helm_is_told_what_a_1_35_cluster_advertises(expanded: Expanded) -> None:
    versions = set(charts.api_versions())
    assert {"monitoring.coreos.com/v1", "networking.k8s.io/v1/Ingress", "apps/v1"} <= versions
    assert "policy/v1/PodDisruptionBudget" in versions
    # kiali-server falls back to networking.k8s.io/v1beta1 without the Ingress capability.
    ingresses = [
        o
        for _, expansion in expanded.values()
        for c in expansion
        for o in c.objects
        if o["kind"] == "Ingress"
    ]
    assert ingresses
    assert {o["apiVersion"] for o in ingresses} == {"networking.k8s.io/v1"}


# --- checks over every stack ---------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_chart_objects_pass_schemas_crds_and_cel(expanded: Expanded, stack: str) -> None:
    assert checks.schema_problems(expanded[stack][1]) == []


@pytest.mark.parametrize("stack", STACKS)
def test_policy_pack_passes_program_and_chart_objects_together(
    expanded: Expanded, stack: str
) -> None:
    render, expansion = expanded[stack]
    combined = checks.with_chart_objects(render, expansion)
    assert len(combined.registrations) == len(render.registrations) + sum(
        len(c.objects) for c in expansion
    )
    report = checks.policy_report(render, expansion)
    assert [(v.policy, v.urn, v.message) for v in report.violations] == []
    assert report.unknown == []


def test_a_chart_crd_without_the_keep_policy_would_be_deleted_with_the_stack(
    expanded: Expanded,
) -> None:
    """Chart v4 retains a chart object on delete only when it is annotated
    `helm.sh/resource-policy: keep` (no program transform adds RetainOnDelete), so a chart
    version that ships a CRD without it must fail the policy pack, not delete every
    VirtualService in the cluster at the next `pulumi destroy`."""
    render, expansion = expanded[STACKS[0]]
    base = _release(expanded, STACKS[0], "istio-base")
    objects = list(base.objects)
    at = next(i for i, o in enumerate(objects) if o["kind"] == "CustomResourceDefinition")
    crd = json.loads(json.dumps(objects[at]))
    del crd["metadata"]["annotations"][checks.KEEP_ANNOTATION]
    objects[at] = crd
    edited = [replace(c, objects=objects) if c is base else c for c in expansion]
    report = checks.policy_report(render, edited)
    assert [(v.policy, v.message) for v in report.violations] == [
        (
            "crds-and-namespaces-retained",
            f"apiextensions.k8s.io/CustomResourceDefinition {crd['metadata']['name']} is "
            "deleted with the stack: set retainOnDelete",
        )
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_the_ingress_service_the_program_reads_is_the_ingress_charts_load_balancer(
    expanded: Expanded, stack: str
) -> None:
    """`ingressGatewayAddress` is read from `<namespace>/<release>` of the ingress gateway
    (`components.istio.component`): the istio-gateway chart must name its Service so, or
    the read finds nothing (a first preview hides it: the read waits for the chart)."""
    chart = _release(expanded, stack, INGRESS.release)
    services = [
        (o["metadata"].get("namespace"), o["metadata"]["name"], o["spec"].get("type"))
        for o in chart.objects
        if o["kind"] == "Service"
    ]
    assert services == [(INGRESS.namespace, INGRESS.release, "LoadBalancer")]


@pytest.mark.parametrize("stack", STACKS)
def test_every_object_has_one_owner(expanded: Expanded, stack: str) -> None:
    render, expansion = expanded[stack]
    assert checks.ownership_conflicts(render.kubernetes_objects(), expansion) == []


@pytest.mark.parametrize("stack", STACKS)
def test_no_role_is_rendered_with_an_empty_rules_list(expanded: Expanded, stack: str) -> None:
    """The API server returns an RBAC Role's empty `rules` as absent, so a rendered
    `rules: []` differs from the live object after every up: `pulumi preview
    --expect-no-changes` showed `+ rules: []` on the loadtester's Role (make e2e)."""
    empty = [
        f"{chart.release.name}: {obj['kind']} {obj['metadata']['name']}"
        for chart in expanded[stack][1]
        for obj in chart.objects
        if obj["kind"] in ("Role", "ClusterRole") and obj.get("rules", None) == []
    ]
    assert empty == []


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_reaches_an_object_other_than_a_secret(expanded: Expanded, stack: str) -> None:
    render, expansion = expanded[stack]
    assert checks.secret_leaks(render.kubernetes_objects(), expansion) == []


@pytest.mark.parametrize("stack", STACKS)
def test_every_value_the_program_sets_changes_the_rendered_objects(
    expanded: Expanded, stack: str, helm: Path
) -> None:
    found = checks.ineffective_values(expanded[stack][1], helm)
    assert [str(f) for f in found] == []


def test_every_ineffective_value_exception_is_still_needed(expanded: Expanded, helm: Path) -> None:
    # One release per chart folder is enough to see each exception's value take no effect.
    seen: dict[str, charts.ChartObjects] = {}
    for _, expansion in expanded.values():
        for chart in expansion:
            if len(chart.objects) > len(seen.get(chart.folder, chart).objects):
                seen[chart.folder] = chart  # the fullest install (the hub's Kiali, not a spoke's)
            seen.setdefault(chart.folder, chart)
    wanted = {chart for chart, _ in checks.INEFFECTIVE_VALUE_EXCEPTIONS}
    sample = [c for c in seen.values() if c.folder.rsplit("-", 1)[0] in wanted]
    found = checks.ineffective_values(sample, helm, exceptions={})
    assert {(f.chart, f.path) for f in found} == set(checks.INEFFECTIVE_VALUE_EXCEPTIONS)
    assert all(reason.strip() for reason in checks.INEFFECTIVE_VALUE_EXCEPTIONS.values())


SKIP_AWAIT: Final = "pulumi.com/skipAwait"
AWAIT_SKIPPED: Final = {("jaeger", "jaeger"), ("kiali", "kiali")}
"""(release, Service) whose provider await is skipped: only Kiali waits for the Jaeger chart,
and only for Jaeger's pod, whose Deployment stays awaited; nothing waits for Kiali."""


def test_only_services_nothing_waits_for_skip_the_await(expanded: Expanded) -> None:
    """istiod's Service keeps its await (its Endpoints settled): every Istio object and every
    injected pod is created after it, and istiod's validating and injection webhooks
    (failurePolicy Fail) must answer them; the provider retries a create only on NotFound and
    NoMatch, so an unanswered webhook would fail the `pulumi up`. LoadBalancer Services keep
    theirs: `ingressGatewayAddress` is read from the status it waits for. Deployments are
    never skipped: that is the readiness the dependents of a skipped Service rely on."""
    hub_seen = set()
    for stack, (render, expansion) in expanded.items():
        for obj in render.kubernetes_objects():
            assert SKIP_AWAIT not in (obj["metadata"].get("annotations") or {}), (stack, obj)
        for chart in expansion:
            for obj in chart.objects:
                annotations = obj["metadata"].get("annotations") or {}
                if annotations.get(SKIP_AWAIT) != "true":
                    continue
                where = (chart.release.name, obj["metadata"]["name"])
                assert obj["kind"] == "Service" and where in AWAIT_SKIPPED, (stack, where)
                assert obj["spec"].get("type", "ClusterIP") == "ClusterIP", (stack, where)
                hub_seen.add(where)
        istiods = [
            o
            for c in expansion
            if c.release.name.startswith("istiod")
            for o in c.objects
            if o["kind"] == "Service"
        ]
        assert istiods, stack
        for service in istiods:
            assert SKIP_AWAIT not in (service["metadata"].get("annotations") or {}), stack
    if any(c.release.name == "kiali" for _, exp in expanded.values() for c in exp):
        assert hub_seen == AWAIT_SKIPPED


def test_simulated_jaeger_is_the_pod_and_service_the_chart_renders(expanded: Expanded) -> None:
    # `make simulate` feeds istiod Jaeger's pod labels, service account and Service ports
    # derived from the release's values (tools/simulate/registry.py, `jaeger_workload`);
    # Helm's expansion of the pinned chart must give the same, or the simulated sidecar
    # would not be the one the AuthorizationPolicy selects.
    seen = 0
    for stack, (_, releases) in expanded.items():
        for chart in releases:
            if chart.release.name != simulate_registry.JAEGER_PROXY:
                continue
            entry = {
                "name": chart.release.name,
                "namespace": chart.release.namespace,
                "values": chart.values,
            }
            workload = simulate_registry.jaeger_workload([entry])
            assert workload is not None, stack
            (deployment,) = _objects(chart, "Deployment")
            template = deployment["spec"]["template"]
            assert template["metadata"]["labels"] == workload.labels, stack
            assert template["spec"]["serviceAccountName"] == workload.service_account, stack
            (service,) = _objects(chart, "Service")
            assert service["metadata"]["name"] == workload.service, stack
            tcp = [p for p in service["spec"]["ports"] if p.get("protocol", "TCP") == "TCP"]
            assert tuple((p["name"], p["port"], p.get("appProtocol", "")) for p in tcp) == (
                workload.ports
            ), stack
            seen += 1
    assert seen, "no stack deploys Jaeger"


# --- the checks can fail ------------------------------------------------------------------


def _rerender(
    chart: charts.ChartObjects, helm: Path, values: dict[str, Any]
) -> charts.ChartObjects:
    release = replace(chart.release, values=values)
    return charts.render_release(release, helm)


def test_a_value_at_a_wrong_path_is_reported(expanded: Expanded, helm: Path) -> None:
    istiod = _release(expanded, STACKS[0], "istiod")
    # A misspelt key, and one the chart never reads while autoscaling is on.
    moved = {**istiod.values, "autoscaleMinimum": 3, "replicaCount": 3}
    found = checks.ineffective_values([_rerender(istiod, helm, moved)], helm)
    assert sorted((f.release, f.path) for f in found) == [
        ("istiod", "autoscaleMinimum"),
        ("istiod", "replicaCount"),
    ]


def test_an_object_created_twice_is_reported(expanded: Expanded) -> None:
    render, expansion = expanded[STACKS[0]]
    chart_object = expansion[0].objects[0]
    conflicts = checks.ownership_conflicts([*render.kubernetes_objects(), chart_object], expansion)
    assert len(conflicts) == 1
    assert f"the program and release {expansion[0].release.name}" in conflicts[0]


def _hub_kiali(expanded: Expanded) -> tuple[str, charts.ChartObjects]:
    for stack in STACKS:
        for chart in expanded[stack][1]:
            if chart.folder == KIALI_SERVER.folder and _objects(chart, "Deployment"):
                return stack, chart
    raise AssertionError("no stack runs the Kiali server")


def test_kiali_signing_key_is_mounted_from_a_secret_not_written_in_its_configmap(
    expanded: Expanded, helm: Path
) -> None:
    """Run-time consequence: the key that signs Kiali's login tokens is readable only by
    who can read Secrets; written into the ConfigMap, anyone allowed to read ConfigMaps in
    the namespace could forge a login token."""

    stack, kiali = _hub_kiali(expanded)
    (config_map,) = _objects(kiali, "ConfigMap")
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["login_token"]["signing_key"] == SIGNING_KEY_REFERENCE
    (deployment,) = _objects(kiali, "Deployment")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "login-token-signing-key",
        "secret": {
            "secretName": SIGNING_KEY_SECRET,
            "items": [{"key": SIGNING_KEY_ITEM, "path": "value.txt"}],
        },
    } in volumes
    secrets = [
        o
        for o in expanded[stack][0].kubernetes_objects()
        if o["kind"] == "Secret" and o["metadata"]["name"] == SIGNING_KEY_SECRET
    ]
    assert [s["metadata"]["namespace"] for s in secrets] == [kiali.release.namespace]
    assert secrets[0]["type"] == "Opaque"
    assert secrets[0]["stringData"] == SECRET_PLACEHOLDER  # the whole map is a secret input

    # Handed the key itself (the former values), the chart writes it into the ConfigMap.
    leaked_values = json.loads(json.dumps(kiali.values))
    leaked_values["login_token"]["signing_key"] = SECRET_PLACEHOLDER
    leaked = _rerender(kiali, helm, leaked_values)
    (stand_in,) = leaked.secret_stand_ins
    assert len(stand_in) == 32
    leaks = checks.secret_leaks([], [leaked])
    assert leaks == [
        f"ConfigMap {kiali.release.namespace}/kiali (v1) of release kiali contains secret "
        "value login_token.signing_key of release kiali"
    ]


def test_secret_check_sees_base64_and_program_placeholders() -> None:
    stand_in = "s" * 32
    chart = charts.ChartObjects(
        charts.Release("r", "c", "1", "", "ns", {}),
        "c-1",
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "ok", "namespace": "ns"},
                "data": {"k": base64.b64encode(stand_in.encode()).decode()},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "bad", "namespace": "ns"},
                "binaryData": {"k": base64.b64encode(stand_in.encode()).decode()},
            },
        ],
        {},
        {stand_in: "password"},
    )
    program = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "p", "namespace": "ns"},
            "data": {"x": SECRET_PLACEHOLDER},
        }
    ]
    assert checks.secret_leaks(program, [chart]) == [
        "ConfigMap ns/p (v1) of the program contains a secret of the program",
        "ConfigMap ns/bad (v1) of release r contains secret value password of release r (base64)",
    ]


def _base(expanded: Expanded) -> charts.ChartObjects:
    return _release(expanded, STACKS[0], "istio-base")


def _validator(chart: charts.ChartObjects) -> dict[str, Any]:
    (webhook,) = [
        o
        for o in _objects(chart, "ValidatingWebhookConfiguration")
        if o["metadata"]["name"] == "istiod-default-validator"
    ]
    return webhook


def test_default_revision_validation_webhook_fails_closed(expanded: Expanded, helm: Path) -> None:
    """Run-time consequence: with `failurePolicy: Ignore`, whenever istiod is unreachable
    the API server admits Istio config nobody validated, and a broken VirtualService or
    AuthorizationPolicy goes live. Chart v4 renders as a fresh install on every
    `pulumi up`, so the chart's Ignore would come back each time."""
    base = _base(expanded)
    assert {w["failurePolicy"] for w in _validator(base)["webhooks"]} == {"Fail"}
    without = {**base.values, "base": {}}
    assert {w["failurePolicy"] for w in _validator(_rerender(base, helm, without))["webhooks"]} == {
        "Ignore"
    }


def test_loadtester_has_limits_the_policy_pack_requires(expanded: Expanded, helm: Path) -> None:
    """Run-time consequence: without limits a load test (`hey`, `ghz`) can take a node's
    CPU and memory; the policy pack's container-resources rule rejects such a Deployment
    at `pulumi preview`."""

    stack = next(
        s for s in STACKS if any(c.release.name == "flagger-loadtester" for c in expanded[s][1])
    )
    render, expansion = expanded[stack]
    loadtester = _release(expanded, stack, "flagger-loadtester")
    (deployment,) = _objects(loadtester, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == LOADTESTER_RESOURCES

    chart_default = {k: v for k, v in loadtester.values.items() if k != "resources"}
    unlimited = _rerender(loadtester, helm, chart_default)
    others = [c for c in expansion if c.release.name != "flagger-loadtester"]
    report = checks.policy_report(render, [*others, unlimited])
    assert [(v.policy, v.message.split(": ")[-1]) for v in report.violations] == [
        ("container-resources", "missing resources.limits.cpu, resources.limits.memory")
    ]


# --- bad input ----------------------------------------------------------------------------


def test_a_missing_chart_folder_stops_the_expansion_naming_release_and_chart(
    tmp_path: Path, helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(charts.ENV_VAR, str(tmp_path))
    release = {
        "name": "kiali",
        "chart": "kiali-server",
        "version": "2.29.0",
        "repository": KIALI_SERVER.repository,
        "namespace": "observability",
        "values": {},
    }
    with pytest.raises(charts.ChartError) as caught:
        charts.expand([release], helm=helm)
    message = str(caught.value)
    assert message.startswith("release kiali (chart kiali-server 2.29.0): chart directory ")
    assert "does not exist" in message and "\n" not in message


def test_a_chart_that_fails_to_render_stops_the_expansion(helm: Path) -> None:
    release = {
        "name": "kiali",
        "chart": "kiali-server",
        "version": "2.29.0",
        "repository": KIALI_SERVER.repository,
        "namespace": "observability",
        "values": {"deployment": {"namespace": "elsewhere"}},
    }
    with pytest.raises(charts.ChartError) as caught:
        charts.expand([release], helm=helm)
    message = str(caught.value)
    assert message.startswith("release kiali (chart kiali-server 2.29.0): ")
    assert "must match the Helm release namespace" in message and "\n" not in message


def test_render_writes_nothing_when_a_chart_cannot_be_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(charts.ENV_VAR, str(tmp_path / "no-charts"))
    out = tmp_path / "out"
    assert render_tool.main([STACKS[0], "--out", str(out)]) == 2
    assert not out.exists()
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"render {STACKS[0]}: release ")
    assert "(chart " in error and "does not exist" in error


def test_a_helm_of_another_version_stops_the_render_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\necho v3.18.0\n")
    fake.chmod(0o755)
    monkeypatch.setenv(install_helm.ENV_VAR, str(fake))
    out = tmp_path / "out"
    assert render_tool.main([STACKS[0], "--out", str(out)]) == 2
    assert not out.exists()
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"render {STACKS[0]}: release ")
    assert "is Helm v3.18.0, the render needs v3.20." in error


def test_stand_ins_have_the_shape_and_are_stable_and_distinct() -> None:
    values = {
        "login_token": {"signing_key": SECRET_PLACEHOLDER},
        "a": [UNKNOWN_PLACEHOLDER, UNKNOWN_PLACEHOLDER],
        "b": "plain",
    }
    replaced, secrets = charts.with_stand_ins("kiali", values)
    key = replaced["login_token"]["signing_key"]
    assert len(key) == 32 and key.isalnum() and key.islower()
    assert secrets == {key: "login_token.signing_key"}
    first, second = replaced["a"]
    assert first != second and first.isalnum() and len(first) == 24
    assert replaced["b"] == "plain"
    assert charts.with_stand_ins("kiali", values) == (replaced, secrets)
    assert charts.with_stand_ins("other", values)[0] != replaced


@pytest.mark.parametrize("stack", STACKS)
def test_istiod_never_fetches_a_jwks_from_its_own_loopback(expanded: Expanded, stack: str) -> None:
    """istiod fetches every RequestAuthentication's `jwksUri` itself; 1.30.4 refuses
    link-local and cloud metadata addresses by itself but not loopback. Every rendered istiod
    blocks loopback (its own debug ports) and the metadata endpoints (also for an istiod
    without the built-in block), keeps private ranges open (in-cluster identity providers), and
    so satisfies `istioctl analyze`'s IST0175 check (a non-empty value on every istiod)."""
    istiods = [
        obj
        for chart in expanded[stack][1]
        for obj in _objects(chart, "Deployment")
        if obj["spec"]["template"]["metadata"]["labels"].get("app") == "istiod"
    ]
    assert istiods
    for istiod in istiods:
        env = {
            e["name"]: e.get("value")
            for c in istiod["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", [])
        }
        ranges = [ipaddress.ip_network(c) for c in env["BLOCKED_CIDRS_IN_JWKS_URIS"].split(",")]
        assert _blocked("127.0.0.1", ranges) and _blocked("::1", ranges)
        # Built into 1.30.4, not into the 1.30.3 an in-place upgrade starts from.
        assert _blocked("169.254.169.254", ranges) and _blocked("fd00:ec2::254", ranges)
        assert _blocked("fe80::a9fe:a9fe", ranges)
        assert not _blocked("10.96.0.10", ranges) and not _blocked("172.20.1.5", ranges)


def _blocked(ip: str, ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(ipaddress.ip_address(ip) in r for r in ranges)


def test_jaeger_policy_names_the_chart_pods_identities_and_ports(expanded: Expanded) -> None:
    # The AuthorizationPolicy is only as good as its selector, Kiali's identity and the
    # ports it names: each must be what the charts really create.
    from components.istio.tracing import OTLP_GRPC_PORT, OTLP_HTTP_PORT
    from components.observability import jaeger_access
    from components.observability.jaeger_values import QUERY_GRPC_PORT, QUERY_HTTP_PORT

    hubs = [s for s in STACKS if any(c.release.name == "jaeger" for c in expanded[s][1])]
    assert hubs
    for stack in hubs:
        render = expanded[stack][0]
        policy = next(
            o
            for o in render.kubernetes_objects()
            if o["kind"] == "AuthorizationPolicy"
            and o["metadata"]["name"] == jaeger_access.POLICY_NAME
        )
        namespace = policy["metadata"]["namespace"]
        jaeger = _release(expanded, stack, "jaeger")
        (deployment,) = _objects(jaeger, "Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (service,) = _objects(jaeger, "Service")
        targets = {p["targetPort"] for p in service["spec"]["ports"]}
        assert {OTLP_GRPC_PORT, OTLP_HTTP_PORT, QUERY_GRPC_PORT, QUERY_HTTP_PORT} <= targets
        kiali = _release(expanded, stack, "kiali")
        (kiali_deployment,) = _objects(kiali, "Deployment")
        account = kiali_deployment["spec"]["template"]["spec"]["serviceAccountName"]
        assert (
            jaeger_access.kiali_principal(namespace) == f"cluster.local/ns/{namespace}/sa/{account}"
        )
