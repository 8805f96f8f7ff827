"""The data plane a local control plane lacks: the telemetry Istio's proxies would emit, and
the answers the loadtester's commands would get.

kwok runs no containers, so nothing serves requests and no sidecar reports them. This model
stands in for both, from what is in the API server, once a second:

- **Routing** is read from the cluster as Envoy would apply it: the service's VirtualService
  (the weighted route, its mirror), each destination host's Service and the Deployment whose
  Ready pods that Service selects. No VirtualService: the apex Service's selection.
- **Behaviour** is the scenario's input: what the image a Deployment runs does (its share of
  5xx, of gRPC UNAVAILABLE answered with HTTP 200, of slow requests, whether its health check
  passes), written by the scenario before it rolls the image out.
- **Telemetry**: `istio_requests_total` and `istio_request_duration_milliseconds_bucket` with
  the 25 labels of Istio's stats filter, reported by the serving sidecar
  (`reporter="destination"`) and by the calling gateway or loadtester (`reporter="source"`),
  Envoy's default histogram buckets, integer counters that only grow, each label set created
  on its first request (`../shared/research/prometheus-metrics.md` sections 1 and 5). A
  mirrored request is reported by the sidecar that serves it, never by the caller.
- **Commands**: the loadtester's `curl`, `grpc_health_probe`, `hey` and `ghz` are shims
  (`shim.py`) that ask `/call` here: the target is resolved through its Service to the pods
  it selects; a load test adds its requests/s to that workload for its duration.

Prometheus (Debian's) scrapes `/metrics`; Flagger's queries are its own.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from components.settings_types import duration_ms
from tools.progressive.expect import ProgressiveService, flag

USER_RPS: Final = 20.0
"""Requests/s users send to each service through the ingress gateway."""
FAST_MS: Final = 8.0
ENVOY_BUCKETS: Final = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)  # fmt: skip
"""Envoy's default histogram buckets (ms), which Istio keeps without the annotation."""


@dataclass(frozen=True)
class Behaviour:
    """What an image does with the requests it gets."""

    error_ratio: float = 0.0
    """Share answered HTTP 503 (gRPC: 503 with grpc-status 14)."""
    grpc_unavailable_ratio: float = 0.0
    """gRPC only: share answered HTTP 200 with grpc-status 14 UNAVAILABLE."""
    slow_ratio: float = 0.0
    slow_ms: float = 0.0
    healthy: bool = True
    """Whether its health/acceptance endpoint answers success."""


@dataclass
class Call:
    """One command the loadtester ran, as the shim saw it."""

    at: float
    tool: str
    argv: list[str]
    exit: int
    detail: str


@dataclass
class _Load:
    workload: str
    namespace: str
    rps: float
    until: float


@dataclass
class _Series:
    requests: dict[tuple[tuple[str, str], ...], int] = field(default_factory=dict)
    buckets: dict[tuple[tuple[str, str], ...], list[int]] = field(default_factory=dict)
    sums: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


Api = Callable[[str, str], tuple[int, dict[str, Any]]]
"""`(method, path) -> (status, body)`: the control plane's API client."""


