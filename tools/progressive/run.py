"""`make progressive`: the real Flagger runs each progressive service's canary analysis.

On the e2e harness (`tools/e2e/run.py`: the local control plane, the project copy, the tool
cache's Pulumi CLI and providers, the e2e settings), for the hub and every stack with a
`delivery: progressive` service, hub first (a spoke reads the hub's outputs):

1. `pulumi up` of the stack with the tier's overrides (below); the application's objects a
   team would deploy: per progressive service a Deployment (kwok makes its pods Ready), its
   apex Service and, where the settings name one, its HPA;
2. Flagger 1.44.0 and its loadtester as local processes, started when the chart's
   Deployments appear in the API server and with their container arguments as applied
   (plus `-kubeconfig` and a local port; restarted if they exit, as the kubelet would);
   the webhooks' in-cluster URL reaches the loadtester through a local proxy that resolves
   the Service; the loadtester's `curl`/`grpc_health_probe`/`hey`/`ghz` are the mesh model's
   shims (`shim.py`);
3. Debian's Prometheus scraping the mesh model (`mesh_model.py`), which emits the telemetry
   Istio's sidecars would for the routing Flagger writes and the behaviour of each image;
4. scenarios, each judged against `expect.py` (derived from the settings):
   - the static → progressive switch (an HTTP service with a public host): deployed static
     first, then switched; the public host must have a route to Ready pods at every poll
     (every 100 ms) through both updates, and the VirtualService must never be deleted;
   - per service: a healthy canary promoted (every routing state of the plan, in order; the
     primary on the new image; 100/0), failing canaries rolled back after `threshold`
     failed checks (HTTP: 5 % 5xx; gRPC: 5 % UNAVAILABLE answered with HTTP 200; latency
     above `durationMaxMs`), a failing acceptance test that stops the rollout before any
     traffic moves, the webhooks' command lines, and (last) deleting the Canary
     (`revertOnDeletion`).

Where the tier differs from production, it says so in its output: every Canary's analysis
interval is `expect.TEST_INTERVAL`, `meshstack:prometheusUrl` is the local Prometheus (which
scrapes every second), and the loadtester's commands are answered by the mesh model.

Ends with one line:

    progressive: 9/9 scenarios (promoted 2, rolled back 5), static to progressive without a gap: yes

Logs per scenario under `build/e2e/progressive/`.

    python -m tools.progressive.run [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, Self

import yaml

from components.settings import load_settings
from tools.e2e import run as e2e
from tools.e2e.controlplane import (
    REPO,
    ControlPlane,
    ControlPlaneError,
    control_plane,
    free_port,
    tools_bin,
)
from tools.progressive import expect
from tools.progressive.expect import ProgressiveService, Routing
from tools.progressive.mesh_model import Behaviour, MeshModel
from tools.render import load_stack_config
from tools.stacks import deploy_order

LOGS: Final = REPO / "build" / "e2e" / "progressive"
SHIMMED: Final = ("curl", "grpc_health_probe", "hey", "ghz")
APP_VERSION: Final = "1.0.0"
FLAGGER_API: Final = "/apis/flagger.app/v1beta1"
ISTIO_API: Final = "/apis/networking.istio.io/v1"
BUILTIN_HALT_PHRASES: Final = {
    "request-success-rate": "advancement success rate",
    "request-duration": "advancement request duration",
}
"""How Flagger's log names a failed built-in check (`pkg/controller/scheduler_metrics.go`)."""
BAD_SHARE: Final = 0.05
"""Share of failing (or slow) requests of a bad image: far beyond any `successRateMin` of
99 % and above, and beyond the 1 % a p99 ignores."""


def progressive_tools() -> Path:
    out = subprocess.run(
        ["bash", str(REPO / "tools" / "progressive" / "build.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def say(line: str) -> None:
    print(f"progressive: {line}", flush=True)


# --- the cluster's application and API helpers -------------------------------------------------


class Cluster:
    """API calls on one control plane, in the terms of this tier."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def get(self, path: str) -> dict[str, Any] | None:
        status, body = self.cp.request("GET", path)
        return body if status == 200 else None

    def api(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        return self.cp.request(method, path)

    def canary(self, s: ProgressiveService) -> dict[str, Any] | None:
        return self.get(f"{FLAGGER_API}/namespaces/{s.namespace}/canaries/{s.name}")

    def virtual_service(self, s: ProgressiveService) -> dict[str, Any] | None:
        return self.get(f"{ISTIO_API}/namespaces/{s.namespace}/virtualservices/{s.name}")

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    def primary_image(self, s: ProgressiveService) -> str | None:
        """The image `-primary` runs (Flagger copies the canary's spec there on promotion)."""
        primary = self.deployment(s.namespace, f"{s.name}-primary") or {}
        containers = primary.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
        return str(containers[0]["image"]) if containers else None

    def set_image(self, s: ProgressiveService, image: str) -> None:
        patch = {"spec": {"template": {"spec": {"containers": [{"name": s.name, "image": image}]}}}}
        status, body = self.cp.request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{s.namespace}/deployments/{s.name}",
            patch,
            content_type="application/strategic-merge-patch+json",
        )
        if status >= 300:
            raise e2e.StepFailedError(f"image of {s.key}: {status} {body.get('message')}")


def application(s: ProgressiveService) -> list[dict[str, Any]]:
    """What the service's team deploys next to the program: Deployment, Service, HPA."""
    labels = {"app": s.name}
    ports = [{"name": s.protocol, "containerPort": s.port}]
    if s.metrics_port:
        ports.append({"name": s.metrics_port, "containerPort": 9102})
    container = {
        "name": s.name,
        "image": image(s, APP_VERSION),
        "ports": ports,
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    meta = {"name": s.name, "namespace": s.namespace, "labels": labels}
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": labels,
                "ports": [{"name": s.protocol, "port": s.port, "targetPort": s.port}],
            },
        },
    ]
    if s.autoscaler:
        objects.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {**meta, "name": s.autoscaler},
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": s.name,
                    },
                    "minReplicas": 1,
                    "maxReplicas": 2,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": 80},
                            },
                        }
                    ],
                },
            }
        )
    return objects


