"""`make e2e-bench`: what `pulumi up` of the hub costs next to doing the same by hand.

A measurement, not a test (nothing here asserts a time). In one run, each on a fresh local
control plane (`controlplane.py`, one running at a time) and with the tools `make e2e-tools`
built:

- `pulumi up` of every stack, hub first (the e2e settings of `tools.e2e.run`), then `pulumi
  preview` with no changes per stack: the wall time a pull request's preview costs;
- what a user would do instead for the hub's objects: the stack's offline render
  (`tools.render`: the same charts, values and objects), then `kubectl apply --server-side`
  of its namespaces, `helm install --wait` of every chart with the program's values
  (`istio-base` first, then `istiod`, then the others in the render's order), `kubectl apply
  --server-side` of `manifests.yaml`, and `kubectl wait` until every Deployment is Available
  (what Pulumi's await logic waits for);
- the hub's `pulumi up` once more on a fresh control plane with `PULUMI_SKIP_CHECKPOINTS`,
  to show what the file backend's checkpoint writes cost (a measurement only).

Prints a table and the ratio (pulumi up ÷ helm+kubectl), and writes it to
`build/e2e-bench/summary.md`; the last line is
`e2e-bench: pulumi up / by hand = <r>x, preview (no changes) <s>s` for the hub. The Pulumi
commands run with the engine's defaults, as the workflows' do (README, Benchmark: why no
`PULUMI_PARALLEL`).

    python -m tools.e2e.bench [--stacks us-east-1 ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import yaml

from tools import install_helm
from tools.e2e import run
from tools.e2e.controlplane import REPO, ControlPlane, ControlPlaneError, control_plane, tools_bin
from tools.stacks import deploy_order

OUT: Final = REPO / "build" / "e2e-bench"
FIRST_CHARTS: Final = ("istio-base", "istiod")
"""Helm releases a user installs first: the CRDs, then the control plane."""


def _timed(argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> float:
    started = time.monotonic()
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(
            argv, check=False, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
    took = time.monotonic() - started
    if proc.returncode:
        raise run.StepFailedError(f"bench: {argv[0]} {argv[1]} failed, see {log}")
    return took


def _stand_in_secret(obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret whose whole `stringData` the render shows as `[secret]` (a secret Output)
    gets a stand-in map, so kubectl can apply it."""
    if obj["kind"] == "Secret" and isinstance(obj.get("stringData"), str):
        return obj | {"stringData": {"stand-in": "e2e-bench-" + "x" * 22}}
    return obj


def _is_built_in(obj: dict[str, Any]) -> bool:
    """A Kubernetes kind (core, apps, policy, `*.k8s.io` ...), not a custom resource."""
    group = obj["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def by_hand(stack: str, cp: ControlPlane, work: Path, cache: Path) -> dict[str, float]:
    """helm install --wait + kubectl apply --server-side of the stack's render; seconds."""
    render = work / "render" / stack
    objects = run.rendered_objects(stack, render, OUT)  # manifests.yaml, helm.yaml, charts.yaml
    for ns in run.prerequisite_namespaces(objects):  # the cluster's, as for `pulumi up`
        cp.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(cp.kubeconfig), "HOME": str(work)}
    kubectl, helm = str(cache / "bin" / "kubectl"), str(install_helm.binary_path())
    log = OUT / f"{stack}-by-hand.log"
    manifests = [
        _stand_in_secret(d)
        for d in yaml.safe_load_all((render / "manifests.yaml").read_text())
        if d
    ]
    (work / "manifests.yaml").write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    namespaces, built_in = work / "namespaces.yaml", work / "built-in.yaml"
    namespaces.write_text(
        yaml.safe_dump_all([d for d in manifests if d["kind"] == "Namespace"], sort_keys=False)
    )
    built_in.write_text(
        yaml.safe_dump_all(
            [d for d in manifests if _is_built_in(d) and d["kind"] != "Namespace"],
            sort_keys=False,
        )
    )
    releases: list[dict[str, Any]] = [
        d for d in yaml.safe_load_all((render / "helm.yaml").read_text()) if d
    ]
    releases.sort(key=lambda r: FIRST_CHARTS.index(r["name"]) if r["name"] in FIRST_CHARTS else 99)
    apply = [kubectl, "apply", "--server-side", "--field-manager=by-hand"]
    # Namespaces, then the other built-in kinds (the claim Jaeger's pod mounts, ...): `helm
    # --wait` waits for pods that need them. Custom resources after the charts with their CRDs.
    times = {
        "kubectl apply namespaces": _timed([*apply, "-f", str(namespaces)], log, env, REPO),
        "kubectl apply built-in kinds of manifests.yaml": _timed(
            [*apply, "-f", str(built_in)], log, env, REPO
        ),
    }
    helm_total = 0.0
    for release in releases:
        values = work / f"values-{release['name']}.yaml"
        values.write_text(yaml.safe_dump(release["values"] or {}, sort_keys=False))
        chart = (REPO / release["chart"]).resolve()
        helm_total += _timed(
            [
                helm,
                "install",
                release["name"],
                str(chart),
                "--namespace",
                release["namespace"],
                "--values",
                str(values),
                "--wait",
                "--timeout",
                "10m",
            ],
            log,
            env,
            REPO,
        )
    times["helm install --wait (all charts)"] = helm_total
    times["kubectl apply manifests.yaml (custom resources)"] = _timed(
        [*apply, "-f", str(work / "manifests.yaml")], log, env, REPO
    )
    times["kubectl wait deployments Available"] = _timed(
        [
            kubectl,
            "wait",
            "--for=condition=Available",
            "deployment",
            "--all",
            "--all-namespaces",
            "--timeout=10m",
        ],
        log,
        env,
        REPO,
    )
    return times


