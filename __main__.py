"""Entry point of one region stack: read settings, create the provider, build the region.

Settings are read here and nowhere else. A bad value stops the program before any
resource is registered, with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime import config as runtime_config

from components import versions
from components.region import RegionMesh
from components.settings import SettingsError, StackSettings, load_settings


def read_settings() -> StackSettings:
    """Every config value of this stack, validated into one frozen model."""
    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    try:
        return load_settings(raw)
    except SettingsError as error:
        raise pulumi.RunError(f"invalid stack settings: {error}") from None


def kubernetes_provider(settings: StackSettings) -> k8s.Provider:
    """The one Kubernetes provider of this stack; every resource uses it explicitly."""
    kubeconfig = pulumi.Config().get_secret("kubeconfig")
    return k8s.Provider(
        f"{settings.region}-kubernetes",
        kubeconfig=kubeconfig,
        context=settings.kube_context or None,
        enable_server_side_apply=True,
        render_yaml_to_directory=settings.render_yaml_to_directory or None,
    )


settings = read_settings()
region = RegionMesh(
    settings.region,
    settings,
    opts=pulumi.ResourceOptions(providers=[kubernetes_provider(settings)]),
)

pulumi.export("region", settings.region)
pulumi.export("meshId", region.mesh_id)
pulumi.export("istioVersion", region.istio_version)
if settings.istio_revisions:
    # `versions` lists the newest pinned charts; during an upgrade older istiods run too.
    pulumi.export("istioRevisions", region.istio_revisions)
pulumi.export("versions", versions.pinned())
pulumi.export("istioNamespace", region.istio_namespace)
pulumi.export("workloadNamespaces", region.workload_namespaces)
pulumi.export("ingressGatewayAddress", region.ingress_address)
pulumi.export("ejectionDetectionSeconds", region.ejection_detection_seconds)
if region.observability_hub is not None:
    pulumi.export("observabilityHub", region.observability_hub)
