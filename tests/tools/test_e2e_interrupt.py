"""The interrupted-deploy recovery (tools/recover_stack.py) and the pure parts of its e2e scenario
(tools/e2e/interrupt.py), without the engine: which pending creates are imported or cleared,
with which IDs, in which refresh; what counts as refused, duplicated or orphaned."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tools import recover_stack
from tools.e2e import interrupt
from tools.recover_stack import PendingCreate

DEPLOYMENT = "urn:pulumi:s::meshstack::kubernetes:apps/v1:Deployment::istiod"


def _pending(
    urn: str, type_: str, inputs: Any, *, op: str = "creating", custom: bool = True
) -> Any:
    return {"type": op, "resource": {"urn": urn, "type": type_, "custom": custom, "inputs": inputs}}


EXPORT = {
    "deployment": {
        "pending_operations": [
            _pending(
                DEPLOYMENT,
                "kubernetes:apps/v1:Deployment",
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "istiod", "namespace": "istio-system"},
                },
            ),
            _pending(
                "urn:crd",
                "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
                {
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": "canaries.flagger.app"},
                },
            ),
            _pending("urn:password", "random:index/randomPassword:RandomPassword", {"length": 32}),
            _pending("urn:provider", "pulumi:providers:kubernetes", {}),
            _pending("urn:chart", "kubernetes:helm.sh/v4:Chart", {}, custom=False),
            _pending(
                "urn:updating",
                "kubernetes:core/v1:ConfigMap",
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
                op="updating",
            ),
            _pending(
                "urn:unknown-name",
                "kubernetes:core/v1:ConfigMap",
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": {"unknown": 1}}},
            ),
        ]
    }
}


def test_pending_creates_name_their_kubernetes_objects() -> None:
    found = recover_stack.pending_creates(EXPORT)
    assert [p.urn for p in found] == [
        DEPLOYMENT,
        "urn:crd",
        "urn:password",
        "urn:provider",
        "urn:chart",
        "urn:unknown-name",
    ], "creates only: an interrupted update or delete is settled by the refresh itself"
    assert found[0] == PendingCreate(DEPLOYMENT, "apps/v1", "Deployment", "istiod", "istio-system")
    assert found[1].is_kubernetes_object and not found[1].namespace
    assert [p.is_kubernetes_object for p in found[2:]] == [False] * 4
    assert recover_stack.pending_creates({"deployment": {}}) == []


def test_existing_objects_are_imported_and_the_rest_cleared() -> None:
    pending = recover_stack.pending_creates(EXPORT)
    written = [{"manager": "pulumi-kubernetes", "operation": "Update"}]
    live: dict[str, dict[str, Any]] = {
        "istiod": {
            "metadata": {"name": "istiod", "namespace": "istio-system", "managedFields": written}
        },
        "canaries.flagger.app": {"metadata": {"name": "canaries.flagger.app"}},
    }
    looked_up: list[str] = []

    def lookup(create: PendingCreate) -> dict[str, Any] | None:
        looked_up.append(create.name)
        return live.get(create.name) if create.name != "canaries.flagger.app" else None

    imports, cleared = recover_stack.plan_pending(pending, lookup)
    assert imports == [recover_stack.Import(DEPLOYMENT, "istio-system/istiod", "apps/v1")]
    assert cleared == [
        "urn:crd",
        "urn:password",
        "urn:provider",
        "urn:chart",
        "urn:unknown-name",
    ]
    assert looked_up == ["istiod", "canaries.flagger.app"], "only Kubernetes objects are looked up"
    assert recover_stack.resource_id(live["canaries.flagger.app"]) == "canaries.flagger.app"


def _managed(manager: str, operation: str, time: str) -> dict[str, str]:
    return {"manager": manager, "operation": operation, "time": time}


def test_the_import_keeps_the_field_manager_the_killed_create_applied_with() -> None:
    """pulumi-kubernetes names a random server-side-apply manager at each create and keeps it in
    the state; a new name for an object the killed create applied conflicts on every field
    whose value the server changed (an atomic list it defaulted, as a webhook's rules)."""
    live = {
        "metadata": {
            "managedFields": [
                _managed("kube-apiserver", "Update", "2026-01-01T00:00:03Z"),
                _managed("pulumi-kubernetes-0a1b2c3d", "Apply", "2026-01-01T00:00:01Z"),
                _managed("pulumi-kubernetes-9f8e7d6c", "Apply", "2026-01-01T00:00:02Z"),
                _managed("pulumi-kubernetes", "Update", "2026-01-01T00:00:04Z"),
            ]
        }
    }
    assert recover_stack.apply_field_manager(live) == "pulumi-kubernetes-9f8e7d6c"
    assert recover_stack.apply_field_manager({"metadata": {}}) == ""


def test_an_object_pulumi_never_wrote_stops_the_recovery() -> None:
    """It existed before the killed create: importing it would adopt it silently."""
    create = PendingCreate("urn:c", "v1", "ConfigMap", "web", "apps")
    foreign = {
        "metadata": {
            "name": "web",
            "namespace": "apps",
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update"}],
        }
    }
    with pytest.raises(recover_stack.RecoveryError, match="never wrote it"):
        recover_stack.plan_pending([create], lambda _: foreign)


def _replacing(old: dict[str, Any]) -> dict[str, Any]:
    """A state whose pending create replaces `old` (same URN)."""
    pending = {
        "type": "creating",
        "resource": {"urn": DEPLOYMENT, "type": "kubernetes:apps/v1:Deployment", "inputs": {}},
    }
    dependent = {"urn": "urn:dependent", "dependencies": [DEPLOYMENT]}
    resources = [{"urn": "urn:stack"}, old, dependent]
    return {"deployment": {"resources": resources, "pending_operations": [pending]}}


def test_a_create_that_replaced_an_object_takes_its_place_in_the_state() -> None:
    """pulumi-kubernetes replaces a renamed object create-before-delete (the old entry stays
    until the create ends) and one that keeps its name delete-before-replace (the old entry
    is `pendingReplacement`): either way the state must not hold the URN twice unmarked, or
    `pulumi stack import` refuses it."""
    item = recover_stack.Import(DEPLOYMENT, "istio-system/istiod-v2", "apps/v1")
    renamed = _replacing({"urn": DEPLOYMENT, "id": "istio-system/istiod"})
    settled = recover_stack.settled_deployment(renamed, [item])["deployment"]["resources"]
    assert [(r["urn"], r.get("id"), r.get("delete", False)) for r in settled] == [
        ("urn:stack", None, False),
        (DEPLOYMENT, "istio-system/istiod", True),
        ("urn:dependent", None, False),
        (DEPLOYMENT, "istio-system/istiod-v2", False),
    ], "the old object is deleted by the next up"
    assert recover_stack.unsettled({"deployment": {"resources": settled}}, [item]) == []

    same_name = _replacing(
        {"urn": DEPLOYMENT, "id": "istio-system/istiod", "pendingReplacement": True}
    )
    settled = recover_stack.settled_deployment(same_name, [item])["deployment"]["resources"]
    assert [(r["urn"], r.get("id")) for r in settled] == [
        ("urn:stack", None),
        (DEPLOYMENT, "istio-system/istiod-v2"),
        ("urn:dependent", None),
    ], "in the deleted object's place, before what depends on it"


def test_the_settled_state_records_imports_and_keeps_only_updates_and_deletes_pending() -> None:
    base = {
        "deployment": {
            "resources": [{"urn": "urn:stack"}],
            "pending_operations": EXPORT["deployment"]["pending_operations"],
        }
    }
    item = recover_stack.Import(DEPLOYMENT, "istio-system/istiod", "apps/v1", "pulumi-kubernetes-1")
    settled = recover_stack.settled_deployment(base, [item])
    resources = settled["deployment"]["resources"]
    assert [r["urn"] for r in resources] == ["urn:stack", DEPLOYMENT], "appended after its parents"
    assert resources[1]["id"] == "istio-system/istiod"
    assert resources[1]["outputs"] == {
        "__initialApiVersion": "apps/v1",
        "__fieldManager": "pulumi-kubernetes-1",
    }
    assert resources[1]["inputs"]["metadata"]["name"] == "istiod", "the create's inputs kept"
    assert [op["resource"]["urn"] for op in settled["deployment"]["pending_operations"]] == [
        "urn:updating"
    ]
    assert len(base["deployment"]["resources"]) == 1, "the export itself is left as it was"
    assert recover_stack.unsettled(settled, [item]) == []
    assert recover_stack.unsettled(base, [item]) == [
        f"{DEPLOYMENT} not in the state as istio-system/istiod",
        f"{DEPLOYMENT} still a pending create",
        "urn:crd still a pending create",
        "urn:password still a pending create",
        "urn:provider still a pending create",
        "urn:chart still a pending create",
        "urn:unknown-name still a pending create",
    ]


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        ("apps/v1", "Deployment", "Deployment.v1.apps"),
        ("v1", "ConfigMap", "ConfigMap"),
        ("networking.istio.io/v1", "VirtualService", "VirtualService.v1.networking.istio.io"),
    ],
)
def test_kubectl_types(api_version: str, kind: str, expected: str) -> None:
    assert recover_stack.kubectl_type(api_version, kind) == expected


