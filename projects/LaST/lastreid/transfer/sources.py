"""The rows of the transfer table: pre-training sources from checkpoint files, from runs
this project trains (`--train`: BoT, or the base recipe on LaST's clothes classes), the
ImageNet file itself, or random initialisation. Each row knows the datasets its model was
trained on (its cells there read "source" and are not run) and, from the config.yaml of
the run beside its file, the model its cells build (`model_overrides`)."""

import os
import re
from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from ..atomic import save_atomic
from ..checkpoint import LAYOUT_FASTREID, LAYOUT_REFERENCE, LAYOUT_TORCHVISION, checkpoint_layout
from ..errors import InputError, MissingFileError
from ..experiments.folder import config_value, run_config
from ..modeling import build_model
from ..startup import build_cfg

__all__ = ["CONFIGS", "DATASETS", "IMAGENET", "PAPER_SELECTION", "RANDOM_INIT", "SOURCE_RECIPES"]
__all__ += ["Source", "discover_sources", "model_overrides", "slugify", "trained_sources"]
__all__ += ["training_datasets", "write_random_init"]

# The targets in column order: clothes-changing (PRCC, Celeb-reID), short-term, then the
# other long-term benchmarks (general protocol).
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
# Trained sources whose model the paper's code selects elsewhere: under the paper protocol
# their row is a run of its own with these overrides (last_cloth_train_base_imagenet.py
# keeps the best (Rank-1 + mAP) / 2 on Market-1501 test, evaluated after every epoch; only
# the newest periodic checkpoint is kept, model_best.pth being a copy).
PAPER_SELECTION = {
    "LaSTClothes": ["DATASETS.TESTS", '("Market1501",)', "TEST.FINAL_TESTS", "()"]
    + [
        "TEST.EVAL_PERIOD",
        "1",
        "SOLVER.CHECKPOINT_PERIOD",
        "1",
        "SOLVER.KEEP_LAST_CHECKPOINTS",
        "1",
    ]
}
CONFIGS = {
    "reference": {
        "direct": "configs/transfer/direct.yml",
        "finetune": {d: f"configs/{d}/bagtricks_R50_finetune.yml" for d in DATASETS},
    },
    "synthetic": {
        "sources": {"LaST": "configs/LaST/bagtricks_R50_synthetic.yml"},
        "direct": "configs/transfer/direct_synthetic.yml",
        "finetune": {d: f"configs/{d}/bagtricks_R50_finetune_synthetic.yml" for d in DATASETS},
    },
}
# MODEL keys of a row's run that belong to that run, not to its model: the cells set their
# own (device, weights, classes of their target, losses of their recipe, the stem from the
# file's layout).
RUN_KEYS = set(
    "MODEL.DEVICE MODEL.WEIGHTS MODEL.LOAD_CLASSIFIER MODEL.TRUST_CHECKPOINTS MODEL.LOSSES "
    "MODEL.BACKBONE.PRETRAIN MODEL.BACKBONE.PRETRAIN_PATH MODEL.BACKBONE.TORCHVISION_STEM "
    "MODEL.HEADS.NUM_CLASSES MODEL.CAL.NUM_CLOTHES MODEL.FREEZE_LAYERS MODEL.CPU_BF16 "
    "MODEL.CHANNELS_LAST".split()
)


@dataclass
class Source:
    """A pre-training source: a checkpoint (path) or random initialisation (path None).
    `train`: the config of the run that makes `path` (a trained source), else None."""

    name: str
    path: Optional[str] = None
    layout: str = LAYOUT_FASTREID
    train: Optional[str] = None
    error: str = ""
    trained_on: tuple = ()  # datasets the model was trained on (those cells: "source")
    # A trained source's model under the paper protocol when the paper's code selects it
    # elsewhere (PAPER_SELECTION): a Source of its own run, else None (the same model).
    paper: Optional["Source"] = None
    train_opts: list = field(default_factory=list)  # its run's own overrides
    run_suffix: str = ""  # its run's folder: sources/<slug><run_suffix>

    @property
    def torchvision_stem(self):
        """The reference / torchvision max-pool for the checkpoints trained with it."""
        return self.layout in (LAYOUT_REFERENCE, LAYOUT_TORCHVISION)

    @property
    def slug(self):
        return slugify(self.name)


def slugify(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "source"


def trained_sources(output, names, imagenet=None, preset="reference"):
    """The rows of `--train`: "ImageNet" (the file itself, when given), then each of `names`
    trained with its recipe, its model the file the recipe keeps under
    `<output>/sources/<name>/`; the paper's other selection, where it has one, under
    `<output>/sources/<name>-paper/` (`Source.paper`)."""
    unknown = ", ".join(repr(n) for n in names if n not in SOURCE_RECIPES)
    if unknown:
        raise InputError(f"--train: unknown source {unknown}; known: {', '.join(SOURCE_RECIPES)}")
    sources = []
    if imagenet:
        if not os.path.isfile(imagenet):
            raise MissingFileError("--imagenet {}: no such file".format(imagenet))
        sources.append(Source(IMAGENET, os.path.abspath(imagenet), LAYOUT_TORCHVISION))
    for name in (n for n in SOURCE_RECIPES if n in names):
        config, kept = SOURCE_RECIPES[name]
        config = CONFIGS.get(preset, {}).get("sources", {}).get(name, config)
        folder = os.path.join(os.path.abspath(output), "sources", slugify(name))
        source = Source(name, os.path.join(folder, kept), train=config, trained_on=(name,))
        if name in PAPER_SELECTION:
            paper = os.path.join(folder + "-paper", "model_best.pth")
            source.paper = replace(source, path=paper, run_suffix="-paper")
            source.paper.train_opts = list(PAPER_SELECTION[name])
        sources.append(source)
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
    """The datasets a checkpoint file's model was trained on: DATASETS.NAMES of the
    config.yaml beside it, else the dataset of `known` the row's name spells, in any case
    ("Market1501.pth"), else ()."""
    names = config_value(_beside(path), "DATASETS.NAMES")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return tuple(d for d in known if d.lower() == name.lower())


def model_overrides(path):
    """KEY VALUE overrides that build the model a checkpoint file holds, from the
    config.yaml beside it: its whole MODEL subtree but the RUN_KEYS (a new head's own keys
    and MODEL.IMPORTS included) and its input size; [] without one (the cells' own model)."""
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
    """Builds the cells' model (config + overrides) with seeded random weights and saves it
    in fastreid's `{'model': state_dict}` layout."""
    cfg = build_cfg(
        config_file, list(opts) + ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu"]
    )
    torch.manual_seed(seed)
    model = build_model(cfg)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_atomic({"model": state}, path)
