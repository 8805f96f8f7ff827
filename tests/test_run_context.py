"""The run context: organization, project and runbook base URL, resolved where the program runs.

Each source of the runbook base has its test: the GitHub Actions run, the checkout's git
remote, the fixed offline value, and the stack setting that overrides them all (the last
two through `__main__.py` itself).
"""

from __future__ import annotations

import runpy
import subprocess
from pathlib import Path

import pytest

from components.run_context import (
    OFFLINE_RUNBOOK_BASE_URL,
    RunContext,
    RunContextError,
    git_checkout,
    repository_https_url,
    runbook_base_url,
    runbook_base_url_from_git,
    runbook_base_url_from_github_actions,
)
from tests.conftest import FIXTURE_DIR
from tools.render import (
    PROJECT_DIR,
    Render,
    load_stack_config,
    load_stack_references,
    render_stack,
    run_program,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
ACTIONS = {
    "GITHUB_SERVER_URL": "https://github.example.com",
    "GITHUB_REPOSITORY": "platform/meshstack",
    "GITHUB_SHA": SHA,
}
ACTIONS_RUNBOOKS = f"https://github.example.com/platform/meshstack/blob/{SHA}/docs/alerts.md"


def test_stack_reference_names_are_of_the_runs_organization_and_project() -> None:
    context = RunContext(organization="acme", project="meshstack", runbook_base_url="https://x")
    assert context.stack_reference_name("us-east-1") == "acme/meshstack/us-east-1"


def test_a_github_actions_run_links_the_runbooks_of_the_deployed_commit() -> None:
    assert runbook_base_url_from_github_actions(ACTIONS) == ACTIONS_RUNBOOKS
    # region.yml rolling back: the checked-out commit, not the one the workflow ran from.
    earlier = "a" * 40
    assert runbook_base_url_from_github_actions(ACTIONS, earlier) == (
        f"https://github.example.com/platform/meshstack/blob/{earlier}/docs/alerts.md"
    )


@pytest.mark.parametrize("missing", sorted(ACTIONS))
def test_outside_github_actions_there_is_no_ci_runbook_url(missing: str) -> None:
    env = {k: v for k, v in ACTIONS.items() if k != missing}
    assert runbook_base_url_from_github_actions(env) is None


@pytest.mark.parametrize(
    ("remote", "repository"),
    [
        ("https://github.com/acme/meshstack.git", "https://github.com/acme/meshstack"),
        ("https://github.com/acme/meshstack", "https://github.com/acme/meshstack"),
        (
            "https://user:ghp_secret@github.com/acme/meshstack.git",
            "https://github.com/acme/meshstack",
        ),
        ("git@github.com:acme/meshstack.git", "https://github.com/acme/meshstack"),
        (
            "ssh://git@git.acme.io:2222/platform/meshstack.git",
            "https://git.acme.io/platform/meshstack",
        ),
        ("/srv/checkouts/meshstack", None),
        ("../meshstack", None),
        ("http://github.com/acme/meshstack.git", None),
        ("https://github.com/", None),
        ("file:///srv/git/meshstack.git", None),
    ],
)
def test_github_like_remotes_give_the_repository_page(remote: str, repository: str | None) -> None:
    assert repository_https_url(remote) == repository


def test_a_checkout_links_the_runbooks_of_its_head() -> None:
    assert runbook_base_url_from_git("git@github.com:acme/meshstack.git", SHA) == (
        f"https://github.com/acme/meshstack/blob/{SHA}/docs/alerts.md"
    )
    assert runbook_base_url_from_git("/srv/meshstack", SHA) is None


def _git(directory: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(directory), *args], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_git_checkout_reads_origin_and_head(tmp_path: Path) -> None:
    assert git_checkout(tmp_path) == (None, None), "not a checkout"
    _git(tmp_path, "init", "-q")
    _git(
        tmp_path,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_checkout(tmp_path) == (None, head), "a checkout without origin"
    _git(tmp_path, "remote", "add", "origin", "git@github.com:acme/meshstack.git")
    assert git_checkout(tmp_path) == ("git@github.com:acme/meshstack.git", head)


def test_the_ci_run_names_the_repository_and_the_checkout_the_commit() -> None:
    checkout = ("git@github.com:someone/fork.git", SHA)
    assert runbook_base_url(ACTIONS, checkout) == ACTIONS_RUNBOOKS
    assert runbook_base_url(ACTIONS, (None, None)) == ACTIONS_RUNBOOKS
    assert runbook_base_url({}, checkout) == (
        f"https://github.com/someone/fork/blob/{SHA}/docs/alerts.md"
    )


def test_a_deploy_with_no_source_for_runbooks_is_one_line_naming_the_setting() -> None:
    with pytest.raises(RunContextError) as caught:
        runbook_base_url({}, ("/srv/meshstack", SHA))
    assert str(caught.value) == (
        "meshstack:alerts.runbookBaseUrl is not set and cannot be derived (not a GitHub "
        "Actions run, no GitHub-like `origin` remote): set it in the stack file"
    )
    with pytest.raises(RunContextError):
        runbook_base_url({}, (None, None))


# --- through __main__.py ------------------------------------------------------------------


def _runbook_urls(render: Render) -> set[str]:
    rule = next(o for o in render.kubernetes_objects() if o["kind"] == "PrometheusRule")
    return {
        r["annotations"]["runbook_url"].split("#")[0] for r in rule["spec"]["groups"][0]["rules"]
    }


def _deploy_run(stack: str, stack_dir: Path) -> Render:
    """`__main__.py` as a real run executes it: not marked offline (the mock runtime stays)."""
    config, secret_keys = load_stack_config(stack, stack_dir=stack_dir)

    def program() -> None:
        runpy.run_path(str(PROJECT_DIR / "__main__.py"), run_name="__main__")

    return run_program(
        stack,
        config,
        secret_keys,
        program=program,
        stack_references=load_stack_references(stack_dir=stack_dir),
    )


def test_a_deploy_from_ci_links_the_deployed_commits_runbooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in ACTIONS.items():
        monkeypatch.setenv(key, value)
    # The deployed commit: this checkout's HEAD (GITHUB_SHA only where git cannot tell).
    commit = git_checkout(PROJECT_DIR)[1] or SHA
    assert _runbook_urls(_deploy_run("fixture-spoke", FIXTURE_DIR)) == {
        f"https://github.example.com/platform/meshstack/blob/{commit}/docs/alerts.md"
    }


def test_the_stack_setting_overrides_ci_and_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ACTIONS.items():
        monkeypatch.setenv(key, value)
    setting = "https://wiki.example.org/mesh/runbooks"
    assert _runbook_urls(_deploy_run("fixture-hub", FIXTURE_DIR)) == {setting}
    assert _runbook_urls(render_stack("fixture-hub", stack_dir=FIXTURE_DIR)) == {setting}


def test_an_offline_render_links_the_fixed_stand_in_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in ACTIONS.items():
        monkeypatch.setenv(key, value)
    assert _runbook_urls(render_stack("fixture-spoke", stack_dir=FIXTURE_DIR)) == {
        OFFLINE_RUNBOOK_BASE_URL
    }


def test_the_same_spoke_stack_file_references_the_hub_of_any_organization() -> None:
    hub = load_stack_references(stack_dir=FIXTURE_DIR)["organization/meshstack/fixture-hub"]
    for organization in ("organization", "acme"):
        render = render_stack(
            "fixture-spoke",
            stack_dir=FIXTURE_DIR,
            organization=organization,
            stack_references={f"{organization}/meshstack/fixture-hub": hub},
        )
        reference = next(
            r for r in render.registrations if r.type == "pulumi:pulumi:StackReference"
        )
        assert reference.inputs["name"] == f"{organization}/meshstack/fixture-hub"
