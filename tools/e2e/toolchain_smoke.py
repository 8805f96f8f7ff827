"""Toolchain smoke test: the built Pulumi CLI, Python language host and providers, for real.

Starts a local control plane (tools/e2e/controlplane.py), writes a two-resource Python program
to a temporary folder (a RandomString and a ConfigMap holding it), and with the cached tools only
(no plugin downloads) runs `pulumi login file://...`, `stack init`, `up`, `preview
--expect-no-changes`, `destroy` and `stack rm`, checking the ConfigMap through the API between.

    python -m tools.e2e.toolchain_smoke
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.e2e.controlplane import REPO, ControlPlaneError, control_plane, tools_bin

PROGRAM = """\
import pulumi
import pulumi_kubernetes as k8s
{random_import}
suffix = {suffix}
cm = k8s.core.v1.ConfigMap(
    "smoke",
    metadata={{"name": "toolchain-smoke", "namespace": "default"}},
    data={{"suffix": suffix}},
)
pulumi.export("suffix", suffix)
"""
WITH_RANDOM = {
    "random_import": "import pulumi_random as random\n",
    "suffix": 'random.RandomString("suffix", length=8, special=False, upper=False).result',
}
WITHOUT_RANDOM = {"random_import": "", "suffix": '"abcdefgh"'}


def _step(name: str, cmd: list[str], env: dict[str, str], cwd: Path, logs: Path) -> float:
    log = logs / f"pulumi-{name}.log"
    started = time.monotonic()
    with log.open("wb") as out:
        rc = subprocess.run(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
    took = time.monotonic() - started
    if rc:
        raise ControlPlaneError(f"pulumi {name} failed ({rc}), see {log}")
    print(f"  ok  pulumi {name} ({took:.1f}s)")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.e2e.toolchain_smoke")
    parser.add_argument("--bin", type=Path, help="tool folder (default: the cache of build.sh)")
    parser.add_argument("--no-random", action="store_true", help="leave pulumi_random out")
    args = parser.parse_args()
    bin_dir = args.bin or tools_bin()
    cache = bin_dir.parent
    if args.bin is None and not (cache / ".pulumi-ready").exists():
        print(f"toolchain_smoke: no Pulumi toolchain in {cache} yet, run `make e2e-tools`")
        return 1
    with tempfile.TemporaryDirectory(prefix="meshstack-smoke-") as tmp:
        root = Path(tmp)
        program, state, logs = root / "program", root / "state", root / "logs"
        for d in (program, state, logs):
            d.mkdir()
        (program / "Pulumi.yaml").write_text(
            "name: toolchain-smoke\n"
            "runtime:\n  name: python\n"
            f"  options:\n    virtualenv: {REPO / '.venv'}\n"
        )
        parts = WITHOUT_RANDOM if args.no_random else WITH_RANDOM
        (program / "__main__.py").write_text(PROGRAM.format(**parts))
        try:
            with control_plane("smoke", root / "cp", bin_dir) as cp:
                env = os.environ | {
                    "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "PULUMI_HOME": str(cache / "pulumi-home"),
                    "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
                    "PULUMI_SKIP_UPDATE_CHECK": "true",
                    "PULUMI_CONFIG_PASSPHRASE": "e2e-smoke",
                    "KUBECONFIG": str(cp.kubeconfig),
                }
                env.pop("PULUMI_ACCESS_TOKEN", None)
                pulumi = str(bin_dir / "pulumi")

                def run(name: str, *args: str) -> None:
                    _step(name, [pulumi, *args], env, program, logs)

                run("login", "login", f"file://{state}")
                run("stack-init", "stack", "init", "smoke")
                run("up", "up", "--yes", "--skip-preview")
                status, cm = cp.request(
                    "GET", "/api/v1/namespaces/default/configmaps/toolchain-smoke"
                )
                suffix = cm.get("data", {}).get("suffix", "")
                if status != 200 or len(suffix) != 8:
                    raise ControlPlaneError(f"ConfigMap not as expected: {status} {cm}")
                print(f"  ok  ConfigMap default/toolchain-smoke has suffix={suffix}")
                run("preview-no-changes", "preview", "--expect-no-changes")
                run("destroy", "destroy", "--yes", "--skip-preview")
                status, _ = cp.request(
                    "GET", "/api/v1/namespaces/default/configmaps/toolchain-smoke"
                )
                if status != 404:
                    raise ControlPlaneError(f"ConfigMap still there after destroy ({status})")
                print("  ok  ConfigMap gone after destroy")
                run("stack-rm", "stack", "rm", "--yes", "smoke")
        except ControlPlaneError as exc:
            keep = Path(tempfile.mkdtemp(prefix="meshstack-smoke-logs-"))
            subprocess.run(
                ["cp", "-r", str(logs), str(root / "cp" / "logs"), str(keep)], check=False
            )
            print(f"toolchain_smoke: {exc} (logs copied to {keep})", file=sys.stderr)
            return 1
    providers = "kubernetes provider" if args.no_random else "kubernetes and random providers"
    print(f"toolchain_smoke: pulumi CLI, language host, {providers} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
