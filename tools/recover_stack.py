"""Recover a region stack after an interrupted `pulumi up` (docs/operations.md, "Interrupted
deploy").

A `pulumi up` killed mid-run (a job timeout, a cancelled run, a lost runner) leaves the stack
locked and, in its state, *pending operations*: the resources whose create, update or delete
was in flight. A pending create may or may not exist in the cluster: the provider may have
sent the request before the kill. The next `up` creates it again, and pulumi-kubernetes 4.29+
(client-side create; `upsertExistingObjects` off, as this project keeps it) then fails with
`AlreadyExists` for an object the killed run created but never recorded. This script settles
each one instead of guessing:

1. `--cancel`: `pulumi cancel --yes` releases the lock of the interrupted update. Run it only
   when no `deploy`/`region` run is in progress or waiting (`region.yml`'s `recover` job
   checks it first, tools/ci/no_other_run.py): cancelling a live update would interrupt it
   too.
2. `pulumi stack export`, then for every pending create of a Kubernetes object: looked up in
   the cluster (`kubectl get`, the stack's `meshstack:kubeContext`). Found: recorded in the
   state as a resource with its ID (`namespace/name`, or `name` if cluster-scoped) and, if
   the killed run created it by server-side apply, the field manager it used, so the next
   `up` updates it as that manager instead of creating a duplicate (or conflicting with
   itself); in the place of the entry it was replacing, if any (`settled_deployment`). An
   object no `pulumi-kubernetes` manager ever wrote stops the recovery (`plan_pending`). Not found,
   or not a Kubernetes object (a provider, a RandomPassword whose value nobody received yet):
   cleared, so the next `up` creates it. The edited state goes back with `pulumi stack
   import`. (`pulumi refresh --import-pending-creates` is not used: Pulumi 3.274's refresh
   drops such an import from the pending operations without recording the resource, the same
   as a clear; measured, and read in pkg/backend/snapshot.go, which carries only pending
   *creates* of the base state into the new one.)
3. `pulumi refresh --yes`: reads every recorded resource back from the cluster, the imported
   ones included (their outputs are the live objects after it), and settles interrupted
   updates and deletes. Then a last export checks that every import is in the state with its
   ID and that no pending create is left; recovery fails in one line otherwise.
4. `--up`: `pulumi up --yes` of the checked-out commit (in CI: `region.yml`, `operation: up`,
   at the commit the interrupted run deployed, behind the region's approval).

    python -m tools.recover_stack --stack <org>/meshstack/<stack> [--cancel] [--up]

It runs as `region.yml`'s `recover` job (`-f operation=recover -f ref=<commit the interrupted
run deployed>`): in the region's environment, after its approval, through tools/ci/pulumi.sh
(`pulumi env run <org>/meshstack/deploy-<stack> -- ...`), so the deploy credentials stay in
the environment job. From a workstation only with the break-glass access of docs/policy.md.
Every command is printed before it runs; SIGINT is passed on to the running command.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

PROJECT_DIR: Final = Path(__file__).resolve().parents[1]
UNSERVED_KIND: Final = "the server doesn't have a resource type"
"""kubectl's answer for a kind the cluster does not serve (its CRD is not there): such an
object cannot exist, so its pending create is cleared like a missing object."""
GRACE_SECONDS: Final = 240.0
"""How long a command interrupted by SIGINT may take to stop (tools/ci/pulumi.sh kills after 5
minutes)."""
POLICY_ARGS: Final = ("--policy-pack", "policy", "--policy-pack-config", "policy/config.json")


class RecoveryError(RuntimeError):
    """Recovery cannot go on; the message is one line."""


@dataclass(frozen=True)
class PendingCreate:
    """A create the interrupted run started and never finished recording."""

    urn: str
    api_version: str = ""
    kind: str = ""
    name: str = ""
    namespace: str = ""

    @property
    def is_kubernetes_object(self) -> bool:
        return bool(self.kind and self.api_version and self.name)


def pending_creates(export: dict[str, Any]) -> list[PendingCreate]:
    """Every pending create of a `pulumi stack export`, with the Kubernetes object it names
    (from the resource's inputs; provider and non-Kubernetes resources carry no object)."""
    found = []
    for op in export.get("deployment", {}).get("pending_operations") or []:
        if op.get("type") != "creating":
            continue
        resource = op.get("resource", {})
        urn = resource["urn"]
        kind = api_version = name = namespace = ""
        inputs = resource.get("inputs") or {}
        kubernetes = str(resource.get("type", "")).startswith("kubernetes:")
        if kubernetes and resource.get("custom", True) and isinstance(inputs, dict):
            metadata = inputs.get("metadata") or {}
            api_version, kind = str(inputs.get("apiVersion", "")), str(inputs.get("kind", ""))
            # A name or namespace not known yet (computed) is not a string: not an object.
            name = str(metadata["name"]) if isinstance(metadata.get("name"), str) else ""
            ns = metadata.get("namespace", "")
            namespace = ns if isinstance(ns, str) else ""
        found.append(PendingCreate(urn, api_version, kind, name, namespace))
    return found


def kubectl_type(api_version: str, kind: str) -> str:
    """What `kubectl get` takes for a kind: `Deployment.v1.apps`, or `ConfigMap` (core)."""
    group, _, version = api_version.rpartition("/")
    return f"{kind}.{version}.{group}" if group else kind


def resource_id(live: dict[str, Any]) -> str:
    """pulumi-kubernetes' ID of a live object: `namespace/name`, or `name` if cluster-scoped."""
    metadata = live["metadata"]
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata['name']}" if namespace else str(metadata["name"])


