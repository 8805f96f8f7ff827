"""Entry point of one region stack: read settings, create the provider, build the region.

Settings are read here and nowhere else. A bad value stops the program before any
resource is registered, with one line naming the key, the value and what is allowed.
What the stack file does not say but the run knows (organization, project, where the
runbooks of the deployed commit are) is resolved here too: `run_context`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime import config as runtime_config

from components import versions
from components.istio import history
from components.region import RegionMesh
from components.run_context import (
    OFFLINE_RUNBOOK_BASE_URL,
    RunContext,
    RunContextError,
    git_checkout,
    runbook_base_url,
)
from components.settings import CONFIG_NAMESPACE, SettingsError, StackSettings, load_settings
from components.traffic import handoff
from tools.stacks import invalid_settings_message, settings_error_lines, stack_file

LAST_OUTPUTS_FUNCTION: Final = "pulumi:pulumi:readStackOutputs"
"""The engine's builtin behind `pulumi.StackReference`: a stack's last outputs, by name."""

OFFLINE: bool = globals().get("OFFLINE_RENDER") is True
"""tools/render.py runs this file with `OFFLINE_RENDER = True`: the run is a mock, so nothing
is read from the environment or the checkout and renders stay deterministic."""


def read_settings() -> StackSettings:
    """Every config value of this stack, validated into one frozen model.

    The engine hands the config without its file, so a mistake's line in the stack file is
    looked up in `Pulumi.<stack>.yaml` next to this program when there is one (the file the
    CLI read the config from, unless a run names another): where the file writes the key,
    the error names its line.
    """
    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    try:
        return load_settings(raw)
    except SettingsError as error:
        path = stack_file(pulumi.get_stack(), Path(__file__).resolve().parent)
        lines = (
            settings_error_lines(error, path, CONFIG_NAMESPACE) if path.is_file() else error.lines
        )
        raise pulumi.RunError(invalid_settings_message(lines)) from None


def run_context(settings: StackSettings) -> RunContext:
    """The organization and project of this run, and where the alerts' runbooks are.

    The runbook base is `alerts.runbookBaseUrl` when the stack file sets it; else, offline,
    the fixed stand-in; else the deployed commit's docs/alerts.md, from the GitHub Actions
    run or the checkout's `origin` remote.
    """
    runbooks = settings.alerts.runbook_base_url
    if not runbooks and OFFLINE:
        runbooks = OFFLINE_RUNBOOK_BASE_URL
    if not runbooks:
        try:
            runbooks = runbook_base_url(os.environ, git_checkout(Path(__file__).resolve().parent))
        except RunContextError as error:
            raise pulumi.RunError(f"invalid stack settings: {error}") from None
    return RunContext(
        organization=pulumi.get_organization(),
        project=pulumi.get_project(),
        runbook_base_url=runbooks,
    )


def kubernetes_provider(settings: StackSettings) -> k8s.Provider:
    """The one Kubernetes provider of this stack; every resource uses it explicitly.

    `meshstack:kubeconfig` is optional, so Pulumi.yaml cannot declare it `secret: true` (a
    declared secret is required in every stack); a plaintext value is refused here instead.
    """
    key = "meshstack:kubeconfig"
    if runtime_config.get_config(key) is not None and not runtime_config.is_config_secret(key):
        raise pulumi.RunError(
            f"invalid stack settings: {key} is plaintext in the stack file; set it with "
            "`pulumi config set --secret meshstack:kubeconfig ...`"
        )
    kubeconfig = pulumi.Config().get_secret("kubeconfig")
    if settings.render_yaml_to_directory:
        pulumi.log.warn(
            "meshstack:renderYamlToDirectory is set: the manifests are written to "
            f"{settings.render_yaml_to_directory} instead of being applied, and the Secrets in "
            "them (the Redis password, Kiali's signing key) in plain text. Keep that directory "
            "out of version control and delete it after use."
        )
    # `upsert_existing_objects` stays unset (off): with it, a create of an object that already
    # exists silently adopts it, and a rename without an alias then deletes it. An object a
    # killed `pulumi up` created but never recorded is imported by the recovery instead
    # (tools/recover_stack.py, docs/operations.md "Interrupted deploy").
    if settings.render_yaml_to_directory:
        # The provider refuses a cluster (`context`, `kubeconfig`) beside
        # renderYamlToDirectory, and the SDK fills an unset kubeconfig from $KUBECONFIG: an
        # empty one says "no cluster", so a stack file's kubeContext does not stop a render.
        return k8s.Provider(
            f"{settings.region}-kubernetes",
            kubeconfig="",
            enable_server_side_apply=True,
            render_yaml_to_directory=settings.render_yaml_to_directory,
        )
    return k8s.Provider(
        f"{settings.region}-kubernetes",
        kubeconfig=kubeconfig,
        context=settings.kube_context or None,
        enable_server_side_apply=True,
    )


def last_deployment(context: RunContext) -> dict[str, Any]:
    """This stack's outputs from its last deployment (empty before the first), read through
    the engine's stack-reference builtin synchronously, before any resource is registered."""
    name = context.stack_reference_name(pulumi.get_stack())
    result = pulumi.runtime.invoke(LAST_OUTPUTS_FUNCTION, {"name": name})
    return dict((result.value or {}).get("outputs") or {})


