"""Synthetic stand-ins for LaST, PRCC and Celeb-reID, for the other pre-training sources
Market-1501, DukeMTMC-reID and MSMT17, and for the other clothes-changing benchmarks LTCC,
DeepChange and VC-Clothes, for tests and the demo.

Writes small JPEG trees (128x64, H x W) in the exact on-disk layouts and file-name
patterns the dataset modules read (see lastreid/datasets/*.py), deterministically from
a seed (same seed, same files and pixels; each dataset has its own random stream).

Each drawn person has identity cues that never change: skin tone, hair colour and
length, head size, body height and width, shoe colour and, for some, a bag of a fixed
colour and side with its strap. Each outfit has its own upper/lower colours, sleeve and
trouser length and chest pattern, so clothes are a separate factor and a
clothes-changing test is meaningful. Per image: background colour, gradient and
clutter, position and scale jitter, leg gap, brightness and colour cast, pixel noise
and JPEG quality.

- LaST: persons have 1..max_outfits outfits; the last name field is the outfit index.
  A training person's images are spread evenly over its outfits, so each (person,
  outfit) class of LaSTClothes has train_images // outfits images or one more (the
  default preset: 138 classes of 3 to 10; fastreid's identity sampler draws a class with
  fewer than DATALOADER.NUM_INSTANCE images with replacement).
  Val and test persons are disjoint from train; test query and gallery images of a
  person are spread over all of its outfits, and the test gallery has a few
  gallery-only distractor persons.
- PRCC: cameras A and B see outfit 0, camera C outfit 1; train/val/test persons are
  disjoint.
- Celeb-reID: most images of a person show a new outfit (as in the real data).
- Market-1501, DukeMTMC-reID, MSMT17 (`SOURCE_DATASETS`, not written by default): one
  outfit per person, seen by several cameras (each its own background tone and distance),
  in the released layouts and names that fastreid's own classes read (see
  lastreid/datasets/fastreid_sources.py): Market's junk (-1, not counted) and distractor
  (0) images, Duke's gallery-only persons, MSMT17's list_{train,val,query,gallery}.txt.
  Each query's camera differs from its person's gallery cameras, so every query has a
  true match left after fastreid's same-camera filter.
- LTCC, DeepChange, VC-Clothes (`CC_DATASETS`, not written by default; see longterm.py):
  two or more outfits per person, several cameras, each test person's gallery covering
  all of its outfits, so general, same-clothes and clothes-changing protocols all have
  true matches; DeepChange with its ``<split>-bbox.txt`` lists and tracklet ids.

Re-running: a writer first deletes the dataset's own folder (``<root>/last``,
``<root>/prcc``, ``<root>/Celeb-reID``, ``<root>/LTCC_ReID``, ...) when it carries the
marker file written by a previous run, so files are never duplicated; it refuses
(FileExistsError) to touch a non-empty folder without that marker, e.g. a real dataset.
"""

import json
import os

from ...errors import InputError
from .clothes import write_celebreid, write_last, write_prcc
from .common import (
    ALL_DATASETS,
    CC_DATASETS,
    DATASETS,
    FOLDERS,
    MARKER,
    PRESETS,
    SOURCE_DATASETS,
)
from .drawing import IMAGE_SIZE
from .longterm import write_deepchange, write_ltcc, write_vcclothes
from .sources import write_dukemtmc, write_market1501, write_msmt17

__all__ = [
    "PRESETS",
    "DATASETS",
    "SOURCE_DATASETS",
    "CC_DATASETS",
    "ALL_DATASETS",
    "IMAGE_SIZE",
    "write_last",
    "write_prcc",
    "write_celebreid",
    "write_market1501",
    "write_dukemtmc",
    "write_msmt17",
    "write_ltcc",
    "write_deepchange",
    "write_vcclothes",
    "write_all",
    "read_counts",
]


_WRITERS = {
    "last": write_last,
    "prcc": write_prcc,
    "celebreid": write_celebreid,
    "market1501": write_market1501,
    "dukemtmc": write_dukemtmc,
    "msmt17": write_msmt17,
    "ltcc": write_ltcc,
    "deepchange": write_deepchange,
    "vcclothes": write_vcclothes,
}


def write_all(root, preset="default", seed=0, datasets=DATASETS, **sizes):
    """Writes the `preset` ("tiny" or "default") of each of `datasets` (default: LaST, PRCC
    and Celeb-reID; any of ALL_DATASETS) under `root`;
    size keywords override the preset for every dataset that has that size.
    Returns {dataset: counts per split}."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    unknown = set(sizes) - {key for d in datasets for key in PRESETS[preset][d]}
    if unknown:
        raise TypeError(f"unknown size(s) {sorted(unknown)} for datasets {list(datasets)}")
    counts = {}
    for dataset in datasets:
        preset_sizes = PRESETS[preset][dataset]
        chosen = {**preset_sizes, **{k: v for k, v in sizes.items() if k in preset_sizes}}
        counts[dataset] = _WRITERS[dataset](root, seed=seed, **chosen)
    return counts


def read_counts(root):
    """The counts reported by the last write of each synthetic dataset found under
    `root` (read from the marker files), as {dataset: counts per split}; datasets whose
    last write did not finish are left out."""
    counts = {}
    for dataset, folder in FOLDERS.items():
        marker = os.path.join(root, folder, MARKER)
        if os.path.isfile(marker):
            with open(marker) as f:
                written = json.load(f)["counts"]
            if written is not None:
                counts[dataset] = written
    return counts
