"""The model of a config, and weights loaded into it: the one place the Trainer, the feature
extractor, `--eval-only` and the transfer runner get a model from.

Importing this package registers the paper's other LaST baselines in fastreid's registries
(docs/baselines.md): the meta-architectures `PartBaseline` and `PaperMGN`
(`part_baseline`, `paper_mgn`) and the heads `PCBHead` and `HPMHead` (`pcb`, `hpm`);
`parts` holds what they share. `cal` registers CAL's `CALBaseline` and `CALHead`
(docs/clothes_changing.md)."""

import logging

from fastreid.modeling import build_model as build_fastreid_model
from fastreid.modeling.heads import REID_HEADS_REGISTRY
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from .. import precision
from ..checkpoint import Checkpointer, CheckpointError, backbone_loaded, use_torchvision_stem
from . import cal, hpm, paper_mgn, part_baseline, pcb  # noqa: F401  (registration)

logger = logging.getLogger(__name__)

__all__ = ["build_model", "load_weights", "feature_dim"]

# fastreid meta-architectures whose test feature concatenates several heads' outputs.
_HEADS_PER_FEATURE = {"Baseline": 1, "PartBaseline": 1, "CALBaseline": 1, "MGN": 8}


def build_model(cfg):
    """fastreid's model of `cfg` (logged, as DefaultTrainer logs it), in channels-last when
    the precision path says so, with the torchvision stem when MODEL.BACKBONE.TORCHVISION_STEM
    (the reference and ImageNet checkpoints were trained with it), and its strided
    convolutions guarded against a torch CPU bfloat16 bug (`precision.OneColumnSafeConv2d`)."""
    model = build_fastreid_model(cfg)
    precision.guard_one_column_convs_(model)  # torch's CPU bf16 convolution bug
    logging.getLogger("fastreid.engine.defaults").info("Model:\n%s", model)
    model = precision.prepare_model(model, precision.resolve(cfg))
    if cfg.MODEL.BACKBONE.TORCHVISION_STEM:
        use_torchvision_stem(model)
    return model


def feature_dim(cfg):
    """The dimension of the eval-mode feature of `cfg`'s model, from the config alone (no
    model is built); None for a meta-architecture it does not know."""
    arch = cfg.MODEL.META_ARCHITECTURE
    own = getattr(META_ARCH_REGISTRY.get(arch), "feature_dim", None)
    if own is not None:
        return int(own(cfg))
    if arch not in _HEADS_PER_FEATURE:
        return None
    head = getattr(REID_HEADS_REGISTRY.get(cfg.MODEL.HEADS.NAME), "feature_dim", None)
    if head is not None:
        per_head = head(cfg)
    elif cfg.MODEL.HEADS.EMBEDDING_DIM > 0:
        per_head = cfg.MODEL.HEADS.EMBEDDING_DIM
    else:
        per_head = cfg.MODEL.BACKBONE.FEAT_DIM
    return int(per_head * _HEADS_PER_FEATURE[arch])


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
