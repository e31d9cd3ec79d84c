"""CAL (lastreid.modeling.cal): its two clothes losses against a direct computation, the
clothes classifier moved only by its own optimizer (and loss_cal computed with the weights
that step gave), the clothes classes of the training data path against the synthetic
trees' own counts, and one shared set of tiny runs (ResNet-18 at 64x32, float32, the
clothes terms from epoch 1 of 3; tests/forked_runs.py): all four terms in metrics.json and
moving, a killed run resumed bit for bit, --eval-only reproducing the final test, the
feature tools on its checkpoint, and a dataset without clothes labels refused in one line;
and a torchrun job over two CPU processes (DDP with the clothes classifier's own step)."""

import json
import math
import os
import subprocess
import sys

from lastreid.engine import Trainer
from lastreid.features import build_inference_cfg, load_features
from lastreid.loaders import build_train_set
from lastreid.modeling.cal import clothes_adversarial_loss, clothes_loss
from lastreid.startup import build_cfg
from lastreid.train_steps import ClothesClassifierStep

import numpy as np
import pytest
import torch
from conftest import FAST_CPU_OPTS, load_tool
from fastreid.utils.events import EventStorage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "cal_R50.yml")
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
# The tiny synthetic LaST: 6 identities x 4 images, batches of 2 x 4: 3 steps an epoch.
EPOCHS, STEPS_PER_EPOCH = 3, 3
# fmt: off
OPTS = FAST_CPU_OPTS + [
    "MODEL.CPU_BF16", "off", "MODEL.CHANNELS_LAST", "off",
    "SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_EPOCH", str(EPOCHS),
    "MODEL.CAL.START_EPOCH_CC", "1", "MODEL.CAL.START_EPOCH_ADV", "1",
]
# fmt: on


# The losses, directly ---------------------------------------------------------------------


def direct_cosines(features, weight):
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    return f @ w.T


def direct_clothes_loss(cos, clothes, scale):
    total = 0.0
    for i, row in enumerate(scale * cos):
        total += -(row[clothes[i]] - math.log(sum(math.exp(v) for v in row)))
    return total / len(cos)


def direct_cal_loss(cos, clothes, pids, clothes_pid, scale, eps):
    """The paper's formula, one sample and one class at a time."""
    total = 0.0
    for i, row in enumerate(scale * cos):
        own = [c for c in range(len(row)) if clothes_pid[c] == pids[i]]
        others = sum(math.exp(row[c]) for c in range(len(row)) if clothes_pid[c] != pids[i])
        for c in own:
            target = eps / len(own) + (1 - eps) * (c == clothes[i])
            total += -target * (row[c] - math.log(math.exp(row[c]) + others))
    return total / len(cos)


def test_clothes_losses_equal_a_direct_computation():
    gen = torch.Generator().manual_seed(0)
    features, weight = torch.randn(6, 5, generator=gen), torch.randn(7, 5, generator=gen)
    clothes_pid = [0, 0, 1, 1, 1, 2, 3]  # identity of each clothes class
    pids = [0, 1, 1, 2, 3, 0]
    clothes = [1, 2, 4, 5, 6, 0]
    cos = direct_cosines(features.double().numpy(), weight.double().numpy())
    cosines = torch.tensor(cos)
    positive = (torch.tensor(pids)[:, None] == torch.tensor(clothes_pid)[None, :]).double()
    got = clothes_adversarial_loss(cosines, torch.tensor(clothes), positive, 16.0, 0.1)
    assert got.item() == pytest.approx(direct_cal_loss(cos, clothes, pids, clothes_pid, 16, 0.1))
    got = clothes_loss(cosines, torch.tensor(clothes), 16.0)
    assert got.item() == pytest.approx(direct_clothes_loss(cos, clothes, 16))


# One training forward of the model --------------------------------------------------------


def tiny_model(num_classes=3, num_clothes=5):
    cfg = build_cfg(
        CONFIG,
        FAST_CPU_OPTS
        + ["MODEL.HEADS.NUM_CLASSES", str(num_classes), "MODEL.CAL.NUM_CLOTHES", str(num_clothes)],
    )
    torch.manual_seed(0)
    return cfg, Trainer.build_model(cfg)


