"""make e2e-preview-guard: the preview identity's guard on a real kube-apiserver.

docs/cluster/preview-guard.yaml is applied with `kubectl` to a local control plane (etcd and
kube-apiserver of the e2e tool cache, tools/e2e/controlplane.py, RBAC and the built-in
ValidatingAdmissionPolicy admission on), then every request below is sent as an impersonated
member of the preview group (`kubectl --as=… --as-group=meshstack:previewers`), whom RBAC
allows every verb on the core and `apps` kinds, as docs/policy.md has the preview identity:

- first, the guard with `resources: ["*", "*/*"]` is refused by the API server (the rule
  tests/test_preview_guard.py checks offline), and, without the guard, the group's real create
  succeeds (so each denial below is the guard's, not RBAC's);
- real writes are denied with the guard's message: create (plain and server-side apply),
  update (client-side apply), delete, a cluster-scoped create, and the subresources
  `deployments/scale`, `deployments/status` and `serviceaccounts/token`;
- dry runs pass: create, server-side apply (new and existing object), delete, scale; and reads;
- afterwards, as the admin: nothing the group sent persisted, and the admin's writes pass;
- admission configuration: the guard denies the group's real write to a webhook configuration
  RBAC grants it, but the API server runs no policy on policies and bindings, so a group that
  RBAC lets delete the guard's binding removes the guard (checked, last): RBAC is the only
  control there, as docs/policy.md says.

    python -m tools.e2e.preview_guard [--bin DIR] [--workdir DIR]

`--bin` is a folder with etcd, kube-apiserver and kubectl (default: the cache of
tools/e2e/build.sh; only those three are used). One line per check, then one summary line;
exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from tools.e2e.controlplane import REPO, ControlPlane, ControlPlaneError, control_plane, tools_bin

GUARD: Final = REPO / "docs" / "cluster" / "preview-guard.yaml"
GROUP: Final = "meshstack:previewers"
PREVIEWER: Final = ("--as=meshstack-preview", f"--as-group={GROUP}")
DENIED: Final = "the meshstack preview identity may only send dry-run requests"
NS: Final = "guarded"
WEBHOOK: Final = "istio-validator-istio-system"
POLICY: Final = "meshstack-previewers-dry-run-only"
REJECTED_RULE: Final = "if '*/*' is present, must not specify other resources"


@dataclass(frozen=True)
class Case:
    """One request of the preview group: `kubectl <argv>`, and whether the guard lets it by."""

    what: str
    argv: tuple[str, ...]
    allowed: bool
    stdin: str = ""


def _configmap(name: str, value: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS},
            "data": {"value": value},
        }
    )


SSA: Final = ("apply", "--server-side", "--force-conflicts", "--field-manager=pulumi", "-f", "-")
CASES: Final = (
    Case("create a ConfigMap", ("create", "configmap", "c1", "-n", NS), allowed=False),
    Case("create a Namespace (cluster-scoped)", ("create", "namespace", "n1"), allowed=False),
    Case("server-side apply a new object", SSA, False, _configmap("c2", "new")),
    Case("server-side apply an existing object", SSA, False, _configmap("existing", "changed")),
    Case("client-side apply (update)", ("apply", "-f", "-"), False, _configmap("existing", "x")),
    Case("delete an object", ("delete", "configmap", "existing", "-n", NS), allowed=False),
    Case(
        "deployments/scale",
        ("scale", "deployment", "web", "-n", NS, "--replicas=3"),
        allowed=False,
    ),
    Case(
        "deployments/status",
        (
            *("patch", "deployment", "web", "-n", NS, "--subresource=status", "--type=merge"),
            *("-p", '{"status":{"observedGeneration":7}}'),
        ),
        allowed=False,
    ),
    Case("serviceaccounts/token", ("create", "token", "sa", "-n", NS), allowed=False),
    Case(
        "dry-run create",
        ("create", "configmap", "c3", "-n", NS, "--dry-run=server"),
        allowed=True,
    ),
    Case("SSA dry run, new object", (*SSA, "--dry-run=server"), True, _configmap("c4", "new")),
    Case(
        "SSA dry run, existing object",
        (*SSA, "--dry-run=server"),
        True,
        _configmap("existing", "changed"),
    ),
    Case(
        "dry-run delete",
        ("delete", "configmap", "existing", "-n", NS, "--dry-run=server"),
        allowed=True,
    ),
    Case(
        "dry-run scale",
        ("scale", "deployment", "web", "-n", NS, "--replicas=3", "--dry-run=server"),
        allowed=True,
    ),
    Case("read", ("get", "configmap", "existing", "-n", NS, "-o", "name"), allowed=True),
)


def verdict(case: Case, returncode: int, output: str) -> tuple[bool, str]:
    """(as expected, what happened): an allowed request must succeed; a denied one must fail
    with the guard's message (a failure for another reason, e.g. RBAC, proves nothing)."""
    if returncode == 0:
        return case.allowed, "admitted"
    if DENIED in output:
        return not case.allowed, "denied by the guard"
    last = output.strip().splitlines()[-1:] or [f"exit {returncode}"]
    return False, f"failed otherwise: {last[0]}"


