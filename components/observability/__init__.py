"""observability area."""
