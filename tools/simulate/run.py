"""`make simulate [STACK=<stack>]`: each stack's traffic behaviour as istiod (Istio 1.30.4's own
config generator, tools/simulate/configgen) configures it, judged against the settings.

For each stack (all stacks without arguments, in deploy order) it reads the offline render
(`build/<stack>/manifests.yaml` and `helm.yaml`, from `python -m tools.render <stack>
--no-charts`), feeds configgen the Istio objects, the mesh config and the service registry the
workloads would create (`registry.py`), evaluates every call the settings promise or forbid
(`expect.py`) on the proxy that makes it (`evaluate.py`), decides on a hub every call the
settings promise or forbid on Jaeger's pod with Envoy's RBAC semantics on its sidecar's
inbound listener (`access.py`, `rbac.py`), and writes:

- `build/<stack>/simulation.json`: one record per call (caller, host, port, path, headers,
  the matched route, destinations with subset and weight, mirror, timeout, retries, fault,
  each cluster's TLS mode, outlier detection and connection pool, and the expectation), and
  under `authorization` one per call on Jaeger (caller, identity, source address, port,
  method, the promise, the filter chain and policy that decided);
- `build/<stack>/behaviour.md`: the same as a table an operator can read in a pull request.

A mismatch prints one line naming the stack, caller, host, path, what the settings promise
and what Istio would do; the run ends with `simulate: <k>/<n> stacks, <N> calls, <M>
mismatches` and exits 1 on any mismatch. Where the simulation differs from production is
listed in every behaviour.md (`DIFFERENCES`).

    python -m tools.simulate.run [STACK ...] [--binary PATH] [--build-dir DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from components.settings import StackSettings, load_settings
from tools.render import load_stack_config
from tools.simulate import access, compare, envoy, evaluate, expect, matchers, registry
from tools.stacks import PROJECT_DIR, deploy_order

HERE: Final = Path(__file__).resolve().parent
DIFFERENCES: Final = (
    "one cluster: the region's own registry; other regions' endpoints (and so failover and "
    "what cluster-local removes) are absent, so cluster-local hosts are checked as istiod "
    "classifies them (`PushContext.IsClusterLocal`)",
    "pods: the fewest each version declares (`minReplicas`), on made-up addresses",
    "Flagger: its VirtualService and DestinationRules as its Istio router writes them before "
    "any analysis (primary 100 %, canary 0 %); weights during an analysis are Flagger's",
    "Istio-only filters (istio.stats, metadata exchange), EnvoyFilters' effects on listeners "
    "and authorization other than Jaeger's are generated but not judged here",
    "Jaeger's callers: each is one connection with the identity its certificate would carry "
    "and the ALPN an Istio client sidecar offers (`istio-http/1.1`, `istio-h2`), decided on "
    "the inbound listener's filter chain and RBAC filters; TLS handshakes are not run",
    "JWKS: fetched by Envoy (`PILOT_JWT_ENABLE_REMOTE_JWKS=envoy`) instead of inlined by "
    "istiod, which would need the network; JWT filters are not judged here",
    "proxies run the default revision's view; an upgrade's second revision is not simulated",
)


class SimulateError(Exception):
    """One line for the user."""


def binary_path() -> Path:
    """The configgen binary: $MESHSTACK_CONFIGGEN, else the build script's cache."""
    override = os.environ.get("MESHSTACK_CONFIGGEN")
    if override:
        return Path(override)
    folder = subprocess.run(
        ["bash", str(HERE / "build.sh"), "--print"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(folder) / "configgen"


def run_configgen(binary: Path, payload: Mapping[str, Any]) -> dict[str, Any]:
    if not binary.is_file():
        raise SimulateError(
            f"no configgen binary at {binary}: build it with `bash tools/simulate/build.sh`"
        )
    # Envoy fetches JWKS (istiod's default fetches them itself, which needs the network).
    env = {**os.environ, "PILOT_JWT_ENABLE_REMOTE_JWKS": "envoy"}
    result = subprocess.run(
        [str(binary)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise SimulateError(result.stderr.strip().splitlines()[-1] if result.stderr else "failed")
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def read_documents(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise SimulateError(f"{path} is missing: run `python -m tools.render <stack> --no-charts`")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _any_public_host(proxy: Mapping[str, Any], call: expect.Call) -> tuple[evaluate.Behaviour, str]:
    """A gateway call whose settings name no host: the first HTTPS virtual host (any public
    host) that routes the path to the service."""
    target = call.expect.destinations[0].host if call.expect.destinations else ""
    fallback = evaluate.Behaviour()
    fallback.notes.append("no public host routes this path to the service")
    for config in proxy.get("routes") or []:
        if not str(config.get("name", "")).startswith(f"https.{call.port}."):
            continue
        for vhost in config.get("virtualHosts", []):
            for domain in vhost.get("domains", []):
                if "*" in domain and domain != "*":
                    continue
                behaviour = evaluate.evaluate(
                    proxy,
                    route_config=config["name"],
                    host=domain.split(":")[0],
                    path=call.path,
                    headers={**call.headers, ":method": expect.request_method(call.path)},
                    tls=True,
                )
                if any(d["host"] == target for d in behaviour.destinations):
                    return behaviour, domain
    return fallback, ""


@dataclass
class StackResult:
    stack: str
    records: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    envoy: bool = False
    authorization: list[dict[str, Any]] = field(default_factory=list)
    """Records of the calls on Jaeger's pod (`access.judge`); a hub only."""

    @property
    def calls(self) -> int:
        return len(self.records) + len(self.authorization)


def simulate_stack(
    stack: str,
    settings: StackSettings,
    *,
    manifests: list[dict[str, Any]],
    helm_releases: list[dict[str, Any]],
    binary: Path,
    envoy_binary: str | None = None,
) -> StackResult:
    """Every expected call of the stack on istiod's configuration; with `envoy_binary`, each
    call's requests also sent through a real Envoy loaded with the same route configurations."""
    payload, added = registry.registry_input(settings, manifests, helm_releases)
    generated = run_configgen(binary, payload)
    proxies = {p["id"]: p for p in generated["proxies"]}
    cluster_local: Mapping[str, bool] = generated.get("clusterLocal", {})
    result = StackResult(stack, added=added)
    probes: list[envoy.Probe] = []
    route_configs: dict[str, dict[str, Any]] = {}
    behaviours: list[evaluate.Behaviour] = []
    for call in expect.expected_calls(settings):
        proxy = proxies.get(call.caller)
        if proxy is None:
            raise SimulateError(f"{stack}: no proxy {call.caller} in the registry")
        host = call.host
        if call.caller == expect.INGRESS and call.host == expect.ANY_PUBLIC_HOST:
            behaviour, host = _any_public_host(proxy, call)
        else:
            if call.caller == expect.INGRESS:
                route_config = evaluate.gateway_route_config(
                    proxy.get("listeners") or [], call.port, call.host
                )
            else:
                route_config = str(call.port)
            behaviour = evaluate.evaluate(
                proxy,
                route_config=route_config,
                host=call.host,
                path=call.path,
                headers={**call.headers, ":method": expect.request_method(call.path)},
                tls=call.caller == expect.INGRESS and call.port == expect.HTTPS_PORT,
            )
        reachable = evaluate.mesh_clusters(proxy, call.host) if not call.expect.reachable else []
        diffs = compare.differences(call, behaviour, reachable, cluster_local.get(call.host))
        expected_text = compare.describe_expected(call.expect)
        actual_text = compare.describe_actual(behaviour, reachable)
        if cluster_local.get(call.host) and call.expect.reachable:
            actual_text += ", cluster-local"
        record = {
            "caller": call.caller,
            "host": call.host,
            "resolvedHost": host,
            "port": call.port,
            "path": call.path,
            "headers": call.headers,
            "service": call.service,
            "istio": behaviour.to_json(),
            "clusterLocal": cluster_local.get(call.host),
            "expected": call.to_json()["expect"],
            "expectedText": expected_text,
            "actualText": actual_text,
            "mismatch": diffs,
        }
        result.records.append(record)
        behaviours.append(behaviour)
        configs = {r["name"]: r for r in proxy.get("routes") or []}
        if behaviour.route_config in configs:
            listener = f"{call.caller} {behaviour.route_config}"
            route_configs[listener] = configs[behaviour.route_config]
            probes.append(
                envoy.Probe(
                    key=len(result.records) - 1,
                    listener=listener,
                    host=host,
                    path=call.path,
                    headers=call.headers,
                    samples=envoy.sample_count(behaviour),
                )
            )
        if diffs:
            result.mismatches.append(
                compare.mismatch_line(stack, call, expected_text, actual_text, diffs)
            )
    _judge_jaeger_access(result, settings, proxies)
    if envoy_binary is not None:
        _judge_with_envoy(result, behaviours, probes, route_configs, envoy_binary)
    return result


def _judge_jaeger_access(
    result: StackResult, settings: StackSettings, proxies: Mapping[str, Mapping[str, Any]]
) -> None:
    """A hub's Jaeger: every promised and forbidden caller on its sidecar's inbound listener."""
    if not access.jaeger_calls(settings):
        return
    proxy = proxies.get(access.jaeger_proxy(settings))
    if proxy is None:
        raise SimulateError(
            f"{result.stack}: no proxy {access.jaeger_proxy(settings)} in the registry: the hub "
            "deploys Jaeger, but helm.yaml has no `jaeger` release in that namespace"
        )
    try:
        records, lines = access.judge(result.stack, settings, proxy.get("listeners") or [])
    except matchers.UnmodelledError as error:
        raise SimulateError(f"{result.stack}: Jaeger's inbound listener: {error}") from None
    result.authorization = records
    result.mismatches += lines


def _judge_with_envoy(
    result: StackResult,
    behaviours: Sequence[evaluate.Behaviour],
    probes: Sequence[envoy.Probe],
    route_configs: Mapping[str, Mapping[str, Any]],
    binary: str,
) -> None:
    ports = iter(envoy.free_ports(len(route_configs) * 2 + 200))
    admin = next(ports)
    config, listener_ports = envoy.bootstrap(route_configs, ports, admin)
    with envoy.running_envoy(binary, config, admin):
        observed = envoy.send(probes, listener_ports, admin)
    for probe in probes:
        seen = observed[probe.key]
        record = result.records[probe.key]
        diffs = envoy.disagreements(behaviours[probe.key], seen, probe.samples)
        record["envoy"] = {
            "samples": probe.samples,
            "routes": dict(seen.routes),
            "clusters": dict(seen.clusters),
            "statuses": {str(k): v for k, v in seen.statuses.items()},
            "redirects": seen.redirects,
            "mirrored": seen.mirrored,
            "disagreements": diffs,
        }
        if diffs:
            record["mismatch"] = [*record["mismatch"], *diffs]
            headers = "".join(f" [{k}: {v}]" for k, v in probe.headers.items())
            result.mismatches.append(
                f"simulate: MISMATCH {result.stack}: {record['caller']} -> "
                f"{probe.host}:{record['port']}{probe.path}{headers}: Istio's configuration says "
                f"{record['actualText']}; the real Envoy: {'; '.join(diffs)}"
            )


def sabotaged(
    manifests: list[dict[str, Any]], called: Collection[str]
) -> tuple[list[dict[str, Any]], str] | None:
    """A copy of the render with one setting's effect broken on purpose, on a VirtualService
    of a host the simulation calls (`called`): the first weighted route gets its first two
    weights swapped (or, without weighted routes, the first route's timeout doubled). None
    when no such VirtualService route exists."""
    broken = copy.deepcopy(manifests)
    routes = [
        (doc, route)
        for doc in broken
        if doc.get("kind") == "VirtualService" and set(doc["spec"].get("hosts", [])) & set(called)
        for route in doc["spec"].get("http", [])
    ]
    for doc, route in routes:
        weights = [d for d in route.get("route", []) if d.get("weight") is not None]
        if len(weights) >= 2 and weights[0]["weight"] != weights[1]["weight"]:
            weights[0]["weight"], weights[1]["weight"] = weights[1]["weight"], weights[0]["weight"]
            name = f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"
            return broken, f"VirtualService {name} route {route.get('name')}: weights swapped"
    for doc, route in routes:
        if route.get("timeout"):
            route["timeout"] = f"{2 * _seconds(route['timeout']):g}s"
            name = f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"
            return broken, f"VirtualService {name} route {route.get('name')}: timeout doubled"
    return None


def _seconds(duration: str) -> float:
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    if duration.endswith("m"):
        return float(duration[:-1]) * 60
    return float(duration.rstrip("s"))


def self_check(
    stack: str,
    settings: StackSettings,
    manifests: list[dict[str, Any]],
    helm_releases: list[dict[str, Any]],
    binary: Path,
) -> str:
    """The run judges something: a broken copy of the render must give mismatches (a
    VirtualService route, and on a hub Jaeger's policy with a principal widened)."""
    called = {c.host for c in expect.expected_calls(settings) if c.expect.reachable}
    broken = sabotaged(manifests, called)
    if broken is None:
        return f"simulate: self-check {stack}: no VirtualService route to break"
    lines = [_caught(stack, settings, broken, helm_releases, binary, authorization=False)]
    if access.jaeger_calls(settings):
        widened = access.widened_policy(manifests, settings)
        if widened is None:
            raise SimulateError("self-check: no principal of Jaeger's ALLOW policy to widen")
        lines.append(_caught(stack, settings, widened, helm_releases, binary, authorization=True))
    return "\n".join(lines)


def _caught(
    stack: str,
    settings: StackSettings,
    broken: tuple[list[dict[str, Any]], str],
    helm_releases: list[dict[str, Any]],
    binary: Path,
    *,
    authorization: bool,
) -> str:
    """Simulate the broken copy; its mismatches (on Jaeger's calls only, for a policy break)
    must not be zero."""
    documents, what = broken
    result = simulate_stack(
        stack, settings, manifests=documents, helm_releases=helm_releases, binary=binary
    )
    if authorization:
        caught = sum(1 for r in result.authorization if r["mismatch"])
    else:
        caught = len(result.mismatches)
    if not caught:
        raise SimulateError(f"self-check: {what} in a copy of the render went unnoticed")
    return (
        f"simulate: self-check {stack}: {what} in a copy of the render: {caught} mismatches caught"
    )


def matching_note(with_envoy: bool) -> str:
    if with_envoy:
        return (
            "request matching: a real Envoy loaded with istiod's route configurations, the "
            "requests sent on 127.0.0.1 (weights and mirrors sampled), and the same read from "
            "the configuration in Python (tools/simulate/evaluate.py); both must agree"
        )
    return (
        "request matching: Envoy's documented semantics applied in Python to istiod's route "
        "configurations (tools/simulate/evaluate.py); no real Envoy ran (--no-envoy)"
    )


def _cell(text: str) -> str:
    """Text for a Markdown table cell (cluster names hold `|`)."""
    return text.replace("|", "\\|")


def _outlier_text(outlier: Mapping[str, Any] | None) -> str:
    if outlier is None:
        return "off"
    triggers = []
    if outlier["consecutive5xx"]:
        triggers.append(f"{outlier['consecutive5xx']} consecutive 5xx")
    if outlier["consecutiveLocalOrigin"]:
        triggers.append(f"{outlier['consecutiveLocalOrigin']} consecutive local-origin failures")
    interval = outlier["intervalMs"] / 1000
    ejection = outlier["baseEjectionMs"] / 1000
    return (
        f"ejects after {' or '.join(triggers) or 'nothing'}, every {interval:g}s, "
        f"for {ejection:g}s, at most {outlier['maxEjectionPercent']} %, "
        f"panic below {outlier['healthyPanicThreshold']:g} %"
    )


def _pool_text(pool: Mapping[str, Any]) -> str:
    parts = [f"{key} {value}" for key, value in pool.items() if value is not None]
    return ", ".join(parts) or "Istio's defaults"


def behaviour_markdown(result: StackResult) -> str:
    lines = [
        f"# Traffic behaviour of {result.stack}",
        "",
        "Generated by `make simulate` (tools/simulate/): istiod's own config generator "
        "(Istio 1.30.4) fed this stack's offline render, each call evaluated on the proxy "
        "that makes it and checked against the settings. Do not edit.",
        "",
        f"{result.calls} calls, {len(result.mismatches)} mismatches.",
        "",
        "| service | caller | request | Istio does | as promised |",
        "|---|---|---|---|---|",
    ]
    for r in result.records:
        headers = "".join(f", header {k}: {v}" for k, v in r["headers"].items())
        host = r["resolvedHost"] or r["host"]
        request = f"{host}:{r['port']}{r['path']}{headers}"
        verdict = "yes" if not r["mismatch"] else "**no**: " + "; ".join(r["mismatch"])
        lines.append(
            f"| {r['service']} | {r['caller']} | {_cell(request)} | {_cell(r['actualText'])} "
            f"| {_cell(verdict)} |"
        )
    lines += access.markdown(result.authorization)
    clusters: dict[str, dict[str, Any]] = {}
    for r in result.records:
        clusters.update(r["istio"]["clusters"])
    if clusters:
        lines += [
            "",
            "## Destination clusters",
            "",
            "| cluster | TLS | outlier detection | connection pool |",
            "|---|---|---|---|",
        ]
        for name, summary in sorted(clusters.items()):
            if summary.get("missing"):
                lines.append(f"| {_cell(name)} | missing | | |")
                continue
            lines.append(
                f"| {_cell(name)} | {summary['tls']} | {_outlier_text(summary['outlier'])} | "
                f"{_pool_text(summary['pool'])} |"
            )
    lines += ["", "## Where this differs from production", ""]
    lines += [f"- {d}" for d in DIFFERENCES]
    lines.append(f"- {matching_note(result.envoy)}")
    if result.envoy:
        lines += ["", "## What Envoy was given instead of the proxies' full configuration", ""]
        lines += [f"- {c}" for c in envoy.CHANGES]
    if result.added:
        lines += ["", "## Objects added to the render", ""]
        lines += [f"- {a}" for a in result.added]
    return "\n".join(lines) + "\n"


def write_outputs(result: StackResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "simulation.json").write_text(
        json.dumps(
            {
                "stack": result.stack,
                "istioVersion": "1.30.4",
                "differences": [*DIFFERENCES, matching_note(result.envoy)],
                "envoyChanges": list(envoy.CHANGES) if result.envoy else [],
                "added": result.added,
                "calls": result.records,
                "authorization": result.authorization,
            },
            indent=2,
        )
        + "\n"
    )
    (out_dir / "behaviour.md").write_text(behaviour_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stacks", nargs="*", help="stacks (default: every stack)")
    parser.add_argument("--binary", type=Path, default=None)
    parser.add_argument("--build-dir", type=Path, default=PROJECT_DIR / "build")
    parser.add_argument(
        "--no-envoy",
        action="store_true",
        help="evaluate request matching from istiod's configuration only (no real Envoy)",
    )
    args = parser.parse_args(argv)
    try:
        envoy_binary = None if args.no_envoy else envoy.find_envoy()
    except envoy.EnvoyError as error:
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    stacks = args.stacks or deploy_order()
    try:
        binary = args.binary or binary_path()
    except subprocess.CalledProcessError as error:
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    calls = 0
    mismatches = 0
    done = 0
    for stack in stacks:
        try:
            config, _ = load_stack_config(stack)
            settings = load_settings(config)
            out_dir = args.build_dir / stack
            manifests = read_documents(out_dir / "manifests.yaml")
            releases = read_documents(out_dir / "helm.yaml")
            result = simulate_stack(
                stack,
                settings,
                manifests=manifests,
                helm_releases=releases,
                binary=binary,
                envoy_binary=envoy_binary,
            )
            check = self_check(stack, settings, manifests, releases, binary)
        except (SimulateError, envoy.EnvoyError) as error:
            print(f"simulate: {stack}: {error}", file=sys.stderr)
            continue
        result.envoy = envoy_binary is not None
        write_outputs(result, out_dir)
        for line in result.mismatches:
            print(line)
        print(check)
        calls += result.calls
        mismatches += len(result.mismatches)
        done += 1
    print(f"simulate: {done}/{len(stacks)} stacks, {calls} calls, {mismatches} mismatches")
    return 0 if done == len(stacks) and mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
