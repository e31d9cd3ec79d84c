"""The plugin contract: a head is a registered module plus a config, nothing else. A toy head
and its config are written to a temporary folder outside the package; the config names the
module in MODEL.IMPORTS, and with no project file edited the head trains, is evaluated
(--eval-only, --resume), gives its features at the dimension of its own key (not the
backbone's), exports to ONNX, and its own key's range rule stops a bad value in one line.

Every tool runs in its own process, as a user runs it: the toy module is never imported into
the test process, whose registries and `config_checks.RULES` stay the project's."""

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


def run_tool(name, args, root, cwd=REPO, python_path=None):
    env = dict(os.environ, FASTREID_DATASETS=str(root), PYTHONUNBUFFERED="1")
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join([str(python_path), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, os.path.join(TOOLS, name + ".py")] + [str(a) for a in args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def toy_run(toy, module_tmp, synthetic_root):
    """One epoch of the toy head on the tiny synthetic LaST (R18, 64x32)."""
    out = module_tmp.mktemp("toy_run")
    args = ["--config-file", toy / "toy.yml"] + OPTS + ["SOLVER.MAX_EPOCH", "1", "OUTPUT_DIR", out]
    run = run_tool("train_net", args, synthetic_root)
    assert run.returncode == 0, run.stdout[-3000:]
    return out


def final_test(run_dir):
    with open(run_dir / "results.json") as f:
        return json.load(f)["final_test"]["datasets"]["LaST"]


def test_the_toy_head_trains_and_its_run_config_names_the_module(toy, toy_run):
    with open(toy_run / "config.yaml") as f:
        text = f.read()
    assert str(toy / "toy_head.py") in text and "ToyHead" in text
    state = torch.load(toy_run / "model_best.pth", weights_only=True)["model"]
    assert tuple(state["heads.embedding.weight"].shape) == (TOY_DIM, 512)
    assert set(final_test(toy_run)) >= {"Rank-1", "mAP"}


def test_eval_only_and_resume_from_the_run_config(toy_run, synthetic_root, tmp_path):
    """Started from the run's config.yaml in another folder (nothing on the Python path):
    --eval-only of the kept checkpoint on LaST test gives the run's own final test, and
    --resume of the finished run ends without training again."""
    args = ["--config-file", toy_run / "config.yaml", "--eval-only"] + OPTS + [
        "MODEL.WEIGHTS", toy_run / "model_best.pth", "DATASETS.TESTS", '("LaST",)',
        "OUTPUT_DIR", tmp_path / "eval",
    ]  # fmt: skip
    run = run_tool("train_net", args, synthetic_root, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    with open(tmp_path / "eval" / "results.json") as f:
        again = json.load(f)["evaluation"]["datasets"]["LaST"]
    for key in ("Rank-1", "mAP"):
        assert again[key] == pytest.approx(final_test(toy_run)[key], abs=1e-6)

    before = (toy_run / "model_final.pth").stat().st_mtime_ns
    resume = ["--config-file", toy_run / "config.yaml", "--resume"] + OPTS
    run = run_tool("train_net", resume + ["OUTPUT_DIR", toy_run], synthetic_root, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (toy_run / "model_final.pth").stat().st_mtime_ns == before


def test_feature_tools_take_the_dimension_from_the_model(toy_run, synthetic_root, tmp_path):
    weights = toy_run / "model_best.pth"
    common = ["--config-file", toy_run / "config.yaml", "--weights", weights]
    npz = tmp_path / "val.npz"
    args = common + ["--dataset", "LaSTVal", "--output", npz] + OPTS
    run = run_tool("extract_features", args, synthetic_root)
    assert run.returncode == 0, run.stdout[-3000:]
    data = load_features(str(npz))
    dataset = build_dataset("LaSTVal", root=str(synthetic_root))
    assert data["features"].shape == (len(dataset.query) + len(dataset.gallery), TOY_DIM)

    args = common + ["--output", tmp_path / "toy.onnx", "--batch-sizes", "1,2"] + OPTS
    run = run_tool("export_onnx", args, synthetic_root)
    assert run.returncode == 0 and "onnxruntime matches PyTorch" in run.stdout, run.stdout[-3000:]

    vis = tmp_path / "vis"
    args = common + ["--dataset", "LaSTVal", "--output", vis, "--topk", "3", "--quiet"] + OPTS
    run = run_tool("visualize_ranks", args, synthetic_root)
    assert run.returncode == 0 and (vis / "ranks_000.png").is_file(), run.stdout[-3000:]


def test_the_heads_own_key_is_checked_in_one_line(toy, synthetic_root, tmp_path):
    """The module named on the command line this time, by its name on the Python path."""
    args = ["--config-file", toy / "toy.yml"] + OPTS + ["MODEL.IMPORTS", "['toy_head']"]
    args += ["MODEL.TOY_HEAD.DIM", "0", "OUTPUT_DIR", tmp_path / "run"]
    run = run_tool("train_net", args, synthetic_root, python_path=toy)
    assert run.returncode == 1
    assert run.stdout.strip().splitlines()[-1] == (
        "train_net.py: error: MODEL.TOY_HEAD.DIM is 0: expected an integer >= 1"
    )
    assert not (tmp_path / "run").exists()


def test_a_module_that_does_not_import_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"^MODEL.IMPORTS: cannot import 'no_such_toy_module'"):
        build_cfg("", ["MODEL.IMPORTS", "['no_such_toy_module']", "MODEL.DEVICE", "cpu"])


def test_the_toy_config_is_a_benchmark_method(toy, synthetic_root, tmp_path):
    out = tmp_path / "bench"
    args = ["--methods", toy / "toy.yml", "--output", out, "--no-print-table"] + OPTS
    run = run_tool("benchmark", args + ["SOLVER.MAX_EPOCH", "1"], synthetic_root)
    assert run.returncode == 0, run.stdout[-3000:]
    with open(out / "benchmark_table.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert "toy" in row["method"] and int(row["feature_dim"]) == TOY_DIM


def test_the_toy_run_is_a_transfer_row(toy_run, synthetic_root, tmp_path):
    out = tmp_path / "table"
    args = ["--source", f"toy={toy_run / 'model_best.pth'}", "--datasets", "PRCC"]
    args += ["--output", out, "--no-print-table"] + OPTS
    args += ["SOLVER.MAX_EPOCH", "1", "SOLVER.DELAY_EPOCHS", "0"]
    run = run_tool("transfer_matrix", args, synthetic_root)
    assert run.returncode == 0, run.stdout[-3000:]
    for setting in ("direct", "finetune"):
        config = (out / "runs" / "toy" / f"PRCC-{setting}" / "config.yaml").read_text()
        assert "ToyHead" in config


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