def image(s: ProgressiveService, tag: str) -> str:
    return f"registry.example.internal/{s.namespace}/{s.name}:{tag}"


# --- local "pods": Flagger and the loadtester ------------------------------------------------


class LocalPods:
    """Runs a chart's Deployment as a local process once it is in the API server, with its
    container's arguments as applied, restarting it when it exits."""

    def __init__(self, cluster: Cluster, logs: Path) -> None:
        self.cluster = cluster
        self.logs = logs
        self._specs: list[
            tuple[str, str, Callable[[list[str]], tuple[list[str], dict[str, str]]]]
        ] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def add(
        self,
        namespace: str,
        name: str,
        command: Callable[[list[str]], tuple[list[str], dict[str, str]]],
    ) -> None:
        """`command(container args) -> (argv, extra env)` of the local process."""
        self._specs.append((namespace, name, command))

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            for namespace, name, command in self._specs:
                proc = self._procs.get(name)
                if proc is not None and proc.poll() is None:
                    continue
                dep = self.cluster.deployment(namespace, name)
                if dep is None:
                    continue
                container = dep["spec"]["template"]["spec"]["containers"][0]
                argv, env = command(
                    list(container.get("command", []))[1:] + list(container.get("args", []))
                )
                log = (self.logs / f"{name}.log").open("ab")
                self.starts[name] = self.starts.get(name, 0) + 1
                self._procs[name] = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, env=os.environ | env
                )
                time.sleep(2.0 if self.starts[name] > 1 else 0)  # back-off, as a crash loop

    def stop(self) -> None:
        self._stop.set()
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
                if proc.poll() is None:
                    proc.kill()


class ServiceProxy:
    """A forward HTTP proxy for Flagger: `http://<service>.<namespace>[:port]/...` goes to the
    local process that plays that Service's pods, if the Service exists with that port."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.backends: dict[tuple[str, str, int], int] = {}
        self.forwarded: list[str] = []
        self.port = free_port()
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                host = url.hostname or ""
                name, _, namespace = host.partition(".")
                port = url.port or 80
                backend = proxy.backends.get((name, namespace.split(".")[0], port))
                svc = proxy.cluster.get(
                    f"/api/v1/namespaces/{namespace.split('.')[0]}/services/{name}"
                )
                served = svc is not None and any(
                    p.get("port") == port for p in svc.get("spec", {}).get("ports", [])
                )
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if backend is None or not served:
                    self.send_response(502)
                    self.end_headers()
                    self.wfile.write(f"no Service {host}:{port}".encode())
                    return
                proxy.forwarded.append(f"{host}:{port}{url.path}")
                req = urllib.request.Request(
                    f"http://127.0.0.1:{backend}{url.path or '/'}",
                    data=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                )
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        status, answer = resp.status, resp.read()
                except urllib.error.HTTPError as err:
                    status, answer = err.code, err.read()
                except OSError as err:
                    status, answer = 502, str(err).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


@contextlib.contextmanager
def prometheus(work: Path, target_port: int) -> Iterator[int]:
    """Debian's Prometheus scraping the mesh model every second (production: the PodMonitor's
    15 s); yields its port once ready."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "envoy-stats",
                        "honor_labels": True,
                        "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                    }
                ],
            }
        )
    )
    log = (LOGS / "prometheus.log").open("ab")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2),
            ):
                break
            time.sleep(0.5)
        else:
            raise e2e.StepFailedError(
                "prometheus did not become ready, see build/e2e/progressive/prometheus.log"
            )
        yield port
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()


# --- watching what Flagger does --------------------------------------------------------------


