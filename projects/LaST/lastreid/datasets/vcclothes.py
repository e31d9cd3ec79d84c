"""VC-Clothes: a synthetic (game-engine) clothes-changing benchmark seen by four cameras.

Reference:
    Wang et al. When Person Re-identification Meets Changing Clothes. CVPR Workshops, 2020.

Layout (under ``<root>/VC-Clothes/``)::

    train/*.jpg   query/*.jpg   gallery/*.jpg

Image names are ``<pid>-<camera>-<clothes>-<frame>.jpg``, e.g. ``0001-02-01-03.jpg``;
the clothes key is ``<pid>-<clothes>`` (``0001-01``), the camera is 1..4
(camid = camera - 1). The reference CAL code evaluates three test sets: all cameras,
same clothes (cameras 2 and 3 only) and clothes-changing (cameras 3 and 4 only), each
camera filter applied to both the query and the gallery.

Documented statistics: 512 ids (256 train / 256 test), 4 cameras, 19,060 images; the
per-folder image counts are recalled from published dataset summaries, not re-checked
here (they add up to 19,060):
    - train: 256 ids / 9,449 images
    - query: 256 ids / 1,020 images; gallery: 256 ids / 8,591 images

Registered datasets (the counts the checker compares are those of the whole folders):
    - ``VCClothes``: train on ``train/``; query ``query/``, gallery ``gallery/``, all cameras.
    - ``VCClothesSameClothes``: test only; cameras 2 and 3 of ``query/`` and ``gallery/``.
    - ``VCClothesClothesChanging``: test only; cameras 3 and 4 of ``query/`` and ``gallery/``.

Clothes keys are kept in ``train_clothes``, ``query_clothes`` and ``gallery_clothes``,
lists parallel to the splits.
"""

import os
import re

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from .common import DatasetLayoutError, list_images, require_dir

__all__ = [
    "VCClothes",
    "VCClothesSameClothes",
    "VCClothesClothesChanging",
    "parse_vcclothes_name",
]

CAMERAS = 4
LAYOUT = "<root>/VC-Clothes/ with flat train/, query/ and gallery/ folders of *.jpg"
NAME_FORMAT = "<pid>-<camera 1..4>-<clothes>-<frame>.jpg, e.g. 0001-02-01-03.jpg"
_NAME = re.compile(r"(\d+)-(\d+)-(\d+)-(\d+)")


def parse_vcclothes_name(path):
    """Returns (pid, camera 1..4, clothes key) of a VC-Clothes image, e.g.
    (1, 2, "0001-01") for 0001-02-01-03.jpg."""
    found = _NAME.fullmatch(os.path.splitext(os.path.basename(path))[0])
    if not found or not 1 <= int(found.group(2)) <= CAMERAS:
        raise DatasetLayoutError("cannot parse the VC-Clothes image name", path, NAME_FORMAT)
    pid_text, camera, clothes_text = found.group(1), int(found.group(2)), found.group(3)
    return int(pid_text), camera, f"{pid_text}-{clothes_text}"


class _VCClothesBase(ImageDataset):
    dataset_dir = "VC-Clothes"
    dataset_name = "VCClothes"
    has_train = True
    test_cameras = (1, 2, 3, 4)  # the cameras (1..4) kept in query and gallery
    HAS_CLOTHES = True
    LAYOUT = LAYOUT

    SYNTHETIC_KEY = "vcclothes"  # lastreid.datasets.synthetic's name for this tree

    @classmethod
    def split_reader(cls, split):
        """(recursive, path -> person id) of a split folder of DOCUMENTED, for the checker."""
        return False, lambda path: parse_vcclothes_name(path)[0]

    @classmethod
    def clothes_reader(cls, split):
        """path -> clothes key of an image of `split`, for the checker's clothes count."""
        return lambda path: parse_vcclothes_name(path)[2]

    @classmethod
    def required_folders(cls):
        """The folders (relative to the datasets root) this dataset reads."""
        return [f"VC-Clothes/{split}" for split in cls.DOCUMENTED]

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.dataset_dir = require_dir(os.path.join(root, "VC-Clothes"), LAYOUT)

        train, self.train_clothes = [], []
        if self.has_train:
            for path, pid, camera, clothes in self._parse("train", (1, 2, 3, 4)):
                name = self.dataset_name
                train.append((path, f"{name}_{pid}", f"{name}_{camera - 1}"))
                self.train_clothes.append(clothes)
        query = self._parse("query", self.test_cameras)
        gallery = self._parse("gallery", self.test_cameras)
        self.query_clothes = [clothes for *_, clothes in query]
        self.gallery_clothes = [clothes for *_, clothes in gallery]

        super().__init__(
            train,
            [(path, pid, camera - 1) for path, pid, camera, _ in query],
            [(path, pid, camera - 1) for path, pid, camera, _ in gallery],
            **kwargs,
        )
        if self.combineall:  # keep train_clothes parallel to the combined train list
            self.train_clothes = self.train_clothes + self.query_clothes + self.gallery_clothes

    def _parse(self, split, cameras):
        """[(path, pid, camera 1..4, clothes key)] of the images of `cameras` in a split
        folder, sorted by path."""
        directory = os.path.join(self.dataset_dir, split)
        items = [(path, *parse_vcclothes_name(path)) for path in list_images(directory, LAYOUT)]
        kept = [item for item in items if item[2] in cameras]
        if not kept:
            raise DatasetLayoutError(
                f"{self.dataset_name}: no images of cameras {cameras} in", directory, NAME_FORMAT
            )
        return kept


_FOLDERS = {
    "train": dict(ids=256, images=9449),
    "query": dict(ids=256, images=1020),
    "gallery": dict(ids=256, images=8591),
}


@DATASET_REGISTRY.register()
class VCClothes(_VCClothesBase):
    """VC-Clothes, all cameras (module docstring)."""

    dataset_name = "VCClothes"
    # The documented statistics (module docstring) per folder under VC-Clothes/, as data.
    DOCUMENTED = _FOLDERS


@DATASET_REGISTRY.register()
class VCClothesSameClothes(_VCClothesBase):
    """VC-Clothes same-clothes test set: cameras 2 and 3 of query/ and gallery/."""

    dataset_name = "VCClothesSameClothes"
    has_train = False
    test_cameras = (2, 3)
    CLOTHES_PROTOCOLS = ("general", "SC")  # cameras 2 and 3 see the same outfit
    # The folders it reads (whole-folder counts: the camera filter comes after).
    DOCUMENTED = {split: _FOLDERS[split] for split in ("query", "gallery")}


@DATASET_REGISTRY.register()
class VCClothesClothesChanging(_VCClothesBase):
    """VC-Clothes clothes-changing test set: cameras 3 and 4 of query/ and gallery/."""

    dataset_name = "VCClothesClothesChanging"
    has_train = False
    test_cameras = (3, 4)
    CLOTHES_PROTOCOLS = ("general", "CC")  # camera 4 sees another outfit than camera 3
    DOCUMENTED = {split: _FOLDERS[split] for split in ("query", "gallery")}
