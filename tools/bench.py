"""Benchmark of the offline render: wall time and peak memory, per stack and at scale.

`make bench` runs every region stack (every `Pulumi.<stack>.yaml`) and generated
stacks of 50, 100, 200 and 400 services, each in a fresh Python process (so peak memory is
that render's alone and imports are counted, as a user running `make render` pays them).
Each run is what `make render` does: the program in directory chart-source mode, the chart
expansion (`tools.charts.expand`, Helm in parallel) and the files written. Every target runs
twice against an expansion cache of its own, first empty (`cold`: Helm runs for every chart,
as after a change of chart pins or values) then filled by that first run (`warm`: what the
next `make render` of an unchanged chart setup costs). It prints a table, the time per
service between the generated sizes, which should stay flat (linear growth), and the
floor: a fresh interpreter that only imports `pulumi_kubernetes`, measured in the same run
before each target, since no render can be faster than that.

This measures; it asserts nothing. Goals: the full render of one region <= 3 times the
floor, 400 services <= 20 s and linear.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools import charts
from tools.render import (
    PROJECT_DIR,
    RenderError,
    load_stack_config,
    render_stack,
    run_program,
    write_render,
    write_summary,
)
from tools.stacks import StackFileError, deploy_order

FLOOR_TARGET = 3.0
SERVICES_TARGET_SECONDS = 20.0
SIZES = (50, 100, 200, 400)
SERVICES_PER_NAMESPACE = 10


BENCH_PROVIDER = "bench-auth"


def generated_service(index: int) -> dict[str, Any]:
    """A representative mesh service; every option the stacks use appears at scale."""
    service: dict[str, Any] = {
        "name": f"svc-{index:04d}",
        "namespace": f"team-{index // SERVICES_PER_NAMESPACE:03d}",
        "port": 8080,
        "versions": [{"name": "stable"}, {"name": "canary"}],
    }
    if index:
        previous = index - 1
        service["calls"] = [f"team-{previous // SERVICES_PER_NAMESPACE:03d}/svc-{previous:04d}"]
    # Per-path local rate limits, JWT and explicit ALLOW rules on every service.
    service["rateLimit"] = {
        "requestsPerSecond": 500,
        "routes": [{"pathPrefix": "/status", "requestsPerSecond": 2000}],
    }
    service["jwt"] = {
        "provider": BENCH_PROVIDER,
        "audiences": [service["name"]],
        "protectedPaths": ["/api/*"],
    }
    service["authorization"] = [
        {"requestPrincipals": ["*"], "paths": ["/api/*"], "methods": ["GET", "POST"]}
    ]
    if index % SERVICES_PER_NAMESPACE == 0:
        # One progressive service per namespace: a Flagger Canary instead of a VS and DR.
        service["delivery"] = "progressive"
        return service
    service["traffic"] = {
        "canary": {
            "match": {"header": "x-user-id", "regex": "^canary-.*"},
            "weights": [{"subset": "canary", "weight": 5}, {"subset": "stable", "weight": 95}],
        },
        "routes": [
            {
                "name": "status",
                "exact": "/status",
                "timeout": "2s",
                "retries": {"attempts": 1, "perTryTimeout": "1s"},
            },
            {"name": "api", "prefix": "/api/v1"},
        ],
        "policy": {
            "connectionPool": {"maxConnections": 100, "http2MaxRequests": 400},
            "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"},
        },
        "expose": {"gateway": "public", "hosts": [f"svc-{index:04d}.shop.example.com"]},
    }
    return service


def generated_config(size: int) -> dict[str, str]:
    """The first hub stack's config with its services replaced by `size` generated ones.

    The hub runs every component (Jaeger and Kiali too), so it is the largest render.
    """
    config, _ = load_stack_config(deploy_order()[0])
    config["meshstack:region"] = f"bench-{size}"
    config["meshstack:services"] = json.dumps([generated_service(i) for i in range(size)])
    config["meshstack:identityProviders"] = json.dumps(
        {
            BENCH_PROVIDER: {
                "issuer": "https://auth.bench.example.com",
                "jwksUri": "https://auth.bench.example.com/.well-known/jwks.json",
            }
        }
    )
    # Keys that name the stack's own namespaces point at the generated ones instead.
    observability = json.loads(config.get("meshstack:observability", "{}"))
    observability.setdefault("telemetry", {})["namespaces"] = [
        {"namespace": "team-000", "samplingPercentage": 10}
    ]
    config["meshstack:observability"] = json.dumps(observability)
    return config


def _child(target: str, out_dir: Path, cache_dir: Path) -> None:
    started = time.perf_counter()
    source = charts.directory_source()
    if target.isdigit():
        config = generated_config(int(target))
        config["meshstack:chartSource"] = json.dumps(source)
        render = run_program(f"bench-{target}", config)
    else:
        render = render_stack(target, chart_source=source)
    program_done = time.perf_counter()
    expanded = charts.expand(render.helm_charts(), cache_dir=cache_dir)
    charts_done = time.perf_counter()
    write_render(render, out_dir, charts.dump_charts(expanded))
    write_summary(target, render, expanded, out_dir)
    written = time.perf_counter()
    print(
        json.dumps(
            {
                "render_seconds": program_done - started,
                "chart_seconds": charts_done - program_done,
                "write_seconds": written - charts_done,
                "resources": len(render.registrations),
                "objects": len(render.kubernetes_objects()),
                "charts": len(expanded),
                "chart_objects": sum(len(c.objects) for c in expanded),
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def _floor() -> float:
    """Wall time of a fresh interpreter importing pulumi_kubernetes: the floor."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pulumi_kubernetes"], cwd=PROJECT_DIR, check=True)
    return time.perf_counter() - started