def bench(stacks: list[str]) -> str:
    """Run the measurements; the first stack is the one also done by hand."""
    cache = tools_bin().parent
    if not (cache / ".complete").exists():
        raise run.StepFailedError(f"no complete tool cache at {cache}, run `make e2e-tools`")
    plans = [run.plan(s) for s in stacks]
    up: dict[str, float] = {}
    no_change: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="meshstack-bench-") as tmp:
        work = Path(tmp)
        (work / "project").mkdir()
        run.copy_project(work / "project")
        cli = run.Cli(cache, work, OUT)
        for stack in plans:
            # One control plane at a time: each is stopped before the next measurement (the
            # spokes need only the hub's state, which the file backend keeps).
            with control_plane(
                stack.kube_context, work / "cp" / stack.name, cache / "bin", stack.storage_class
            ) as cp:
                kc = cp.kubeconfig
                run.prepare_stack(cli, stack, cp, work)
                _, _, up[stack.name] = cli.pulumi(
                    stack.name, "up", "up", "--yes", "--skip-preview", kubeconfig=kc
                )
                _, _, no_change[stack.name] = cli.pulumi(
                    stack.name, "preview", "preview", "--expect-no-changes", kubeconfig=kc
                )
            print(
                f"e2e-bench: {stack.name}: pulumi up {up[stack.name]:.1f}s, "
                f"preview (no changes) {no_change[stack.name]:.1f}s",
                flush=True,
            )
        hub = plans[0]
        with control_plane(
            hub.kube_context, work / "cp" / "by-hand", cache / "bin", hub.storage_class
        ) as fresh:
            manual = by_hand(hub.name, fresh, work, cache)
        unrecorded = up_without_checkpoints(hub, work / "no-checkpoints", cache)
    total = sum(manual.values())
    lines = [
        f"| measurement ({hub.name}, fresh control plane each) | seconds |",
        "|---|---|",
        f"| `pulumi up` of {hub.name} | {up[hub.name]:.1f} |",
        *(f"| by hand: {step} | {seconds:.1f} |" for step, seconds in manual.items()),
        f"| by hand, in all | {total:.1f} |",
        f"| ratio pulumi up ÷ by hand | {up[hub.name] / total:.2f}x |",
        f"| `pulumi up` without checkpoint writes ({SKIP_CHECKPOINTS}, measurement only) "
        f"| {unrecorded:.1f} ({unrecorded / total:.2f}x) |",
        "",
        "| stack | `pulumi up` (s) | `pulumi preview`, no changes (s) |",
        "|---|---|---|",
        *(f"| {s} | {up[s]:.1f} | {no_change[s]:.1f} |" for s in stacks),
        "",
        f"load average at the end (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        summary_line(up[hub.name], total, no_change[hub.name]),
    ]
    return "\n".join(lines) + "\n"


SKIP_CHECKPOINTS: Final = "PULUMI_SKIP_CHECKPOINTS"


def up_without_checkpoints(hub: run.StackPlan, work: Path, cache: Path) -> float:
    """The hub's `pulumi up` on a fresh control plane with `PULUMI_SKIP_CHECKPOINTS`: how
    much of the up the file backend's checkpoints cost (a full snapshot of the state, 3 MB
    for the hub, written at the start and the end of every step). A measurement only: no
    workflow or documented command may skip checkpoints (README, Benchmark)."""
    work.mkdir()
    (work / "project").mkdir()
    run.copy_project(work / "project")
    cli = run.Cli(cache, work, OUT / "no-checkpoints")
    cli.env = cli.env | {SKIP_CHECKPOINTS: "true"}
    with control_plane(hub.kube_context, work / "cp", cache / "bin", hub.storage_class) as cp:
        run.prepare_stack(cli, hub, cp, work)
        _, _, took = cli.pulumi(
            hub.name, "up", "up", "--yes", "--skip-preview", kubeconfig=cp.kubeconfig
        )
    print(f"e2e-bench: {hub.name}: pulumi up without checkpoint writes {took:.1f}s", flush=True)
    return took


def summary_line(up_seconds: float, by_hand_seconds: float, preview_seconds: float) -> str:
    """The run's last line: the hub's `pulumi up` over the by-hand path, and its preview."""
    return (
        f"e2e-bench: pulumi up / by hand = {up_seconds / by_hand_seconds:.2f}x, "
        f"preview (no changes) {preview_seconds:.1f}s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.e2e.bench", description=__doc__)
    parser.add_argument(
        "--stacks", nargs="+", help="these stacks only (the first in deploy order is done by hand)"
    )
    args = parser.parse_args(argv)
    known = deploy_order()
    unknown = sorted(set(args.stacks or ()) - set(known))
    if unknown:
        print(f"e2e-bench: no stack file for {', '.join(unknown)}", file=sys.stderr)
        return 2
    stacks = [s for s in known if not args.stacks or s in args.stacks]
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    try:
        table = bench(stacks)
    except (run.StepFailedError, ControlPlaneError) as exc:
        print(f"e2e-bench: {exc}", file=sys.stderr)
        return 1
    (OUT / "summary.md").write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
