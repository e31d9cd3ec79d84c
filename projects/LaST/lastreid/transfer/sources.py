"""The rows of the transfer table: checkpoint files, runs trained here (`--train`), the ImageNet
file, random initialisation; each with the datasets its model was trained on."""

import os
import re
from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from ..atomic import save_atomic
from ..checkpoint import LAYOUT_FASTREID, LAYOUT_REFERENCE, LAYOUT_TORCHVISION, checkpoint_layout
from ..errors import InputError, MissingFileError
from ..experiments.folder import config_value
from ..modeling import build_model
from ..run_results import run_config
from ..startup import build_cfg

__all__ = ["CONFIGS", "DATASETS", "SOURCE_RECIPES", "Source", "discover_sources"]
__all__ += ["model_overrides", "trained_sources", "training_datasets", "write_random_init"]

# The targets in column order: clothes-changing, short-term, the other long-term benchmarks.
DATASETS = ("PRCC", "CelebReID", "Market1501", "DukeMTMC", "LTCC", "DeepChange", "VCClothes")
RANDOM_INIT = "random init"
IMAGENET = "ImageNet"
# Sources trained here, in the paper's row order (LaSTClothes last): config and the file the
# recipe keeps (LaST's: the best on LaST val). Each is trained on the dataset it is named after.
SOURCE_RECIPES = {
    "Market1501": ("configs/Market1501/bagtricks_R50.yml", "model_final.pth"),
    "DukeMTMC": ("configs/DukeMTMC/bagtricks_R50.yml", "model_final.pth"),
    "MSMT17": ("configs/MSMT17/bagtricks_R50.yml", "model_final.pth"),
    "LaST": ("configs/LaST/bagtricks_R50.yml", "model_best.pth"),
    "LaSTClothes": ("configs/LaST/clothes_R50.yml", "model_best.pth"),
}
# Trained sources the paper's code selects elsewhere: under the paper protocol a run of its
# own (last_cloth_train_base_imagenet.py keeps the best (R1 + mAP) / 2 on Market-1501 test).
PAPER_SELECTION = {
    "LaSTClothes": 'DATASETS.TESTS ("Market1501",) TEST.FINAL_TESTS () TEST.EVAL_PERIOD 1 '
    "SOLVER.CHECKPOINT_PERIOD 1 SOLVER.KEEP_LAST_CHECKPOINTS 1"
}
CONFIGS = {  # the paper's recipes, and the demo's short ones (--preset)
    preset: {
        "direct": f"configs/transfer/direct{end}.yml",
        "finetune": {d: f"configs/{d}/bagtricks_R50_finetune{end}.yml" for d in DATASETS},
    }
    for preset, end in (("reference", ""), ("synthetic", "_synthetic"))
}
CONFIGS["synthetic"]["sources"] = {"LaST": "configs/LaST/bagtricks_R50_synthetic.yml"}
# MODEL keys of a row's run that are the run's, not its model's: the cells set their own.
RUN_KEYS = set(
    "MODEL.DEVICE MODEL.WEIGHTS MODEL.LOAD_CLASSIFIER MODEL.TRUST_CHECKPOINTS MODEL.LOSSES "
    "MODEL.BACKBONE.PRETRAIN MODEL.BACKBONE.PRETRAIN_PATH MODEL.BACKBONE.TORCHVISION_STEM "
    "MODEL.HEADS.NUM_CLASSES MODEL.CAL.NUM_CLOTHES MODEL.FREEZE_LAYERS MODEL.CPU_BF16 "
    "MODEL.CHANNELS_LAST".split()
)


@dataclass
class Source:
    """A checkpoint (path; None: random init); `train`: the config of the run making it."""

    name: str
    path: Optional[str] = None
    layout: str = LAYOUT_FASTREID
    train: Optional[str] = None
    error: str = ""
    trained_on: tuple = ()  # datasets the model was trained on (those cells: "source")
    paper: Optional["Source"] = None  # its model under the paper protocol (PAPER_SELECTION)
    train_opts: list = field(default_factory=list)  # its run's own overrides
    run_suffix: str = ""  # its run's folder: sources/<slug><run_suffix>

    @property
    def torchvision_stem(self):  # the checkpoints trained with its max-pool
        return self.layout in (LAYOUT_REFERENCE, LAYOUT_TORCHVISION)

    @property
    def slug(self):  # its name in file names
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-.") or "source"


