"""The workflows' per-stack parts are generated from the stack files, and region.yml previews
or deploys one region at a commit of main (the rollback path): a dispatch of any other ref
reaches no job that can obtain a credential.

Schema validity, SHA pins, least privilege and the credential invariants of every workflow,
region.yml included, are tests/test_workflows.py's (parametrized over every file in
.github/workflows/).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.test_workflows import obtains_credentials, pulumi_step
from tools.ci import main_commit, no_other_run
from tools.render import PROJECT_DIR
from tools.stacks import StackFileError, deploy_order
from tools.workflows import BEGIN, END, splice, stale_files

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
RESOLVED_SHA = "${{ needs.resolve.outputs.sha }}"


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


def _needs(job: dict[str, Any]) -> set[str]:
    needs = job.get("needs", [])
    return {needs} if isinstance(needs, str) else set(needs)


def jobs_reached_when_failing(jobs: dict[str, Any], failed: str) -> set[str]:
    """The jobs GitHub still runs when `failed` fails: a job whose `needs` (transitively)
    include a failed or skipped job is skipped, unless its `if:` asks for it with a status
    function (always(), failure(), cancelled(), !cancelled())."""
    status_functions = re.compile(r"\b(always|failure|cancelled)\(\)")
    not_run = {failed}
    changed = True
    while changed:
        changed = False
        for name, job in jobs.items():
            if name in not_run:
                continue
            runs_anyway = bool(status_functions.search(str(job.get("if", ""))))
            if _needs(job) & not_run and not runs_anyway:
                not_run.add(name)
                changed = True
    return set(jobs) - not_run


def test_committed_workflows_are_what_the_stack_files_generate() -> None:
    stale = [path.name for path in stale_files()]
    assert stale == [], f"{', '.join(stale)} differ from the stack files: run `make workflows`"


def test_splice_replaces_only_the_blocks_and_keeps_their_indentation() -> None:
    text = f"a:\n  b:\n    {BEGIN}\n    old: 1\n    {END}\n  c: 2\n  {BEGIN}\n  {END}\n"
    assert splice(text, ["x: [1]\ny: 2\n", "d: 3\n"], name="t.yml") == (
        f"a:\n  b:\n    {BEGIN}\n    x: [1]\n    y: 2\n    {END}\n  c: 2\n  {BEGIN}\n  d: 3\n"
        f"  {END}\n"
    )
    with pytest.raises(StackFileError, match="expected 1"):
        splice(text, ["x: 1\n"], name="t.yml")
    with pytest.raises(StackFileError, match="expected 2"):
        splice(f"{END}\n{BEGIN}\n{BEGIN}\n{END}\n", ["a\n", "b\n"], name="t.yml")


def test_region_is_started_by_hand_with_stack_operation_and_ref(region: dict[str, Any]) -> None:
    assert set(region["on"]) == {"workflow_dispatch"}
    inputs = region["on"]["workflow_dispatch"]["inputs"]
    assert inputs["stack"]["type"] == "choice"
    assert inputs["stack"]["options"] == list(deploy_order())
    assert inputs["operation"] == {**inputs["operation"], "type": "choice", "default": "preview"}
    assert inputs["operation"]["options"] == ["preview", "up", "recover"]
    assert inputs["ref"]["type"] == "string"
    assert inputs["ref"]["default"] == "main"
    assert all(i["required"] is True for i in inputs.values())


def test_region_resolves_the_ref_in_a_job_without_credentials(region: dict[str, Any]) -> None:
    resolve = region["jobs"]["resolve"]
    assert not obtains_credentials(resolve)
    assert "environment" not in resolve
    assert resolve["permissions"] == {"contents": "read"}
    assert _step(resolve, "actions/checkout@")["with"]["fetch-depth"] == 0, "main's history"
    (check,) = [s for s in resolve["steps"] if "main_commit.py" in s.get("run", "")]
    assert check["run"] == 'python3 tools/ci/main_commit.py "$REF"'
    assert check["env"] == {"REF": "${{ inputs.ref }}"}
    assert resolve["outputs"] == {"sha": f"${{{{ steps.{check['id']}.outputs.sha }}}}"}


def test_a_dispatch_of_a_non_main_ref_reaches_no_job_with_credentials(
    region: dict[str, Any],
) -> None:
    """`resolve` fails for any ref that is not a commit of main's first-parent history (the
    tests below); every job that can obtain a credential needs it, and no status function
    makes one run after it failed. So such a dispatch ends at `resolve`."""
    jobs = region["jobs"]
    credential_jobs = {name for name, job in jobs.items() if obtains_credentials(job)}
    assert credential_jobs == {"preview", "up", "recover"}
    assert jobs_reached_when_failing(jobs, "resolve") == set()
    for name in credential_jobs:
        job = jobs[name]
        assert "resolve" in _needs(job)
        checkout = _step(job, "actions/checkout@")
        assert checkout["with"]["ref"] == RESOLVED_SHA, f"{name} runs exactly the checked commit"
        assert RESOLVED_SHA in job["name"], "approvers see the commit"
        assert pulumi_step(job)["env"]["STACK"] == "${{ inputs.stack }}"


def test_the_job_graph_reasoning_sees_status_functions() -> None:
    jobs = {
        "resolve": {},
        "a": {"needs": "resolve"},
        "b": {"needs": ["a"]},
        "c": {"needs": "resolve", "if": "${{ always() }}"},
        "d": {"needs": "c"},
        "e": {},
    }
    assert jobs_reached_when_failing(jobs, "resolve") == {"c", "d", "e"}


def test_region_ups_only_after_the_preview_of_the_same_commit(region: dict[str, Any]) -> None:
    jobs = region["jobs"]
    preview, up = jobs["preview"], jobs["up"]
    assert preview["environment"] == "preview-main"
    assert pulumi_step(preview)["env"]["OPERATION"] == "preview"
    assert preview["if"] == "inputs.operation != 'recover'", "preview and up preview first"
    assert _needs(up) == {"resolve", "preview"}
    assert up["if"] == "inputs.operation == 'up'"
    assert up["environment"] == "${{ inputs.stack }}"
    assert pulumi_step(up)["env"]["OPERATION"] == "up"


def test_region_recovers_behind_the_region_s_approval_when_no_other_run_is_active(
    region: dict[str, Any],
) -> None:
    """docs/operations.md, "Interrupted deploy": the recovery runs in the region's environment
    (its approvers, main only), at the resolved commit, after a check with the job's own token
    that no other deploy run is in progress or waiting, and before any Pulumi credential."""
    recover = region["jobs"]["recover"]
    assert recover["if"] == "inputs.operation == 'recover'"
    assert recover["environment"] == "${{ inputs.stack }}"
    assert _needs(recover) == {"resolve"}
    assert recover["permissions"] == {
        "contents": "read",
        "actions": "read",
        "id-token": "write",
    }
    env = pulumi_step(recover)["env"]
    assert (env["OPERATION"], env["CREDENTIALS"]) == ("recover", "deploy-${{ inputs.stack }}")
    names = [s.get("run") or s.get("uses", "") for s in recover["steps"]]
    check = names.index("python3 tools/ci/no_other_run.py")
    auth = next(i for i, n in enumerate(names) if n.startswith("pulumi/auth-actions@"))
    assert check < auth
    assert recover["steps"][check]["env"] == {"GITHUB_TOKEN": "${{ github.token }}"}
    script = (PROJECT_DIR / "tools" / "ci" / "pulumi.sh").read_text()
    assert "python -m tools.recover_stack" in script and "--cancel" in script


def _runs(*runs: tuple[int, str]) -> dict[str, Any]:
    return {"workflow_runs": [{"id": i, "status": s, "html_url": f"u/{i}"} for i, s in runs]}


def test_no_other_run_sees_every_unfinished_state() -> None:
    asked: list[str] = []

    def fetch(path: str) -> dict[str, Any]:
        asked.append(path)
        status = path.split("status=")[1].split("&", maxsplit=1)[0]
        if "deploy.yml" in path and status == "waiting":
            return _runs((11, "waiting"))
        if "region.yml" in path and status == "in_progress":
            return _runs((99, "in_progress"))  # this run
        if "region.yml" in path and status == "requested":
            return _runs((12, "requested"))
        return _runs()

    lines = no_other_run.other_runs(fetch, "o/r", 99)
    assert lines == ["deploy.yml run 11 is waiting: u/11", "region.yml run 12 is requested: u/12"]
    statuses = {p.split("status=")[1].split("&")[0] for p in asked}
    assert statuses == {"in_progress", "queued", "pending", "waiting", "requested"}
    assert no_other_run.other_runs(lambda _: _runs((99, "in_progress")), "o/r", 99) == []


def test_region_never_overlaps_a_deploy(region: dict[str, Any]) -> None:
    assert region["concurrency"] == _load("deploy.yml")["concurrency"]
    assert region["concurrency"]["queue"] == "max"


# --- tools/ci/main_commit.py against a scratch repository ------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _commit(repo: Path, name: str) -> str:
    (repo / f"{name}.txt").write_text(name)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", name)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """origin: main with an old commit (before the CI scripts), a tagged commit, a --no-ff merge
    of a branch with a work-in-progress commit, and an unmerged branch; a clone of it, as
    actions/checkout with fetch-depth 0 leaves it (remote branches, tags)."""
    origin = tmp_path_factory.mktemp("origin")
    _git(origin, "init", "-q", "-b", "main")
    shas = {"ancient": _commit(origin, "ancient")}
    for path in main_commit.REQUIRED_PATHS:
        (origin / path).parent.mkdir(parents=True, exist_ok=True)
        (origin / path).write_text("# the jobs run this\n")
    shas["old"] = _commit(origin, "old")
    _git(origin, "tag", "v1")
    _git(origin, "checkout", "-q", "-b", "feature")
    shas["wip"] = _commit(origin, "wip")
    _git(origin, "checkout", "-q", "main")
    _commit(origin, "main-only")
    _git(origin, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    shas["merge"] = _git(origin, "rev-parse", "HEAD")
    _git(origin, "checkout", "-q", "-b", "unmerged")
    shas["unmerged"] = _commit(origin, "unmerged")
    _git(origin, "checkout", "-q", "main")
    _git(origin, "update-ref", "refs/pull/1/head", shas["unmerged"])
    clone = tmp_path_factory.mktemp("clone") / "repo"
    _git(origin.parent, "clone", "-q", str(origin), str(clone))
    return {"repo": clone, **shas}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("main", "merge"), ("v1", "old"), ("refs/tags/v1", "old"), ("OLD", "old"), ("OLD7", "old")],
)
def test_main_commits_are_resolved(history: dict[str, Any], ref: str, expected: str) -> None:
    ref = {"OLD": history["old"], "OLD7": history["old"][:7]}.get(ref, ref)
    assert main_commit.main_commit(ref, history["repo"]) == history[expected]


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("unmerged", "not a commit of refs/remotes/origin/main's first-parent history"),
        ("UNMERGED", "not a commit of refs/remotes/origin/main's first-parent history"),
        ("WIP", "not a commit of refs/remotes/origin/main's first-parent history"),
        ("feature", "not a commit of refs/remotes/origin/main's first-parent history"),
        ("refs/pull/1/head", "names no commit"),
        ("--upload-pack=x", "is not a git ref"),
        ("main main", "is not a git ref"),
        ("main^", "is not a git ref"),
        ("refs/remotes/origin/main", "names no commit"),
        ("", "is not a git ref"),
        ("ANCIENT", "predates tools/ci/pulumi.sh, tools/requirements/uv.txt"),
    ],
)
def test_other_refs_are_refused(history: dict[str, Any], ref: str, reason: str) -> None:
    """An unmerged branch or commit, a commit of a merged branch that main never pointed at
    (`merge-base --is-ancestor` would accept it), a pull request's head, an option, and a main
    commit older than the scripts the jobs run."""
    ref = {"UNMERGED": history["unmerged"], "WIP": history["wip"]}.get(ref, ref)
    ref = {"ANCIENT": history["ancient"]}.get(ref, ref)
    with pytest.raises(main_commit.RefError, match=re.escape(reason)):
        main_commit.main_commit(ref, history["repo"])
    ancestor = subprocess.run(
        ["git", "merge-base", "--is-ancestor", history["wip"], "origin/main"],
        cwd=history["repo"],
        check=False,
    )
    assert ancestor.returncode == 0, "the WIP commit is an ancestor, yet refused"


@pytest.fixture
def shadowed(tmp_path: Path) -> dict[str, Any]:
    """origin: main, and an attacker's history pushed as a tag and as a branch, both named
    `origin/main`, and as a tag named like a main commit's short SHA; a clone with every branch
    and tag, as actions/checkout with fetch-depth 0 leaves it."""
    origin = tmp_path / "origin"
    origin.mkdir()
    _git(origin, "init", "-q", "-b", "main")
    for path in main_commit.REQUIRED_PATHS:
        (origin / path).parent.mkdir(parents=True, exist_ok=True)
        (origin / path).write_text("# the jobs run this\n")
    shas = {"main": _commit(origin, "reviewed")}
    _git(origin, "checkout", "-q", "-b", "evil")
    shas["evil"] = _commit(origin, "evil")
    _git(origin, "tag", "origin/main")
    _git(origin, "tag", shas["main"][:7])
    _git(origin, "branch", "origin/main")
    _git(origin, "checkout", "-q", "main")
    _git(origin, "branch", "-D", "evil")
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(origin), str(clone))
    _git(clone, "fetch", "-q", "--tags", "origin")
    return {"repo": clone, **shas}


def test_a_tag_or_branch_named_origin_main_does_not_become_main(
    shadowed: dict[str, Any],
) -> None:
    repo = shadowed["repo"]
    # The attack: git's short-name rules put refs/tags/origin/main before
    # refs/remotes/origin/main, so "origin/main" is the attacker's history.
    assert _git(repo, "rev-parse", "origin/main") == shadowed["evil"]
    assert main_commit.first_parent_commits(repo) == {shadowed["main"]}
    assert main_commit.main_commit("main", repo) == shadowed["main"]
    assert main_commit.main_commit(shadowed["main"], repo) == shadowed["main"]
    assert main_commit.main_commit(shadowed["main"][:7], repo) == shadowed["main"]
    for ref in ("origin/main", "refs/tags/origin/main", shadowed["evil"]):
        with pytest.raises(main_commit.RefError, match="not a commit of refs/remotes/origin/m"):
            main_commit.main_commit(ref, repo)


def test_a_sha_is_looked_up_among_objects_only(shadowed: dict[str, Any]) -> None:
    """A tag named like main's short SHA points at the attacker's commit, and git's short-name
    rules prefer it; a hexadecimal input is a commit SHA first (`rev-parse --disambiguate`
    finds objects, never refs)."""
    repo, short = shadowed["repo"], shadowed["main"][:7]
    assert _git(repo, "rev-parse", short) == shadowed["evil"]
    assert main_commit.commit_of(short, repo) == shadowed["main"]
    assert main_commit.commit_of(f"refs/tags/{short}", repo) == shadowed["evil"]


def test_the_resolved_commit_is_written_for_the_later_jobs(
    history: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "github_output"
    argv = ["main", "--repo", str(history["repo"]), "--github-output", str(output)]
    assert main_commit.main(argv) == 0
    assert output.read_text() == f"sha={history['merge']}\n"
    argv = ["unmerged", "--repo", str(history["repo"]), "--github-output", str(output)]
    assert main_commit.main(argv) == 1
    assert output.read_text() == f"sha={history['merge']}\n", "nothing written on refusal"
    assert capsys.readouterr().out.splitlines()[-1].startswith("::error::unmerged (")


# --- the runbook --------------------------------------------------------------------------------


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
    for command in ("make workflows", "make render-all", "make test"):
        assert command in section, command
    for credential in ("meshstack-deploy-us-west-2", "meshstack/deploy-us-west-2", "sub"):
        assert credential in section, credential
    assert "policy.md#repository-settings" in section


def test_generated_markers_are_in_every_generated_workflow() -> None:
    for name, count in (("pull-request.yml", 1), ("deploy.yml", 1), ("region.yml", 2)):
        lines = [line.strip() for line in (WORKFLOWS / name).read_text().splitlines()]
        assert lines.count(BEGIN) == count and lines.count(END) == count, name
