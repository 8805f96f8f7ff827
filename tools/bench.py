"""Benchmark of the offline render: wall time and peak memory, per stack and at scale.

`make bench` runs every region stack and generated stacks of 50, 100, 200 and 400
services, each in a fresh Python process (so peak memory is that render's alone and
imports are counted, as a user running `make render` pays them). It prints a table and
the time per service between the generated sizes, which should stay flat (linear growth).

This measures; it asserts nothing. Targets (2-core machine): one region ≤ 3 s wall,
400 services ≤ 20 s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from typing import Any

from tools.render import PROJECT_DIR, load_stack_config, render_stack, run_program

STACKS = ("us-east-1", "eu-west-1", "ap-southeast-1")
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
    """us-east-1's config with its services replaced by `size` generated ones."""
    config, _ = load_stack_config("us-east-1")
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
    # Keys that name us-east-1's own namespaces point at the generated ones instead.
    observability = json.loads(config["meshstack:observability"])
    observability["telemetry"]["namespaces"] = [{"namespace": "team-000", "samplingPercentage": 10}]
    config["meshstack:observability"] = json.dumps(observability)
    return config


def _child(target: str) -> None:
    started = time.perf_counter()
    if target.isdigit():
        render = run_program(f"bench-{target}", generated_config(int(target)))
    else:
        render = render_stack(target)
    render_seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "render_seconds": render_seconds,
                "resources": len(render.registrations),
                "objects": len(render.kubernetes_objects()),
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def _measure(target: str) -> dict[str, Any]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--child", target],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    measured.update(target=target, wall_seconds=wall)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the offline render.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0

    rows = [_measure(stack) for stack in STACKS]
    rows += [_measure(str(size)) for size in args.sizes]
    header = ("target", "resources", "objects", "render s", "wall s", "peak MiB")
    print(
        f"{header[0]:<16}{header[1]:>10}{header[2]:>9}{header[3]:>10}{header[4]:>8}{header[5]:>10}"
    )
    for row in rows:
        print(
            f"{row['target']:<16}{row['resources']:>10}{row['objects']:>9}"
            f"{row['render_seconds']:>10.2f}{row['wall_seconds']:>8.2f}{row['peak_mib']:>10.0f}"
        )
    generated = [r for r in rows if r["target"].isdigit()]
    if len(generated) > 1:
        print("\nmarginal render ms per added service (flat = linear growth):")
        for smaller, larger in itertools.pairwise(generated):
            added = int(larger["target"]) - int(smaller["target"])
            per_service = (larger["render_seconds"] - smaller["render_seconds"]) / added
            print(f"  {smaller['target']:>4} -> {larger['target']:>4}: {per_service * 1000:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
