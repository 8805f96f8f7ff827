"""istio area: the mesh every other area builds on.

Owns Istio's control plane and gateways for one region (`IstioMesh`, its Helm values in
`values`), the settings slice they are built from (`IstioSettings`) and where proxies send
spans (`TracingTarget`, the extension providers in `tracing`). Any area may import it.
"""

from components.istio.component import IstioMesh
from components.istio.settings import IstioSettings
from components.istio.tracing import TracingTarget

__all__ = ["IstioMesh", "IstioSettings", "TracingTarget"]
