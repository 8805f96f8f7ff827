"""A local Kubernetes control plane for the e2e harness, on loopback only.

One `ControlPlane` runs, from the tools `make e2e-tools` built (tools/e2e/build.sh):

- etcd (a throw-away data dir, no fsync);
- kube-apiserver with a static admin token (group system:masters) and RBAC. The admission webhook
  plugins (MutatingAdmissionWebhook, ValidatingAdmissionWebhook) are disabled: istiod is never
  running here (kwok fakes pods, it runs no containers), so every call to Istio's sidecar-injector
  and config-validation webhooks would fail and reject the objects. The built-in admission plugins
  (ValidatingAdmissionPolicy included) and CRD structural-schema + CEL validation stay on;
- kube-controller-manager (service accounts, deployments/replica sets, PV binding, garbage
  collection ...) and kube-scheduler, both with the admin token;
- kwok, managing one fake node (`kwok-node-0`): it marks the node Ready and the pods scheduled on
  it Running and Ready, so the provider's await logic runs against real status changes;
- a static hostPath PersistentVolume (for Jaeger's claim), a loop that gives every LoadBalancer
  Service an ingress address (127.0.1.N: loopback, never dialled), and the cluster prerequisites
  the program documents: the prometheus-operator CRDs and the `monitoring` namespace.

Everything it starts it stops again, in reverse order, when the `with` block ends, on an
exception, on SIGINT/SIGTERM, or at interpreter exit. A step that fails raises `ControlPlaneError`
whose message is one line naming the step and its log file.

Command line:

    python -m tools.e2e.controlplane smoke   start one, check it through the API, stop it
    python -m tools.e2e.controlplane run -- CMD ...
                                             start one, run CMD with KUBECONFIG set, stop it
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MESHSTACK_SHARED", REPO.parent / "shared"))
PROMETHEUS_OPERATOR_CRDS = SHARED / "reference" / "crds" / "prometheus-operator.yaml"
NODE_NAME = "kwok-node-0"
FIELD_MANAGER = "meshstack-e2e"
ADDRESSED_KINDS: tuple[tuple[str, str, Any], ...] = (
    ("/api/v1/services", "/api/v1", lambda svc: svc["spec"].get("type") == "LoadBalancer"),
    ("/apis/networking.k8s.io/v1/ingresses", "/apis/networking.k8s.io/v1", lambda _: True),
)
"""(collection, its group-version prefix, which objects get an address) of the LB loop."""
DEFAULT_STORAGE_CLASS = "standard"
"""The cluster's default StorageClass when the stack names none."""
# Webhook admission is off (see the module docstring); everything else built in stays on.
DISABLED_ADMISSION = "MutatingAdmissionWebhook,ValidatingAdmissionWebhook"


class ControlPlaneError(RuntimeError):
    """A step failed; the message is one line naming the step and its log file."""