def routing_of(vs: dict[str, Any] | None, s: ProgressiveService) -> Routing | None:
    """The weighted route's state in Flagger's VirtualService (None: no such VirtualService)."""
    if vs is None:
        return None
    routes = vs.get("spec", {}).get("http") or []
    plain = [
        r
        for r in routes
        if not any(
            "cookie" in {h.lower() for h in (m.get("headers") or {})} for m in r.get("match") or []
        )
    ]
    route = (plain or routes or [{}])[-1]
    weights = {d["destination"]["host"]: int(d.get("weight", 0)) for d in route.get("route", [])}
    primary = weights.get(f"{s.name}-primary")
    canary = weights.get(f"{s.name}-canary")
    if primary is None or canary is None:
        return None
    return Routing(primary, canary, mirror="mirror" in route)


@dataclass
class Timeline:
    """What Flagger did to one service during a scenario, with times from its start."""

    started: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)
    routing: list[Routing] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    max_failed_checks: int = 0

    def note(self, text: str) -> None:
        self.events.append((time.monotonic() - self.started, text))


class Poller:
    """Calls `poll` every `period` seconds on a thread while the `with` block runs (and once
    more as it ends)."""

    period = 0.5

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self.poll()
            if self._stop.wait(self.period):
                self.poll()
                return

    def poll(self) -> None:
        raise NotImplementedError


class Watcher(Poller):
    """Polls the Canary and the VirtualService every half second into a Timeline."""

    def __init__(self, cluster: Cluster, s: ProgressiveService) -> None:
        super().__init__()
        self.cluster = cluster
        self.service = s
        self.timeline = Timeline()

    def poll(self) -> None:
        t = self.timeline
        canary = self.cluster.canary(self.service) or {}
        status = canary.get("status", {})
        phase = status.get("phase", "")
        if phase and (not t.phases or t.phases[-1] != phase):
            t.phases.append(phase)
            t.note(f"phase {phase}")
        t.max_failed_checks = max(t.max_failed_checks, int(status.get("failedChecks", 0)))
        state = routing_of(self.cluster.virtual_service(self.service), self.service)
        if state is not None and (not t.routing or t.routing[-1] != state):
            t.routing.append(state)
            t.note(f"routing {state}")


def host_answers(cluster: Cluster, s: ProgressiveService, host: str) -> str | None:
    """None when the public `host` has a route to Ready pods as istiod would build it for the
    ingress gateway, else why not: a VirtualService bound to a gateway (not only `mesh`)
    lists the host; its first HTTP route's destinations with weight > 0 are Services that
    select Deployments with Ready pods; a destination's subset is defined, for that host, by
    a DestinationRule whose subset labels those pods carry."""
    listed = cluster.get(f"{ISTIO_API}/namespaces/{s.namespace}/virtualservices") or {}
    bound = [
        vs
        for vs in listed.get("items", [])
        if host in vs.get("spec", {}).get("hosts", [])
        and any(g != "mesh" for g in vs.get("spec", {}).get("gateways", []))
    ]
    if not bound:
        return f"no VirtualService routes {host} at a gateway (404 NR)"
    routes = bound[0]["spec"].get("http") or []
    if not routes:
        return f"{bound[0]['metadata']['name']} has no HTTP route"
    route = routes[-1]
    rules = cluster.get(f"{ISTIO_API}/namespaces/{s.namespace}/destinationrules") or {}
    destinations = route.get("route", [])
    for d in destinations:
        if len(destinations) > 1 and int(d.get("weight", 0)) == 0:
            continue
        dest = d["destination"]
        svc_name = dest["host"].split(".")[0]
        svc = cluster.get(f"/api/v1/namespaces/{s.namespace}/services/{svc_name}")
        if svc is None:
            return f"destination Service {svc_name} does not exist (503 NR)"
        selector = svc["spec"].get("selector") or {}
        deps = (cluster.get(f"/apis/apps/v1/namespaces/{s.namespace}/deployments") or {}).get(
            "items", []
        )
        ready = [
            dep
            for dep in deps
            if (dep.get("status", {}).get("readyReplicas") or 0) > 0
            and all(
                dep["spec"]["template"]["metadata"].get("labels", {}).get(k) == v
                for k, v in selector.items()
            )
        ]
        if not ready:
            return f"Service {svc_name} selects no Ready pod (503 UH)"
        subset = dest.get("subset")
        if subset:
            defined = [
                sub
                for dr in rules.get("items", [])
                if dr["spec"].get("host", "").split(".")[0] == svc_name
                for sub in dr["spec"].get("subsets", [])
                if sub.get("name") == subset
            ]
            if not defined:
                return f"subset {subset} of {svc_name} is not defined (503 NR)"
            labels = defined[0].get("labels", {})
            if not any(
                all(
                    dep["spec"]["template"]["metadata"].get("labels", {}).get(k) == v
                    for k, v in labels.items()
                )
                for dep in ready
            ):
                return f"subset {subset} of {svc_name} selects no Ready pod (503 UH)"
    return None


