"""`import lastreid` makes fastreid 1.4.0 work here; each test is one of compat.py's fixes."""

import collections
from types import SimpleNamespace

import lastreid  # noqa: F401

import torch


def test_fastreid_imports_with_the_compiled_evaluator():
    import fastreid.evaluation.rank as rank
    from fastreid.data import build  # needs collections.Mapping and torch._six

    assert rank.IS_CYTHON_AVAI
    assert str in build.string_classes
    assert collections.Mapping is collections.abc.Mapping


def test_reid_evaluator_never_runs_make(monkeypatch):
    import fastreid.evaluation.reid_evaluation as reid_evaluation
    from fastreid.config import get_cfg

    def fail():
        raise AssertionError("compile_helper (make) was called")

    monkeypatch.setattr(reid_evaluation, "compile_helper", fail)
    reid_evaluation.ReidEvaluator(get_cfg(), num_query=1)


def test_flip_test_sees_each_image_normalised_once():
    """fastreid's inference_on_dataset flips inputs["images"] after the first forward;
    the mirrored features must equal those of a fresh forward of the mirrored images."""
    from lastreid.startup import build_cfg

    from fastreid.evaluation.evaluator import DatasetEvaluator, inference_on_dataset
    from fastreid.modeling import build_model

    # fmt: off
    cfg = build_cfg(
        "",
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.BACKBONE.DEPTH", "18x",
            "MODEL.BACKBONE.FEAT_DIM", "512",
            "MODEL.HEADS.NUM_CLASSES", "3",
            "MODEL.HEADS.WITH_BNNECK", "True",
        ],
    )
    # fmt: on
    model = build_model(cfg).eval()
    images = torch.rand(3, 3, 64, 32) * 255

    class Keep(DatasetEvaluator):
        def reset(self):
            self.outputs = []

        def process(self, inputs, outputs):
            self.outputs.append(outputs)

        def evaluate(self):
            return {}

    keep = Keep()
    loader = [{"images": images.clone(), "targets": torch.zeros(3), "camids": torch.zeros(3)}]
    loader = type("Loader", (list,), {"dataset": loader[0]["images"]})(loader)
    inference_on_dataset(model, loader, keep, flip_test=True)
    with torch.no_grad():
        expected = (model(images.clone()) + model(images.flip(dims=[3]))) / 2
    torch.testing.assert_close(keep.outputs[0], expected)


def test_progress_line_twice_at_one_iteration_early_in_a_run():
    """A step's line then the epoch's end at the same iteration, before the iteration timer
    has any history: fastreid's printer divides by zero, ours skips the second line."""
    from lastreid.engine import ProgressPrinter

    import pytest
    from fastreid.utils.events import CommonMetricPrinter, EventStorage

    for printer_class, fails in ((CommonMetricPrinter, True), (ProgressPrinter, False)):
        printer, lines = printer_class(max_iter=2), []
        printer.logger = SimpleNamespace(info=lines.append)
        with EventStorage(0) as storage:
            storage.epoch = 0  # fastreid's trainer sets it
            storage.put_scalar("total_loss", 1.0)
            printer.write()
            if fails:
                with pytest.raises(ZeroDivisionError):
                    printer.write()
            else:
                printer.write()
        assert len(lines) == 1 and "epoch/iter: 0/0" in lines[0]


def test_to_tensor_gives_fastreids_tensor_without_touching_typed_storage():
    """fastreid's ToTensor on every PIL mode an image loader meets: the uint8 pixels in
    (channel, row, column) order as float32, as NumPy lays them out, and no warning."""
    import warnings

    import numpy as np
    from fastreid.data.transforms.transforms import ToTensor
    from PIL import Image

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 3, 3), dtype=np.uint8))
    for mode in ("RGB", "L", "RGBA", "P", "LA", "CMYK", "YCbCr"):
        image = rgb.convert(mode)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tensor = ToTensor()(image)
        pixels = np.asarray(image).reshape(5, 3, -1)  # L and P: one channel
        expected = torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32))
        assert tensor.dtype == torch.float32 and torch.equal(tensor, expected), mode
        assert [str(w.message) for w in caught] == [], mode


def test_a_tools_image_loading_prints_no_typed_storage_warning(synthetic_root, tmp_path):
    """tools/extract_features.py on the tiny LaSTVal, in a process of its own (torch warns
    once a process): fastreid's transforms load every image, and no TypedStorage
    deprecation warning comes out."""
    import os
    import subprocess
    import sys

    from conftest import BOT_CONFIG, FAST_CPU_OPTS, TOOLS, write_random_bot

    weights = write_random_bot(BOT_CONFIG, FAST_CPU_OPTS, tmp_path / "model.pth")
    # fmt: off
    out = subprocess.run(
        [
            sys.executable, os.path.join(TOOLS, "extract_features.py"),
            "--config-file", BOT_CONFIG, "--weights", weights, "--dataset", "LaSTVal",
            "--root", str(synthetic_root), "-o", str(tmp_path / "f.npz"),
        ] + FAST_CPU_OPTS,
        capture_output=True, text=True, timeout=900,
    )
    # fmt: on
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "f.npz").is_file()
    assert "TypedStorage" not in out.stdout + out.stderr


def test_the_supported_python_versions_are_stated_alike():
    """The Makefile's PYTHON_VERSIONS (which `make setup` enforces), setup.py's
    python_requires and the README name the same versions, and this interpreter is one."""
    import re
    import sys

    from conftest import REPO

    def read(name):
        with open(f"{REPO}/{name}") as f:
            return f.read()

    listed = re.search(r"^PYTHON_VERSIONS := (.+)$", read("Makefile"), re.M).group(1).split()
    minors = [int(v.split(".")[1]) for v in listed]
    assert all(v.startswith("3.") for v in listed)
    assert minors == list(range(minors[0], minors[-1] + 1))  # a range, as python_requires
    low, high = re.search(r'python_requires=">=3\.(\d+), <3\.(\d+)"', read("setup.py")).groups()
    assert (int(low), int(high) - 1) == (minors[0], minors[-1])
    assert f"Python {listed[0]} to {listed[-1]}" in read("README.md")
    assert "%d.%d" % sys.version_info[:2] in listed
