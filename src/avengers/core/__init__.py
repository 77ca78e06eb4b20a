"""Shared core library: the Avengers recipe, one module per step."""
