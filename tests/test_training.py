"""A short BoT run on synthetic LaST, on the CPU (the session's shared run, conftest's
bot_default_run): it learns, writes checkpoints (keeping the newest periodic one) and
metrics, its best checkpoint evaluates to the same numbers with --eval-only, and --resume
continues it."""

import json
import os
from types import SimpleNamespace

from lastreid.engine import Trainer, default_setup, evaluate_weights
from lastreid.resume import checkpoint_info
from lastreid.run_results import read_run_results, run_config_sha256, write_run_results
from lastreid.startup import build_cfg

import pytest
import torch
from conftest import BOT_CONFIG, BOT_DEFAULT_OPTS, BOT_EPOCHS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = BOT_CONFIG
EPOCHS = BOT_EPOCHS


def make_cfg(opts, output_dir, epochs, **kw):
    return build_cfg(
        CONFIG, opts + ["SOLVER.MAX_EPOCH", str(epochs), "OUTPUT_DIR", str(output_dir)], **kw
    )


@pytest.fixture(scope="module")
def trained(bot_default_run, default_root, module_tmp):
    """The session's BoT run on the default synthetic LaST (conftest.bot_default_run, made
    by tools/train_net.py), its results.json, and a random-init BoT of the same options
    evaluated on LaST and LaSTVal (the baseline that training must beat)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTREID_DATASETS", str(default_root))
        cfg = make_cfg(BOT_DEFAULT_OPTS, module_tmp.mktemp("baseline"), EPOCHS)
        cfg.defrost()
        cfg.DATASETS.TESTS = ("LaST", "LaSTVal")
        torch.manual_seed(0)
        before = Trainer.test(cfg, Trainer.build_model(cfg))
    record = read_run_results(bot_default_run)
    after = record["final_test"]["datasets"]["LaST"]
    return SimpleNamespace(
        output=bot_default_run, cfg=cfg, before=before, after=after, record=record
    )


def read_metrics(output):
    with open(os.path.join(output, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_training_raises_map_clearly(trained):
    # Seeded float32 run: LaST test mAP 20.0 at random init (19.8 to 22.7 over init seeds
    # 0-2), 30.1 after the 15 steps: +10.1, twice the +5 asked. Rank-1 50.0 -> 61.7.
    before = trained.before["LaST"]
    assert trained.after["mAP"] > before["mAP"] + 5, (before, trained.after)
    assert trained.after["Rank-1"] >= before["Rank-1"]


def test_run_writes_checkpoints_and_metrics(trained):
    files = set(os.listdir(trained.output))
    assert {
        "model_final.pth",
        "model_best.pth",
        "last_checkpoint",
        "metrics.json",
        "config.yaml",
        "results.json",
    } <= files
    periodic = {f for f in files if f.startswith("model_0")}
    assert periodic == {f"model_{EPOCHS - 2:04d}.pth"}  # the newest only (KEEP_LAST 1)
    with open(os.path.join(trained.output, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    evaluated = [m for m in read_metrics(trained.output) if "metric" in m]
    assert len(evaluated) == EPOCHS  # LaSTVal after every epoch
    for m in evaluated:  # the metric that picks model_best.pth: (mAP + Rank-1) / 2
        assert m["metric"] == pytest.approx((m["mAP"] + m["Rank-1"]) / 2)
    # The last LaSTVal evaluation against the random init's: 24.1 -> 32.7 (+8.6) in the
    # seeded float32 run, twice the +4 asked.
    assert evaluated[-1]["mAP"] > trained.before["LaSTVal"]["mAP"] + 4


def test_results_hold_the_last_evaluation_and_the_test_of_the_kept_checkpoint(trained):
    evaluations = [m for m in read_metrics(trained.output) if "metric" in m]  # LaSTVal
    best = checkpoint_info(os.path.join(trained.output, "model_best.pth"))
    # model_best.pth is the epoch of the best LaSTVal metric (the later one on a tie).
    metrics = [m["metric"] for m in evaluations]
    assert best["epoch"] == max(i for i, m in enumerate(metrics) if m == max(metrics))
    final = trained.record["final_test"]
    assert final["checkpoint"] == "model_best.pth" and final["epoch"] == best["epoch"] + 1
    assert set(final["datasets"]) == {"LaST"} and final["seconds"] > 0
    last = trained.record["evaluation"]
    assert last["epoch"] == EPOCHS and set(last["datasets"]) == {"LaSTVal"}
    assert last["datasets"]["LaSTVal"]["mAP"] == pytest.approx(evaluations[-1]["mAP"])
    # metrics.json records the final test too, at the last iteration, apart from LaSTVal's.
    line = read_metrics(trained.output)[-1]
    assert line["iteration"] == evaluations[-1]["iteration"]
    assert line["final_test/epoch"] == final["epoch"]
    assert {k: line[f"final_test/LaST/{k}"] for k in trained.after} == trained.after
    # results.json (train_net.py wrote it) names the recipe of the run's config.yaml.
    assert trained.record["config_sha256"] == run_config_sha256(trained.output)


def test_run_results_round_trip(tmp_path):
    cfg = make_cfg(BOT_DEFAULT_OPTS, tmp_path, EPOCHS)
    evaluation = {"epoch": 1, "datasets": {"LaSTVal": {"mAP": 12.5, "Rank-1": 25.0}}}
    final = {"checkpoint": "model_best.pth", "epoch": 1, "datasets": {}, "seconds": 1.0}
    path = write_run_results(cfg, evaluation, final_test=final, iterations_per_epoch=5)
    saved = read_run_results(str(tmp_path))
    assert path == os.path.join(str(tmp_path), "results.json")
    assert saved["evaluation"] == evaluation and saved["final_test"] == final
    assert saved["iterations_per_epoch"] == 5


def test_eval_only_reproduces_the_final_numbers(trained, default_root, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", str(default_root))
    best = os.path.join(trained.output, "model_best.pth")
    cfg = build_cfg(
        CONFIG,
        ["MODEL.WEIGHTS", best, "DATASETS.TESTS", '("LaST",)'] + _model_opts(trained.cfg),
        eval_only=True,
    )
    results = evaluate_weights(cfg)
    for key in ("Rank-1", "Rank-5", "mAP", "mINP"):
        assert results[key] == pytest.approx(trained.after[key], abs=1e-6)


def test_resume_continues_from_the_last_checkpoint(trained, tmp_path, default_root, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", str(default_root))
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained.output, run)
    cfg = make_cfg(BOT_DEFAULT_OPTS, run, EPOCHS + 1)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_epoch == EPOCHS
    trainer.train()
    iters = [m["iteration"] for m in read_metrics(run) if "total_loss" in m]
    assert max(iters) == (EPOCHS + 1) * trainer.iters_per_epoch - 1
    from lastreid.checkpoint import load_checkpoint_file

    assert load_checkpoint_file(str(run / "model_final.pth"))["epoch"] == EPOCHS


def test_same_seed_trains_the_same_weights(synthetic_root, tmp_path, monkeypatch):
    """SEED fixes model init, sampler and augmentation, loader workers included."""
    from conftest import FAST_CPU_OPTS

    monkeypatch.setenv("FASTREID_DATASETS", str(synthetic_root))
    weights = {}
    for name, seed in (("a", 0), ("b", 0), ("other", 1)):
        # fmt: off
        opts = FAST_CPU_OPTS + [
            "SEED", str(seed), "DATALOADER.NUM_WORKERS", "1", "SOLVER.IMS_PER_BATCH", "16",
        ]
        # fmt: on
        cfg = make_cfg(opts, tmp_path / name, 1)
        default_setup(cfg, SimpleNamespace(eval_only=False, config_file=CONFIG))
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        weights[name] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["other"][k]) for k in weights["a"])


def _model_opts(cfg):
    """The architecture/input overrides of a run, for rebuilding its model."""
    # fmt: off
    return [
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.DEPTH", cfg.MODEL.BACKBONE.DEPTH,
        "MODEL.BACKBONE.FEAT_DIM", str(cfg.MODEL.BACKBONE.FEAT_DIM),
        "INPUT.SIZE_TEST", str(list(cfg.INPUT.SIZE_TEST)),
        "TEST.IMS_PER_BATCH", "64",
        "DATALOADER.NUM_WORKERS", "0",
    ]
    # fmt: on


def test_config_encodes_the_reference_recipe():
    cfg = build_cfg(CONFIG, ["MODEL.BACKBONE.PRETRAIN", "False"])
    assert tuple(cfg.INPUT.SIZE_TRAIN) == (256, 128)
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_INSTANCE) == (64, 4)
    assert cfg.SOLVER.OPT == "Adam" and cfg.SOLVER.BASE_LR == pytest.approx(3.5e-4)
    assert cfg.MODEL.LOSSES.CE.EPSILON == pytest.approx(0.1)
    assert cfg.MODEL.LOSSES.TRI.MARGIN == pytest.approx(0.3)
    assert cfg.MODEL.BACKBONE.LAST_STRIDE == 1 and cfg.MODEL.HEADS.WITH_BNNECK
    assert cfg.TEST.FLIP.ENABLED and cfg.DATASETS.TESTS == ("LaSTVal",)
    assert cfg.TEST.FINAL_TESTS == ("LaST",)
    # 10 warm-up epochs of 1,113 iterations; decays 40 and 80 epochs into the run.
    warmup_epochs = cfg.SOLVER.WARMUP_ITERS / (71248 // 64)
    assert warmup_epochs == pytest.approx(10)
    assert [s + warmup_epochs for s in cfg.SOLVER.STEPS] == [40, 80]


def test_missing_cuda_falls_back_to_cpu():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    cfg = build_cfg(CONFIG, ["MODEL.BACKBONE.PRETRAIN", "False"])
    assert cfg.MODEL.DEVICE == "cpu" and not cfg.SOLVER.AMP.ENABLED


@pytest.mark.parametrize(
    "opts, words",
    [
        (["MODEL.NO_SUCH_KEY", "1"], "MODEL.NO_SUCH_KEY"),
        (["DATASETS.NAMES", '("NoSuchSet",)', "MODEL.BACKBONE.PRETRAIN", "False"], "NoSuchSet"),
        (["MODEL.BACKBONE.PRETRAIN_PATH", "/nowhere/r50.pth"], "/nowhere/r50.pth"),
    ],
)
def test_bad_config_fails_before_any_work(opts, words):
    with pytest.raises((KeyError, ValueError, FileNotFoundError)) as err:
        build_cfg(CONFIG, opts)
    assert words in str(err.value)


def test_yaml_boolean_for_a_string_key_is_named_with_a_hint(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(f"_BASE_: {CONFIG}\nMODEL:\n  CPU_BF16: off\n")  # YAML reads off as False
    with pytest.raises(ValueError) as err:
        build_cfg(str(bad), ["MODEL.BACKBONE.PRETRAIN", "False"])
    assert str(bad) in str(err.value) and "MODEL.CPU_BF16" in str(err.value)
    assert "quote it" in str(err.value)


def test_train_net_reports_a_config_error_in_one_line(tmp_path):
    import subprocess
    import sys

    # fmt: off
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config-file",
            CONFIG,
            "MODEL.NO_SUCH_KEY", "1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    # fmt: on
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "train_net.py: error: command line: Non-existent key: MODEL.NO_SUCH_KEY"
    ]
    assert not (tmp_path / "logs").exists()  # nothing was started
