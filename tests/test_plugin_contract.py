"""The plugin contract: a head is a registered module plus a config, nothing else. A toy head
and its config are written to a temporary folder outside the package; the config names the
module in MODEL.IMPORTS, and with no project file edited the head trains, is evaluated
(--eval-only, --resume), gives its features at the dimension of its own key (not the
backbone's), exports to ONNX, and its own key's range rule stops a bad value in one line.

Every tool runs in a process of its own, which imports the toy itself as a user's would: each
is forked from one harness that imported torch, fastreid and lastreid once but never the toy
(tests/forked_runs.py), and the toy module is never imported into the test process either,
whose registries and `config_checks.RULES` stay the project's."""

import csv
import json
import os
import subprocess
import sys
import textwrap

from lastreid.datasets import build_dataset
from lastreid.errors import ConfigError
from lastreid.features import load_features
from lastreid.startup import build_cfg

import pytest
import torch
from conftest import FAST_CPU_OPTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
TOY_DIM = 24  # the toy's MODEL.TOY_HEAD.DIM: not the backbone's 512
# 3 steps of 8 of the tiny LaST's 24 training images, in float32.
OPTS = FAST_CPU_OPTS + ["SOLVER.IMS_PER_BATCH", "8"]
OPTS += ["MODEL.CPU_BF16", "off", "MODEL.CHANNELS_LAST", "off"]

TOY_HEAD = '''
    """A toy re-id head registered outside lastreid: pooled backbone map -> linear
    embedding of MODEL.TOY_HEAD.DIM -> one identity classifier."""

    from fastreid.config import CfgNode
    from fastreid.modeling.heads import REID_HEADS_REGISTRY
    from lastreid.config import register_keys
    from lastreid.config_checks import Rule, integer, register_rules
    from torch import nn


    @register_keys
    def add_toy_config(cfg):
        cfg.MODEL.TOY_HEAD = CfgNode()
        cfg.MODEL.TOY_HEAD.DIM = 16


    register_rules(Rule("MODEL.TOY_HEAD.DIM", integer(1)))


    @REID_HEADS_REGISTRY.register()
    class ToyHead(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            dim = cfg.MODEL.TOY_HEAD.DIM
            self.embedding = nn.Linear(cfg.MODEL.BACKBONE.FEAT_DIM, dim)
            self.classifier = nn.Linear(dim, cfg.MODEL.HEADS.NUM_CLASSES)

        def forward(self, features, targets=None):
            feature = self.embedding(features.mean(dim=(2, 3)))
            if not self.training:
                return feature
            logits = self.classifier(feature)
            return {"cls_outputs": logits, "pred_class_logits": logits, "features": feature}
'''


@pytest.fixture(scope="module")
def toy(module_tmp):
    """The toy head's module and a config using it, in a folder outside the package."""
    folder = module_tmp.mktemp("toy_plugin")
    (folder / "toy_head.py").write_text(textwrap.dedent(TOY_HEAD))
    base = os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml")
    (folder / "toy.yml").write_text(
        textwrap.dedent(
            f"""\
            _BASE_: {base}
            MODEL:
              IMPORTS: ["{folder / 'toy_head.py'}"]
              HEADS:
                NAME: ToyHead
              TOY_HEAD:
                DIM: {TOY_DIM}
            """
        )
    )
    return folder


def tool(name):
    return os.path.join(TOOLS, name + ".py")