REFRESH_ARGS: Final = ("pulumi", "refresh", "--yes", "--non-interactive")
PROVIDER_FIELD_MANAGER: Final = "pulumi-kubernetes-"
"""The prefix of the server-side-apply field manager pulumi-kubernetes names per resource at
create (provider.go fieldManagerName) and keeps in the resource's state (`__fieldManager`)."""


def apply_field_manager(live: dict[str, Any]) -> str:
    """The field manager pulumi-kubernetes applied `live` with (the newest such `Apply` entry of
    its managedFields), or "" (a client-side create has no per-resource manager)."""
    entries = [
        entry
        for entry in live.get("metadata", {}).get("managedFields") or []
        if entry.get("operation") == "Apply"
        and str(entry.get("manager", "")).startswith(PROVIDER_FIELD_MANAGER)
    ]
    entries.sort(key=lambda entry: str(entry.get("time", "")))
    return str(entries[-1]["manager"]) if entries else ""


@dataclass(frozen=True)
class Import:
    """A pending create whose object exists: its URN, the provider's ID and what the state
    needs so the provider reads it and later updates it as the manager that created it."""

    urn: str
    object_id: str
    api_version: str = ""
    field_manager: str = ""


def settled_deployment(export: dict[str, Any], imports: Sequence[Import]) -> dict[str, Any]:
    """`export` with every pending create settled: each import recorded as a resource, every
    other pending create removed. Pending updates and deletes are left as they are: `pulumi
    stack import` drops them (as a refresh would), and the refresh reads their resources back
    from the cluster.

    Where the import goes: a new resource is appended (its parent, provider and dependencies
    were recorded before its create started). A create that was replacing an object has its
    URN in the state already (pulumi-kubernetes replaces a renamed object create-before-delete
    and one whose name stays delete-before-replace): an old entry `pendingReplacement`
    (its object already deleted) gives its place to the import, so what depends on that URN
    still comes after it; any other old entry is marked `delete`, as the engine would have
    marked it once the create finished, and the next `up` deletes its object.
    """
    settled: dict[str, Any] = copy.deepcopy(export)
    deployment = settled.setdefault("deployment", {})
    by_urn = {item.urn: item for item in imports}
    resources: list[dict[str, Any]] = deployment.setdefault("resources", [])
    remaining = []
    for op in deployment.get("pending_operations") or []:
        if op.get("type") != "creating":
            remaining.append(op)
            continue
        item = by_urn.get(op.get("resource", {}).get("urn", ""))
        if item is None:
            continue
        resource = dict(op["resource"])
        resource["id"] = item.object_id
        outputs: dict[str, Any] = {"__initialApiVersion": item.api_version}
        if item.field_manager:
            outputs["__fieldManager"] = item.field_manager
        resource["outputs"] = outputs
        replaced = [
            i
            for i, r in enumerate(resources)
            if r.get("urn") == item.urn and r.get("pendingReplacement")
        ]
        if replaced:
            resources[replaced[0]] = resource
            continue
        for old in resources:
            if old.get("urn") == item.urn and not old.get("delete"):
                old["delete"] = True
        resources.append(resource)
    deployment["pending_operations"] = remaining
    return settled


