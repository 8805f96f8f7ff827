"""`make e2e`: every region stack through the real Pulumi engine, against local API servers.

For each stack file, hub first (`tools.stacks.deploy_order`), with the tools `make e2e-tools`
built and nothing downloaded:

1. a local control plane for the region (`controlplane.py`), its kubeconfig context named as
   the stack's `meshstack:kubeContext`, with the StorageClass the stack's claims ask for;
2. a copy of the project (the checkout's files, the project's `.venv`), so `stack init` and
   the e2e settings below never touch the stack files; a local file backend
   (`PULUMI_BACKEND_URL`), `PULUMI_CONFIG_PASSPHRASE` set;
3. e2e settings on top of the stack file: `meshstack:chartSource` = the unpacked pinned charts
   (`{kind: directory}`, `tools.charts.charts_dir()`: no chart repository is reachable), and,
   when the stack file sets none, `meshstack:alerts.runbookBaseUrl` (the copy has no git
   remote to derive it from);
4. `pulumi preview --policy-pack policy` (violations counted), `pulumi up --yes`, `pulumi
   preview --expect-no-changes --diff` (a perpetual diff is a defect), spokes reading the hub
   through the real StackReference;
5. checks on the live cluster: every object of the offline render (`manifests.yaml`,
   `charts.yaml` of `tools.render`) exists; CRDs and namespaces carry `retainOnDelete` in
   `pulumi stack export`; `istioctl validate` and `istioctl analyze --use-kube=false` over
   the applied objects as the API server returns them (0 errors; warnings listed in the log,
   justified in tools/e2e/README.md);

then `pulumi destroy --yes` of every stack, spokes first, and a check that every CRD and
namespace is still there. It ends with one line:

    e2e: 3/3 stacks up, 3/3 idempotent, 0 policy violations, istioctl analyze 0 errors,
         destroy kept CRDs+namespaces: yes

A failing step stops everything it started and prints one line naming the step and its log.
Logs: `build/e2e/` (replaced on every run).

    python -m tools.e2e.run [--stacks us-east-1 ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from components.istio.component import UNKNOWN_ADDRESS
from components.istio.values import INGRESS
from components.run_context import OFFLINE_RUNBOOK_BASE_URL
from components.settings import load_settings
from tools import charts
from tools.e2e.controlplane import REPO, ControlPlane, ControlPlaneError, control_plane, tools_bin
from tools.render import load_stack_config
from tools.stacks import deploy_order

LOGS: Final = REPO / "build" / "e2e"
PASSPHRASE: Final = "meshstack-e2e"
CLI_TOOLS: Final = ("pulumi", "pulumi-language-python", "pulumi-language-python-exec", "istioctl")
"""The only cache binaries on PATH: the providers are found as installed plugins in
PULUMI_HOME (on PATH the engine would prefer them and warn)."""
RETAINED_TYPES: Final = {
    "kubernetes:core/v1:Namespace": "Namespace",
    "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition": "CustomResourceDefinition",
}
ISTIO_GROUPS: Final = (
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "extensions.istio.io",
)
POLICY_PACK_LOADED: Final = "meshstack@v"
"""What the preview prints under `Policies:` once the pack ran (`meshstack@v0.1.0 (local: …)`)."""
_VIOLATION: Final = re.compile(r"^\s+- \[(mandatory|advisory|remediate)\]\s+(\S+)", re.M)


WORKDIR_MARKER: Final = ".meshstack-e2e"
"""Marks a `--keep` folder as the harness's, so a later run may replace it."""
STEP_TIMEOUT: Final = 900
"""Seconds one CLI step may take. The provider's own awaits give up after 10 minutes."""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class StepFailedError(RuntimeError):
    """A step failed; the message is one line naming the stack, the step and its log."""


@dataclass
class StackResult:
    """What the scenario measured for one stack."""

    name: str
    up: bool = False
    idempotent: bool = False
    violations: list[str] = field(default_factory=list)
    analyze_errors: list[str] = field(default_factory=list)
    analyze_warnings: list[str] = field(default_factory=list)
    unjustified_warnings: list[str] = field(default_factory=list)
    retained: list[tuple[str, str]] = field(default_factory=list)
    kept_after_destroy: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


# --- the project copy and the CLI -------------------------------------------------------------