@pytest.fixture(scope="module")
def runs(toy, module_tmp, synthetic_root):
    """Every tool on the toy, each in a process of its own forked from one that imported
    torch, fastreid and lastreid but never the toy (tests/forked_runs.py), in order: one
    epoch of the toy head (R18, 64x32) where the benchmark finds it, then the tools on it
    (the benchmark first: a --resume from the run's config.yaml writes that of another recipe).
    The processes start in a folder of their own, the toy folder not on the Python path
    (but for "bad_key", which names the module by that path)."""
    root = module_tmp.mktemp("toy_runs")
    bench, elsewhere = root / "bench", root / "elsewhere"
    toy_run = bench / "runs" / "toy"  # the run `benchmark --methods toy.yml` would make
    elsewhere.mkdir()
    weights = toy_run / "model_best.pth"
    run_config = ["--config-file", toy_run / "config.yaml"]
    common = run_config + ["--weights", weights]
    epoch = ["SOLVER.MAX_EPOCH", "1"]
    # fmt: off
    cases = {
        "train": [tool("train_net"), "--config-file", toy / "toy.yml"] + OPTS + epoch
        + ["OUTPUT_DIR", toy_run],
        "benchmark": [tool("benchmark"), "--methods", toy / "toy.yml", "--output", bench,
                      "--no-print-table"] + OPTS + epoch,
        "eval": [tool("train_net")] + run_config + ["--eval-only"] + OPTS + [
            "MODEL.WEIGHTS", weights, "DATASETS.TESTS", '("LaST",)', "OUTPUT_DIR", root / "eval",
        ],
        "resume": [tool("train_net")] + run_config + ["--resume"] + OPTS + ["OUTPUT_DIR", toy_run],
        "extract": [tool("extract_features")] + common + [
            "--dataset", "LaSTVal", "--output", root / "val.npz"] + OPTS,
        "onnx": [tool("export_onnx")] + common + [
            "--output", root / "toy.onnx", "--batch-sizes", "1,2"] + OPTS,
        "ranks": [tool("visualize_ranks")] + common + [
            "--dataset", "LaSTVal", "--output", root / "vis", "--topk", "3", "--quiet"] + OPTS,
        "bad_key": [tool("train_net"), "--config-file", toy / "toy.yml"] + OPTS + [
            "MODEL.IMPORTS", "['toy_head']", "MODEL.TOY_HEAD.DIM", "0",
            "OUTPUT_DIR", root / "bad_key"],
        "transfer": [tool("transfer_matrix"), "--source", f"toy={weights}", "--datasets", "PRCC",
                     "--output", root / "table", "--no-print-table"] + OPTS + epoch
        + ["SOLVER.DELAY_EPOCHS", "0"],
    }
    # fmt: on
    listed = []
    for name, argv in cases.items():
        case = {"name": name, "argv": [str(a) for a in argv], "moment": None, "output": None}
        if name == "bad_key":
            case["env"] = {"PYTHONPATH": str(toy)}
        listed.append(case)
    (root / "cases.json").write_text(json.dumps(listed))
    env = dict(os.environ, FASTREID_DATASETS=str(synthetic_root), PYTHONUNBUFFERED="1")
    runner = os.path.join(REPO, "tests", "forked_runs.py")
    subprocess.run(
        [sys.executable, runner, str(root / "cases.json"), str(root / "results.json")],
        cwd=elsewhere, env=env, check=True, timeout=900,  # a guard against a hang only
    )  # fmt: skip
    out = json.loads((root / "results.json").read_text())
    assert out["train"]["status"] == 0, out["train"]["stderr"][-3000:]
    return dict(out, root=root, toy_run=toy_run)


def ended_well(result):
    assert result["status"] == 0, (result["stdout"] + result["stderr"])[-3000:]


def final_test(run_dir):
    with open(run_dir / "results.json") as f:
        return json.load(f)["final_test"]["datasets"]["LaST"]


def test_the_toy_head_trains_and_its_run_config_names_the_module(toy, runs):
    toy_run = runs["toy_run"]
    with open(toy_run / "config.yaml") as f:
        text = f.read()
    assert str(toy / "toy_head.py") in text and "ToyHead" in text
    state = torch.load(toy_run / "model_best.pth", weights_only=True)["model"]
    assert tuple(state["heads.embedding.weight"].shape) == (TOY_DIM, 512)
    assert set(final_test(toy_run)) >= {"Rank-1", "mAP"}


