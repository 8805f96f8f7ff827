"""The data-plane tier: the rendered rate limits under a real Envoy, ratelimit and Redis."""
