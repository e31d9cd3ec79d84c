"""Checkpoints: weights-only loading (`loading`), the public LaST code's and torchvision's
layouts (`layouts`), and the atomic, reporting `Checkpointer` (`checkpointer`). docs/training.md
(Resuming) describes the guarantees."""

from .checkpointer import (
    CLASSIFIER_NOT_LOADED,
    CLASSIFIER_UNUSED,
    Checkpointer,
    LoadReport,
    backbone_loaded,
)
from .layouts import (
    FORMAT_FASTREID,
    FORMAT_REFERENCE,
    FORMAT_STATE_DICT,
    FORMAT_TORCHVISION,
    LAYOUT_FASTREID,
    LAYOUT_REFERENCE,
    LAYOUT_TORCHVISION,
    checkpoint_layout,
    convert_reference_keys,
    convert_reference_state_dict,
    convert_torchvision_resnet_state_dict,
    has_torchvision_stem,
    is_reference_state_dict,
    is_torchvision_resnet_state_dict,
    summarise_keys,
    use_torchvision_stem,
)
from .loading import (
    TRUST_KEY,
    CheckpointError,
    CorruptCheckpointError,
    UntrustedCheckpointError,
    load_checkpoint_file,
)

__all__ = [
    "Checkpointer",
    "LoadReport",
    "backbone_loaded",
    "CLASSIFIER_NOT_LOADED",
    "CLASSIFIER_UNUSED",
    "FORMAT_FASTREID",
    "FORMAT_REFERENCE",
    "FORMAT_STATE_DICT",
    "FORMAT_TORCHVISION",
    "LAYOUT_FASTREID",
    "LAYOUT_REFERENCE",
    "LAYOUT_TORCHVISION",
    "checkpoint_layout",
    "convert_reference_keys",
    "convert_reference_state_dict",
    "convert_torchvision_resnet_state_dict",
    "has_torchvision_stem",
    "is_reference_state_dict",
    "is_torchvision_resnet_state_dict",
    "summarise_keys",
    "use_torchvision_stem",
    "TRUST_KEY",
    "CheckpointError",
    "CorruptCheckpointError",
    "UntrustedCheckpointError",
    "load_checkpoint_file",
]
