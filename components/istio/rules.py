"""Cross-field rules of the control-plane revisions, as plain functions over what they read.

`StackSettings` calls them with `istioRevisions`, `namespaceRevisions` and the region's
workload namespaces. They guard the canary upgrade of docs/upgrades.md: every tag points at
one revision, untagged namespaces and gateways have a `default` revision, and a revision
(or the tag of a revision) that a namespace or the default still uses cannot disappear
from the settings, because the sidecars running there are connected to it. Each raises
`RuleViolationError` naming the key; the first broken rule is the one reported.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from components.istio.settings import DEFAULT_TAG, IstioRevisionSettings
from components.settings_types import RuleViolationError
from components.versions import ISTIO_VERSIONS

UPGRADES_DOC = "docs/upgrades.md"


def check_istio_revisions(revisions: Sequence[IstioRevisionSettings]) -> None:
    """Revisions are unique and pinned; each tag names one revision, never a revision
    name; when revisions are declared, exactly one carries the `default` tag."""
    names: set[str] = set()
    for index, revision in enumerate(revisions):
        if revision.name in names:
            raise RuleViolationError(
                ("istioRevisions", index, "name"), revision.name, "must be unique; it is repeated"
            )
        names.add(revision.name)
        if revision.version not in ISTIO_VERSIONS:
            raise RuleViolationError(
                ("istioRevisions", index, "version"),
                revision.version,
                f"must be a pinned Istio release ({', '.join(ISTIO_VERSIONS)}; "
                "components/versions.py)",
            )
    owners: dict[str, str] = {}
    for index, revision in enumerate(revisions):
        for tag_index, tag in enumerate(revision.tags):
            path = ("istioRevisions", index, "tags", tag_index)
            if tag in names and tag != DEFAULT_TAG:
                # `istio.io/rev=<tag>` would then select two webhooks and inject twice. The
                # revision `default` (unrevisioned istiod) is the exception: its own webhooks
                # are the `default` tag's while it holds it, and are dropped when it does not.
                raise RuleViolationError(path, tag, "must not be the name of a revision")
            if tag in owners:
                raise RuleViolationError(
                    path, tag, f"already points at revision {owners[tag]}; a tag has one revision"
                )
            owners[tag] = revision.name
    if revisions and DEFAULT_TAG not in owners:
        raise RuleViolationError(
            ("istioRevisions",),
            [r.name for r in revisions],
            f"one revision must carry the tag `{DEFAULT_TAG}` (where untagged namespaces and "
            f"the gateways go); a revision holding it cannot be removed, move it first "
            f"({UPGRADES_DOC})",
        )


def check_namespace_revisions(
    namespace_revisions: Mapping[str, str],
    revisions: Sequence[IstioRevisionSettings],
    namespaces: Collection[str],
) -> None:
    """Each selection is a workload namespace of the region and names a declared tag or
    revision: removing a revision that a namespace still uses is refused."""
    if namespace_revisions and not revisions:
        raise RuleViolationError(
            ("namespaceRevisions",),
            dict(namespace_revisions),
            f"needs istioRevisions: namespaces select one of its tags or revisions "
            f"({UPGRADES_DOC})",
        )
    targets = {r.name for r in revisions} | {t for r in revisions for t in r.tags}
    for namespace, target in namespace_revisions.items():
        path = ("namespaceRevisions", namespace)
        if namespace not in namespaces:
            raise RuleViolationError(path, target, "is not a workload namespace of this region")
        if target not in targets:
            raise RuleViolationError(
                path,
                target,
                f"is no revision or tag of istioRevisions; a revision namespace {namespace} "
                f"still uses cannot be removed: move the namespace and restart its workloads "
                f"first ({UPGRADES_DOC})",
            )