# What the admin creates before the guard: the group's RBAC and the objects the cases touch.
RBAC: Final[list[dict[str, Any]]] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "meshstack-previewer"},
        "rules": [
            {"apiGroups": ["", "apps"], "resources": ["*"], "verbs": ["*"]},
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingwebhookconfigurations"],
                "resourceNames": [WEBHOOK],
                "verbs": ["get", "patch", "update"],
            },
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingadmissionpolicybindings"],
                "resourceNames": [POLICY],
                "verbs": ["get", "delete"],
            },
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "meshstack-previewer"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "meshstack-previewer",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": GROUP}],
    },
]
FIXTURES: Final[list[dict[str, Any]]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "existing", "namespace": NS},
        "data": {"value": "original"},
    },
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa", "namespace": NS}},
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]},
            },
        },
    },
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK},
        "webhooks": [],
    },
]


class Guarded:
    """kubectl against one control plane, as the admin or as the preview group."""

    def __init__(self, cp: ControlPlane, kubectl: Path) -> None:
        self.cp = cp
        self.kubectl = kubectl

    def run(
        self, argv: Sequence[str], *, previewer: bool = False, stdin: str = ""
    ) -> tuple[int, str]:
        cmd = [str(self.kubectl), f"--kubeconfig={self.cp.kubeconfig}"]
        cmd += [*PREVIEWER] if previewer else []
        done = subprocess.run(
            [*cmd, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        return done.returncode, done.stdout + done.stderr

    def admin_apply(self, docs: Sequence[dict[str, Any]] | str) -> None:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        rc, out = self.run(["apply", "-f", "-"], stdin=text)
        if rc:
            raise ControlPlaneError(f"kubectl apply as admin failed: {out.strip()}")


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.count = 0

    def check(self, ok: bool, what: str) -> None:
        self.count += 1
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            self.failed.append(what)


def _guard_with(resources: list[str]) -> str:
    docs = [d for d in yaml.safe_load_all(GUARD.read_text()) if d]
    docs[0]["spec"]["matchConstraints"]["resourceRules"][0]["resources"] = resources
    return yaml.safe_dump_all(docs)


def _wait_for(k: Guarded, *, guarded: bool, timeout: float = 60) -> bool:
    """Whether the group's real create comes to be denied by the guard (`guarded`) or to pass
    within `timeout`: a policy or binding takes effect once the API server's informers have
    loaded (and type-checked) it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc, out = k.run(["create", "configmap", "probe", "-n", NS], previewer=True)
        if rc == 0:
            k.run(["delete", "configmap", "probe", "-n", NS])
        if (guarded and rc and DENIED in out) or (not guarded and rc == 0):
            return True
        time.sleep(1)
    return False


def exercise(k: Guarded) -> Checks:
    checks = Checks()
    rc, out = k.run(["apply", "--dry-run=server", "-f", "-"], stdin=_guard_with(["*", "*/*"]))
    checks.check(
        rc != 0 and REJECTED_RULE in out,
        f'the API server refuses resources ["*", "*/*"] ({REJECTED_RULE})',
    )
    k.admin_apply(RBAC + FIXTURES)
    rc, out = k.run(["create", "configmap", "control", "-n", NS], previewer=True)
    checks.check(rc == 0, "without the guard, RBAC lets the group write (control)")
    k.run(["delete", "configmap", "control", "-n", NS])

    k.admin_apply(GUARD.read_text())
    checks.check(_wait_for(k, guarded=True), "the guard is in force (a real create is denied)")
    for case in CASES:
        rc, out = k.run(case.argv, previewer=True, stdin=case.stdin)
        ok, happened = verdict(case, rc, out)
        checks.check(ok, f"{case.what}: {happened}")

    # As the admin: nothing the group sent persisted; the admin is not affected.
    rc, out = k.run(["get", "configmap", "existing", "-n", NS, "-o", "json"])
    value = json.loads(out)["data"]["value"] if rc == 0 else None
    checks.check(value == "original", f"the existing object is unchanged ({value!r})")
    for kind, name, ns in (
        ("configmap", "c1", NS),
        ("configmap", "c2", NS),
        ("configmap", "c3", NS),
        ("configmap", "c4", NS),
        ("namespace", "n1", ""),
    ):
        rc, out = k.run(["get", kind, name, *(["-n", ns] if ns else []), "--ignore-not-found"])
        checks.check(rc == 0 and not out.strip(), f"{kind} {name} was not created")
    rc, out = k.run(["get", "deployment", "web", "-n", NS, "-o", "json"])
    deployment = json.loads(out) if rc == 0 else {}
    replicas = deployment.get("spec", {}).get("replicas")
    generation = deployment.get("status", {}).get("observedGeneration")
    checks.check(replicas == 1, f"the deployment's replicas are unchanged ({replicas})")
    checks.check(generation != 7, "the deployment's status is unchanged")
    rc, _ = k.run(["create", "configmap", "by-admin", "-n", NS])
    checks.check(rc == 0, "the admin's real create passes (only the group is guarded)")

    # Webhooks never see admission configuration (k8s.io/apiserver, webhook/generic:
    # IsExemptAdmissionConfigurationResource); validating admission policies see webhook
    # configurations, but never policies or bindings (policy/generic/plugin.go:
    # admissionResources are excluded). RBAC grants the group both writes here.
    rc, out = k.run(
        ["label", "validatingwebhookconfiguration", WEBHOOK, "changed-by=previewer"],
        previewer=True,
    )
    checks.check(rc != 0 and DENIED in out, "a webhook configuration write: denied by the guard")
    rc, out = k.run(["delete", "validatingadmissionpolicybinding", POLICY], previewer=True)
    checks.check(
        rc == 0,
        "the guard's own binding is outside every policy: the group, granted `delete` on it by "
        "RBAC, removed it (so RBAC must never grant it: docs/policy.md)",
    )
    checks.check(
        _wait_for(k, guarded=False), "without its binding the guard is gone: real creates pass"
    )
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.e2e.preview_guard")
    parser.add_argument("--bin", type=Path, help="folder with etcd, kube-apiserver, kubectl")
    parser.add_argument("--workdir", type=Path, help="keep the control plane's state and logs")
    args = parser.parse_args(argv)
    bin_dir: Path = args.bin or tools_bin()
    kubectl = bin_dir / "kubectl"
    if not kubectl.exists():
        print(f"preview-guard: {kubectl} is missing: run make e2e-tools", file=sys.stderr)
        return 1
    print(f"preview-guard: {GUARD.relative_to(REPO)} on kube-apiserver from {bin_dir}")
    try:
        with control_plane("preview-guard", args.workdir, bin_dir, api_only=True) as cp:
            checks = exercise(Guarded(cp, kubectl))
    except (ControlPlaneError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        print(f"preview-guard: {exc}", file=sys.stderr)
        return 1
    passed = checks.count - len(checks.failed)
    print(f"preview-guard: {passed}/{checks.count} checks passed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