def _measure(target: str, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.bench",
            "--child",
            target,
            "--out",
            str(work / "out" / target),
            "--cache",
            str(work / "cache" / target),
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    measured.update(target=target, wall_seconds=wall)
    return measured


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'target':<16}{'cache':>6}{'resources':>10}{'objects':>8}{'charts':>7}"
        f"{'chart obj':>10}{'program s':>10}{'charts s':>9}{'write s':>8}{'wall s':>8}"
        f"{'floor s':>8}{'x floor':>8}{'peak MiB':>9}"
    ]
    for row in rows:
        lines.append(
            f"{row['target']:<16}{row['cache']:>6}{row['resources']:>10}{row['objects']:>8}"
            f"{row['charts']:>7}{row['chart_objects']:>10}{row['render_seconds']:>10.2f}"
            f"{row['chart_seconds']:>9.2f}{row['write_seconds']:>8.2f}{row['wall_seconds']:>8.2f}"
            f"{row['floor_seconds']:>8.2f}{row['wall_seconds'] / row['floor_seconds']:>8.1f}"
            f"{row['peak_mib']:>9.0f}"
        )
    return lines


def _goals(rows: list[dict[str, Any]], stacks: list[str]) -> list[str]:
    """Each goal next to its figure (warm: the chart expansion cached, as a second
    `make render` with unchanged charts and values)."""
    warm = {r["target"]: r for r in rows if r["cache"] == "warm"}
    cold = {r["target"]: r for r in rows if r["cache"] == "cold"}
    lines = []
    for stack in stacks:
        if stack in warm:
            ratios = [
                f"{label} {row[stack]['wall_seconds'] / row[stack]['floor_seconds']:.1f}x"
                for label, row in (("warm", warm), ("cold", cold))
                if stack in row
            ]
            lines.append(f"goal: {stack} <= {FLOOR_TARGET:.0f}x the floor: " + ", ".join(ratios))
    largest = str(max(SIZES))
    for label, row in (("warm", warm), ("cold", cold)):
        if largest in row:
            lines.append(
                f"goal: {largest} services <= {SERVICES_TARGET_SECONDS:.0f} s: {label} "
                f"{row[largest]['wall_seconds']:.1f} s"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the offline render.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--stacks", nargs="*", help="these stacks only (default: every one)")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.out, args.cache)
        return 0

    try:
        # Every stack file is read (and a YAML error reported, one line) before any run.
        stacks = [s for s in deploy_order() if args.stacks is None or s in args.stacks]
        generated_config(0)
    except (StackFileError, RenderError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    # The floor is measured right before each run, so a machine whose load changes during
    # the run (shared CI runners) still gives comparable ratios.
    rows = []
    with tempfile.TemporaryDirectory(prefix="meshstack-bench-") as tmp:
        for target in [*stacks, *(str(size) for size in args.sizes)]:
            for cache_state in ("cold", "warm"):  # the warm run reuses the cold run's cache
                floor_seconds = _floor()
                measured = _measure(target, Path(tmp))
                rows.append({**measured, "floor_seconds": floor_seconds, "cache": cache_state})
    print("\n".join(_table(rows)))
    floor = min(row["floor_seconds"] for row in rows)
    print(
        f"\nfloor: a fresh interpreter that imports pulumi_kubernetes, measured before each "
        f"run (lowest {floor:.2f} s); x floor = wall s / that run's floor s"
    )
    generated = [r for r in rows if r["target"].isdigit() and r["cache"] == "warm"]
    if len(generated) > 1:
        print("\nmarginal program ms per added service, warm runs (flat = linear growth):")
        for smaller, larger in itertools.pairwise(generated):
            added = int(larger["target"]) - int(smaller["target"])
            per_service = (larger["render_seconds"] - smaller["render_seconds"]) / added
            print(f"  {smaller['target']:>4} -> {larger['target']:>4}: {per_service * 1000:.2f}")
    print()
    print("\n".join(_goals(rows, stacks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
