"""The image transforms of every loader and tool: fast-reid's `build_transforms` with the
resize interpolation of INPUT.INTERPOLATION.

fast-reid hard-codes bicubic (`interpolation=3`) for its Resize and RandomResizedCrop;
the public LaST code resizes bilinearly, in training and in test. `build_transforms`
builds fast-reid's pipeline and sets the configured interpolation on those transforms, so
nothing of fast-reid is forked and every other augmentation stays its own.
"""

import torchvision.transforms as T
from fastreid.data.transforms import build_transforms as fastreid_build_transforms
from torchvision.transforms import InterpolationMode

from .errors import ConfigError

__all__ = ["INTERPOLATIONS", "build_transforms", "interpolation_mode"]

INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}
_RESIZING = (T.Resize, T.RandomResizedCrop)


def interpolation_mode(cfg):
    """The torchvision InterpolationMode of INPUT.INTERPOLATION; ConfigError naming the key
    for any other value."""
    value = cfg.INPUT.INTERPOLATION
    mode = INTERPOLATIONS.get(str(value).strip().lower())
    if mode is None:
        raise ConfigError(
            "INPUT.INTERPOLATION must be one of {}, got {!r}".format(
                ", ".join('"%s"' % k for k in INTERPOLATIONS), value
            )
        )
    return mode


def _resizing(transform):
    """The Resize / RandomResizedCrop transforms inside `transform` (through Compose and
    RandomApply), in order."""
    if isinstance(transform, _RESIZING):
        return [transform]
    children = getattr(transform, "transforms", None)
    if isinstance(children, (list, tuple)):
        return [t for child in children for t in _resizing(child)]
    return []


def build_transforms(cfg, is_train=True):
    """fast-reid's transforms for `cfg`, resized with INPUT.INTERPOLATION."""
    mode = interpolation_mode(cfg)
    transform = fastreid_build_transforms(cfg, is_train=is_train)
    for resize in _resizing(transform):
        resize.interpolation = mode
    return transform
