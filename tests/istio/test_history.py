"""The last deployment's control planes, and the refusal to replace one by accident.

A stack file that renames the running istiod, or moves its tags and removes it in one edit,
is consistent settings: only the last deployment shows that the update would delete the
istiod every sidecar and gateway is connected to. The program reads its own last outputs
before registering anything (`__main__.py`); offline, from `offline/stack-references.yaml`
when it has the stack. Stack files and outputs here are fixtures, never production stacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from components.istio.history import (
    DeployedRevision,
    deployed_revisions,
    replacement_error,
    revision_changes,
)
from tests.conftest import make_settings
from tools import render
from tools.render import control_plane_summary

STACK: Final = "fixture-upgrade"
UNREVISIONED_1_30_3: Final = {"istioVersion": "1.30.3", "region": "fixture-9"}
"""A deployment from before `istioRevisions` was exported: the unrevisioned istiod."""


def _istio(revisions: list[dict[str, Any]]) -> Any:
    return make_settings(istioRevisions=revisions).istio


def test_a_deployment_before_the_output_existed_ran_the_unrevisioned_istiod() -> None:
    assert deployed_revisions(UNREVISIONED_1_30_3) == {
        "default": DeployedRevision("default", "1.30.3", ("default",))
    }
    assert deployed_revisions({}) is None, "no deployment yet"
    recorded = {"istioRevisions": {"1-30-4": {"version": "1.30.4", "tags": ["default"]}}}
    assert deployed_revisions(recorded) == {
        "1-30-4": DeployedRevision("1-30-4", "1.30.4", ("default",))
    }


def test_renaming_the_running_istiod_is_refused_in_one_line() -> None:
    renamed = _istio([{"name": "1-30-4", "version": "1.30.4", "tags": ["default"]}])
    assert replacement_error(deployed_revisions(UNREVISIONED_1_30_3), renamed) == (
        "meshstack:istioRevisions = [1-30-4]: removes revision default (Istio 1.30.3), which "
        "the last deployment runs with tags [default]: every sidecar and gateway it injected "
        "would lose its control plane. Keep it as {name: default, version: 1.30.3, tags: "
        "[default]}, move its tags to another revision in one `pulumi up` and remove it in a "
        "later one (docs/upgrades.md)"
    )


def test_moving_the_tags_and_removing_the_revision_in_one_edit_is_refused() -> None:
    deployed = {
        "default": DeployedRevision("default", "1.30.4", ("default",)),
        "1-31-0": DeployedRevision("1-31-0", "1.31.0", ("canary",)),
    }
    both_steps = _istio([{"name": "1-31-0", "version": "1.31.0", "tags": ["default", "canary"]}])
    error = replacement_error(deployed, both_steps)
    assert error is not None and "removes revision default (Istio 1.30.4)" in error


def test_the_documented_steps_are_accepted() -> None:
    unrevisioned = deployed_revisions(UNREVISIONED_1_30_3)
    declared = _istio([{"name": "default", "version": "1.30.4", "tags": ["default"]}])
    assert replacement_error(unrevisioned, declared) is None, "declaring, and 1.30.3 -> 1.30.4"
    assert replacement_error(unrevisioned, make_settings().istio) is None, "in place"
    moved_before = {
        "default": DeployedRevision("default", "1.30.4", ()),
        "1-31-0": DeployedRevision("1-31-0", "1.31.0", ("default", "canary")),
    }
    removed = _istio([{"name": "1-31-0", "version": "1.31.0", "tags": ["default", "canary"]}])
    assert replacement_error(moved_before, removed) is None, "step 5: its tags moved before"
    assert revision_changes(moved_before, {"1-31-0": None}) == ([], ["default"])
    assert replacement_error(None, removed) is None, "a first deployment"


# --- through the program, offline ---------------------------------------------------------


def _project(tmp_path: Path, revisions: str, last_outputs: dict[str, Any] | None) -> Path:
    (tmp_path / f"Pulumi.{STACK}.yaml").write_text(
        "config:\n"
        "  pulumi:disable-default-providers: [kubernetes]\n"
        "  meshstack:region: fixture-9\n"
        f"  meshstack:istioRevisions: {revisions}\n"
    )
    if last_outputs is not None:
        (tmp_path / "offline").mkdir()
        (tmp_path / "offline" / "stack-references.yaml").write_text(
            yaml.safe_dump({STACK: last_outputs})
        )
    return tmp_path


def test_the_program_refuses_before_registering_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = _project(
        tmp_path, "[{name: 1-30-4, version: 1.30.4, tags: [default]}]", UNREVISIONED_1_30_3
    )
    out = tmp_path / "out"
    assert render.main([STACK, "--stack-dir", str(project), "--no-charts", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"render {STACK}: invalid stack settings: meshstack:istioRevisions = [1-30-4]: "
        "removes revision default (Istio 1.30.3)"
    )
    assert err.count("\n") == 1, "one line"
    assert not out.exists(), "nothing is written"


def test_the_render_says_what_the_update_adds_and_removes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = _project(
        tmp_path,
        "[{name: default, version: 1.30.4, tags: [default]},"
        " {name: 1-31-0, version: 1.31.0, tags: [canary]}]",
        UNREVISIONED_1_30_3,
    )
    out = tmp_path / "out"
    assert render.main([STACK, "--stack-dir", str(project), "--no-charts", "--out", str(out)]) == 0
    assert (
        "istiod revisions: 1-31-0 1.31.0 [canary], default 1.30.4 [default]; against the last "
        "deployment: adds 1-31-0, removes none"
    ) in capsys.readouterr().out


def test_without_a_last_deployment_the_summary_says_so() -> None:
    outputs = {"istioRevisions": {"default": {"version": "1.30.4", "tags": ["default"]}}}
    assert control_plane_summary(outputs, None) == (
        "istiod revisions: default 1.30.4 [default] (no last deployment offline)"
    )
