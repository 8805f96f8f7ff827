"""security area."""
