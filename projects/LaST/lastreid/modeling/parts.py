"""The pieces the part-based models (the paper's MGN, PCB and HPM) share: horizontal stripe
pooling, the 1x1 Conv-BN-ReLU reduction of a pooled stripe, a row of identity classifiers,
and the names their loss terms get (docs/baselines.md)."""

import torch
from torch import nn

__all__ = [
    "ReductionBlock",
    "flatten_stripes",
    "make_classifiers",
    "pool_stripes",
    "stripe_names",
    "stripe_rows",
    "stripes",
    "training_outputs",
]


def stripe_rows(height, num_stripes):
    """(first, end) rows of each of `num_stripes` horizontal stripes of a map `height` rows
    high: PyTorch's adaptive-pooling bins (the paper's code pools with AdaptiveAvgPool2d /
    AdaptiveMaxPool2d), floor(i * H / n) to ceil((i + 1) * H / n). With H divisible by n
    (the paper's PCB and HPM maps) they are the H / n rows each; otherwise neighbouring bins
    share a row (the paper's MGN: 3 stripes of a 16-row map are rows 0-5, 5-10, 10-15)."""
    n = num_stripes
    return [((i * height) // n, -(-(i + 1) * height // n)) for i in range(n)]


def pool_stripes(features, num_stripes, mode="avg"):
    """(B, C, num_stripes, 1): `features` (B, C, H, W) average- or max-pooled over the
    `stripe_rows` stripes, top first. Written as slices, not as adaptive pooling, so that
    the ONNX export takes any map height (its adaptive pooling needs bins that divide it)."""
    if mode not in ("avg", "max"):
        raise ValueError(f"stripe pooling is 'avg' or 'max', got {mode!r}")
    reduce = torch.mean if mode == "avg" else torch.amax
    # A Python int: the ONNX exporter would trace arithmetic on the size, and ONNX's integer
    # division truncates where the bins need floor and ceiling.
    height = int(features.shape[2])
    parts = [
        reduce(features[:, :, a:b], dim=(2, 3), keepdim=True)
        for a, b in stripe_rows(height, num_stripes)
    ]
    return parts[0] if num_stripes == 1 else torch.cat(parts, dim=2)


def stripes(pooled):
    """The stripes of `pool_stripes`'s (B, C, n, 1) output as n (B, C, 1, 1) tensors."""
    return [pooled[:, :, i : i + 1] for i in range(pooled.shape[2])]


def stripe_names(prefix, count):
    """Loss-term names of `count` stripes: `prefix` alone for one (a global feature), else
    prefix_0, prefix_1, ... top to bottom."""
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


class ReductionBlock(nn.Sequential):
    """Conv1x1 (no bias) - BatchNorm - ReLU from `in_dim` to `out_dim` channels, applied to a
    pooled (B, C, 1, 1) stripe; `flat` gives the (B, out_dim) feature.

    Initialisation as in the paper's code: the convolution Kaiming-normal with `conv_mode`
    ("fan_out" for PCB / HPM, "fan_in" for MGN), the BatchNorm weight 1 (or drawn from
    N(1, bn_weight_std), MGN's 0.02) and bias 0."""

    def __init__(self, in_dim, out_dim, conv_mode="fan_out", bn_weight_std=0.0):
        super().__init__(
            nn.Conv2d(in_dim, out_dim, 1, bias=False), nn.BatchNorm2d(out_dim), nn.ReLU()
        )
        nn.init.kaiming_normal_(self[0].weight, mode=conv_mode, nonlinearity="relu")
        if bn_weight_std > 0:
            nn.init.normal_(self[1].weight, mean=1.0, std=bn_weight_std)
        else:
            nn.init.ones_(self[1].weight)
        nn.init.zeros_(self[1].bias)

    def flat(self, pooled):
        return self(pooled).flatten(1)


def make_classifiers(count, in_dim, num_classes, bias=True, std=None):
    """`count` linear identity classifiers in_dim -> num_classes. Weights drawn from
    N(0, std), or Kaiming-normal over fan_out when std is None (MGN's); biases 0. With no
    classes (a model built for evaluation) they are empty and left uninitialised."""
    classifiers = nn.ModuleList(nn.Linear(in_dim, num_classes, bias=bias) for _ in range(count))
    if num_classes > 0:
        for fc in classifiers:
            if std is None:
                nn.init.kaiming_normal_(fc.weight, mode="fan_out")
            else:
                nn.init.normal_(fc.weight, std=std)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
    return classifiers


def training_outputs(names, logits, features):
    """The training output of a part model for `lastreid.modeling.part_baseline.PartBaseline`:
    one logits tensor per name, the triplet features by their own names (a dict), and the
    first logits for fastreid's accuracy line."""
    return {
        "cls_outputs": dict(zip(names, logits)),
        "features": features,
        "pred_class_logits": logits[0],
    }


def flatten_stripes(pooled):
    """(B, C, n, 1) -> (B, C * n) in the paper's order (channel-major, as its view does)."""
    return pooled.reshape(pooled.shape[0], -1)
