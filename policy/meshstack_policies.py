"""The meshstack policy rules: the program's secure defaults as pulumi-policy validations.

Every rule is a plain function `(args, report_violation) -> None` over what the engine
passes a policy pack, so the tests call them directly and `policy/__main__.py` only
assembles them into a pack. Rules look at resource types, kinds and properties, never at
resource names, so they hold for whatever components the program grows.

Properties arrive as the engine passes them: camelCase Kubernetes fields, mappings and
sequences wrapped by pulumi-policy's unknown-checking proxy (reading a value that is only
known after deploy raises `UnknownValueError`, which the pack reports as advisory). That
is why the helpers test for `Mapping`/`Sequence`, never for `dict`/`list`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import yaml
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

HELM_CHART_TYPES: Final = frozenset(
    {"kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Release"}
)
"""Helm installs whose `chart`, `version` and `values` the engine passes as properties."""

RETAINED_KINDS: Final = frozenset(
    {("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "Namespace")}
)
"""Objects the program must never delete: a deleted CRD takes every object of its kind
with it, a deleted namespace everything inside it."""

ISTIO_INJECTED_IMAGE: Final = "auto"
"""Placeholder image of Istio's gateway chart (and of gateway Deployments written by
hand): istiod's injection webhook replaces it with the pinned proxy image of the control
plane at admission, so it never reaches the kubelet as `auto`."""

HELM_IMAGE_TAG_KEYS: Final = frozenset(
    {"tag", "imageTag", "image_tag", "imageVersion", "image_version"}
)
"""Helm values keys that hold an image tag (Istio `global.tag`, most charts' `image.tag`,
Kiali's `deployment.image_version`)."""

DEFAULT_ROOT_NAMESPACE: Final = "istio-system"
"""Istio's default `meshConfig.rootNamespace`: a selector-less PeerAuthentication there
applies to the whole mesh."""

STACK_ENV: Final = "PULUMI_STACK"
"""The CLI starts a policy pack with the stack name in this variable (pulumi-policy's own
runtime set-up reads it too)."""

KEEP_ANNOTATION: Final = "helm.sh/resource-policy"

_POD_SPEC_PATHS: Final[Mapping[tuple[str, str], tuple[str, ...]]] = {
    ("", "Pod"): ("spec",),
    ("", "PodTemplate"): ("template", "spec"),
    ("", "ReplicationController"): ("spec", "template", "spec"),
    ("apps", "Deployment"): ("spec", "template", "spec"),
    ("apps", "StatefulSet"): ("spec", "template", "spec"),
    ("apps", "DaemonSet"): ("spec", "template", "spec"),
    ("apps", "ReplicaSet"): ("spec", "template", "spec"),
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
"""Where each workload kind keeps its pod spec."""

_EXACT_VERSION: Final = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
"""One exact SemVer version; Helm reads anything else (`^1.2`, `~1`, `1.x`, `>=1`, `*`,
`1.2`) as a constraint and installs whatever newest release matches it."""


# --- reading properties ---------------------------------------------------------------------


def group_kind(resource_type: str) -> tuple[str, str]:
    """`(API group, kind)` of a Kubernetes resource type token; `("", "")` for others.

    Typed resources and `CustomResource` share the token shape `kubernetes:<apiVersion>:
    <Kind>` (`kubernetes:apps/v1:Deployment`, `kubernetes:security.istio.io/v1:
    PeerAuthentication`); the core group is spelled `core` in tokens and `""` here.
    """
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes":
        return "", ""
    api_version, kind = parts[1], parts[2]
    group = api_version.split("/")[0] if "/" in api_version else ""
    return ("" if group == "core" else group), kind


def _get(value: Any, *path: str) -> Any:
    """`value[path[0]][path[1]]...`, or None where a level is missing or not a mapping."""
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _items(value: Any) -> list[Any]:
    """The elements of a sequence property; nothing for a missing or scalar one."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return []


def _label_part(value: Any, *path: str) -> Any:
    """Like `_get`, for message labels: a value unknown during preview reads as missing,
    so a violation is still reported when only the object's name is not known yet."""
    try:
        return _get(value, *path)
    except UnknownValueError:
        return None


def _object_ref(group: str, kind: str, props: Mapping[str, Any]) -> str:
    """`Kind namespace/name` of an object, for messages that point at the manifest."""
    name = _label_part(props, "metadata", "name")
    namespace = _label_part(props, "metadata", "namespace")
    label = f"{group}/{kind}" if group else kind
    if isinstance(name, str) and isinstance(namespace, str):
        return f"{label} {namespace}/{name}"
    return f"{label} {name}" if isinstance(name, str) else label


def image_problem(image: str) -> str | None:
    """Why an image reference is not pinned, or None when it is.

    A digest (`@sha256:...`) pins the image; otherwise the last path segment must carry
    a tag other than `latest` (a registry port, `host:5000/app`, is not a tag).
    """
    if image == ISTIO_INJECTED_IMAGE or "@" in image:
        return None
    last_segment = image.rsplit("/", 1)[-1]
    if ":" not in last_segment:
        return "has no tag, so it resolves to latest"
    tag = last_segment.rsplit(":", 1)[1]
    if not tag:
        return "has an empty tag"
    if tag.lower() == "latest":
        return "uses the mutable tag latest"
    return None


def _containers(pod_spec: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(`containers[i]`-style label, container) for every container and initContainer."""
    for field in ("initContainers", "containers"):
        for index, container in enumerate(_items(_get(pod_spec, field))):
            if isinstance(container, Mapping):
                name = _label_part(container, "name")
                yield (f"{field}[{name if isinstance(name, str) else index}]", container)


def _pod_spec(resource_type: str, props: Mapping[str, Any]) -> tuple[str, Any] | None:
    """(object label, pod spec) of a workload resource, None for anything else."""
    group, kind = group_kind(resource_type)
    path = _POD_SPEC_PATHS.get((group, kind))
    if path is None:
        return None
    return _object_ref(group, kind, props), _get(props, *path)


# --- images pinned -------------------------------------------------------------------------


def _helm_value_images(values: Any, path: str = "values") -> Iterator[tuple[str, str]]:
    """(values path, problem) for every unpinned image reference set in Helm values.

    Conservative on purpose, since charts spell images in many ways: an `image` string
    is checked only when it is a full reference (contains `/`, `:` or `@`), because a
    bare name like Istio's `pilot` is combined by the chart with its own hub and the
    chart's pinned tag; a tag key (`tag`, `image_version`, ...) is flagged only when it
    says `latest`, because an empty or absent tag means the chart's own appVersion,
    which the pinned chart version fixes.
    """
    if isinstance(values, Mapping):
        for key in values:
            value = values[key]
            here = f"{path}.{key}"
            if key == "image" and isinstance(value, str):
                if any(c in value for c in "/:@"):
                    problem = image_problem(value)
                    if problem:
                        yield here, f"image {value!r} {problem}"
            elif key in HELM_IMAGE_TAG_KEYS and isinstance(value, str):
                if value.strip().lower() == "latest":
                    yield here, "tag 'latest' is mutable"
            else:
                yield from _helm_value_images(value, here)
    else:
        for index, item in enumerate(_items(values)):
            yield from _helm_value_images(item, f"{path}[{index}]")


def images_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Every container image of a workload, and every image in Helm values, is pinned."""
    if args.resource_type in HELM_CHART_TYPES:
        chart = args.props.get("chart")
        for where, problem in _helm_value_images(args.props.get("values")):
            report_violation(f"Helm chart {chart}: {where}: {problem}", None)
        return
    workload = _pod_spec(args.resource_type, args.props)
    if workload is None:
        return
    ref, pod_spec = workload
    for label, container in _containers(pod_spec):
        image = container.get("image")
        # A container without an image is rejected by the API server itself.
        if isinstance(image, str):
            unpinned = image_problem(image)
            if unpinned:
                report_violation(f"{ref} {label}: image {image!r} {unpinned}", None)


# --- requests and limits -------------------------------------------------------------------


def container_resources(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Every container and initContainer requests and limits both cpu and memory."""
    workload = _pod_spec(args.resource_type, args.props)
    if workload is None:
        return
    ref, pod_spec = workload
    for label, container in _containers(pod_spec):
        resources = container.get("resources")
        missing = [
            f"resources.{bound}.{resource}"
            for bound in ("requests", "limits")
            for resource in ("cpu", "memory")
            if _get(resources, bound, resource) in (None, "")
        ]
        if missing:
            report_violation(f"{ref} {label}: missing {', '.join(missing)}", None)


# --- mesh-wide STRICT mTLS -----------------------------------------------------------------


def _is_mesh_wide_peer_authentication(
    resource_type: str, props: Mapping[str, Any], root_namespace: str
) -> bool:
    group, kind = group_kind(resource_type)
    if (group, kind) != ("security.istio.io", "PeerAuthentication"):
        return False
    if _get(props, "metadata", "namespace") != root_namespace:
        return False
    selector = _get(props, "spec", "selector")
    return not _get(selector, "matchLabels")


def mesh_strict_mtls(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """A selector-less PeerAuthentication in the root namespace sets mTLS mode STRICT."""
    root_namespace = str(args.get_config().get("rootNamespace") or DEFAULT_ROOT_NAMESPACE)
    mesh_wide = [
        r
        for r in args.resources
        if _is_mesh_wide_peer_authentication(r.resource_type, r.props, root_namespace)
    ]
    for resource in mesh_wide:
        mode = _get(resource.props, "spec", "mtls", "mode")
        if mode != "STRICT":
            report_violation(
                f"mesh-wide PeerAuthentication {resource.name} sets mtls.mode {mode or 'UNSET'}"
                ", not STRICT",
                resource.urn,
            )
    if not any(_get(r.props, "spec", "mtls", "mode") == "STRICT" for r in mesh_wide):
        report_violation(
            f"no PeerAuthentication without selector in {root_namespace} sets mtls.mode STRICT",
            None,
        )


# --- authorization -------------------------------------------------------------------------


def _sets_a_field(match: Any) -> bool:
    # Istio treats an empty list or string like an absent field: it matches anything.
    return isinstance(match, Mapping) and any(match[key] for key in match)


def _constrains(rule: Mapping[str, Any]) -> bool:
    """Whether an AuthorizationPolicy rule narrows anything (a source, operation or condition)."""
    sources = [_get(entry, "source") for entry in _items(rule.get("from"))]
    operations = [_get(entry, "operation") for entry in _items(rule.get("to"))]
    return (
        any(_sets_a_field(s) for s in sources)
        or any(_sets_a_field(o) for o in operations)
        or bool(_items(rule.get("when")))
    )


def no_allow_all_authorization(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """No ALLOW AuthorizationPolicy has a rule that matches every request.

    An empty rule (`rules: [{}]`, or `from`/`to` entries without fields) matches all
    requests, so an ALLOW policy with one admits everything. `spec: {}` is the opposite
    (ALLOW with no rules matches nothing: deny all) and passes.
    """
    group, kind = group_kind(args.resource_type)
    if (group, kind) != ("security.istio.io", "AuthorizationPolicy"):
        return
    spec = args.props.get("spec")
    if not isinstance(spec, Mapping) or spec.get("action", "ALLOW") != "ALLOW":
        return
    for index, rule in enumerate(_items(spec.get("rules"))):
        if not isinstance(rule, Mapping) or not _constrains(rule):
            ref = _object_ref(group, kind, args.props)
            report_violation(f"{ref}: rules[{index}] allows every request", None)


# --- Kiali ---------------------------------------------------------------------------------

KIALI_CONFIG_SCHEMA: Final = PolicyConfigSchema(
    properties={
        "allowedStacks": {
            "type": "array",
            "items": {"type": "string"},
            "default": [],
            "description": "Stacks (by stack name) where Kiali may run without login.",
        }
    }
)


def _is_kiali_chart(chart: Any) -> bool:
    # `kiali-server`, `kiali/kiali-server`, `oci://.../kiali-server`, `.../kiali-server-2.29.0.tgz`
    return isinstance(chart, str) and chart.rsplit("/", 1)[-1].startswith("kiali-server")


def _is_kiali_server_config(args: ResourceValidationArgs) -> bool:
    if args.resource_type != "kubernetes:core/v1:ConfigMap":
        return False
    labels = _get(args.props, "metadata", "labels")
    return isinstance(labels, Mapping) and labels.get("app.kubernetes.io/name") == "kiali"


def _kiali_config_strategy(text: Any) -> Any:
    """`auth.strategy` of Kiali's config.yaml; None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return _get(config, "auth", "strategy") if isinstance(config, Mapping) else None


def kiali_not_anonymous(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Kiali requires login (auth.strategy not anonymous) outside the allowed stacks.

    Covers the kiali-server chart's values, the server configuration the chart renders (the
    ConfigMap labelled `app.kubernetes.io/name: kiali` whose `config.yaml` the server reads:
    all a real preview shows of a Chart v4, see `engine_hides_chart_inputs`) and a Kiali
    custom resource (operator installs).
    """
    if args.resource_type in HELM_CHART_TYPES and _is_kiali_chart(args.props.get("chart")):
        where, strategy = "values.auth.strategy", _get(args.props, "values", "auth", "strategy")
    elif group_kind(args.resource_type) == ("kiali.io", "Kiali"):
        where, strategy = "spec.auth.strategy", _get(args.props, "spec", "auth", "strategy")
    elif _is_kiali_server_config(args):
        meta = args.props.get("metadata") or {}
        where = f"ConfigMap {meta.get('namespace')}/{meta.get('name')} config.yaml auth.strategy"
        strategy = _kiali_config_strategy(_get(args.props, "data", "config.yaml"))
    else:
        return
    if strategy != "anonymous":
        return
    stack = os.environ.get(STACK_ENV, "")
    allowed = {str(s) for s in _items(args.get_config().get("allowedStacks"))}
    # `dev` and `acme/meshstack/dev` name the same stack.
    if stack and {stack, stack.rsplit("/", 1)[-1]} & allowed:
        return
    report_violation(
        f"{where} is anonymous on stack {stack or '(unknown)'}, which is not in allowedStacks",
        None,
    )


# --- Helm chart versions -------------------------------------------------------------------


def _chart_is_a_file(chart: str) -> bool:
    # A packaged or unpacked chart from a path or URL is fixed by its content, not a version.
    return chart.endswith(".tgz") or chart.startswith(("./", "../", "/", "file://"))


def engine_hides_chart_inputs(args: ResourceValidationArgs) -> bool:
    """Whether this is a Chart v4 as the real engine shows it to analyzers: with no properties.

    Chart v4 is a remote component. The engine hands its inputs (`chart`, `version`,
    `values`) to the provider's Construct only ("Remote components don't go through the
    step generator", pkg/resource/deploy/source_eval.go); analyzers see the component the
    provider registers, which has none. Its rendered objects are analyzed one by one as
    ordinary resources. (Release v3 is a custom resource: its inputs are always there.)
    """
    return args.resource_type == "kubernetes:helm.sh/v4:Chart" and not args.props


def helm_chart_version_pinned(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """Every chart from a repository is installed at one exact version.

    Checked wherever the engine passes a chart's inputs: the offline render (the program's
    own registration) and Release v3. A real `pulumi preview` shows no Chart v4 inputs
    (`engine_hides_chart_inputs`), so there the pins in components/versions.py and their
    tests are what hold the version.
    """
    if args.resource_type not in HELM_CHART_TYPES or engine_hides_chart_inputs(args):
        return
    chart = args.props.get("chart")
    if isinstance(chart, str) and _chart_is_a_file(chart):
        return
    version = args.props.get("version")
    if not isinstance(version, str) or not version.strip():
        report_violation(f"Helm chart {chart} has no version, so the newest is installed", None)
    elif not _EXACT_VERSION.match(version.strip()):
        report_violation(
            f"Helm chart {chart} version {version!r} is a range, not one version", None
        )


# --- providers -----------------------------------------------------------------------------


def no_default_provider(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Kubernetes resources use the program's explicit provider, never a default provider.

    A default provider targets whatever cluster the ambient kubeconfig points at, so a
    resource that slips onto it can land in the wrong region.
    """
    if not args.resource_type.startswith("kubernetes:") or args.provider is None:
        # Component resources carry no provider; their custom children are checked.
        return
    name = args.provider.name or args.provider.urn.rsplit("::", 1)[-1]
    if name.startswith("default"):
        report_violation(f"uses the default Kubernetes provider {name}", None)


# --- retention -----------------------------------------------------------------------------


def crds_and_namespaces_retained(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """CRDs and namespaces are never deleted by the program: retainOnDelete (or protect).

    `helm.sh/resource-policy: keep` also counts: Chart v4 turns it into RetainOnDelete.
    The engine's analyzer protocol does not pass `retainOnDelete` to policy packs (pulumi
    3.272, pulumi-policy 1.21: `PolicyResourceOptions` has no such field), so without
    protect or the annotation the rule can only decide where the caller supplies
    `opts.retain_on_delete`, as the offline render does; otherwise it reports itself not
    applicable rather than guess.
    """
    group, kind = group_kind(args.resource_type)
    if (group, kind) not in RETAINED_KINDS:
        return
    if args.opts.protect:
        return
    if _get(args.props, "metadata", "annotations", KEEP_ANNOTATION) == "keep":
        return
    retain_on_delete = getattr(args.opts, "retain_on_delete", None)
    if retain_on_delete is None:
        args.not_applicable("the engine does not pass retainOnDelete to policy packs")
    if not retain_on_delete:
        ref = _object_ref(group, kind, args.props)
        report_violation(f"{ref} is deleted with the stack: set retainOnDelete", None)


# --- the pack ------------------------------------------------------------------------------


def build_policies() -> list[Policy]:
    """Every meshstack policy, mandatory: each guards a default the program relies on."""
    mandatory = EnforcementLevel.MANDATORY
    return [
        ResourceValidationPolicy(
            name="images-pinned",
            description="Container images and Helm image values are pinned (tag or digest).",
            validate=images_pinned,
            enforcement_level=mandatory,
        ),
        ResourceValidationPolicy(
            name="container-resources",
            description="Every container and initContainer requests and limits cpu and memory.",
            validate=container_resources,
            enforcement_level=mandatory,
        ),
        StackValidationPolicy(
            name="mesh-strict-mtls",
            description="A mesh-wide PeerAuthentication in the root namespace enforces STRICT.",
            validate=mesh_strict_mtls,
            enforcement_level=mandatory,
            config_schema=PolicyConfigSchema(
                properties={
                    "rootNamespace": {
                        "type": "string",
                        "default": DEFAULT_ROOT_NAMESPACE,
                        "description": "Istio's meshConfig.rootNamespace.",
                    }
                }
            ),
        ),
        ResourceValidationPolicy(
            name="no-allow-all-authorization",
            description="No ALLOW AuthorizationPolicy has a rule that matches every request.",
            validate=no_allow_all_authorization,
            enforcement_level=mandatory,
        ),
        ResourceValidationPolicy(
            name="kiali-not-anonymous",
            description="Kiali requires login except on stacks listed in allowedStacks.",
            validate=kiali_not_anonymous,
            enforcement_level=mandatory,
            config_schema=KIALI_CONFIG_SCHEMA,
        ),
        ResourceValidationPolicy(
            name="helm-chart-version-pinned",
            description="Every Helm chart is installed at one exact version.",
            validate=helm_chart_version_pinned,
            enforcement_level=mandatory,
        ),
        ResourceValidationPolicy(
            name="no-default-provider",
            description="Kubernetes resources use the explicit provider, never a default one.",
            validate=no_default_provider,
            enforcement_level=mandatory,
        ),
        ResourceValidationPolicy(
            name="crds-and-namespaces-retained",
            description="CRDs and namespaces are retained on delete.",
            validate=crds_and_namespaces_retained,
            enforcement_level=mandatory,
        ),
    ]
