"""Routing selectors behind one interface (:class:`~avengers.core.selectors.base.Selector`), one module each.

Importing this package registers the built-ins in the ``routing selector`` registry
(:data:`avengers.config.routing.SELECTORS`): nearest and soft (arXiv 2505.19797), knn (arXiv 2505.12601), hknn (kNN shrunk toward the predicted dataset, arXiv 2202.00858),
logistic (arXiv 2403.12031), mf (arXiv 2406.18665) and shrinkage (arXiv 2202.00858).
"""

from avengers.core.selectors import cluster, hknn, knn, logistic, mf, shrinkage  # noqa: F401  (registration)
from avengers.core.selectors.base import (
    FitData,
    QueryBatch,
    Selector,
    SelectorError,
    available_selectors,
    create_selector,
    register_selector,
)

__all__ = [
    "FitData",
    "QueryBatch",
    "Selector",
    "SelectorError",
    "available_selectors",
    "create_selector",
    "register_selector",
]
