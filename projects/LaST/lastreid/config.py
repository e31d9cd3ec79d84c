"""The config keys lastreid adds on top of fastreid's defaults, and the checked cfg every
tool starts from."""
import os

from fastreid.config import CfgNode as CN


def add_lastreid_config(cfg):
    """Adds every key the project uses; call it right after `fastreid.config.get_cfg()`."""
    _C = cfg

    # Evaluation -------------------------------------------------------------------------
    # Queries per block of the exact blocked evaluator (0: chosen from TEST.EVAL_MEMORY_MB).
    _C.TEST.QUERY_BLOCK_SIZE = 0
    # Memory budget, in MB, for one block of query x gallery distances.
    _C.TEST.EVAL_MEMORY_MB = 512
    # Datasets evaluated once after training with the best checkpoint (by the "metric"
    # of the first of DATASETS.TESTS); e.g. train on LaSTVal selection, report LaST test.
    _C.TEST.FINAL_TESTS = ()
    # PRCC single-shot protocol: one random gallery image per identity, averaged over
    # TRIALS seeded draws, reported beside the full-gallery numbers.
    _C.TEST.SINGLE_SHOT = CN({"ENABLED": False})
    _C.TEST.SINGLE_SHOT.TRIALS = 10
    _C.TEST.SINGLE_SHOT.SEED = 0

    # Checkpoints ------------------------------------------------------------------------
    # Fine-tuning starts from MODEL.WEIGHTS without its classifier (the classes differ).
    _C.MODEL.LOAD_CLASSIFIER = True
    # The public LaST code's (torchvision's) stem max-pool, MaxPool2d(3, 2, padding=1),
    # instead of fastreid's padding=0 / ceil_mode one: True for the reference and
    # ImageNet checkpoints, False for models trained with fastreid (our BoT).
    _C.MODEL.BACKBONE.TORCHVISION_STEM = False
    # Checkpoints are loaded with torch.load(weights_only=True); set this only for files
    # you trust that need arbitrary pickles.
    _C.MODEL.TRUST_CHECKPOINTS = False

    # Data -------------------------------------------------------------------------------
    # Resize interpolation of the training and test transforms of every loader and tool:
    # "bicubic" (fast-reid's) or "bilinear" (the public LaST code's). lastreid.transforms.
    _C.INPUT.INTERPOLATION = "bicubic"
    # Skip (and count) images that cannot be decoded instead of stopping with an error.
    _C.DATALOADER.SKIP_BAD_IMAGES = False

    # CPU fast path ----------------------------------------------------------------------
    # "auto", "on" or "off". auto: on for a CPU with native bfloat16, off otherwise
    # (channels-last stays off on CUDA under auto until measured on a GPU).
    _C.MODEL.CHANNELS_LAST = "auto"
    # bfloat16 autocast on CPU ("auto", "on", "off"); SOLVER.AMP.ENABLED stays fp16 on CUDA.
    _C.MODEL.CPU_BF16 = "auto"
    return cfg


def build_cfg(config_file="", opts=(), eval_only=False):
    """fastreid's config + ours, merged with a YAML file and `KEY VALUE` overrides, checked
    and frozen. Every problem it finds is reported before any work starts."""
    from fastreid.config import get_cfg

    from .engine import resolve_device

    cfg = add_lastreid_config(get_cfg())
    if config_file and not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file} does not exist")
    # yacs reports an unknown key with a bare AssertionError and a wrong type without saying
    # where it came from; name the source.
    if config_file:
        _merge(cfg.merge_from_file, config_file, config_file)
    _merge(cfg.merge_from_list, list(opts or []), "command line")
    if eval_only:
        cfg.MODEL.BACKBONE.PRETRAIN = False  # the weights come from MODEL.WEIGHTS
    resolve_device(cfg)
    check_cfg(cfg, eval_only=eval_only)
    cfg.freeze()
    return cfg


def _merge(merge, source, where):
    try:
        merge(source)
    except AssertionError as e:
        raise KeyError(f"{where}: {e}") from None
    except ValueError as e:
        hint = ""
        if "<class 'bool'>" in str(e):
            hint = ' (YAML reads a bare on/off/yes/no as a boolean: quote it, e.g. "off")'
        raise ValueError(f"{where}: {e}{hint}") from None


def check_cfg(cfg, eval_only=False):
    from fastreid.data.datasets import DATASET_REGISTRY

    from .transforms import interpolation_mode

    known = DATASET_REGISTRY._obj_map  # fastreid's Registry has no public listing
    datasets = [] if eval_only else list(cfg.DATASETS.NAMES)
    for key, names in (("DATASETS.NAMES", datasets), ("DATASETS.TESTS", cfg.DATASETS.TESTS),
                       ("TEST.FINAL_TESTS", cfg.TEST.FINAL_TESTS)):
        for name in names:
            if name not in known:
                raise KeyError(f"{key}: unknown dataset {name!r}; known: {', '.join(sorted(known))}")
    interpolation_mode(cfg)  # ValueError naming INPUT.INTERPOLATION
    backbone = cfg.MODEL.BACKBONE
    if backbone.PRETRAIN and not os.path.isfile(backbone.PRETRAIN_PATH):
        where = repr(backbone.PRETRAIN_PATH) if backbone.PRETRAIN_PATH else "not set"
        raise FileNotFoundError(
            f"MODEL.BACKBONE.PRETRAIN_PATH is {where}: put the torchvision ImageNet file "
            "(resnet50-0676ba61.pth) there and point the key at it, or train from scratch "
            "with MODEL.BACKBONE.PRETRAIN False (nothing is downloaded)"
        )
    if eval_only and not cfg.MODEL.WEIGHTS:
        raise ValueError("--eval-only needs MODEL.WEIGHTS <checkpoint.pth>")
    if eval_only and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise FileNotFoundError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} does not exist")
