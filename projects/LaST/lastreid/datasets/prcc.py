"""PRCC: a clothes-changing benchmark recorded by three cameras.

Reference:
    Yang et al. Person Re-identification by Contour Sketch under Moderate Clothing
    Change. TPAMI, 2019.

Layout (under ``<root>/prcc/rgb/``)::

    train/<pid>/<A|B|C>_cropped_rgb<NNN>.jpg     (camera = the name's first letter)
    val/<pid>/<A|B|C>_cropped_rgb<NNN>.jpg       (not used by the datasets below)
    test/A/<pid>/*.jpg   test/B/<pid>/*.jpg   test/C/<pid>/*.jpg

Cameras A and B see a person in the same clothes; camera C sees another outfit.

Documented statistics:
    - train: 150 ids / 17,896 images
    - test: 71 ids; A 3,384, B 3,873, C 3,543 images

Registered datasets (camids A=0, B=1, C=2):
    - ``PRCC``: train on ``train/``; cross-clothes test, query ``test/C``, gallery ``test/A``.
    - ``PRCCSameClothes``: test only; query ``test/B``, gallery ``test/A``.

Clothes keys ``"<pid>_<outfit>"`` (outfit 0 for A/B, 1 for C) are kept in
``train_clothes``, ``query_clothes`` and ``gallery_clothes``, parallel to the splits
(``HAS_CLOTHES = True``).

Each test set IS one clothes protocol: every positive of a C query is in other clothes, every
positive of a B query in the same clothes. ``CLOTHES_PROTOCOLS`` says so, so that ``PRCC``
reports ``CC-*`` and ``PRCCSameClothes`` ``SC-*`` metrics (equal to their general ones)
under the names the other clothes-changing datasets use (docs/evaluation.md).
"""

import os

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from .common import DatasetLayoutError, list_images, parse_int, require_dir

__all__ = ["PRCC", "PRCCSameClothes", "CAMERAS"]

CAMERAS = {"A": 0, "B": 1, "C": 2}
OUTFIT_OF_CAMERA = {"A": 0, "B": 0, "C": 1}
LAYOUT = (
    "<root>/prcc/rgb/ with train/<pid>/<A|B|C>_cropped_rgb<NNN>.jpg and test/{A,B,C}/<pid>/*.jpg"
)
TRAIN_NAME_FORMAT = "train/<pid>/<A|B|C>_cropped_rgb<NNN>.jpg with an integer <pid> folder"


def _pid_from_folder(path, expected):
    return parse_int(os.path.basename(os.path.dirname(path)), path, expected, "person id folder")


def parse_prcc_train_path(path):
    """Returns (pid, camera letter) of a train/val image, e.g. (7, "C")."""
    pid = _pid_from_folder(path, TRAIN_NAME_FORMAT)
    prefix, sep, _ = os.path.basename(path).partition("_")
    if not sep or prefix not in CAMERAS:
        raise DatasetLayoutError("cannot parse the PRCC camera prefix of", path, TRAIN_NAME_FORMAT)
    return pid, prefix


def _clothes_key(pid, camera):
    return f"{pid}_{OUTFIT_OF_CAMERA[camera]}"


class _PRCCBase(ImageDataset):
    dataset_dir = "prcc/rgb"
    dataset_name = "PRCC"
    has_train = True
    query_camera = "C"
    HAS_CLOTHES = True  # train_clothes: a clothes key per training item (CAL trains on them)
    gallery_camera = "A"
    HAS_CLOTHES = True
    LAYOUT = LAYOUT

    SYNTHETIC_KEY = "prcc"  # lastreid.datasets.synthetic's name for this tree

    @classmethod
    def split_reader(cls, split):
        """(recursive, path -> person id) of a split folder of DOCUMENTED, for the checker:
        train names are parsed, test pids come from the folder (as the dataset reads them)."""
        if split == "train":
            return True, lambda path: parse_prcc_train_path(path)[0]
        return True, lambda path: _pid_from_folder(path, LAYOUT)

    @classmethod
    def clothes_reader(cls, split):
        """path -> clothes key of an image of `split`, for the checker's clothes count: the
        outfit follows the camera (the name's prefix in train/, the folder in test/)."""
        if split == "train":
            return lambda path: _clothes_key(*parse_prcc_train_path(path))
        camera = split.rpartition("/")[2]
        return lambda path: _clothes_key(_pid_from_folder(path, LAYOUT), camera)

    @classmethod
    def required_folders(cls):
        """The folders (relative to the datasets root) this dataset reads."""
        splits = (["train"] if cls.has_train else []) + [
            f"test/{cls.query_camera}",
            f"test/{cls.gallery_camera}",
        ]
        return [f"prcc/rgb/{split}" for split in splits]

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.dataset_dir = require_dir(os.path.join(root, "prcc", "rgb"), LAYOUT)

        train, self.train_clothes = [], []
        if self.has_train:
            train, self.train_clothes = self._train_items()
        query, self.query_clothes = self._test_items(self.query_camera)
        gallery, self.gallery_clothes = self._test_items(self.gallery_camera)

        super().__init__(train, query, gallery, **kwargs)
        if self.combineall:  # keep train_clothes parallel to the combined train list
            self.train_clothes = self.train_clothes + self.query_clothes + self.gallery_clothes

    def _train_items(self):
        items, clothes = [], []
        for path in list_images(os.path.join(self.dataset_dir, "train"), LAYOUT, recursive=True):
            pid, camera = parse_prcc_train_path(path)
            items.append(
                (path, f"{self.dataset_name}_{pid}", f"{self.dataset_name}_{CAMERAS[camera]}")
            )
            clothes.append(_clothes_key(pid, camera))
        return items, clothes

    def _test_items(self, camera):
        # The camera comes from the folder; test image names are not parsed.
        directory = os.path.join(self.dataset_dir, "test", camera)
        items, clothes = [], []
        for path in list_images(directory, LAYOUT, recursive=True):
            pid = _pid_from_folder(path, LAYOUT)
            items.append((path, pid, CAMERAS[camera]))
            clothes.append(_clothes_key(pid, camera))
        return items, clothes


@DATASET_REGISTRY.register()
class PRCC(_PRCCBase):
    """PRCC cross-clothes protocol: query test/C, gallery test/A (module docstring)."""

    dataset_name = "PRCC"
    CLOTHES_PROTOCOLS = ("general", "CC")  # query C: every match is in other clothes
    # The documented statistics (module docstring) per folder under prcc/rgb/, as data.
    DOCUMENTED = {
        "train": dict(ids=150, images=17896),
        "test/A": dict(ids=71, images=3384),
        "test/B": dict(ids=71, images=3873),
        "test/C": dict(ids=71, images=3543),
    }


@DATASET_REGISTRY.register()
class PRCCSameClothes(_PRCCBase):
    """PRCC same-clothes protocol, test only: query test/B, gallery test/A."""

    dataset_name = "PRCCSameClothes"
    has_train = False
    query_camera = "B"
    CLOTHES_PROTOCOLS = ("general", "SC")  # query B: every match is in the same clothes
    # The folders it reads: gallery test/A, query test/B.
    DOCUMENTED = {split: PRCC.DOCUMENTED[split] for split in ("test/A", "test/B")}
