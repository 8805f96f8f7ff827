"""Every production stack's control-plane upgrade, step by step, as the API server admits pods.

The path is docs/upgrades.md from where each region stands (today: one unrevisioned istiod
at the installed release) to the newest pinned release, each step rendered from a copy of
the production stack file with only the revision keys changed (`upgrade_plan`), so this
holds for whatever the stack files say.

Which istiod a new pod gets is decided by the API server and Istio's injector together:

- the API server calls every MutatingWebhookConfiguration whose rules cover the pod's
  CREATE and whose `namespaceSelector` and `objectSelector` match, configurations in order
  of name and each configuration's webhooks in their listed order (k8s.io/apiserver
  `pkg/admission/configuration/mutating_webhook_manager.go` sorts them by name;
  `reinvocationPolicy: Never` on every Istio injector, so each runs once);
- Istio's injector re-injects a pod that a previous webhook already injected (it reads the
  `sidecar.istio.io/status` annotation to recognise and replace the containers it added,
  `pkg/kube/inject/webhook.go` `reapplyOverwrittenContainers`), so the **last** matching
  webhook decides the proxy's istiod and version.

During a `pulumi up` the old and new objects coexist: Pulumi creates and updates in
dependency order but deletes what the step removes only at the end. So for each step the
test walks every state the update can pass through: a configuration the step removes is
still there (old version), one it adds may or may not exist yet, one it changes in place
may be either version, except for the pods the update itself creates (the gateways it
rolls), which start only after everything their chart depends on is done. The webhooks are
the real ones: the istiod charts are expanded with the pinned Helm (`helm template`), the
tag webhooks are the program's objects, and gateway pod labels come from the gateway
charts' rendered Deployments.

What the settings promise (derived from the step's settings, never from the render): a
namespace's pods go to the revision its `namespaceRevisions` entry names (a tag or a
revision), untagged namespaces and every gateway to the revision holding the `default` tag.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import pytest

from components.istio.settings import DEFAULT_TAG, IstioSettings
from components.istio.values import istiod_service
from components.settings import load_settings
from components.versions import ISTIO_VERSIONS
from tools import charts
from tools.charts import published_chart
from tools.render import Render, load_stack_config, load_stack_references, run_program
from tools.stacks import stack_names

OPTED_OUT: Final = {"sidecar.istio.io/inject": "false"}
CANARY_TAG: Final = "canary"


# --- the plan: docs/upgrades.md from a production stack's state ---------------------------


@dataclass(frozen=True)
class Step:
    title: str
    revisions: tuple[dict[str, Any], ...]
    namespace_revisions: dict[str, str]


def _dashed(version: str) -> str:
    return version.replace(".", "-")


def upgrade_plan(config: Mapping[str, str]) -> list[Step]:
    """The documented upgrade of a stack to the newest pinned Istio release.

    From a stack without `istioRevisions`: declare the running istiod as revision `default`,
    add the new revision with a tag, move one workload namespace to that tag, move every tag
    (`default` included) to the new revision, remove the old one. From a stack that already
    declares revisions, the remaining steps from its state (a stack in the middle of an
    upgrade finishes it). Only the start when one istiod already runs the newest release.
    """
    settings = load_settings(config)
    istio = settings.istio
    declared = [
        {"name": r.name, "version": r.version, "tags": list(r.tags)}
        for r in settings.istio_revisions
    ]
    namespaces = dict(settings.namespace_revisions)
    steps = [Step("start: the stack file as it is", tuple(declared), namespaces)]
    target = ISTIO_VERSIONS[0]
    old = istio.default_revision
    if not declared and old.version == target:
        return steps
    revisions: list[dict[str, Any]] = declared or [
        {"name": "default", "version": old.version, "tags": [DEFAULT_TAG]}
    ]
    if not declared:
        steps.append(Step("declare the running istiod as revision default", tuple(revisions), {}))
    at_target = [r for r in revisions if r["version"] == target]
    new = next((r for r in at_target if DEFAULT_TAG in r["tags"]), next(iter(at_target), None))
    if new is None:
        used_tags = {t for r in revisions for t in r["tags"]}
        tag = CANARY_TAG if CANARY_TAG not in used_tags else f"{CANARY_TAG}-{_dashed(target)}"
        new = {"name": _dashed(target), "version": target, "tags": [tag]}
        revisions = [*copy.deepcopy(revisions), new]
        steps.append(Step(f"add revision {new['name']} ({target})", tuple(revisions), namespaces))
        untagged = [n for n in istio.workload_namespaces if n not in namespaces]
        if untagged:
            namespaces = {**namespaces, untagged[0]: tag}
            steps.append(
                Step(f"move namespace {untagged[0]} to {tag}", tuple(revisions), namespaces)
            )
    others = [r for r in revisions if r["name"] != new["name"]]
    if any(r["tags"] for r in others):
        revisions = [
            {**r, "tags": sorted({t for x in revisions for t in x["tags"]})}
            if r["name"] == new["name"]
            else {**r, "tags": []}
            for r in revisions
        ]
        steps.append(Step(f"move every tag to {new['name']}", tuple(revisions), namespaces))
    if others:
        remaining = tuple(r for r in revisions if r["name"] == new["name"])
        selectable = {new["name"], *remaining[0]["tags"]}
        kept = {ns: sel for ns, sel in namespaces.items() if sel in selectable}
        gone = ", ".join(r["name"] for r in others)
        steps.append(Step(f"remove the old revision {gone}", remaining, kept))
    return steps


def step_config(config: Mapping[str, str], step: Step) -> dict[str, str]:
    changed = dict(config)
    changed["meshstack:istioRevisions"] = json.dumps(list(step.revisions))
    changed["meshstack:namespaceRevisions"] = json.dumps(step.namespace_revisions)
    return changed


# --- one rendered step: its webhooks, namespaces, gateway pods and dependencies ------------


@dataclass(frozen=True)
class Webhook:
    configuration: str
    name: str
    istiod: str
    """The Service it calls: the istiod of one revision."""
    namespace_selector: Mapping[str, Any]
    object_selector: Mapping[str, Any]


@dataclass
class RenderedStep:
    step: Step
    settings: IstioSettings
    render: Render
    configurations: dict[str, tuple[Webhook, ...]]
    """MutatingWebhookConfiguration name → its pod-injection webhooks, in order."""
    owners: dict[str, str]
    """MutatingWebhookConfiguration name → URN of the resource that owns it."""
    namespaces: dict[str, dict[str, str]]
    """Namespace → its labels (with `kubernetes.io/metadata.name`, as the API server sets)."""
    gateway_pods: dict[str, tuple[str, str, dict[str, str], str]]
    """Gateway release → (namespace, chart URN, pod template labels, pod template JSON)."""


def _injection_webhooks(configuration: Mapping[str, Any]) -> tuple[Webhook, ...]:
    name = configuration["metadata"]["name"]
    return tuple(
        Webhook(
            name,
            webhook["name"],
            webhook["clientConfig"]["service"]["name"],
            webhook.get("namespaceSelector") or {},
            webhook.get("objectSelector") or {},
        )
        for webhook in configuration.get("webhooks") or []
        if any(
            "pods" in rule.get("resources", []) and "CREATE" in rule.get("operations", [])
            for rule in webhook.get("rules") or []
        )
    )


def _chart_urns(render: Render) -> dict[str, str]:
    return {
        str(r.inputs.get("name", r.name)): r.urn
        for r in render.registrations
        if r.type == "kubernetes:helm.sh/v4:Chart"
    }


def render_step(stack: str, config: Mapping[str, str], step: Step, helm: Any) -> RenderedStep:
    changed = step_config(config, step)
    settings = load_settings(changed)
    render = run_program(stack, changed, [], stack_references=load_stack_references())
    chart_urns = _chart_urns(render)
    releases = [c for c in render.helm_charts() if published_chart(c) in ("istiod", "gateway")]
    expanded = charts.expand(releases, helm=helm)
    configurations: dict[str, tuple[Webhook, ...]] = {}
    owners: dict[str, str] = {}
    for registration in render.registrations:
        obj = registration.inputs
        if obj.get("kind") == "MutatingWebhookConfiguration":
            configurations[obj["metadata"]["name"]] = _injection_webhooks(obj)
            owners[obj["metadata"]["name"]] = registration.urn
    gateway_pods = {}
    for release in expanded:
        for obj in release.objects:
            if obj["kind"] == "MutatingWebhookConfiguration":
                configurations[obj["metadata"]["name"]] = _injection_webhooks(obj)
                owners[obj["metadata"]["name"]] = chart_urns[release.release.name]
            if obj["kind"] == "Deployment" and release.folder.startswith("istio-gateway-"):
                template = obj["spec"]["template"]
                gateway_pods[release.release.name] = (
                    release.release.namespace,
                    chart_urns[release.release.name],
                    dict(template["metadata"].get("labels") or {}),
                    json.dumps(template, sort_keys=True),
                )
    namespaces = {
        o["metadata"]["name"]: {
            **(o["metadata"].get("labels") or {}),
            "kubernetes.io/metadata.name": o["metadata"]["name"],
        }
        for o in render.kubernetes_objects()
        if o["kind"] == "Namespace"
    }
    return RenderedStep(
        step, settings.istio, render, configurations, owners, namespaces, gateway_pods
    )


# --- the API server's admission of one pod --------------------------------------------------


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(k) != value for k, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        ok = {
            "In": present and labels.get(key) in (values or []),
            "NotIn": not present or labels.get(key) not in (values or []),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def called(
    configurations: Mapping[str, tuple[Webhook, ...]],
    namespace_labels: Mapping[str, str],
    pod_labels: Mapping[str, str],
) -> list[Webhook]:
    """The injection webhooks the API server calls for a new pod, in call order."""
    return [
        webhook
        for name in sorted(configurations)
        for webhook in configurations[name]
        if matches(webhook.namespace_selector, namespace_labels)
        and matches(webhook.object_selector, pod_labels)
    ]


def intended_istiod(settings: IstioSettings, namespace: str | None) -> str:
    """The istiod the settings promise a namespace's pods (None: a gateway)."""
    selection = settings.namespace_revisions.get(namespace or "", "")
    if not selection:
        return istiod_service(settings.default_revision)
    revision = next(
        r for r in settings.revisions if selection in r.tags or (r.name or "default") == selection
    )
    return istiod_service(revision)


