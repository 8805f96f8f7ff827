"""The e2e harness's own logic, without the engine: what it counts as a violation, an istioctl
error or warning, a retained object, and how it reports (tools/e2e/run.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components.istio.component import UNKNOWN_ADDRESS
from components.istio.values import INGRESS
from tools.e2e import run
from tools.e2e.controlplane import REPO, ControlPlane, ControlPlaneError
from tools.stacks import deploy_order

VALIDATE_OUTPUT = """\
"/tmp/x/istio.yaml" has warnings: \n\
\t* EnvoyFilter/shop/api-local-ratelimit: EnvoyFilter exposes internal implementation details \
that may change at any time.
\t* Sidecar/observability/default: duplicated egress host: observability/*

Error: 2 errors occurred:
\t* VirtualService/shop/api: http retry policy configured when attempts are set to 0 (disabled)
\t* VirtualService/shop/web: http retry policy configured when attempts are set to 0 (disabled)
"""


def test_validate_output_splits_into_errors_and_warnings() -> None:
    errors, warnings = run.parse_validate(VALIDATE_OUTPUT)
    assert errors == [
        "validate VirtualService/shop/api: http retry policy configured when attempts are set "
        "to 0 (disabled)",
        "validate VirtualService/shop/web: http retry policy configured when attempts are set "
        "to 0 (disabled)",
    ]
    assert len(warnings) == 2
    assert run.unjustified(warnings) == [
        "validate Sidecar/observability/default: duplicated egress host: observability/*"
    ]
    deny_tcp = (
        ": configured AuthorizationPolicy will deny all traffic to TCP ports under its scope "
        "due to the use of only HTTP attributes in a DENY rule"
    )
    assert run.unjustified(
        [
            f"validate AuthorizationPolicy/shop/api-require-jwt{deny_tcp}",
            f"IST0133 AuthorizationPolicy shop/api-require-jwt-via-front-web{deny_tcp}",
            f"IST0133 AuthorizationPolicy shop/deny-legacy{deny_tcp}",
        ]
    ) == [f"IST0133 AuthorizationPolicy shop/deny-legacy{deny_tcp}"]
    assert run.parse_validate('"/tmp/x/istio.yaml" is valid\n') == ([], [])


def test_analyze_json_is_read_between_other_lines() -> None:
    messages = [{"code": "IST0106", "level": "Error", "origin": "VirtualService a/b"}]
    out = f"Info: something\n{json.dumps(messages, indent=2)}\n\n"
    assert run.parse_analyze(out) == messages
    assert run.parse_analyze("✔ No validation issues found\n") == []
    with pytest.raises(json.JSONDecodeError):
        run.parse_analyze("[ not json")


def test_every_justified_warning_has_its_section_in_the_e2e_readme() -> None:
    readme = (REPO / "tools" / "e2e" / "README.md").read_text()
    for anchor in run.JUSTIFIED_WARNINGS:
        assert f'<a id="{anchor}"></a>' in readme, anchor


def test_policy_violations_are_counted_from_the_preview_output() -> None:
    out = """Policies:
    ❌ meshstack@v0.1.0 (local: policy)
        - [mandatory]  helm-chart-version-pinned  (kubernetes:helm.sh/v4:Chart: a)
          Every Helm chart is installed at one exact version.
        - [advisory]  kiali-not-anonymous  (kubernetes:core/v1:ConfigMap: b)
"""
    assert run._VIOLATION.findall(out) == [
        ("mandatory", "helm-chart-version-pinned"),
        ("advisory", "kiali-not-anonymous"),
    ]
    assert run._VIOLATION.findall("Policies:\n    ✅ meshstack@v0.1.0 (local: policy)\n") == []


def test_crds_and_namespaces_are_read_from_the_export_with_their_retain_flag() -> None:
    export = {
        "deployment": {
            "resources": [
                {
                    "urn": "urn:a",
                    "type": "kubernetes:core/v1:Namespace",
                    "retainOnDelete": True,
                    "outputs": {"metadata": {"name": "shop"}},
                },
                {
                    "urn": "urn:b",
                    "type": "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
                    "outputs": {"metadata": {"name": "canaries.flagger.app"}},
                },
                {"urn": "urn:c", "type": "kubernetes:core/v1:ConfigMap", "outputs": {}},
            ]
        }
    }
    assert run.retained_in_state(export) == (
        [("Namespace", "shop")],
        ["CustomResourceDefinition canaries.flagger.app"],
    )


def test_the_ingress_address_output_must_be_what_the_live_service_reports() -> None:
    def service(*ingress: dict[str, str]) -> dict[str, Any]:
        return {"status": {"loadBalancer": {"ingress": list(ingress)}}}

    assert run.ingress_address_problem("203.0.113.7", service({"ip": "203.0.113.7"})) is None
    assert (
        run.ingress_address_problem(
            "lb.example.com", service({"hostname": "lb.example.com", "ip": "203.0.113.7"})
        )
        is None
    )
    assert run.ingress_address_problem(UNKNOWN_ADDRESS, service()) is None
    assert run.ingress_address_problem(UNKNOWN_ADDRESS, service({"ip": "203.0.113.7"})) == (
        "ingressGatewayAddress is 'pending: the load balancer has no address yet', "
        "the live ingress Service says '203.0.113.7'"
    )
    assert run.ingress_address_problem("203.0.113.7", None) == (
        f"Service {INGRESS.namespace}/{INGRESS.release} is not in the cluster"
    )


def test_the_summary_line_has_the_shape_the_issue_asks_for() -> None:
    good = run.StackResult("a", up=True, idempotent=True, kept_after_destroy=True)
    diff = run.StackResult("b", up=True, idempotent=False, kept_after_destroy=True)
    assert run.summary([good, good, good]) == (
        "e2e: 3/3 stacks up, 3/3 idempotent, 0 policy violations, istioctl analyze 0 errors, "
        "destroy kept CRDs+namespaces: yes"
    )
    assert run.passed([good, good])
    assert run.summary([good, diff]).startswith("e2e: 2/2 stacks up, 1/2 idempotent,")
    assert not run.passed([good, diff])
    warned = run.StackResult(
        "c", up=True, idempotent=True, kept_after_destroy=True, unjustified_warnings=["x"]
    )
    assert not run.passed([warned])


@pytest.mark.parametrize("stack", deploy_order())
def test_e2e_settings_take_charts_from_the_local_folder_and_keep_the_stack_file(
    stack: str,
) -> None:
    """Every stack file can be run: its settings load, the charts come from the pinned
    folders (no repository is reachable), and nothing the stack file says is overridden."""
    plan = run.plan(stack)
    pairs = dict(run.e2e_settings(plan))
    assert pairs["meshstack:chartSource.kind"] == "directory"
    assert pairs["meshstack:chartSource.location"].startswith("/")
    assert ("meshstack:alerts.runbookBaseUrl" in pairs) is not plan.sets_runbook_base_url
    assert plan.kube_context


def test_prerequisite_namespaces_are_the_ones_used_but_not_created() -> None:
    objects = [
        {"kind": "Namespace", "metadata": {"name": "shop"}},
        {"kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"}},
        {"kind": "ConfigMap", "metadata": {"name": "dash", "namespace": "grafana"}},
        {"kind": "PrometheusRule", "metadata": {"name": "r", "namespace": "monitoring"}},
        {"kind": "ClusterRole", "metadata": {"name": "c"}},
    ]
    assert run.prerequisite_namespaces(objects) == ["grafana", "monitoring"]


def test_without_a_complete_tool_cache_the_run_stops_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESHSTACK_E2E_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(run, "LOGS", tmp_path / "logs")
    assert run.main(["--stacks", deploy_order()[0]]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("e2e: tools: no complete tool cache at ")
    assert err.rstrip().endswith("run `make e2e-tools`")


def test_an_unknown_stack_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run.main(["--stacks", "mars-north-1"]) == 2
    assert capsys.readouterr().err == "e2e: no stack file for mars-north-1\n"


def test_a_control_plane_without_its_binaries_stops_in_one_line(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path / "cp", bin_dir=tmp_path / "bin")
    with pytest.raises(ControlPlaneError) as caught:
        plane.start()
    assert str(caught.value) == (
        f"etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok missing in "
        f"{tmp_path / 'bin'}: run make e2e-tools"
    )
    assert plane.pids == []


def test_only_documented_prerequisite_namespaces_are_created_for_the_stack() -> None:
    """A namespace the program should create but stopped creating fails the run."""
    objects = [
        {"kind": "ConfigMap", "metadata": {"name": "dash", "namespace": "grafana"}},
        {"kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"}},
    ]
    documented = frozenset({"monitoring", "grafana"})
    with pytest.raises(run.StepFailedError) as caught:
        run.checked_prerequisites("lab-1", objects, documented)
    assert str(caught.value) == (
        "lab-1: objects in namespaces the stack neither creates nor documents as "
        "prerequisites: shop"
    )
    assert run.checked_prerequisites("lab-1", objects[:1], documented) == ["grafana"]


def test_every_stack_needs_only_documented_prerequisites(stack_renders: dict[str, Any]) -> None:
    for stack, render in stack_renders.items():
        objects = render.kubernetes_objects()
        run.checked_prerequisites(stack, objects, run.plan(stack).documented_prerequisites)


def test_keep_refuses_a_folder_the_harness_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with (
        pytest.raises(run.StepFailedError, match="not empty and not an e2e folder"),
        run._workdir(tmp_path),
    ):
        pass
    assert (tmp_path / "notes.txt").read_text() == "mine"
    keep = tmp_path / "e2e"
    with run._workdir(keep) as work:
        (work / "state").mkdir()
    with run._workdir(keep) as work:  # its own folder: replaced
        assert not (work / "state").exists()


# --- checkpoints and the bench's summary ----------------------------------------------


def test_no_pulumi_command_skips_checkpoints() -> None:
    """The interrupted-deploy runbook (docs/operations.md) imports the pending creates the
    backend's checkpoints record; with PULUMI_SKIP_CHECKPOINTS an interrupted `up` records
    none of what it created, and every such object then fails the next `up` (AlreadyExists)."""
    scripts = [REPO / "tools" / "ci" / "pulumi.sh", *(REPO / ".github" / "workflows").glob("*.yml")]
    assert len(scripts) > 1
    for script in scripts:
        assert "PULUMI_SKIP_CHECKPOINTS" not in script.read_text(), script


def test_the_file_backend_writes_no_sidecar_a_reader_could_catch_half_written(
    tmp_path: Path,
) -> None:
    """Every run reads its own stack's last outputs while the engine writes the first
    checkpoint; the blob library's `.attrs` sidecar is rewritten in place (not renamed), so a
    reader could decode half of it ("failed to load checkpoint: EOF" failed a spoke's `up`).
    The tiers' file backend writes no sidecars."""
    cache = tmp_path / "cache"
    (cache / "bin").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    cli = run.Cli(cache, tmp_path / "work", tmp_path / "logs")
    url = cli.env["PULUMI_BACKEND_URL"]
    assert url.startswith("file://") and url.endswith("?metadata=skip")


def test_the_bench_ends_with_the_hub_ratio_and_preview() -> None:
    from tools.e2e import bench

    assert bench.summary_line(36.0, 24.0, 4.25) == (
        "e2e-bench: pulumi up / by hand = 1.50x, preview (no changes) 4.2s"
    )
