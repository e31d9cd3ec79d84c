"""The model of a config, and weights loaded into it: the one place the Trainer, the feature
extractor, `--eval-only` and the transfer runner get a model from.

Importing this package registers the paper's other LaST baselines in fastreid's registries
(docs/baselines.md): the meta-architectures `PartBaseline` and `PaperMGN`
(`part_baseline`, `paper_mgn`) and the heads `PCBHead` and `HPMHead` (`pcb`, `hpm`), each
module with its own config keys and their range rules; `parts` holds what they share;
`cal` registers CAL's `CALBaseline` and `CALHead` (docs/clothes_changing.md). A
model outside the package does the same from a module named in MODEL.IMPORTS
(`lastreid.plugins`)."""

import logging

import torch
from fastreid.modeling import build_model as build_fastreid_model

from .. import precision
from ..checkpoint import Checkpointer, CheckpointError, backbone_loaded, use_torchvision_stem
from . import cal, hpm, paper_mgn, part_baseline, pcb  # noqa: F401  (registration)

logger = logging.getLogger(__name__)

__all__ = ["build_model", "load_weights", "feature_dim"]


def build_model(cfg, log=True):
    """fastreid's model of `cfg` (logged, as DefaultTrainer logs it, unless not log), in
    channels-last when the precision path says so, with the torchvision stem when
    MODEL.BACKBONE.TORCHVISION_STEM (the reference and ImageNet checkpoints were trained
    with it), and its strided convolutions guarded against a torch CPU bfloat16 bug
    (`precision.OneColumnSafeConv2d`)."""
    model = build_fastreid_model(cfg)
    precision.guard_one_column_convs_(model)  # torch's CPU bf16 convolution bug
    if log:
        logging.getLogger("fastreid.engine.defaults").info("Model:\n%s", model)
    model = precision.prepare_model(model, precision.resolve(cfg, log=log))
    if cfg.MODEL.BACKBONE.TORCHVISION_STEM:
        use_torchvision_stem(model)
    return model


def feature_dim(cfg, model=None):
    """The dimension of the eval-mode feature of `model` (None: a model of `cfg` built on
    the CPU without the ImageNet file): the width of its output for one blank
    INPUT.SIZE_TEST image. Asked of the model itself, so any registered head or
    meta-architecture answers without a table to extend."""
    if model is None:
        cpu = cfg.clone()
        cpu.defrost()
        cpu.MODEL.DEVICE, cpu.MODEL.BACKBONE.PRETRAIN = "cpu", False
        cpu.MODEL.CHANNELS_LAST = cpu.MODEL.CPU_BF16 = "off"
        cpu.MODEL.HEADS.NUM_CLASSES = max(1, cpu.MODEL.HEADS.NUM_CLASSES)  # no empty layers
        model = build_model(cpu, log=False)
    device = next(model.parameters()).device
    was_training = model.training
    blank = torch.zeros(1, 3, *cfg.INPUT.SIZE_TEST, device=device)
    try:
        with torch.no_grad():
            return int(model.eval()(blank).shape[1])
    finally:
        model.train(was_training)


def load_weights(cfg, model, weights):
    """Loads the checkpoint `weights` into `model` with `cfg`'s trust and classifier choices
    (any layout `lastreid.checkpoint` reads). Raises CheckpointError when no backbone weight
    fits the model: its features would be those of random weights. Returns the LoadReport."""
    checkpointer = Checkpointer.from_config(cfg, model)
    checkpointer.load(weights)
    report = checkpointer.last_load_report
    if not backbone_loaded(report):
        raise CheckpointError(
            f"{weights}: no backbone weights fit this model (see the key "
            "report above); refusing to report features of random weights"
        )
    return report
