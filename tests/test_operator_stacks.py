"""Stacks are discovered from the `Pulumi.<stack>.yaml` files: a new stack file is a new region
for the Makefile, the tests, `make bench` and the workflows, with no list edited by hand."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from tests.conftest import STACKS
from tools import workflows
from tools.render import PROJECT_DIR, render_stack
from tools.stacks import deploy_order, stack_names

NEW_STACK = next(f"new-region-{n}" for n in range(1, 100) if f"new-region-{n}" not in STACKS)
"""A region no stack file has yet, as an operator adding one would name it."""

HUB: dict[str, object] = {"meshstack:region": "hub-1", "meshstack:observability": {"role": "hub"}}
SPOKE: dict[str, object] = {
    "meshstack:region": "spoke-1",
    "meshstack:observability": {"role": "spoke", "hubStack": "hub-1"},
}


def _write_stack(project: Path, stack: str, config: Mapping[str, object]) -> None:
    (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))


@pytest.fixture
def fixture_project(tmp_path: Path) -> Path:
    """Two spokes and a hub whose names sort the other way round, and one stack that sets
    no observability role (the model's default, hub)."""
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    _write_stack(tmp_path, "zz-hub", HUB)
    _write_stack(tmp_path, "b-spoke", SPOKE)
    _write_stack(tmp_path, "a-spoke", SPOKE)
    _write_stack(tmp_path, "m-default", {"meshstack:region": "m"})
    (tmp_path / "settings.yaml").write_text("not: a stack\n")
    return tmp_path


def test_every_stack_file_is_a_stack_and_nothing_else(fixture_project: Path) -> None:
    assert stack_names(fixture_project) == ("a-spoke", "b-spoke", "m-default", "zz-hub")


def test_deploy_order_is_hubs_first_then_spokes(fixture_project: Path) -> None:
    assert deploy_order(fixture_project) == ("m-default", "zz-hub", "a-spoke", "b-spoke")


def test_the_tests_cover_every_stack_file_hub_first() -> None:
    assert set(STACKS) == {
        p.name[len("Pulumi.") : -len(".yaml")] for p in PROJECT_DIR.glob("Pulumi.*.yaml")
    }
    assert deploy_order() == STACKS


def test_makefile_stacks_are_the_stack_files(fixture_project: Path) -> None:
    shutil.copy(PROJECT_DIR / "Makefile", fixture_project / "Makefile")
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "--eval",
            "print-stacks: ; @echo $(STACKS)",
            "print-stacks",
        ],
        cwd=fixture_project,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == list(stack_names(fixture_project))


@pytest.fixture(scope="module")
def repo_with_new_region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with `Pulumi.<NEW_STACK>.yaml` copied from a spoke, as an operator
    adding a region starts."""
    copy = tmp_path_factory.mktemp("repo") / "meshstack"
    shutil.copytree(
        PROJECT_DIR,
        copy,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", ".*_cache", ".cache", ".hypothesis"
        ),
    )
    spoke = next(
        s
        for s in deploy_order()
        if s != deploy_order()[0] and "spoke" in (copy / f"Pulumi.{s}.yaml").read_text()
    )
    text = (copy / f"Pulumi.{spoke}.yaml").read_text()
    (copy / f"Pulumi.{NEW_STACK}.yaml").write_text(text.replace(spoke, NEW_STACK))
    return copy


def test_a_new_stack_file_is_discovered_as_a_spoke(repo_with_new_region: Path) -> None:
    order = deploy_order(repo_with_new_region)
    assert NEW_STACK in order
    assert order[0] == deploy_order()[0], "the hub still deploys first"
    assert set(order) == {*STACKS, NEW_STACK}


def test_a_new_stack_file_makes_the_workflows_stale_until_regenerated(
    repo_with_new_region: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = ["--project-dir", str(repo_with_new_region)]
    assert workflows.main(["--check", *project]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f".github/workflows/{name} differs from the stack files: run `make workflows`"
        for name in ("pull-request.yml", "deploy.yml", "region.yml")
    ]
    assert workflows.main(["--write", *project]) == 0
    assert workflows.main(["--check", *project]) == 0
    generated = repo_with_new_region / ".github" / "workflows"
    deploy = yaml.safe_load((generated / "deploy.yml").read_text())
    order = deploy_order(repo_with_new_region)
    assert deploy["jobs"][NEW_STACK]["environment"] == NEW_STACK
    assert deploy["jobs"][NEW_STACK]["needs"] == f"preview-{NEW_STACK}"
    assert deploy["jobs"][f"preview-{NEW_STACK}"]["needs"] == order[0], "after the hub only"
    preview = yaml.safe_load((generated / "pull-request.yml").read_text())
    assert preview["jobs"]["preview"]["strategy"]["matrix"]["stack"] == list(order)
    region = yaml.safe_load((generated / "region.yml").read_text())
    assert region[True]["workflow_dispatch"]["inputs"]["stack"]["options"] == list(order)


def test_a_new_stack_file_renders(repo_with_new_region: Path) -> None:
    render = render_stack(NEW_STACK, repo_with_new_region)
    assert render.outputs["region"] == NEW_STACK
    assert render.kubernetes_objects()
