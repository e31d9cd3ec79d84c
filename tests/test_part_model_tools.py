"""Every feature tool with the paper's MGN, PCB and HPM (random ResNet-18 weights at 64x32,
float32): tools/extract_features.py writes the model's own test feature at its real
dimension, tools/visualize_ranks.py draws from it, tools/export_onnx.py passes its parity
check; and a torchrun job trains PaperMGN over two CPU processes."""

import json
import os
import subprocess
import sys

from lastreid.datasets import build_dataset
from lastreid.engine import evaluate_weights
from lastreid.features import build_inference_cfg, load_features
from lastreid.modeling import build_model, feature_dim, load_weights

import numpy as np
import pytest
import torch
from conftest import load_tool
from fastreid.data.data_utils import read_image
from fastreid.data.transforms import build_transforms
from test_tools import assert_drawn, assert_rank_grid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST = os.path.join(REPO, "configs", "LaST")


def small_opts():
    from conftest import FAST_CPU_OPTS, FP32_OPTS

    return FAST_CPU_OPTS + FP32_OPTS


def direct_features(cfg, weights, paths):
    """The model's eval-mode output on the test transforms (flip-averaged when the config
    says so), batched by hand."""
    model = build_model(cfg)
    load_weights(cfg, model, weights)
    model.eval()
    transform = build_transforms(cfg, is_train=False)
    images = torch.stack([transform(read_image(p)) for p in paths])
    with torch.no_grad():
        feats = model(images.clone())
        if cfg.TEST.FLIP.ENABLED:
            feats = (feats + model(images.flip(dims=[3]))) / 2
    return feats.numpy()


@pytest.mark.parametrize("name", ["mgn_R50", "pcb_R50", "hpm_R50"])
def test_feature_tools_work_with_the_model(name, synthetic_root, tmp_path, capsys):
    from conftest import write_random_bot

    config, opts = os.path.join(LAST, name + ".yml"), small_opts()
    weights = write_random_bot(config, opts, tmp_path / "model.pth")
    npz = str(tmp_path / "val.npz")
    # fmt: off
    args = ["--config-file", config, "--weights", weights]
    assert load_tool("extract_features").main(
        args + ["--dataset", "LaSTVal", "--root", str(synthetic_root), "-o", npz] + opts
    ) == 0
    # fmt: on
    data = load_features(npz)
    cfg = build_inference_cfg(config, weights, opts)
    dataset = build_dataset("LaSTVal", root=str(synthetic_root))
    assert data["features"].shape == (len(dataset.query) + len(dataset.gallery), feature_dim(cfg))
    expected = direct_features(cfg, weights, list(data["paths"]))
    np.testing.assert_allclose(data["features"], expected, rtol=1e-4, atol=1e-5)

    vis = tmp_path / "vis"
    ranks = load_tool("visualize_ranks")
    rc = ranks.main(["--features", npz, "-o", str(vis), "--topk", "4", "--quiet"])
    assert rc == 0
    assert_drawn(vis / "cmc.png", (600, 450))
    assert_rank_grid(vis / "ranks_000.png", 4, 3)  # the tiny LaSTVal's 3 queries

    onnx = tmp_path / "model.onnx"
    capsys.readouterr()
    rc = load_tool("export_onnx").main(args + ["-o", str(onnx), "--batch-sizes", "1,3"] + opts)
    assert rc == 0 and "onnxruntime matches PyTorch" in capsys.readouterr().out


def test_torchrun_trains_paper_mgn_on_two_cpu_processes(synthetic_root, tmp_path, monkeypatch):
    """DDP over the deep-copied branches (gloo): the job ends with its LaST test, written
    once, and --eval-only of its best checkpoint in one process gives the same numbers."""
    config, out = os.path.join(LAST, "mgn_R50.yml"), tmp_path / "run"
    # fmt: off
    opts = small_opts() + [
        "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2", "SOLVER.MAX_EPOCH", "1",
        "TEST.IMS_PER_BATCH", "4", "OUTPUT_DIR", str(out),
    ]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        os.path.join(REPO, "tools", "train_net.py"), "--config-file", config,
    ] + opts
    # fmt: on
    env = dict(os.environ, FASTREID_DATASETS=str(synthetic_root), PYTHONUNBUFFERED="1")
    run = subprocess.run(
        cmd,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert (out / "model_best.pth").is_file() and not (out / "log.txt.rank1").stat().st_size == 0
    with open(out / "metrics.json") as f:
        losses = [json.loads(line) for line in f if "loss_cls_p1" in line]
    assert len(losses) == 1 and "loss_triplet_p3" in losses[0]  # 3 steps, one line

    monkeypatch.setenv("FASTREID_DATASETS", str(synthetic_root))
    # fmt: off
    one = evaluate_weights(build_inference_cfg(config, out / "model_best.pth", small_opts() + [
        "DATASETS.TESTS", '("LaST",)', "TEST.IMS_PER_BATCH", "4",
    ]))
    # fmt: on
    final = [line for line in run.stdout.splitlines() if line.startswith("| LaST ")]
    assert final, run.stdout[-2000:]
    cells = [c.strip() for c in final[-1].strip("|").split("|")]
    assert float(cells[1]) == pytest.approx(one["Rank-1"], abs=0.006)  # printed to 2 places
    assert float(cells[4]) == pytest.approx(one["mAP"], abs=0.006)
