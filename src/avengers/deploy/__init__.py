"""Deployment tooling: offline checks of the Helm chart (lint, render, schema validation)."""
