"""Offline tools built on the recipe: calibration (measure labels), routing evaluation, sweeps."""
