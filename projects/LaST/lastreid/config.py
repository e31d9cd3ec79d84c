"""The config keys lastreid adds on top of fastreid's defaults (docs/config_keys.md).
A leaf: `lastreid.startup.build_cfg` merges and checks them.

A model's own block of keys (MODEL.PCB, ...) is added by the module that registers the
model, with `register_keys`, beside its range rules (`config_checks.register_rules`): a
head outside lastreid (MODEL.IMPORTS) brings its keys the same way."""

from fastreid.config import CfgNode as CN

__all__ = ["add_lastreid_config", "register_keys"]

# Functions cfg -> None that add a model's keys, in the order they were registered.
_MODEL_KEYS = []


def register_keys(add_keys):
    """Has `add_lastreid_config` call `add_keys(cfg)` after the project's keys (once per
    function, so a module imported again adds nothing twice). Returns `add_keys`."""
    if add_keys not in _MODEL_KEYS:
        _MODEL_KEYS.append(add_keys)
    return add_keys


def add_lastreid_config(cfg):
    """Adds every key the project uses, then the registered models' keys; call it right
    after `fastreid.config.get_cfg()`."""
    _C = cfg

    # Evaluation -------------------------------------------------------------------------
    # Queries per block of the exact blocked evaluator (0: chosen from TEST.EVAL_MEMORY_MB).
    _C.TEST.QUERY_BLOCK_SIZE = 0
    # Memory budget, in MB (at least 1), for one block of query x gallery distances.
    _C.TEST.EVAL_MEMORY_MB = 512
    # Datasets evaluated once after training with the best checkpoint (by the "metric"
    # of the first of DATASETS.TESTS); e.g. train on LaSTVal selection, report LaST test.
    _C.TEST.FINAL_TESTS = ()
    # PRCC single-shot protocol: one random gallery image per identity, averaged over
    # TRIALS (at least 1) draws seeded by SEED (0 or more), beside the full-gallery numbers.
    _C.TEST.SINGLE_SHOT = CN({"ENABLED": False})
    _C.TEST.SINGLE_SHOT.TRIALS = 10
    _C.TEST.SINGLE_SHOT.SEED = 0

    # Plugins --------------------------------------------------------------------------
    # Modules imported before the model is built (as mmengine's custom_imports): a module
    # name on the Python path or a .py file (a relative one made absolute from the working
    # folder, so the run's config.yaml finds it from anywhere), e.g. a head registered in
    # fastreid's REID_HEADS_REGISTRY outside lastreid. lastreid.plugins.
    _C.MODEL.IMPORTS = []

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
    # How many of the newest periodic checkpoints (model_0009.pth, ...) a run keeps; older
    # ones are removed after each save. 0 keeps them all, as fast-reid does. model_best.pth,
    # model_final.pth and the file last_checkpoint names are never removed.
    _C.SOLVER.KEEP_LAST_CHECKPOINTS = 0

    # Runs -------------------------------------------------------------------------------
    # Seed of the Python, NumPy and torch generators (model init, sampler, augmentation);
    # negative: a fresh seed per run, logged, as fast-reid does.
    _C.SEED = -1

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
    # bfloat16 autocast on CPU ("auto", "on", "off"). auto: CPU training only (with native
    # bf16), evaluation in float32 so numbers do not depend on the CPU; on: both.
    # SOLVER.AMP.ENABLED stays fp16 on CUDA.
    _C.MODEL.CPU_BF16 = "auto"

    # Distributed (torchrun) ---------------------------------------------------------------
    # Minutes (more than 0) any collective (gradient all-reduce, barrier, feature gather)
    # may wait for the other processes before this one fails: a process that died never
    # answers. Long enough for the main process's evaluation while the others wait at the
    # next barrier.
    _C.DISTRIBUTED = CN()
    _C.DISTRIBUTED.TIMEOUT_MINUTES = 30.0

    for add_keys in _MODEL_KEYS:
        add_keys(_C)
    return cfg
