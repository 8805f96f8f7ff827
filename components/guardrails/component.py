"""NamespaceGuardrails: a ResourceQuota and a LimitRange in every workload namespace.

The quota caps what one namespace can take from the cluster; the LimitRange gives
containers that set no resources a request and a limit (so the quota can count them) and
caps the largest container. Injected pods also run an `istio-proxy` sidecar whose
resources come from istiod's `global.proxy.resources`; `GuardrailSettings` checks that
the quota fits `pods` pods of one default container plus the sidecar, and that `max`
stays above the sidecar's limit.
"""

from __future__ import annotations

from typing import Any, Final, cast

import pulumi
import pulumi_kubernetes as k8s

from components.guardrails.settings import GuardrailSettings
from components.guardrails.specs import (
    LIMIT_RANGE_NAME,
    QUOTA_NAME,
    limit_range_spec,
    resource_quota_spec,
)
from components.istio.component import IstioMesh

TOKEN: Final = "meshstack:guardrails:NamespaceGuardrails"


class NamespaceGuardrails(pulumi.ComponentResource):
    """ResourceQuota `meshstack-quota` and LimitRange `meshstack-limits` per namespace.

    `namespaces` must be workload namespaces of `mesh`: each object waits for its namespace.
    """

    def __init__(
        self,
        name: str,
        mesh: IstioMesh,
        guardrails: GuardrailSettings,
        *,
        namespaces: tuple[str, ...],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TOKEN, name, None, opts)
        if guardrails.enabled:
            for ns in namespaces:
                ns_name = mesh.workload_namespace(ns).metadata.name
                # Specs are plain dicts (schema-checked by the tests), not the SDK's TypedDicts.
                k8s.core.v1.ResourceQuota(
                    f"{name}-{ns}-quota",
                    metadata=k8s.meta.v1.ObjectMetaArgs(name=QUOTA_NAME, namespace=ns_name),
                    spec=cast(Any, resource_quota_spec(guardrails)),
                    opts=pulumi.ResourceOptions(parent=self),
                )
                k8s.core.v1.LimitRange(
                    f"{name}-{ns}-limits",
                    metadata=k8s.meta.v1.ObjectMetaArgs(name=LIMIT_RANGE_NAME, namespace=ns_name),
                    spec=cast(Any, limit_range_spec(guardrails)),
                    opts=pulumi.ResourceOptions(parent=self),
                )
        # No outputs: nothing reads one.
        self.register_outputs({})
