"""traffic area."""