def tools_bin() -> Path:
    """The bin/ folder of the tool cache for the current tools/e2e tree."""
    out = subprocess.run(
        ["bash", str(REPO / "tools" / "e2e" / "build.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip()) / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ControlPlane:
    """etcd + kube-apiserver + controller manager + scheduler + kwok, on 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        name: str = "e2e",
        bin_dir: Path | None = None,
        storage_class: str = "",
        *,
        api_only: bool = False,
    ) -> None:
        self.name = name
        # Only etcd and kube-apiserver (admission and authorization checks need no more).
        self.api_only = api_only
        self.storage_class = storage_class or DEFAULT_STORAGE_CLASS
        self.dir = workdir
        self.bin = bin_dir or tools_bin()
        self.logs = self.dir / "logs"
        self.token = f"meshstack-e2e-{os.urandom(12).hex()}"
        self.api_port = 0
        self.kubeconfig = self.dir / "kubeconfig"
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._stop_lb = threading.Event()
        self._lb_thread: threading.Thread | None = None
        self._ssl: ssl.SSLContext | None = None
        self.lb_errors: list[str] = []
        self._discovery: dict[str, list[dict[str, Any]]] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        atexit.register(self.stop)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        tools: tuple[str, ...] = ("etcd", "kube-apiserver")
        if not self.api_only:
            tools += ("kube-controller-manager", "kube-scheduler", "kwok")
        missing = [t for t in tools if not (self.bin / t).exists()]
        if missing:
            raise ControlPlaneError(
                f"{', '.join(missing)} missing in {self.bin}: run make e2e-tools"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self._keys()
        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                "etcd",
                "--name=default",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: self._tcp_open(etcd_port), 60)

        self.api_port = free_port()
        (self.dir / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        self._spawn(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.dir / 'pki'}",
                f"--token-auth-file={self.dir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--disable-admission-plugins={DISABLED_ADMISSION}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.dir / 'sa.key'}",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        self._wait("kube-apiserver", self._api_ready, 180)
        self._write_kubeconfig()
        if self.api_only:
            return

        common = [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0"]
        self._spawn(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                *common,
                f"--service-account-private-key-file={self.dir / 'sa.key'}",
                f"--root-ca-file={self.dir / 'pki' / 'apiserver.crt'}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodeipam,-service-lb-controller",
            ],
        )
        self._spawn("kube-scheduler", ["kube-scheduler", *common])
        self._spawn(
            "kwok",
            [
                "kwok",
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self.bin.parent / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=127.0.0.1",
                # kwok's kubelet-like server would bind 0.0.0.0:<node port> by default.
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        self._bootstrap()
        self._lb_thread = threading.Thread(target=self._lb_loop, name="lb-loop", daemon=True)
        self._lb_thread.start()

    def stop(self) -> None:
        """Stop every process this control plane started (idempotent)."""
        self._stop_lb.set()
        if self._lb_thread is not None:
            self._lb_thread.join(timeout=5)
            self._lb_thread = None
        while self._procs:
            _, proc = self._procs.pop()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)

    @property
    def pids(self) -> list[int]:
        return [p.pid for _, p in self._procs]

    # -- steps -----------------------------------------------------------------------------------

    def _keys(self) -> None:
        log = self.logs / "keys.log"
        key, pub = str(self.dir / "sa.key"), str(self.dir / "sa.pub")
        with log.open("wb") as out:
            for cmd in (
                ["openssl", "genrsa", "-out", key, "2048"],
                ["openssl", "rsa", "-in", key, "-pubout", "-out", pub],
            ):
                if subprocess.run(cmd, stdout=out, stderr=out, check=False).returncode:
                    raise ControlPlaneError(f"service-account key failed, see {log}")

    def _spawn(self, name: str, argv: list[str]) -> None:
        exe = self.bin / argv[0]
        if not exe.exists():
            raise ControlPlaneError(f"{name}: {exe} is missing, run `make e2e-tools`")
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [str(exe), *argv[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            start_new_session=True,
        )
        log.close()
        self._procs.append((name, proc))

    def _wait(self, name: str, ready: Any, timeout: float) -> None:
        proc = dict(self._procs)[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {proc.returncode}, see {self.logs / (name + '.log')}"
                )
            if ready():
                return
            time.sleep(0.5)
        raise ControlPlaneError(
            f"{name} not ready after {timeout:.0f}s, see {self.logs / (name + '.log')}"
        )

    @staticmethod
    def _tcp_open(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _api_ready(self) -> bool:
        if not (self.dir / "pki" / "apiserver.crt").exists():
            return False
        try:
            status, _ = self.request("GET", "/readyz")
        except (OSError, urllib.error.URLError):
            return False
        return status == 200

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.dir / "pki" / "apiserver.crt"),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": "admin"}}],
            "current-context": self.name,
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _bootstrap(self) -> None:
        log = self.logs / "bootstrap.log"
        try:
            self.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": NODE_NAME,
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {
                            "kubernetes.io/hostname": NODE_NAME,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                    },
                    "status": {
                        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                    },
                }
            )
            # The storage class the stack's claims name (Jaeger's), binding like the clouds'
            # block-storage classes (EBS gp3, PD): WaitForFirstConsumer, so a claim stays
            # Pending until its pod is scheduled. Without a name it is the cluster default.
            default = "true" if self.storage_class == DEFAULT_STORAGE_CLASS else "false"
            self.apply(
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {
                        "name": self.storage_class,
                        "annotations": {"storageclass.kubernetes.io/is-default-class": default},
                    },
                    "provisioner": "kubernetes.io/no-provisioner",
                    "volumeBindingMode": "WaitForFirstConsumer",
                    "reclaimPolicy": "Retain",
                }
            )
            self.apply(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": "e2e-pv-0"},
                    "spec": {
                        "capacity": {"storage": "1Ti"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": self.storage_class,
                        "hostPath": {"path": str(self.dir / "pv-0")},
                    },
                }
            )
            self.apply(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}}
            )
            for doc in yaml.safe_load_all(PROMETHEUS_OPERATOR_CRDS.read_text()):
                if doc:
                    self.apply(doc)
            self._wait("kwok", self._node_ready, 120)
        except ControlPlaneError:
            raise
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            log.write_text(f"{type(exc).__name__}: {exc}\n")
            raise ControlPlaneError(f"cluster bootstrap failed, see {log}") from exc

    def _node_ready(self) -> bool:
        _, node = self.request("GET", f"/api/v1/nodes/{NODE_NAME}")
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _lb_loop(self) -> None:
        """Give LoadBalancer Services an ingress address, as a cloud controller would, and
        every Ingress one, as the ingress controller its class names would (the stacks expect
        one, e.g. ingress-nginx, as a cluster prerequisite)."""
        assigned: dict[str, str] = {}
        while not self._stop_lb.wait(1.0):
            try:
                for collection, prefix, needs_address in ADDRESSED_KINDS:
                    _, listed = self.request("GET", collection)
                    for obj in listed.get("items", []):
                        if not needs_address(obj):
                            continue
                        if obj.get("status", {}).get("loadBalancer", {}).get("ingress"):
                            continue
                        meta = obj["metadata"]
                        key = f"{collection} {meta['namespace']}/{meta['name']}"
                        ip = assigned.setdefault(key, f"127.0.1.{len(assigned) + 1}")
                        status, body = self.request(
                            "PATCH",
                            f"{prefix}/namespaces/{meta['namespace']}/"
                            f"{collection.rsplit('/', 1)[1]}/{meta['name']}/status",
                            {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}},
                            content_type="application/merge-patch+json",
                        )
                        if status >= 300:
                            self.lb_errors.append(f"{key}: {status} {body}")
            except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
                if not self._stop_lb.is_set():
                    self.lb_errors.append(f"{type(exc).__name__}: {exc}")

    # -- API client ------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        """One API call with the admin token; returns (HTTP status, decoded JSON body or {})."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.dir / "pki" / "apiserver.crt"))
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=30) as resp:
                raw = resp.read()
                status: int = resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        try:
            decoded = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            decoded = {"raw": raw.decode(errors="replace")}
        return status, decoded if isinstance(decoded, dict) else {"items": decoded}

    def _discover(self, base: str) -> list[dict[str, Any]]:
        """The resources of one group version; cached once the group version is served
        (a CRD applied later makes an unserved one appear, so misses are not cached)."""
        if base not in self._discovery:
            _, body = self.request("GET", base)
            resources: list[dict[str, Any]] = body.get("resources", [])
            if not resources:
                return []
            self._discovery[base] = resources
        return self._discovery[base]

    def path_of(self, obj: dict[str, Any]) -> str:
        """The REST path of one object, from API discovery."""
        group_version: str = obj["apiVersion"]
        base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        for res in self._discover(base):
            if res["kind"] == obj["kind"] and "/" not in res["name"]:
                ns = obj["metadata"].get("namespace") or "default"
                scope = f"/namespaces/{ns}" if res["namespaced"] else ""
                return f"{base}{scope}/{res['name']}/{obj['metadata']['name']}"
        raise ValueError(f"no API resource for {group_version} {obj['kind']}")

    def get(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The live object named like `obj` (apiVersion, kind, namespace, name), or None when
        it does not exist or its kind is not served."""
        try:
            path = self.path_of(obj)
        except ValueError:
            return None
        status, body = self.request("GET", path)
        return body if status == 200 else None

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply one object (status included for nodes, via the status subresource)."""
        path = self.path_of(obj)
        query = f"?fieldManager={FIELD_MANAGER}&force=true"
        status, body = self.request(
            "PATCH", path + query, obj, content_type="application/apply-patch+yaml"
        )
        if status >= 300:
            raise ValueError(f"apply {path}: {status} {body.get('message', body)}")
        if obj["kind"] == "Node" and "status" in obj:
            status, body = self.request(
                "PATCH",
                f"{path}/status{query}",
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": obj["metadata"]["name"]}}
                | {"status": obj["status"]},
                content_type="application/apply-patch+yaml",
            )
            if status >= 300:
                raise ValueError(f"apply {path}/status: {status} {body.get('message', body)}")
        return body


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def control_plane(
    name: str = "e2e",
    workdir: Path | None = None,
    bin_dir: Path | None = None,
    storage_class: str = "",
    *,
    api_only: bool = False,
) -> Iterator[ControlPlane]:
    """Start a control plane in a temporary folder (or `workdir`) and stop it afterwards
    (`api_only`: etcd and kube-apiserver only, no bootstrap)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="meshstack-cp-")))
        with ControlPlane(workdir, name, bin_dir, storage_class, api_only=api_only) as cp:
            yield cp


def _check(cond: bool, what: str) -> None:
    print(f"  {'ok ' if cond else 'FAIL'} {what}")
    if not cond:
        raise ControlPlaneError(f"smoke check failed: {what}")


def _poll(fn: Any, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.5)
    return False


def smoke(keep: Path | None = None, bin_dir: Path | None = None) -> None:
    """Start a control plane, check each part through the API, stop it."""
    started = time.monotonic()
    with control_plane("smoke", keep, bin_dir) as cp:
        print(f"control plane up in {time.monotonic() - started:.1f}s at {cp.server}")
        status, version = cp.request("GET", "/version")
        _check(status == 200 and version.get("gitVersion", "").startswith("v1.35."), "version")
        print(f"  kube-apiserver {version.get('gitVersion')}")
        _check(cp._node_ready(), f"node {NODE_NAME} Ready (kwok)")
        _, crds = cp.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        names = {c["metadata"]["name"] for c in crds.get("items", [])}
        _check("servicemonitors.monitoring.coreos.com" in names, "prometheus-operator CRDs")
        status, _ = cp.request("GET", "/api/v1/namespaces/monitoring")
        _check(status == 200, "monitoring namespace")
        _check(
            _poll(
                lambda: (
                    cp.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0]
                    == 200
                )
            ),
            "default service account (controller manager)",
        )
        cp.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "smoke", "namespace": "default"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "smoke"}},
                    "template": {
                        "metadata": {"labels": {"app": "smoke"}},
                        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none"}]},
                    },
                },
            }
        )

        def deployment_ready() -> bool:
            _, d = cp.request("GET", "/apis/apps/v1/namespaces/default/deployments/smoke")
            return bool(d.get("status", {}).get("readyReplicas") == 1)

        _check(
            _poll(deployment_ready, 90), "deployment ready (controller manager, scheduler, kwok)"
        )
        cp.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "smoke-lb", "namespace": "default"},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": "smoke"},
                    "ports": [{"port": 80}],
                },
            }
        )

        def lb_address() -> bool:
            _, s = cp.request("GET", "/api/v1/namespaces/default/services/smoke-lb")
            return bool(s.get("status", {}).get("loadBalancer", {}).get("ingress"))

        _check(_poll(lb_address, 30), f"LoadBalancer address {cp.lb_errors or ''}".strip())
        cp.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "smoke", "namespace": "default"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )

        def pvc_phase() -> str:
            _, c = cp.request("GET", "/api/v1/namespaces/default/persistentvolumeclaims/smoke")
            return str(c.get("status", {}).get("phase", ""))

        time.sleep(2)
        _check(pvc_phase() == "Pending", "claim of the default class waits for its first consumer")
        cp.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "smoke-consumer", "namespace": "default"},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "registry.invalid/none",
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "smoke"}}],
                },
            }
        )
        _check(
            _poll(lambda: pvc_phase() == "Bound", 60), "claim bound to the static PV by scheduling"
        )
        pids = cp.pids
    alive = [pid for pid in pids if _alive(pid)]
    _check(not alive, f"everything stopped (left: {alive})")
    print(f"smoke: control plane ok, stopped; {time.monotonic() - started:.1f}s in all")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.e2e.controlplane")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_smoke = sub.add_parser("smoke", help="start, check and stop a control plane")
    p_smoke.add_argument("--workdir", type=Path, help="keep state and logs here")
    p_smoke.add_argument("--bin", type=Path, help="tool folder (default: the cache of build.sh)")
    p_run = sub.add_parser("run", help="run a command against a fresh control plane")
    p_run.add_argument("--workdir", type=Path, help="keep state and logs here")
    p_run.add_argument("--name", default="e2e")
    p_run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "smoke":
            smoke(args.workdir, args.bin)
            return 0
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run needs a command")
        with control_plane(args.name, args.workdir) as cp:
            env = os.environ | {"KUBECONFIG": str(cp.kubeconfig)}
            return subprocess.run(command, env=env, check=False).returncode
    except ControlPlaneError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
