"""actionlint and zizmor over `.github/workflows/`, both pinned (`make lint-workflows`, part of
`make check`).

- **actionlint** is built like Helm (`tools/install_helm.py`): `tools/actionlint/go.mod` pins
  `github.com/rhysd/actionlint` with a `tool` directive and `tools/actionlint/go.sum` holds the
  checksums of every module it is built from; `go build -mod=readonly -trimpath` (niced) from
  the Go module proxy into `.tools/actionlint-<version>/actionlint`. The binary must report the
  pinned version and carry the pinned module with its `go.sum` hash in its build information;
  its SHA-256 is recorded beside it, and a binary already there is only re-verified. actionlint
  runs shellcheck on every `run:` script, so shellcheck must be installed (`.ci/run` installs
  Debian's `shellcheck`); a missing shellcheck stops the check instead of skipping it.
- **zizmor** (PyPI) is installed from `tools/requirements/zizmor.txt`, every wheel of the
  release pinned by SHA-256, with `uv pip install --require-hashes` into
  `.tools/zizmor-<version>/` (its own virtualenv, not the project's `.venv`).

Then `actionlint` (configuration: `.github/actionlint.yaml`) and `zizmor --offline --persona
auditor .github/workflows` must both report nothing. Each finding zizmor may not report is
either fixed or suppressed in the workflow with a comment saying why, and listed in
docs/policy.md ("Audits of the workflows").

    python -m tools.lint_workflows            # build/verify both, run both
    python -m tools.lint_workflows --print    # the two binaries' paths
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from tools.install_helm import go_sum_hash, sha256_file

PROJECT_DIR: Final = Path(__file__).resolve().parents[1]
ACTIONLINT_DIR: Final = PROJECT_DIR / "tools" / "actionlint"
ACTIONLINT_MODULE: Final = "github.com/rhysd/actionlint"
ZIZMOR_REQUIREMENTS: Final = PROJECT_DIR / "tools" / "requirements" / "zizmor.txt"
WORKFLOWS: Final = Path(".github") / "workflows"
ZIZMOR_ARGS: Final = ("--offline", "--persona", "auditor")
"""`--offline`: the audits that need the GitHub API (impostor commits, known-vulnerable actions,
ref/version mismatches) cannot run here; docs/policy.md says how the pins were checked."""


class LintToolError(RuntimeError):
    """A linter cannot be built, installed or verified; the message is one line."""


def pinned_module_version(module_dir: Path = ACTIONLINT_DIR) -> str:
    """The actionlint version `tools/actionlint/go.mod` requires, e.g. `v1.7.12`."""
    text = (module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*{re.escape(ACTIONLINT_MODULE)} (v\S+)", text, re.MULTILINE)
    if match is None:
        raise LintToolError(f"tools/actionlint/go.mod does not require {ACTIONLINT_MODULE}")
    return match.group(1)


def pinned_module_hash(module_dir: Path = ACTIONLINT_DIR) -> str:
    """The `go.sum` hash (`h1:…`) of the pinned actionlint module's source."""
    version = pinned_module_version(module_dir)
    found = go_sum_hash(module_dir, ACTIONLINT_MODULE, version)
    if found is None:
        raise LintToolError(
            f"tools/actionlint/go.sum has no hash for {ACTIONLINT_MODULE} {version}"
        )
    return found


def pinned_zizmor_version(requirements: Path = ZIZMOR_REQUIREMENTS) -> str:
    """The zizmor version `tools/requirements/zizmor.txt` pins (its one `zizmor==` line)."""
    found = re.findall(r"^zizmor==(\S+)", requirements.read_text(), re.MULTILINE)
    if len(found) != 1:
        raise LintToolError(f"{requirements.name}: expected one `zizmor==<version>` line")
    return str(found[0])


def actionlint_path(project_dir: Path = PROJECT_DIR) -> Path:
    return project_dir / ".tools" / f"actionlint-{pinned_module_version()}" / "actionlint"


def zizmor_path(project_dir: Path = PROJECT_DIR) -> Path:
    return project_dir / ".tools" / f"zizmor-{pinned_zizmor_version()}" / "bin" / "zizmor"