def test_the_clothes_classifier_moves_only_by_its_own_optimizer():
    """Its weights are in no parameter group of the identity optimizer, its optimizer steps
    before loss_cal is computed and loss_cal is that of the stepped weights (the
    reference's order), and loss_cal sends them no gradient."""
    cfg, model = tiny_model()
    model.train()
    weight = model.clothes_classifier.weight
    identity_optimizer, _ = Trainer.build_optimizer(cfg, model)
    grouped = {id(p) for g in identity_optimizer.param_groups for p in g["params"]}
    assert id(weight) not in grouped and len(grouped) == len(list(model.parameters())) - 1

    model.clothes_pids.copy_(torch.tensor([0, 0, 1, 2, 2]))
    batch = {
        "images": torch.rand(6, 3, 64, 32) * 255,
        "targets": torch.tensor([0, 0, 1, 1, 2, 2]),
        "clothes": torch.tensor([0, 1, 2, 2, 3, 4]),
    }
    seen = {}
    model.heads.register_forward_hook(lambda m, i, out: seen.update(features=out["features"]))
    step = ClothesClassifierStep(torch.optim.Adam([weight], lr=0.01, weight_decay=5e-4))
    before = weight.detach().clone()
    with EventStorage(), step.installed(model, epoch=cfg.MODEL.CAL.START_EPOCH_ADV):
        losses = model(batch)
    stepped = weight.detach().clone()
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_clothes", "loss_cal"}
    assert not torch.equal(stepped, before)

    features = seen["features"].detach().double().numpy()
    cos = direct_cosines(features, stepped.double().numpy())
    clothes, pids, clothes_pid = [0, 1, 2, 2, 3, 4], [0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 2]
    expected = direct_cal_loss(cos, clothes, pids, clothes_pid, 16, 0.1)
    assert losses["loss_cal"].item() == pytest.approx(expected, rel=1e-5)

    identity_optimizer.zero_grad()
    sum(losses.values()).backward()
    # The clothes step leaves zeros (for DDP); neither loss_cal nor the logged
    # loss_clothes adds to them.
    assert torch.equal(weight.grad, torch.zeros_like(weight))
    identity_optimizer.step()
    assert torch.equal(weight, stepped)


def test_before_its_start_epoch_no_clothes_term_and_no_clothes_step():
    cfg, model = tiny_model()
    model.train()
    before = model.clothes_classifier.weight.detach().clone()
    batch = {
        "images": torch.rand(4, 3, 64, 32) * 255,
        "targets": torch.tensor([0, 0, 1, 1]),
        "clothes": torch.tensor([0, 1, 2, 2]),
    }
    step = ClothesClassifierStep(torch.optim.Adam(model.clothes_classifier.parameters()))
    with EventStorage(), step.installed(model, epoch=0):
        losses = model(batch)
    assert losses["loss_clothes"].item() == 0 and losses["loss_cal"].item() == 0
    assert torch.equal(model.clothes_classifier.weight, before)


# The data path ----------------------------------------------------------------------------


def test_training_items_carry_their_clothes_class(synthetic_root, monkeypatch):
    """LaST + PRCC: one clothes class per (dataset, person, outfit), as many as the
    synthetic generator wrote, each belonging to one identity (pid2clothes), and the
    batch key `clothes` for each item."""
    from lastreid.datasets import synthetic

    monkeypatch.setenv("FASTREID_DATASETS", str(synthetic_root))
    cfg = build_cfg(CONFIG, FAST_CPU_OPTS + ["DATASETS.NAMES", '("LaST", "PRCC")'])
    train = build_train_set(cfg)
    counts = synthetic.read_counts(str(synthetic_root))
    outfits = counts["last"]["train"]["outfits"] + counts["prcc"]["train"]["outfits"]
    assert train.num_clothes == outfits
    pid2clothes = train.pid2clothes
    assert pid2clothes.shape == (train.num_classes, outfits)
    assert pid2clothes.sum(0).tolist() == [1.0] * outfits  # each class is one person's
    item = train[0]
    assert pid2clothes[item["targets"], item["clothes"]] == 1


# The shared runs --------------------------------------------------------------------------


def case(name, output, extra=(), moment=None, resume=False, config=CONFIG):
    argv = [TRAIN_NET, "--config-file", config] + (["--resume"] if resume else [])
    argv += OPTS + ["OUTPUT_DIR", str(output)] + list(extra)
    return {"name": name, "argv": argv, "moment": moment, "output": None}


