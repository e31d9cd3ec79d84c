"""Reading checkpoint files weights-only (`torch.load(weights_only=True)`), with one-line
errors for corrupt and untrusted files.

Numpy scalars (the public LaST code saves `best_acc` as one) are allowlisted for the
duration of a load: rebuilding a numeric numpy scalar needs `numpy.dtype`, the numeric dtype
classes and numpy's `scalar` reconstructor, none of which can run arbitrary code.
"""

import logging
import os
import pickle
import re
import zipfile

import numpy as np
import torch

from ..errors import LastreidError, MissingFileError, one_line

logger = logging.getLogger(__name__)

__all__ = [
    "TRUST_KEY",
    "CheckpointError",
    "UntrustedCheckpointError",
    "CorruptCheckpointError",
    "load_checkpoint_file",
]

TRUST_KEY = "MODEL.TRUST_CHECKPOINTS"


class CheckpointError(LastreidError, ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


class UntrustedCheckpointError(CheckpointError):
    """The file needs arbitrary pickles and trust was not given."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, corrupt or not a checkpoint at all."""


def _numpy_scalar_globals():
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    names = (
        "Bool",
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "Float16",
        "Float32",
        "Float64",
    )
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
    return (
        "cannot be read with weights_only=True ("
        + _one_line(tail, 120)
        + "; a corrupt file, or a pickle that needs full unpickling)"
    )


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
    if not os.path.exists(path):  # a FileNotFoundError, as torch.load's, of ours: one line
        raise MissingFileError(f"checkpoint {path} does not exist")
    try:
        with _numpy_scalars_allowed():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if not _UNSAFE_GLOBAL.search(message) and (
            _WEIGHTS_ONLY_FAILED not in message or not _looks_like_torch_file(path)
        ):
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
    logger.warning(
        "Loading %s with full pickle (weights_only=False, %s True): it %s", path, TRUST_KEY, reason
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (MemoryError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as e:
        raise _corrupt(path, e) from e
