"""The allowed values of the config keys, in one table: `RULES` (docs/config_keys.md).

One row per key, `Rule(key, check, note)`: `check` says what is allowed (the sentence that
both the error message and the manual's list use), `note` what a special value means
("0: keep them all"). `check_values(cfg)` runs the table on a merged config;
`startup.build_cfg` calls it before any process starts or anything is written, so a bad
value is one line, e.g. `SOLVER.MAX_EPOCH is -3: expected an integer >= 1`. A new key is
one more row here (and one more case in tests/test_config_ranges.py, which sweeps them all).

Sets of names are read when a config is checked, so what the plugin registers in fastreid's
registries later is accepted. What only the training set decides (the epochs of the
scheduler after the warm-up, enough images for a batch) is checked once it is read, before
the first step: `check_schedule` here, `launch.check_training_set`.
"""

import math
from dataclasses import dataclass
from functools import reduce
from typing import Any, Callable

import torch
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.layers import any_softmax, pooling
from fastreid.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, REID_HEADS_REGISTRY

from .errors import ConfigError, ConfigKeyError
from .evaluation.blocks import METRICS
from .fastreid_internals import (
    BASELINE_LOSSES,
    LR_SCHEDULERS,
    NECK_FEATS,
    NORM_NAMES,
    RESNET_FEAT_DIMS,
    TRAIN_SAMPLERS,
    WARMUP_METHODS,
    registered_names,
)
from .precision import CHOICES as PRECISION_CHOICES
from .transforms import INTERPOLATIONS

__all__ = ["Check", "Rule", "RULES", "check_values", "check_schedule", "markdown_table"]

RESNET = "build_resnet_backbone"
PADDING_MODES = ("constant", "edge", "reflect", "symmetric")  # torchvision's Pad
LOSS_NAMES = BASELINE_LOSSES  # what the registered meta-architectures compute


@dataclass(frozen=True)
class Check:
    """What a key allows. `test(value, cfg)` is None for an allowed value, else a detail
    for the message ("" for none); `text` says what is allowed."""

    text: str
    test: Callable[[Any, Any], Any]
    error: type = ConfigError


@dataclass(frozen=True)
class Rule:
    """One row of the table. training_only: not checked for --eval-only and the feature
    tools (the training set is not read there)."""

    key: str
    check: Check
    note: str = ""
    training_only: bool = False

    @property
    def allowed(self):
        return self.check.text + (f" ({self.note})" if self.note else "")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _verdict(ok):
    return None if ok else ""


def integer(minimum):
    return Check(f"an integer >= {minimum}", lambda v, cfg: _verdict(_is_int(v) and v >= minimum))


def number(low, high=None, open_low=False, open_high=False):
    """A finite number from low (excluded if open_low) up to high (None: no bound)."""
    if high is None:
        text = f"a number {'>' if open_low else '>='} {low}"
    else:
        text = f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def test(v, cfg):
        if not _is_number(v) or v < low or (open_low and v == low):
            return ""
        return _verdict(high is None or v < high or (v == high and not open_high))

    return Check(text, test)


PROBABILITY = number(0, 1)
POSITIVE = number(0, open_low=True)
NON_NEGATIVE = number(0)


def one_of(*values, fold_case=False, error=ConfigError):
    """A value from `values` (strings compared without case and surrounding blanks if
    fold_case, as the code that reads them compares them)."""

    def test(v, cfg):
        if fold_case and isinstance(v, str):
            v = v.strip().lower()
        return _verdict(any(v == x and type(v) is type(x) for x in values))

    return Check("one of " + ", ".join(map(str, values)), test, error)


def known_name(*names):
    """The name of one of the classes or functions fastreid picks by name (a KeyError kind,
    like an unknown registry name)."""
    return one_of(*names, error=ConfigKeyError)


def registered(registry, label):
    """A name in one of fastreid's registries (`label`: its name), as it is when the config
    is checked."""

    def test(v, cfg):
        known = registered_names(registry)
        return None if v in known else "registered: " + ", ".join(known)

    return Check(f"a name in fastreid's {label}", test, ConfigKeyError)


def each(check, text, at_least=0):
    """A list or tuple of at_least entries or more, each allowed by `check`."""

    def test(v, cfg):
        if not isinstance(v, (list, tuple)) or len(v) < at_least:
            return ""
        for entry in v:
            detail = check.test(entry, cfg)
            if detail is not None:
                return f"not {entry!r}" + (f"; {detail}" if detail else "")
        return None

    return Check(text, test, check.error)


