"""What the last deployment ran, and the refusal to replace a control plane by accident.

The settings rules (`components.istio.rules`) see the stack file only. One mistake they
cannot see: declaring the running istiod under another name (`name: 1-30-4` where the
cluster runs the unrevisioned istiod, `default`) is consistent settings, and `pulumi up`
would install a second istiod and delete the running one (18 objects deleted, 19 created)
while every sidecar and gateway is still connected to it: no configuration, no
certificate rotation after 24 h. Likewise moving the tags and removing the old revision in
one edit (docs/upgrades.md, steps 4 and 5).

Every run exports `istioRevisions` (revision → version and tags; `default` is the
unrevisioned istiod). The next run reads its own last outputs before registering anything
(`__main__.py`, through the engine's stack-reference builtin) and `replacement_error`
refuses to remove a revision that served a tag in that deployment: its tags must move to
another revision in an earlier `pulumi up`. A deployment from before this output existed
ran the one unrevisioned istiod of its `istioVersion`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from components.istio.settings import DEFAULT_TAG, UNREVISIONED_NAME, IstioSettings

REVISIONS_OUTPUT: Final = "istioRevisions"
VERSION_OUTPUT: Final = "istioVersion"


@dataclass(frozen=True)
class DeployedRevision:
    """An istiod revision as a deployment's `istioRevisions` output records it."""

    name: str
    """`default` for the unrevisioned istiod."""
    version: str
    tags: tuple[str, ...]


def deployed_revisions(outputs: Mapping[str, Any]) -> dict[str, DeployedRevision] | None:
    """The revisions the deployment with these stack outputs ran; None before the first
    deployment (no outputs) or when the outputs say nothing about Istio."""
    recorded = outputs.get(REVISIONS_OUTPUT)
    if isinstance(recorded, Mapping):
        return {
            str(name): DeployedRevision(
                str(name),
                str(entry.get("version", "")),
                tuple(str(t) for t in entry.get("tags") or ()),
            )
            for name, entry in recorded.items()
            if isinstance(entry, Mapping)
        }
    version = outputs.get(VERSION_OUTPUT)
    if isinstance(version, str) and version:
        return {UNREVISIONED_NAME: DeployedRevision(UNREVISIONED_NAME, version, (DEFAULT_TAG,))}
    return None


def _planned(settings: IstioSettings) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {r.name or UNREVISIONED_NAME: (r.version, r.tags) for r in settings.revisions}


def revision_changes(
    deployed: Mapping[str, object], planned: Mapping[str, object]
) -> tuple[list[str], list[str]]:
    """(added, removed) revision names between two name-keyed revision maps: the last
    deployment's and what the run installs (its settings, or its `istioRevisions` output)."""
    return sorted(set(planned) - set(deployed)), sorted(set(deployed) - set(planned))


def _flow(tags: tuple[str, ...]) -> str:
    return "[" + ", ".join(tags) + "]"


def replacement_error(
    deployed: Mapping[str, DeployedRevision] | None, settings: IstioSettings
) -> str | None:
    """One line refusing these settings if they remove a revision that served a tag in the
    last deployment (None: nothing to refuse, or no deployment yet)."""
    if not deployed:
        return None
    planned = _planned(settings)
    for name in sorted(set(deployed) - set(planned)):
        gone = deployed[name]
        if not gone.tags:
            continue  # its tags moved away in an earlier update: removing it is step 5
        keep = f"{{name: {name}, version: {gone.version}, tags: {_flow(gone.tags)}}}"
        return (
            f"meshstack:istioRevisions = [{', '.join(planned)}]: removes revision {name} "
            f"(Istio {gone.version}), which the last deployment runs with tags "
            f"{_flow(gone.tags)}: every sidecar and gateway it injected would lose its "
            f"control plane. Keep it as {keep}, move its tags to another revision in one "
            "`pulumi up` and remove it in a later one (docs/upgrades.md)"
        )
    return None