def trained_sources(output, names, imagenet=None, preset="reference"):
    """The rows of `--train`: "ImageNet" (if given), then `names`, trained under sources/<name>/."""
    sources = []
    if imagenet:
        if not os.path.isfile(imagenet):
            raise MissingFileError("--imagenet {}: no such file".format(imagenet))
        sources.append(Source(IMAGENET, os.path.abspath(imagenet), LAYOUT_TORCHVISION))
    for name in (n for n in SOURCE_RECIPES if n in names):
        config, kept = SOURCE_RECIPES[name]
        config = CONFIGS.get(preset, {}).get("sources", {}).get(name, config)
        source = Source(name, train=config, trained_on=(name,))
        folder = os.path.join(os.path.abspath(output), "sources", source.slug)
        source.path = os.path.join(folder, kept)
        if name in PAPER_SELECTION:
            paper = os.path.join(folder + "-paper", "model_best.pth")
            source.paper = replace(source, path=paper, run_suffix="-paper")
            source.paper.train_opts = PAPER_SELECTION[name].split()
        sources.append(source)
    return sources


def discover_sources(folder=None, pairs=(), random_init=False, trust=False, first=()):
    """Sources in table order: random init, `first`, the folder's *.pth, `pairs` (name, path)."""
    sources = ([Source(RANDOM_INIT)] if random_init else []) + list(first)
    if folder and not os.path.isdir(folder):
        raise MissingFileError("--models {}: no such folder".format(folder))
    files = [n for n in sorted(os.listdir(folder) if folder else []) if n.endswith(".pth")]
    found = [(n[: -len(".pth")], os.path.join(folder, n)) for n in files if n[0] != "."]
    for name, path in found + list(pairs):
        if not os.path.isfile(path):
            raise MissingFileError("source {!r}: {} does not exist".format(name, path))
        layout = checkpoint_layout(path, trust=trust)
        trained_on = training_datasets(path, name)
        sources.append(Source(name, os.path.abspath(path), layout, trained_on=trained_on))
    slugs = [s.slug for s in sources]
    for i, s in enumerate(sources):
        if s.slug in slugs[:i]:
            other = sources[slugs.index(s.slug)].name
            raise InputError(f"two sources named {other!r} and {s.name!r} (file names {s.slug!r})")
    if not sources:
        raise InputError(
            "no sources: give --models DIR with *.pth files, --source NAME=PATH, "
            "--train NAMES, --imagenet FILE or --random-init"
        )
    return sources


def _beside(path):  # the config.yaml of the run that wrote a checkpoint file
    return run_config(os.path.dirname(os.path.abspath(path)))


def training_datasets(path, name, known=DATASETS):
    """DATASETS.NAMES of the config.yaml beside a checkpoint, else the `known` one in its name."""
    names = config_value(_beside(path), "DATASETS.NAMES")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return tuple(d for d in known if d.lower() == name.lower())


def model_overrides(path):
    """KEY VALUE overrides building a checkpoint's model, from the config.yaml beside it: its
    MODEL subtree but RUN_KEYS (MODEL.IMPORTS included), its input size; [] without one."""
    config = _beside(path)
    if config is None:
        return []
    pairs = _flatten("MODEL", config.get("MODEL") or {})
    pairs += [(k, config_value(config, k)) for k in ("INPUT.SIZE_TRAIN", "INPUT.SIZE_TEST")]
    return [x for k, v in pairs if v is not None for x in (k, v if isinstance(v, str) else repr(v))]


def _flatten(prefix, tree):
    if prefix in RUN_KEYS:
        return []
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    return [kv for k in sorted(tree) for kv in _flatten(f"{prefix}.{k}", tree[k])]


def write_random_init(path, config_file, opts, seed=0):
    """Saves the cells' model with seeded random weights, as fastreid's {'model': state}."""
    cfg = build_cfg(config_file, [*opts, "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(seed)
    model = build_model(cfg)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_atomic({"model": state}, path)