def transition_states(
    before: RenderedStep, after: RenderedStep, settled: frozenset[str]
) -> Iterator[dict[str, tuple[Webhook, ...]]]:
    """Every set of webhook configurations the cluster can hold during `after`'s update.

    `settled`: configurations already in their new state for the pod in question (those its
    resource waits for). Removed ones stay until the update ends.
    """
    names = sorted(set(before.configurations) | set(after.configurations))
    choices: list[list[tuple[Webhook, ...] | None]] = []
    for name in names:
        old, new = before.configurations.get(name), after.configurations.get(name)
        if new is None:
            choices.append([old])  # deleted only at the end of the update
        elif name in settled or old == new:
            choices.append([new])
        else:
            choices.append([old, new])  # not yet created or updated, or already
    for combination in itertools.product(*choices):
        yield {n: c for n, c in zip(names, combination, strict=True) if c is not None}


def _dependency_closure(render: Render, urn: str) -> set[str]:
    by_urn = {r.urn: r for r in render.registrations}
    seen: set[str] = set()
    todo = [urn]
    while todo:
        current = todo.pop()
        registration = by_urn.get(current)
        if registration is None:
            continue
        for dependency in registration.dependencies:
            if dependency not in seen:
                seen.add(dependency)
                todo.append(dependency)
    return seen