class MeshModel:
    """Routing, behaviour and telemetry of the stack's progressive services."""

    def __init__(
        self,
        api: Api,
        services: Sequence[ProgressiveService],
        *,
        gateway_workload: str,
        gateway_namespace: str,
        loadtester_namespace: str,
        cluster: str,
    ) -> None:
        self.api = api
        self.services = list(services)
        self.gateway = (gateway_workload, gateway_namespace)
        self.loadtester_namespace = loadtester_namespace
        self.cluster = cluster
        self.behaviours: dict[str, Behaviour] = {}
        """image → behaviour; an image not listed is healthy."""
        self.calls: list[Call] = []
        self._loads: list[_Load] = []
        self._series = _Series()
        self._carry: dict[tuple[Any, ...], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.errors: list[str] = []

    # -- cluster state ---------------------------------------------------------------------

    def _get(self, path: str) -> dict[str, Any] | None:
        status, body = self.api("GET", path)
        return body if status == 200 else None

    def _deployments(self, namespace: str) -> list[dict[str, Any]]:
        body = self._get(f"/apis/apps/v1/namespaces/{namespace}/deployments") or {}
        return list(body.get("items", []))

    def selected(self, host: str, namespace: str) -> list[dict[str, Any]]:
        """The Deployments with Ready pods that Service `host` (short or `<svc>.<ns>`) selects."""
        name, _, ns = host.partition(".")
        ns = ns.split(".")[0] or namespace
        svc = self._get(f"/api/v1/namespaces/{ns}/services/{name}")
        if svc is None:
            return []
        selector = svc.get("spec", {}).get("selector") or {}
        if not selector:
            return []
        found = []
        for dep in self._deployments(ns):
            labels = dep["spec"]["template"]["metadata"].get("labels", {})
            ready = dep.get("status", {}).get("readyReplicas", 0) or 0
            if ready and all(labels.get(k) == v for k, v in selector.items()):
                found.append(dep)
        return found

    def _virtual_service(self, service: ProgressiveService) -> dict[str, Any] | None:
        return self._get(
            f"/apis/networking.istio.io/v1/namespaces/{service.namespace}"
            f"/virtualservices/{service.name}"
        )

    def destinations(self, service: ProgressiveService) -> tuple[list[tuple[str, int]], str | None]:
        """`([(host, weight)], mirror host)` of the route a new user request takes."""
        vs = self._virtual_service(service)
        if vs is None:
            return [(service.name, 100)], None
        routes = vs.get("spec", {}).get("http") or []
        # Flagger's session-affinity route (a Cookie match) serves only returning clients.
        plain = [
            r
            for r in routes
            if not any(
                "cookie" in {h.lower() for h in m.get("headers", {})} for m in r.get("match") or []
            )
        ]
        route = (plain or routes or [{}])[-1]
        weighted = [
            (d["destination"]["host"], int(d.get("weight", 100 if len(route["route"]) == 1 else 0)))
            for d in route.get("route", [])
        ]
        mirror = route.get("mirror", {}).get("host")
        return weighted, mirror

    # -- traffic ---------------------------------------------------------------------------

    def behaviour_of(self, deployment: dict[str, Any]) -> Behaviour:
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        return self.behaviours.get(image, Behaviour())

    def _serve(
        self,
        service: ProgressiveService,
        deployment: dict[str, Any],
        rps: float,
        source: tuple[str, str],
        dt: float,
        *,
        report_source: bool,
    ) -> None:
        behaviour = self.behaviour_of(deployment)
        workload = deployment["metadata"]["name"]
        grpc = service.protocol == "grpc"
        classes: list[tuple[str, str, float, float]] = []  # code, grpc status, share, ms
        ok_share = 1.0 - behaviour.error_ratio - behaviour.grpc_unavailable_ratio
        if behaviour.error_ratio:
            classes.append(("503", "14" if grpc else "", behaviour.error_ratio, FAST_MS))
        if behaviour.grpc_unavailable_ratio and grpc:
            classes.append(("200", "14", behaviour.grpc_unavailable_ratio, FAST_MS))
        slow = min(behaviour.slow_ratio, ok_share)
        if slow:
            classes.append(("200", "0" if grpc else "", slow, behaviour.slow_ms))
        classes.append(("200", "0" if grpc else "", ok_share - slow, FAST_MS))
        for code, status, share, ms in classes:
            count = self._take((workload, source, code, status, ms), rps * share * dt)
            if not count:
                continue
            reporters = ("destination", "source") if report_source else ("destination",)
            for reporter in reporters:
                labels = self._labels(
                    service, deployment, source, reporter, code=code, grpc_status=status
                )
                self._add(labels, count, ms)

    def _take(self, key: tuple[Any, ...], amount: float) -> int:
        """Whole requests out of a fractional amount, the rest carried to the next tick."""
        total = self._carry.get(key, 0.0) + amount
        whole = math.floor(total)
        self._carry[key] = total - whole
        return whole

    def _labels(
        self,
        service: ProgressiveService,
        deployment: dict[str, Any],
        source: tuple[str, str],
        reporter: str,
        *,
        code: str,
        grpc_status: str,
    ) -> tuple[tuple[str, str], ...]:
        workload = deployment["metadata"]["name"]
        pod_labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        version = pod_labels.get("version", "")
        app = pod_labels.get("app", "")
        canonical = pod_labels.get("service.istio.io/canonical-name", app or workload)
        revision = pod_labels.get("service.istio.io/canonical-revision", version or "latest")
        host = f"{service.name}.{service.namespace}.svc.cluster.local"
        src_workload, src_ns = source
        td = "cluster.local"
        labels = {
            "reporter": reporter,
            "source_workload": src_workload,
            "source_workload_namespace": src_ns,
            "source_principal": f"spiffe://{td}/ns/{src_ns}/sa/{src_workload}",
            "source_app": src_workload,
            "source_version": "unknown",
            "source_canonical_service": src_workload,
            "source_canonical_revision": "latest",
            "source_cluster": self.cluster,
            "destination_workload": workload,
            "destination_workload_namespace": service.namespace,
            "destination_principal": f"spiffe://{td}/ns/{service.namespace}/sa/{service.name}",
            "destination_app": app,
            "destination_version": version,
            "destination_service": host,
            "destination_service_name": service.name,
            "destination_service_namespace": service.namespace,
            "destination_canonical_service": canonical,
            "destination_canonical_revision": revision,
            "destination_cluster": self.cluster,
            "request_protocol": "grpc" if service.protocol == "grpc" else "http",
            "response_flags": "-",
            "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
            "response_code": code,
            "grpc_response_status": grpc_status,
        }
        return tuple(sorted(labels.items()))

    def _add(self, labels: tuple[tuple[str, str], ...], count: int, ms: float) -> None:
        series = self._series
        series.requests[labels] = series.requests.get(labels, 0) + count
        buckets = series.buckets.setdefault(labels, [0] * len(ENVOY_BUCKETS))
        for i, bound in enumerate(ENVOY_BUCKETS):
            if ms <= bound:
                buckets[i] += count
        series.sums[labels] = series.sums.get(labels, 0.0) + ms * count

    def tick(self, dt: float) -> None:
        """One interval of traffic for every service, from the cluster's current state."""
        now = time.monotonic()
        with self._lock:
            self._loads = [load for load in self._loads if load.until > now]
            loads = list(self._loads)
        for service in self.services:
            weighted, mirror = self.destinations(service)
            by_host: dict[str, float] = {}
            for host, weight in weighted:
                if weight > 0:
                    by_host[host] = by_host.get(host, 0.0) + USER_RPS * weight / 100
            with self._lock:
                for host, rps in by_host.items():
                    for dep in self.selected(host, service.namespace)[:1]:
                        self._serve(service, dep, rps, self.gateway, dt, report_source=True)
                if mirror:
                    for dep in self.selected(mirror, service.namespace)[:1]:
                        self._serve(service, dep, USER_RPS, self.gateway, dt, report_source=False)
                for load in loads:
                    if load.namespace != service.namespace:
                        continue
                    for dep in self._deployments(service.namespace):
                        if dep["metadata"]["name"] == load.workload:
                            source = ("flagger-loadtester", self.loadtester_namespace)
                            self._serve(service, dep, load.rps, source, dt, report_source=True)

    # -- commands --------------------------------------------------------------------------

    def _target(self, address: str) -> tuple[ProgressiveService | None, list[dict[str, Any]]]:
        host = address.split(":", maxsplit=1)[0]
        name, _, ns = host.partition(".")
        for service in self.services:
            if ns.split(".")[0] == service.namespace:
                return service, self.selected(f"{name}.{service.namespace}", service.namespace)
        return None, []

    def call(self, tool: str, argv: list[str]) -> tuple[int, str, float]:
        """`(exit code, output, seconds to keep running)` of one command of the loadtester."""
        if tool in ("curl", "grpc_health_probe"):
            if tool == "curl":
                url = urllib.parse.urlsplit(argv[-1])
                address = url.netloc
            else:
                address = flag(argv, "-addr") or ""
            _, deps = self._target(address)
            if not deps:
                return (7 if tool == "curl" else 2), f"{address}: no ready endpoints", 0.0
            behaviour = self.behaviour_of(deps[0])
            if behaviour.healthy:
                return 0, "status: SERVING" if tool != "curl" else "ok", 0.0
            if tool == "curl":
                return 22, "curl: (22) The requested URL returned error: 503", 0.0
            return 4, "service unhealthy (responded with NOT_SERVING)", 0.0
        if tool in ("hey", "ghz"):
            seconds = duration_ms(flag(argv, "-z") or "0s") / 1000
            qps = float(flag(argv, "-q") or 0)
            if tool == "hey":
                qps *= float(flag(argv, "-c") or 50)
                address = argv[-1].removeprefix("http://").split("/", 1)[0]
            else:
                address = argv[-1]
            service, deps = self._target(address)
            if service is None or not deps:
                return 1, f"{address}: no ready endpoints", 0.0
            with self._lock:
                self._loads.append(
                    _Load(
                        deps[0]["metadata"]["name"],
                        service.namespace,
                        qps,
                        time.monotonic() + seconds,
                    )
                )
            return 0, f"{qps:g} requests/s to {deps[0]['metadata']['name']}", seconds
        return 127, f"{tool}: not a command the loadtester image ships", 0.0

    # -- exposition ------------------------------------------------------------------------

    def exposition(self) -> str:
        with self._lock:
            requests = dict(self._series.requests)
            buckets = {k: list(v) for k, v in self._series.buckets.items()}
            sums = dict(self._series.sums)
        lines = ["# TYPE istio_requests_total counter"]
        for labels, value in sorted(requests.items()):
            lines.append(f"istio_requests_total{_fmt(labels)} {value}")
        lines.append("# TYPE istio_request_duration_milliseconds histogram")
        for labels, counts in sorted(buckets.items()):
            for bound, count in zip(ENVOY_BUCKETS, counts, strict=True):
                le = _fmt(labels, le=f"{bound:g}")
                lines.append(f"istio_request_duration_milliseconds_bucket{le} {count}")
            total = requests[labels]
            lines.append(
                f"istio_request_duration_milliseconds_bucket{_fmt(labels, le='+Inf')} {total}"
            )
            lines.append(f"istio_request_duration_milliseconds_sum{_fmt(labels)} {sums[labels]:g}")
            lines.append(f"istio_request_duration_milliseconds_count{_fmt(labels)} {total}")
        return "\n".join(lines) + "\n"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, port: int) -> None:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = model.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code, output, seconds = model.call(request["tool"], request["argv"])
                with model._lock:
                    model.calls.append(
                        Call(time.time(), request["tool"], request["argv"], code, output)
                    )
                body = json.dumps({"exit": code, "output": output, "seconds": seconds}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(1.0):
            now = time.monotonic()
            try:
                self.tick(now - last)
            except Exception as exc:  # the run reports it; the loop goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
            last = now

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()


def _fmt(labels: tuple[tuple[str, str], ...], **extra: str) -> str:
    items = [*labels, *extra.items()]
    inner = ",".join(f'{k}="{v}"' for k, v in items)
    return "{" + inner + "}"
