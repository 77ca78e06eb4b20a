"""The OpenAI-compatible HTTP service (an HTTP front of the Gateway)."""
