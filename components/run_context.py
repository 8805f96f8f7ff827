"""What a run learns from where it runs, not from the stack file.

The same stack file deploys from any Pulumi organization and from any fork of this
repository; `__main__.py` (the edge) resolves the rest here and hands it to RegionMesh as a
`RunContext`:

- the Pulumi organization and project, which qualify stack names: a spoke's
  `observability.hubStack` is the hub's stack name (`us-east-1`), referenced as
  `<organization>/<project>/us-east-1` of the run itself;
- the default of `alerts.runbookBaseUrl`: the runbooks (docs/alerts.md) of the deployed
  commit (the checkout's HEAD; `GITHUB_SHA` if git cannot tell), in the repository of the
  GitHub Actions run (`GITHUB_SERVER_URL`, `GITHUB_REPOSITORY`), else of the checkout's
  GitHub-like `origin` remote. A value in the stack file overrides both.

Offline renders (tools/render.py) use `OFFLINE_ORGANIZATION` and `OFFLINE_RUNBOOK_BASE_URL`,
so a render does not depend on the machine, the CI run or the checkout.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

OFFLINE_ORGANIZATION: Final = "organization"
"""The organization of offline renders; also the one Pulumi's self-managed (DIY) backends
report, where stacks are `organization/<project>/<stack>`."""

RUNBOOK_DOC: Final = "docs/alerts.md"
"""The runbooks, relative to the repository root; each alert's section is its lowercase name."""

OFFLINE_RUNBOOK_BASE_URL: Final = f"https://github.com/meshstack/meshstack/blob/main/{RUNBOOK_DOC}"
"""The runbook base of offline renders: a fixed stand-in, so renders stay deterministic. A
deploy never uses it (see `runbook_base_url`)."""

GIT_TIMEOUT_SECONDS: Final = 10

# scp-like `git@host:owner/repo.git` and `ssh://[user@]host[:port]/owner/repo.git`.
_SCP_REMOTE: Final = re.compile(r"^[\w.-]+@(?P<host>[\w.-]+):(?P<path>[^/].*)$")
_URL_REMOTE: Final = re.compile(
    r"^(?P<scheme>https|ssh)://(?:[^@/]+@)?(?P<host>[\w.-]+)(?::\d+)?/(?P<path>.+)$"
)
_REPO_PATH: Final = re.compile(r"^[\w.-]+(?:/[\w.-]+)+$")
_SHA: Final = re.compile(r"^[0-9a-f]{7,64}$")


class RunContextError(Exception):
    """The run context cannot be resolved; the message is one line for the user."""


@dataclass(frozen=True)
class RunContext:
    """The organization and project of this run, and the default runbook base URL."""

    organization: str
    project: str
    runbook_base_url: str

    def stack_reference_name(self, stack: str) -> str:
        """`stack` of this organization and project, as `pulumi.StackReference` names it."""
        return f"{self.organization}/{self.project}/{stack}"


def runbook_url_for(repository_url: str, commit: str) -> str:
    """The runbooks of `commit` in the repository at `repository_url` (a permalink)."""
    return f"{repository_url.rstrip('/')}/blob/{commit}/{RUNBOOK_DOC}"


def runbook_base_url_from_github_actions(
    env: Mapping[str, str], head: str | None = None
) -> str | None:
    """The deployed commit's runbooks in a GitHub Actions run; None outside one.

    The deployed commit is the checkout's HEAD when known: region.yml checks out a chosen
    ref (a rollback deploys an earlier commit), while `GITHUB_SHA` is the commit the
    workflow was started from.
    """
    server = env.get("GITHUB_SERVER_URL", "")
    repository = env.get("GITHUB_REPOSITORY", "")
    commit = head or env.get("GITHUB_SHA", "")
    if not (server.startswith("https://") and repository and _SHA.match(commit)):
        return None
    return runbook_url_for(f"{server}/{repository}", commit)


def repository_https_url(remote: str) -> str | None:
    """`https://<host>/<owner>/<repo>` of a GitHub-like https or ssh git remote, else None.

    Credentials in an https remote (`https://user:token@host/…`) are dropped: the URL ends
    up in alert annotations.
    """
    remote = remote.strip()
    match = _URL_REMOTE.match(remote) or _SCP_REMOTE.match(remote)
    if match is None:
        return None
    path = match["path"].strip("/").removesuffix(".git")
    if not _REPO_PATH.match(path):
        return None
    return f"https://{match['host']}/{path}"


def runbook_base_url_from_git(remote: str, commit: str) -> str | None:
    """The runbooks of `commit` at the checkout's remote; None if it is not GitHub-like."""
    repository = repository_https_url(remote)
    if repository is None or not _SHA.match(commit):
        return None
    return runbook_url_for(repository, commit)


def _git(directory: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_checkout(directory: Path) -> tuple[str | None, str | None]:
    """(`origin`'s URL, HEAD's commit) of the git checkout at `directory`; None for each
    that git cannot tell (not a checkout, no `origin`, git missing)."""
    return _git(directory, "remote", "get-url", "origin"), _git(directory, "rev-parse", "HEAD")


def runbook_base_url(env: Mapping[str, str], checkout: tuple[str | None, str | None]) -> str:
    """The default runbook base of a deploy: the deployed commit in the CI run's repository,
    else in the repository of the checkout's `origin`.

    Raises RunContextError when neither is known: a deploy must not page people with
    links that lead nowhere, so the stack file has to say where its runbooks are.
    """
    remote, head = checkout
    url = runbook_base_url_from_github_actions(env, head) or (
        runbook_base_url_from_git(remote, head) if remote and head else None
    )
    if url is None:
        raise RunContextError(
            "meshstack:alerts.runbookBaseUrl is not set and cannot be derived (not a GitHub "
            "Actions run, no GitHub-like `origin` remote): set it in the stack file"
        )
    return url
