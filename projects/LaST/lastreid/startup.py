"""What every tool does before any work: the checked, frozen config (`build_cfg`: yacs' types,
then every value against `lastreid.config_checks.RULES`, then the files it names), the
device it resolves to, and the check that a run can start without writing anything first."""

import logging
import os

import torch
from fastreid.config import get_cfg
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from .config import add_lastreid_config
from .config_checks import check_values
from .datasets import check_dataset_folders, dataset_class
from .errors import ConfigError, ConfigKeyError, InputError, MissingFileError

logger = logging.getLogger(__name__)

__all__ = [
    "build_cfg",
    "check_cfg",
    "check_can_start",
    "needs_clothes",
    "on_cpu",
    "require_clothes_labels",
    "resolve_device",
]


def build_cfg(config_file="", opts=(), eval_only=False):
    """fastreid's config + ours, merged with a YAML file and `KEY VALUE` overrides, checked
    and frozen. Every problem it finds is reported before any work starts."""
    cfg = add_lastreid_config(get_cfg())
    if config_file and not os.path.isfile(config_file):
        raise MissingFileError(f"config file {config_file} does not exist")
    # yacs reports an unknown key with a bare AssertionError and a wrong type without saying
    # where it came from; name the source.
    if config_file:
        _merge(cfg.merge_from_file, config_file, config_file)
    _merge(cfg.merge_from_list, list(opts or []), "command line")
    if eval_only:
        cfg.MODEL.BACKBONE.PRETRAIN = False  # the weights come from MODEL.WEIGHTS
    check_cfg(cfg, eval_only=eval_only)
    resolve_device(cfg)
    cfg.freeze()
    return cfg


def _merge(merge, source, where):
    try:
        merge(source)
    except AssertionError as e:
        raise ConfigKeyError(f"{where}: {e}") from None
    except ValueError as e:
        hint = ""
        if "<class 'bool'>" in str(e):
            hint = ' (YAML reads a bare on/off/yes/no as a boolean: quote it, e.g. "off")'
        raise ConfigError(f"{where}: {e}{hint}") from None


def check_cfg(cfg, eval_only=False):
    """Raises a one-line LastreidError for the first value `RULES` does not allow (the
    training set's names are not needed for eval_only), then for a file the config names
    that is missing."""
    check_values(cfg, eval_only=eval_only)
    backbone = cfg.MODEL.BACKBONE
    if backbone.PRETRAIN and not os.path.isfile(backbone.PRETRAIN_PATH):
        where = repr(backbone.PRETRAIN_PATH) if backbone.PRETRAIN_PATH else "not set"
        raise MissingFileError(
            f"MODEL.BACKBONE.PRETRAIN_PATH is {where}: put the torchvision ImageNet file "
            "(resnet50-0676ba61.pth) there and point the key at it, or train from scratch "
            "with MODEL.BACKBONE.PRETRAIN False (nothing is downloaded)"
        )
    if eval_only and not cfg.MODEL.WEIGHTS:
        raise ConfigError("--eval-only needs MODEL.WEIGHTS <checkpoint.pth>")
    if eval_only and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise MissingFileError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} does not exist")


def on_cpu(cfg):
    return torch.device(cfg.MODEL.DEVICE).type == "cpu"


def resolve_device(cfg):
    """Falls back to the CPU (and turns fp16 AMP off) when CUDA is asked for but absent.

    Call it on an unfrozen cfg before the model is built.
    """
    if not on_cpu(cfg) and not torch.cuda.is_available():
        logger.warning(
            "MODEL.DEVICE is %s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE
        )
        cfg.MODEL.DEVICE = "cpu"
    if on_cpu(cfg) and cfg.SOLVER.AMP.ENABLED:
        logger.info("SOLVER.AMP.ENABLED is fp16 AMP for CUDA: turned off on the CPU")
        cfg.SOLVER.AMP.ENABLED = False
    return cfg


def check_can_start(cfg, eval_only=False):
    """Raises a one-line error if a run of `cfg` could not start (a dataset folder missing),
    before it writes anything. The config itself was checked by `build_cfg`."""
    names = list(cfg.DATASETS.TESTS)
    if not eval_only:
        require_clothes_labels(cfg, cfg.DATASETS.NAMES)
        names = list(cfg.DATASETS.NAMES) + names + list(cfg.TEST.FINAL_TESTS)
    check_dataset_folders(names)


def needs_clothes(cfg):
    """Whether cfg's meta-architecture trains on clothes classes (its `needs_clothes`)."""
    arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    return bool(getattr(arch, "needs_clothes", False))


def require_clothes_labels(cfg, names):
    """InputError (one line) naming the first of `names` without clothes labels when cfg's
    model trains on them; checked from the dataset classes, before anything is read."""
    if not needs_clothes(cfg):
        return
    for name in names:
        if not getattr(dataset_class(name), "HAS_CLOTHES", False):
            raise InputError(
                f"DATASETS.NAMES: {name} has no clothes labels, which "
                f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} trains on (datasets "
                "with them: LaST, PRCC, LTCC, DeepChange, VCClothes)"
            )