def unsettled(export: dict[str, Any], imports: Sequence[Import]) -> list[str]:
    """What a recovered state still lacks: an import not recorded with its ID, a pending create."""
    recorded = {
        r.get("urn"): r.get("id")
        for r in export.get("deployment", {}).get("resources") or []
        if not r.get("delete")
    }
    problems = [
        f"{item.urn} not in the state as {item.object_id}"
        for item in imports
        if recorded.get(item.urn) != item.object_id
    ]
    problems += [f"{create.urn} still a pending create" for create in pending_creates(export)]
    return problems


Lookup = Callable[[PendingCreate], "dict[str, Any] | None"]


def written_by_pulumi(live: dict[str, Any]) -> bool:
    """Whether pulumi-kubernetes wrote `live`: a managedFields entry of its per-resource
    server-side-apply manager or of its fixed client-side one (`pulumi-kubernetes`)."""
    return any(
        str(entry.get("manager", "")).startswith(PROVIDER_FIELD_MANAGER.rstrip("-"))
        for entry in live.get("metadata", {}).get("managedFields") or []
    )


def plan_pending(
    pending: Sequence[PendingCreate], lookup: Lookup
) -> tuple[list[Import], list[str]]:
    """The import of each pending create whose object exists in the cluster, and the URNs of
    the others (to clear). An object of that name that pulumi-kubernetes never wrote stops
    the recovery: it existed before the killed create (which would then have failed with
    AlreadyExists), and importing it would adopt it silently, what keeping
    `upsertExistingObjects` off is for."""
    imports, cleared = [], []
    for create in pending:
        live = lookup(create) if create.is_kubernetes_object else None
        if live is None:
            cleared.append(create.urn)
            continue
        object_id = resource_id(live)
        if not written_by_pulumi(live):
            raise RecoveryError(
                f"{create.kind} {object_id} exists but pulumi-kubernetes never wrote it (no "
                f"field manager of it in managedFields): not imported into {create.urn}; "
                "delete it or import it deliberately (`pulumi import`), then run the recovery "
                "again"
            )
        imports.append(Import(create.urn, object_id, create.api_version, apply_field_manager(live)))
    return imports, cleared