def _torch_optimizers():
    return sorted(
        name
        for name, obj in vars(torch.optim).items()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    )


def _optimizer(v, cfg):
    known = _torch_optimizers()
    return None if v in known else "torch.optim has " + ", ".join(known)


def _device(v, cfg):
    try:
        return _verdict(torch.device(v).type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):
        return ""


def _resnet_depth(v, cfg):
    return _verdict(cfg.MODEL.BACKBONE.NAME != RESNET or v in RESNET_FEAT_DIMS)


def _feat_dim(v, cfg):
    if not _is_int(v) or v < 1:
        return ""
    backbone = cfg.MODEL.BACKBONE
    if backbone.NAME != RESNET or RESNET_FEAT_DIMS[backbone.DEPTH] == v:
        return None
    return f"{RESNET} at DEPTH {backbone.DEPTH} gives {RESNET_FEAT_DIMS[backbone.DEPTH]}"


def _halve(side, kernel=3, padding=1):
    """Output size of a stride-2 convolution or pooling (floor mode)."""
    return (side + 2 * padding - kernel) // 2 + 1


def _resnet_stem(side, torchvision_stem):
    """The side after fastreid's ResNet stem: conv1 7x7 stride 2 padding 3, then a 3x3
    stride-2 max-pool, fastreid's without padding in ceil mode (0 where it has no input
    window), torchvision's (MODEL.BACKBONE.TORCHVISION_STEM) with padding 1."""
    side = _halve(side, kernel=7, padding=3)
    return _halve(side) if torchvision_stem else max(0, math.ceil((side - 3) / 2) + 1)


def _image_size(v, cfg):
    pair = isinstance(v, (list, tuple)) and len(v) == 2
    if not pair or not all(_is_int(side) and side >= 1 for side in v):
        return ""
    backbone = cfg.MODEL.BACKBONE
    if backbone.NAME != RESNET:
        return None
    stem = [_resnet_stem(side, backbone.TORCHVISION_STEM) for side in v]
    if min(stem) < 1:
        return f"{RESNET}'s stem max-pool has no input window"
    layer3 = [_halve(_halve(side)) for side in stem]  # layer2 and layer3 halve it
    if backbone.WITH_IBN and layer3[0] * layer3[1] < 2:
        return "MODEL.BACKBONE.WITH_IBN: the InstanceNorm of layer3 needs 2 cells, it gets 1"
    return None


def scheduled_epochs(cfg, iters_per_epoch=None):
    """The epochs after which fastreid's LRScheduler hook steps MultiStepLR: SOLVER.MAX_EPOCH
    less the larger of SOLVER.DELAY_EPOCHS and the warm-up's epochs but its last (it
    steps after an epoch whose next iteration is past SOLVER.WARMUP_ITERS). Without
    iters_per_epoch (the training set not read yet), the most it can be."""
    solver = cfg.SOLVER
    warm = -1 if iters_per_epoch is None else math.ceil(solver.WARMUP_ITERS / iters_per_epoch) - 1
    return solver.MAX_EPOCH - max(warm, solver.DELAY_EPOCHS)


def _steps_within(steps, epochs):
    if steps and steps[-1] >= epochs:
        return f"steps up to {epochs - 1} here" if epochs > 1 else "no step fits: use []"
    return None


def _steps(v, cfg):
    if not isinstance(v, (list, tuple)) or not all(_is_int(s) and s >= 1 for s in v):
        return ""
    if any(a >= b for a, b in zip(v, v[1:])):
        return "not increasing"
    if cfg.SOLVER.SCHED != "MultiStepLR":
        return None
    detail = _steps_within(v, scheduled_epochs(cfg))
    solver = cfg.SOLVER
    epochs = f"SOLVER.MAX_EPOCH {solver.MAX_EPOCH}, DELAY_EPOCHS {solver.DELAY_EPOCHS}"
    return detail and f"{detail} ({epochs})"


def _delay(v, cfg):
    return _verdict(_is_int(v) and 0 <= v < cfg.SOLVER.MAX_EPOCH)


def _nesterov(v, cfg):
    return _verdict(not v or cfg.SOLVER.OPT != "SGD" or cfg.SOLVER.MOMENTUM > 0)


def _epsilon(v, cfg):
    return _verdict(v == -1 or (PROBABILITY.test(v, cfg) is None and v < 1))