# --- the steps of every production stack ---------------------------------------------------


@cache
def rendered_plan(stack: str) -> tuple[RenderedStep, ...]:
    config, _ = load_stack_config(stack)
    helm = charts.helm_binary()
    return tuple(render_step(stack, config, step, helm) for step in upgrade_plan(config))


STACKS: Final = stack_names()


def test_every_production_stack_has_an_upgrade_path_to_the_newest_release() -> None:
    for stack in STACKS:
        config, _ = load_stack_config(stack)
        steps = upgrade_plan(config)
        final = load_settings(step_config(config, steps[-1])).istio
        assert final.default_revision.version == ISTIO_VERSIONS[0], stack
        assert len({r.name for r in final.revisions}) == 1, stack


@pytest.mark.parametrize("stack", STACKS)
def test_after_each_step_every_pod_has_exactly_the_intended_injector(stack: str) -> None:
    """Settled: every namespace's pods call webhooks of one istiod only, the intended one;
    a pod that opts out gets none; every gateway pod goes to the `default` tag's revision."""
    for rendered in rendered_plan(stack):
        where = f"{stack}, step '{rendered.step.title}'"
        for namespace, labels in rendered.namespaces.items():
            istiods = {w.istiod for w in called(rendered.configurations, labels, {})}
            if namespace == "istio-system" or not istiods:
                assert not istiods or namespace != "istio-system", f"{where}: {namespace}"
                continue
            intended = intended_istiod(rendered.settings, namespace)
            assert istiods == {intended}, f"{where}: namespace {namespace}: {sorted(istiods)}"
            assert called(rendered.configurations, labels, OPTED_OUT) == [], f"{where}: opt-out"
        assert rendered.gateway_pods, where
        for release, (namespace, _, pod, _) in rendered.gateway_pods.items():
            labels = rendered.namespaces[namespace]
            istiods = {w.istiod for w in called(rendered.configurations, labels, pod)}
            intended = intended_istiod(rendered.settings, None)
            assert istiods == {intended}, f"{where}: gateway {release}: {sorted(istiods)}"


