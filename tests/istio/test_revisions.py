"""Canary upgrade of the control plane, on the two-revision fixture stack (docs/upgrades.md).

`tests/fixtures/Pulumi.two-revisions.yaml` is the middle of a 1.30.4 → 1.31.0 upgrade:
istiod 1.30.4 (`1-30-4`, tags `default`, `stable`) and istiod 1.31.0 (`1-31-0`, tag
`canary`) side by side, `shop` on `canary`, `payments` on `stable`, `batch` untagged.

Which istiod injects a pod is decided by the API server: it calls every mutating webhook
whose namespace and object selectors match. `injectors()` evaluates those selectors over
the webhooks the stack installs: the tag webhooks the program renders, and each revision's
own `istio-sidecar-injector-<revision>` from the istiod chart, whose webhooks are the
`rev.namespace`/`rev.object` pair of a tag named like the revision, or for the unrevisioned
istiod all four webhooks of the `default` tag unless `global.operatorManageWebhooks` drops
them (checked against `helm template` of both pinned istiod charts when this was written).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest

from components.istio import values as v
from components.istio.settings import IstioRevision
from policy.offline import evaluate
from tests.conftest import by_name, settings_error
from tests.istio.test_upgrade_injection import matches as label_selector_matches
from tools import charts
from tools.charts import published_chart
from tools.render import Render, load_stack_config, render_stack, run_program
from tools.verify import validate_helm_values, validate_manifest
from tools.verify.helm_values import CHART_REFERENCE_DIRS

FIXTURE: Final = Path(__file__).resolve().parents[1] / "fixtures" / "Pulumi.two-revisions.yaml"
STACK: Final = "two-revisions"
MESH: Final = "fixture-1-istio"


@pytest.fixture(scope="module")
def fixture_render() -> Render:
    return render_stack(STACK, stack_dir=FIXTURE.parent)


# --- the API server's webhook selection ---------------------------------------------------


def installed_webhooks(render: Render) -> list[dict[str, Any]]:
    """Every sidecar-injection webhook of the stack: the program's tag webhooks and each
    istiod chart's own webhooks for its revision."""
    webhooks = [
        webhook
        for obj in render.kubernetes_objects()
        if obj["kind"] == "MutatingWebhookConfiguration"
        for webhook in obj["webhooks"]
    ]
    for chart in render.helm_charts():
        if published_chart(chart) != "istiod":
            continue
        revision = IstioRevision(chart["values"].get("revision", ""), chart["version"])
        if revision.name:
            webhooks += v.revision_tag_webhook(revision.name, revision)["webhooks"][:2]
        elif not chart["values"]["global"].get("operatorManageWebhooks"):
            # Unrevisioned: `istio.io/rev: default` and the default-injection webhooks.
            webhooks += v.revision_tag_webhook("default", revision)["webhooks"]
    return webhooks


def injectors(
    render: Render, namespace: str, pod_labels: Mapping[str, str] | None = None
) -> list[str]:
    """Istio versions of the istiods whose webhooks a new pod in `namespace` calls."""
    labels = next(
        o["metadata"].get("labels", {})
        for o in render.kubernetes_objects()
        if o["kind"] == "Namespace" and o["metadata"]["name"] == namespace
    )
    namespace_labels = {**labels, "kubernetes.io/metadata.name": namespace}
    versions = {
        c["name"]: c["version"] for c in render.helm_charts() if published_chart(c) == "istiod"
    }
    return sorted(
        versions[webhook["clientConfig"]["service"]["name"]]
        for webhook in installed_webhooks(render)
        if label_selector_matches(webhook["namespaceSelector"], namespace_labels)
        and label_selector_matches(webhook["objectSelector"], pod_labels or {})
    )


# --- the fixture: two control planes, tags, namespaces ------------------------------------


def test_two_istiod_releases_run_side_by_side_at_their_pinned_versions(
    fixture_render: Render,
) -> None:
    istiods = {
        c["name"]: (c["version"], c["values"]["revision"])
        for c in fixture_render.helm_charts()
        if published_chart(c) == "istiod"
    }
    assert istiods == {"istiod-1-30-4": ("1.30.4", "1-30-4"), "istiod-1-31-0": ("1.31.0", "1-31-0")}