@pytest.fixture(scope="module")
def runs(synthetic_root, module_tmp):
    root = module_tmp.mktemp("runs")
    full, resumed = root / "full", root / "resumed"
    kill_step = 2 * STEPS_PER_EPOCH + 2  # mid epoch 2: resumed from epoch 1's checkpoint
    cases = [
        case("full", full),
        case("killed", resumed, moment=f"step:{kill_step}"),
        case("resumed", resumed, resume=True),
        case("market", root / "market", ["DATASETS.NAMES", '("Market1501",)']),
    ]
    eval_only = [
        "--eval-only",
        "MODEL.WEIGHTS", str(full / "model_best.pth"),
        "DATASETS.TESTS", '("LaST",)',
        "OUTPUT_DIR", str(root / "eval"),
    ]  # fmt: skip
    argv = [TRAIN_NET, "--config-file", str(full / "config.yaml")] + eval_only
    cases.append({"name": "eval", "argv": argv, "moment": None, "output": None})
    (root / "cases.json").write_text(json.dumps(cases))
    results = root / "results.json"
    env = dict(os.environ, FASTREID_DATASETS=str(synthetic_root), PYTHONUNBUFFERED="1")
    runner = os.path.join(REPO, "tests", "forked_runs.py")
    subprocess.run(
        [sys.executable, runner, str(root / "cases.json"), str(results)],
        cwd=REPO, env=env, check=True, timeout=900,  # a guard against a hang only
    )  # fmt: skip
    out = json.loads(results.read_text())
    for name in ("full", "resumed", "eval"):
        assert out[name]["status"] == 0, (name, out[name]["stderr"][-3000:])
    assert out["killed"]["status"] == f"reached step:{kill_step}", out["killed"]["stderr"][-3000:]
    return dict(out, root=root, full=full, resumed=resumed)


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_all_four_terms_are_logged_and_move_from_their_epoch(runs):
    lines = [ln for ln in read_lines(runs["full"] / "metrics.json") if "loss_cls" in ln]
    assert len(lines) == EPOCHS  # one line per epoch (its last step)
    first, *later = lines
    terms = ("loss_cls", "loss_triplet", "loss_clothes", "loss_cal")
    assert all(set(terms) <= set(ln) for ln in lines)
    assert first["loss_clothes"] == 0 and first["loss_cal"] == 0  # epoch 0: before the start
    assert all(ln["loss_clothes"] > 0 and ln["loss_cal"] > 0 for ln in later)
    for term in terms:
        assert len({ln[term] for ln in later}) == len(later), term  # moving


TIMING_KEYS = {"time", "data_time", "eta_seconds"}


def test_killed_cal_run_resumes_bit_for_bit(runs):
    """Killed mid epoch 2 and resumed from epoch 1's checkpoint (the clothes classifier's
    optimizer already has state there): the same weights, clothes classifier included,
    and the same numbers in metrics.json as the uninterrupted run."""
    from lastreid.checkpoint import load_checkpoint_file

    ended = load_checkpoint_file(str(runs["resumed"] / "model_final.pth"))
    reference = load_checkpoint_file(str(runs["full"] / "model_final.pth"))
    assert "clothes_optimizer" in reference and reference["clothes_optimizer"]["state"]
    a, b = ended["model"], reference["model"]
    assert a.keys() == b.keys() and "clothes_classifier.weight" in a
    assert [k for k in a if not torch.equal(a[k], b[k])] == []

    def numbers(run):
        return [
            {k: v for k, v in ln.items() if k not in TIMING_KEYS}
            for ln in read_lines(run / "metrics.json")
        ]

    assert numbers(runs["resumed"]) == numbers(runs["full"])


def test_eval_only_reproduces_the_final_test(runs):
    with open(runs["full"] / "results.json") as f:
        final = json.load(f)["final_test"]["datasets"]["LaST"]
    with open(runs["root"] / "eval" / "results.json") as f:
        again = json.load(f)["evaluation"]["datasets"]["LaST"]
    assert again["Rank-1"] == final["Rank-1"] and again["mAP"] == final["mAP"]


def test_cal_on_a_dataset_without_clothes_labels_is_one_line(runs):
    result = runs["market"]
    err = result["stderr"]
    assert result["status"] == 1 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("train_net.py: error: DATASETS.NAMES: Market1501 has no clothes")
    assert not (runs["root"] / "market").exists()  # refused before anything was written


def direct_features(cfg, weights, paths):
    """The model's eval-mode output, image and mirror averaged, on the config's test
    transform (bilinear resizing here: INPUT.INTERPOLATION), batched by hand."""
    from fastreid.data.data_utils import read_image
    from lastreid.modeling import build_model, load_weights
    from lastreid.transforms import build_transforms

    model = build_model(cfg)
    load_weights(cfg, model, weights)
    model.eval()
    transform = build_transforms(cfg, is_train=False)
    images = torch.stack([transform(read_image(p)) for p in paths])
    with torch.no_grad():
        return ((model(images.clone()) + model(images.flip(dims=[3]))) / 2).numpy()


