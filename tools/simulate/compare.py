"""Comparing what a proxy does (`evaluate.Behaviour`) with what the settings promise
(`expect.Expectation`), and the readable forms of both. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.simulate.evaluate import PASSTHROUGH, Behaviour
from tools.simulate.expect import Call, ClusterPolicy, Destination, Expectation

CallRecord = dict[str, Any]


def _ms(ms: int | None) -> str:
    if ms is None:
        return "none"
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def describe_expected(expect: Expectation) -> str:
    """The settings' promise, one line."""
    if not expect.reachable:
        return "unreachable (outside the Sidecar)"
    if expect.redirect_https:
        return "redirect to https"
    parts = [_destinations([(d.host, d.subset, d.weight) for d in expect.destinations])]
    if expect.mirror:
        mirror = expect.mirror
        parts.append(f"mirror {mirror['subset'] or mirror['host']} {mirror['percent']:g} %")
    if expect.timeout_ms is not None:
        parts.append(f"timeout {_ms(expect.timeout_ms)}")
    parts.append(_retries(expect.retries))
    if expect.fault:
        parts.append(_fault(expect.fault))
    return ", ".join(p for p in parts if p)


def describe_actual(behaviour: Behaviour, reachable_clusters: list[str]) -> str:
    """What Istio configured, one line."""
    if behaviour.redirect_https:
        return "redirect to https"
    live = [d for d in behaviour.destinations if d["cluster"] not in PASSTHROUGH]
    if not live:
        why = "; ".join(behaviour.notes) or (
            f"falls through to {behaviour.destinations[0]['cluster']}"
            if behaviour.destinations
            else "no route"
        )
        extra = (
            f"; clusters {', '.join(reachable_clusters)} only via routes in scope"
            if reachable_clusters
            else ""
        )
        return f"unreachable ({why}){extra}"
    parts = [_destinations([(d["host"], d["subset"], d["weight"]) for d in live])]
    if behaviour.mirror:
        m = behaviour.mirror
        parts.append(f"mirror {m['subset'] or m['host']} {m['percent']:g} %")
    parts.append(f"timeout {_ms(behaviour.timeout_ms)}")
    parts.append(_retries(behaviour.retries))
    if behaviour.fault:
        parts.append(_fault(behaviour.fault))
    return ", ".join(p for p in parts if p)


def _destinations(items: list[tuple[str, str | None, float]]) -> str:
    shown = []
    for host, subset, weight in items:
        if not weight:
            continue
        name = subset or host.split(".")[0]
        shown.append(f"{name} {weight:g} %")
    return ", ".join(shown) or "nothing"


def _retries(retries: Mapping[str, Any] | None) -> str:
    if not retries:
        return "no retries"
    return (
        f"{retries['attempts']} retries {_ms(retries['perTryTimeoutMs'])} each "
        f"on {retries['retryOn']}"
    )


def _fault(fault: Mapping[str, Any]) -> str:
    parts = []
    if "delayMs" in fault:
        parts.append(f"delay {_ms(fault['delayMs'])} for {fault['delayPercent']:g} %")
    if "abortStatus" in fault:
        parts.append(f"abort {fault['abortStatus']} for {fault['abortPercent']:g} %")
    return "fault: " + " and ".join(parts)


def _policy_diffs(key: str, expected: ClusterPolicy, actual: Mapping[str, Any]) -> list[str]:
    if actual.get("missing"):
        return [f"cluster {key}: missing"]
    diffs = []
    if actual["tls"] != expected.tls:
        diffs.append(f"cluster {key}: TLS {expected.tls} promised, Istio sets {actual['tls']}")
    if actual["outlier"] != expected.outlier:
        diffs.append(
            f"cluster {key}: outlier detection {expected.outlier} promised, Istio sets "
            f"{actual['outlier']}"
        )
    for field, value in expected.pool.items():
        if field == "connectTimeoutMs" and value is None:
            continue  # the mesh-wide connectTimeout applies
        if actual["pool"].get(field) != value:
            diffs.append(
                f"cluster {key}: {field} {value} promised, Istio sets {actual['pool'].get(field)}"
            )
    return diffs


def differences(
    call: Call,
    behaviour: Behaviour,
    reachable_clusters: list[str],
    cluster_local: bool | None,
) -> list[str]:
    """Each way Istio's behaviour differs from the settings' promise (empty: it holds)."""
    expect = call.expect
    live = [d for d in behaviour.destinations if d["cluster"] not in PASSTHROUGH]
    if not expect.reachable:
        # Reachable means routed: a virtual host of the host's own. Clusters of the host may
        # exist (a VirtualService in scope routes a path to it), a direct call to the host
        # still falls through to PassthroughCluster (plain text, refused under STRICT mTLS).
        if live:
            return ["reachable although outside the Sidecar"]
        return []
    if expect.redirect_https:
        return [] if behaviour.redirect_https else ["no redirect to https"]
    diffs: list[str] = []
    got = sorted(
        (d["host"], d["subset"] or "", round(float(d["weight"]), 2)) for d in live if d["weight"]
    )
    want = sorted(
        (d.host, d.subset or "", float(d.weight)) for d in expect.destinations if d.weight
    )
    if got != want:
        diffs.append("destinations")
        return diffs
    if expect.timeout_ms is not None and behaviour.timeout_ms != expect.timeout_ms:
        diffs.append("timeout")
    if expect.timeout_ms is not None and behaviour.retries != expect.retries:
        diffs.append("retries")
    if expect.timeout_ms is not None and (behaviour.fault or None) != (expect.fault or None):
        diffs.append("fault")
    if expect.timeout_ms is not None:
        want_mirror = expect.mirror
        got_mirror = behaviour.mirror
        if (want_mirror is None) != (got_mirror is None) or (
            want_mirror is not None
            and got_mirror is not None
            and (
                got_mirror["host"] != want_mirror["host"]
                or (got_mirror["subset"] or None) != want_mirror["subset"]
                or float(got_mirror["percent"]) != float(want_mirror["percent"])
            )
        ):
            diffs.append("mirror")
    by_key = {
        f"{d['host']}|{d['subset'] or ''}": behaviour.clusters.get(d["cluster"], {"missing": True})
        for d in live
    }
    if behaviour.mirror:
        m = behaviour.mirror
        by_key[f"{m['host']}|{m['subset'] or ''}"] = behaviour.clusters.get(
            m["cluster"], {"missing": True}
        )
    for key, policy in expect.clusters.items():
        diffs += _policy_diffs(key, policy, by_key.get(key, {"missing": True}))
    if expect.cluster_local is not None and cluster_local != expect.cluster_local:
        diffs.append(
            f"cluster-local {expect.cluster_local} promised, istiod treats the host as "
            f"{'cluster-local' if cluster_local else 'mesh-wide'}"
        )
    return diffs


def _dest_json(d: Destination) -> dict[str, Any]:
    return {"host": d.host, "subset": d.subset, "weight": d.weight}


def mismatch_line(stack: str, call: Call, expected: str, actual: str, diffs: list[str]) -> str:
    header = "".join(f" [{k}: {v}]" for k, v in call.headers.items())
    return (
        f"simulate: MISMATCH {stack}: {call.caller} -> {call.host}:{call.port}{call.path}{header}: "
        f"settings promise {expected}; Istio would {actual} ({'; '.join(diffs)})"
    )
