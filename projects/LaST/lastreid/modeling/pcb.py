"""PCB (Sun et al., "Beyond Part Models", ECCV 2018) as the paper's code trains it on LaST
(`modeling/pcb.py`, `last_train_pcb.py` of github shuxjweb/last), without RPP: a fastreid
head, `PCBHead`, on the ResNet backbone (last stride 1) of `PartBaseline`.

The backbone's map is average-pooled over MODEL.PCB.NUM_STRIPES (6) horizontal stripes.
Training: dropout (MODEL.PCB.DROPOUT, 0.5) on the pooled stripes, one Conv1x1-BN-ReLU
reduction to MODEL.PCB.REDUCTION_DIM (256) shared by the stripes, one classifier per stripe;
loss = mean cross-entropy over the stripes + a triplet term on the pooled stripes (after
dropout), each stripe L2-normalised, concatenated. Test feature: that concatenation without
dropout, 6 x 2048 = 12,288-d (each stripe of unit norm)."""

import torch.nn.functional as F
from fastreid.config import CfgNode as CN
from fastreid.config import configurable
from fastreid.modeling.heads import REID_HEADS_REGISTRY
from torch import nn

from ..config import register_keys
from ..config_checks import Rule, integer, number, register_rules
from .parts import (
    ReductionBlock,
    flatten_stripes,
    make_classifiers,
    pool_stripes,
    stripe_names,
    training_outputs,
)

__all__ = ["PCBHead", "add_pcb_config"]


@register_keys
def add_pcb_config(cfg):
    # Horizontal stripes average-pooled from the backbone's map (6), channels of the one
    # Conv1x1-BN-ReLU reduction they share (256), dropout on the pooled stripes in
    # training (0.5). The test feature has NUM_STRIPES x MODEL.BACKBONE.FEAT_DIM dims.
    cfg.MODEL.PCB = CN()
    cfg.MODEL.PCB.NUM_STRIPES = 6
    cfg.MODEL.PCB.REDUCTION_DIM = 256
    cfg.MODEL.PCB.DROPOUT = 0.5


register_rules(
    Rule("MODEL.PCB.NUM_STRIPES", integer(1)),
    Rule("MODEL.PCB.REDUCTION_DIM", integer(1)),
    Rule("MODEL.PCB.DROPOUT", number(0, 1, open_high=True)),
)


@REID_HEADS_REGISTRY.register()
class PCBHead(nn.Module):
    cls_reduction = "mean"  # the paper's code averages the stripes' cross-entropies
    triplet_reduction = "sum"  # one triplet term

    @configurable
    def __init__(self, *, feat_dim, num_classes, num_stripes=6, reduction_dim=256, dropout=0.5):
        super().__init__()
        self.num_stripes = int(num_stripes)
        self.dropout = nn.Dropout(p=dropout)
        self.reduction = ReductionBlock(feat_dim, reduction_dim, conv_mode="fan_out")
        # The paper's PCB draws its classifiers from N(0, 0.01), biases 0.
        self.classifiers = make_classifiers(
            self.num_stripes, reduction_dim, num_classes, bias=True, std=0.01
        )
        self.part_names = stripe_names("stripe", self.num_stripes)

    @classmethod
    def from_config(cls, cfg):
        pcb = cfg.MODEL.PCB
        return {
            "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM,
            "num_classes": cfg.MODEL.HEADS.NUM_CLASSES,
            "num_stripes": pcb.NUM_STRIPES,
            "reduction_dim": pcb.REDUCTION_DIM,
            "dropout": pcb.DROPOUT,
        }

    def forward(self, features, targets=None):
        pooled = pool_stripes(features, self.num_stripes, "avg")  # (B, C, stripes, 1)
        if not self.training:
            return flatten_stripes(F.normalize(pooled, dim=1))
        pooled = self.dropout(pooled)
        # One reduction over all stripes at once: its BatchNorm sees every stripe of the batch.
        reduced = self.reduction(pooled)
        logits = [fc(reduced[:, :, i, 0]) for i, fc in enumerate(self.classifiers)]
        triplet_feature = flatten_stripes(F.normalize(pooled, dim=1))
        return training_outputs(self.part_names, logits, {"": triplet_feature})
