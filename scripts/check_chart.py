#!/usr/bin/env python3
"""Lint, render and validate helm/avengers for each ci/*-values.yaml variant, offline.

    python scripts/check_chart.py                 # every variant, default Kubernetes versions
    python scripts/check_chart.py --variant replay --kube-version 1.33 -v

See avengers.deploy.chart_check for what is validated and how. Exit status 0 when every variant passes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from avengers.deploy.chart_check import main

CHART = Path(__file__).resolve().parent.parent / "helm" / "avengers"

if __name__ == "__main__":
    sys.exit(main(default_chart=CHART))
