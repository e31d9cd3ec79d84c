"""`PartBaseline`: fastreid's Baseline for heads with several classifiers and several triplet
features (PCB, HPM, the paper's MGN). Only `losses` differs: one cross-entropy term per
classifier and one triplet term per feature, each named after its part (`loss_cls_s0`,
`loss_triplet_p1`, ...), so every part reaches the progress line and metrics.json.

A head for it returns, in training, `parts.training_outputs(...)` and has two attributes
saying how the paper's code combines its terms: `cls_reduction` and `triplet_reduction`,
"mean" (each term weighted 1 / count) or "sum". In eval mode it returns the test feature.
"""

from fastreid.modeling.losses import cross_entropy_loss, log_accuracy, triplet_loss
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline

from ..errors import ConfigError

__all__ = ["PartBaseline", "REDUCTIONS", "part_loss_kwargs"]

REDUCTIONS = ("mean", "sum")
LOSSES = ("CrossEntropyLoss", "TripletLoss")


def _term_weight(reduction, count):
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction must be 'mean' or 'sum', got {reduction!r}")
    return 1.0 / count if reduction == "mean" else 1.0


def part_loss_kwargs(cfg):
    """The loss settings `PartBaseline.losses` reads: MODEL.LOSSES.NAME and its CE / TRI
    keys (what fastreid's Baseline passes for them); ConfigError for another loss kind."""
    losses = cfg.MODEL.LOSSES
    other = [name for name in losses.NAME if name not in LOSSES]
    if other:
        raise ConfigError(
            f"MODEL.LOSSES.NAME: {cfg.MODEL.META_ARCHITECTURE} computes "
            f"{' and '.join(LOSSES)} only, got {', '.join(other)}"
        )
    ce, tri = losses.CE, losses.TRI
    return {
        "loss_names": tuple(losses.NAME),
        "ce": {"eps": ce.EPSILON, "alpha": ce.ALPHA, "scale": ce.SCALE},
        "tri": {
            "margin": tri.MARGIN,
            "norm_feat": tri.NORM_FEAT,
            "hard_mining": tri.HARD_MINING,
            "scale": tri.SCALE,
        },
    }


def _name(kind, part):
    return f"loss_{kind}_{part}" if part else f"loss_{kind}"


@META_ARCH_REGISTRY.register()
class PartBaseline(Baseline):
    """Baseline with the part losses of the module docstring; MODEL.LOSSES.NAME chooses the
    kinds (CrossEntropyLoss, TripletLoss) and their CE / TRI settings as for Baseline."""

    @classmethod
    def from_config(cls, cfg):
        return dict(super().from_config(cfg), loss_kwargs=part_loss_kwargs(cfg))

    def losses(self, outputs, gt_labels):
        log_accuracy(outputs["pred_class_logits"].detach(), gt_labels)
        names = self.loss_kwargs["loss_names"]
        loss_dict = {}
        if "CrossEntropyLoss" in names:
            ce = self.loss_kwargs["ce"]
            logits = outputs["cls_outputs"]
            weight = _term_weight(self.heads.cls_reduction, len(logits)) * ce["scale"]
            for part, value in logits.items():
                loss = cross_entropy_loss(value, gt_labels, ce["eps"], ce["alpha"])
                loss_dict[_name("cls", part)] = loss * weight
        if "TripletLoss" in names:
            tri = self.loss_kwargs["tri"]
            features = outputs["features"]
            weight = _term_weight(self.heads.triplet_reduction, len(features)) * tri["scale"]
            for part, value in features.items():
                loss = triplet_loss(
                    value, gt_labels, tri["margin"], tri["norm_feat"], tri["hard_mining"]
                )
                loss_dict[_name("triplet", part)] = loss * weight
        return loss_dict