def copy_project(dest: Path) -> None:
    """The checkout's files (tracked and untracked, not ignored) and a link to its .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = REPO / rel
        if not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(REPO / ".venv")


class Cli:
    """The cached Pulumi CLI and istioctl, run in the project copy with one log per step."""

    def __init__(self, cache: Path, work: Path, logs: Path = LOGS) -> None:
        self.logs = logs
        self.project = work / "project"
        bin_dir = work / "bin"
        bin_dir.mkdir()
        for tool in CLI_TOOLS:
            (bin_dir / tool).symlink_to(cache / "bin" / tool)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        self.env = env | {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PULUMI_HOME": str(cache / "pulumi-home"),
            # metadata=skip: the file backend's blob library writes a `.attrs` sidecar beside
            # every checkpoint by truncating and rewriting it, and reads it before the
            # checkpoint; the program reads its own stack's last outputs while the engine
            # writes the first checkpoint, and now and then decoded a half-written sidecar
            # ("failed to load checkpoint: EOF", gocloud.dev/blob/fileblob attrs.go). The
            # checkpoint itself is written to a temporary file and renamed (atomic).
            "PULUMI_BACKEND_URL": f"file://{work / 'state'}?metadata=skip",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            # Only the plugins installed in the cache's PULUMI_HOME, never one on PATH.
            "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
        }
        (work / "state").mkdir()

    def run(
        self, stack: str, step: str, argv: Sequence[str], *, kubeconfig: Path, check: bool = True
    ) -> tuple[int, str, float]:
        """Run one command; returns (exit code, output, seconds). Raises StepFailedError when
        `check` and the command fails."""
        log = self.logs / stack / f"{step}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with log.open("wb") as out:  # streamed, so a step that hangs shows where
            # Its own process group: on a timeout, an exception or a signal the command's
            # children (language host, providers, the program) go with it.
            proc = subprocess.Popen(
                list(argv),
                cwd=self.project,
                env=self.env | {"KUBECONFIG": str(kubeconfig)},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                returncode = proc.wait(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise StepFailedError(
                    f"{stack}: {step} timed out after {STEP_TIMEOUT}s, see {log}"
                ) from None
            except BaseException:
                _kill_group(proc)
                raise
        took = time.monotonic() - started
        output = log.read_text(errors="replace")
        with log.open("a") as out:
            out.write(f"\n$ {' '.join(argv)}\n[exit {returncode}, {took:.1f}s]\n")
        if check and returncode:
            raise StepFailedError(f"{stack}: {step} failed (exit {returncode}), see {log}")
        return returncode, output, took

    def pulumi(
        self, stack: str, step: str, *args: str, kubeconfig: Path, check: bool = True
    ) -> tuple[int, str, float]:
        return self.run(
            stack,
            step,
            ["pulumi", *args, "--stack", stack, "--non-interactive"],
            kubeconfig=kubeconfig,
            check=check,
        )


# --- per-stack facts ----------------------------------------------------------------------


@dataclass(frozen=True)
class StackPlan:
    """What the harness needs to know of one stack file before it runs it."""

    name: str
    kube_context: str
    storage_class: str
    sets_runbook_base_url: bool
    documented_prerequisites: frozenset[str]
    """Namespaces the stack uses but documents as the cluster's (the monitoring stack's)."""


def plan(stack: str) -> StackPlan:
    config, _ = load_stack_config(stack, REPO)
    settings = load_settings(config)
    return StackPlan(
        name=stack,
        kube_context=settings.kube_context or f"e2e-{stack}",
        storage_class=settings.observability.jaeger.storage.storage_class,
        sets_runbook_base_url=bool(settings.alerts.runbook_base_url),
        # README: prometheus-operator and the `monitoring` namespace are the cluster's; the
        # dashboard's namespace "belongs to the monitoring stack" (dashboard.namespace).
        documented_prerequisites=frozenset(
            {"monitoring"}
            | ({settings.dashboard.namespace} if settings.dashboard.enabled else set())
        ),
    )


def e2e_settings(stack: StackPlan) -> list[tuple[str, str]]:
    """`pulumi config set --path` pairs the e2e run adds to the copy's stack file."""
    pairs = [
        ("meshstack:chartSource.kind", "directory"),
        ("meshstack:chartSource.location", str(charts.charts_dir().resolve())),
    ]
    if not stack.sets_runbook_base_url:
        pairs.append(("meshstack:alerts.runbookBaseUrl", OFFLINE_RUNBOOK_BASE_URL))
    return pairs


# --- live checks ----------------------------------------------------------------------------


