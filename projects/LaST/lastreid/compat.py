"""Shims that let fastreid 1.4.0 import and run on Python >= 3.10, torch 2.x and NumPy 2.

Each shim fixes one measured breakage and is applied before fastreid is first imported;
nothing in site-packages is modified.

1. `from collections import Mapping` (fastreid/data/build.py, evaluation/testing.py):
   the ABC aliases were removed from `collections` in Python 3.10.
2. `from torch._six import string_classes` (fastreid/data/build.py): `torch._six` was
   removed in torch 2.0.
3. `np.bool` (fastreid/evaluation/rank.py, Python fallback): missing in NumPy 1.24-1.26;
   NumPy 2 has it again.
4. The Cython rank / ROC evaluators: fastreid compiles them with `make` inside its own
   package folder on first use and calls `sys.exit(1)` when that fails. setup.py compiles
   the same sources into `lastreid._cylib`; here they are registered under fastreid's
   module names so that `fastreid.evaluation.rank.IS_CYTHON_AVAI` is True and no
   evaluation ever runs `make`.
5. `Baseline.preprocess_image` normalises `inputs["images"]` in place; fastreid's
   `inference_on_dataset` then flips that already-normalised batch for the flip test, so
   the mirrored half was normalised twice and every flip-averaged evaluation was wrong.
   Normalising into a new tensor fixes it for every caller.

Workarounds that live elsewhere: the CPU loaders / trainer and ContiguousParams
(`lastreid.engine`); fp16 AMP through `torch.amp` instead of fastreid's deprecated
`torch.cuda.amp` (`lastreid.precision.CudaAMPTrainer`) and the AMP GradScaler state, which
fastreid never checkpoints, saved and restored as `grad_scaler` (`Trainer.build_hooks`).
"""
import collections
import collections.abc
import importlib
import sys
import types

import numpy as np
import torch

_COLLECTIONS_ABCS = ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable")
_CYTHON_MODULES = ("rank_cy", "roc_cy")


def _patch_collections():
    for name in _COLLECTIONS_ABCS:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


def _patch_torch_six():
    if "torch._six" in sys.modules:
        return
    try:
        importlib.import_module("torch._six")
    except ImportError:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        sys.modules["torch._six"] = six


def _patch_numpy():
    if not hasattr(np, "bool"):
        np.bool = np.bool_


def _register_cython_evaluators():
    """Returns the names of the compiled modules that could not be found."""
    missing = []
    for name in _CYTHON_MODULES:
        try:
            module = importlib.import_module("lastreid._cylib." + name)
        except ImportError:
            missing.append(name)
            continue
        sys.modules["fastreid.evaluation.rank_cylib." + name] = module
    return missing


def cython_evaluator_available():
    return "fastreid.evaluation.rank_cylib.rank_cy" in sys.modules


def _patch_baseline_preprocess():
    from fastreid.modeling.meta_arch.baseline import Baseline

    def preprocess_image(self, batched_inputs):
        images = batched_inputs["images"] if isinstance(batched_inputs, dict) else batched_inputs
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"batched_inputs must be a dict or a tensor, got {type(batched_inputs)}")
        return (images - self.pixel_mean) / self.pixel_std

    Baseline.preprocess_image = preprocess_image


_patch_collections()
_patch_torch_six()
_patch_numpy()
MISSING_CYTHON_MODULES = _register_cython_evaluators()
_patch_baseline_preprocess()
