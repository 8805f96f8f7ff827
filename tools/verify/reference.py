"""Locate the upstream reference data (CRDs, Helm chart defaults) used for verification.

The reference files are deliberately kept outside the repository (see
``shared/reference/SOURCES.md``), so the location is resolved at run time instead
of being vendored or hard-coded: ``$MESHSTACK_REFERENCE_DIR``, else ``../shared/reference``,
else the clone's ``.cache/reference`` that ``make test`` fills (``tools/fetch_reference.py``).
"""

from __future__ import annotations

from pathlib import Path

from tools.fetch_reference import ENV_VAR, REFERENCE, DataDirError

__all__ = ["ENV_VAR", "ReferenceDirError", "reference_dir"]

ReferenceDirError = DataDirError
"""The reference data directory does not exist (one line naming how to provide it)."""


def reference_dir() -> Path:
    """Return the reference data directory (see `tools.fetch_reference.DataDir`)."""
    return REFERENCE.resolve()