def test_one_base_chart_from_the_newest_release_validating_through_the_default_revision(
    fixture_render: Render,
) -> None:
    (base,) = [c for c in fixture_render.helm_charts() if published_chart(c) == "base"]
    assert base["version"] == "1.31.0", "CRDs come from the newest release"
    assert base["values"]["defaultRevision"] == "1-30-4", "the `default` tag's revision"


def test_the_fixture_passes_the_schemas_and_chart_defaults(fixture_render: Render) -> None:
    objects = fixture_render.kubernetes_objects()
    assert [e for obj in objects for e in validate_manifest(obj)] == []
    for chart in fixture_render.helm_charts():
        reference = CHART_REFERENCE_DIRS[published_chart(chart)]
        assert validate_helm_values(reference, chart["values"]) == [], chart["name"]


def test_the_1_31_istiod_keeps_unready_endpoints_away_from_proxies_as_1_30_does(
    fixture_render: Render,
) -> None:
    """1.31 would send not-ready pods' endpoints and zero Envoy's panic threshold wherever a
    DestinationRule sets no `minHealthPercent`; the opt-out keeps endpoints and thresholds as
    1.30 builds them, so outlier detection behaves the same on both revisions' proxies. The
    rendered istiod Deployment carries it (the chart passes `env` through to discovery)."""
    helm = charts.helm_binary()
    istiods = [c for c in fixture_render.helm_charts() if published_chart(c) == "istiod"]
    envs = {}
    for release in charts.expand(istiods, helm=helm):
        (deployment,) = [o for o in release.objects if o["kind"] == "Deployment"]
        (discovery,) = deployment["spec"]["template"]["spec"]["containers"]
        envs[release.release.version] = {e["name"]: e.get("value") for e in discovery["env"]}
    assert envs["1.31.0"]["PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS"] == "false"
    assert "PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS" not in envs["1.30.4"], "1.30 never sends them"
    for env in envs.values():
        assert "PILOT_SPAWN_UPSTREAM_SPAN_FOR_GATEWAY" not in env, "1.30's default = 1.31's"


def test_the_fixture_passes_the_policy_pack(fixture_render: Render) -> None:
    config = json.loads(
        (Path(__file__).resolve().parents[2] / "policy" / "config.json").read_text()
    )
    report = evaluate(fixture_render, config)
    assert (report.violations, report.unknown) == ([], [])


def test_the_stack_says_which_control_planes_run(fixture_render: Render) -> None:
    assert fixture_render.outputs["istioRevisions"] == {
        "1-30-4": {"version": "1.30.4", "tags": ["default", "stable"]},
        "1-31-0": {"version": "1.31.0", "tags": ["canary"]},
    }
    assert fixture_render.outputs["istioVersion"] == "1.30.4", "the default tag's"


def test_each_tag_is_one_webhook_calling_its_revision(fixture_render: Render) -> None:
    webhooks = {
        o["metadata"]["name"]: o
        for o in fixture_render.kubernetes_objects()
        if o["kind"] == "MutatingWebhookConfiguration"
    }
    assert set(webhooks) == {
        "istio-revision-tag-default",
        "istio-revision-tag-stable",
        "istio-revision-tag-canary",
    }
    canary = webhooks["istio-revision-tag-canary"]
    assert canary["metadata"]["labels"]["istio.io/rev"] == "1-31-0"
    assert {w["clientConfig"]["service"]["name"] for w in canary["webhooks"]} == {"istiod-1-31-0"}


def test_a_namespace_labelled_with_the_canary_tag_is_injected_by_the_1_31_0_istiod(
    fixture_render: Render,
) -> None:
    assert injectors(fixture_render, "shop") == ["1.31.0"]


def test_stable_and_untagged_namespaces_stay_on_1_30_4(fixture_render: Render) -> None:
    assert injectors(fixture_render, "payments") == ["1.30.4"]
    assert injectors(fixture_render, "batch") == ["1.30.4"], "untagged: the `default` tag"
    assert injectors(fixture_render, "observability") == ["1.30.4"]


def test_every_injected_namespace_has_exactly_one_injector_and_opting_out_still_works(
    fixture_render: Render,
) -> None:
    namespaces = [
        o["metadata"]["name"]
        for o in fixture_render.kubernetes_objects()
        if o["kind"] == "Namespace" and o["metadata"]["name"] != "istio-system"
    ]
    for namespace in namespaces:
        assert len(injectors(fixture_render, namespace)) == 1, namespace
        opted_out = injectors(fixture_render, namespace, {"sidecar.istio.io/inject": "false"})
        assert opted_out == [], namespace
    assert injectors(fixture_render, "istio-system") == [], "the control plane is not injected"


