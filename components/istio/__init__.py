"""istio area."""