def rendered_objects(stack: str, out: Path, logs: Path = LOGS) -> list[dict[str, Any]]:
    """Every object of the stack's offline render (program objects and chart objects)."""
    log = logs / stack / "render.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "tools.render", stack, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise StepFailedError(f"{stack}: offline render failed, see {log}")
    objects: list[dict[str, Any]] = []
    for name in ("manifests.yaml", "charts.yaml"):
        objects += [d for d in yaml.safe_load_all((out / name).read_text()) if d]
    return objects


def ingress_address_problem(reported: Any, service: dict[str, Any] | None) -> str | None:
    """Why the stack's `ingressGatewayAddress` is not the ingress gateway Service's load
    balancer address as the cluster reports it (its first `status.loadBalancer.ingress`,
    hostname before IP, or the program's "pending" text without one); None when it is."""
    if service is None:
        return f"Service {INGRESS.namespace}/{INGRESS.release} is not in the cluster"
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    first = ingress[0] if ingress else {}
    live = str(first.get("hostname") or first.get("ip") or UNKNOWN_ADDRESS)
    if reported != live:
        return f"ingressGatewayAddress is {reported!r}, the live ingress Service says {live!r}"
    return None


def prerequisite_namespaces(objects: list[dict[str, Any]]) -> list[str]:
    """Namespaces the stack's objects live in that the stack does not create: the cluster
    prerequisites it documents (`monitoring`, a dashboard's Grafana namespace ...), which the
    monitoring stack owns in a real cluster."""
    created = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    used = {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
    return sorted(used - created)


def checked_prerequisites(
    stack: str, objects: list[dict[str, Any]], documented: frozenset[str]
) -> list[str]:
    """`prerequisite_namespaces`, if the stack documents every one as the cluster's; else
    StepFailedError: a namespace the program should create but does not would be hidden if
    the harness created it."""
    prerequisites = prerequisite_namespaces(objects)
    undocumented = sorted(set(prerequisites) - documented)
    if undocumented:
        raise StepFailedError(
            f"{stack}: objects in namespaces the stack neither creates nor documents as "
            f"prerequisites: {', '.join(undocumented)}"
        )
    return prerequisites


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as a user would export it: no status, managed fields or server bookkeeping."""
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k in ("name", "namespace", "labels", "annotations")
    }
    annotations = {
        k: v
        for k, v in meta.get("annotations", {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")} | {"metadata": meta}


def check_live(
    cp: ControlPlane, expected: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The live copy of every expected object, and the ones missing."""
    found, missing = [], []
    for obj in expected:
        body = cp.get(obj)
        meta = obj["metadata"]
        if body is None:
            missing.append(f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}".strip())
        else:
            found.append(_clean(body))
    return found, missing


def retained_in_state(export: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """(kind, name) of every CRD and namespace in the state, and those not retained."""
    retained, not_retained = [], []
    for res in export.get("deployment", {}).get("resources", []):
        kind = RETAINED_TYPES.get(res.get("type", ""))
        if kind is None:
            continue
        name = res.get("outputs", {}).get("metadata", {}).get("name") or res["urn"]
        if res.get("retainOnDelete"):
            retained.append((kind, name))
        else:
            not_retained.append(f"{kind} {name}")
    return retained, not_retained


JUSTIFIED_WARNINGS: Final = {
    "envoyfilter-internals": re.compile(
        r"EnvoyFilter[ /][^:]+: .*EnvoyFilter exposes internal implementation details"
    ),
    "deny-tcp-with-http-attributes": re.compile(
        r"AuthorizationPolicy[ /][^:]*-require-jwt[^:]*: .*will deny all traffic to TCP ports "
        r"under its scope due to the use of only HTTP attributes"
    ),
}
"""istioctl warnings the program keeps on purpose: the section of tools/e2e/README.md that
says why → the warnings it covers (`<tool or code> <kind>[ /]<namespace>/<name>: <message>`,
object kind and name included, so a justification covers only the objects it is about).
Any other warning fails the run: fix it or justify it."""


def parse_validate(out: str) -> tuple[list[str], list[str]]:
    """`istioctl validate` output → (errors, warnings): the `* ` items of its `Error: N
    errors occurred` block and of its `"<file>" has warnings` block."""
    errors: list[str] = []
    warnings: list[str] = []
    bucket: list[str] | None = None
    for line in out.splitlines():
        text = line
        if line.startswith("Error:"):
            bucket = errors
        elif "has warnings:" in line:
            bucket = warnings
            text = line.split("has warnings:", 1)[1]
        item = text.strip()
        if bucket is not None and item.startswith("* "):
            bucket.append(f"validate {item[2:]}")
    return errors, warnings


def parse_analyze(out: str) -> list[dict[str, Any]]:
    """The JSON message list `istioctl analyze --output json` prints (other lines around)."""
    start = out.find("[")
    if start < 0:
        return []
    messages, _ = json.JSONDecoder().raw_decode(out[start:])
    return list(messages)


def unjustified(warnings: list[str]) -> list[str]:
    return [w for w in warnings if not any(p.search(w) for p in JUSTIFIED_WARNINGS.values())]


def istioctl_checks(
    cli: Cli, stack: str, objects: list[dict[str, Any]], work: Path, kubeconfig: Path
) -> tuple[list[str], list[str]]:
    """`istioctl validate` of the Istio objects and `istioctl analyze --use-kube=false` of
    everything applied; returns (errors, warnings) as `<tool/code> <object>: <message>`."""
    folder = work / "istioctl" / stack
    folder.mkdir(parents=True)
    istio = [o for o in objects if o["apiVersion"].split("/")[0] in ISTIO_GROUPS]
    analyzable = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    (folder / "istio.yaml").write_text(yaml.safe_dump_all(istio, sort_keys=False))
    (folder / "applied.yaml").write_text(yaml.safe_dump_all(analyzable, sort_keys=False))
    rc, out, _ = cli.run(
        stack,
        "istioctl-validate",
        ["istioctl", "validate", "-f", str(folder / "istio.yaml")],
        kubeconfig=kubeconfig,
        check=False,
    )
    errors, warnings = parse_validate(out)
    if rc and not errors:
        log = cli.logs / stack / "istioctl-validate.log"
        raise StepFailedError(f"{stack}: istioctl validate failed (exit {rc}), see {log}")
    rc, out, _ = cli.run(
        stack,
        "istioctl-analyze",
        [
            "istioctl",
            "analyze",
            "--use-kube=false",
            "--all-namespaces",
            "--output",
            "json",
            "--failure-threshold",
            "Error",
            "--output-threshold",
            "Warning",
            str(folder / "applied.yaml"),
        ],
        kubeconfig=kubeconfig,
        check=False,
    )
    try:
        messages = parse_analyze(out)
    except json.JSONDecodeError as exc:
        log = cli.logs / stack / "istioctl-analyze.log"
        raise StepFailedError(f"{stack}: istioctl analyze output unreadable, see {log}") from exc
    if rc and not messages:
        log = cli.logs / stack / "istioctl-analyze.log"
        raise StepFailedError(f"{stack}: istioctl analyze failed (exit {rc}), see {log}")
    for msg in messages:
        line = f"{msg.get('code')} {msg.get('origin', '')}: {msg.get('message', '')}"
        (errors if msg.get("level") == "Error" else warnings).append(line)
    return errors, warnings


# --- the scenario ---------------------------------------------------------------------------


def prepare_stack(cli: Cli, stack: StackPlan, cp: ControlPlane, work: Path) -> list[dict[str, Any]]:
    """The stack's offline render, its prerequisite namespaces created in the cluster, the
    stack initialised in the copy with the e2e settings; returns the rendered objects."""
    kc = cp.kubeconfig
    name = stack.name
    started = time.monotonic()
    expected = rendered_objects(name, work / "render" / name, cli.logs)
    prerequisites = checked_prerequisites(name, expected, stack.documented_prerequisites)
    for ns in prerequisites:
        cp.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    _report(
        name,
        "offline render",
        time.monotonic() - started,
        f"{len(expected)} objects; prerequisite namespaces: {', '.join(prerequisites) or 'none'}",
    )
    cli.run(name, "stack-init", ["pulumi", "stack", "init", name], kubeconfig=kc)
    for key, value in e2e_settings(stack):
        cli.pulumi(name, "config-set", "config", "set", "--path", key, value, kubeconfig=kc)
    return expected


def run_stack(
    cli: Cli, stack: StackPlan, cp: ControlPlane, work: Path, result: StackResult
) -> None:
    """Steps 2-5 for one stack; raises StepFailedError on the first step that cannot go on."""
    kc = cp.kubeconfig
    name = stack.name
    expected = prepare_stack(cli, stack, cp, work)

    rc, out, took = cli.pulumi(
        name,
        "preview-policy",
        "preview",
        "--policy-pack",
        "policy",
        "--policy-pack-config",
        "policy/config.json",
        kubeconfig=kc,
        check=False,
    )
    result.seconds["preview"] = took
    result.violations = [f"{m[0]} {m[1]}" for m in _VIOLATION.findall(out)]
    if not rc and POLICY_PACK_LOADED not in out:
        log = cli.logs / name / "preview-policy.log"
        raise StepFailedError(f"{name}: the policy pack did not run, see {log}")
    if rc and not result.violations:
        log = cli.logs / name / "preview-policy.log"
        raise StepFailedError(f"{name}: preview-policy failed, see {log}")
    _report(name, "preview --policy-pack", took, f"{len(result.violations)} violations")

    _, _, took = cli.pulumi(name, "up", "up", "--yes", "--skip-preview", kubeconfig=kc)
    result.up, result.seconds["up"] = True, took
    _report(name, "up", took)

    rc, _, took = cli.pulumi(
        name,
        "preview-no-changes",
        "preview",
        "--expect-no-changes",
        "--diff",
        kubeconfig=kc,
        check=False,
    )
    result.idempotent, result.seconds["preview-no-changes"] = rc == 0, took
    _report(name, "preview --expect-no-changes", took, "no changes" if rc == 0 else "CHANGES")

    _, out, took = cli.pulumi(
        name, "output-ingress", "stack", "output", "ingressGatewayAddress", "--json", kubeconfig=kc
    )
    service = cp.get(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"namespace": INGRESS.namespace, "name": INGRESS.release},
        }
    )
    problem = ingress_address_problem(json.loads(out), service)
    if problem:
        raise StepFailedError(f"{name}: {problem}")
    _report(name, "ingressGatewayAddress", took, "the live ingress Service's address")

    started = time.monotonic()
    applied, missing = check_live(cp, expected)
    if missing:
        log = cli.logs / name / "live-missing.log"
        log.write_text("\n".join(missing) + "\n")
        raise StepFailedError(
            f"{name}: {len(missing)} rendered objects not in the cluster, see {log}"
        )
    _report(name, "live objects", time.monotonic() - started, f"{len(applied)} found")

    exported = work / f"{name}-state.json"
    cli.pulumi(name, "stack-export", "stack", "export", "--file", str(exported), kubeconfig=kc)
    result.retained, not_retained = retained_in_state(json.loads(exported.read_text()))
    if not result.retained:
        raise StepFailedError(f"{name}: no CRD or namespace in the exported state")
    if not_retained:
        log = cli.logs / name / "not-retained.log"
        log.write_text("\n".join(not_retained) + "\n")
        raise StepFailedError(f"{name}: CRDs/namespaces without retainOnDelete, see {log}")
    _report(name, "retainOnDelete", 0.0, f"{len(result.retained)} CRDs+namespaces")

    started = time.monotonic()
    result.analyze_errors, result.analyze_warnings = istioctl_checks(cli, name, applied, work, kc)
    result.unjustified_warnings = unjustified(result.analyze_warnings)
    _report(
        name,
        "istioctl validate+analyze",
        time.monotonic() - started,
        f"{len(result.analyze_errors)} errors, {len(result.analyze_warnings)} warnings "
        f"({len(result.unjustified_warnings)} not justified in tools/e2e/README.md)",
    )
    if result.analyze_errors or result.unjustified_warnings:
        log = cli.logs / name / "istioctl-findings.log"
        log.write_text("\n".join(result.analyze_errors + result.unjustified_warnings) + "\n")
        print(f"e2e: {name}: istioctl findings in {log}", flush=True)


