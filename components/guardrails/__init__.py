"""guardrails area."""
