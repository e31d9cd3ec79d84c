"""LaST: Large-Scale Spatio-Temporal person re-identification.

Reference:
    Shu et al. Large-Scale Spatio-Temporal Person Re-identification: Algorithm and
    Benchmark. arXiv:2105.15076, 2021. URL: https://github.com/shuxjweb/last

Layout (under ``<root>/last/``)::

    train/<pid>/*.jpg
    val/query/*.jpg               val/gallery/<subdir>/*.jpg
    test/query/*.jpg              test/gallery/<subdir>/*.jpg

Image names have six ``_``-separated fields, e.g. ``010903_012_01066_1075_01_000.jpg``:
field 0 is the person id and the last field numbers that person's outfit, so the
clothes key is ``<field 0>_<field 5>`` (``010903_000``). There are no camera labels.

Documented statistics:
    - train: 5,000 ids / 71,248 images
    - val: query 56 ids / 100 images, gallery 56 ids / 21,279 images
    - test: query 5,805 ids / 10,176 images, gallery 5,806 ids / 125,353 images

Registered datasets:
    - ``LaST``: train on ``train/``, evaluate on ``test/``.
    - ``LaSTVal``: no train split; evaluates on ``val/`` (checkpoint selection).
    - ``LaSTClothes``: one training class per (person, outfit); evaluates on ``test/``.
      The public LaST code's version of it (``LaST_Cloth``) documents 16,012 classes over
      70,923 training images, an earlier count than the released 71,248.

Every item's clothes key is kept in ``train_clothes``, ``query_clothes`` and
``gallery_clothes``, lists parallel to ``train``, ``query`` and ``gallery``
(``HAS_CLOTHES = True``). (The LaST
authors note that val/test clothes are not labelled; there the key is whatever the
last name field says.)
"""

import os

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from .common import DatasetLayoutError, list_images, own_camid_per_image, parse_int, require_dir

__all__ = ["LaST", "LaSTVal", "LaSTClothes", "parse_last_name"]

LAYOUT = (
    "<root>/last/ with train/<pid>/*.jpg, {val,test}/query/*.jpg "
    "and {val,test}/gallery/<subdir>/*.jpg"
)
NAME_FORMAT = (
    "6 '_'-separated fields starting with an integer person id, "
    "e.g. 010903_012_01066_1075_01_000.jpg"
)


def parse_last_name(path):
    """Returns (pid, clothes_key) of a LaST image, e.g. (10903, "010903_000")."""
    stem = os.path.splitext(os.path.basename(path))[0]
    fields = stem.split("_")
    if len(fields) != 6:
        raise DatasetLayoutError("cannot parse the LaST image name", path, NAME_FORMAT)
    pid = parse_int(fields[0], path, NAME_FORMAT)
    return pid, f"{fields[0]}_{fields[5]}"


class _LaSTBase(ImageDataset):
    dataset_dir = "last"
    dataset_name = "LaST"
    has_train = True  # False: a test-only dataset
    eval_split = "test"
    train_on_clothes = False  # True: one class per (person, outfit)
    HAS_CLOTHES = True  # train_clothes: a clothes key per training item (CAL trains on them)
    LAYOUT = LAYOUT

    SYNTHETIC_KEY = "last"  # lastreid.datasets.synthetic's name for this tree

    @classmethod
    def split_reader(cls, split):
        """(recursive, path -> person id) of a split folder of DOCUMENTED, for the checker."""
        return not split.endswith("/query"), lambda path: parse_last_name(path)[0]

    @classmethod
    def clothes_reader(cls, split):
        """path -> clothes key of an image of `split`, for the checker's clothes count."""
        return lambda path: parse_last_name(path)[1]

    @classmethod
    def required_folders(cls):
        """The folders (relative to the datasets root) this dataset reads."""
        splits = ["train"] if cls.has_train else []
        splits += [f"{cls.eval_split}/query", f"{cls.eval_split}/gallery"]
        return [f"last/{split}" for split in splits]

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.dataset_dir = require_dir(os.path.join(root, "last"), LAYOUT)

        train, self.train_clothes = [], []
        if self.has_train:
            train, self.train_clothes = self._train_items()

        eval_dir = os.path.join(self.dataset_dir, self.eval_split)
        query = self._parse(os.path.join(eval_dir, "query"), recursive=False)
        gallery = self._parse(os.path.join(eval_dir, "gallery"), recursive=True)
        self.query_clothes = [clothes for _, _, clothes in query]
        self.gallery_clothes = [clothes for _, _, clothes in gallery]
        # LaST has no camera labels: each test image is its own "camera" so that
        # fastreid's same-pid-same-camera filter never drops a true match.
        query, gallery = own_camid_per_image(
            [(path, pid) for path, pid, _ in query], [(path, pid) for path, pid, _ in gallery]
        )

        super().__init__(train, query, gallery, **kwargs)
        if self.combineall:  # keep train_clothes parallel to the combined train list
            self.train_clothes = self.train_clothes + self.query_clothes + self.gallery_clothes

    @staticmethod
    def _parse(directory, recursive):
        return [
            (path, *parse_last_name(path))
            for path in list_images(directory, LAYOUT, recursive=recursive)
        ]

    def _train_items(self):
        items, clothes_keys = [], []
        # No camera labels in LaST: one constant train camera (train camids are unused
        # by the losses; fastreid only counts them).
        camid = f"{self.dataset_name}_0"
        for path, pid, clothes in self._parse(os.path.join(self.dataset_dir, "train"), True):
            label = clothes if self.train_on_clothes else pid
            items.append((path, f"{self.dataset_name}_{label}", camid))
            clothes_keys.append(clothes)
        return items, clothes_keys


# The documented statistics (module docstring) per folder under last/, as data.
_TRAIN_AND_TEST = {
    "train": dict(ids=5000, images=71248),
    "test/query": dict(ids=5805, images=10176),
    "test/gallery": dict(ids=5806, images=125353),
}


@DATASET_REGISTRY.register()
class LaST(_LaSTBase):
    """LaST: train on last/train, evaluate on last/test (see the module docstring)."""

    dataset_name = "LaST"
    DOCUMENTED = _TRAIN_AND_TEST


@DATASET_REGISTRY.register()
class LaSTVal(_LaSTBase):
    """LaST validation split (no train items): query/gallery from last/val."""

    dataset_name = "LaSTVal"
    DOCUMENTED = {"val/query": dict(ids=56, images=100), "val/gallery": dict(ids=56, images=21279)}
    has_train = False
    eval_split = "val"


@DATASET_REGISTRY.register()
class LaSTClothes(_LaSTBase):
    """LaST with one training class per (person, outfit): pid = "LaSTClothes_<clothes key>"."""

    dataset_name = "LaSTClothes"
    train_on_clothes = True
    DOCUMENTED = _TRAIN_AND_TEST  # the same folders as LaST; its classes are counted apart

    @classmethod
    def class_reader(cls, split):
        """path -> training class (the clothes key) in `split`, for the checker's class
        count; None where the split's classes are its person ids."""
        return (lambda path: parse_last_name(path)[1]) if split == "train" else None