def destroy_stack(cli: Cli, name: str, cp: ControlPlane, result: StackResult) -> None:
    _, _, took = cli.pulumi(
        name, "destroy", "destroy", "--yes", "--skip-preview", kubeconfig=cp.kubeconfig
    )
    gone = []
    for kind, obj in result.retained:
        body = cp.get(
            {
                "apiVersion": "v1" if kind == "Namespace" else "apiextensions.k8s.io/v1",
                "kind": kind,
                "metadata": {"name": obj},
            }
        )
        # A namespace being deleted is still readable for a while: Terminating is not kept.
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            gone.append(f"{kind} {obj}")
    result.kept_after_destroy = not gone
    if gone:
        log = cli.logs / name / "destroy-deleted.log"
        log.write_text("\n".join(gone) + "\n")
        raise StepFailedError(f"{name}: destroy deleted {len(gone)} CRDs/namespaces, see {log}")
    _report(name, "destroy", took, f"{len(result.retained)} CRDs+namespaces kept")


def _report(stack: str, step: str, seconds: float, detail: str = "") -> None:
    extra = f": {detail}" if detail else ""
    print(f"e2e: {stack}: {step} ({seconds:.1f}s){extra}", flush=True)


def summary(results: list[StackResult]) -> str:
    n = len(results)
    up = sum(r.up for r in results)
    idempotent = sum(r.idempotent for r in results)
    violations = sum(len(r.violations) for r in results)
    errors = sum(len(r.analyze_errors) for r in results)
    kept = "yes" if results and all(r.kept_after_destroy for r in results) else "no"
    return (
        f"e2e: {up}/{n} stacks up, {idempotent}/{n} idempotent, {violations} policy violations, "
        f"istioctl analyze {errors} errors, destroy kept CRDs+namespaces: {kept}"
    )