class Continuity(Poller):
    """Polls `host_answers` every 100 ms and the VirtualService's uid, until stopped."""

    period = 0.1

    def __init__(self, cluster: Cluster, s: ProgressiveService, host: str) -> None:
        super().__init__()
        self.cluster, self.service, self.host = cluster, s, host
        self.polls = 0
        self.gaps: list[str] = []
        self.uids: list[str] = []
        self._started = time.monotonic()

    def poll(self) -> None:
        self.polls += 1
        why = host_answers(self.cluster, self.service, self.host)
        if why:
            self.gaps.append(f"+{time.monotonic() - self._started:.1f}s {why}")
        vs = self.cluster.virtual_service(self.service)
        uid = vs["metadata"]["uid"] if vs else "absent"
        if not self.uids or self.uids[-1] != uid:
            self.uids.append(uid)


# --- scenarios ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    passed: bool
    kind: str
    """promoted | rolled back | stopped | reverted | switched"""
    detail: str
    timeline: Timeline | None = None


def wait_for(predicate: Callable[[], bool], seconds: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def write_log(name: str, lines: Sequence[str]) -> Path:
    path = LOGS / f"{name}.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def flagger_lines(log: Path, since: int, s: ProgressiveService) -> list[str]:
    """Flagger's log messages about this canary since byte `since`."""
    out = []
    with log.open("rb") as f:
        f.seek(since)
        for raw in f:
            with contextlib.suppress(ValueError):
                entry = json.loads(raw)
                if entry.get("canary") == f"{s.name}.{s.namespace}":
                    out.append(str(entry.get("msg", "")))
    return out


class Runner:
    """Scenarios on one stack's control plane, with Flagger running."""

    def __init__(self, cluster: Cluster, model: MeshModel, flagger_log: Path) -> None:
        self.cluster = cluster
        self.model = model
        self.flagger_log = flagger_log
        self.version = 1

    def _terminal(self, s: ProgressiveService) -> str:
        canary = self.cluster.canary(s) or {}
        return str(canary.get("status", {}).get("phase", ""))

    def analysis(
        self, s: ProgressiveService, name: str, behaviour: Behaviour
    ) -> tuple[Timeline, str, list[str], list[Any], str]:
        """Roll out a new image with this behaviour; returns (timeline, final phase, Flagger's
        messages, the loadtester calls during the run, the new image)."""
        self.version += 1
        new = image(s, f"1.{self.version}.0-{name}")
        self.model.behaviours[new] = behaviour
        since = self.flagger_log.stat().st_size if self.flagger_log.exists() else 0
        calls_before = len(self.model.calls)
        with Watcher(self.cluster, s) as watcher:
            self.cluster.set_image(s, new)
            watcher.timeline.note(f"image {new}")
            left = wait_for(
                lambda: self._terminal(s) == "Progressing", 4 * s.interval_s + 60
            ) and wait_for(
                lambda: self._terminal(s) in ("Succeeded", "Failed"), expect.analysis_deadline_s(s)
            )
            time.sleep(1.0)  # the last routing state
        phase = self._terminal(s) if left else f"stuck in {self._terminal(s) or 'no phase'}"
        messages = flagger_lines(self.flagger_log, since, s)
        calls = self.model.calls[calls_before:]
        return watcher.timeline, phase, messages, calls, new

    def log(
        self,
        name: str,
        s: ProgressiveService,
        t: Timeline,
        *,
        messages: list[str],
        calls: list[Any],
        verdict: list[str],
    ) -> None:
        lines = [
            f"{name} ({s.key}), interval {s.interval_s}s (test override), threshold {s.threshold}"
        ]
        lines += [f"  +{at:6.1f}s {text}" for at, text in t.events]
        lines.append("flagger:")
        lines += [f"  {m}" for m in messages]
        lines.append("loadtester commands:")
        lines += [f"  {' '.join(c.argv)} -> exit {c.exit} ({c.detail})" for c in calls]
        lines.append("verdict:")
        lines += [f"  {v}" for v in verdict] or ["  pass"]
        write_log(name, lines)

    def promote(self, s: ProgressiveService) -> Outcome:
        name = f"{s.name}-promote"
        t, phase, messages, calls, new = self.analysis(s, "healthy", Behaviour())
        plan = expect.promotion_plan(s)
        seen = expect.collapse([Routing(100, 0), *t.routing])
        verdict = []
        if phase != "Succeeded":
            verdict.append(f"phase {phase}, not Succeeded")
        if seen != plan:
            verdict.append(
                "routing " + " → ".join(map(str, seen)) + ", plan " + " → ".join(map(str, plan))
            )
        primary_image = self.cluster.primary_image(s)
        if primary_image != new:
            verdict.append(f"primary runs {primary_image}, not {new}")
        target = self.cluster.deployment(s.namespace, s.name) or {}
        if target.get("spec", {}).get("replicas") != 0:
            verdict.append("the canary Deployment was not scaled to zero")
        verdict += self.webhook_findings(s, calls, expect_load=True)
        self.log(name, s, t, messages=messages, calls=calls, verdict=verdict)
        return Outcome(
            name,
            not verdict,
            "promoted",
            " → ".join(map(str, seen)) + f" in {t.events[-1][0]:.0f}s" if t.events else "",
            t,
        )

    def rollback(
        self, s: ProgressiveService, label: str, behaviour: Behaviour, metric: str
    ) -> Outcome:
        name = f"{s.name}-{label}"
        t, phase, messages, calls, new = self.analysis(s, label, behaviour)
        seen = expect.collapse([Routing(100, 0), *t.routing])
        verdict = []
        if phase != "Failed":
            verdict.append(f"phase {phase}, not Failed")
        if not expect.is_rollback(seen, s):
            verdict.append(
                "routing " + " → ".join(map(str, seen)) + " is not a rollback of the plan"
            )
        if t.max_failed_checks < s.threshold:
            verdict.append(
                f"{t.max_failed_checks} failed checks before the rollback, threshold {s.threshold}"
            )
        # Flagger names its built-in checks in prose ("success rate", "request duration"),
        # a template's by the metric's name (pkg/controller/scheduler_metrics.go).
        phrase = BUILTIN_HALT_PHRASES.get(metric, metric)
        halts = [m for m in messages if m.startswith("Halt") and phrase in m]
        if not halts:
            verdict.append(f"no failed {metric} check in Flagger's log")
        primary_image = self.cluster.primary_image(s)
        if primary_image == new:
            verdict.append("the failing image reached the primary")
        self.log(name, s, t, messages=messages, calls=calls, verdict=verdict)
        detail = f"{' → '.join(map(str, seen))}; {len(halts)} failed {metric} checks"
        return Outcome(name, not verdict, "rolled back", detail, t)

    def acceptance_fails(self, s: ProgressiveService) -> Outcome:
        name = f"{s.name}-acceptance-fails"
        t, phase, messages, calls, _ = self.analysis(s, "unhealthy", Behaviour(healthy=False))
        seen = expect.collapse([Routing(100, 0), *t.routing])
        verdict = []
        if phase != "Failed":
            verdict.append(f"phase {phase}, not Failed")
        if seen != [Routing(100, 0)]:
            verdict.append("traffic moved: " + " → ".join(map(str, seen)))
        acceptance = [c for c in calls if c.tool in ("curl", "grpc_health_probe")]
        if not acceptance or any(c.exit == 0 for c in acceptance):
            verdict.append("the acceptance test did not fail on the unhealthy canary")
        if not any("pre-rollout check acceptance-test failed" in m for m in messages):
            verdict.append("Flagger did not halt on the pre-rollout check")
        if any(c.tool in ("hey", "ghz") for c in calls):
            verdict.append("a load test ran although the rollout never started")
        verdict += self.webhook_findings(s, calls, expect_load=False)
        self.log(name, s, t, messages=messages, calls=calls, verdict=verdict)
        return Outcome(
            name,
            not verdict,
            "rolled back",
            f"{len(acceptance)} failed acceptance tests, no traffic moved",
            t,
        )

    def webhook_findings(
        self, s: ProgressiveService, calls: list[Any], *, expect_load: bool
    ) -> list[str]:
        findings = []
        acceptance = [c for c in calls if c.tool in ("curl", "grpc_health_probe")]
        loads = [c for c in calls if c.tool in ("hey", "ghz")]
        if not acceptance:
            findings.append("the acceptance test was never called")
        for c in acceptance[:1]:
            findings += [f"acceptance: {f}" for f in expect.acceptance_findings(s, c.argv)]
        if expect_load and not loads:
            findings.append("the load test was never called")
        for c in loads[:1]:
            findings += [f"load test: {f}" for f in expect.load_test_findings(s, c.argv)]
        return findings

    def delete(self, s: ProgressiveService) -> Outcome:
        name = f"{s.name}-revert-on-deletion"
        t = Timeline()
        vs_before = self.cluster.virtual_service(s)
        adopted = bool(
            vs_before
            and "flagger.kubernetes.io/original-configuration"
            in vs_before["metadata"].get("annotations", {})
        )
        status, body = self.cluster.cp.request(
            "DELETE",
            f"{FLAGGER_API}/namespaces/{s.namespace}/canaries/{s.name}",
            {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
        verdict = []
        if status >= 300:
            verdict.append(f"delete: {status} {body.get('message')}")
        gone = wait_for(lambda: self.cluster.canary(s) is None, 6 * s.interval_s + 60)
        t.note("Canary gone" if gone else "Canary still there")
        if not gone:
            verdict.append("the Canary was not finalized")
        target_ready = wait_for(
            lambda: (
                (
                    (self.cluster.deployment(s.namespace, s.name) or {})
                    .get("status", {})
                    .get("readyReplicas")
                    or 0
                )
                > 0
            ),
            60,
        )
        if not target_ready:
            verdict.append("the target Deployment was not scaled back up")
        apex = self.cluster.get(f"/api/v1/namespaces/{s.namespace}/services/{s.name}") or {}
        selector = apex.get("spec", {}).get("selector", {})
        if selector.get("app") != s.name:
            verdict.append(f"the apex Service selects {selector}, not the target's pods")
        primary_gone = wait_for(
            lambda: self.cluster.deployment(s.namespace, f"{s.name}-primary") is None, 60
        )
        if not primary_gone:
            verdict.append("-primary was not garbage-collected")
        vs_after = self.cluster.virtual_service(s)
        if adopted:
            routes = (vs_after or {}).get("spec", {})
            detail_vs = (
                "restored to the spec it replaced"
                if vs_after and routing_of(vs_after, s) is None
                else "NOT restored"
            )
            if vs_after is None or routing_of(vs_after, s) is not None:
                verdict.append(f"the adopted VirtualService was not restored: {routes}")
            # The restored static routes send the public hosts to the apex Service, which
            # selects the scaled-up target again: no gap on this path.
            for host in s.public_hosts:
                why = host_answers(self.cluster, s, host)
                if why:
                    verdict.append(f"{host} after the revert: {why}")
        else:
            gone_vs = wait_for(lambda: self.cluster.virtual_service(s) is None, 60)
            detail_vs = (
                "deleted with its Canary (Flagger created it)"
                if gone_vs
                else "left routing to -primary"
            )
            if not gone_vs:
                verdict.append("Flagger's VirtualService still routes to the deleted -primary")
        public = [f"{h}: {host_answers(self.cluster, s, h) or 'answers'}" for h in s.public_hosts]
        t.note(f"VirtualService {detail_vs}; public hosts: {'; '.join(public) or 'none'}")
        self.log(name, s, t, messages=[], calls=[], verdict=verdict)
        return Outcome(
            name,
            not verdict,
            "reverted",
            f"target Ready, apex → {s.name}, VirtualService {detail_vs}",
            t,
        )


# --- one stack ---------------------------------------------------------------------------------


def override_stack_file(copy: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit the project copy's stack file (never the checkout's)."""
    data = yaml.safe_load(copy.read_text())
    edit(data["config"])
    copy.write_text(yaml.safe_dump(data, sort_keys=False))


def tier_overrides(
    services: Sequence[ProgressiveService], prometheus_url: str
) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["meshstack:prometheusUrl"] = prometheus_url
        for s in services:
            entry = config["meshstack:services"][s.index]
            entry.setdefault("traffic", {}).setdefault("progressive", {})["interval"] = (
                expect.TEST_INTERVAL
            )

    return edit


def as_static(s: ProgressiveService, keep: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        entry = config["meshstack:services"][s.index]
        entry["delivery"] = "static"
        keep["progressive"] = entry["traffic"].pop("progressive")

    return edit


def as_progressive(s: ProgressiveService, keep: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        entry = config["meshstack:services"][s.index]
        entry["delivery"] = "progressive"
        entry["traffic"]["progressive"] = keep["progressive"]

    return edit


def route_owners(cli: e2e.Cli, stack: str, kc: Path, step: str) -> dict[str, str]:
    _, out, _ = cli.pulumi(stack, step, "stack", "output", "routeOwners", "--json", kubeconfig=kc)
    return dict(json.loads(out[out.index("{") :]))


def run_stack(
    stack: str,
    services: list[ProgressiveService],
    *,
    work: Path,
    cache: Path,
    flagger_bin: Path,
    cli: e2e.Cli,
    switch: ProgressiveService | None,
) -> list[Outcome]:
    plan = e2e.plan(stack)
    settings = load_settings(load_stack_config(stack, REPO)[0])
    flagger_ns = settings.traffic.flagger_namespace
    outcomes: list[Outcome] = []
    with contextlib.ExitStack() as running:
        cp = running.enter_context(
            control_plane(plan.kube_context, work / "cp" / stack, cache / "bin", plan.storage_class)
        )
        cluster = Cluster(cp)
        kc = cp.kubeconfig
        model = MeshModel(
            cluster.api,
            services,
            gateway_workload="istio-ingressgateway",
            gateway_namespace="istio-ingress",
            loadtester_namespace=flagger_ns,
            cluster=settings.effective_cluster_name,
        )
        model_port = free_port()
        model.start(model_port)
        running.callback(model.stop)
        prom_port = running.enter_context(prometheus(work / f"prom-{stack}", model_port))
        say(
            f"{stack}: test overrides: analysis interval {expect.TEST_INTERVAL}, "
            f"meshstack:prometheusUrl http://127.0.0.1:{prom_port} (local Prometheus, 1s scrapes; "
            "production: the PodMonitor's interval), loadtester commands answered by the mesh model"
        )
        e2e.prepare_stack(cli, plan, cp, work)
        stack_copy = cli.project / f"Pulumi.{stack}.yaml"
        override_stack_file(stack_copy, tier_overrides(services, f"http://127.0.0.1:{prom_port}"))
        kept: dict[str, Any] = {}
        if switch is not None:
            override_stack_file(stack_copy, as_static(switch, kept))
            say(f"{stack}: {switch.key} deployed as delivery: static first (the switch scenario)")

        shims = work / f"shims-{stack}"
        shims.mkdir()
        for tool in SHIMMED:
            script = shims / tool
            script.write_text(
                f'#!/bin/sh\nexec "{sys.executable}" -m tools.progressive.shim {tool} "$@"\n'
            )
            script.chmod(0o755)
        proxy = ServiceProxy(cluster)
        proxy.start()
        running.callback(proxy.stop)
        loadtester_port = free_port()
        proxy.backends[("flagger-loadtester", flagger_ns, 80)] = loadtester_port
        pods = LocalPods(cluster, LOGS / stack)
        (LOGS / stack).mkdir(parents=True, exist_ok=True)

        def flagger_cmd(args: list[str]) -> tuple[list[str], dict[str, str]]:
            return (
                [str(flagger_bin / "flagger"), *args, f"-kubeconfig={kc}", f"-port={free_port()}"],
                {"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "127.0.0.1,localhost"},
            )

        def loadtester_cmd(args: list[str]) -> tuple[list[str], dict[str, str]]:
            kept_args = [a for a in args if not a.startswith("-port=")]
            return (
                [str(flagger_bin / "loadtester"), *kept_args, f"-port={loadtester_port}"],
                {
                    "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}",
                    "MESHSTACK_MESH_MODEL": f"http://127.0.0.1:{model_port}",
                    "PYTHONPATH": str(REPO),
                },
            )

        pods.add(flagger_ns, "flagger", flagger_cmd)
        pods.add(flagger_ns, "flagger-loadtester", loadtester_cmd)
        pods.start()
        running.callback(pods.stop)

        _, _, took = cli.pulumi(stack, "up", "up", "--yes", "--skip-preview", kubeconfig=kc)
        say(f"{stack}: pulumi up {took:.0f}s")
        for s in services:
            for obj in application(s):
                cp.apply(obj)
        runner = Runner(cluster, model, LOGS / stack / "flagger.log")

        if switch is not None:
            outcomes.append(
                switch_scenario(
                    cli, stack, kc=kc, cluster=cluster, s=switch, stack_copy=stack_copy, kept=kept
                )
            )
        for s in services:
            initialized = wait_for(
                partial(initialized_by_flagger, cluster, s), 6 * s.interval_s + 120
            )
            if not initialized:
                log = LOGS / stack / "flagger.log"
                raise e2e.StepFailedError(f"{stack}: Flagger did not initialize {s.key}, see {log}")
            say(f"{stack}: {s.key} initialized by Flagger")
            outcomes.append(report(runner.promote(s)))
            if s.protocol == "grpc":
                outcomes.append(
                    report(
                        runner.rollback(
                            s,
                            "grpc-unavailable",
                            Behaviour(grpc_unavailable_ratio=BAD_SHARE),
                            "grpc-success-rate",
                        )
                    )
                )
            else:
                outcomes.append(
                    report(
                        runner.rollback(
                            s, "errors", Behaviour(error_ratio=BAD_SHARE), "request-success-rate"
                        )
                    )
                )
            # The failed canary's requests stay in Flagger's query window: the next analysis
            # would judge them too (as it would in production), so the latency scenario
            # starts once they have left it and fails on its own latency alone.
            time.sleep(s.metrics_interval_s + 5)
            outcomes.append(
                report(
                    runner.rollback(
                        s,
                        "slow",
                        Behaviour(slow_ratio=BAD_SHARE, slow_ms=4 * s.duration_max_ms),
                        "request-duration",
                    )
                )
            )
            outcomes.append(report(runner.acceptance_fails(s)))
            outcomes.append(report(runner.delete(s)))
        if model.errors:
            write_log(f"{stack}-model-errors", model.errors)
    return outcomes


def initialized_by_flagger(cluster: Cluster, s: ProgressiveService) -> bool:
    phase = (cluster.canary(s) or {}).get("status", {}).get("phase")
    return phase in ("Initialized", "Succeeded")


def report(outcome: Outcome) -> Outcome:
    say(f"{outcome.name}: {'pass' if outcome.passed else 'FAIL'}: {outcome.kind}: {outcome.detail}")
    return outcome


def switch_scenario(
    cli: e2e.Cli,
    stack: str,
    *,
    kc: Path,
    cluster: Cluster,
    s: ProgressiveService,
    stack_copy: Path,
    kept: dict[str, Any],
) -> Outcome:
    name = f"{s.name}-static-to-progressive"
    host = s.public_hosts[0]
    verdict = []
    before = wait_for(lambda: host_answers(cluster, s, host) is None, 60)
    if not before:
        verdict.append(f"before the switch: {host_answers(cluster, s, host)}")
    owners_static = route_owners(cli, stack, kc, "outputs-static")
    override_stack_file(stack_copy, as_progressive(s, kept))
    t = Timeline()
    with Continuity(cluster, s, host) as watch:
        _, _, took1 = cli.pulumi(stack, "up-switch", "up", "--yes", "--skip-preview", kubeconfig=kc)
        t.note(f"switching update done in {took1:.0f}s")
        owners_switch = route_owners(cli, stack, kc, "outputs-switch")
        _, _, took2 = cli.pulumi(
            stack, "up-after-switch", "up", "--yes", "--skip-preview", kubeconfig=kc
        )
        t.note(f"next update done in {took2:.0f}s")
        owners_after = route_owners(cli, stack, kc, "outputs-after-switch")
        time.sleep(2 * s.interval_s)  # Flagger's next ticks with the update's result
    vs = cluster.virtual_service(s)
    dr = cluster.get(f"{ISTIO_API}/namespaces/{s.namespace}/destinationrules/{s.name}")
    steps = [owners_static.get(s.key), owners_switch.get(s.key), owners_after.get(s.key)]
    if steps != ["program", "handing-over", "flagger"]:
        verdict.append(f"routeOwners went {steps}")
    if watch.gaps:
        verdict.append(
            f"{len(watch.gaps)} of {watch.polls} polls without a route, first: {watch.gaps[0]}"
        )
    if len(watch.uids) != 1 or watch.uids[0] == "absent":
        verdict.append(f"the VirtualService was deleted or replaced: uids {watch.uids}")
    if vs is None or routing_of(vs, s) is None:
        verdict.append("Flagger does not route the host after the switch")
    if dr is not None:
        verdict.append(f"the static DestinationRule {s.name} is still there")
    t.note(
        f"{watch.polls} polls of {host}, {len(watch.gaps)} without a route; "
        f"VirtualService uid {watch.uids}"
    )
    lines = [
        f"{name} ({s.key}): {host}",
        *[f"  +{a:6.1f}s {e}" for a, e in t.events],
        "gaps:",
        *watch.gaps[:50],
        "verdict:",
        *(verdict or ["pass"]),
    ]
    write_log(name, lines)
    outcome = Outcome(
        name,
        not verdict,
        "switched",
        f"{watch.polls} polls of {host}, {len(watch.gaps)} without a route, "
        f"routeOwners {' → '.join(map(str, steps))}",
        t,
    )
    report(outcome)
    return outcome


# --- the tier ------------------------------------------------------------------------------------


def summary(outcomes: Sequence[Outcome]) -> str:
    passed = sum(o.passed for o in outcomes)
    promoted = sum(o.passed and o.kind == "promoted" for o in outcomes)
    rolled = sum(o.passed and o.kind == "rolled back" for o in outcomes)
    switch = [o for o in outcomes if o.kind == "switched"]
    gapless = "yes" if switch and all(o.passed for o in switch) else "NO"
    return (
        f"progressive: {passed}/{len(outcomes)} scenarios (promoted {promoted}, rolled back "
        f"{rolled}), static to progressive without a gap: {gapless}"
    )


def scenario(keep: Path | None = None, only: Sequence[str] = ()) -> list[Outcome]:
    """Every stack with a progressive service (and the hub, which the spokes read); with
    `only`, the scenarios of those stacks alone (the hub is still brought up)."""
    cache = tools_bin().parent
    if not (cache / ".complete").exists():
        raise e2e.StepFailedError(
            f"tools: no complete e2e tool cache at {cache}, run `make e2e-tools`"
        )
    flagger_bin = progressive_tools()
    if not (flagger_bin / "flagger").exists():
        raise e2e.StepFailedError(
            f"tools: no Flagger at {flagger_bin}, run `make progressive-tools`"
        )
    if shutil.which("prometheus") is None:
        raise e2e.StepFailedError(
            "tools: no prometheus on PATH (Debian: apt-get install prometheus)"
        )
    order = list(deploy_order())
    by_stack = {
        stack: expect.progressive_services(load_settings(load_stack_config(stack, REPO)[0]))
        for stack in order
    }
    stacks = [st for i, st in enumerate(order) if i == 0 or by_stack[st]]
    every = [s for st in stacks for s in by_stack[st]]
    switch = expect.switch_candidate(every)
    outcomes: list[Outcome] = []
    with e2e._workdir(keep) as work:
        (work / "project").mkdir()
        e2e.copy_project(work / "project")
        cli = e2e.Cli(cache, work, LOGS)
        for stack in stacks:
            services = by_stack[stack] if not only or stack in only else []
            here = switch if switch is not None and switch in services else None
            outcomes += run_stack(
                stack,
                services,
                work=work,
                cache=cache,
                flagger_bin=flagger_bin,
                cli=cli,
                switch=here,
            )
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.progressive.run", description=__doc__)
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it")
    parser.add_argument("--stacks", nargs="+", default=(), help="the scenarios of these only")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.stacks) - set(deploy_order()))
    if unknown:
        print(f"progressive: no stack file for {', '.join(unknown)}", file=sys.stderr)
        return 2
    if LOGS.exists():
        shutil.rmtree(LOGS)
    LOGS.mkdir(parents=True)
    started = time.monotonic()
    try:
        outcomes = scenario(args.keep, args.stacks)
    except (e2e.StepFailedError, ControlPlaneError) as exc:
        print(f"progressive: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"progressive: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    line = summary(outcomes)
    (LOGS / "summary.txt").write_text(line + "\n")
    print(
        f"progressive: {time.monotonic() - started:.0f}s in all; logs in {LOGS.relative_to(REPO)}/"
    )
    print(line)
    return 0 if outcomes and all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