def _three(check):
    def test(v, cfg):
        ok = isinstance(v, (list, tuple)) and len(v) == 3
        return _verdict(ok and all(check.test(x, cfg) is None for x in v))

    return Check("3 entries, each " + check.text, test)


# fmt: off
_SIZE = Check(
    "[height, width], integers >= 1; for build_resnet_backbone each >= 3 (>= 1 with "
    "MODEL.BACKBONE.TORCHVISION_STEM) and, with MODEL.BACKBONE.WITH_IBN, a layer3 map of "
    "2 cells or more (e.g. [32, 16])",
    _image_size,
)
_DATASET = registered(DATASET_REGISTRY, "DATASET_REGISTRY")
_DATASETS = "names in fastreid's DATASET_REGISTRY"

RULES = (
    # Model
    Rule("MODEL.DEVICE", Check("a torch device: cpu, cuda or cuda:N", _device)),
    Rule("MODEL.META_ARCHITECTURE", registered(META_ARCH_REGISTRY, "META_ARCH_REGISTRY")),
    Rule("MODEL.BACKBONE.NAME", registered(BACKBONE_REGISTRY, "BACKBONE_REGISTRY")),
    Rule("MODEL.BACKBONE.DEPTH", Check(
        "for build_resnet_backbone one of " + ", ".join(RESNET_FEAT_DIMS), _resnet_depth,
        ConfigKeyError)),
    Rule("MODEL.BACKBONE.LAST_STRIDE", one_of(1, 2)),
    Rule("MODEL.BACKBONE.FEAT_DIM", Check(
        "an integer >= 1; for build_resnet_backbone the channels of its DEPTH ("
        + ", ".join(f"{d}: {c}" for d, c in RESNET_FEAT_DIMS.items()) + ")", _feat_dim)),
    Rule("MODEL.BACKBONE.NORM", known_name(*NORM_NAMES)),
    Rule("MODEL.HEADS.NAME", registered(REID_HEADS_REGISTRY, "REID_HEADS_REGISTRY")),
    Rule("MODEL.HEADS.NORM", known_name(*NORM_NAMES)),
    Rule("MODEL.HEADS.POOL_LAYER", known_name(*pooling.__all__)),
    Rule("MODEL.HEADS.CLS_LAYER", known_name(*any_softmax.__all__)),
    Rule("MODEL.HEADS.NECK_FEAT", one_of(*NECK_FEATS)),
    Rule("MODEL.HEADS.SCALE", POSITIVE, "the classifier's logits are multiplied by it"),
    Rule("MODEL.HEADS.MARGIN", NON_NEGATIVE, "of CosSoftmax, ArcSoftmax, CircleSoftmax; 0: none"),
    Rule("MODEL.HEADS.NUM_CLASSES", integer(0), "0: the training set's number of identities"),
    Rule("MODEL.HEADS.EMBEDDING_DIM", integer(0), "0: no reduction, MODEL.BACKBONE.FEAT_DIM"),
    Rule("MODEL.LOSSES.NAME", each(
        known_name(*LOSS_NAMES), "one or more of " + ", ".join(LOSS_NAMES), 1)),
    Rule("MODEL.LOSSES.CE.EPSILON", Check("a number in [0, 1), or -1", _epsilon),
         "0: no label smoothing; -1: fastreid's adaptive smoothing, MODEL.LOSSES.CE.ALPHA"),
    Rule("MODEL.LOSSES.CE.ALPHA", number(0, 1, open_high=True)),
    Rule("MODEL.LOSSES.CE.SCALE", POSITIVE),
    Rule("MODEL.LOSSES.TRI.MARGIN", NON_NEGATIVE, "0: soft margin"),
    Rule("MODEL.LOSSES.TRI.SCALE", POSITIVE),
    Rule("MODEL.PCB.NUM_STRIPES", integer(1)),
    Rule("MODEL.PCB.REDUCTION_DIM", integer(1)),
    Rule("MODEL.PCB.DROPOUT", number(0, 1, open_high=True)),
    Rule("MODEL.HPM.BINS", each(integer(1), "one or more integers >= 1 (stripes per level)", 1)),
    Rule("MODEL.HPM.REDUCTION_DIM", integer(1)),
    Rule("MODEL.PAPER_MGN.REDUCTION_DIM", integer(1)),
    # CAL (lastreid.modeling.cal): one block, to move with a head's own rules.
    Rule("MODEL.CAL.START_EPOCH_CC", integer(0), "0: from the first epoch"),
    Rule("MODEL.CAL.START_EPOCH_ADV", integer(0), "0: from the first epoch"),
    Rule("MODEL.CAL.EPSILON", PROBABILITY),
    Rule("MODEL.CAL.SCALE", POSITIVE),
    Rule("MODEL.CAL.NUM_CLOTHES", integer(0), "0: counted from the training set"),
    Rule("MODEL.PIXEL_MEAN", _three(NON_NEGATIVE)),
    Rule("MODEL.PIXEL_STD", _three(POSITIVE)),
    Rule("MODEL.CHANNELS_LAST", one_of(*PRECISION_CHOICES, fold_case=True)),
    Rule("MODEL.CPU_BF16", one_of(*PRECISION_CHOICES, fold_case=True)),
    # Input
    Rule("INPUT.SIZE_TRAIN", _SIZE),
    Rule("INPUT.SIZE_TEST", _SIZE),
    Rule("INPUT.INTERPOLATION", one_of(*INTERPOLATIONS, fold_case=True)),
    Rule("INPUT.FLIP.PROB", PROBABILITY),
    Rule("INPUT.PADDING.SIZE", integer(0)),
    Rule("INPUT.PADDING.MODE", one_of(*PADDING_MODES)),
    Rule("INPUT.CJ.PROB", PROBABILITY),
    Rule("INPUT.CJ.BRIGHTNESS", NON_NEGATIVE),
    Rule("INPUT.CJ.CONTRAST", NON_NEGATIVE),
    Rule("INPUT.CJ.SATURATION", NON_NEGATIVE),
    Rule("INPUT.CJ.HUE", number(0, 0.5)),
    Rule("INPUT.REA.PROB", PROBABILITY),
    Rule("INPUT.RPT.PROB", PROBABILITY),
    Rule("INPUT.AUTOAUG.PROB", PROBABILITY),
    Rule("INPUT.AUGMIX.PROB", PROBABILITY),
    # Data
    Rule("DATASETS.NAMES", each(_DATASET, "one or more " + _DATASETS, 1), training_only=True),
    Rule("DATASETS.TESTS", each(_DATASET, _DATASETS)),
    Rule("TEST.FINAL_TESTS", each(_DATASET, _DATASETS)),
    Rule("DATALOADER.SAMPLER_TRAIN", known_name(*TRAIN_SAMPLERS)),
    Rule("DATALOADER.NUM_INSTANCE", integer(1)),
    Rule("DATALOADER.NUM_WORKERS", integer(0), "0: loading in the main process"),
    # Solver
    Rule("SOLVER.OPT", Check("an optimizer class of torch.optim", _optimizer, ConfigKeyError)),
    Rule("SOLVER.BASE_LR", POSITIVE),
    Rule("SOLVER.MOMENTUM", number(0, 1, open_high=True)),
    Rule("SOLVER.NESTEROV", Check("False, or True with SOLVER.MOMENTUM > 0 for SGD", _nesterov)),
    Rule("SOLVER.WEIGHT_DECAY", NON_NEGATIVE),
    Rule("SOLVER.WEIGHT_DECAY_NORM", NON_NEGATIVE),
    Rule("SOLVER.WEIGHT_DECAY_BIAS", NON_NEGATIVE),
    Rule("SOLVER.BIAS_LR_FACTOR", POSITIVE),
    Rule("SOLVER.HEADS_LR_FACTOR", POSITIVE),
    Rule("SOLVER.IMS_PER_BATCH", integer(1)),
    Rule("SOLVER.MAX_EPOCH", integer(1)),
    Rule("SOLVER.SCHED", known_name(*LR_SCHEDULERS)),
    Rule("SOLVER.DELAY_EPOCHS", Check("an integer in 0..SOLVER.MAX_EPOCH - 1", _delay),
         "0: none; epochs before the scheduler starts"),
    Rule("SOLVER.STEPS", Check(
        "increasing integers >= 1, for MultiStepLR each below the epochs it counts: "
        "SOLVER.MAX_EPOCH less the larger of SOLVER.DELAY_EPOCHS and the warm-up's epochs "
        "but its last", _steps), "[]: no decay"),
    Rule("SOLVER.GAMMA", number(0, 1, open_low=True)),
    Rule("SOLVER.ETA_MIN_LR", NON_NEGATIVE),
    Rule("SOLVER.WARMUP_FACTOR", PROBABILITY),
    Rule("SOLVER.WARMUP_ITERS", integer(0), "0: no warm-up"),
    Rule("SOLVER.WARMUP_METHOD", one_of(*WARMUP_METHODS)),
    Rule("SOLVER.FREEZE_ITERS", integer(0), "0: nothing frozen"),
    Rule("SOLVER.CHECKPOINT_PERIOD", integer(1), "above SOLVER.MAX_EPOCH: the final one only"),
    Rule("SOLVER.KEEP_LAST_CHECKPOINTS", integer(0), "0: keep every periodic checkpoint"),
    # Test
    Rule("TEST.EVAL_PERIOD", integer(1), "above SOLVER.MAX_EPOCH: after the last epoch only"),
    Rule("TEST.IMS_PER_BATCH", integer(1)),
    Rule("TEST.METRIC", one_of(*METRICS)),
    Rule("TEST.QUERY_BLOCK_SIZE", integer(0), "0: from TEST.EVAL_MEMORY_MB"),
    Rule("TEST.EVAL_MEMORY_MB", integer(1)),
    Rule("TEST.AQE.QE_TIME", integer(1)),
    Rule("TEST.AQE.QE_K", integer(1)),
    Rule("TEST.AQE.ALPHA", NON_NEGATIVE),
    Rule("TEST.RERANK.K1", integer(1)),
    Rule("TEST.RERANK.K2", integer(1)),
    Rule("TEST.RERANK.LAMBDA", PROBABILITY),
    Rule("TEST.SINGLE_SHOT.TRIALS", integer(1)),
    Rule("TEST.SINGLE_SHOT.SEED", integer(0)),
    Rule("DISTRIBUTED.TIMEOUT_MINUTES", POSITIVE),
)
# fmt: on


