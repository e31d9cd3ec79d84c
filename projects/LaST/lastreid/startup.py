"""What every tool does before any work: the checked, frozen config (`build_cfg`: yacs' types,
the modules of MODEL.IMPORTS (`lastreid.plugins`), then every value against
`lastreid.config_checks.RULES`, then the files it names), the
device it resolves to, and the check that a run can start without writing anything first."""

import argparse
import logging
import os
import re

import torch
from fastreid.config import get_cfg
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from . import modeling  # noqa: F401  (registers lastreid's models, their keys and rules)
from .config import add_lastreid_config
from .config_checks import check_values
from .datasets import check_dataset_folders, dataset_class
from .errors import ConfigError, ConfigKeyError, InputError, MissingFileError
from .interruptions import check_output_dir
from .plugins import import_plugins, resolve_plugin_paths

logger = logging.getLogger(__name__)

__all__ = [
    "add_overrides",
    "build_cfg",
    "check_cfg",
    "check_can_start",
    "needs_clothes",
    "on_cpu",
    "parse_with_overrides",
    "require_clothes_labels",
    "resolve_device",
]

_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def add_overrides(parser, help="KEY VALUE config overrides"):
    """The trailing `KEY VALUE ...` overrides of a tool (added last: they take the rest of
    the command line); read them with `parse_with_overrides`."""
    parser.add_argument("opts", nargs=argparse.REMAINDER, help=help)


def parse_with_overrides(parser, argv=None):
    """parser.parse_args(argv) with its trailing overrides checked, as every tool that takes
    them checks them: an optional leading "--" dropped, then KEY VALUE pairs whose keys are
    config keys (SOLVER.MAX_EPOCH); else parser.error's one line and exit status 2."""
    args = parser.parse_args(argv)
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    if len(args.opts) % 2:
        parser.error("overrides come in KEY VALUE pairs, got: " + " ".join(args.opts))
    for key in args.opts[0::2]:
        if not _KEY.match(key):
            parser.error(
                f"{key!r} is not a config KEY (e.g. SOLVER.MAX_EPOCH); the tool's own flags "
                "go before the KEY VALUE overrides"
            )
    return args


def build_cfg(config_file="", opts=(), eval_only=False):
    """fastreid's config + ours, merged with a YAML file and `KEY VALUE` overrides, checked
    and frozen. Every problem it finds is reported before any work starts."""
    if config_file and not os.path.isfile(config_file):
        raise MissingFileError(f"config file {config_file} does not exist")
    # MODEL.IMPORTS first, from a merge that accepts any key: the modules it names may add
    # the keys (and register the heads and rules) the real merge and the checks need.
    opts = list(opts or [])
    imports = [v for k, v in zip(opts[0::2], opts[1::2]) if k == "MODEL.IMPORTS"][-1:]
    scratch = _merged(config_file, ["MODEL.IMPORTS"] + imports if imports else [], True)
    import_plugins(resolve_plugin_paths(scratch))
    cfg = resolve_plugin_paths(_merged(config_file, opts))
    if eval_only:
        cfg.MODEL.BACKBONE.PRETRAIN = False  # the weights come from MODEL.WEIGHTS
    check_cfg(cfg, eval_only=eval_only)
    resolve_device(cfg)
    cfg.freeze()
    return cfg


def _merged(config_file, opts, new_allowed=False):
    cfg = add_lastreid_config(get_cfg())
    cfg.set_new_allowed(new_allowed)
    # yacs reports an unknown key with a bare AssertionError and a wrong type without saying
    # where it came from; name the source.
    if config_file:
        _merge(cfg.merge_from_file, config_file, config_file)
    _merge(cfg.merge_from_list, list(opts), "command line")
    cfg.set_new_allowed(False)
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
    """Raises a one-line error if a run of `cfg` could not start (a dataset folder missing,
    an OUTPUT_DIR that cannot be written), before it writes anything. The config itself was
    checked by `build_cfg`."""
    if cfg.OUTPUT_DIR:
        check_output_dir(cfg.OUTPUT_DIR)
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

