"""CAL (Gu et al., "Clothes-Changing Person Re-identification with RGB Modality Only",
CVPR 2022) as its public code (github guxinqian/Simple-CCReID) trains it, as fastreid
modules (docs/clothes_changing.md):

- `CALHead`: global max- and average-pooling concatenated (2 x FEAT_DIM: 4,096-d on R50),
  a BatchNorm1d (weight ~ N(1, 0.02), bias 0) whose output is the test feature and the
  input of both classifiers; the identity classifier is a Linear with bias (std 0.001).
- `CosineClassifier`: the clothes classifier, normalised features x normalised weights.
- `CALBaseline`: fastreid's Baseline with the clothes classifier and CAL's named terms
  `loss_cls`, `loss_triplet`, `loss_clothes` (`clothes_loss`: trains the clothes classifier
  on detached features) and `loss_cal` (`clothes_adversarial_loss`: trains the backbone).

The clothes classifier has its own optimizer, which the model never sees: for each step the
training step (lastreid.train_steps) installs `update_clothes_classifier` and sets `epoch`.
`losses` calls that update between the two clothes terms, so that `loss_cal` sees the
updated weights, as in the reference; `loss_cal` never sends a gradient to them.
"""

import torch
import torch.nn.functional as F
from fastreid.config import CfgNode as CN
from fastreid.config import configurable
from fastreid.modeling.heads import REID_HEADS_REGISTRY
from fastreid.modeling.losses import log_accuracy, triplet_loss
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline
from torch import nn

from ..config import register_keys
from ..config_checks import POSITIVE, PROBABILITY, Rule, integer, register_rules
from ..errors import ConfigError

__all__ = [
    "CALBaseline",
    "CALHead",
    "CosineClassifier",
    "add_cal_config",
    "clothes_adversarial_loss",
    "clothes_loss",
]


@register_keys
def add_cal_config(cfg):
    # MODEL.META_ARCHITECTURE CALBaseline, MODEL.HEADS.NAME CALHead. The clothes
    # classifier's loss (loss_clothes) and its own optimizer's steps start at epoch
    # START_EPOCH_CC (25), the clothes-based adversarial loss (loss_cal) at START_EPOCH_ADV
    # (25); both count epochs from 0. EPSILON (0.1): the share of loss_cal's target spread
    # over the identity's clothes classes. SCALE (16): the factor on the clothes
    # classifier's cosines in both losses. NUM_CLOTHES: clothes classes of the training set
    # (0: counted from it and saved in config.yaml, as MODEL.HEADS.NUM_CLASSES).
    cfg.MODEL.CAL = CN()
    cfg.MODEL.CAL.START_EPOCH_CC = 25
    cfg.MODEL.CAL.START_EPOCH_ADV = 25
    cfg.MODEL.CAL.EPSILON = 0.1
    cfg.MODEL.CAL.SCALE = 16.0
    cfg.MODEL.CAL.NUM_CLOTHES = 0


register_rules(
    Rule("MODEL.CAL.START_EPOCH_CC", integer(0), "0: from the first epoch"),
    Rule("MODEL.CAL.START_EPOCH_ADV", integer(0), "0: from the first epoch"),
    Rule("MODEL.CAL.EPSILON", PROBABILITY),
    Rule("MODEL.CAL.SCALE", POSITIVE),
    Rule("MODEL.CAL.NUM_CLOTHES", integer(0), "0: counted from the training set"),
)


@REID_HEADS_REGISTRY.register()
class CALHead(nn.Module):
    """Max + average pooling, BatchNorm1d (the test feature), identity Linear classifier."""

    @configurable
    def __init__(self, *, feat_dim, num_classes):
        super().__init__()
        dim = 2 * feat_dim
        self.bottleneck = nn.BatchNorm1d(dim)
        nn.init.normal_(self.bottleneck.weight, 1.0, 0.02)
        nn.init.zeros_(self.bottleneck.bias)
        # `cls_layer`: the name lastreid.checkpoint leaves out when fine-tuning.
        self.cls_layer = nn.Linear(dim, num_classes)
        nn.init.normal_(self.cls_layer.weight, std=0.001)
        nn.init.zeros_(self.cls_layer.bias)

    @classmethod
    def from_config(cls, cfg):
        return {
            "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM,
            "num_classes": cfg.MODEL.HEADS.NUM_CLASSES,
        }

    @staticmethod
    def feature_dim(cfg):
        return 2 * cfg.MODEL.BACKBONE.FEAT_DIM

    def forward(self, features, targets=None):
        # Max first, then average: the reference's order (its checkpoints' BN channels).
        pooled = torch.cat(
            [F.adaptive_max_pool2d(features, 1), F.adaptive_avg_pool2d(features, 1)], dim=1
        ).flatten(1)
        feature = self.bottleneck(pooled)
        if not self.training:
            return feature
        logits = self.cls_layer(feature)
        return {"cls_outputs": logits, "pred_class_logits": logits.detach(), "features": feature}


class CosineClassifier(nn.Module):
    """Cosines between the L2-normalised features and L2-normalised class weights (no
    bias), computed in float32 outside autocast: its own optimizer steps without a
    GradScaler. `weight_grad=False` reads the weights without a gradient to them."""

    def __init__(self, in_dim, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        # The reference draws U(-1, 1) rows scaled to unit norm.
        nn.init.uniform_(self.weight, -1.0, 1.0)
        with torch.no_grad():
            self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, features, weight_grad=True):
        weight = self.weight if weight_grad else self.weight.detach()
        with torch.autocast(features.device.type, enabled=False):
            features = F.normalize(features.float(), dim=1)
            return F.linear(features, F.normalize(weight.float(), dim=1))