def passed(results: list[StackResult]) -> bool:
    return all(
        r.up
        and r.idempotent
        and not r.violations
        and not r.analyze_errors
        and not r.unjustified_warnings
        and r.kept_after_destroy
        for r in results
    )


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep = keep.resolve()
        marker = keep / WORKDIR_MARKER
        if keep.exists() and any(keep.iterdir()) and not marker.exists():
            raise StepFailedError(f"--keep {keep}: not empty and not an e2e folder, left alone")
        if keep.exists():
            shutil.rmtree(keep)
        keep.mkdir(parents=True)
        marker.write_text("made by python -m tools.e2e.run; replaced on the next run\n")
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="meshstack-e2e-") as tmp:
        yield Path(tmp)


def scenario(stacks: Sequence[str], keep: Path | None = None) -> list[StackResult]:
    """Up every stack in order on its own control plane, check it, destroy in reverse."""
    cache = tools_bin().parent
    if not (cache / ".complete").exists():
        raise StepFailedError(f"tools: no complete tool cache at {cache}, run `make e2e-tools`")
    plans = [plan(s) for s in stacks]
    results = [StackResult(p.name) for p in plans]
    with _workdir(keep) as work, contextlib.ExitStack() as running:
        (work / "project").mkdir()
        copy_project(work / "project")
        cli = Cli(cache, work, LOGS)
        planes: dict[str, ControlPlane] = {}
        for stack, result in zip(plans, results, strict=True):
            started = time.monotonic()
            cp = running.enter_context(
                control_plane(
                    stack.kube_context,
                    work / "cp" / stack.name,
                    cache / "bin",
                    stack.storage_class,
                )
            )
            planes[stack.name] = cp
            _report(stack.name, "control plane", time.monotonic() - started, cp.server)
            run_stack(cli, stack, cp, work, result)
        for stack, result in reversed(list(zip(plans, results, strict=True))):
            destroy_stack(cli, stack.name, planes[stack.name], result)
        for result in results:
            if result.analyze_warnings:
                log = cli.logs / result.name / "istioctl-warnings.log"
                log.write_text("\n".join(result.analyze_warnings) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.e2e.run", description=__doc__)
    parser.add_argument("--stacks", nargs="+", help="these stacks only (default: every one)")
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (state, copies)")
    args = parser.parse_args(argv)
    stacks = list(deploy_order())
    if args.stacks:
        unknown = sorted(set(args.stacks) - set(stacks))
        if unknown:
            print(f"e2e: no stack file for {', '.join(unknown)}", file=sys.stderr)
            return 2
        stacks = [s for s in stacks if s in args.stacks]
    if LOGS.exists():
        shutil.rmtree(LOGS)
    LOGS.mkdir(parents=True)
    started = time.monotonic()
    try:
        results = scenario(stacks, args.keep)
    except (StepFailedError, ControlPlaneError) as exc:
        print(f"e2e: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        # Everything started is stopped by then (context managers); say what broke in a line.
        print(f"e2e: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    line = summary(results)
    (LOGS / "summary.txt").write_text(line + "\n")
    print(f"e2e: {time.monotonic() - started:.0f}s in all; logs in {LOGS.relative_to(REPO)}/")
    print(line)
    return 0 if passed(results) else 1


if __name__ == "__main__":
    sys.exit(main())