def test_gateways_follow_the_default_tag(fixture_render: Render) -> None:
    gateways = [c for c in fixture_render.helm_charts() if published_chart(c) == "gateway"]
    assert gateways
    for gateway in gateways:
        assert (gateway["version"], gateway["values"]["revision"]) == ("1.30.4", "1-30-4")
        # The gateway chart labels its pods so (templates/_helpers.tpl sidecarInjectionLabels).
        pod = {"sidecar.istio.io/inject": "true", "istio.io/rev": gateway["values"]["revision"]}
        assert injectors(fixture_render, gateway["namespace"], pod) == ["1.30.4"]


def test_tags_wait_for_their_istiod_and_the_mesh_waits_for_the_default_tag(
    fixture_render: Render,
) -> None:
    names = by_name(fixture_render)
    assert names[f"{MESH}-istiod-1-31-0"].urn in names[f"{MESH}-tag-canary"].dependencies
    assert names[f"{MESH}-istiod-1-30-4"].urn in names[f"{MESH}-tag-default"].dependencies
    default_tag = names[f"{MESH}-tag-default"].urn
    assert default_tag in names[f"{MESH}-ingress-gateway"].dependencies
    assert default_tag in names[f"{MESH}-cross-network-gateway"].dependencies


# --- the upgrade, step by step (docs/upgrades.md) -----------------------------------------

START: Final = {
    "istioRevisions": [{"name": "1-30-4", "version": "1.30.4", "tags": ["default", "stable"]}],
    "namespaceRevisions": {"shop": "stable", "payments": "stable"},
}
ADD_REVISION: Final = {
    "istioRevisions": [
        {"name": "1-30-4", "version": "1.30.4", "tags": ["default", "stable"]},
        {"name": "1-31-0", "version": "1.31.0", "tags": ["canary"]},
    ],
    "namespaceRevisions": {"shop": "stable", "payments": "stable"},
}
MOVE_NAMESPACE: Final = {
    **ADD_REVISION,
    "namespaceRevisions": {"shop": "canary", "payments": "stable"},
}
MOVE_DEFAULT: Final = {
    "istioRevisions": [
        {"name": "1-30-4", "version": "1.30.4", "tags": []},
        {"name": "1-31-0", "version": "1.31.0", "tags": ["default", "stable", "canary"]},
    ],
    "namespaceRevisions": {"shop": "canary", "payments": "stable"},
}
REMOVE_OLD: Final = {
    "istioRevisions": [
        {"name": "1-31-0", "version": "1.31.0", "tags": ["default", "stable", "canary"]}
    ],
    "namespaceRevisions": {"shop": "canary", "payments": "stable"},
}
STEPS: Final = (START, ADD_REVISION, MOVE_NAMESPACE, MOVE_DEFAULT, REMOVE_OLD)


def render_step(step: Mapping[str, Any]) -> Render:
    """The fixture stack with the revision keys of one upgrade step."""
    config, secrets = load_stack_config(STACK, stack_dir=FIXTURE.parent)
    config = copy.deepcopy(config)
    for key, value in step.items():
        config[f"meshstack:{key}"] = json.dumps(value)
    return run_program(STACK, config, secrets)


@pytest.fixture(scope="module")
def step_renders() -> list[Render]:
    return [render_step(step) for step in STEPS]


def test_the_fixture_is_the_move_namespace_step(fixture_render: Render) -> None:
    config, _ = load_stack_config(STACK, stack_dir=FIXTURE.parent)
    assert json.loads(config["meshstack:istioRevisions"]) == (MOVE_NAMESPACE["istioRevisions"])


def _urns(render: Render) -> set[str]:
    return {r.urn.rsplit("::", 1)[1] for r in render.registrations}


