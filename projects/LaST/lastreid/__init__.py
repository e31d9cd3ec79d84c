"""lastreid: the LaST re-identification benchmark as a fast-reid plugin.

Importing this package first patches the few things fastreid 1.4.0 needs on a current
Python / PyTorch / NumPy (see `lastreid.compat`), then registers the datasets.
"""

from . import (
    compat,  # noqa: F401  (must run before anything imports fastreid)
    datasets,  # noqa: F401
)
from .features import FeatureExtractor

__all__ = ["FeatureExtractor"]
