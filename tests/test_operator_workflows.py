"""The workflows' per-stack parts are generated from the stack files, and region.yml previews
or deploys one region at a chosen ref (the rollback path).

Schema validity, SHA pins and least privilege of every workflow, region.yml included, are
tests/test_workflows.py's (parametrized over every file in .github/workflows/).
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
from ruamel.yaml import YAML

from tools.render import PROJECT_DIR
from tools.stacks import deploy_order
from tools.workflows import BEGIN, END, splice, stale_files

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load((WORKFLOWS / name).read_text())
    return loaded


@pytest.fixture(scope="module")
def region() -> dict[str, Any]:
    return _load("region.yml")


def _step(job: dict[str, Any], uses: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = job["steps"]
    (step,) = [s for s in steps if str(s.get("uses", "")).startswith(uses)]
    return step


def test_committed_workflows_are_what_the_stack_files_generate() -> None:
    stale = [path.name for path in stale_files()]
    assert stale == [], f"{', '.join(stale)} differ from the stack files: run `make workflows`"


def test_splice_replaces_only_the_block_and_keeps_its_indentation() -> None:
    text = f"a:\n  b:\n    {BEGIN}\n    old: 1\n    {END}\n  c: 2\n"
    assert splice(text, "x: [1]\ny: 2\n", name="t.yml") == (
        f"a:\n  b:\n    {BEGIN}\n    x: [1]\n    y: 2\n    {END}\n  c: 2\n"
    )


def test_region_is_started_by_hand_with_stack_operation_and_ref(region: dict[str, Any]) -> None:
    assert set(region["on"]) == {"workflow_dispatch"}
    inputs = region["on"]["workflow_dispatch"]["inputs"]
    assert inputs["stack"]["type"] == "choice"
    assert inputs["stack"]["options"] == list(deploy_order())
    assert inputs["operation"] == {**inputs["operation"], "type": "choice", "default": "preview"}
    assert inputs["operation"]["options"] == ["preview", "up"]
    assert inputs["ref"]["type"] == "string"
    assert inputs["ref"]["default"] == "main"
    assert all(i["required"] is True for i in inputs.values())


def test_region_runs_the_chosen_operation_on_the_chosen_stack_behind_its_environment(
    region: dict[str, Any],
) -> None:
    (job,) = region["jobs"].values()
    assert job["environment"] == "${{ inputs.stack }}"
    checkout = _step(job, "actions/checkout@")
    assert checkout["with"]["ref"] == "${{ inputs.ref }}"
    pulumi = _step(job, "pulumi/actions@")
    assert pulumi["with"]["command"] == "${{ inputs.operation }}"
    assert pulumi["with"]["stack-name"] == "${{ vars.PULUMI_ORG }}/meshstack/${{ inputs.stack }}"
    assert pulumi["with"]["policyPacks"] == "policy"
    assert pulumi["with"]["policyPackConfigs"] == "policy/config.json"
    lock = tomllib.loads((PROJECT_DIR / "uv.lock").read_text())
    sdk = next(p["version"] for p in lock["package"] if p["name"] == "pulumi")
    assert pulumi["with"]["pulumi-version"] == sdk
    assert pulumi["env"] == {"PULUMI_ACCESS_TOKEN": "${{ secrets.PULUMI_ACCESS_TOKEN }}"}
    assert "make install" in [s.get("run") for s in job["steps"]], "the pack runs in .venv"


def test_region_deploys_only_commits_of_main_and_never_interpolates_the_ref(
    region: dict[str, Any],
) -> None:
    (job,) = region["jobs"].values()
    assert _step(job, "actions/checkout@")["with"]["fetch-depth"] == 0, "main's history"
    names = [s.get("name", s.get("uses", "")) for s in job["steps"]]
    guard_index = next(i for i, s in enumerate(job["steps"]) if "merge-base" in s.get("run", ""))
    guard = job["steps"][guard_index]
    assert guard["if"] == "inputs.operation == 'up'"
    assert "git merge-base --is-ancestor" in guard["run"]
    assert "origin/main" in guard["run"]
    assert guard_index < next(i for i, n in enumerate(names) if n.startswith("pulumi/actions@"))
    for step in job["steps"]:
        # An expression inside a script is code injection; inputs reach scripts via env.
        assert "${{" not in step.get("run", ""), step.get("name")


def test_region_never_overlaps_a_deploy(region: dict[str, Any]) -> None:
    assert region["concurrency"] == _load("deploy.yml")["concurrency"]


def test_runbook_documents_every_input_and_readme_links_it() -> None:
    operations = (PROJECT_DIR / "docs" / "operations.md").read_text()
    assert "region.yml" in operations
    for word in ("stack", "operation", "ref", "preview", "up"):
        assert re.search(rf"`{word}`", operations), word
    readme = (PROJECT_DIR / "README.md").read_text()
    assert "docs/operations.md" in readme


def test_docs_link_targets_exist() -> None:
    text = (PROJECT_DIR / "docs" / "operations.md").read_text()
    for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", text):
        assert (PROJECT_DIR / "docs" / target).resolve().is_file(), target


def test_adding_a_region_covers_its_prerequisites() -> None:
    text = (PROJECT_DIR / "docs" / "operations.md").read_text()
    section = text.split("## Adding a region", 1)[1].split("\n## ", 1)[0]
    for needed in ("cacerts", "remote secret", "kiali.io/multiCluster", "environment"):
        assert needed in section, needed
    for command in ("make workflows", "make render-all", "make test", "PULUMI_ACCESS_TOKEN"):
        assert command in section, command


def test_generated_markers_are_in_every_generated_workflow() -> None:
    for name in ("pull-request.yml", "deploy.yml", "region.yml"):
        lines = [line.strip() for line in (WORKFLOWS / name).read_text().splitlines()]
        assert lines.count(BEGIN) == 1 and lines.count(END) == 1, name
