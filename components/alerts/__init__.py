"""alerts area."""
