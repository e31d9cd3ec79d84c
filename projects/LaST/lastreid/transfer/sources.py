"""The rows of the transfer table: pre-training sources from checkpoint files, from runs
this project trains (`--train`: BoT, or the base recipe on LaST's clothes classes), the
ImageNet file itself, or random initialisation. Each row knows the datasets its model was
trained on: its cells on them are shown as "source" and not run."""

import os
import re
from dataclasses import dataclass, field
from typing import Optional

import torch
import yaml

from ..atomic import save_atomic
from ..checkpoint import LAYOUT_FASTREID, LAYOUT_REFERENCE, LAYOUT_TORCHVISION, checkpoint_layout
from ..errors import InputError, MissingFileError
from ..modeling import build_model
from ..startup import build_cfg
from .report import DATASETS

__all__ = [
    "CONFIGS",
    "IMAGENET",
    "PAPER_ROWS",
    "PAPER_SELECTION",
    "RANDOM_INIT",
    "MODEL_KEYS",
    "ROW_ORDER",
    "SOURCE_RECIPES",
    "Source",
    "discover_sources",
    "model_overrides",
    "run_config",
    "slugify",
    "trained_sources",
    "training_datasets",
    "weights_signature",
    "write_random_init",
]

RANDOM_INIT = "random init"

# Pre-training sources trained here (BoT; LaSTClothes: the base recipe): config, and the file
# the recipe keeps. Each is trained on the dataset it is named after.
IMAGENET = "ImageNet"
PAPER_ROWS = (IMAGENET, "Market1501", "DukeMTMC", "MSMT17", "LaST")
ROW_ORDER = PAPER_ROWS + ("LaSTClothes",)
SOURCE_RECIPES = {
    "Market1501": ("configs/Market1501/bagtricks_R50.yml", "model_final.pth"),
    "DukeMTMC": ("configs/DukeMTMC/bagtricks_R50.yml", "model_final.pth"),
    "MSMT17": ("configs/MSMT17/bagtricks_R50.yml", "model_final.pth"),
    "LaST": ("configs/LaST/bagtricks_R50.yml", "model_best.pth"),  # best on LaST val
    "LaSTClothes": ("configs/LaST/clothes_R50.yml", "model_best.pth"),  # best on LaST val
}
# The keys that say what a checkpoint's model is (groups: every key under them), taken
# from its run's config.yaml for the cells of its row (`model_overrides`). The stem is not
# among them: the row's checkpoint layout decides it (TransferMatrix._stem).
MODEL_KEYS = (
    "MODEL.META_ARCHITECTURE",
    "MODEL.BACKBONE.NAME",
    "MODEL.BACKBONE.DEPTH",
    "MODEL.BACKBONE.LAST_STRIDE",
    "MODEL.BACKBONE.FEAT_DIM",
    "MODEL.BACKBONE.NORM",
    "MODEL.BACKBONE.WITH_IBN",
    "MODEL.BACKBONE.WITH_SE",
    "MODEL.BACKBONE.WITH_NL",
    "MODEL.HEADS.NAME",
    "MODEL.HEADS.NORM",
    "MODEL.HEADS.POOL_LAYER",
    "MODEL.HEADS.NECK_FEAT",
    "MODEL.HEADS.EMBEDDING_DIM",
    "MODEL.HEADS.WITH_BNNECK",
    "MODEL.PCB",
    "MODEL.HPM",
    "MODEL.PAPER_MGN",
    "INPUT.SIZE_TRAIN",
    "INPUT.SIZE_TEST",
)
# Trained sources whose model the paper's code selects elsewhere: under the paper protocol
# their row is a run of its own with these overrides (last_cloth_train_base_imagenet.py
# keeps the best (Rank-1 + mAP) / 2 on Market-1501 test, evaluated after every epoch; only
# the newest periodic checkpoint is kept, model_best.pth being a copy).
# fmt: off
PAPER_SELECTION = {
    "LaSTClothes": [
        "DATASETS.TESTS", '("Market1501",)',
        "TEST.FINAL_TESTS", "()",
        "TEST.EVAL_PERIOD", "1",
        "SOLVER.CHECKPOINT_PERIOD", "1",
        "SOLVER.KEEP_LAST_CHECKPOINTS", "1",
    ],
}
# fmt: on
PAPER_RUN_SUFFIX = "-paper"  # sources/<name>-paper/: the run of PAPER_SELECTION

