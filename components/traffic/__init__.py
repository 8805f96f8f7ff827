"""Traffic area: how requests reach and move between the mesh services.

Owns routing (VirtualService, DestinationRule), static canaries, endpoint routes, faults and
resilience, ingress Gateways, Sidecar scoping and Flagger progressive delivery: settings
models (`settings.py`, `policy.py`), their cross-field rules (`rules.py`), pure spec
builders (`specs.py`, `delivery_specs.py`) and the components. `region.py` creates
`TrafficManagement`, which composes the others.
"""

from components.traffic.canary import CanaryRoute
from components.traffic.component import TrafficManagement
from components.traffic.delivery import ProgressiveDelivery
from components.traffic.gateway import IngressGateways
from components.traffic.settings import ServiceRef, ServiceTraffic, TrafficSettings
from components.traffic.sidecar import SidecarScopes

__all__ = [
    "CanaryRoute",
    "IngressGateways",
    "ProgressiveDelivery",
    "ServiceRef",
    "ServiceTraffic",
    "SidecarScopes",
    "TrafficManagement",
    "TrafficSettings",
]
