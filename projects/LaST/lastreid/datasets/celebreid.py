"""Celeb-reID: street snapshots of celebrities, mostly in different clothes.

Reference:
    Huang et al. Celebrities-ReID: A Benchmark for Clothes Variation in Long-Term
    Person Re-Identification. IJCNN, 2019.

Layout (under ``<root>/Celeb-reID/``)::

    train/*.jpg   query/*.jpg   gallery/*.jpg     names: <pid>_<n>_<x>.jpg

Documented statistics:
    - train: 632 ids / 20,208 images
    - query: 420 ids / 2,972 images; gallery: 420 ids / 11,006 images

There are no camera labels, so every test image gets its own camid (query i -> i,
gallery j -> n_query + j). The public LaST code restarts its camid counter for each
split, so query i and gallery i share a camid and fastreid-style evaluators, which
drop gallery images with the query's pid and camid, can silently drop a true match;
unique camids avoid that. There are no clothes labels: ``train_clothes``,
``query_clothes`` and ``gallery_clothes`` are None.
"""

import os

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from .common import DatasetLayoutError, list_images, own_camid_per_image, parse_int, require_dir

__all__ = ["CelebReID", "parse_celebreid_name"]

LAYOUT = "<root>/Celeb-reID/ with flat train/, query/ and gallery/ folders of <pid>_<n>_<x>.jpg"
NAME_FORMAT = "3 '_'-separated fields <pid>_<n>_<x>.jpg with an integer <pid>"


def parse_celebreid_name(path):
    """Returns the person id of a Celeb-reID image, e.g. 12 for 12_3_0.jpg."""
    fields = os.path.splitext(os.path.basename(path))[0].split("_")
    if len(fields) != 3:
        raise DatasetLayoutError("cannot parse the Celeb-reID image name", path, NAME_FORMAT)
    return parse_int(fields[0], path, NAME_FORMAT)


@DATASET_REGISTRY.register()
class CelebReID(ImageDataset):
    """Celeb-reID (see the module docstring)."""

    dataset_dir = "Celeb-reID"
    dataset_name = "CelebReID"
    HAS_CLOTHES = False
    train_clothes = query_clothes = gallery_clothes = None  # not labelled
    # The documented statistics (module docstring) per folder under Celeb-reID/, as data.
    DOCUMENTED = {
        "train": dict(ids=632, images=20208),
        "query": dict(ids=420, images=2972),
        "gallery": dict(ids=420, images=11006),
    }

    LAYOUT = LAYOUT

    SYNTHETIC_KEY = "celebreid"  # lastreid.datasets.synthetic's name for this tree

    @classmethod
    def split_reader(cls, split):
        """(recursive, path -> person id) of a split folder of DOCUMENTED, for the checker."""
        return False, parse_celebreid_name

    @classmethod
    def required_folders(cls):
        """The folders (relative to the datasets root) this dataset reads."""
        return [f"Celeb-reID/{split}" for split in ("train", "query", "gallery")]

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.dataset_dir = require_dir(os.path.join(root, "Celeb-reID"), LAYOUT)

        # One constant train camera: Celeb-reID has no camera labels.
        camid = f"{self.dataset_name}_0"
        train = [
            (path, f"{self.dataset_name}_{parse_celebreid_name(path)}", camid)
            for path in self._images("train")
        ]
        query, gallery = own_camid_per_image(
            [(path, parse_celebreid_name(path)) for path in self._images("query")],
            [(path, parse_celebreid_name(path)) for path in self._images("gallery")],
        )
        super().__init__(train, query, gallery, **kwargs)

    def _images(self, split):
        return list_images(os.path.join(self.dataset_dir, split), LAYOUT)