def test_eval_only_and_resume_from_the_run_config(runs):
    """Started from the run's config.yaml in another folder (nothing on the Python path):
    --eval-only of the kept checkpoint on LaST test gives the run's own final test, and
    --resume of the finished run (after it) ends without training again."""
    ended_well(runs["eval"])
    with open(runs["root"] / "eval" / "results.json") as f:
        again = json.load(f)["evaluation"]["datasets"]["LaST"]
    for key in ("Rank-1", "mAP"):
        assert again[key] == pytest.approx(final_test(runs["toy_run"])[key], abs=1e-6)

    ended_well(runs["resume"])
    # A checkpoint written by the resume would be newer than the --eval-only run before it.
    evaluated = (runs["root"] / "eval" / "results.json").stat().st_mtime_ns
    assert (runs["toy_run"] / "model_final.pth").stat().st_mtime_ns < evaluated


def test_feature_tools_take_the_dimension_from_the_model(runs, synthetic_root):
    ended_well(runs["extract"])
    data = load_features(str(runs["root"] / "val.npz"))
    dataset = build_dataset("LaSTVal", root=str(synthetic_root))
    assert data["features"].shape == (len(dataset.query) + len(dataset.gallery), TOY_DIM)

    ended_well(runs["onnx"])
    assert "onnxruntime matches PyTorch" in runs["onnx"]["stdout"], runs["onnx"]["stdout"][-3000:]

    ended_well(runs["ranks"])
    assert (runs["root"] / "vis" / "ranks_000.png").is_file()


def test_the_heads_own_key_is_checked_in_one_line(runs):
    """The module named on the command line this time, by its name on the Python path."""
    result = runs["bad_key"]
    assert result["status"] == 1, result["stderr"][-3000:]
    assert result["stderr"].strip().splitlines()[-1] == (
        "train_net.py: error: MODEL.TOY_HEAD.DIM is 0: expected an integer >= 1"
    )
    assert not (runs["root"] / "bad_key").exists()


def test_a_module_that_does_not_import_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"^MODEL.IMPORTS: cannot import 'no_such_toy_module'"):
        build_cfg("", ["MODEL.IMPORTS", "['no_such_toy_module']", "MODEL.DEVICE", "cpu"])


def test_the_toy_config_is_a_benchmark_method(runs):
    """The toy's run is where the benchmark keeps its run of toy.yml, of the same recipe:
    it is taken as done, and the benchmark's own --eval-only of it gives its numbers."""
    ended_well(runs["benchmark"])
    assert "toy: done before, skipped" in runs["benchmark"]["stdout"], runs["benchmark"]["stdout"]
    with open(runs["root"] / "bench" / "benchmark_table.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert "toy" in row["method"] and int(row["feature_dim"]) == TOY_DIM
    assert row["eval_only_reproduced"] == "True"


def test_the_toy_run_is_a_transfer_row(runs):
    ended_well(runs["transfer"])
    for setting in ("direct", "finetune"):
        config = (runs["root"] / "table" / "runs" / "toy" / f"PRCC-{setting}" / "config.yaml")
        assert "ToyHead" in config.read_text()


def test_a_file_is_imported_once_and_named_by_its_absolute_path(tmp_path, monkeypatch):
    """A relative `.py` entry is made absolute in the config (the run's config.yaml finds
    it from any folder), and building configs again does not run the module again (its
    registrations would be refused). The module here registers nothing: this process's
    registries stay the project's."""
    (tmp_path / "marker.py").write_text(
        "with open(__file__ + '.runs', 'a') as f:\n    f.write('run\\n')\n"
    )
    monkeypatch.chdir(tmp_path)
    opts = ["MODEL.IMPORTS", "['marker.py']", "MODEL.DEVICE", "cpu"]
    for _ in range(2):
        cfg = build_cfg("", opts)
    assert list(cfg.MODEL.IMPORTS) == [str(tmp_path / "marker.py")]
    assert (tmp_path / "marker.py.runs").read_text() == "run\n"


def test_a_module_that_fails_is_one_line_with_its_error(tmp_path):
    broken = tmp_path / "broken_head.py"
    broken.write_text("raise RuntimeError('the head needs a GPU')\n")
    opts = ["MODEL.IMPORTS", f"['{broken}']", "MODEL.DEVICE", "cpu"]
    with pytest.raises(ConfigError) as error:
        build_cfg("", opts)
    assert str(error.value) == (
        f"MODEL.IMPORTS: cannot import '{broken}': RuntimeError: the head needs a GPU"
    )
