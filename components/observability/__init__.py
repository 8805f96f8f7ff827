"""observability area: traces, Telemetry and the mesh console.

Owns Jaeger (`JaegerStack`, values in `jaeger_values`), Kiali (`KialiStack` on the hub,
`KialiRemoteAccess` on a spoke, values in `kiali_values`), plaintext access of meshed
clients to Prometheus (`PrometheusAccess`), the mesh's Telemetry objects
(`MeshTelemetry`) and the hub/spoke link (`hub_outputs`, `HubReference`), all configured by
`ObservabilitySettings`.
"""

from components.observability.hub import HubReference, hub_outputs
from components.observability.jaeger import JaegerStack
from components.observability.kiali import KialiRemoteAccess, KialiStack
from components.observability.prometheus import PrometheusAccess
from components.observability.settings import ObservabilitySettings
from components.observability.telemetry import MeshTelemetry

__all__ = [
    "HubReference",
    "JaegerStack",
    "KialiRemoteAccess",
    "KialiStack",
    "MeshTelemetry",
    "ObservabilitySettings",
    "PrometheusAccess",
    "hub_outputs",
]
