"""The checkpoint layouts lastreid reads besides fastreid's own, and the stem pooling the
reference checkpoints were trained with.

* the public LaST code's `{'state_dict': ...}` BoT ResNet-50 (`base.0.*`, `layer1.*`, ...,
  `bottleneck.*`, `classifier.weight`): `convert_reference_state_dict`;
* a torchvision ImageNet ResNet (`conv1.*`, ..., `fc.*`): mapped onto `backbone.*`.
"""

import logging
from collections import OrderedDict

import numpy as np
import torch

from ..fastreid_internals import group_keys
from .loading import load_checkpoint_file

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_FASTREID",
    "FORMAT_STATE_DICT",
    "FORMAT_REFERENCE",
    "FORMAT_TORCHVISION",
    "is_state_dict",
    "is_reference_state_dict",
    "is_torchvision_resnet_state_dict",
    "convert_reference_keys",
    "convert_reference_state_dict",
    "convert_torchvision_resnet_state_dict",
    "summarise_keys",
    "is_torchvision_stem_pool",
    "has_torchvision_stem",
    "use_torchvision_stem",
    "LAYOUT_REFERENCE",
    "LAYOUT_TORCHVISION",
    "LAYOUT_FASTREID",
    "checkpoint_layout",
]

FORMAT_FASTREID = "fastreid"
FORMAT_STATE_DICT = "bare state dict"
FORMAT_REFERENCE = "public LaST code (converted)"
FORMAT_TORCHVISION = "torchvision ImageNet ResNet (mapped onto backbone.*)"

MODULE_PREFIX = "module."
_REFERENCE_PREFIXES = (
    ("base.0.", "backbone.conv1."),
    ("base.1.", "backbone.bn1."),
    ("layer1.", "backbone.layer1."),
    ("layer2.", "backbone.layer2."),
    ("layer3.", "backbone.layer3."),
    ("layer4.", "backbone.layer4."),
    ("bottleneck.", "heads.bottleneck.0."),
)
_REFERENCE_EXACT = {"classifier.weight": "heads.weight"}


def _strip_module(key):
    return key[len(MODULE_PREFIX) :] if key.startswith(MODULE_PREFIX) else key


def is_state_dict(obj):
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values())
    )


def _unwrap(sd):
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        return sd["state_dict"]
    return sd


def is_reference_state_dict(sd) -> bool:
    """True for a state dict (or `{'state_dict': ...}`) of the public LaST code's
    ResNet-50 models: conv1 as `base.0`, the stages as `layer1`..`layer4`, with or
    without DataParallel's `module.` prefix."""
    sd = _unwrap(sd)
    if not isinstance(sd, dict):
        return False
    keys = {_strip_module(k) for k in sd if isinstance(k, str)}
    return "base.0.weight" in keys and any(k.startswith("layer4.") for k in keys)


def is_torchvision_resnet_state_dict(sd) -> bool:
    """True for a torchvision ImageNet ResNet state dict (`conv1.weight`, `layer1.0...`,
    `fc.*`): backbone weights, not a re-id model checkpoint."""
    if not isinstance(sd, dict):
        return False
    keys = {_strip_module(k) for k in sd if isinstance(k, str)}
    return (
        "conv1.weight" in keys
        and "bn1.weight" in keys
        and any(k.startswith("layer1.") for k in keys)
        and not any(k.startswith(("backbone.", "heads.", "base.")) for k in keys)
    )


def convert_reference_keys(state_dict):
    """`convert_reference_state_dict` without logging: returns (converted, unknown), where
    unknown lists the (module-stripped) keys outside the mapping, kept under those names."""
    converted, unknown = OrderedDict(), []
    for key, value in _unwrap(state_dict).items():
        name = _strip_module(key)
        new = _REFERENCE_EXACT.get(name)
        if new is None:
            for old_prefix, new_prefix in _REFERENCE_PREFIXES:
                if name.startswith(old_prefix):
                    new = new_prefix + name[len(old_prefix) :]
                    break
        if new is None:
            unknown.append(name)
            new = name
        converted[new] = value
    return converted, unknown


