"""The service graph of one stack: who calls whom and which routes send traffic where.

Derived once from the validated settings (`ServiceGraph(settings.services)` in `region.py`)
and handed to the areas that need it: traffic (Sidecar egress, endpoint-route backends)
and security (caller and routed ALLOW rules). Services are keyed by a typed `ServiceId`
instead of `"<namespace>/<name>"` strings split by hand; `str(ServiceId)` is that string,
the form settings and stack outputs use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Types only: the root model imports every area's settings, and areas import this.
    from components.settings import MeshService
    from components.traffic.settings import EndpointRoute


@dataclass(frozen=True, order=True)
class ServiceId:
    """A service of the stack: its namespace and name."""

    namespace: str
    name: str

    @classmethod
    def parse(cls, ref: str) -> ServiceId:
        """From the `<namespace>/<name>` form settings use (`calls`, route `backend`)."""
        namespace, _, name = ref.partition("/")
        return cls(namespace, name)

    @classmethod
    def of(cls, service: MeshService) -> ServiceId:
        """The id of a service in settings."""
        return cls(service.namespace, service.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ServiceGraph:
    """Services by id, their callers and callees (`calls`), and their routes' backends."""

    def __init__(self, services: Sequence[MeshService]) -> None:
        self.services: Mapping[ServiceId, MeshService] = {ServiceId.of(s): s for s in services}
        """Every service, in settings order."""
        callees: dict[ServiceId, tuple[ServiceId, ...]] = {}
        callers: dict[ServiceId, list[ServiceId]] = {}
        routes: dict[ServiceId, dict[ServiceId, list[EndpointRoute]]] = {}
        for service_id, service in self.services.items():
            callees[service_id] = tuple(ServiceId.parse(ref) for ref in service.calls)
            for callee in callees[service_id]:
                callers.setdefault(callee, []).append(service_id)
            for route in service.traffic.routes:
                if route.backend is not None:
                    backend = ServiceId.parse(route.backend)
                    routes.setdefault(service_id, {}).setdefault(backend, []).append(route)
        self._callees = callees
        self._callers = {k: tuple(v) for k, v in callers.items()}
        self._routes = {k: {b: tuple(r) for b, r in v.items()} for k, v in routes.items()}

    def service(self, service_id: ServiceId) -> MeshService:
        """The settings of a service; a KeyError names an id the settings do not have."""
        return self.services[service_id]

    def callees(self, service_id: ServiceId) -> tuple[ServiceId, ...]:
        """Services `service_id` declares in `calls`, in that order."""
        return self._callees.get(service_id, ())

    def callers(self, service_id: ServiceId) -> tuple[ServiceId, ...]:
        """Services whose `calls` name `service_id`, in settings order."""
        return self._callers.get(service_id, ())

    def namespace_callees(self, namespace: str) -> tuple[ServiceId, ...]:
        """Every callee of the services of `namespace`, in settings order."""
        return tuple(
            callee
            for service_id in self.services
            if service_id.namespace == namespace
            for callee in self._callees[service_id]
        )

    def routed_backends(
        self, service_id: ServiceId
    ) -> Mapping[ServiceId, tuple[EndpointRoute, ...]]:
        """Endpoint routes of `service_id` that send traffic to another service, by backend."""
        return self._routes.get(service_id, {})

    def by_ref(self) -> Mapping[str, MeshService]:
        """Every service keyed `<namespace>/<name>`, as route `backend` references name them."""
        return {str(service_id): service for service_id, service in self.services.items()}
