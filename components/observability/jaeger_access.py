"""Who may call Jaeger: the AuthorizationPolicy on the Jaeger pod, as a pure builder.

Jaeger's query API (UI/HTTP 16686, gRPC 16685) has no authentication of its own and serves
every traced URL and header. Its pod runs in the mesh (injected observability namespace), so
an ALLOW policy selecting it makes its sidecar deny every request no rule matches (Istio:
"if any ALLOW policies apply to the workload, deny the request unless it matches one").
What each port admits, and why:

- OTLP 4317 (gRPC) / 4318 (HTTP): any mesh identity (`principals: ["*"]`, an authenticated
  mTLS peer). Every proxy of every region exports its spans here with its own workload
  certificate: istiod's `opentelemetry` tracing provider is an ordinary outbound cluster
  (auto mTLS), and spokes arrive through the hub's east-west gateway, which passes their
  mTLS through (AUTO_PASSTHROUGH) instead of terminating it.
- gRPC query 16685: Kiali only. Kiali reads traces with `use_grpc: true` through
  `internal_url`'s host and port and checks Jaeger's health with the same gRPC client
  (kiali `tracing/client.go` `newClient`, `GetServiceStatus`).
- HTTP query 16686: `GET` from `jaeger.queryServiceAccounts` (Grafana's Jaeger data
  source reads `/api/...` there), and, with an Ingress, plaintext from
  `jaeger.ingressSourceIpBlocks` only: the out-of-mesh controller has no identity, so it
  is recognised by the connection's peer address (`source.ipBlocks`) and by carrying no
  mTLS identity (`notPrincipals: ["*"]`), which keeps a meshed workload inside those
  blocks out. Its requests are authenticated by the Ingress (`ingressAuthUrl` or basic
  auth) before they leave the controller.

Nothing else is opened: the kubelet's probes of 13133 are rewritten to the sidecar's
15020 and Jaeger's metrics (8888) reach Prometheus merged into 15020 (`prometheus.io/*`
annotations, `enablePrometheusMerge`), both served by the proxy outside authorization.
"""

from __future__ import annotations

from typing import Any, Final

from components.constants import workload_principal
from components.istio.tracing import OTLP_GRPC_PORT, OTLP_HTTP_PORT
from components.observability.jaeger_values import QUERY_GRPC_PORT, QUERY_HTTP_PORT, pod_labels
from components.observability.kiali_values import SERVICE_ACCOUNT as KIALI_SERVICE_ACCOUNT
from components.observability.settings import JaegerSettings

POLICY_NAME: Final = "jaeger-allow-callers"
"""Metadata name of the AuthorizationPolicy (in the observability namespace)."""

ANY_MESH_IDENTITY: Final = "*"
"""`principals: ["*"]`: any authenticated mTLS peer (Istio: `*` matches any principal)."""


def query_principals(settings: JaegerSettings) -> list[str]:
    """The mTLS identities allowed to `GET` the HTTP query API (`queryServiceAccounts`)."""
    return sorted(
        {workload_principal(*account.split("/", 1)) for account in settings.query_service_accounts}
    )


def kiali_principal(namespace_name: str) -> str:
    """Kiali's mTLS identity: it runs in Jaeger's namespace as `KIALI_SERVICE_ACCOUNT`."""
    return workload_principal(namespace_name, KIALI_SERVICE_ACCOUNT)


def jaeger_access_spec(settings: JaegerSettings, *, namespace_name: str) -> dict[str, Any]:
    """ALLOW on the Jaeger pod in `namespace_name`: OTLP from the mesh, gRPC query from
    Kiali, HTTP query from the query readers and (with an Ingress) the controller's
    plaintext; nothing else."""
    rules: list[dict[str, Any]] = [
        {
            "from": [{"source": {"principals": [ANY_MESH_IDENTITY]}}],
            "to": [{"operation": {"ports": [str(OTLP_GRPC_PORT), str(OTLP_HTTP_PORT)]}}],
        },
        {
            "from": [{"source": {"principals": [kiali_principal(namespace_name)]}}],
            "to": [{"operation": {"ports": [str(QUERY_GRPC_PORT)]}}],
        },
    ]
    readers = query_principals(settings)
    if readers:
        rules.append(
            {
                "from": [{"source": {"principals": readers}}],
                "to": [{"operation": {"ports": [str(QUERY_HTTP_PORT)], "methods": ["GET"]}}],
            }
        )
    if settings.ingress_host:
        rules.append(
            {
                "from": [
                    {
                        "source": {
                            "ipBlocks": list(settings.ingress_source_ip_blocks),
                            "notPrincipals": [ANY_MESH_IDENTITY],
                        }
                    }
                ],
                "to": [{"operation": {"ports": [str(QUERY_HTTP_PORT)]}}],
            }
        )
    return {"selector": {"matchLabels": pod_labels()}, "action": "ALLOW", "rules": rules}