class Recovery:
    """The commands, run in the project directory with the caller's environment."""

    def __init__(
        self,
        stack: str,
        cwd: Path = PROJECT_DIR,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.stack = stack
        self.cwd = cwd
        self.env = env if env is not None else dict(os.environ)
        self.timeout = timeout

    def run(self, argv: Sequence[str], *, capture: bool = False) -> str:
        """Run one command in its own process group (killed with its children on a timeout or
        an exception); its stdout when `capture`, else it goes to ours."""
        print(f"recover: $ {' '.join(argv)}", flush=True)
        proc = subprocess.Popen(
            list(argv),
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except KeyboardInterrupt:
            # SIGINT (tools/ci/pulumi.sh's `timeout`, a Ctrl-C): passed on, so a pulumi command
            # cancels itself gracefully and releases the lock; killed if it does not end.
            self._stop(proc, signal.SIGINT, GRACE_SECONDS)
            raise
        except BaseException:
            self._stop(proc, signal.SIGKILL, 0)
            raise
        if proc.returncode:
            detail = (err or "").strip().splitlines()[-1:]
            raise RecoveryError(
                f"{argv[0]} {argv[1]} failed (exit {proc.returncode}){': ' if detail else ''}"
                f"{''.join(detail)}"
            )
        return out or ""

    @staticmethod
    def _stop(proc: subprocess.Popen[str], sig: signal.Signals, grace: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace or None)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kube_context(self) -> str:
        out = self.run(
            ["pulumi", "config", "get", "meshstack:kubeContext", "--stack", self.stack],
            capture=True,
        )
        return out.strip()

    def lookup(self, context: str) -> Lookup:
        def get(create: PendingCreate) -> dict[str, Any] | None:
            argv = ["kubectl", "get", kubectl_type(create.api_version, create.kind), create.name]
            # managedFields name the field manager the killed create applied with;
            # kubectl leaves them out unless asked.
            argv += ["-o", "json", "--ignore-not-found", "--show-managed-fields"]
            if context:
                argv += ["--context", context]
            if create.namespace:
                argv += ["--namespace", create.namespace]
            try:
                out = self.run(argv, capture=True).strip()
            except RecoveryError as error:
                if UNSERVED_KIND in str(error):
                    return None
                raise
            live: dict[str, Any] | None = json.loads(out) if out else None
            return live

        return get

    def recover(self, *, cancel: bool, up: bool) -> tuple[int, int]:
        """Steps 1-4; returns (imported, cleared)."""
        if cancel:
            self.run(["pulumi", "cancel", "--yes", "--stack", self.stack])
        export = json.loads(
            self.run(["pulumi", "stack", "export", "--stack", self.stack], capture=True)
        )
        pending = pending_creates(export)
        imports, cleared = plan_pending(pending, self.lookup(self.kube_context()))
        for item in imports:
            manager = f", field manager {item.field_manager}" if item.field_manager else ""
            print(f"recover: import {item.urn} as {item.object_id} (it exists{manager})")
        for urn in cleared:
            print(f"recover: clear {urn} (not in the cluster; the next up creates it)")
        if pending:
            with tempfile.TemporaryDirectory(prefix="meshstack-recover-") as tmp:
                edited = Path(tmp) / "state.json"
                edited.write_text(json.dumps(settled_deployment(export, imports)))
                self.run(
                    ["pulumi", "stack", "import", "--stack", self.stack, "--file", str(edited)]
                )
        self.run([*REFRESH_ARGS, "--stack", self.stack])
        after = json.loads(
            self.run(["pulumi", "stack", "export", "--stack", self.stack], capture=True)
        )
        problems = unsettled(after, imports)
        if problems:
            raise RecoveryError(f"the state after the refresh: {'; '.join(problems)}")
        if up:
            self.run(
                ["pulumi", "up", "--yes", "--non-interactive", "--stack", self.stack, *POLICY_ARGS]
            )
        return len(imports), len(cleared)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stack", required=True, help="<org>/meshstack/<stack>")
    parser.add_argument(
        "--cancel",
        action="store_true",
        help="release the interrupted update's lock first (only when no run is in progress)",
    )
    parser.add_argument("--up", action="store_true", help="then pulumi up this checkout")
    args = parser.parse_args(argv)
    try:
        imported, cleared = Recovery(args.stack).recover(cancel=args.cancel, up=args.up)
    except (RecoveryError, OSError, json.JSONDecodeError) as error:
        print(f"recover: {error}", file=sys.stderr)
        return 1
    print(f"recover: {args.stack}: {imported} pending creates imported, {cleared} cleared")
    return 0


if __name__ == "__main__":
    sys.exit(main())
