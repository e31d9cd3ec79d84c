"""The paper's MGN (Wang et al., "Multiple Granularities Network", ACM MM 2018) as its code
trains it on LaST (`modeling/mgn.py`, `last_train_mgn.py` of github shuxjweb/last):
`PaperMGN`, a `PartBaseline` whose head is the three branches. fastreid's own registered
`MGN` is another model (docs/baselines.md).

The ResNet is shared up to the first block of layer3. Three branches each own a copy of
the rest of layer3 and of layer4: p1 with layer4 as built (stride MODEL.BACKBONE.LAST_STRIDE,
2 in the paper), p2 and p3 with stride 1. p1, p2, p3 are average-pooled globally, p2 also
over 2 and p3 over 3 horizontal stripes: 8 pooled vectors, each reduced by its own
Conv1x1-BN-ReLU to MODEL.PAPER_MGN.REDUCTION_DIM (256; the 8 start from one initialisation,
as in the paper's code) and classified by its own linear layer. Loss = mean cross-entropy over
the 8 + mean triplet over the 3 global features. Test feature: the 8 concatenated,
8 x 256 = 2,048-d.
"""

import copy

import torch
from fastreid.config import CfgNode as CN
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from torch import nn

from ..config import register_keys
from ..config_checks import Rule, integer, register_rules
from ..errors import ConfigError
from .part_baseline import PartBaseline, part_loss_kwargs
from .parts import (
    ReductionBlock,
    make_classifiers,
    pool_stripes,
    stripe_names,
    stripes,
    training_outputs,
)

__all__ = ["MGNBranches", "PaperMGN", "add_paper_mgn_config", "split_resnet"]


@register_keys
def add_paper_mgn_config(cfg):
    # Channels of each of its 8 Conv1x1-BN-ReLU reductions (256); the test feature has
    # 8 x REDUCTION_DIM dims.
    cfg.MODEL.PAPER_MGN = CN()
    cfg.MODEL.PAPER_MGN.REDUCTION_DIM = 256


register_rules(Rule("MODEL.PAPER_MGN.REDUCTION_DIM", integer(1)))

BRANCH_STRIPES = {"p1": 1, "p2": 2, "p3": 3}


def split_resnet(resnet):
    """Cuts fastreid's ResNet after the first block of layer3, in place: returns (the cut
    ResNet, the rest of layer3, layer4). The cut ResNet keeps its class and attribute names
    (`conv1`, `maxpool`, `layer3.0`, ...), so the stem switch, BatchNorm folding and
    checkpoint keys work on it as on a whole one; its layer4 is empty."""
    rest_of_layer3 = nn.Sequential(*resnet.layer3[1:])
    layer4 = resnet.layer4
    resnet.layer3 = nn.Sequential(resnet.layer3[0])
    resnet.layer4 = nn.Sequential()
    return resnet, rest_of_layer3, layer4


def with_stride_one(stage):
    """`stage` (a ResNet stage) with every strided convolution set to stride 1: the paper's
    part branches, whose layer4 is a stride-1 copy of the pretrained one."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
    return stage


class MGNBranches(nn.Module):
    """The three branches of the paper's MGN on the shared layer3[0] features: in training
    the 8 logits and the 3 global features (`parts.training_outputs`), in eval mode the
    2,048-d test feature."""

    cls_reduction = "mean"  # over the 8 classifiers
    triplet_reduction = "mean"  # over the 3 global features

    def __init__(self, rest_of_layer3, layer4, feat_dim, num_classes, reduction_dim=256):
        super().__init__()
        part_layer4 = with_stride_one(copy.deepcopy(layer4))
        self.p1 = nn.Sequential(copy.deepcopy(rest_of_layer3), copy.deepcopy(layer4))
        self.p2 = nn.Sequential(copy.deepcopy(rest_of_layer3), copy.deepcopy(part_layer4))
        self.p3 = nn.Sequential(copy.deepcopy(rest_of_layer3), copy.deepcopy(part_layer4))
        self.part_names = list(BRANCH_STRIPES) + [
            name
            for branch, n in BRANCH_STRIPES.items()
            if n > 1
            for name in stripe_names(branch, n)
        ]
        reduction = ReductionBlock(feat_dim, reduction_dim, conv_mode="fan_in", bn_weight_std=0.02)
        self.reductions = nn.ModuleList(copy.deepcopy(reduction) for _ in self.part_names)
        self.classifiers = make_classifiers(len(self.part_names), reduction_dim, num_classes)

    def pooled(self, features):
        """The 8 pooled (B, C, 1, 1) vectors, in the order of `part_names`: the 3 global
        ones, then p2's 2 and p3's 3 stripes."""
        maps = {"p1": self.p1(features), "p2": self.p2(features), "p3": self.p3(features)}
        out = [pool_stripes(m, 1) for m in maps.values()]
        for branch, n in BRANCH_STRIPES.items():
            if n > 1:
                out.extend(stripes(pool_stripes(maps[branch], n)))
        return out

    def forward(self, features, targets=None):
        feats = [r.flat(p) for r, p in zip(self.reductions, self.pooled(features))]
        if not self.training:
            return torch.cat(feats, dim=1)
        logits = [fc(f) for fc, f in zip(self.classifiers, feats)]
        global_feats = {name: feats[i] for i, name in enumerate(BRANCH_STRIPES)}
        return training_outputs(self.part_names, logits, global_feats)


@META_ARCH_REGISTRY.register()
class PaperMGN(PartBaseline):
    """`PartBaseline` with the cut ResNet as backbone and `MGNBranches` as head."""

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.BACKBONE.WITH_NL:
            raise ConfigError(
                "MODEL.BACKBONE.WITH_NL: PaperMGN cuts the ResNet inside layer3, where the "
                "non-local blocks sit; set it False"
            )
        trunk, rest_of_layer3, layer4 = split_resnet(build_backbone(cfg))
        heads = MGNBranches(
            rest_of_layer3,
            layer4,
            cfg.MODEL.BACKBONE.FEAT_DIM,
            cfg.MODEL.HEADS.NUM_CLASSES,
            cfg.MODEL.PAPER_MGN.REDUCTION_DIM,
        )
        return {
            "backbone": trunk,
            "heads": heads,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "loss_kwargs": part_loss_kwargs(cfg),
        }
