"""What every synthetic writer shares: the presets, the per-dataset random stream, the
marker file that makes a re-run replace only what lastreid wrote, the tally of ids /
outfits / images per split, and the look of numbered cameras."""

import json
import logging
import os
import shutil

import numpy as np
from PIL import Image

from ...errors import ExistingFileError, InputError
from .drawing import hsv_colour, render_person

logger = logging.getLogger(__name__)

MARKER = ".lastreid-synthetic.json"
DATASETS = ("last", "prcc", "celebreid")  # written by default (the demo's)
SOURCE_DATASETS = ("market1501", "dukemtmc", "msmt17")  # the other pre-training sources
CC_DATASETS = ("ltcc", "deepchange", "vcclothes")  # the other clothes-changing benchmarks
ALL_DATASETS = DATASETS + SOURCE_DATASETS + CC_DATASETS
FOLDERS = {
    "last": "last",
    "prcc": "prcc",
    "celebreid": "Celeb-reID",
    "market1501": "Market-1501-v15.09.15",
    "dukemtmc": "DukeMTMC-reID",
    "msmt17": "MSMT17_V1",
    "ltcc": "LTCC_ReID",
    "deepchange": "DeepChangeDataset",
    "vcclothes": "VC-Clothes",
}
# One random stream per dataset.
_STREAMS = {
    "last": 1,
    "prcc": 2,
    "celebreid": 3,
    "market1501": 4,
    "dukemtmc": 5,
    "msmt17": 6,
    "ltcc": 7,
    "deepchange": 8,
    "vcclothes": 9,
}

# Sizes that may be 0 (every split needs images; these extras are optional).
_OPTIONAL_SIZES = ("distractor_ids", "distractor_images", "junk_images")
CAMERA_COUNTS = {
    "market1501": 6,
    "dukemtmc": 8,
    "msmt17": 15,
    "ltcc": 12,
    "deepchange": 17,
    "vcclothes": 4,
}


PRESETS = {
    "tiny": {
        "last": dict(
            train_ids=6,
            train_images=4,
            max_outfits=2,
            val_ids=3,
            test_ids=4,
            query_images=1,
            gallery_images=3,
            distractor_ids=1,
        ),
        "prcc": dict(train_ids=5, val_ids=2, test_ids=4, images_per_camera=2),
        "celebreid": dict(
            train_ids=5, train_images=4, test_ids=4, query_images=1, gallery_images=3
        ),
        "market1501": dict(
            train_ids=5,
            train_images=4,
            test_ids=4,
            query_images=1,
            gallery_images=3,
            distractor_images=2,
            junk_images=2,
        ),
        "dukemtmc": dict(
            train_ids=5,
            train_images=4,
            test_ids=4,
            query_images=1,
            gallery_images=3,
            distractor_ids=1,
        ),
        "msmt17": dict(
            train_ids=5, train_images=4, val_images=1, test_ids=4, query_images=1, gallery_images=3
        ),
        "ltcc": dict(
            train_ids=5, train_images=4, max_outfits=2, test_ids=4, query_images=2, gallery_images=4
        ),
        "deepchange": dict(
            train_ids=5,
            train_images=4,
            max_outfits=2,
            val_ids=3,
            test_ids=4,
            query_images=2,
            gallery_images=4,
        ),
        "vcclothes": dict(
            train_ids=5, train_images=4, test_ids=4, query_images=2, gallery_images=4
        ),
    },
    "default": {
        "last": dict(
            train_ids=72,
            train_images=10,
            max_outfits=3,
            val_ids=20,
            test_ids=30,
            query_images=2,
            gallery_images=8,
            distractor_ids=6,
        ),
        "prcc": dict(train_ids=60, val_ids=10, test_ids=30, images_per_camera=4),
        "celebreid": dict(
            train_ids=60, train_images=10, test_ids=30, query_images=2, gallery_images=8
        ),
        "market1501": dict(
            train_ids=60,
            train_images=10,
            test_ids=30,
            query_images=2,
            gallery_images=8,
            distractor_images=10,
            junk_images=10,
        ),
        "dukemtmc": dict(
            train_ids=60,
            train_images=10,
            test_ids=30,
            query_images=2,
            gallery_images=8,
            distractor_ids=6,
        ),
        "msmt17": dict(
            train_ids=60,
            train_images=10,
            val_images=1,
            test_ids=30,
            query_images=2,
            gallery_images=8,
        ),
        "ltcc": dict(
            train_ids=40,
            train_images=10,
            max_outfits=3,
            test_ids=20,
            query_images=2,
            gallery_images=8,
        ),
        "deepchange": dict(
            train_ids=40,
            train_images=10,
            max_outfits=3,
            val_ids=10,
            test_ids=20,
            query_images=2,
            gallery_images=8,
        ),
        "vcclothes": dict(
            train_ids=40, train_images=10, test_ids=20, query_images=4, gallery_images=8
        ),
    },
}