def test_adding_the_new_revision_only_adds_its_istiod_and_tag(step_renders: list[Render]) -> None:
    start, added = step_renders[0], step_renders[1]
    assert _urns(added) - _urns(start) == {f"{MESH}-istiod-1-31-0", f"{MESH}-tag-canary"}
    assert _urns(start) - _urns(added) == set(), "nothing is deleted"
    bases = [
        c["version"]
        for r in (start, added)
        for c in r.helm_charts()
        if published_chart(c) == "base"
    ]
    assert bases == ["1.30.4", "1.31.0"], "CRDs move to the newest release first"
    assert [injectors(added, ns) for ns in ("shop", "payments")] == [["1.30.4"], ["1.30.4"]]


def test_moving_a_namespace_tag_relabels_only_that_namespace(step_renders: list[Render]) -> None:
    before, after = step_renders[1], step_renders[2]
    assert _urns(before) == _urns(after)
    assert injectors(after, "shop") == ["1.31.0"]
    assert injectors(after, "payments") == injectors(before, "payments") == ["1.30.4"]


def test_moving_the_default_tag_updates_webhooks_in_place_and_rolls_the_gateways(
    step_renders: list[Render],
) -> None:
    before, after = step_renders[2], step_renders[3]
    assert _urns(before) == _urns(after), "tags move in place: no webhook is deleted"
    for namespace in ("shop", "payments", "batch"):
        assert injectors(after, namespace) == ["1.31.0"], namespace
    gateways = {c["name"]: c for c in after.helm_charts() if published_chart(c) == "gateway"}
    assert {(c["version"], c["values"]["revision"]) for c in gateways.values()} == {
        ("1.31.0", "1-31-0")
    }
    (base,) = [c for c in after.helm_charts() if published_chart(c) == "base"]
    assert base["values"]["defaultRevision"] == "1-31-0"


def test_removing_the_unused_old_revision_deletes_only_its_istiod(
    step_renders: list[Render],
) -> None:
    before, after = step_renders[3], step_renders[4]
    assert _urns(before) - _urns(after) == {f"{MESH}-istiod-1-30-4"}
    assert _urns(after) - _urns(before) == set()


def _revision_error(step: Mapping[str, Any]) -> str:
    return settings_error(
        region="fixture-1",
        services=[
            {"name": "storefront", "namespace": "shop"},
            {"name": "ledger", "namespace": "payments"},
        ],
        **step,
    )


def test_removing_1_30_4_while_namespace_shop_uses_it_is_refused() -> None:
    step = {**REMOVE_OLD, "namespaceRevisions": {"shop": "1-30-4"}}
    assert _revision_error(step) == (
        'meshstack:namespaceRevisions.shop = "1-30-4": is no revision or tag of '
        "istioRevisions; a revision namespace shop still uses cannot be removed: move the "
        "namespace and restart its workloads first (docs/upgrades.md)"
    )


def test_removing_1_30_4_while_a_namespace_uses_its_tag_is_refused() -> None:
    step = {
        "istioRevisions": [{"name": "1-31-0", "version": "1.31.0", "tags": ["default", "canary"]}],
        "namespaceRevisions": {"payments": "stable"},
    }
    assert _revision_error(step).startswith(
        'meshstack:namespaceRevisions.payments = "stable": is no revision or tag of istioRevisions'
    )


def test_removing_1_30_4_while_it_holds_the_default_tag_is_refused() -> None:
    step = {
        "istioRevisions": [{"name": "1-31-0", "version": "1.31.0", "tags": ["canary", "stable"]}],
        "namespaceRevisions": {"shop": "canary"},
    }
    assert _revision_error(step).startswith(
        'meshstack:istioRevisions = ["1-31-0"]: one revision must carry the tag `default`'
    )


# --- from the unrevisioned install (every stack without istioRevisions) -------------------

NO_REVISIONS: Final[dict[str, Any]] = {"istioRevisions": [], "namespaceRevisions": {}}
DECLARED: Final = {
    "istioRevisions": [{"name": "default", "version": "1.30.4", "tags": ["default"]}],
    "namespaceRevisions": {},
}
FROM_DEFAULT: Final = (
    {
        "istioRevisions": [{"name": "default", "version": "1.30.4", "tags": ["default"]}],
        "namespaceRevisions": {},
    },
    {
        "istioRevisions": [
            {"name": "default", "version": "1.30.4", "tags": ["default"]},
            {"name": "1-31-0", "version": "1.31.0", "tags": ["canary"]},
        ],
        "namespaceRevisions": {"shop": "canary"},
    },
    {
        "istioRevisions": [
            {"name": "default", "version": "1.30.4", "tags": []},
            {"name": "1-31-0", "version": "1.31.0", "tags": ["default", "canary"]},
        ],
        "namespaceRevisions": {"shop": "canary"},
    },
    {
        "istioRevisions": [{"name": "1-31-0", "version": "1.31.0", "tags": ["default", "canary"]}],
        "namespaceRevisions": {"shop": "canary"},
    },
)


