"""`make e2e-interrupt`: `pulumi up` killed at several points, then the documented recovery
(docs/operations.md, "Interrupted deploy"; `tools/recover_stack.py`) until the stack converges.

One stack (default: the hub, the largest), on its own local control plane, with the harness of
`make e2e` (`tools/e2e/run.py`: the project copy, the file backend, the e2e settings, the same
CLI, logs under `build/e2e-interrupt/`). For each point in `KILL_AFTER`:

1. `pulumi up --yes --skip-preview`, killed with SIGKILL to its whole process group (the CLI,
   the language host, the program, the providers) that many seconds after it started, as a
   runner timeout or a lost runner leaves it; if the up finished first, the point is reported
   as not reached (the scenario then has nothing left to interrupt);
2. the next `pulumi up` must refuse at once, naming the lock (the symptom the runbook starts
   from);
3. the recovery: `pulumi cancel`, then every pending create looked up in the cluster and
   imported (it exists) or cleared (it does not) in one edit of the state, then `pulumi
   refresh`; the recovery itself checks that every import landed in the state.

Then a last `pulumi up` to completion, and the checks that the recovery converged:

- `pulumi preview --expect-no-changes` shows no change;
- every object of the stack's offline render is in the cluster (as `make e2e` checks);
- the state holds no pending operation and each Kubernetes object once (no duplicate);
- no object in the cluster that the provider's field manager wrote is missing from the state
  (no orphan): every live object, of every kind the stack uses, whose `managedFields` name a
  `pulumi-kubernetes` manager.

It ends with one line, e.g.

    e2e-interrupt: us-east-1: killed 3/3 (18/64/141 objects in state), 9 imported, 4 cleared;
    converged: no changes, 0 missing, 0 duplicated, 0 orphaned

and exits 0 only when every point was reached and every check holds.

Caveat: the tool cache's pulumi-resource-kubernetes is 4.25.0 code (tools/e2e/README.md), which
creates with server-side apply and so adopts an object that already exists; the real 4.34.2
answers `AlreadyExists` instead unless the pending create was imported. The scenario checks the
lock, the cancel, the import/clear decisions and the converged state; with 4.25 an import that
was wrongly skipped would not fail the next `up` (except where a new field manager conflicts
with the killed run's, as on a webhook configuration), so the recovery reads the state back
and fails unless every import is recorded with its ID.

    python -m tools.e2e.interrupt [--stack us-east-1] [--kill-after 10 25 45] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tools import recover_stack
from tools.e2e import run
from tools.e2e.controlplane import REPO, ControlPlane, ControlPlaneError, control_plane, tools_bin
from tools.stacks import deploy_order

LOGS: Final = REPO / "build" / "e2e-interrupt"
KILL_AFTER: Final = (8.0, 20.0, 12.0)
"""Seconds into each `pulumi up`; each up resumes from the state the previous recovery left.
On this machine us-east-1's `up` takes about 60 s (README, Benchmark): 8 s lands in the
namespaces and the first CRDs, the second up's 20 s among the charts, the third up's 12 s in
the custom resources and the awaits. (With the earlier 10/25/45 s, the faster up finished
before its third kill.)"""
LOCKED: Final = (("locked", "pulumi cancel"), ("409", "conflict", "another update"))
"""What the refused `up` after a kill says (all words of one group, case-insensitive): the
DIY backend (file, S3, ...; the e2e tier) "the stack is currently locked by 1 lock(s) ...
`pulumi cancel`", Pulumi Cloud "[409] Conflict: Another update is currently in progress."."""
FIELD_MANAGER_PREFIX: Final = "pulumi-kubernetes"
"""The provider's field managers: `pulumi-kubernetes-<id>` (server-side apply) and
`pulumi-kubernetes` (client-side create, 4.29+)."""


@dataclass
class KillPoint:
    """What one interrupted `up` left, and what the recovery did with it."""

    seconds: float
    reached: bool = False
    refused_while_locked: bool = False
    objects_in_state: int = 0
    pending: int = 0
    imported: int = 0
    cleared: int = 0


@dataclass
class Outcome:
    stack: str
    points: list[KillPoint] = field(default_factory=list)
    converged: bool = False
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    pending_left: int = 0


# --- pure parts (tests/tools/test_e2e_interrupt.py) --------------------------------------------


def object_key(api_version: str, kind: str, namespace: str | None, name: str) -> str:
    """`<group>/<Kind> <namespace>/<name>`: one object, whatever version names it."""
    group = api_version.rpartition("/")[0] or "core"
    return f"{group}/{kind} {namespace or ''}/{name}".replace(" /", " ")