def clothes_loss(cosines, clothes, scale):
    """The clothes classifier's loss: cross-entropy of the scaled cosines (CosFace, margin
    0), as the reference's `CosFaceLoss(s=16, m=0)`."""
    return F.cross_entropy(scale * cosines, clothes)


def clothes_adversarial_loss(cosines, clothes, positive, scale, epsilon):
    """CAL's loss. `positive` (batch x clothes classes, 0/1): the clothes classes of each
    sample's identity. Each class's log-probability is taken against that class and every
    clothes class of other identities; the target puts 1 - epsilon on the sample's clothes
    class and epsilon spread evenly over its identity's clothes classes."""
    logits = scale * cosines
    negatives = torch.logsumexp(logits.masked_fill(positive.bool(), float("-inf")), 1, True)
    log_prob = logits - torch.logaddexp(logits, negatives)
    target = epsilon * positive / positive.sum(1, keepdim=True)
    target = target + (1 - epsilon) * F.one_hot(clothes, logits.size(1)).to(logits.dtype)
    return -(target * log_prob).sum(1).mean()


@META_ARCH_REGISTRY.register()
class CALBaseline(Baseline):
    """Baseline + the clothes classifier and CAL's losses (module docstring). Training
    batches carry `clothes` (lastreid.loaders); `clothes_pids` (a buffer, filled from the
    training set) says which identity each clothes class belongs to."""

    needs_clothes = True  # lastreid.loaders: training items carry their clothes class
    # DDP: the clothes classifier has no gradient from the backbone's loss, and before
    # MODEL.CAL.START_EPOCH_CC none at all (lastreid.compat).
    ddp_find_unused_parameters = True
    epoch = 0  # the run's epoch, set by the training step

    @configurable
    def __init__(self, *, clothes_classifier, cal, **kwargs):
        super().__init__(**kwargs)
        self.clothes_classifier = clothes_classifier
        self.cal = cal
        self.register_buffer(
            "clothes_pids", torch.zeros(clothes_classifier.weight.size(0), dtype=torch.long)
        )

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.LOSSES.CE.EPSILON < 0:
            raise ConfigError(
                "MODEL.LOSSES.CE.EPSILON: CALBaseline smooths labels by a fixed epsilon "
                f"in [0, 1), got {cfg.MODEL.LOSSES.CE.EPSILON}"
            )
        head = REID_HEADS_REGISTRY.get(cfg.MODEL.HEADS.NAME)
        dim = head.feature_dim(cfg) if hasattr(head, "feature_dim") else cfg.MODEL.BACKBONE.FEAT_DIM
        cal = cfg.MODEL.CAL
        return dict(
            super().from_config(cfg),
            clothes_classifier=CosineClassifier(dim, cal.NUM_CLOTHES),
            cal={
                "start_epoch_cc": cal.START_EPOCH_CC,
                "start_epoch_adv": cal.START_EPOCH_ADV,
                "scale": cal.SCALE,
                "epsilon": cal.EPSILON,
            },
        )

    def update_clothes_classifier(self, loss_clothes):
        """One step of the clothes classifier's own optimizer on `loss_clothes`: installed
        for each step by the training step (lastreid.train_steps)."""
        raise RuntimeError(
            "CALBaseline trains with lastreid.engine.Trainer only: its training step updates "
            "the clothes classifier"
        )

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)
        # Baseline.forward hands `losses` the identities only; CAL also needs the clothes.
        features = self.backbone(self.preprocess_image(batched_inputs))
        targets = batched_inputs["targets"]
        return self.losses(self.heads(features, targets), targets, batched_inputs["clothes"])

    def losses(self, outputs, gt_labels, clothes):
        log_accuracy(outputs["pred_class_logits"], gt_labels)
        names = self.loss_kwargs["loss_names"]
        features = outputs["features"]
        loss_dict = {}
        if "CrossEntropyLoss" in names:
            ce = self.loss_kwargs["ce"]
            # The reference's smoothing, (1 - eps) one-hot + eps / classes (fastreid's
            # spreads eps over the other classes only).
            loss_dict["loss_cls"] = ce["scale"] * F.cross_entropy(
                outputs["cls_outputs"], gt_labels, label_smoothing=ce["eps"]
            )
        if "TripletLoss" in names:
            tri = self.loss_kwargs["tri"]
            loss_dict["loss_triplet"] = tri["scale"] * triplet_loss(
                features, gt_labels, tri["margin"], tri["norm_feat"], tri["hard_mining"]
            )
        cal, zero = self.cal, features.new_zeros((), dtype=torch.float32)
        loss_dict["loss_clothes"] = loss_dict["loss_cal"] = zero
        if self.epoch >= cal["start_epoch_cc"]:
            loss = clothes_loss(self.clothes_classifier(features.detach()), clothes, cal["scale"])
            self.update_clothes_classifier(loss)
            loss_dict["loss_clothes"] = loss.detach()  # its gradient was used just above
        if self.epoch >= cal["start_epoch_adv"]:
            positive = (gt_labels[:, None] == self.clothes_pids[None, :]).to(torch.float32)
            cosines = self.clothes_classifier(features, weight_grad=False)
            loss_dict["loss_cal"] = clothes_adversarial_loss(
                cosines, clothes, positive, cal["scale"], cal["epsilon"]
            )
        return loss_dict
