"""The tools' flags and error paths that no other test reaches, each once, in this process
(tools' main(argv)): visualize_ranks --metric / --max-rank / --thumb / --colors, export_onnx
--exporter / --opset / --tolerance and its parity failure, convert_reference_checkpoint
--trust / --no-verify, check_dataset --workers, --eval-only without MODEL.WEIGHTS, an empty
--images folder, features where no query has a match. An error names what is wrong and
writes nothing. Then TEST.AQE, TEST.RERANK and DATALOADER.SKIP_BAD_IMAGES through one real
tools/train_net.py run.
"""

import os
import re

import numpy as np
import pytest
import torch
from conftest import load_tool
from lastreid.errors import LastreidError
from PIL import Image

# Module fixtures of tests/test_tools.py: a random R18 BoT at 64x32 and its LaSTVal features.
from test_tools import CONFIG, val_features, weights  # noqa: F401

# A randomised model of the public LaST code and its checkpoint (tests/test_checkpoint.py).
from test_checkpoint import reference  # noqa: F401


def test_visualize_ranks_metric_max_rank_thumb_colors(val_features, tmp_path, capsys):  # noqa: F811
    from fastreid.evaluation.rank import evaluate_rank

    out = tmp_path / "vis"
    argv = ["--features", val_features, "-o", str(out), "--metric", "euclidean"]
    argv += ["--max-rank", "3", "--thumb", "24", "48", "--colors", "16", "--num-queries", "2"]
    argv += ["--per-page", "2", "--topk", "3", "--quiet"]
    assert load_tool("visualize_ranks").main(argv) == 0
    text = capsys.readouterr().out
    # The figures printed are fastreid's evaluator's on squared euclidean distances.
    data = np.load(val_features)
    nq = int(data["num_query"])
    q, g = data["features"][:nq].astype(np.float64), data["features"][nq:].astype(np.float64)
    dist = (q**2).sum(1)[:, None] + (g**2).sum(1)[None, :] - 2 * q @ g.T
    pids, camids = data["pids"], data["camids"]
    cmc, all_ap, _ = evaluate_rank(
        dist, pids[:nq], pids[nq:], camids[:nq], camids[nq:], max_rank=3, use_cython=False
    )
    found = re.search(r"Rank-1 (\d+\.\d)\s+Rank-5 (\S+)\s+mAP (\d+\.\d)", text)
    assert found, text
    assert float(found.group(1)) == pytest.approx(100 * cmc[0], abs=0.051)
    assert float(found.group(3)) == pytest.approx(100 * np.mean(all_ap), abs=0.051)
    page = Image.open(out / "ranks_000.png")
    assert page.mode == "P" and len(page.getcolors(256) or []) <= 16  # --colors 16
    assert page.size[1] < 2 * 48 + 200  # two rows of 48-pixel thumbnails and their labels
    assert (out / "cmc.png").is_file()


def test_visualize_ranks_without_a_matching_query_is_an_error(tmp_path):
    path = tmp_path / "nomatch.npz"
    np.savez(
        path,
        features=np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32),
        pids=np.array([1, 2, 3, 4, 5, 6]),
        camids=np.array([0, 0, 0, 1, 1, 1]),
        paths=np.array([f"{i}.jpg" for i in range(6)]),
        num_query=np.array(3),
        metric=np.array("cosine"),
    )
    out = tmp_path / "vis"
    with pytest.raises(LastreidError, match="no query has a matching gallery item"):
        load_tool("visualize_ranks").main(["--features", str(path), "-o", str(out), "--quiet"])
    assert not out.exists()


def test_export_onnx_exporter_opset_tolerance_and_a_parity_failure(  # noqa: F811
    weights, tmp_path, capsys
):
    import onnx

    path, opts = weights
    tool = load_tool("export_onnx")
    out = tmp_path / "model.onnx"
    base = ["--config-file", CONFIG, "--weights", path, "-o", str(out), "--batch-sizes", "2"]
    base += ["--exporter", "torchscript", "--opset", "14"]
    # A tolerance no float computation meets: one line, exit status 1, no .onnx left.
    assert tool.main(base + ["--tolerance", "1e-30"] + opts) == 1
    err = capsys.readouterr().err.strip().splitlines()
    # (the tool's name is sys.argv[0]'s, pytest's here)
    assert re.fullmatch(r"\S+: error: ONNX and PyTorch features differ \(max relative error "
                        r"\S+ > 1e-30\)", err[-1]), err
    assert not out.exists() and os.listdir(tmp_path) == []
    assert tool.main(base + ["--tolerance", "1e-3"] + opts) == 0
    text = capsys.readouterr().out
    assert "torchscript exporter, opset 14" in text and "within 0.001" in text
    model = onnx.load(str(out))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [14]


