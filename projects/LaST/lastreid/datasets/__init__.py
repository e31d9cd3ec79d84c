"""The datasets lastreid registers in fastreid's DATASET_REGISTRY, `build_dataset` (any
registered name; fastreid's Market1501 / DukeMTMC / MSMT17 checked and sorted, see
fastreid_sources.py) and `check_layout`."""
import os
import sys

from fastreid.data.datasets import DATASET_REGISTRY

from .celebreid import CelebReID
from . import fastreid_sources
from .common import DatasetLayoutError, require_dir
from .fastreid_sources import SOURCE_DATASETS
from .last import LaST, LaSTClothes, LaSTVal
from .prcc import PRCC, PRCCSameClothes

__all__ = [
    "LASTREID_DATASETS", "SOURCE_DATASETS", "DatasetLayoutError", "UnknownDatasetError",
    "build_dataset", "check_layout",
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
    if name in SOURCE_DATASETS:
        fastreid_sources.check_layout(name, root)
        return fastreid_sources.sort_items(dataset_class(root=root, **kwargs))
    return dataset_class(root=root, **kwargs)


def check_layout(name, root=None):
    """Raises a one-line DatasetLayoutError when the tree of dataset `name` under `root`
    (default $FASTREID_DATASETS, else "datasets") is missing or, for fastreid's
    Market1501 / DukeMTMC / MSMT17, would trip fastreid's own parsing. Our own datasets
    are checked for their top folder here and parsed fully when built. Returns True when
    `name` was checked, False for a registered name this function does not know."""
    root = root if root is not None else os.environ.get("FASTREID_DATASETS", "datasets")
    if name in SOURCE_DATASETS:
        fastreid_sources.check_layout(name, root)
        return True
    if name in LASTREID_DATASETS:
        module = sys.modules[DATASET_REGISTRY.get(name).__module__]
        require_dir(os.path.join(root, DATASET_REGISTRY.get(name).dataset_dir), module.LAYOUT)
        return True
    return False
