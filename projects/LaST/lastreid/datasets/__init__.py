"""The datasets lastreid registers in fastreid's DATASET_REGISTRY, and `build_dataset`."""
import os

from fastreid.data.datasets import DATASET_REGISTRY

from .celebreid import CelebReID
from .common import DatasetLayoutError
from .last import LaST, LaSTClothes, LaSTVal
from .prcc import PRCC, PRCCSameClothes

__all__ = [
    "LASTREID_DATASETS", "DatasetLayoutError", "UnknownDatasetError", "build_dataset",
    "LaST", "LaSTVal", "LaSTClothes", "PRCC", "PRCCSameClothes", "CelebReID",
]

LASTREID_DATASETS = tuple(
    cls.__name__ for cls in (LaST, LaSTVal, LaSTClothes, PRCC, PRCCSameClothes, CelebReID)
)


class UnknownDatasetError(KeyError):
    """A dataset name that is not in fastreid's registry (a KeyError, like the registry's own)."""

    def __str__(self):
        return self.args[0]  # KeyError would otherwise print the message in quotes


def build_dataset(name, root=None, **kwargs):
    """Instantiates the registered dataset `name` (any name in fastreid's registry).

    `root` defaults to $FASTREID_DATASETS (else "datasets"), read at call time:
    fastreid's own loaders read that variable once, when fastreid.data is imported.
    """
    try:
        dataset_class = DATASET_REGISTRY.get(name)
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; lastreid registers: {', '.join(LASTREID_DATASETS)}"
        ) from None
    if root is None:
        root = os.environ.get("FASTREID_DATASETS", "datasets")
    return dataset_class(root=root, **kwargs)