def convert_reference_state_dict(state_dict) -> dict:
    """Maps the public LaST code's ResNet-50 BoT keys onto fastreid's Baseline keys.

        base.0.*       (conv1)           -> backbone.conv1.*
        base.1.*       (bn1)             -> backbone.bn1.*
        layerN.*       (N = 1..4)        -> backbone.layerN.*   (same block sub-names)
        bottleneck.*   (BatchNorm1d)     -> heads.bottleneck.0.* (fastreid's BatchNorm2d;
                                            same parameter / buffer names and shapes)
        classifier.weight (Linear, no bias) -> heads.weight

    A leading `module.` (DataParallel) is removed. Keys outside this mapping are kept
    under their own names, so loading reports them as dropped, and are logged here.
    Accepts the state dict or the `{'state_dict': ...}` file content.
    """
    converted, unknown = convert_reference_keys(state_dict)
    if unknown:
        logger.warning(
            "Reference checkpoint keys with no fastreid counterpart (%d, kept unmapped): %s",
            len(unknown),
            summarise_keys(unknown),
        )
    return converted


def convert_torchvision_resnet_state_dict(state_dict):
    """torchvision ResNet keys -> `backbone.*`; returns (converted, dropped fc keys)."""
    converted, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        name = _strip_module(key)
        if name.startswith("fc."):
            dropped.append(name)
        else:
            converted["backbone." + name] = value
    return converted, dropped


def summarise_keys(keys, limit=8):
    """Groups keys by their module (fastreid's grouping) and shortens long lists."""
    parts = group_keys(keys)
    if len(parts) > limit:
        parts = parts[:limit] + [f"... ({len(parts) - limit} more modules)"]
    return ", ".join(parts)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def is_torchvision_stem_pool(pool):
    """True for the public LaST code's (torchvision's) stem pooling, MaxPool2d(3, 2, padding=1)."""
    return (
        _pair(pool.kernel_size) == (3, 3)
        and _pair(pool.stride) == (2, 2)
        and _pair(pool.padding) == (1, 1)
        and not pool.ceil_mode
        and _pair(pool.dilation) == (1, 1)
    )


def has_torchvision_stem(model):
    """True if `model.backbone.maxpool` pools like the public LaST code's ResNet."""
    pool = getattr(getattr(model, "backbone", None), "maxpool", None)
    return isinstance(pool, torch.nn.MaxPool2d) and is_torchvision_stem_pool(pool)


def use_torchvision_stem(model):
    """Replaces fastreid's stem pooling, MaxPool2d(3, 2, padding=0, ceil_mode=True), by the
    public LaST code's (torchvision's) MaxPool2d(3, 2, padding=1). The two give the same
    output size on even inputs but pool windows shifted by one pixel, so only the latter
    reproduces a reference checkpoint's features. Returns the model."""
    model.backbone.maxpool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return model


LAYOUT_REFERENCE, LAYOUT_TORCHVISION, LAYOUT_FASTREID = "reference", "torchvision", "fastreid"


def checkpoint_layout(path, trust=False):
    """'reference' (the public LaST code's `{'state_dict': ...}`), 'torchvision' (an
    ImageNet ResNet state dict) or 'fastreid' (`{'model': ...}` or a bare fastreid state
    dict). Raises lastreid.checkpoint.CheckpointError for unreadable files."""
    raw = load_checkpoint_file(path, trust=trust)
    state = raw.get("model", raw.get("state_dict", raw)) if isinstance(raw, dict) else raw
    if is_reference_state_dict(state):
        return LAYOUT_REFERENCE
    if is_torchvision_resnet_state_dict(state):
        return LAYOUT_TORCHVISION
    return LAYOUT_FASTREID