def config_value(cfg, key):
    return reduce(getattr, key.split("."), cfg)


def _fail(rule, value, detail):
    message = f"{rule.key} is {value!r}: expected {rule.allowed}"
    raise rule.check.error(message + (f"; {detail}" if detail else ""))


def check_values(cfg, eval_only=False):
    """Raises ConfigError / ConfigKeyError (one line, naming the key, the value and what is
    allowed) for the first value of `cfg` that RULES does not allow."""
    for rule in RULES:
        if eval_only and rule.training_only:
            continue
        value = config_value(cfg, rule.key)
        detail = rule.check.test(value, cfg)
        if detail is not None:
            _fail(rule, value, detail)


def check_schedule(cfg, iters_per_epoch):
    """The schedule keys against the epochs of this training set (`iters_per_epoch`, as
    fastreid's DefaultTrainer counts them): the SOLVER.STEPS that MultiStepLR would never
    reach, a warm-up that ends in the last epoch (CosineAnnealingLR would divide by zero)."""
    solver = cfg.SOLVER
    warm_epochs = math.ceil(solver.WARMUP_ITERS / iters_per_epoch)
    warm_up = (
        f"SOLVER.MAX_EPOCH {solver.MAX_EPOCH}, DELAY_EPOCHS {solver.DELAY_EPOCHS}, WARMUP_ITERS "
        f"{solver.WARMUP_ITERS} = {warm_epochs} epochs of {iters_per_epoch} iterations"
    )
    rules = {rule.key: rule for rule in RULES}
    if solver.SCHED == "MultiStepLR":
        detail = _steps_within(list(solver.STEPS), scheduled_epochs(cfg, iters_per_epoch))
        if detail:
            _fail(rules["SOLVER.STEPS"], solver.STEPS, f"{detail} ({warm_up})")
    elif solver.MAX_EPOCH - max(warm_epochs, solver.DELAY_EPOCHS) == 0:
        # fastreid's T_max: torch divides by it when the hook first steps the scheduler (a
        # warm-up past the end of the run never does).
        raise ConfigError(
            f"SOLVER.WARMUP_ITERS is {solver.WARMUP_ITERS}: the warm-up leaves {solver.SCHED} "
            f"no epoch ({warm_up})"
        )


def markdown_table():
    """The list of checked keys in docs/config_keys.md, from RULES."""
    lines = ["| key | allowed |", "|---|---|"]
    lines += [f"| `{rule.key}` | {rule.allowed} |" for rule in RULES]
    return "\n".join(lines)
