"""HPM (Fu et al., "Horizontal Pyramid Matching", AAAI 2019) as the paper's code trains it
on LaST (`modeling/hpm.py`, `last_train_hpm.py` of github shuxjweb/last): a fastreid head,
`HPMHead`, on the ResNet backbone (last stride 1) of `PartBaseline`.

The backbone's map is max-pooled over a pyramid of horizontal bins, MODEL.HPM.BINS
(1, 2, 4, 8: the whole map, halves, quarters, eighths; 15 bins). Each bin has its own
Conv1x1-BN-ReLU reduction to MODEL.HPM.REDUCTION_DIM (256) and its own bias-free
classifier; loss = the sum over the bins of (cross-entropy + triplet on the bin's feature).
Test feature: the bins' features concatenated, 15 x 256 = 3,840-d (the paper's code does
not flip-average it: TEST.FLIP.ENABLED False in configs/LaST/hpm_R50.yml)."""

import torch
from fastreid.config import CfgNode as CN
from fastreid.config import configurable
from fastreid.modeling.heads import REID_HEADS_REGISTRY
from torch import nn

from ..config import register_keys
from ..config_checks import Rule, each, integer, register_rules
from .parts import (
    ReductionBlock,
    make_classifiers,
    pool_stripes,
    stripe_names,
    stripes,
    training_outputs,
)

__all__ = ["HPMHead", "add_hpm_config"]


@register_keys
def add_hpm_config(cfg):
    # The pyramid of max-pooled horizontal bins, as stripe counts per level ((1, 2, 4, 8):
    # 15 bins), each reduced to REDUCTION_DIM (256) channels; the test feature has
    # sum(BINS) x REDUCTION_DIM dims.
    cfg.MODEL.HPM = CN()
    cfg.MODEL.HPM.BINS = (1, 2, 4, 8)
    cfg.MODEL.HPM.REDUCTION_DIM = 256


register_rules(
    Rule("MODEL.HPM.BINS", each(integer(1), "one or more integers >= 1 (stripes per level)", 1)),
    Rule("MODEL.HPM.REDUCTION_DIM", integer(1)),
)


def _bin_names(bins):
    return [name for n in bins for name in stripe_names("global" if n == 1 else f"bin{n}", n)]


@REID_HEADS_REGISTRY.register()
class HPMHead(nn.Module):
    cls_reduction = "sum"  # the paper's code sums (CE + triplet) over the bins
    triplet_reduction = "sum"

    @configurable
    def __init__(self, *, feat_dim, num_classes, bins=(1, 2, 4, 8), reduction_dim=256):
        super().__init__()
        self.bins = tuple(int(n) for n in bins)
        self.part_names = _bin_names(self.bins)
        count = len(self.part_names)
        self.reductions = nn.ModuleList(
            ReductionBlock(feat_dim, reduction_dim, conv_mode="fan_out") for _ in range(count)
        )
        # The paper's HPM: bias-free classifiers drawn from N(0, 0.001).
        self.classifiers = make_classifiers(
            count, reduction_dim, num_classes, bias=False, std=0.001
        )

    @classmethod
    def from_config(cls, cfg):
        return {
            "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM,
            "num_classes": cfg.MODEL.HEADS.NUM_CLASSES,
            "bins": cfg.MODEL.HPM.BINS,
            "reduction_dim": cfg.MODEL.HPM.REDUCTION_DIM,
        }

    def bin_features(self, features):
        """The (B, REDUCTION_DIM) feature of every bin, in the order of `part_names`."""
        pooled = [s for n in self.bins for s in stripes(pool_stripes(features, n, "max"))]
        return [reduce.flat(p) for reduce, p in zip(self.reductions, pooled)]

    def forward(self, features, targets=None):
        feats = self.bin_features(features)
        if not self.training:
            return torch.cat(feats, dim=1)
        logits = [fc(f) for fc, f in zip(self.classifiers, feats)]
        return training_outputs(self.part_names, logits, dict(zip(self.part_names, feats)))