CONFIGS = {
    "reference": {
        "direct": "configs/transfer/direct.yml",
        "finetune": {
            name: "configs/{}/bagtricks_R50_finetune.yml".format(name) for name in DATASETS
        },
    },
    "synthetic": {
        "sources": {"LaST": "configs/LaST/bagtricks_R50_synthetic.yml"},
        "direct": "configs/transfer/direct_synthetic.yml",
        "finetune": {
            name: "configs/{}/bagtricks_R50_finetune_synthetic.yml".format(name)
            for name in DATASETS
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
    trained_on: tuple = ()  # datasets the model was trained on (those cells: "source")
    # A trained source's model under the paper protocol when the paper's code selects it
    # elsewhere (PAPER_SELECTION): a Source of its own run, else None (the same model).
    paper: Optional["Source"] = None
    train_opts: list = field(default_factory=list)  # its run's own overrides
    run_suffix: str = ""  # its run's folder: sources/<slug><run_suffix>

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
    """The sources of `--train` in the paper's row order (LaSTClothes last): "ImageNet" (the
    file itself, when given), then each of `names` trained with its recipe, its model the
    file the recipe keeps under `<output>/sources/<name>/` (written by
    TransferMatrix.train_sources); the paper's other selection, where it has one, under
    `<output>/sources/<name>-paper/` (`Source.paper`)."""
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
    for name in ROW_ORDER:
        if name in names:
            config, kept = SOURCE_RECIPES[name]
            config = CONFIGS.get(preset, {}).get("sources", {}).get(name, config)
            folder = os.path.join(os.path.abspath(output), "sources", slugify(name))
            source = Source(name, os.path.join(folder, kept), train=config, trained_on=(name,))
            if name in PAPER_SELECTION:
                source.paper = Source(
                    name,
                    os.path.join(folder + PAPER_RUN_SUFFIX, "model_best.pth"),
                    train=config,
                    trained_on=(name,),
                    train_opts=list(PAPER_SELECTION[name]),
                    run_suffix=PAPER_RUN_SUFFIX,
                )
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
    for name, path in list(found) + list(pairs):
        if not os.path.isfile(path):
            raise MissingFileError("source {!r}: {} does not exist".format(name, path))
        layout = checkpoint_layout(path, trust=trust)
        trained_on = training_datasets(path, name)
        sources.append(Source(name, os.path.abspath(path), layout, trained_on=trained_on))
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


def run_config(path):
    """The merged config (a dict) of the run whose output folder holds the checkpoint file
    `path`: its config.yaml, which every train_net.py run writes there; None without one."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _value(config, key):
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def training_datasets(path, name, known=DATASETS):
    """The datasets a checkpoint file's model was trained on: DATASETS.NAMES of its run's
    config.yaml (`run_config`), else the dataset of `known` the row's name spells, in any
    case ("Market1501.pth"), else ()."""
    names = _value(run_config(path), "DATASETS.NAMES")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return tuple(d for d in known if d.lower() == name.lower())


def model_overrides(path):
    """KEY VALUE overrides that build the model a checkpoint file holds, from its run's
    config.yaml: the MODEL_KEYS it has (a PCB, HPM or MGN row's cells build that model at
    its input size); [] without one (the cells' own model: BoT)."""
    config = run_config(path)
    opts = []
    for key in MODEL_KEYS:
        value = _value(config, key)
        if isinstance(value, dict):  # a group: each of its keys
            opts += [x for k in sorted(value) for x in _override(f"{key}.{k}", value[k])]
        elif value is not None:
            opts += _override(key, value)
    return opts


def _override(key, value):
    return [key, value if isinstance(value, str) else repr(value)]


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