def test_check_dataset_workers(synthetic_root, capsys):
    tool = load_tool("check_dataset")
    argv = ["--dataset", "LaSTVal", "--root", str(synthetic_root), "--quiet"]
    assert tool.main(argv) == 0
    one = capsys.readouterr().out
    assert tool.main(argv + ["--workers", "2"]) == 0
    two = capsys.readouterr().out
    assert "no problems" in two and two == one  # the same report with 2 decoding workers


def test_eval_only_without_weights_and_an_empty_images_folder(weights, tmp_path):  # noqa: F811
    from fastreid.engine import default_argument_parser

    path, opts = weights
    output = tmp_path / "eval"
    args = default_argument_parser().parse_args(
        ["--config-file", CONFIG, "--eval-only"] + opts + ["OUTPUT_DIR", str(output)]
    )
    with pytest.raises(LastreidError, match=r"--eval-only needs MODEL.WEIGHTS"):
        load_tool("train_net").start(args)
    assert not output.exists()

    empty = tmp_path / "crops"
    empty.mkdir()
    out = tmp_path / "f.npz"
    argv = ["--config-file", CONFIG, "--weights", path, "--images", str(empty), "-o", str(out)]
    with pytest.raises(LastreidError, match=r"no image files in .*crops"):
        load_tool("extract_features").main(argv + opts)
    assert not out.exists()


def test_rerank_aqe_and_skip_bad_images_through_a_training_run(synthetic_root, tmp_path):
    """One tools/train_net.py run (one epoch on the tiny synthetic LaST, a copy of it with
    one training image corrupted) with TEST.AQE, TEST.RERANK and DATALOADER.SKIP_BAD_IMAGES
    on: it finishes, every evaluation went through AQE and re-ranking, the bad image was
    skipped with a warning naming it."""
    import json
    import shutil
    import subprocess
    import sys

    from test_environment_errors import OPTS, REPO, TRAIN_NET

    root = tmp_path / "datasets"
    shutil.copytree(synthetic_root / "last", root / "last")
    bad = sorted((root / "last" / "train").rglob("*.jpg"))[0]
    bad.write_bytes(b"not a JPEG")
    output = tmp_path / "run"
    opts = OPTS + ["SOLVER.MAX_EPOCH", "1", "DATALOADER.SKIP_BAD_IMAGES", "True"]
    opts += ["TEST.AQE.ENABLED", "True", "TEST.AQE.QE_K", "2"]
    opts += ["TEST.RERANK.ENABLED", "True", "TEST.RERANK.K1", "4", "TEST.RERANK.K2", "2"]
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG] + opts + ["OUTPUT_DIR", str(output)],
        cwd=REPO,
        env=dict(os.environ, FASTREID_DATASETS=str(root)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout
    evaluations = log.count("Start inference on")  # the last epoch's and the final test
    assert evaluations == 2, log[-3000:]
    assert log.count("Test with AQE setting") == evaluations
    assert log.count("Test with rerank setting") == evaluations
    skipped = [line for line in log.splitlines() if "skipped an unreadable training image" in line]
    assert skipped and f"cannot decode {bad}" in skipped[0], skipped
    with open(output / "results.json") as f:
        results = json.load(f)
    for part in (results["evaluation"], results["final_test"]):
        for metrics in part["datasets"].values():
            assert 0 < metrics["mAP"] <= 100 and metrics["mINP"] <= metrics["mAP"], metrics


def test_convert_reference_checkpoint_trust_and_no_verify(  # noqa: F811
    reference, tmp_path, capsys
):
    """A reference file that needs a full pickle (an argparse.Namespace beside the weights,
    as training scripts often store): refused without --trust, converted with it; with
    --no-verify nothing is loaded into a model."""
    import argparse

    from lastreid.checkpoint import UntrustedCheckpointError, convert_reference_state_dict

    ref_model, _ = reference
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": ref_model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    tool = load_tool("convert_reference_checkpoint")
    out = tmp_path / "converted.pth"
    with pytest.raises(UntrustedCheckpointError, match=r"needs arbitrary pickles \(argparse"):
        tool.main([str(path), str(out), "--no-verify"])
    assert not out.exists()
    assert tool.main([str(path), str(out), "--trust", "--no-verify"]) == 0
    printed = capsys.readouterr().out
    assert "Loaded " not in printed  # --no-verify: no fastreid BoT built
    data = torch.load(out, map_location="cpu", weights_only=True)  # the result needs no trust
    expected = convert_reference_state_dict(ref_model.state_dict())
    assert data["model"].keys() == expected.keys()
    assert all(torch.equal(data["model"][k], v) for k, v in expected.items())
