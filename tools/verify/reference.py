"""Locate the upstream reference data (CRDs, Helm chart defaults) used for verification.

The reference files are deliberately kept outside the repository (see
``shared/reference/SOURCES.md``), so the location is resolved at run time instead
of being vendored or hard-coded.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MESHSTACK_REFERENCE_DIR"

# tools/verify/reference.py -> parents[2] is the repository (worktree) root.
_REPO_ROOT = Path(__file__).resolve().parents[2]


class ReferenceDirError(RuntimeError):
    """The reference data directory does not exist."""


def reference_dir() -> Path:
    """Return the reference data directory.

    ``$MESHSTACK_REFERENCE_DIR`` wins when set; otherwise the directory is expected
    next to the repository root at ``../shared/reference``.
    """
    override = os.environ.get(ENV_VAR)
    candidate = Path(override) if override else _REPO_ROOT.parent / "shared" / "reference"
    if not candidate.is_dir():
        source = f"${ENV_VAR}" if override else f"the default location (set ${ENV_VAR} to override)"
        raise ReferenceDirError(
            f"reference data directory {candidate} from {source} does not exist"
        )
    return candidate