def _output(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except OSError as error:
        raise LintToolError(f"{argv[0]}: cannot run: {error.strerror}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise LintToolError(f"{' '.join(argv[:2])} failed: {last}")
    return result.stdout


def check_actionlint(binary: Path, module_dir: Path = ACTIONLINT_DIR) -> None:
    """Raise unless `binary` is the pinned actionlint: its reported version and its build
    information (module version and `go.sum` hash)."""
    version = pinned_module_version(module_dir)
    reported = _output([str(binary), "-version"]).splitlines()[:1]
    if reported != [version]:
        raise LintToolError(f"{binary} reports {reported or '?'}, the check needs {version}")
    built = f"{ACTIONLINT_MODULE}\t{version}\t{pinned_module_hash(module_dir)}"
    if built not in _output(["go", "version", "-m", str(binary)]):
        raise LintToolError(f"{binary} was not built from {built.replace(chr(9), ' ')}")


def ensure_actionlint(target: Path | None = None, module_dir: Path = ACTIONLINT_DIR) -> Path:
    """The pinned actionlint: re-verified if present (SHA-256 and version), built otherwise."""
    target = target or actionlint_path()
    recorded = target.with_name("actionlint.sha256")
    if target.is_file():
        if not recorded.is_file() or sha256_file(target) != recorded.read_text().split()[0]:
            raise LintToolError(f"{target}: SHA-256 differs from the one recorded at build time")
        check_actionlint(target, module_dir)
        return target
    if shutil.which("go") is None:
        raise LintToolError("building the pinned actionlint needs Go (https://go.dev/dl/)")
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / "actionlint"
        command = [
            "go",
            "build",
            "-trimpath",
            "-o",
            str(built),
            f"{ACTIONLINT_MODULE}/cmd/actionlint",
        ]
        if shutil.which("nice"):
            command = ["nice", "-n", "10", *command]
        result = subprocess.run(
            command, cwd=module_dir, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise LintToolError(f"go build of {ACTIONLINT_MODULE} failed: {last}")
        check_actionlint(built, module_dir)
        recorded.write_text(f"{sha256_file(built)}  actionlint\n")
        built.replace(target)
    return target


def ensure_zizmor(target: Path | None = None) -> Path:
    """The pinned zizmor, installed with every wheel's SHA-256 checked."""
    target = target or zizmor_path()
    version = pinned_zizmor_version()
    if not target.is_file():
        venv = target.parent.parent
        uv = shutil.which("uv")
        base = [uv] if uv else [sys.executable, "-m", "uv"]
        _output([*base, "venv", "--quiet", "--python", sys.executable, str(venv)])
        _output(
            [
                *base,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(venv / "bin" / "python"),
                "--require-hashes",
                "--no-deps",
                "-r",
                str(ZIZMOR_REQUIREMENTS),
            ]
        )
    reported = _output([str(target), "--version"]).split()
    if reported[-1:] != [version]:
        raise LintToolError(f"{target} reports {' '.join(reported)}, the check needs {version}")
    return target


def run_linters(actionlint: Path, zizmor: Path, project_dir: Path = PROJECT_DIR) -> int:
    """Run both over the workflows; return how many of them reported something."""
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        raise LintToolError(
            "actionlint checks every run: script with shellcheck, which is not installed "
            "(Debian/Ubuntu: apt-get install shellcheck)"
        )
    failed = 0
    commands = (
        [str(actionlint), "-no-color", f"-shellcheck={shellcheck}", "-pyflakes="],
        [str(zizmor), *ZIZMOR_ARGS, str(WORKFLOWS)],
    )
    for command in commands:
        result = subprocess.run(command, cwd=project_dir, check=False)
        name = Path(command[0]).name
        if result.returncode != 0:
            failed += 1
            print(f"lint_workflows: {name} reported findings (exit {result.returncode})")
        else:
            print(f"lint_workflows: {name}: no findings")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--print", action="store_true", help="print the two binaries' paths")
    args = parser.parse_args(argv)
    try:
        actionlint, zizmor = ensure_actionlint(), ensure_zizmor()
        if args.print:
            print(actionlint, zizmor, sep="\n")
            return 0
        return 1 if run_linters(actionlint, zizmor) else 0
    except (LintToolError, OSError) as error:
        print(f"lint_workflows: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
