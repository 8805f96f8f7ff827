"""Developer tooling for meshstack (not deployed): verification helpers used by the tests."""