def test_declaring_the_running_istiod_hands_its_injection_to_the_default_tag_webhook() -> None:
    """The one change of the declaration: the `default` tag becomes the program's webhook,
    calling the same istiod, and the chart's own injector goes; no istiod a pod gets changes,
    no other object or chart value does."""
    before, after = render_step(NO_REVISIONS), render_step(DECLARED)
    assert _urns(after) - _urns(before) == {f"{MESH}-tag-default"}
    assert _urns(before) - _urns(after) == set()
    (tag,) = [o for o in after.kubernetes_objects() if o["kind"] == "MutatingWebhookConfiguration"]
    assert {w["clientConfig"]["service"]["name"] for w in tag["webhooks"]} == {"istiod"}
    assert tag["metadata"]["labels"]["istio.io/rev"] == "default", "istiod patches its CA in"
    charts_before = {c["name"]: c for c in before.helm_charts()}
    for chart in after.helm_charts():
        expected = copy.deepcopy(charts_before[chart["name"]])
        if chart["name"] == "istiod":
            expected["values"]["global"]["operatorManageWebhooks"] = True
        assert chart == expected, chart["name"]
    others = [o for o in after.kubernetes_objects() if o["kind"] != "MutatingWebhookConfiguration"]
    assert others == before.kubernetes_objects()
    for namespace in ("shop", "payments", "batch"):
        assert injectors(after, namespace) == injectors(before, namespace) == ["1.30.4"]


def test_upgrading_from_the_unrevisioned_istiod_moves_the_default_tag_in_place() -> None:
    start, added, moved, removed = (render_step(step) for step in FROM_DEFAULT)
    assert _urns(added) - _urns(start) == {f"{MESH}-istiod-1-31-0", f"{MESH}-tag-canary"}
    assert injectors(added, "batch") == ["1.30.4"]
    assert injectors(added, "shop") == ["1.31.0"]
    # The `default` tag is the program's webhook from the declaration on: moving it is an
    # in-place update, no injector is created or deleted (tests/istio/test_upgrade_injection.py
    # walks the update's intermediate states).
    assert _urns(moved) == _urns(added)
    assert injectors(moved, "batch") == ["1.31.0"]
    for render in (start, added, moved):
        (old,) = [c for c in render.helm_charts() if c["name"] == "istiod"]
        assert old["values"]["global"]["operatorManageWebhooks"] is True
    reference = CHART_REFERENCE_DIRS[published_chart(old)]
    assert validate_helm_values(reference, old["values"]) == []
    assert _urns(moved) - _urns(removed) == {f"{MESH}-istiod"}


def test_the_refusals_quoted_in_the_upgrade_doc_are_what_the_settings_say() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "upgrades.md").read_text()
    quoted = re.findall(r"^\| [^|]+ \| `+ ?(meshstack:.*?) ?`+ \|$", doc, re.M)
    assert len(quoted) == 5
    new_only = [{"name": "1-31-0", "version": "1.31.0", "tags": ["default", "canary"]}]
    said = {
        _revision_error({**REMOVE_OLD, "namespaceRevisions": {"shop": "1-30-4"}}),
        _revision_error({"istioRevisions": new_only, "namespaceRevisions": {"payments": "stable"}}),
        _revision_error({"istioRevisions": [{**new_only[0], "tags": ["canary"]}]}),
        _revision_error(
            {
                "istioRevisions": [
                    {"name": "1-30-4", "version": "1.30.4", "tags": ["default"]},
                    {"name": "1-31-0", "version": "1.31.0", "tags": ["default"]},
                ]
            }
        ),
        _revision_error(
            {"istioRevisions": [{"name": "1-30-4", "version": "1.29.0", "tags": ["default"]}]}
        ),
    }
    for message in quoted:
        prefix = message.split("…")[0]
        assert any(s == message or ("…" in message and s.startswith(prefix)) for s in said), message
