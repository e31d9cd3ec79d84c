"""Checkpoints: atomic saves, weights-only loads, and the public LaST code's checkpoints.

`Checkpointer` is fastreid's Checkpointer with four changes:

* saves are atomic (`save_atomic`): a temporary file in the same folder, fsync, then
  `os.replace`; the `last_checkpoint` pointer is replaced the same way and only after the
  checkpoint it names is complete, so a kill at any moment leaves the previous files good;
* files are read with `torch.load(weights_only=True)`; a file that needs arbitrary pickles
  is refused (`UntrustedCheckpointError`) unless `trust=True` (MODEL.TRUST_CHECKPOINTS),
  and an unreadable file gives a one-line `CorruptCheckpointError` naming it;
* the layout is detected: fastreid's `{'model': ...}`, the public LaST code's
  `{'state_dict': ...}` (converted with `convert_reference_state_dict`) and a torchvision
  ImageNet ResNet file (mapped onto `backbone.*`, `fc.*` dropped);
* every load ends with one summary line and a `LoadReport` (`last_load_report`), which
  `backbone_loaded` checks, e.g. before an evaluation-only run reports numbers.

Numpy scalars (the public LaST code saves `best_acc` as one) are allowlisted for the
duration of a load (`_NUMPY_SCALAR_GLOBALS`): rebuilding a numeric numpy scalar needs
`numpy.dtype`, the numeric dtype classes and numpy's `scalar` reconstructor, none of which
can run arbitrary code. Our own saves never contain numpy values: extra data passed to
`Checkpointer.save` is converted to Python numbers / tensors first.
"""
import logging
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from fastreid.utils import checkpoint as _fastreid_checkpoint

from .errors import LastreidError, one_line

logger = logging.getLogger(__name__)

TRUST_KEY = "MODEL.TRUST_CHECKPOINTS"
CLASSIFIER_NOT_LOADED = "classifier not loaded: fine-tuning"
# Evaluation builds the model without classes (fastreid counts them from the training set).
CLASSIFIER_UNUSED = "classifier not used: the model has no classes (evaluation)"

FORMAT_FASTREID = "fastreid"
FORMAT_STATE_DICT = "bare state dict"
FORMAT_REFERENCE = "public LaST code (converted)"
FORMAT_TORCHVISION = "torchvision ImageNet ResNet (mapped onto backbone.*)"


