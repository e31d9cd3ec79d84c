"""The config keys lastreid adds on top of fastreid's defaults (docs/config_keys.md).
A leaf: `lastreid.startup.build_cfg` merges and checks them."""

from fastreid.config import CfgNode as CN


def add_lastreid_config(cfg):
    """Adds every key the project uses; call it right after `fastreid.config.get_cfg()`."""
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

    # The paper's other LaST baselines (lastreid.modeling; docs/baselines.md) -------
    # PCB (MODEL.HEADS.NAME PCBHead): horizontal stripes average-pooled from the backbone's
    # map (6), channels of the one Conv1x1-BN-ReLU reduction they share (256), dropout on
    # the pooled stripes in training (0.5). The test feature has NUM_STRIPES x FEAT_DIM dims.
    _C.MODEL.PCB = CN()
    _C.MODEL.PCB.NUM_STRIPES = 6
    _C.MODEL.PCB.REDUCTION_DIM = 256
    _C.MODEL.PCB.DROPOUT = 0.5
    # HPM (MODEL.HEADS.NAME HPMHead): the pyramid of max-pooled horizontal bins, as stripe
    # counts per level ((1, 2, 4, 8): 15 bins), each reduced to REDUCTION_DIM (256) channels;
    # the test feature has sum(BINS) x REDUCTION_DIM dims.
    _C.MODEL.HPM = CN()
    _C.MODEL.HPM.BINS = (1, 2, 4, 8)
    _C.MODEL.HPM.REDUCTION_DIM = 256
    # The paper's MGN (MODEL.META_ARCHITECTURE PaperMGN): channels of each of its 8
    # Conv1x1-BN-ReLU reductions (256); the test feature has 8 x REDUCTION_DIM dims.
    _C.MODEL.PAPER_MGN = CN()
    _C.MODEL.PAPER_MGN.REDUCTION_DIM = 256

    # CAL (MODEL.META_ARCHITECTURE CALBaseline, MODEL.HEADS.NAME CALHead; lastreid.modeling.cal,
    # docs/clothes_changing.md). The clothes classifier's loss (loss_clothes) and its own
    # optimizer's steps start at epoch START_EPOCH_CC (25), the clothes-based adversarial
    # loss (loss_cal) at START_EPOCH_ADV (25); both count epochs from 0. EPSILON (0.1): the
    # share of loss_cal's target spread over the identity's clothes classes. SCALE (16):
    # the factor on the clothes classifier's cosines in both losses. NUM_CLOTHES: clothes
    # classes of the training set (0: counted from it and saved in config.yaml, as
    # MODEL.HEADS.NUM_CLASSES).
    _C.MODEL.CAL = CN()
    _C.MODEL.CAL.START_EPOCH_CC = 25
    _C.MODEL.CAL.START_EPOCH_ADV = 25
    _C.MODEL.CAL.EPSILON = 0.1
    _C.MODEL.CAL.SCALE = 16.0
    _C.MODEL.CAL.NUM_CLOTHES = 0

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
    return cfg