def state_objects(export: dict[str, Any]) -> list[str]:
    """The key of every Kubernetes object the state records (custom Kubernetes resources with
    outputs; components, providers, other packages' resources and reads of objects the stack
    does not manage, `external`, are not objects)."""
    keys = []
    for res in export.get("deployment", {}).get("resources", []):
        if not str(res.get("type", "")).startswith("kubernetes:") or not res.get("custom"):
            continue
        if res.get("external"):
            continue
        outputs = res.get("outputs") or {}
        metadata = outputs.get("metadata") or {}
        if not (outputs.get("apiVersion") and outputs.get("kind") and metadata.get("name")):
            continue
        keys.append(
            object_key(
                outputs["apiVersion"], outputs["kind"], metadata.get("namespace"), metadata["name"]
            )
        )
    return keys


def duplicates(keys: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated = []
    for key in keys:
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    return repeated


def pending_count(export: dict[str, Any]) -> int:
    return len(export.get("deployment", {}).get("pending_operations") or [])


def written_by_pulumi(live: dict[str, Any]) -> bool:
    managers = live.get("metadata", {}).get("managedFields") or []
    return any(str(m.get("manager", "")).startswith(FIELD_MANAGER_PREFIX) for m in managers)


def orphans(live_objects: Iterable[dict[str, Any]], in_state: set[str]) -> list[str]:
    """Live objects the provider wrote that the state does not hold."""
    found = []
    for live in live_objects:
        meta = live["metadata"]
        key = object_key(live["apiVersion"], live["kind"], meta.get("namespace"), meta["name"])
        if written_by_pulumi(live) and key not in in_state:
            found.append(key)
    return sorted(found)


def collection_of(object_path: str, namespace: str) -> str:
    """The cluster-wide list path of an object's kind, from the object's REST path."""
    collection = object_path.rsplit("/", 1)[0]
    return collection.replace(f"/namespaces/{namespace}/", "/", 1)


def refused_because_locked(returncode: int, output: str) -> bool:
    text = output.lower()
    return returncode != 0 and any(all(word in text for word in words) for words in LOCKED)


def summary(outcome: Outcome) -> str:
    reached = [p for p in outcome.points if p.reached]
    counts = "/".join(str(p.objects_in_state) for p in outcome.points)
    return (
        f"e2e-interrupt: {outcome.stack}: killed {len(reached)}/{len(outcome.points)} "
        f"({counts} objects in state), {sum(p.imported for p in outcome.points)} imported, "
        f"{sum(p.cleared for p in outcome.points)} cleared; converged: "
        f"{'no changes' if outcome.converged else 'CHANGES'}, {len(outcome.missing)} missing, "
        f"{len(outcome.duplicated)} duplicated, {len(outcome.orphaned)} orphaned"
    )


def passed(outcome: Outcome) -> bool:
    return (
        bool(outcome.points)
        and all(p.reached and p.refused_while_locked for p in outcome.points)
        and outcome.converged
        and not (outcome.missing or outcome.duplicated or outcome.orphaned)
        and outcome.pending_left == 0
    )


# --- the scenario ------------------------------------------------------------------------------


def killed_up(cli: run.Cli, stack: str, kubeconfig: Path, seconds: float, step: str) -> bool:
    """`pulumi up` killed (SIGKILL to its process group) `seconds` after it started; False
    when it finished before; StepFailedError when it failed before."""
    log = cli.logs / stack / f"{step}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["pulumi", "up", "--yes", "--skip-preview", "--stack", stack, "--non-interactive"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cli.project,
            env=cli.env | {"KUBECONFIG": str(kubeconfig)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if proc.returncode:
        # Not "finished before the kill": the up that the recovery prepared failed.
        raise run.StepFailedError(
            f"{stack}: {step} failed (exit {proc.returncode}) before the kill at "
            f"{seconds:.0f}s, after the recovery of the previous kill, see {log}"
        )
    return False


def export_state(cli: run.Cli, stack: str, kubeconfig: Path, work: Path, step: str) -> Any:
    exported = work / f"{stack}-{step}.json"
    cli.pulumi(stack, step, "stack", "export", "--file", str(exported), kubeconfig=kubeconfig)
    return json.loads(exported.read_text())


def live_written_by_pulumi(cp: ControlPlane, expected: Sequence[dict[str, Any]]) -> list[Any]:
    """Every live object, of every kind the render has, cluster-wide."""
    kinds = sorted({(o["apiVersion"], o["kind"]) for o in expected})
    found: list[Any] = []
    for api_version, kind in kinds:
        probe = {"apiVersion": api_version, "kind": kind}
        path = cp.path_of(probe | {"metadata": {"name": "probe", "namespace": "probe"}})
        status, listed = cp.request("GET", collection_of(path, "probe"))
        if status != 200:
            raise run.StepFailedError(f"listing {api_version} {kind}: HTTP {status}")
        found += [probe | item for item in listed.get("items", [])]
    return found


def recovery(cli: run.Cli, stack: str, kubeconfig: Path) -> recover_stack.Recovery:
    env = cli.env | {"KUBECONFIG": str(kubeconfig)}
    return recover_stack.Recovery(stack, cwd=cli.project, env=env, timeout=run.STEP_TIMEOUT)


def scenario(stack: str, kill_after: Sequence[float], keep: Path | None = None) -> Outcome:
    cache = tools_bin().parent
    if not (cache / ".complete").exists():
        raise run.StepFailedError(f"tools: no complete tool cache at {cache}, run `make e2e-tools`")
    plan = run.plan(stack)
    outcome = Outcome(stack)
    with run._workdir(keep) as work:
        (work / "project").mkdir()
        run.copy_project(work / "project")
        cli = run.Cli(cache, work, LOGS)
        # The recovery looks pending creates up with kubectl (built with the control plane).
        (work / "bin" / "kubectl").symlink_to(cache / "bin" / "kubectl")
        started = time.monotonic()
        with control_plane(
            plan.kube_context, work / "cp" / stack, cache / "bin", plan.storage_class
        ) as cp:
            kc = cp.kubeconfig
            run._report(stack, "control plane", time.monotonic() - started, cp.server)
            expected = run.prepare_stack(cli, plan, cp, work)
            for number, seconds in enumerate(kill_after, start=1):
                point = KillPoint(seconds)
                outcome.points.append(point)
                point.reached = killed_up(cli, stack, kc, seconds, f"up-killed-{number}")
                if not point.reached:
                    run._report(stack, f"up {number}", seconds, "finished before the kill")
                    break
                rc, out, _ = cli.pulumi(
                    stack, f"up-locked-{number}", "up", "--yes", kubeconfig=kc, check=False
                )
                point.refused_while_locked = refused_because_locked(rc, out)
                tool = recovery(cli, stack, kc)
                tool.run(["pulumi", "cancel", "--yes", "--stack", stack])
                export = export_state(cli, stack, kc, work, f"state-killed-{number}")
                point.objects_in_state = len(state_objects(export))
                point.pending = pending_count(export)
                point.imported, point.cleared = tool.recover(cancel=False, up=False)
                run._report(
                    stack,
                    f"killed after {seconds:.0f}s",
                    seconds,
                    f"{point.objects_in_state} objects in state, {point.pending} pending; "
                    f"locked: {'refused' if point.refused_while_locked else 'NOT REFUSED'}; "
                    f"{point.imported} imported, {point.cleared} cleared",
                )
            _, _, took = cli.pulumi(
                stack, "up-final", "up", "--yes", "--skip-preview", kubeconfig=kc
            )
            run._report(stack, "up to completion", took)
            rc, _, took = cli.pulumi(
                stack,
                "preview-no-changes",
                "preview",
                "--expect-no-changes",
                "--diff",
                kubeconfig=kc,
                check=False,
            )
            outcome.converged = rc == 0
            _, outcome.missing = run.check_live(cp, expected)
            export = export_state(cli, stack, kc, work, "state-final")
            keys = state_objects(export)
            outcome.duplicated = duplicates(keys)
            outcome.pending_left = pending_count(export)
            outcome.orphaned = orphans(live_written_by_pulumi(cp, expected), set(keys))
            for name, found in (
                ("missing", outcome.missing),
                ("duplicated", outcome.duplicated),
                ("orphaned", outcome.orphaned),
            ):
                if found:
                    (cli.logs / stack / f"{name}.log").write_text("\n".join(found) + "\n")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.e2e.interrupt", description=__doc__)
    parser.add_argument("--stack", default=None, help="default: the hub (deploy order's first)")
    parser.add_argument("--kill-after", type=float, nargs="+", default=list(KILL_AFTER))
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (state, copies)")
    args = parser.parse_args(argv)
    stacks = deploy_order()
    stack = args.stack or stacks[0]
    if stack not in stacks:
        print(f"e2e-interrupt: no stack file for {stack}", file=sys.stderr)
        return 2
    if min(args.kill_after) <= 0:
        # Each point is measured from the start of its own up, which resumes the last one.
        print("e2e-interrupt: --kill-after takes positive seconds", file=sys.stderr)
        return 2
    if LOGS.exists():
        shutil.rmtree(LOGS)
    LOGS.mkdir(parents=True)
    try:
        outcome = scenario(stack, args.kill_after, args.keep)
    except (run.StepFailedError, ControlPlaneError, recover_stack.RecoveryError) as exc:
        print(f"e2e-interrupt: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"e2e-interrupt: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    line = summary(outcome)
    (LOGS / "summary.txt").write_text(line + "\n")
    print(line)
    return 0 if passed(outcome) else 1


if __name__ == "__main__":
    sys.exit(main())