@pytest.mark.parametrize("stack", STACKS)
def test_during_each_update_pods_get_the_old_or_new_intended_istiod_and_rolled_gateways_the_new(
    stack: str,
) -> None:
    """While a step's `pulumi up` runs, a workload pod created at any moment ends on the
    istiod the step before or the step after intends (the last webhook decides); a gateway
    pod the update rolls ends on the new step's `default` revision."""
    steps = rendered_plan(stack)
    for before, after in itertools.pairwise(steps):
        where = f"{stack}, step '{after.step.title}'"
        for namespace, labels in after.namespaces.items():
            if namespace == "istio-system":
                continue
            allowed = {
                intended_istiod(before.settings, namespace),
                intended_istiod(after.settings, namespace),
            }
            for state in transition_states(before, after, frozenset()):
                last = called(state, labels, {})
                if last:
                    assert last[-1].istiod in allowed, f"{where}: namespace {namespace}"
        for release, (namespace, urn, pod, template) in after.gateway_pods.items():
            if before.gateway_pods.get(release, (None, None, None, None))[3] == template:
                continue  # not rolled by this update
            waits_for = _dependency_closure(after.render, urn)
            settled = frozenset(n for n, owner in after.owners.items() if owner in waits_for)
            labels = after.namespaces[namespace]
            intended = intended_istiod(after.settings, None)
            for state in transition_states(before, after, settled):
                last = called(state, labels, pod)
                assert last, f"{where}: gateway {release} is not injected"
                assert last[-1].istiod == intended, (
                    f"{where}: gateway {release} comes back on {last[-1].istiod} "
                    f"(webhook {last[-1].configuration}/{last[-1].name}), not {intended}"
                )
