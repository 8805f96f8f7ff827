"""Who owns each service's VirtualService, and the gap-free switch to progressive delivery.

A `delivery: static` service's VirtualService `<name>` is the program's (CanaryRoute). A
`delivery: progressive` service's is Flagger's: Flagger creates it, or takes over one that
exists, once `-primary` is Ready ("take over an existing virtual service ... runs after the
primary is ready to ensure zero downtime", `flagger@v1.44.0:pkg/controller/scheduler.go`),
storing the spec it replaced in the `flagger.kubernetes.io/original-configuration`
annotation (`pkg/router/istio.go`, `reconcileVirtualService`).

Switching a service from static to progressive in one update used to delete the program's
VirtualService at the end of the update, while Flagger created its own only after `-primary`
was Ready, one analysis interval later: the public host answered 404 (no route) in between.
So the switch hands the VirtualService over instead:

1. **The switching update** (the last deployment's `routeOwners` says `program`): the program
   keeps declaring the VirtualService and DestinationRule unchanged (`ignore_changes` on what
   Flagger rewrites) with `retainOnDelete` on the VirtualService, and creates the Canary with
   `pulumi.com/waitFor` on `.status.lastAppliedSpec`, which Flagger sets only when the
   initialization is done, after it took the VirtualService over. The update ends when
   Flagger routes the host; the static routes serve it until then. `routeOwners` records
   `handing-over`.
2. **The next update**, whatever it changes: the program no longer declares them. Pulumi
   forgets the VirtualService (retained: Flagger's now, never deleted) and deletes the
   DestinationRule, which nothing routes to any more (Flagger routes to `-primary` and
   `-canary`, with their own DestinationRules). `routeOwners` records `flagger`.

Every run exports `routeOwners` (`<namespace>/<name>` → owner); the next run reads it back
through `__main__.py`. A deployment from before this output has no record: a switch in the
same update as the upgrade to this version is not handed over (make it a separate update).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from components.settings import MeshService

ROUTE_OWNERS_OUTPUT: Final = "routeOwners"
PROGRAM: Final = "program"
"""The program's CanaryRoute owns the VirtualService (`delivery: static`)."""
HANDING_OVER: Final = "handing-over"
"""Switching update: both declare it; the next update leaves it to Flagger."""
FLAGGER: Final = "flagger"
"""Flagger owns the VirtualService (`delivery: progressive`)."""

INITIALIZED_CONDITION: Final = "jsonpath={.status.lastAppliedSpec}"
"""`pulumi.com/waitFor` of a Canary in its switching update: Flagger writes
`status.lastAppliedSpec` in `setPhaseInitialized`, after it has taken the VirtualService over
(`pkg/controller/scheduler.go`), and keeps it from then on."""
FLAGGER_REWRITES: Final = ("spec", "metadata.labels", "metadata.annotations")
"""What Flagger rewrites on the VirtualService it takes over (spec, labels from
`service.apex`, the original-configuration annotation): the switching update ignores it."""


def key(service: MeshService) -> str:
    return f"{service.namespace}/{service.name}"


def last_route_owners(outputs: Mapping[str, Any]) -> dict[str, str]:
    """The last deployment's `routeOwners` (empty before the first deployment or before the
    output existed)."""
    recorded = outputs.get(ROUTE_OWNERS_OUTPUT)
    if not isinstance(recorded, Mapping):
        return {}
    return {str(k): str(v) for k, v in recorded.items()}


def route_owners(services: Iterable[MeshService], last: Mapping[str, str]) -> dict[str, str]:
    """Who owns each service's VirtualService after this run. A retiring service is absent:
    Flagger's finalizer reverts it and the program routes it only in the next step."""
    owners: dict[str, str] = {}
    for service in services:
        if service.delivery == "static":
            owners[key(service)] = PROGRAM
        elif not service.traffic.progressive.retire:
            owners[key(service)] = HANDING_OVER if last.get(key(service)) == PROGRAM else FLAGGER
    return dict(sorted(owners.items()))


def handovers(owners: Mapping[str, str]) -> frozenset[str]:
    """`<namespace>/<name>` of the services whose VirtualService this run hands to Flagger."""
    return frozenset(k for k, owner in owners.items() if owner == HANDING_OVER)
