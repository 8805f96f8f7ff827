"""What Flagger must do with each progressive service, derived from the settings alone.

Pure functions, no cluster: `make test` checks them (`tests/tools/test_progressive.py`), and
`run.py` judges what the real Flagger did against them. The weight plan is Flagger 1.44's
canary strategy read from `pkg/controller/scheduler.go` (`runCanary`, `nextStepWeight`,
`runPromotionTrafficShift`): with `mirror`, one step mirrors all traffic at weight 0, then
the canary weight grows by `stepWeight` while it is below `maxWeight` (the last step may pass
it), then the canary's spec is copied to `-primary` and all traffic returns to the primary in
one step (no `stepWeightPromotion`). A failing check adds one to `failedChecks` and the
canary is rolled back once it reaches `threshold`; the weight never advances in between.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from components.settings import StackSettings
from components.settings_types import duration_ms

TEST_INTERVAL: Final = "10s"
"""Analysis interval of every Canary in this tier (the settings' minimum; production stacks
use 30 s to minutes): the one setting the tier changes, so the runs take minutes, not hours."""

GRPC_SERVER_FAILURES: Final = frozenset({2, 4, 12, 13, 14, 15})
"""gRPC statuses that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
INTERNAL, UNAVAILABLE, DATA_LOSS): ProgressiveSettings.success_rate_min's description."""


@dataclass(frozen=True)
class Routing:
    """One state of the VirtualService Flagger writes: weights and whether it mirrors."""

    primary: int
    canary: int
    mirror: bool = False

    def __str__(self) -> str:
        return f"{self.primary}/{self.canary}{' mirror' if self.mirror else ''}"


@dataclass(frozen=True)
class ProgressiveService:
    """One `delivery: progressive` service, as this tier needs it."""

    name: str
    namespace: str
    port: int
    protocol: str
    index: int
    """Position in `meshstack:services` (for `pulumi config set --path`)."""
    interval_s: int
    metrics_interval_s: int
    """Window of Flagger's queries: a failed canary's requests stay in it this long."""
    threshold: int
    step_weight: int
    max_weight: int
    mirror: bool
    success_rate_min: float
    duration_max_ms: int
    acceptance_path: str
    load_test_qps: int
    public_hosts: tuple[str, ...]
    gateway: str
    autoscaler: str
    metrics_port: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def canary_address(self) -> str:
        """What the webhooks must target: the `-canary` Service Flagger creates."""
        return f"{self.name}-canary.{self.namespace}:{self.port}"


def progressive_services(settings: StackSettings) -> list[ProgressiveService]:
    """The stack's active progressive services with the tier's analysis interval."""
    found = []
    for index, service in enumerate(settings.services):
        progressive = service.traffic.progressive
        if service.delivery != "progressive" or progressive.retire:
            continue
        expose = service.traffic.expose
        found.append(
            ProgressiveService(
                name=service.name,
                namespace=service.namespace,
                port=service.port,
                protocol=service.protocol,
                index=index,
                interval_s=duration_ms(TEST_INTERVAL) // 1000,
                metrics_interval_s=duration_ms(progressive.metrics_interval) // 1000,
                threshold=progressive.threshold,
                step_weight=progressive.step_weight,
                max_weight=progressive.max_weight,
                mirror=progressive.mirror,
                success_rate_min=progressive.success_rate_min,
                duration_max_ms=progressive.duration_max_ms,
                acceptance_path=progressive.acceptance_path,
                load_test_qps=progressive.load_test_qps,
                public_hosts=tuple(expose.hosts) if expose else (),
                gateway=expose.gateway if expose else "",
                autoscaler=progressive.autoscaler,
                metrics_port=service.metrics.port if service.metrics else "",
            )
        )
    return found


def switch_candidate(services: Sequence[ProgressiveService]) -> ProgressiveService | None:
    """The service the static → progressive switch runs on: an HTTP service with a public
    host (a 404 there is what users see), else any with a public host, else None."""
    exposed = [s for s in services if s.public_hosts]
    http = [s for s in exposed if s.protocol == "http"]
    chosen = http or exposed
    return chosen[0] if chosen else None