class CheckpointError(LastreidError, ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


class UntrustedCheckpointError(CheckpointError):
    """The file needs arbitrary pickles and trust was not given."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, corrupt or not a checkpoint at all."""


# Writing ---------------------------------------------------------------------------------

def _fsync_dir(folder):
    """Makes a rename in `folder` durable (best effort: not every OS / FS supports it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path, write):
    """Calls `write(fileobj)` on a fresh temporary file next to `path`, then renames it
    onto `path`. On any failure the temporary file is removed and `path` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp = os.path.join(folder, f".{name}.tmp.{os.getpid()}.{os.urandom(4).hex()}")
    # 0o666 and O_EXCL: the final file gets the usual umask permissions, and a name clash
    # with another writer fails instead of mixing two writes.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def save_atomic(obj, path):
    """`torch.save(obj, path)`, but a crash or kill at any point leaves either the old
    file or the complete new one at `path`, never a partial file."""
    _write_atomic(path, lambda f: torch.save(obj, f))


def write_text_atomic(text, path):
    """Writes a small text file (e.g. the `last_checkpoint` pointer) atomically."""
    data = text.encode("utf-8")
    _write_atomic(path, lambda f: f.write(data))


def _weights_only_safe(value):
    """Numpy scalars -> Python numbers and numpy arrays -> tensors, recursively, so that
    extra data saved with a checkpoint loads with weights_only=True. Containers that need
    no change are returned as they are."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if isinstance(value, dict):
        items = [(k, _weights_only_safe(v)) for k, v in value.items()]
        if all(new is old for (_, new), old in zip(items, value.values())):
            return value
        return OrderedDict(items) if isinstance(value, OrderedDict) else dict(items)
    if isinstance(value, (list, tuple)):
        items = [_weights_only_safe(v) for v in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return type(value)(items) if type(value) in (list, tuple) else list(items)
    return value


# Reading ---------------------------------------------------------------------------------

def _numpy_scalar_globals():
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    names = ("Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32",
             "UInt64", "Float16", "Float32", "Float64")
    dtypes = getattr(np, "dtypes", None)
    dtype_classes = [getattr(dtypes, n + "DType") for n in names if hasattr(dtypes, n + "DType")]
    # Files written under numpy 1.x name the reconstructor numpy.core.multiarray.scalar,
    # files written under numpy 2 numpy._core.multiarray.scalar: allow both spellings.
    return [
        np.dtype,
        *dtype_classes,
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        (multiarray.scalar, "numpy._core.multiarray.scalar"),
    ]


_NUMPY_SCALAR_GLOBALS = _numpy_scalar_globals()


def _numpy_scalars_allowed():
    """A safe_globals context adding only the numpy entries not already allowlisted (its
    exit removes what it added, so it must not add a caller's own entries)."""
    present = torch.serialization.get_safe_globals()
    return torch.serialization.safe_globals([g for g in _NUMPY_SCALAR_GLOBALS if g not in present])


_WEIGHTS_ONLY_FAILED = "Weights only load failed"
_UNSAFE_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")


def _one_line(text, limit=200):
    return one_line(str(text).replace("\x1b[1m", "").replace("\x1b[0m", ""), limit)  # no bold


def _weights_only_reason(message):
    """The useful part of torch's long weights-only error."""
    found = _UNSAFE_GLOBAL.findall(message)
    if found:
        return "needs arbitrary pickles (" + ", ".join(dict.fromkeys(found)) + ")"
    tail = message.split("WeightsUnpickler error:", 1)[-1]
    tail = tail.split("Check the documentation of torch.load", 1)[0]
    return ("cannot be read with weights_only=True (" + _one_line(tail, 120)
            + "; a corrupt file, or a pickle that needs full unpickling)")


def _looks_like_torch_file(path):
    """A zip archive (torch >= 1.6) or a legacy file opening with torch's magic number."""
    if zipfile.is_zipfile(path):
        return True
    magic = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)
    with open(path, "rb") as f:
        head = f.read(len(magic))
    return head[:1] == magic[:1] and head[2:] == magic[2:]  # any pickle protocol


def _corrupt(path, error):
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    text = _one_line(text, 1000).split(". ")[0]  # the first sentence says what failed
    detail = _one_line(f"{type(error).__name__}: {text}" if text else type(error).__name__, 160)
    return CorruptCheckpointError(
        f"Cannot read checkpoint {path}: it is truncated, corrupt or not a torch file ({detail})"
    )


def load_checkpoint_file(path, trust=False):
    """Reads a checkpoint with `torch.load(map_location="cpu", weights_only=True)`.

    A file that needs arbitrary pickles raises `UntrustedCheckpointError` unless `trust`,
    in which case it is read with weights_only=False and a warning is logged. An
    unreadable file raises `CorruptCheckpointError`. Both messages are one line naming
    the file.
    """
    path = os.fspath(path)
    try:
        with _numpy_scalars_allowed():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if not _UNSAFE_GLOBAL.search(message) and (
                _WEIGHTS_ONLY_FAILED not in message or not _looks_like_torch_file(path)):
            raise _corrupt(path, e) from e
        reason = _weights_only_reason(message)
    except (MemoryError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as e:  # zip / EOF / struct / key errors from a damaged file
        raise _corrupt(path, e) from e

    if not trust:
        raise UntrustedCheckpointError(
            f"Refusing to load checkpoint {path}: it {reason}. If you trust this file, "
            f"set {TRUST_KEY} True in the config (trust=True) to load it with full pickle"
        ) from None
    logger.warning("Loading %s with full pickle (weights_only=False, %s True): it %s",
                   path, TRUST_KEY, reason)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (MemoryError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as e:
        raise _corrupt(path, e) from e


# Layouts ---------------------------------------------------------------------------------

_MODULE_PREFIX = "module."
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
    return key[len(_MODULE_PREFIX):] if key.startswith(_MODULE_PREFIX) else key


def _is_state_dict(obj):
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
                    new = new_prefix + name[len(old_prefix):]
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
        logger.warning("Reference checkpoint keys with no fastreid counterpart (%d, kept "
                       "unmapped): %s", len(unknown), _summarise(unknown))
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


# Reporting -------------------------------------------------------------------------------

def _summarise(keys, limit=8):
    """Groups keys by their module (fastreid's grouping) and shortens long lists."""
    groups = _fastreid_checkpoint._group_checkpoint_keys(sorted(keys))
    parts = [head + _fastreid_checkpoint._group_to_str(tails) for head, tails in groups.items()]
    if len(parts) > limit:
        parts = parts[:limit] + [f"... ({len(parts) - limit} more modules)"]
    return ", ".join(parts)


@dataclass
class LoadReport:
    """What one `Checkpointer.load` did. `dropped` are checkpoint keys not loaded (with the
    reason in `reasons`), `missing` are model keys that kept their previous values."""
    path: str = ""
    format: str = ""
    loaded: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    reasons: Dict[str, str] = field(default_factory=dict)
    shapes: Dict[str, Tuple[tuple, tuple]] = field(default_factory=dict)

    def summary(self):
        total = len(self.loaded) + len(self.missing)
        text = f"Loaded {len(self.loaded)}/{total} model keys from {self.path} [{self.format}]"
        if self.dropped:
            by_reason = {}
            for key in self.dropped:
                by_reason.setdefault(self.reasons.get(key, "unexpected"), []).append(key)
            text += "; dropped " + "; ".join(
                f"{len(keys)} ({reason}): {_summarise(keys)}" for reason, keys in by_reason.items()
            )
        if self.missing:
            text += f"; missing {len(self.missing)}: {_summarise(self.missing)}"
        return text


def backbone_loaded(report: Optional[LoadReport]) -> bool:
    """True if the load behind `report` filled every `backbone.` key of the model."""
    if report is None:
        return False
    return any(k.startswith("backbone.") for k in report.loaded) and not any(
        k.startswith("backbone.") for k in report.missing
    )


def _is_classifier_key(key):
    return key == "heads.weight" or key.startswith("heads.cls_layer.")


# Checkpointer ----------------------------------------------------------------------------

class Checkpointer(_fastreid_checkpoint.Checkpointer):
    """fastreid's Checkpointer with atomic saves, weights-only loads, reference/torchvision
    layout conversion and a key report (see the module docstring).

    Args beyond fastreid's: `trust` (MODEL.TRUST_CHECKPOINTS) allows full-pickle loads;
    `load_classifier=False` (MODEL.LOAD_CLASSIFIER) never loads `heads.weight` /
    `heads.cls_layer.*`, for fine-tuning on other classes.
    """

    def __init__(self, model, save_dir="", *, save_to_disk=True, trust=False,
                 load_classifier=True, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logger
        self.trust = bool(trust)
        self.load_classifier = bool(load_classifier)
        self.last_load_report: Optional[LoadReport] = None
        self._pending_drops: Dict[str, str] = {}
        self._pending_format = ""
        self._pending_path = ""

    @classmethod
    def from_config(cls, cfg, model, save_dir="", **kwargs):
        """Takes `trust` / `load_classifier` from MODEL.TRUST_CHECKPOINTS / LOAD_CLASSIFIER."""
        kwargs.setdefault("trust", cfg.MODEL.TRUST_CHECKPOINTS)
        kwargs.setdefault("load_classifier", cfg.MODEL.LOAD_CLASSIFIER)
        return cls(model, save_dir, **kwargs)

    # saving

    def save(self, name: str, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(_weights_only_safe(kwargs))

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        assert os.path.basename(save_file) == basename, basename
        self.logger.info("Saving checkpoint to %s", save_file)
        save_atomic(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str):
        write_text_atomic(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))

    # loading

    def load(self, path: str, checkpointables: Optional[List[str]] = None):
        self.last_load_report = None
        self._pending_drops, self._pending_format, self._pending_path = {}, "", path
        return super().load(path, checkpointables)

    def _load_file(self, f: str):
        self._pending_path = f
        raw = load_checkpoint_file(f, trust=self.trust)

        if isinstance(raw, dict) and "model" in raw:
            if not isinstance(raw["model"], dict):
                raise CheckpointError(f"Checkpoint {f}: 'model' is a {type(raw['model']).__name__}, "
                                      "not a state dict")
            if is_reference_state_dict(raw["model"]):
                raw["model"] = self._from_reference(f, raw["model"])
            else:
                self._pending_format = FORMAT_FASTREID
            return raw

        state = raw.get("state_dict") if isinstance(raw, dict) else None
        if isinstance(state, dict):
            other = sorted(str(k) for k in raw if k != "state_dict")
            if other:
                self.logger.info("Ignoring non-weight entries of %s: %s", f, ", ".join(other))
        elif _is_state_dict(raw):
            state = raw
        else:
            keys = ", ".join(sorted(map(str, raw))[:10]) if isinstance(raw, dict) else ""
            raise CheckpointError(
                f"Checkpoint {f}: unrecognised layout ({type(raw).__name__}"
                + (f" with keys {keys}" if keys else "")
                + "); expected {'model': state_dict}, {'state_dict': state_dict} or a state dict"
            )

        if is_reference_state_dict(state):
            return {"model": self._from_reference(f, state)}
        if is_torchvision_resnet_state_dict(state):
            converted, dropped = convert_torchvision_resnet_state_dict(state)
            for key in dropped:
                self._pending_drops[key] = "ImageNet classifier"
            self._pending_format = FORMAT_TORCHVISION
            self.logger.warning(
                "%s is a torchvision ImageNet ResNet, not a re-id checkpoint: mapped onto "
                "backbone.* without fc.* (MODEL.BACKBONE.PRETRAIN_PATH is the usual place "
                "for such a file)", f)
            return {"model": converted}
        self._pending_format = FORMAT_STATE_DICT
        return {"model": dict(state)}

    def _from_reference(self, f, state):
        converted, unknown = convert_reference_keys(state)
        self._pending_format = FORMAT_REFERENCE
        self.logger.info("%s uses the public LaST code's key names: converted %d keys to "
                         "fastreid's", f, len(converted) - len(unknown))
        for key in unknown:
            converted.pop(key)
            self._pending_drops[key] = "no fastreid counterpart"
        self._warn_if_maxpool_differs()
        return converted

    def _warn_if_maxpool_differs(self):
        pool = getattr(getattr(self.model, "backbone", None), "maxpool", None)
        if isinstance(pool, torch.nn.MaxPool2d) and not _is_reference_maxpool(pool):
            self.logger.warning(
                "The public LaST code pools with MaxPool2d(3, stride=2, padding=1); this "
                "model's backbone uses %s, so features will not match the reference exactly "
                "(use_reference_maxpool(model) aligns it)", pool)

    def _load_model(self, checkpoint):
        state = checkpoint.pop("model")
        self._convert_ndarray_to_tensor(state)
        _fastreid_checkpoint._strip_prefix_if_present(state, _MODULE_PREFIX)
        reasons = dict(self._pending_drops)

        if not self.load_classifier:
            for key in [k for k in state if _is_classifier_key(k)]:
                state.pop(key)
                reasons[key] = CLASSIFIER_NOT_LOADED

        model_state = self.model.state_dict()
        shapes = {}
        for key in list(state):
            if key not in model_state:
                reasons[key] = "not in the model"
                state.pop(key)
                continue
            in_ckpt, in_model = tuple(state[key].shape), tuple(model_state[key].shape)
            if _is_classifier_key(key) and in_model and in_model[0] == 0:
                reasons[key] = CLASSIFIER_UNUSED
                state.pop(key)
            elif in_ckpt != in_model:
                reasons[key] = "shape mismatch"
                shapes[key] = (in_ckpt, in_model)
                state.pop(key)

        incompatible = self.model.load_state_dict(state, strict=False)
        missing = _fastreid_checkpoint._filter_reused_missing_keys(
            self.model, list(incompatible.missing_keys))
        missing = [k for k in missing if reasons.get(k) != CLASSIFIER_UNUSED]  # empty in the model
        report = LoadReport(
            path=self._pending_path,
            format=self._pending_format or FORMAT_FASTREID,
            loaded=sorted(state),
            dropped=sorted(reasons),
            missing=sorted(missing),
            reasons=reasons,
            shapes=shapes,
        )
        for key, (in_ckpt, in_model) in shapes.items():
            self.logger.warning("Not loading %s: shape %s in the checkpoint, %s in the model",
                                key, in_ckpt, in_model)
        self.last_load_report = report
        self.logger.info(report.summary())
        if not backbone_loaded(report) and any(k.startswith("backbone.") for k in model_state):
            self.logger.warning("%s: the model's backbone was not (fully) loaded", self._pending_path)
        return None  # the report replaces fastreid's per-key messages


# Reference architecture ------------------------------------------------------------------

def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _is_reference_maxpool(pool):
    return (_pair(pool.kernel_size) == (3, 3) and _pair(pool.stride) == (2, 2)
            and _pair(pool.padding) == (1, 1) and not pool.ceil_mode
            and _pair(pool.dilation) == (1, 1))


def has_reference_maxpool(model):
    """True if `model.backbone.maxpool` pools like the public LaST code's ResNet."""
    pool = getattr(getattr(model, "backbone", None), "maxpool", None)
    return isinstance(pool, torch.nn.MaxPool2d) and _is_reference_maxpool(pool)


def use_reference_maxpool(model):
    """Replaces fastreid's stem pooling, MaxPool2d(3, 2, padding=0, ceil_mode=True), by the
    public LaST code's (torchvision's) MaxPool2d(3, 2, padding=1). The two give the same
    output size on even inputs but pool windows shifted by one pixel, so only the latter
    reproduces a reference checkpoint's features. Returns the model."""
    model.backbone.maxpool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return model