def test_feature_tools_on_the_cal_run(runs, synthetic_root, tmp_path, capsys):
    """extract_features writes CAL's test feature (max + avg pooled, 2 x 512 dims for R18,
    the BatchNorm's output) as the model gives it, visualize_ranks draws from it, and
    export_onnx passes its parity check."""
    config, weights = str(runs["full"] / "config.yaml"), str(runs["full"] / "model_final.pth")
    npz = str(tmp_path / "val.npz")
    args = ["--config-file", config, "--weights", weights]
    rc = load_tool("extract_features").main(
        args + ["--dataset", "LaSTVal", "--root", str(synthetic_root), "-o", npz]
    )
    assert rc == 0
    data = load_features(npz)
    assert data["features"].shape[1] == 2 * 512
    cfg = build_inference_cfg(config, weights, [])
    expected = direct_features(cfg, weights, list(data["paths"]))
    np.testing.assert_allclose(data["features"], expected, rtol=1e-4, atol=1e-5)

    vis = tmp_path / "vis"
    rc = load_tool("visualize_ranks").main(["--features", npz, "-o", str(vis), "--quiet"])
    assert rc == 0 and (vis / "ranks_000.png").is_file()

    capsys.readouterr()
    onnx = tmp_path / "model.onnx"
    rc = load_tool("export_onnx").main(args + ["-o", str(onnx), "--batch-sizes", "1,3"])
    assert rc == 0 and "onnxruntime matches PyTorch" in capsys.readouterr().out


def test_torchrun_trains_cal_on_two_cpu_processes(synthetic_root, tmp_path):
    """DDP (gloo) with the clothes classifier stepped inside the forward pass and unused
    before its start epoch: the job ends, its last training line has every term."""
    out = tmp_path / "run"
    # fmt: off
    opts = OPTS + [
        "SOLVER.MAX_EPOCH", "2", "DATALOADER.NUM_INSTANCE", "2", "TEST.IMS_PER_BATCH", "4",
        "TEST.EVAL_PERIOD", "2",  # evaluated (and finally tested) after the last epoch only
        "OUTPUT_DIR", str(out),
    ]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        TRAIN_NET, "--config-file", CONFIG,
    ] + opts
    # fmt: on
    env = dict(os.environ, FASTREID_DATASETS=str(synthetic_root), PYTHONUNBUFFERED="1")
    run = subprocess.run(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    lines = [ln for ln in read_lines(out / "metrics.json") if "loss_cal" in ln]
    assert lines[-1]["loss_cal"] > 0 and lines[-1]["loss_clothes"] > 0


def test_the_cpu_fast_path_folds_and_trains_cal():
    """bf16: evaluation runs a BatchNorm-folded bf16 copy whose features stay within
    bf16 rounding of float32 (CALHead's BatchNorm1d is not after a conv and stays); a
    training step under bf16 autocast gives every term, finite."""
    from fastreid.engine.train_loop import SimpleTrainer
    from lastreid import precision
    from lastreid.train_steps import CpuTrainer

    cfg, model = tiny_model()
    model.eval()
    on = cfg.clone()
    on.defrost()
    on.MODEL.CPU_BF16, on.MODEL.CHANNELS_LAST = "on", "on"
    fast = precision.resolve(on, log=False, training=True)
    images = torch.rand(4, 3, 64, 32) * 255
    with torch.no_grad():
        exact = model(images.clone())
        folded = precision.for_inference(model, fast)
        quick = folded(images.clone())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert quick.dtype == torch.float32 and quick.shape == exact.shape == (4, 1024)
    assert torch.nn.functional.cosine_similarity(quick, exact).min() > 0.99

    model.train()
    model.clothes_pids.copy_(torch.tensor([0, 0, 1, 2, 2]))
    batch = {
        "images": images,
        "targets": torch.tensor([0, 0, 1, 1]),
        "clothes": torch.tensor([0, 1, 2, 2]),
    }
    optimizer, params = Trainer.build_optimizer(cfg, model)
    trainer = CpuTrainer.from_trainer(SimpleTrainer(model, [batch], optimizer, params), fast)
    clothes_optimizer = torch.optim.Adam(model.clothes_classifier.parameters())
    trainer.clothes_step = ClothesClassifierStep(clothes_optimizer)
    trainer.iter, trainer.epoch = 0, cfg.MODEL.CAL.START_EPOCH_ADV
    with EventStorage() as storage:
        trainer.run_step()
    terms = {k: v.median(1) for k, v in storage.histories().items() if k.startswith("loss_")}
    assert set(terms) == {"loss_cls", "loss_triplet", "loss_clothes", "loss_cal"}
    assert all(math.isfinite(v) and v > 0 for v in terms.values())
