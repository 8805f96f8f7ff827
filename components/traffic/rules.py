"""Cross-field rules of the traffic settings, as plain functions over the parts they read.

The root model calls `check_service_traffic` from `MeshService`'s validator (rules that
need one service's versions or delivery) and `check_stack_traffic` from `StackSettings`'
(references between services and to gateways, the ejection detection bound). Each raises
`RuleViolationError` with the key path under the service (or the stack), so the one-line
message names the offending key. Checks run in a fixed order: the first broken rule is
the one reported.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from components.settings_types import RuleViolationError, check_unique, duration_ms, format_duration
from components.traffic.policy import (
    TrafficPolicySettings,
    can_eject,
    effective_policies,
    ejection_clusters,
    ejection_detection_ms,
    merged_subset_policy,
    routed_clusters,
)
from components.traffic.settings import (
    CanarySettings,
    EndpointRoute,
    ExposeSettings,
    GatewaySettings,
    RetrySettings,
    ServiceTraffic,
    TrafficSettings,
)

if TYPE_CHECKING:
    # Types only: the root model imports this package, so importing it at runtime would
    # be a cycle.
    from components.settings import MeshService

Path = tuple[str | int, ...]

NOT_A_SERVICE: Final = "must be `<namespace>/<name>` of a service"

# --- one service ----------------------------------------------------------------------------


def check_service_traffic(
    traffic: ServiceTraffic,
    *,
    delivery: str,
    versions: Collection[str],
    protocol: str = "http",
    accepts_writes: bool = True,
) -> None:
    """Rules of one service's `traffic` block that need its delivery, protocol, version
    names, or whether it accepts writes (`security.rules.accepts_writes`)."""
    if protocol == "grpc":
        check_grpc_hashes_on_no_cookie(traffic)
    if delivery == "progressive":
        check_flagger_owns_routing(traffic)
    else:
        check_canary_retired_first(traffic)
    if traffic.canary is not None:
        check_canary_subsets(traffic.canary, versions)
    check_mirrors_copy_no_writes(
        traffic, delivery=delivery, protocol=protocol, writes=accepts_writes
    )
    check_subset_policies(traffic.policy, traffic.subset_policies, versions)
    check_retries_fit_timeouts(traffic)
    check_route_names_unique(traffic.routes)


def check_grpc_hashes_on_no_cookie(traffic: ServiceTraffic) -> None:
    """A gRPC service does not hash on a cookie: gRPC clients keep no cookies, so Envoy
    (which sets the cookie when `ttl` is set) hands every call a new one and picks a new
    host each time: the affinity the setting promises never happens."""
    policies: dict[Path, TrafficPolicySettings] = {("policy",): traffic.policy} | {
        ("subsetPolicies", name): policy for name, policy in traffic.subset_policies.items()
    }
    for path, policy in policies.items():
        hashing = policy.load_balancer.consistent_hash
        if hashing is not None and hashing.http_cookie is not None:
            raise RuleViolationError(
                ("traffic", *path, "loadBalancer", "consistentHash", "httpCookie"),
                hashing.http_cookie.name,
                "is refused on a grpc service: gRPC clients store no cookies, so every call "
                "gets a new one and a new host; hash on a metadata header (httpHeaderName) "
                "the clients send",
            )


def check_mirrors_copy_no_writes(
    traffic: ServiceTraffic, *, delivery: str, protocol: str, writes: bool
) -> None:
    """A mirror copies only reads, unless the mirror target is declared side-effect free.

    Envoy (and Flagger's `analysis.mirror`) copies every method: a mirrored `POST`, `PUT`,
    `PATCH` or `DELETE`, or a gRPC call that changes state, is executed a second time by the
    shadow (docs/traffic.md, "Mirror idempotent traffic only").
    """
    mirror = traffic.canary.mirror if traffic.canary is not None else None
    if mirror is not None and mirror.reads_only and protocol == "grpc":
        raise RuleViolationError(
            ("traffic", "canary", "mirror", "readsOnly"),
            True,
            "copies nothing on a grpc service (every gRPC call is a POST); set "
            "sideEffectFree: true if the shadow's writes stay inside it, or drop the mirror",
        )
    if mirror is not None and writes and not (mirror.reads_only or mirror.side_effect_free):
        raise RuleViolationError(
            ("traffic", "canary", "mirror"),
            mirror.subset,
            "copies every method of a service that accepts writes, so the shadow executes "
            "them again; set readsOnly: true (GET and HEAD only), or sideEffectFree: true if "
            "the shadow's writes stay inside it",
        )
    progressive = traffic.progressive
    if (
        delivery == "progressive"
        and progressive.mirror
        and writes
        and not progressive.mirror_side_effect_free
    ):
        why = (
            "every gRPC call is a POST"
            if protocol == "grpc"
            else "its authorization allows more than GET/HEAD/OPTIONS"
        )
        raise RuleViolationError(
            ("traffic", "progressive", "mirror"),
            True,
            f"Flagger copies every request to the canary, and this service accepts writes "
            f"({why}): set mirrorSideEffectFree: true if the canary's writes stay inside it, "
            "or mirror: false",
        )


def check_flagger_owns_routing(traffic: ServiceTraffic) -> None:
    """A progressive service sets nothing Flagger generates (canary, routes, faults,
    subset policies): Flagger overwrites any other owner's routing."""
    for key in ("canary", "routes", "fault", "subsetPolicies"):
        value = getattr(traffic, "subset_policies" if key == "subsetPolicies" else key)
        if value:
            raise RuleViolationError(
                ("traffic", key),
                "set",
                "must be unset for delivery: progressive; Flagger owns this service's routing",
            )


def check_canary_retired_first(traffic: ServiceTraffic) -> None:
    """A static service sets no `progressive` block: leaving progressive delivery takes two
    updates (`progressive.retire: true`, then `delivery: static` without the block), so the
    Canary and Flagger's VirtualService of the same name are gone before the program
    creates its own (Pulumi deletes removed resources only after creating new ones)."""
    if "progressive" in traffic.model_fields_set:
        raise RuleViolationError(
            ("traffic", "progressive"),
            "set",
            "must be unset for delivery: static; to leave progressive delivery, first "
            "deploy progressive.retire: true, then switch to static without this block",
        )


def _known(versions: Collection[str]) -> str:
    return ", ".join(sorted(versions))


def check_canary_subsets(canary: CanarySettings, versions: Collection[str]) -> None:
    """Weights, `stable` and the mirror target name versions; the mirror gets no live weight."""
    for index, weight in enumerate(canary.weights):
        if weight.subset not in versions:
            raise RuleViolationError(
                ("traffic", "canary", "weights", index, "subset"),
                weight.subset,
                f"must be a version of the service ({_known(versions)})",
            )
    if canary.stable and canary.stable not in versions:
        raise RuleViolationError(
            ("traffic", "canary", "stable"),
            canary.stable,
            f"must be a version of the service ({_known(versions)})",
        )
    if canary.mirror is not None and canary.mirror.subset not in versions:
        raise RuleViolationError(
            ("traffic", "canary", "mirror", "subset"),
            canary.mirror.subset,
            f"mirror target must be a version of the service ({_known(versions)})",
        )
    live = {w.subset: w.weight for w in canary.weights if w.weight}
    if canary.mirror is not None and canary.mirror.subset in live:
        raise RuleViolationError(
            ("traffic", "canary", "mirror", "subset"),
            canary.mirror.subset,
            f"must not also get live traffic (weight {live[canary.mirror.subset]}): it "
            "would process mirrored requests twice; mirror to a shadow version without weight",
        )


def check_subset_policies(
    policy: TrafficPolicySettings,
    subset_policies: Mapping[str, TrafficPolicySettings],
    versions: Collection[str],
) -> None:
    """Subset policies are keyed by a version and stay valid merged over `policy`, as
    Istio applies them."""
    for name, subset in subset_policies.items():
        if name not in versions:
            raise RuleViolationError(
                ("traffic", "subsetPolicies", name),
                name,
                f"must be a version of the service ({_known(versions)})",
            )
        try:
            merged_subset_policy(policy, subset)
        except ValidationError as error:
            cause = error.errors()[0].get("ctx", {}).get("error")
            reason = cause.message if isinstance(cause, RuleViolationError) else str(error)
            raise RuleViolationError(
                ("traffic", "subsetPolicies", name, "outlierDetection"),
                "set",
                f"merged over traffic.policy.outlierDetection (as Istio applies it): {reason}",
            ) from None


def _check_retries_fit(path: Path, retries: RetrySettings, timeout: str) -> None:
    budget = (retries.attempts + 1) * duration_ms(retries.per_try_timeout)
    if budget > duration_ms(timeout):
        raise RuleViolationError(
            (*path, "perTryTimeout"),
            retries.per_try_timeout,
            f"(attempts + 1) x perTryTimeout = {format_duration(Decimal(budget))} must fit "
            f"in timeout ({timeout})",
        )


def check_retries_fit_timeouts(traffic: ServiceTraffic) -> None:
    """Every try and retry of the service and of each endpoint route fits in its timeout."""
    _check_retries_fit(("traffic", "retries"), traffic.retries, traffic.timeout)
    for index, route in enumerate(traffic.routes):
        retries = route.retries or traffic.retries
        timeout = route.timeout or traffic.timeout
        _check_retries_fit(("traffic", "routes", index, "retries"), retries, timeout)


def check_route_names_unique(routes: Sequence[EndpointRoute]) -> None:
    """Endpoint route names are unique within a service (Envoy stats key on them)."""
    check_unique(("traffic", "routes"), "name", [r.name for r in routes])


# --- the stack ------------------------------------------------------------------------------


def check_stack_traffic(traffic: TrafficSettings, services: Sequence[MeshService]) -> None:
    """Rules that need the whole stack: gateway names, references between services and to
    gateways, and every service's ejection detection time against the bound."""
    check_gateway_names_unique(traffic.gateways)
    by_ref = {f"{s.namespace}/{s.name}": s for s in services}
    known = set(by_ref)
    gateways = {g.name: g for g in traffic.gateways}
    for index, service in enumerate(services):
        where: Path = ("services", index)
        check_references_name_services(where, service.calls, service.traffic.routes, known)
        check_route_targets_fail_over(where, service.traffic.routes, by_ref)
        if service.traffic.expose is not None:
            check_exposure_served(where, service.traffic.expose, gateways)
        check_ejection_detection_bound(where, service, traffic)


def check_gateway_names_unique(gateways: Sequence[GatewaySettings]) -> None:
    """`traffic.gateways` names are unique (each names one Gateway object)."""
    check_unique(("traffic", "gateways"), "name", [g.name for g in gateways])


def check_references_name_services(
    where: Path, calls: Sequence[str], routes: Sequence[EndpointRoute], known: Collection[str]
) -> None:
    """`calls` and endpoint route `backend`s name services of the stack."""
    for position, ref in enumerate(calls):
        if ref not in known:
            raise RuleViolationError((*where, "calls", position), ref, NOT_A_SERVICE)
    for position, route in enumerate(routes):
        if route.backend is not None and route.backend not in known:
            raise RuleViolationError(
                (*where, "traffic", "routes", position, "backend"), route.backend, NOT_A_SERVICE
            )


def check_route_targets_fail_over(
    where: Path, routes: Sequence[EndpointRoute], by_ref: Mapping[str, MeshService]
) -> None:
    """A progressive service that an endpoint route sends to keeps outlier detection: the
    route reaches its apex host directly, through the DestinationRule the program gives
    that host, and Istio applies locality failover only with outlier detection."""
    for position, route in enumerate(routes):
        target = by_ref.get(route.backend or "")
        if (
            target is not None
            and target.delivery == "progressive"
            and target.traffic.policy.outlier_detection is None
        ):
            raise RuleViolationError(
                (*where, "traffic", "routes", position, "backend"),
                route.backend,
                "targets a progressive service with outlierDetection: null; its apex host "
                "needs outlier detection for locality failover",
            )


def check_exposure_served(
    where: Path, expose: ExposeSettings, gateways: Mapping[str, GatewaySettings]
) -> None:
    """An exposed service names a gateway of `traffic.gateways` that serves its hosts."""
    target = gateways.get(expose.gateway)
    if target is None:
        raise RuleViolationError(
            (*where, "traffic", "expose", "gateway"),
            expose.gateway,
            f"must be one of traffic.gateways ({', '.join(sorted(gateways)) or 'none'})",
        )
    for position, host in enumerate(expose.hosts):
        if not any(host_matches(host, pattern) for pattern in target.hosts):
            raise RuleViolationError(
                (*where, "traffic", "expose", "hosts", position),
                host,
                f"must be served by gateway {target.name!r}",
            )


def host_matches(host: str, pattern: str) -> bool:
    """Whether a Gateway host pattern (`api.example.com`, `*.example.com`) covers `host`."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and not host.startswith("*.")
    return host == pattern


def check_ejection_detection_bound(
    where: Path, service: MeshService, traffic: TrafficSettings
) -> None:
    """Every routed cluster of the service can eject a host at all (`policy.can_eject`
    against `versions[].minReplicas`), and every effective outlier detection ejects a
    failing host within `traffic.ejectionDetectionBound` (`policy.ejection_detection_ms`)."""
    own = service.traffic
    clusters = ejection_clusters(own.policy, own.subset_policies, routed_clusters(service))
    for cluster in clusters:
        outlier = cluster.outlier
        if outlier is None or can_eject(outlier.max_ejection_percent, cluster.hosts):
            continue
        raise RuleViolationError(
            (*where, "traffic", *cluster.path, "outlierDetection", "maxEjectionPercent"),
            outlier.max_ejection_percent,
            f"can never eject from {cluster.name!r} ({cluster.hosts} pods, "
            "versions[].minReplicas): Envoy ejects only while 100 x (ejected+1) / pods <= "
            f"maxEjectionPercent; needs maxEjectionPercent >= {math.ceil(100 / cluster.hosts)} "
            f"or minReplicas >= {math.ceil(100 / max(outlier.max_ejection_percent, 1))}",
        )
    bound = duration_ms(traffic.ejection_detection_bound)
    gap = traffic.outlier_request_gap
    for path, policy in effective_policies(own.policy, own.subset_policies):
        outlier = policy.outlier_detection
        if outlier is None:
            continue
        worst = ejection_detection_ms(outlier, gap)
        if worst > bound:
            raise RuleViolationError(
                (*where, "traffic", *path, "outlierDetection", "consecutive5xxErrors"),
                outlier.errors_needed,
                f"ejection detection {format_duration(Decimal(worst))} "
                f"({outlier.errors_needed} errors x outlierRequestGap {gap}) exceeds "
                f"traffic.ejectionDetectionBound ({traffic.ejection_detection_bound})",
            )
