"""Resolve a git ref to a commit of main's first-parent history, or refuse it.

`region.yml`'s first job (no environment, no secret) runs this on a full clone before any job
that holds credentials: the later jobs check out exactly the commit it prints, so a preview,
a deploy or a rollback only ever runs a commit that landed on `main` as a whole tree.

Why first-parent history and not `git merge-base --is-ancestor`: with merge commits, every
intermediate commit of every merged branch is an ancestor of main (work in progress that was
never reviewed or tested as a tree; the checks of `deploy.yml` ran on the merge commit only).
Main's first-parent history is exactly the commits main pointed at: each merge (or squash)
commit, each a reviewed tree.

Accepted: `main`, a branch or tag name whose commit is on main's first-parent line, a full or
abbreviated commit SHA of that line. Refused with one line: anything else, e.g. an unmerged
branch, a commit of a merged branch, `refs/pull/N/head`, a value starting with `-`.

Every name is resolved fully qualified, never by git's short-name rules, under which
`refs/tags/<x>` wins over `refs/remotes/<x>`: anyone who can push a tag named `origin/main`
would otherwise make `origin/main` mean their history. Main is `refs/remotes/origin/main`; the
input, if it is 7 to 40 hexadecimal digits, is first a commit SHA (`git rev-parse
--disambiguate`: objects only, never a ref; an ambiguous prefix is refused), else
`refs/remotes/origin/<ref>` (a branch), then `refs/tags/<ref>` (`refs/heads/<x>` and
`refs/tags/<x>` name only those).

    python3 tools/ci/main_commit.py REF [--main refs/remotes/origin/main] [--github-output FILE]

Standard library only: it runs before `make install`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Final


class RefError(ValueError):
    """The ref is not a commit of main's first-parent history; the message is one line."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=120
    )


MAIN: Final = "refs/remotes/origin/main"
"""Main's branch as actions/checkout (fetch-depth 0) leaves it in the clone, fully qualified."""
HEX: Final = re.compile(r"[0-9a-f]{7,40}")


def _commit(repo: Path, full_name: str) -> str | None:
    found = _git(repo, "rev-parse", "--verify", "-q", "--end-of-options", f"{full_name}^{{commit}}")
    return found.stdout.strip() if found.returncode == 0 else None


def commit_of(ref: str, repo: Path) -> str:
    """The full SHA `ref` names: a commit SHA (hexadecimal input), else a remote branch, then a
    tag; every name fully qualified (the module's docstring says why)."""
    if not ref or ref.startswith("-") or any(c.isspace() for c in ref) or "^" in ref:
        raise RefError(f"{ref!r} is not a git ref")
    if ref.startswith("refs/heads/"):
        names = [f"refs/remotes/origin/{ref.removeprefix('refs/heads/')}"]
    elif ref.startswith("refs/tags/"):
        names = [ref]
    elif ref.startswith("refs/"):
        names = []
    else:
        names = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"]
    if HEX.fullmatch(ref):
        listed = _git(repo, "rev-parse", f"--disambiguate={ref}").stdout.split()
        commits = [s for s in listed if _git(repo, "cat-file", "-t", s).stdout.strip() == "commit"]
        if len(commits) > 1:
            raise RefError(f"{ref} is an ambiguous commit prefix: give more of the SHA")
        if commits:
            return commits[0]
    for name in names:
        sha = _commit(repo, name)
        if sha:
            return sha
    raise RefError(f"{ref} names no commit in this clone (only main's history is deployed)")


def first_parent_commits(repo: Path, main: str = MAIN) -> set[str]:
    listed = _git(repo, "rev-list", "--first-parent", "--end-of-options", main)
    if listed.returncode != 0:
        raise RefError(f"cannot list {main}'s history: {listed.stderr.strip()}")
    return set(listed.stdout.split())


REQUIRED_PATHS = ("tools/ci/pulumi.sh", "tools/requirements/uv.txt")
"""What the jobs after `resolve` run from the checked-out commit: a commit older than them
cannot run through region.yml (docs/operations.md says how to deploy one by hand)."""


def main_commit(
    ref: str, repo: Path, main: str = MAIN, required: tuple[str, ...] = REQUIRED_PATHS
) -> str:
    """The SHA of `ref` if it is on `main`'s first-parent line and holds `required`; else
    RefError."""
    sha = commit_of(ref, repo)
    if sha not in first_parent_commits(repo, main):
        raise RefError(
            f"{ref} ({sha}) is not a commit of {main}'s first-parent history: only commits "
            "main pointed at are previewed or deployed"
        )
    missing = [p for p in required if _git(repo, "cat-file", "-e", f"{sha}:{p}").returncode]
    if missing:
        raise RefError(
            f"{ref} ({sha}) predates {', '.join(missing)}, which the jobs run: deploy it by hand "
            "(docs/operations.md, roll back a region)"
        )
    return sha


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("ref")
    parser.add_argument("--main", default=MAIN, help="main's fully qualified ref in this clone")
    parser.add_argument("--repo", type=Path, default=Path())
    parser.add_argument(
        "--github-output",
        type=Path,
        default=Path(os.environ["GITHUB_OUTPUT"]) if os.environ.get("GITHUB_OUTPUT") else None,
        help="append sha=<commit> here (default: $GITHUB_OUTPUT when set)",
    )
    args = parser.parse_args(argv)
    try:
        sha = main_commit(args.ref, args.repo, args.main)
    except RefError as error:
        print(f"::error::{error}")
        return 1
    print(f"{args.ref} is {sha}, a commit of {args.main}'s first-parent history")
    if args.github_output is not None:
        with args.github_output.open("a") as out:
            out.write(f"sha={sha}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
