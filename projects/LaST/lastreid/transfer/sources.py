"""The rows of the transfer table: pre-training sources from checkpoint files, from BoT
runs this project trains (`--train`), the ImageNet file itself, or random initialisation."""

import os
import re
from dataclasses import dataclass
from typing import Optional

import torch

from ..atomic import save_atomic
from ..checkpoint import LAYOUT_FASTREID, LAYOUT_REFERENCE, LAYOUT_TORCHVISION, checkpoint_layout
from ..errors import InputError, MissingFileError
from ..modeling import build_model
from ..startup import build_cfg

__all__ = [
    "CONFIGS",
    "IMAGENET",
    "PAPER_ROWS",
    "RANDOM_INIT",
    "SOURCE_RECIPES",
    "Source",
    "discover_sources",
    "slugify",
    "trained_sources",
    "weights_signature",
    "write_random_init",
]

RANDOM_INIT = "random init"

# Pre-training sources BoT can be trained on here: config, and the file the recipe keeps.
IMAGENET = "ImageNet"
PAPER_ROWS = (IMAGENET, "Market1501", "DukeMTMC", "MSMT17", "LaST")
SOURCE_RECIPES = {
    "Market1501": ("configs/Market1501/bagtricks_R50.yml", "model_final.pth"),
    "DukeMTMC": ("configs/DukeMTMC/bagtricks_R50.yml", "model_final.pth"),
    "MSMT17": ("configs/MSMT17/bagtricks_R50.yml", "model_final.pth"),
    "LaST": ("configs/LaST/bagtricks_R50.yml", "model_best.pth"),  # best on LaST val
}

CONFIGS = {
    "reference": {
        "direct": "configs/transfer/direct.yml",
        "finetune": {
            "PRCC": "configs/PRCC/bagtricks_R50_finetune.yml",
            "CelebReID": "configs/CelebReID/bagtricks_R50_finetune.yml",
        },
    },
    "synthetic": {
        "sources": {"LaST": "configs/LaST/bagtricks_R50_synthetic.yml"},
        "direct": "configs/transfer/direct_synthetic.yml",
        "finetune": {
            "PRCC": "configs/PRCC/bagtricks_R50_finetune_synthetic.yml",
            "CelebReID": "configs/CelebReID/bagtricks_R50_finetune_synthetic.yml",
        },
    },
}


@dataclass
class Source:
    """A pre-training source: a checkpoint (path) or random initialisation (path None).
    `train`: the config of the BoT run that makes `path` (a trained source), else None."""

    name: str
    path: Optional[str] = None
    layout: str = LAYOUT_FASTREID
    train: Optional[str] = None
    error: str = ""

    @property
    def torchvision_stem(self):
        """The reference / torchvision max-pool for the checkpoints that were trained with it."""
        return self.layout in (LAYOUT_REFERENCE, LAYOUT_TORCHVISION)

    @property
    def slug(self):
        return slugify(self.name)


def slugify(name):
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return slug or "source"


def trained_sources(output, names, imagenet=None, preset="reference"):
    """The sources of `--train` in the paper's row order: "ImageNet" (the file itself, when
    given), then BoT trained on each of `names`, its model the file the recipe keeps under
    `<output>/sources/<name>/` (written by TransferMatrix.train_sources)."""
    unknown = [n for n in names if n not in SOURCE_RECIPES]
    if unknown:
        raise InputError(
            "--train: unknown source {}; known: {}".format(
                ", ".join(map(repr, unknown)), ", ".join(SOURCE_RECIPES)
            )
        )
    sources = []
    if imagenet:
        if not os.path.isfile(imagenet):
            raise MissingFileError("--imagenet {}: no such file".format(imagenet))
        sources.append(Source(IMAGENET, os.path.abspath(imagenet), LAYOUT_TORCHVISION))
    for name in PAPER_ROWS:
        if name in names:
            config, kept = SOURCE_RECIPES[name]
            config = CONFIGS.get(preset, {}).get("sources", {}).get(name, config)
            path = os.path.join(os.path.abspath(output), "sources", slugify(name), kept)
            sources.append(Source(name, path, LAYOUT_FASTREID, train=config))
    return sources


def discover_sources(folder=None, pairs=(), random_init=False, trust=False, first=()):
    """Sources in table order: random init (if asked), `first` (e.g. trained_sources), the
    folder's `*.pth` by name, then `pairs` of (name, path). Names (and their file-name
    slugs) must be unique."""
    sources = ([Source(RANDOM_INIT)] if random_init else []) + list(first)
    found = []
    if folder:
        if not os.path.isdir(folder):
            raise MissingFileError("--models {}: no such folder".format(folder))
        found = [
            (os.path.splitext(n)[0], os.path.join(folder, n))
            for n in sorted(os.listdir(folder))
            if n.endswith(".pth") and not n.startswith(".")
        ]
    for name, path in list(found) + list(pairs):
        if not os.path.isfile(path):
            raise MissingFileError("source {!r}: {} does not exist".format(name, path))
        sources.append(Source(name, os.path.abspath(path), checkpoint_layout(path, trust=trust)))
    seen = {}
    for s in sources:
        if s.slug in seen:
            raise InputError(
                "two sources named {!r} and {!r} (file names {!r}): rename one".format(
                    seen[s.slug], s.name, s.slug
                )
            )
        seen[s.slug] = s.name
    if not sources:
        raise InputError(
            "no sources: give --models DIR with *.pth files, --source NAME=PATH, "
            "--train NAMES, --imagenet FILE or --random-init"
        )
    return sources


def write_random_init(path, config_file, opts, seed=0):
    """Builds the cells' model (config + overrides) with seeded random weights and saves it
    in fastreid's `{'model': state_dict}` layout."""
    cfg = build_cfg(
        config_file, list(opts) + ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu"]
    )
    torch.manual_seed(seed)
    model = build_model(cfg)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_atomic({"model": state}, path)


def weights_signature(path):
    """Identifies one version of a checkpoint file: size, modification time and inode (an
    atomic rewrite is a new inode even within one tick of the file system's clock)."""
    st = os.stat(path)
    return "{}-{}-{}".format(st.st_size, st.st_mtime_ns, st.st_ino)