def refuse_control_plane_replacement(settings: StackSettings, last: dict[str, Any]) -> None:
    """Stop, with one line, an update that would remove the istiod revision the last
    deployment runs before its tags moved elsewhere (`components.istio.history`)."""
    deployed = history.deployed_revisions(last)
    error = history.replacement_error(deployed, settings.istio)
    if error:
        raise pulumi.RunError(f"invalid stack settings: {error}")


if not OFFLINE:
    # The engine sends this program the resources a Chart created as their IDs, not as
    # resource references: the SDK turns every reference into a typed resource by reading its
    # whole state back from the engine (`pulumi:pulumi:getResource`), about 180 reads per run
    # (the Istio CRDs alone 0.5 MB), about 1 s of a preview of the hub (README, Benchmark),
    # for objects the program does not read; the one it does, the ingress Service, it reads
    # by name (`components.istio.component`). Set before the first registration; the SDK
    # reads it on each one.
    os.environ["PULUMI_DISABLE_RESOURCE_REFERENCES"] = "true"

settings = read_settings()
context = run_context(settings)
last = last_deployment(context)
refuse_control_plane_replacement(settings, last)
# Who owns each service's VirtualService after this run; a service switching to progressive
# delivery hands its VirtualService to Flagger over two updates (components.traffic.handoff).
route_owners = handoff.route_owners(settings.services, handoff.last_route_owners(last))
region = RegionMesh(
    settings.region,
    settings,
    context=context,
    route_handovers=handoff.handovers(route_owners),
    opts=pulumi.ResourceOptions(providers=[kubernetes_provider(settings)]),
)

pulumi.export("region", settings.region)
pulumi.export("meshId", region.mesh_id)
pulumi.export("istioVersion", region.istio_version)
# Every istiod the region runs (`default`: the unrevisioned one), with its version and tags:
# `versions` lists the installed release's charts, and during an upgrade other istiods run
# too. The next run reads it back to refuse replacing a control plane by accident.
pulumi.export("istioRevisions", region.istio_revisions)
pulumi.export("versions", versions.pinned())
pulumi.export("istioNamespace", region.istio_namespace)
pulumi.export("workloadNamespaces", region.workload_namespaces)
pulumi.export("ingressGatewayAddress", region.ingress_address)
pulumi.export("ejectionDetectionSeconds", region.ejection_detection_seconds)
pulumi.export(handoff.ROUTE_OWNERS_OUTPUT, route_owners)
if region.observability_hub is not None:
    pulumi.export("observabilityHub", region.observability_hub)
