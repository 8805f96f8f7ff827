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
   the cluster (`kubectl get`, the stack's `meshstack:kubeContext`). Found: imported into the
   state with its ID (`namespace/name`, or `name` if cluster-scoped), so the next `up` updates
   it instead of creating a duplicate. Not found, or not a Kubernetes object (a provider, a
   RandomPassword whose value nobody received yet): cleared, so the next `up` creates it.
3. `pulumi refresh --yes --import-pending-creates <urn> <id> ... --clear-pending-creates`:
   imports first, clears the rest (pulumi's refresh applies them in that order), and reads
   every other resource back from the cluster (interrupted updates and deletes).
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
import json
import os
import signal
import subprocess
import sys
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


def refresh_args(stack: str, imports: Sequence[tuple[str, str]], clear: bool) -> list[str]:
    """The one refresh that settles every pending create: imports, then clears the rest."""
    args = ["pulumi", "refresh", "--yes", "--non-interactive", "--stack", stack]
    for urn, object_id in imports:
        args += ["--import-pending-creates", urn, "--import-pending-creates", object_id]
    if clear:
        args.append("--clear-pending-creates")
    return args


Lookup = Callable[[PendingCreate], "dict[str, Any] | None"]


def plan_pending(
    pending: Sequence[PendingCreate], lookup: Lookup
) -> tuple[list[tuple[str, str]], list[str]]:
    """(URN, ID) of each pending create whose object exists in the cluster, and the URNs of
    the others (to clear)."""
    imports, cleared = [], []
    for create in pending:
        live = lookup(create) if create.is_kubernetes_object else None
        if live is None:
            cleared.append(create.urn)
        else:
            imports.append((create.urn, resource_id(live)))
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
            argv += ["-o", "json", "--ignore-not-found"]
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
        for urn, object_id in imports:
            print(f"recover: import {urn} as {object_id} (it exists in the cluster)")
        for urn in cleared:
            print(f"recover: clear {urn} (not in the cluster; the next up creates it)")
        self.run(refresh_args(self.stack, imports, clear=bool(cleared)))
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
