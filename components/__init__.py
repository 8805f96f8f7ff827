"""meshstack: reusable Pulumi components that deploy a multi-region Istio service mesh.

Each area lives in its own module: ``istio`` (control plane and gateways), ``region``
(composition of one region's parts), ``settings`` (the typed stack settings) and
``versions`` (every pinned chart and image). Components receive settings and each other
as typed Python objects; none of them reads Pulumi config or the stack name.
"""