class TreeWriter:
    """Writes one dataset's images and tallies ids / outfits / images per split."""

    def __init__(self, root, dataset, seed, sizes):
        self.folder = os.path.join(root, FOLDERS[dataset])
        self.rng = np.random.default_rng([seed, _STREAMS[dataset]])
        self.meta = dict(dataset=dataset, seed=seed, sizes=sizes)
        self.splits = {}
        _clear_own_folder(self.folder)
        # Marker first: a run that fails half-way leaves a folder the next run may replace.
        self._write_marker(counts=None)

    def save(
        self, split, relpath, person, outfit, pid, outfit_key, tint=None, scale=1.0, counted=True
    ):
        """Writes one image; `counted=False` leaves it out of the counts (Market's junk)."""
        path = os.path.join(self.folder, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pixels = render_person(person, outfit, self.rng, tint, scale)
        Image.fromarray(pixels).save(path, quality=int(self.rng.integers(70, 96)))
        if not counted:
            return
        tally = self.splits.setdefault(split, dict(ids=set(), outfits=set(), images=0))
        tally["ids"].add(pid)
        tally["outfits"].add((pid, outfit_key))
        tally["images"] += 1

    def _write_marker(self, counts):
        with open(os.path.join(self.folder, MARKER), "w") as f:
            json.dump(dict(self.meta, counts=counts), f, indent=1, sort_keys=True)

    def finish(self):
        counts = {
            split: dict(ids=len(t["ids"]), outfits=len(t["outfits"]), images=t["images"])
            for split, t in self.splits.items()
        }
        self._write_marker(counts)
        logger.info("wrote synthetic %s to %s: %s", self.meta["dataset"], self.folder, counts)
        return counts


def _clear_own_folder(folder):
    if os.path.isdir(folder) and os.listdir(folder):
        if not os.path.isfile(os.path.join(folder, MARKER)):
            raise ExistingFileError(
                f"{folder} exists and was not written by lastreid's synthetic generator; "
                "not overwriting it"
            )
        shutil.rmtree(folder)
    os.makedirs(folder, exist_ok=True)


def dataset_sizes(dataset, sizes):
    unknown = set(sizes) - set(PRESETS["default"][dataset])
    if unknown:
        raise TypeError(
            f"unknown {dataset} size(s) {sorted(unknown)}; "
            f"known: {sorted(PRESETS['default'][dataset])}"
        )
    sizes = {**PRESETS["default"][dataset], **sizes}
    for key, value in sizes.items():
        # Every split needs images; only the distractor persons are optional.
        if not isinstance(value, int) or value < (0 if key in _OPTIONAL_SIZES else 1):
            raise InputError(f"{dataset} size {key}={value!r} must be a positive integer")
    return sizes


def camera_looks(rng, dataset):
    """(background tint, scale) per camera number 1..N: each camera its own background
    tone and viewing distance."""
    return {
        cam: (hsv_colour(rng, (0.0, 0.4), (0.35, 0.85)), rng.uniform(0.9, 1.05))
        for cam in range(1, CAMERA_COUNTS[dataset] + 1)
    }


def spread_images(rng, n_images, n_outfits):
    """Outfit index per image, covering every outfit when there are enough images."""
    order = list(rng.permutation(n_outfits)) * (n_images // n_outfits + 1)
    return [int(k) for k in order[:n_images]]
