"""The datasets lastreid registers in fastreid's DATASET_REGISTRY (those with clothes labels
have `HAS_CLOTHES = True` and `train_clothes` / `query_clothes` / `gallery_clothes` lists
parallel to their splits), `build_dataset` (any
registered name; fastreid's Market1501 / DukeMTMC / MSMT17 checked and sorted, see
fastreid_sources.py) and the layout checks a run makes before it writes anything."""

import os

from fastreid.data.datasets import DATASET_REGISTRY

from ..errors import ConfigKeyError
from . import fastreid_sources
from .celebreid import CelebReID
from .common import DatasetLayoutError
from .deepchange import DeepChange, DeepChangeVal
from .fastreid_sources import SOURCE_DATASETS
from .last import LaST, LaSTClothes, LaSTVal
from .ltcc import LTCC
from .prcc import PRCC, PRCCSameClothes
from .vcclothes import VCClothes, VCClothesClothesChanging, VCClothesSameClothes

__all__ = [
    "LASTREID_DATASETS",
    "SOURCE_DATASETS",
    "DatasetLayoutError",
    "UnknownDatasetError",
    "build_dataset",
    "check_dataset_folders",
    "check_layout",
    "dataset_class",
    "datasets_root",
    "LaST",
    "LaSTVal",
    "LaSTClothes",
    "PRCC",
    "PRCCSameClothes",
    "CelebReID",
    "LTCC",
    "DeepChange",
    "DeepChangeVal",
    "VCClothes",
    "VCClothesSameClothes",
    "VCClothesClothesChanging",
]

LASTREID_DATASETS = tuple(
    cls.__name__
    for cls in (
        LaST,
        LaSTVal,
        LaSTClothes,
        PRCC,
        PRCCSameClothes,
        CelebReID,
        LTCC,
        DeepChange,
        DeepChangeVal,
        VCClothes,
        VCClothesSameClothes,
        VCClothesClothesChanging,
    )
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


def check_layout(name, root=None):
    """Raises a one-line DatasetLayoutError when the tree of dataset `name` under `root`
    (default `datasets_root()`) is missing a folder it reads or, for fastreid's Market1501 /
    DukeMTMC / MSMT17, would trip fastreid's own parsing. Our datasets' images are parsed
    when the dataset is built. Returns True when `name` was checked, False for a registered
    dataset this function knows nothing about."""
    root = datasets_root(root)
    if name in SOURCE_DATASETS:
        fastreid_sources.check_layout(name, root)
        return True
    cls = dataset_class(name)
    if not hasattr(cls, "required_folders"):
        return False
    for folder in cls.required_folders():
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            raise DatasetLayoutError(
                f"{name}: folder not found", path, f"{cls.LAYOUT}; FASTREID_DATASETS={root}"
            )
    return True


def check_dataset_folders(names, root=None):
    """`check_layout` for each of `names`, so that a run can stop before it writes anything."""
    for name in dict.fromkeys(names):
        check_layout(name, root)


def build_dataset(name, root=None, **kwargs):
    """Instantiates the registered dataset `name` (any name in fastreid's registry) after
    `check_layout`; `root` defaults to `datasets_root()`. fastreid's source datasets get
    their item lists sorted (fastreid lists them in file-system order)."""
    root = datasets_root(root)
    check_layout(name, root)
    dataset = dataset_class(name)(root=root, **kwargs)
    return fastreid_sources.sort_items(dataset) if name in SOURCE_DATASETS else dataset