def promotion_plan(service: ProgressiveService) -> list[Routing]:
    """Every routing state of a promoted canary, in order, from 100/0 back to 100/0."""
    plan = [Routing(100, 0)]
    if service.mirror:
        plan.append(Routing(100, 0, mirror=True))
    weight = 0
    while weight < service.max_weight:
        weight = min(weight + service.step_weight, 100)
        plan.append(Routing(100 - weight, weight))
    plan.append(Routing(100, 0))
    return plan


def collapse(states: Sequence[Routing]) -> list[Routing]:
    """Consecutive duplicates removed: the distinct routing states in the order seen."""
    out: list[Routing] = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    return out


def is_rollback(states: Sequence[Routing], service: ProgressiveService) -> bool:
    """A failed analysis's routing: a prefix of the promotion plan that stops before the
    promotion and ends back at 100/0."""
    plan = promotion_plan(service)[:-1]
    seen = collapse(states)
    if len(seen) < 1 or seen[-1] != Routing(100, 0):
        return False
    body = seen[:-1] if len(seen) > 1 else seen
    return body == plan[: len(body)]


def analysis_deadline_s(service: ProgressiveService) -> int:
    """Seconds a scenario may take before it counts as stuck: every step of the plan, the
    threshold's failed checks, the detection, start-up and promotion ticks, and slack for a
    busy 2-core machine."""
    ticks = len(promotion_plan(service)) + service.threshold + 6
    return ticks * service.interval_s + 120


# --- the webhooks' commands ----------------------------------------------------------------


def flag(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def acceptance_findings(service: ProgressiveService, argv: Sequence[str]) -> list[str]:
    """What is wrong with the acceptance test's command line (empty: it tests the canary as
    the settings say: the `-canary` Service, the acceptance path, failing on an error)."""
    tool = argv[0] if argv else ""
    if service.protocol == "grpc":
        if tool != "grpc_health_probe":
            return [f"gRPC acceptance runs {tool!r}, not grpc_health_probe"]
        addr = flag(argv, "-addr")
        return [] if addr == service.canary_address else [f"probes {addr}"]
    if tool != "curl":
        return [f"HTTP acceptance runs {tool!r}, not curl"]
    findings = []
    url = argv[-1]
    expected = f"http://{service.canary_address}{service.acceptance_path}"
    if url != expected:
        findings.append(f"requests {url}, not {expected}")
    if not any(a.startswith("-") and "f" in a and not a.startswith("--") for a in argv[1:-1]):
        findings.append("curl without -f passes on an HTTP error")
    return findings


def load_test_findings(service: ProgressiveService, argv: Sequence[str]) -> list[str]:
    """What is wrong with the load test's command line (empty: it sends `loadTestQps`
    requests/s in all to the `-canary` Service for one analysis interval)."""
    tool = argv[0] if argv else ""
    findings = []
    duration = flag(argv, "-z")
    if duration is None or duration_ms(duration) != service.interval_s * 1000:
        findings.append(f"runs for {duration}, not one interval ({service.interval_s}s)")
    if service.protocol == "grpc":
        if tool != "ghz":
            return [f"gRPC load test runs {tool!r}, not ghz", *findings]
        qps = int(flag(argv, "-q") or 0)  # ghz: -q is the total rate
        target = argv[-1]
    else:
        if tool != "hey":
            return [f"HTTP load test runs {tool!r}, not hey", *findings]
        # hey: -q is per worker, -c workers
        qps = int(flag(argv, "-q") or 0) * int(flag(argv, "-c") or 50)
        target = argv[-1].removeprefix("http://").split("/", 1)[0]
    if qps != service.load_test_qps:
        findings.append(f"sends {qps} requests/s in all, not loadTestQps {service.load_test_qps}")
    if target != service.canary_address:
        findings.append(f"targets {target}, not {service.canary_address}")
    return findings


def split_command(command: str) -> list[str]:
    return shlex.split(command)
