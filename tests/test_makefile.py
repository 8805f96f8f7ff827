"""The Makefile explains itself: `make help` lists every target with its one-line purpose."""

from __future__ import annotations

import re
import subprocess

from tools.render import PROJECT_DIR

MAKEFILE = PROJECT_DIR / "Makefile"


def phony_targets() -> list[str]:
    text = MAKEFILE.read_text().replace("\\\n", " ")
    declared = re.findall(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    return [target for line in declared for target in line.split()]


def test_every_phony_target_has_a_one_line_purpose_in_make_help() -> None:
    """Each `.PHONY` target carries a `## ` comment, and `make help` prints it, one line each."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", "help"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    listed = {}
    for line in result.stdout.splitlines():
        target, _, purpose = line.strip().partition(" ")
        listed[target] = purpose.strip()
    targets = phony_targets()
    assert len(targets) > 20, "the .PHONY line was read"
    missing = [target for target in targets if not listed.get(target)]
    assert missing == [], "targets without a `## <purpose>` comment"
    assert set(listed) <= set(targets), "help lists only real targets"
