"""`Checkpointer`: fastreid's Checkpointer with atomic saves, weights-only loads, the
foreign layouts of `layouts` converted on load, and a `LoadReport` of every load."""

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from fastreid.utils import checkpoint as fastreid_checkpoint

from ..atomic import save_atomic, write_text_atomic
from ..fastreid_internals import filter_reused_missing_keys, strip_prefix_if_present
from .layouts import (
    FORMAT_FASTREID,
    FORMAT_REFERENCE,
    FORMAT_STATE_DICT,
    FORMAT_TORCHVISION,
    MODULE_PREFIX,
    convert_reference_keys,
    convert_torchvision_resnet_state_dict,
    is_reference_state_dict,
    is_state_dict,
    is_torchvision_resnet_state_dict,
    is_torchvision_stem_pool,
    summarise_keys,
)
from .loading import CheckpointError, load_checkpoint_file

logger = logging.getLogger(__name__)

__all__ = [
    "CLASSIFIER_NOT_LOADED",
    "CLASSIFIER_UNUSED",
    "LoadReport",
    "backbone_loaded",
    "Checkpointer",
]

CLASSIFIER_NOT_LOADED = "classifier not loaded: fine-tuning"
# Evaluation builds the model without classes (fastreid counts them from the training set).
CLASSIFIER_UNUSED = "classifier not used: the model has no classes (evaluation)"


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
                f"{len(keys)} ({reason}): {summarise_keys(keys)}"
                for reason, keys in by_reason.items()
            )
        if self.missing:
            text += f"; missing {len(self.missing)}: {summarise_keys(self.missing)}"
        return text


def backbone_loaded(report: Optional[LoadReport]) -> bool:
    """True if the load behind `report` filled every `backbone.` key of the model."""
    if report is None:
        return False
    return any(k.startswith("backbone.") for k in report.loaded) and not any(
        k.startswith("backbone.") for k in report.missing
    )


def _is_classifier_key(key):
    # fastreid's EmbeddingHead (heads.weight, heads.cls_layer.*), the per-branch heads of
    # fastreid's MGN (b1_head.weight, ...) and the part models' rows (heads.classifiers.*);
    # CAL's clothes classifier and its clothes-to-identity map (rows: training classes).
    head, _, rest = key.partition(".")
    if head in ("clothes_classifier", "clothes_pids"):
        return True
    if head == "heads" or head.endswith("_head"):
        return rest == "weight" or rest.startswith(("cls_layer.", "classifiers."))
    return False


class Checkpointer(fastreid_checkpoint.Checkpointer):
    """fastreid's Checkpointer with atomic saves, weights-only loads, reference/torchvision
    layout conversion and a key report (see the module docstring).

    Args beyond fastreid's: `trust` (MODEL.TRUST_CHECKPOINTS) allows full-pickle loads;
    `load_classifier=False` (MODEL.LOAD_CLASSIFIER) never loads the classifiers
    (`heads.weight` / `heads.cls_layer.*`, `heads.classifiers.*` of the part models,
    `<branch>_head.weight` of fastreid's MGN), for fine-tuning on other classes.
    """

    def __init__(
        self,
        model,
        save_dir="",
        *,
        save_to_disk=True,
        trust=False,
        load_classifier=True,
        **checkpointables,
    ):
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
                raise CheckpointError(
                    f"Checkpoint {f}: 'model' is a {type(raw['model']).__name__}, not a state dict"
                )
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
        elif is_state_dict(raw):
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
                "for such a file)",
                f,
            )
            return {"model": converted}
        self._pending_format = FORMAT_STATE_DICT
        return {"model": dict(state)}

    def _from_reference(self, f, state):
        converted, unknown = convert_reference_keys(state)
        self._pending_format = FORMAT_REFERENCE
        self.logger.info(
            "%s uses the public LaST code's key names: converted %d keys to fastreid's",
            f,
            len(converted) - len(unknown),
        )
        for key in unknown:
            converted.pop(key)
            self._pending_drops[key] = "no fastreid counterpart"
        self._warn_if_maxpool_differs()
        return converted

    def _warn_if_maxpool_differs(self):
        pool = getattr(getattr(self.model, "backbone", None), "maxpool", None)
        if isinstance(pool, torch.nn.MaxPool2d) and not is_torchvision_stem_pool(pool):
            self.logger.warning(
                "The public LaST code pools with MaxPool2d(3, stride=2, padding=1); this "
                "model's backbone uses %s, so features will not match the reference exactly "
                "(use_torchvision_stem(model) aligns it)",
                pool,
            )

    def _load_model(self, checkpoint):
        state = checkpoint.pop("model")
        self._convert_ndarray_to_tensor(state)
        strip_prefix_if_present(state, MODULE_PREFIX)
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
        missing = filter_reused_missing_keys(self.model, list(incompatible.missing_keys))
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
            self.logger.warning(
                "Not loading %s: shape %s in the checkpoint, %s in the model",
                key,
                in_ckpt,
                in_model,
            )
        self.last_load_report = report
        self.logger.info(report.summary())
        if not backbone_loaded(report) and any(k.startswith("backbone.") for k in model_state):
            self.logger.warning(
                "%s: the model's backbone was not (fully) loaded", self._pending_path
            )
        return None  # the report replaces fastreid's per-key messages
