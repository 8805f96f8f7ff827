"""Build the pinned Helm 3 binary into `.tools/helm-<version>/helm` (no root, no download
of a prebuilt binary).

Why Helm 3 and which version: the program deploys charts with pulumi-kubernetes Chart v4,
which renders them in the provider with the Helm v3 SDK (`helm.sh/helm/v3` in the
provider's `go.mod`: v3.20.2 since April 2026, after 4.32.0; the module proxy does not
serve provider v4.34.x, so 4.34.2's own `go.mod` could not be read). Rendering with the
provider's Helm keeps the offline render equal to what `pulumi up` applies: template
functions, `--include-crds`, hook handling and the default capabilities are Helm's.

How it is pinned: `tools/helm/go.mod` requires `helm.sh/helm/v3` at that version (a `tool`
directive) and `tools/helm/go.sum` holds the checksums of every module it builds from; `go`
verifies each downloaded module against `go.sum` (and the checksum database), and
`-mod=readonly` refuses to build from anything not listed. The binary is built with
`CGO_ENABLED=0 -trimpath` (a static, path-independent build) under `nice`, then checked:
it must report the pinned version, and its embedded build information must name the
pinned module with the `go.sum` hash. A binary already in place is reused only if it
still passes those checks and matches the SHA-256 recorded when it was built.

`python -m tools.install_helm` prints the binary's path; `--check` only verifies.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

PROJECT_DIR: Final = Path(__file__).resolve().parents[1]
MODULE_DIR: Final = PROJECT_DIR / "tools" / "helm"
HELM_MODULE: Final = "helm.sh/helm/v3"
ENV_VAR: Final = "MESHSTACK_HELM"
"""A Helm binary to use instead of the project-local one (it must be the pinned version)."""


class HelmInstallError(RuntimeError):
    """The pinned Helm cannot be built or the binary in place is not the pinned one."""


def _require(go_mod: str, module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", go_mod, re.MULTILINE)
    if match is None:
        raise HelmInstallError(f"tools/helm/go.mod does not require {module}")
    return match.group(1)


def pinned_version(module_dir: Path = MODULE_DIR) -> str:
    """The Helm version `tools/helm/go.mod` pins, e.g. `v3.20.2`."""
    return _require((module_dir / "go.mod").read_text(), HELM_MODULE)


def go_sum_hash(module_dir: Path, module: str, version: str) -> str | None:
    """The `go.sum` hash (`h1:…`) of `module` at `version`'s source in a tools module."""
    for line in (module_dir / "go.sum").read_text().splitlines():
        parts = line.split()
        if parts[:2] == [module, version]:
            return parts[2]
    return None


def pinned_hash(module_dir: Path = MODULE_DIR) -> str:
    """The `go.sum` hash (`h1:…`) of the pinned Helm module's source."""
    version = pinned_version(module_dir)
    found = go_sum_hash(module_dir, HELM_MODULE, version)
    if found is None:
        raise HelmInstallError(f"tools/helm/go.sum has no hash for {HELM_MODULE} {version}")
    return found


def binary_path(project_dir: Path = PROJECT_DIR) -> Path:
    """Where the pinned binary lives: `.tools/helm-<version>/helm` (gitignored)."""
    return project_dir / ".tools" / f"helm-{pinned_version()}" / "helm"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reported_version(helm: Path) -> str:
    """`helm version` of a binary, e.g. `v3.20.2`."""
    try:
        result = subprocess.run(
            [str(helm), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except OSError as error:
        raise HelmInstallError(f"{helm}: cannot run: {error.strerror}") from None
    if result.returncode != 0:
        raise HelmInstallError(f"{helm}: `helm version` failed: {result.stderr.strip()}")
    return result.stdout.strip()


def check_version(helm: Path, expected: str | None = None) -> None:
    """Raise unless `helm` reports the pinned version."""
    expected = expected or pinned_version()
    found = reported_version(helm)
    if found != expected:
        raise HelmInstallError(f"{helm} is Helm {found or '?'}, the render needs {expected}")


def check_build_info(helm: Path, module_dir: Path = MODULE_DIR) -> None:
    """Raise unless the binary was built from the pinned Helm module (`go version -m`)."""
    result = subprocess.run(
        ["go", "version", "-m", str(helm)], capture_output=True, text=True, check=False
    )
    expected = f"{pinned_version(module_dir)}\t{pinned_hash(module_dir)}"
    if result.returncode != 0 or f"{HELM_MODULE}\t{expected}" not in result.stdout:
        raise HelmInstallError(f"{helm} was not built from {HELM_MODULE} {expected}")


def verify(helm: Path) -> None:
    """A binary in place: the pinned version, with the SHA-256 recorded when it was built."""
    recorded = helm.with_name("helm.sha256")
    if not recorded.is_file():
        raise HelmInstallError(f"{helm}: no recorded checksum {recorded.name}; rebuild it")
    if sha256_file(helm) != recorded.read_text().split()[0]:
        raise HelmInstallError(f"{helm}: SHA-256 differs from the one recorded at build time")
    check_version(helm)


def _ldflags(module_dir: Path) -> str:
    go_mod = (module_dir / "go.mod").read_text()
    version = pinned_version(module_dir)
    # As Helm's own Makefile: the default Kubernetes version follows client-go (v0.35 → 1.35).
    client_go = _require(go_mod, "k8s.io/client-go").lstrip("v").split(".")
    major, minor = str(int(client_go[0]) + 1), client_go[1]
    flags = [
        "-s",
        "-w",
        f"-X {HELM_MODULE}/internal/version.version={version}",
        f"-X {HELM_MODULE}/internal/version.gitTreeState=clean",
    ]
    for package in ("pkg/chartutil", "pkg/lint/rules"):
        flags += [
            f"-X {HELM_MODULE}/{package}.k8sVersionMajor={major}",
            f"-X {HELM_MODULE}/{package}.k8sVersionMinor={minor}",
        ]
    return " ".join(flags)


def build(target: Path, module_dir: Path = MODULE_DIR) -> None:
    """Build the pinned Helm into `target`, verified before it is moved into place."""
    if shutil.which("go") is None:
        raise HelmInstallError("building the pinned Helm needs Go (https://go.dev/dl/)")
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / "helm"
        command = ["go", "build", "-trimpath", "-ldflags", _ldflags(module_dir)]
        command += ["-o", str(built), f"{HELM_MODULE}/cmd/helm"]
        if shutil.which("nice"):
            command = ["nice", "-n", "10", *command]
        result = subprocess.run(
            command, cwd=module_dir, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise HelmInstallError(f"go build of {HELM_MODULE} failed: {last}")
        check_version(built, pinned_version(module_dir))
        check_build_info(built, module_dir)
        target.with_name("helm.sha256").write_text(f"{sha256_file(built)}  helm\n")
        built.replace(target)


def ensure(project_dir: Path = PROJECT_DIR) -> Path:
    """The pinned Helm binary: verified if present, built otherwise."""
    target = binary_path(project_dir)
    if target.is_file():
        verify(target)
        return target
    build(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify only, never build")
    args = parser.parse_args(argv)
    try:
        if args.check:
            target = binary_path()
            verify(target)
        else:
            target = ensure()
    except (HelmInstallError, OSError) as error:
        print(f"install_helm: {error}", file=sys.stderr)
        return 1
    print(target.relative_to(PROJECT_DIR) if target.is_relative_to(PROJECT_DIR) else target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
