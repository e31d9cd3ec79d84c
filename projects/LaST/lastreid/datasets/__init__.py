"""The datasets lastreid registers in fastreid's DATASET_REGISTRY, and `build_dataset`."""
import os

from fastreid.data.datasets import DATASET_REGISTRY

from ..errors import ConfigKeyError
from .celebreid import CelebReID
from .common import DatasetLayoutError
from .last import LaST, LaSTClothes, LaSTVal
from .prcc import PRCC, PRCCSameClothes

__all__ = [
    "LASTREID_DATASETS", "DatasetLayoutError", "UnknownDatasetError", "build_dataset",
    "check_dataset_folders", "dataset_class", "datasets_root",
    "LaST", "LaSTVal", "LaSTClothes", "PRCC", "PRCCSameClothes", "CelebReID",
]

LASTREID_DATASETS = tuple(
    cls.__name__ for cls in (LaST, LaSTVal, LaSTClothes, PRCC, PRCCSameClothes, CelebReID)
)


class UnknownDatasetError(ConfigKeyError):
    """A dataset name that is not in fastreid's registry (a KeyError, like the registry's own)."""


def datasets_root(root=None):
    """`root`, else $FASTREID_DATASETS (else "datasets"), read at call time: fastreid's own
    loaders read that variable once, when fastreid.data is imported."""
    return root if root is not None else os.environ.get("FASTREID_DATASETS", "datasets")


def dataset_class(name):
    """The registered dataset class `name`, or UnknownDatasetError."""
    try:
        return DATASET_REGISTRY.get(name)
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; lastreid registers: {', '.join(LASTREID_DATASETS)}"
        ) from None


def check_dataset_folders(names, root=None):
    """Raises DatasetLayoutError for the first missing folder of the datasets `names`, so that
    a run can stop before it writes anything. Only the folders are looked at (cheap even for
    LaST's 228k images); parsing errors still come when a dataset is built. Datasets without
    `required_folders` (fastreid's own) are left to their own checks."""
    root = datasets_root(root)
    for name in dict.fromkeys(names):
        cls = dataset_class(name)
        for folder in getattr(cls, "required_folders", lambda: [])():
            path = os.path.join(root, folder)
            if not os.path.isdir(path):
                raise DatasetLayoutError(f"{name}: folder not found", path,
                                         f"{cls.LAYOUT}; FASTREID_DATASETS={root}")


def build_dataset(name, root=None, **kwargs):
    """Instantiates the registered dataset `name` (any name in fastreid's registry).

    `root` defaults to `datasets_root()`. A missing folder is named as
    `check_dataset_folders` names it.
    """
    root = datasets_root(root)
    check_dataset_folders([name], root)
    return dataset_class(name)(root=root, **kwargs)
