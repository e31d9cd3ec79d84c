"""The model of a config, and weights loaded into it: the one place the Trainer, the feature
extractor, `--eval-only` and the transfer runner get a model from."""

import logging

from fastreid.modeling import build_model as build_fastreid_model

from . import precision
from .checkpoint import Checkpointer, CheckpointError, backbone_loaded, use_torchvision_stem

logger = logging.getLogger(__name__)

__all__ = ["build_model", "load_weights"]


def build_model(cfg):
    """fastreid's model of `cfg` (logged, as DefaultTrainer logs it), in channels-last when
    the precision path says so, with the torchvision stem when MODEL.BACKBONE.TORCHVISION_STEM
    (the reference and ImageNet checkpoints were trained with it)."""
    model = build_fastreid_model(cfg)
    logging.getLogger("fastreid.engine.defaults").info("Model:\n%s", model)
    model = precision.prepare_model(model, precision.resolve(cfg))
    if cfg.MODEL.BACKBONE.TORCHVISION_STEM:
        use_torchvision_stem(model)
    return model


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
