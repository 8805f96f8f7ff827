"""ratelimit area."""
