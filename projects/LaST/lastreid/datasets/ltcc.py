"""LTCC: Long-Term Cloth-Changing person re-identification, twelve indoor cameras.

Reference:
    Qian et al. Long-Term Cloth-Changing Person Re-identification. ACCV, 2020
    (arXiv:2005.12633).

Layout (under ``<root>/LTCC_ReID/``)::

    train/*.png   query/*.png   test/*.png        (test/ is the gallery)

Image names are ``<pid>_<clothes>_c<camera>_<frame>.png``, e.g. ``001_1_c11_015861.png``:
the clothes key is the name up to ``_c`` (``001_1``: person and outfit number) and the
camera is 1..12 (camid = camera - 1).

Documented statistics:
    - train: 77 ids / 9,576 images
    - query: 75 ids / 493 images; gallery (test/): 75 ids / 7,050 images

Registered dataset ``LTCC``: train on ``train/``, query ``query/``, gallery ``test/``. Its
protocols are general and clothes-changing (the query's person in the query's clothes
removed from the gallery), both computed from the clothes keys kept in ``train_clothes``,
``query_clothes`` and ``gallery_clothes`` (lists parallel to the splits).
"""

import os
import re

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from .common import DatasetLayoutError, list_images, require_dir

__all__ = ["LTCC", "parse_ltcc_name"]

CAMERAS = 12
LAYOUT = "<root>/LTCC_ReID/ with flat train/, query/ and test/ (gallery) folders of *.png"
NAME_FORMAT = "<pid>_<clothes>_c<camera 1..12>_<frame>.png, e.g. 001_1_c11_015861.png"
_NAME = re.compile(r"(\d+)_(\d+)_c(\d+)_(\w+)")


def parse_ltcc_name(path):
    """Returns (pid, camid, clothes key) of an LTCC image, e.g. (1, 10, "001_1") for
    001_1_c11_015861.png (camid = camera - 1)."""
    found = _NAME.fullmatch(os.path.splitext(os.path.basename(path))[0])
    if not found or not 1 <= int(found.group(3)) <= CAMERAS:
        raise DatasetLayoutError("cannot parse the LTCC image name", path, NAME_FORMAT)
    pid_text, clothes_text, camera = found.group(1), found.group(2), int(found.group(3))
    return int(pid_text), camera - 1, f"{pid_text}_{clothes_text}"


@DATASET_REGISTRY.register()
class LTCC(ImageDataset):
    """LTCC (see the module docstring)."""

    dataset_dir = "LTCC_ReID"
    dataset_name = "LTCC"
    HAS_CLOTHES = True
    # As its authors report it: all matches, and clothes-changing matches only.
    CLOTHES_PROTOCOLS = ("general", "CC")
    # The documented statistics (module docstring) per folder under LTCC_ReID/, as data.
    DOCUMENTED = {
        "train": dict(ids=77, images=9576),
        "query": dict(ids=75, images=493),
        "test": dict(ids=75, images=7050),
    }
    LAYOUT = LAYOUT

    SYNTHETIC_KEY = "ltcc"  # lastreid.datasets.synthetic's name for this tree

    @classmethod
    def split_reader(cls, split):
        """(recursive, path -> person id) of a split folder of DOCUMENTED, for the checker."""
        return False, lambda path: parse_ltcc_name(path)[0]

    @classmethod
    def clothes_reader(cls, split):
        """path -> clothes key of an image of `split`, for the checker's clothes count."""
        return lambda path: parse_ltcc_name(path)[2]

    @classmethod
    def required_folders(cls):
        """The folders (relative to the datasets root) this dataset reads."""
        return [f"LTCC_ReID/{split}" for split in cls.DOCUMENTED]

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.dataset_dir = require_dir(os.path.join(root, "LTCC_ReID"), LAYOUT)

        train, self.train_clothes = [], []
        for path, pid, camid, clothes in self._parse("train"):
            name = self.dataset_name
            train.append((path, f"{name}_{pid}", f"{name}_{camid}"))
            self.train_clothes.append(clothes)
        query = self._parse("query")
        gallery = self._parse("test")
        self.query_clothes = [clothes for *_, clothes in query]
        self.gallery_clothes = [clothes for *_, clothes in gallery]

        super().__init__(
            train,
            [item[:3] for item in query],
            [item[:3] for item in gallery],
            **kwargs,
        )
        if self.combineall:  # keep train_clothes parallel to the combined train list
            self.train_clothes = self.train_clothes + self.query_clothes + self.gallery_clothes

    def _parse(self, split):
        """[(path, pid, camid, clothes key)] of a split folder, sorted by path."""
        directory = os.path.join(self.dataset_dir, split)
        return [(path, *parse_ltcc_name(path)) for path in list_images(directory, LAYOUT)]