def _fake_kubectl(tmp_path: Path, stderr: str, code: int) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    (bin_dir / "stderr").write_text(stderr + "\n")
    kubectl.write_text(f"#!/bin/sh\ncat '{bin_dir / 'stderr'}' >&2\nexit {code}\n")
    kubectl.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_a_kind_the_cluster_does_not_serve_is_not_found(tmp_path: Path) -> None:
    """A pending create of a custom resource whose CRD the killed run never created (or whose
    create was the pending one): kubectl says the type is unknown. The object cannot exist, so
    it is cleared, not fatal after `pulumi cancel` already ran."""
    env = _fake_kubectl(tmp_path, 'error: the server doesn\'t have a resource type "canaries"', 1)
    tool = recover_stack.Recovery("s", cwd=tmp_path, env=env, timeout=30)
    create = PendingCreate("urn:c", "flagger.app/v1beta1", "Canary", "web", "apps")
    assert tool.lookup("ctx")(create) is None
    assert recover_stack.plan_pending([create], tool.lookup("ctx")) == ([], ["urn:c"])


def test_the_lookup_asks_kubectl_for_the_managed_fields(tmp_path: Path) -> None:
    """kubectl leaves managedFields out of `-o json` unless asked; without them the import
    would record no field manager and the next `up` would apply as a new one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    managed = '{"manager": "pulumi-kubernetes-1a2b", "operation": "Apply", "time": "t"}'
    (bin_dir / "kubectl").write_text(
        "#!/bin/sh\n"
        'case "$*" in *--show-managed-fields*) fields=\'"managedFields": [' + managed + "],';;"
        " *) fields='';; esac\n"
        'echo "{\\"metadata\\": {$fields \\"name\\": \\"web\\", \\"namespace\\": \\"apps\\"}}"\n'
    )
    (bin_dir / "kubectl").chmod(0o755)
    tool = recover_stack.Recovery(
        "s", cwd=tmp_path, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=30
    )
    create = PendingCreate("urn:c", "v1", "ConfigMap", "web", "apps")
    imports, _ = recover_stack.plan_pending([create], tool.lookup("ctx"))
    assert imports == [recover_stack.Import("urn:c", "apps/web", "v1", "pulumi-kubernetes-1a2b")]


def test_any_other_lookup_failure_stops_the_recovery(tmp_path: Path) -> None:
    env = _fake_kubectl(tmp_path, "error: You must be logged in to the server (Unauthorized)", 1)
    tool = recover_stack.Recovery("s", cwd=tmp_path, env=env, timeout=30)
    create = PendingCreate("urn:c", "v1", "ConfigMap", "web", "apps")
    with pytest.raises(recover_stack.RecoveryError, match="Unauthorized"):
        tool.lookup("ctx")(create)


def test_a_failing_command_stops_the_recovery_in_one_line(tmp_path: Path) -> None:
    tool = recover_stack.Recovery("s", cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=30)
    with pytest.raises(recover_stack.RecoveryError, match=r"^sh -c failed \(exit 3\): boom$"):
        tool.run(["sh", "-c", "echo boom >&2; exit 3"], capture=True)
    assert tool.run(["sh", "-c", "echo ok"], capture=True) == "ok\n"


def _resource(kind: str, name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    metadata = {"name": name} | ({"namespace": namespace} if namespace else {})
    api = "apps/v1" if kind == "Deployment" else "v1"
    return {
        "type": f"kubernetes:{'apps' if api == 'apps/v1' else 'core'}/v1:{kind}",
        "custom": True,
        "outputs": {"apiVersion": api, "kind": kind, "metadata": metadata},
    } | extra


def test_state_objects_and_duplicates() -> None:
    export = {
        "deployment": {
            "resources": [
                _resource("Deployment", "istiod", "istio-system"),
                _resource("Namespace", "istio-system"),
                _resource("Deployment", "istiod", "istio-system", urn="again"),
                {"type": "pulumi:providers:kubernetes", "custom": True, "outputs": {}},
                {"type": "kubernetes:helm.sh/v4:Chart", "custom": False, "outputs": {}},
                # The program's read of the ingress Service the chart owns: not a second copy.
                _resource("Service", "istio-ingress", "istio-ingress", external=True),
            ],
            "pending_operations": [{"type": "creating"}],
        }
    }
    keys = interrupt.state_objects(export)
    assert keys == [
        "apps/Deployment istio-system/istiod",
        "core/Namespace /istio-system".replace(" /", " "),
        "apps/Deployment istio-system/istiod",
    ]
    assert interrupt.duplicates(keys) == ["apps/Deployment istio-system/istiod"]
    assert interrupt.duplicates(keys[:2]) == []
    assert interrupt.pending_count(export) == 1


def test_orphans_are_objects_pulumi_wrote_that_the_state_lacks() -> None:
    def live(name: str, manager: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": "shop",
                "managedFields": [{"manager": manager}],
            },
        }

    objects = [
        live("recorded", "pulumi-kubernetes-9f2c"),
        live("left-behind", "pulumi-kubernetes"),
        live("kube-root-ca.crt", "kube-controller-manager"),
    ]
    assert interrupt.orphans(objects, {"core/ConfigMap shop/recorded"}) == [
        "core/ConfigMap shop/left-behind"
    ]


def test_collection_paths() -> None:
    assert (
        interrupt.collection_of("/apis/apps/v1/namespaces/probe/deployments/probe", "probe")
        == "/apis/apps/v1/deployments"
    )
    assert (
        interrupt.collection_of(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/probe", "probe"
        )
        == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    )


def test_the_locked_refusal_is_recognised() -> None:
    message = (
        "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es)"
        " to end or delete the lock file with `pulumi cancel`."
    )
    assert interrupt.refused_because_locked(255, message)
    assert not interrupt.refused_because_locked(0, message)
    assert not interrupt.refused_because_locked(255, "error: program failed")
    cloud = "error: [409] Conflict: Another update is currently in progress."
    assert interrupt.refused_because_locked(255, cloud), "Pulumi Cloud's wording"
    assert not interrupt.refused_because_locked(255, "error: [409] Conflict: stack exists")


def test_the_summary_line_and_what_passes() -> None:
    points = [
        interrupt.KillPoint(10, True, True, 18, 4, 3, 1),
        interrupt.KillPoint(25, True, True, 64, 6, 5, 1),
    ]
    good = interrupt.Outcome("us-east-1", points, converged=True)
    assert interrupt.summary(good) == (
        "e2e-interrupt: us-east-1: killed 2/2 (18/64 objects in state), 8 imported, 2 cleared; "
        "converged: no changes, 0 missing, 0 duplicated, 0 orphaned"
    )
    assert interrupt.passed(good)
    for bad in (
        interrupt.Outcome("s", [interrupt.KillPoint(10, reached=False)], converged=True),
        interrupt.Outcome("s", [interrupt.KillPoint(10, True, False)], converged=True),
        interrupt.Outcome("s", points, converged=False),
        interrupt.Outcome("s", points, converged=True, orphaned=["x"]),
        interrupt.Outcome("s", points, converged=True, duplicated=["x"]),
        interrupt.Outcome("s", points, converged=True, pending_left=1),
        interrupt.Outcome("s", [], converged=True),
    ):
        assert not interrupt.passed(bad), bad


def test_without_a_complete_tool_cache_the_scenario_stops_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESHSTACK_E2E_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(interrupt, "LOGS", tmp_path / "logs")
    assert interrupt.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("e2e-interrupt: tools: no complete tool cache at ")
    assert interrupt.main(["--stack", "mars-north-1"]) == 2
    assert interrupt.main(["--kill-after", "0", "10"]) == 2, "a kill point is positive seconds"


def test_sigint_is_passed_on_so_pulumi_stops_gracefully(tmp_path: Path) -> None:
    """tools/ci/pulumi.sh's `timeout` sends SIGINT to the recovery; the running command (its own
    process group) gets SIGINT too and may finish, as `pulumi` cancels itself gracefully."""
    marker = tmp_path / "got-int"
    script = f"trap 'echo int > {marker}; exit 7' INT; echo started; sleep 30 & wait"
    tool = recover_stack.Recovery("s", cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        tool.run(["sh", "-c", script], capture=True)
    timer.join()
    assert marker.read_text() == "int\n", "the command saw SIGINT, not SIGKILL"
    assert time.monotonic() - started < 20
