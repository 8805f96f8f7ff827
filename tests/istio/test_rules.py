"""Settings rules of the control-plane revisions (components/istio/rules.py)."""

from __future__ import annotations

from typing import Any

from tests.conftest import make_settings, settings_error

OLD = {"name": "1-30-4", "version": "1.30.4", "tags": ["default"]}
NEW = {"name": "1-31-0", "version": "1.31.0", "tags": ["canary"]}
SERVICES = [{"name": "storefront", "namespace": "shop"}]


def error(**config: Any) -> str:
    return settings_error(services=SERVICES, **config)


def test_two_revisions_with_a_default_tag_are_valid() -> None:
    settings = make_settings(
        services=SERVICES, istioRevisions=[OLD, NEW], namespaceRevisions={"shop": "canary"}
    )
    assert [r.name for r in settings.istio.revisions] == ["1-30-4", "1-31-0"]
    assert settings.istio.default_revision.name == "1-30-4"
    assert settings.istio.namespace_revisions == {"shop": "canary"}


def test_a_namespace_may_select_a_revision_directly() -> None:
    settings = make_settings(
        services=SERVICES, istioRevisions=[OLD, NEW], namespaceRevisions={"shop": "1-31-0"}
    )
    assert settings.istio.namespace_revisions == {"shop": "1-31-0"}


def test_revision_version_must_be_pinned() -> None:
    assert error(istioRevisions=[{**OLD, "version": "1.29.0"}]) == (
        'meshstack:istioRevisions[0].version = "1.29.0": must be a pinned Istio release '
        "(1.31.0, 1.30.4; components/versions.py)"
    )


def test_revision_names_are_unique() -> None:
    assert error(istioRevisions=[OLD, {**NEW, "name": "1-30-4"}]).startswith(
        'meshstack:istioRevisions[1].name = "1-30-4": must be unique'
    )


def test_a_tag_points_at_one_revision() -> None:
    assert error(istioRevisions=[OLD, {**NEW, "tags": ["default"]}]) == (
        'meshstack:istioRevisions[1].tags[0] = "default": already points at revision 1-30-4; '
        "a tag has one revision"
    )


def test_a_tag_is_never_a_revision_name() -> None:
    assert error(istioRevisions=[OLD, {**NEW, "tags": ["1-30-4"]}]).startswith(
        'meshstack:istioRevisions[1].tags[0] = "1-30-4": must not be the name of a revision'
    )


def test_one_revision_carries_the_default_tag() -> None:
    assert error(istioRevisions=[{**OLD, "tags": []}, NEW]).startswith(
        'meshstack:istioRevisions = ["1-30-4", "1-31-0"]: one revision must carry the tag `default`'
    )


def test_namespace_selection_needs_revisions_and_a_workload_namespace() -> None:
    assert error(namespaceRevisions={"shop": "canary"}).startswith(
        'meshstack:namespaceRevisions = {"shop": "canary"}: needs istioRevisions'
    )
    assert error(istioRevisions=[OLD, NEW], namespaceRevisions={"bank": "canary"}) == (
        'meshstack:namespaceRevisions.bank = "canary": is not a workload namespace of this region'
    )


def test_revision_names_are_short_dns_labels() -> None:
    assert error(istioRevisions=[{**OLD, "name": "1.30.4"}]).startswith(
        'meshstack:istioRevisions[0].name = "1.30.4": must be a Kubernetes name'
    )
