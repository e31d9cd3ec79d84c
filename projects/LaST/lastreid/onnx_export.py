"""ONNX export of the inference model (eval mode: for BoT the BNNeck feature), with a
dynamic batch axis, and a check with onnxruntime that its features match PyTorch's.

The exported graph takes `images`: float32 (batch, 3, H, W) RGB in 0..255 at
INPUT.SIZE_TEST (what fast-reid's test transforms produce: resize, no scaling) and returns
`features`: float32 (batch, dim). `InferenceModel` gives a fast-reid model (whose forward
also takes a dict and has a training branch) a plain tensor-in, tensor-out graph.

Exporters: torch 2.14's `torch.onnx.export` defaults to the torch.export-based ("dynamo")
exporter, which needs the `onnxscript` package; without it the TorchScript-based exporter
(`dynamo=False`, deprecated but working) is used. `export_onnx(exporter="auto")` picks the
first that is available.
"""

import importlib.util
import logging
import warnings

import numpy as np
import torch
from torch import nn

from .atomic import write_file_atomic
from .errors import InputError

__all__ = ["InferenceModel", "available_exporters", "export_onnx", "check_onnx"]

logger = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")


class InferenceModel(nn.Module):
    """images (B, 3, H, W) float 0..255 -> eval-mode features, without in-place ops on
    the input. Shares the weights of `model`: any fastreid meta-architecture (Baseline and
    its subclasses, fastreid's MGN, the paper's models), whose `preprocess_image` normalises
    into a new tensor (`lastreid.compat`, fix 5)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)


def available_exporters():
    """The exporters usable here, preferred first."""
    found = []
    if importlib.util.find_spec("onnxscript") is not None:
        found.append("dynamo")
    found.append("torchscript")
    return found


def export_onnx(model, path, input_size, exporter="auto", opset=17):
    """Exports `model` (a fastreid model; put in eval mode, kept in float32) to `path`; returns
    the exporter used ("dynamo" or "torchscript"). input_size: (H, W)."""
    if exporter == "auto":
        exporter = available_exporters()[0]
    if exporter not in EXPORTERS:
        raise InputError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    if exporter == "dynamo" and "dynamo" not in available_exporters():
        raise InputError(
            "the dynamo exporter needs the onnxscript package, which is not "
            "installed; use exporter='torchscript'"
        )
    wrapper = InferenceModel(model.float().to(memory_format=torch.contiguous_format)).eval()
    dummy = torch.rand(2, 3, *input_size) * 255
    common = dict(input_names=["images"], output_names=["features"], opset_version=opset)

    def export(tmp):
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                wrapper,
                (dummy,),
                tmp,
                dynamo=True,
                dynamic_shapes={"images": {0: batch}},
                external_data=False,
                **common,
            )
            return
        with warnings.catch_warnings():
            # "You are using the legacy TorchScript-based ONNX export": known, chosen.
            warnings.simplefilter("ignore", DeprecationWarning)
            # The part models' stripe bounds are constants of INPUT.SIZE_TEST: meant.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                (dummy,),
                tmp,
                dynamo=False,
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                **common,
            )

    with torch.no_grad():
        write_file_atomic(path, export)  # a kill leaves the old file or the whole new one
    logger.info("exported %s with the %s exporter", path, exporter)
    return exporter


def check_onnx(model, path, input_size, batch_sizes=(1, 3, 8), seed=0):
    """Runs random batches through onnxruntime (CPU) and PyTorch; returns a list of
    (batch size, max relative error) where the relative error of a feature vector is
    |onnx - torch| / |torch| (L2), for the caller to compare with its tolerance."""
    import onnxruntime as ort  # here: only the check needs it, and it is slow to import

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    wrapper = InferenceModel(model.float()).eval()
    generator = torch.Generator().manual_seed(seed)
    results = []
    for b in batch_sizes:
        images = torch.rand(b, 3, *input_size, generator=generator) * 255
        with torch.no_grad():
            expected = wrapper(images).numpy()
        got = session.run(["features"], {"images": images.numpy()})[0]
        if got.shape != expected.shape:
            raise AssertionError(
                f"ONNX output shape {got.shape} != PyTorch {expected.shape} at batch {b}"
            )
        err = np.linalg.norm(got - expected, axis=1) / np.maximum(
            np.linalg.norm(expected, axis=1), 1e-12
        )
        results.append((b, float(err.max())))
    return results
