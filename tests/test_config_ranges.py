"""Out-of-range config values (lastreid.config_checks.RULES) are one line before anything is
written, proven by a sweep: every checked key's bad values through tools/train_net.py (exit
1, the last stderr line `train_net.py: error: <key> is <value>: expected ...`, no traceback,
no OUTPUT_DIR), the edge values that must run (they get to a training step, or finish), the
training sets too small for a batch (one line before any step, naming the keys and the
largest batch that works), the schedule points past the end of a run (one warning line, the
run goes on), the other tools that take KEY VALUE overrides. Each case is a
process of its own, forked from one that imported torch and fastreid once
(tests/forked_runs.py). Then the sets and boundaries the checks use, each against fastreid's
or torch's own behaviour, and docs/config_keys.md's list of checked keys against the table.
"""

import ast
import json
import os
import re
import subprocess
import sys

from lastreid import config_checks, fastreid_internals, launch
from lastreid.config_checks import RULES
from lastreid.errors import ConfigError
from lastreid.startup import build_cfg

import pytest
import torch
from conftest import FAST_CPU_OPTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50_synthetic.yml")
TOOLS = os.path.join(REPO, "tools")
TRAIN_NET = os.path.join(TOOLS, "train_net.py")
# The tiny synthetic LaST has 6 identities x 4 images: batches of 2 identities x 4, 3 steps
# an epoch, one epoch, no warm-up; float32 whatever the CPU (bf16 autocast turns the
# 2-cell InstanceNorm of the smallest IBN input into NaN).
BASE = FAST_CPU_OPTS + [
    "SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_ITERS", "0",
    "MODEL.CPU_BF16", "off", "MODEL.CHANNELS_LAST", "off",
]  # fmt: skip

# key -> (bad values, words the message has, other overrides the case needs)
# fmt: off
BAD = {
    "MODEL.DEVICE": (["gpu", "mps"], "a torch device"),
    "MODEL.META_ARCHITECTURE": (["Basline"], "META_ARCH_REGISTRY; registered: "),
    "MODEL.BACKBONE.NAME": (["build_resnet"], "BACKBONE_REGISTRY; registered: "),
    "MODEL.BACKBONE.DEPTH": (["152x", "R50"], "18x, 34x, 50x, 101x"),
    "MODEL.BACKBONE.LAST_STRIDE": (["0", "3"], "one of 1, 2"),
    "MODEL.BACKBONE.FEAT_DIM": (["2048", "0"], "18x: 512"),  # FAST_CPU_OPTS: 18x
    "MODEL.BACKBONE.NORM": (["bn"], "BN, syncBN, GhostBN, FrozenBN, GN"),
    "MODEL.HEADS.NAME": (["Head"], "REID_HEADS_REGISTRY; registered: "),
    "MODEL.HEADS.NORM": (["LN"], "BN, syncBN, GhostBN, FrozenBN, GN"),
    "MODEL.HEADS.POOL_LAYER": (["AvgPool"], "GlobalAvgPool"),
    "MODEL.HEADS.CLS_LAYER": (["Softmax"], "Linear, ArcSoftmax"),
    "MODEL.HEADS.NECK_FEAT": (["middle"], "before, after"),
    "MODEL.HEADS.SCALE": (["0", "-64"], "a number > 0"),
    "MODEL.HEADS.MARGIN": (["-0.35"], "a number >= 0"),
    "MODEL.HEADS.NUM_CLASSES": (["-5"], "an integer >= 0"),
    "MODEL.HEADS.EMBEDDING_DIM": (["-1"], "an integer >= 0"),
    "MODEL.LOSSES.NAME": (['("TripletLos",)', "()"], "CrossEntropyLoss, TripletLoss"),
    "MODEL.LOSSES.CE.EPSILON": (["1.0", "-0.5"], "[0, 1), or -1"),
    "MODEL.PCB.NUM_STRIPES": (["0"], "an integer >= 1"),
    "MODEL.PCB.REDUCTION_DIM": (["0"], "an integer >= 1"),
    "MODEL.PCB.DROPOUT": (["1.0", "-0.1"], "a number in [0, 1)"),
    "MODEL.HPM.BINS": (["()", "(1, 0)"], "one or more integers >= 1"),
    "MODEL.HPM.REDUCTION_DIM": (["-2"], "an integer >= 1"),
    "MODEL.PAPER_MGN.REDUCTION_DIM": (["0"], "an integer >= 1"),
    "MODEL.CAL.START_EPOCH_CC": (["-1"], "an integer >= 0"),
    "MODEL.CAL.START_EPOCH_ADV": (["-2"], "an integer >= 0"),
    "MODEL.CAL.EPSILON": (["1.5"], "a number in [0, 1]"),
    "MODEL.CAL.SCALE": (["0.0", "-16.0"], "a number > 0"),
    "MODEL.CAL.NUM_CLOTHES": (["-3"], "an integer >= 0"),
    "MODEL.LOSSES.CE.ALPHA": (["1.0", "-0.1"], "[0, 1)"),
    "MODEL.LOSSES.CE.SCALE": (["0.0", "-1.0"], "a number > 0"),
    "MODEL.LOSSES.TRI.MARGIN": (["-0.3"], "a number >= 0"),
    "MODEL.LOSSES.TRI.SCALE": (["0.0"], "a number > 0"),
    "MODEL.PIXEL_MEAN": (["[123.7, 116.3]"], "3 entries"),
    "MODEL.PIXEL_STD": (["[58.4, 0.0, 57.4]"], "3 entries, each a number > 0"),
    "MODEL.CHANNELS_LAST": (["fast"], "auto, on, off"),
    "MODEL.CPU_BF16": (["fast"], "auto, on, off"),
    "INPUT.SIZE_TRAIN": (["[0, 0]", "[2, 32]", "[64]", "[64, 32, 3]"], "[height, width]"),
    "INPUT.SIZE_TEST": (["[0, 0]", "[32, 2]"], "[height, width]"),
    "INPUT.INTERPOLATION": (["nearest"], "bicubic, bilinear"),
    "INPUT.FLIP.PROB": (["1.5", "-0.1"], "[0, 1]"),
    "INPUT.PADDING.SIZE": (["-1"], "an integer >= 0"),
    "INPUT.PADDING.MODE": (["wrap"], "constant, edge, reflect, symmetric"),
    "INPUT.CJ.PROB": (["2.0"], "[0, 1]"),
    "INPUT.CJ.BRIGHTNESS": (["-0.1"], "a number >= 0"),
    "INPUT.CJ.CONTRAST": (["-0.1"], "a number >= 0"),
    "INPUT.CJ.SATURATION": (["-0.1"], "a number >= 0"),
    "INPUT.CJ.HUE": (["0.6", "-0.1"], "[0, 0.5]"),
    "INPUT.REA.PROB": (["2.0", "-0.5"], "[0, 1]"),
    "INPUT.RPT.PROB": (["1.5"], "[0, 1]"),
    "INPUT.AUTOAUG.PROB": (["1.5"], "[0, 1]"),
    "INPUT.AUGMIX.PROB": (["-1.0"], "[0, 1]"),
    "DATASETS.NAMES": (['("NoSuchSet",)', "()"], "DATASET_REGISTRY"),
    "DATASETS.TESTS": (['("LaSTVal", "NoSuchSet")'], "not 'NoSuchSet'; registered: "),
    "TEST.FINAL_TESTS": (['("Nope",)'], "not 'Nope'; registered: "),
    "DATALOADER.SAMPLER_TRAIN": (["RandomSampler"], "NaiveIdentitySampler"),
    "DATALOADER.NUM_INSTANCE": (["0", "-4"], "an integer >= 1"),
    "DATALOADER.NUM_WORKERS": (["-1"], "an integer >= 0"),
    "SOLVER.OPT": (["Adamm", "Optimizer"], "torch.optim has "),
    "SOLVER.BASE_LR": (["0.0", "-0.001"], "a number > 0"),
    "SOLVER.MOMENTUM": (["1.0", "-0.9"], "[0, 1)"),
    "SOLVER.NESTEROV": (["True"], "MOMENTUM > 0", ["SOLVER.OPT", "SGD", "SOLVER.MOMENTUM", "0.0"]),
    "SOLVER.WEIGHT_DECAY": (["-0.0005"], "a number >= 0"),
    "SOLVER.WEIGHT_DECAY_NORM": (["-0.0005"], "a number >= 0"),
    "SOLVER.WEIGHT_DECAY_BIAS": (["-0.0005"], "a number >= 0"),
    "SOLVER.BIAS_LR_FACTOR": (["0.0"], "a number > 0"),
    "SOLVER.HEADS_LR_FACTOR": (["-1.0"], "a number > 0"),
    "SOLVER.IMS_PER_BATCH": (["0", "-8"], "an integer >= 1"),
    "SOLVER.MAX_EPOCH": (["-3", "0", "None"], "an integer >= 1"),
    "SOLVER.SCHED": (["StepLR"], "MultiStepLR, CosineAnnealingLR"),
    "SOLVER.DELAY_EPOCHS": (["-1"], "an integer >= 0"),
    "SOLVER.STEPS": (["[0]", "[2, 1]"], "increasing integers >= 1"),
    "SOLVER.GAMMA": (["0.0", "1.5"], "(0, 1]"),
    "SOLVER.ETA_MIN_LR": (["-1e-07"], "a number >= 0"),
    "SOLVER.WARMUP_FACTOR": (["1.5", "-0.1"], "[0, 1]"),
    "SOLVER.WARMUP_ITERS": (["-1"], "an integer >= 0"),
    "SOLVER.WARMUP_METHOD": (["cosine"], "constant, linear, exp"),
    "SOLVER.FREEZE_ITERS": (["-1"], "an integer >= 0"),
    "SOLVER.CHECKPOINT_PERIOD": (["0"], "an integer >= 1"),
    "SOLVER.KEEP_LAST_CHECKPOINTS": (["-1"], "an integer >= 0"),
    "TEST.EVAL_PERIOD": (["0", "-1"], "an integer >= 1"),
    "TEST.IMS_PER_BATCH": (["0"], "an integer >= 1"),
    "TEST.METRIC": (["jaccard"], "cosine, euclidean"),
    "TEST.QUERY_BLOCK_SIZE": (["-1"], "an integer >= 0"),
    "TEST.EVAL_MEMORY_MB": (["0"], "an integer >= 1"),
    "TEST.AQE.QE_TIME": (["0"], "an integer >= 1"),
    "TEST.AQE.QE_K": (["0"], "an integer >= 1"),
    "TEST.AQE.ALPHA": (["-1.0"], "a number >= 0"),
    "TEST.RERANK.K1": (["0"], "an integer >= 1"),
    "TEST.RERANK.K2": (["0"], "an integer >= 1"),
    "TEST.RERANK.LAMBDA": (["1.5"], "[0, 1]"),
    "TEST.SINGLE_SHOT.TRIALS": (["0"], "an integer >= 1"),
    "TEST.SINGLE_SHOT.SEED": (["-1"], "an integer >= 0"),
    "DISTRIBUTED.TIMEOUT_MINUTES": (["0.0", "-5.0"], "a number > 0"),
}
# Edge values that must run: (overrides, moment). step:2 is the start of the second step
# (the first one done); None: the whole run (training, evaluation, final test) exits 0.
EDGES = {
    "size_train_3x3": (["INPUT.SIZE_TRAIN", "[3, 3]"], "step:2"),
    "size_train_1x1_torchvision_stem": (
        ["INPUT.SIZE_TRAIN", "[1, 1]", "MODEL.BACKBONE.TORCHVISION_STEM", "True"], "step:2"),
    "size_train_ibn_20x10": (
        ["INPUT.SIZE_TRAIN", "[20, 10]", "MODEL.BACKBONE.WITH_IBN", "True"], "step:2"),
    "size_test_3x3": (["INPUT.SIZE_TEST", "[3, 3]"], None),
    "last_stride_2": (["MODEL.BACKBONE.LAST_STRIDE", "2"], "step:2"),
    "num_classes_0": (["MODEL.HEADS.NUM_CLASSES", "0"], "step:2"),
    "num_classes_6": (["MODEL.HEADS.NUM_CLASSES", "6"], "step:2"),  # the 6 identities
    "probabilities_0": (
        ["INPUT.REA.PROB", "0.0", "INPUT.FLIP.PROB", "0.0", "INPUT.CJ.PROB", "0.0"], "step:2"),
    "probabilities_1_hue_0.5": (
        ["INPUT.REA.PROB", "1.0", "INPUT.FLIP.PROB", "1.0", "INPUT.CJ.HUE", "0.5"], "step:2"),
    "soft_margin_adaptive_smoothing": (
        ["MODEL.LOSSES.TRI.MARGIN", "0.0", "MODEL.LOSSES.CE.EPSILON", "-1.0"], "step:2"),
    "no_smoothing_no_padding": (
        ["MODEL.LOSSES.CE.EPSILON", "0.0", "INPUT.PADDING.SIZE", "0"], "step:2"),
    "batch_of_every_image": (["SOLVER.IMS_PER_BATCH", "24", "SOLVER.MAX_EPOCH", "2"], "step:2"),
    "steps_last_epoch_but_one": (["SOLVER.MAX_EPOCH", "3", "SOLVER.STEPS", "[1, 2]"], "step:2"),
    "delay_max_epoch_less_1_cosine": (
        ["SOLVER.MAX_EPOCH", "2", "SOLVER.DELAY_EPOCHS", "1", "SOLVER.SCHED",
         "CosineAnnealingLR"], "step:2"),
    "warmup_factor_0_gamma_1": (
        ["SOLVER.WARMUP_ITERS", "2", "SOLVER.WARMUP_FACTOR", "0.0", "SOLVER.GAMMA", "1.0"],
        "step:2"),
    "sgd_momentum_0": (["SOLVER.OPT", "SGD", "SOLVER.MOMENTUM", "0.0"], "step:2"),
    "periods_past_the_run": (
        ["TEST.EVAL_PERIOD", "1000", "SOLVER.CHECKPOINT_PERIOD", "1000"], None),
    "pcb_more_stripes_than_rows_hpm_one_bin": (
        ["MODEL.META_ARCHITECTURE", "PartBaseline", "MODEL.HEADS.NAME", "PCBHead",
         "MODEL.PCB.NUM_STRIPES", "40", "MODEL.PCB.DROPOUT", "0.0", "MODEL.HPM.BINS", "(1,)"],
        "step:2"),
    "test_batch_1_block_1_memory_1": (
        ["TEST.IMS_PER_BATCH", "1", "TEST.QUERY_BLOCK_SIZE", "1", "TEST.EVAL_MEMORY_MB", "1"],
        None),
}
# Rejected once the training set is read, before any step: (overrides, words of the line).
TOO_SMALL = {
    "fewer_images_than_a_batch": (
        ["DATALOADER.SAMPLER_TRAIN", "TrainingSampler", "SOLVER.IMS_PER_BATCH", "32"],
        ["SOLVER.IMS_PER_BATCH 32 is more than the 24 images of the training set (LaST)",
         "use SOLVER.IMS_PER_BATCH 24 or less"]),
    "fewer_images_than_an_identity_batch": (
        ["DATALOADER.NUM_INSTANCE", "8", "SOLVER.IMS_PER_BATCH", "32"],
        ["SOLVER.IMS_PER_BATCH 32 is more than the 24 images",
         "use SOLVER.IMS_PER_BATCH 24 or less, a multiple of DATALOADER.NUM_INSTANCE 8"]),
    "fewer_classes_than_identities": (
        ["MODEL.HEADS.NUM_CLASSES", "5"],
        ["MODEL.HEADS.NUM_CLASSES 5 is fewer than the 6 identities of the training set (LaST)"]),
    "warmup_leaves_cosine_no_epoch": (
        ["SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_ITERS", "6", "SOLVER.SCHED",
         "CosineAnnealingLR"],
        ["SOLVER.WARMUP_ITERS is 6: the warm-up leaves CosineAnnealingLR no epoch",
         "use 3 or less"]),
}
# Schedule points past the end of the run (a recipe shortened with SOLVER.MAX_EPOCH): one
# warning line naming each key and what the run does instead, and the run goes on (to its
# second step here). (overrides, words of the line)
PAST_THE_RUN = {
    "steps_of_a_shortened_recipe": (
        ["SOLVER.STEPS", "[30, 70]"],
        ["SOLVER.STEPS [30, 70] lie past the 1 epochs MultiStepLR counts here: the learning "
         "rate never decays"]),
    # 2 warm-up epochs of 3 steps: MultiStepLR counts epochs 2 and 3 only.
    "step_past_the_warmed_up_run": (
        ["SOLVER.MAX_EPOCH", "3", "SOLVER.WARMUP_ITERS", "6", "SOLVER.STEPS", "[1, 2]"],
        ["SOLVER.STEPS [2] of [1, 2] lie past the 2 epochs", "decays at steps [1] only"]),
    "delay_and_warmup_past_a_cosine_run": (
        ["SOLVER.SCHED", "CosineAnnealingLR", "SOLVER.DELAY_EPOCHS", "30",
         "SOLVER.WARMUP_ITERS", "100"],
        ["run of 3 iterations", "SOLVER.WARMUP_ITERS 100 is not below the run's 3 iterations",
         "never reaches SOLVER.BASE_LR", "SOLVER.DELAY_EPOCHS 30 is not below SOLVER.MAX_EPOCH: "
         "CosineAnnealingLR never starts"]),
}
# The other tools that take KEY VALUE overrides, and the bad values tried on each.
OTHER_TOOLS = ("extract_features.py", "visualize_ranks.py", "export_onnx.py")
TOOL_KEYS = [("TEST.IMS_PER_BATCH", "0"), ("INPUT.SIZE_TEST", "[2, 2]"), ("TEST.METRIC", "l1")]
# fmt: on


def shown(raw):
    """The value as the message shows it: repr of what yacs decodes `raw` to."""
    try:
        return repr(ast.literal_eval(raw))
    except (ValueError, SyntaxError):
        return repr(raw)


def bad_cases():
    for key, (values, words, *extra) in BAD.items():
        for value in values:
            yield f"{key}={value}", key, value, words, (extra[0] if extra else [])


def _case(name, argv, moment, output):
    return {"name": name, "argv": argv, "moment": moment, "output": str(output)}


def _train(opts, output):
    return [TRAIN_NET, "--config-file", CONFIG] + BASE + opts + ["OUTPUT_DIR", str(output)]


def _tool_case(tool, key, value, tmp):
    output = (
        tmp
        / {
            "extract_features.py": "features.npz",
            "visualize_ranks.py": "ranks",
            "export_onnx.py": "model.onnx",
        }[tool]
    )
    args = ["-o", str(output)] + ([] if tool == "export_onnx.py" else ["--dataset", "LaSTVal"])
    argv = [os.path.join(TOOLS, tool), "--config-file", CONFIG] + args + BASE
    return _case(f"{tool}:{key}", argv + [key, value], None, output)


def all_cases(tmp):
    cases = []
    for i, (name, key, value, _, extra) in enumerate(bad_cases()):
        output = tmp / f"bad{i}"
        cases.append(_case(name, _train(extra + [key, value], output), "step:1", output))
    for name, (opts, moment) in EDGES.items():
        cases.append(_case(name, _train(opts, tmp / name), moment, tmp / name))
    for name, (opts, _) in TOO_SMALL.items():
        cases.append(_case(name, _train(opts, tmp / name), "step:1", tmp / name))
    for name, (opts, _) in PAST_THE_RUN.items():
        cases.append(_case(name, _train(opts, tmp / name), "step:2", tmp / name))
    for tool in OTHER_TOOLS:
        cases += [_tool_case(tool, key, value, tmp) for key, value in TOOL_KEYS]
    return cases


@pytest.fixture(scope="module")
def sweep(module_tmp, synthetic_root):
    """Every case of this module, each in its own forked process (tests/forked_runs.py)."""
    tmp = module_tmp.mktemp("sweep")
    with open(tmp / "cases.json", "w") as f:
        json.dump(all_cases(tmp), f)
    env = dict(os.environ, FASTREID_DATASETS=str(synthetic_root), PYTHONUNBUFFERED="1")
    runner = os.path.join(REPO, "tests", "forked_runs.py")
    subprocess.run(
        [sys.executable, runner, str(tmp / "cases.json"), str(tmp / "results.json")],
        cwd=REPO,
        env=env,
        check=True,
        timeout=1800,  # a guard against a hang only
    )
    with open(tmp / "results.json") as f:
        return json.load(f)


def one_line_failure(result, tool="train_net.py"):
    """The run ended with status 1 and, as its last stderr line, `<tool>: error: ...`
    without a traceback; returns that line."""
    err = result["stderr"]
    assert result["status"] == 1, f"status {result['status']}:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{tool}: error: "), last
    return last


def test_every_checked_key_is_swept():
    assert set(BAD) == {rule.key for rule in RULES}


@pytest.mark.parametrize("name, key, value, words, extra", list(bad_cases()))
def test_bad_value_is_one_line_before_anything_is_written(sweep, name, key, value, words, extra):
    result = sweep[name]
    last = one_line_failure(result)
    assert last.startswith(f"train_net.py: error: {key} is {shown(value)}: expected "), last
    assert words in last, last
    assert result["output"] is None  # not even the output folder


@pytest.mark.parametrize("name", list(EDGES))
def test_edge_value_runs(sweep, name):
    result, moment = sweep[name], EDGES[name][1]
    if moment:
        assert result["status"] == f"reached {moment}", result["stderr"][-3000:]
    else:
        assert result["status"] == 0, result["stderr"][-3000:]
        assert {"model_final.pth", "results.json"} <= set(result["output"])


@pytest.mark.parametrize("name", list(TOO_SMALL))
def test_too_small_for_the_training_set_is_one_line_before_any_step(sweep, name):
    result = sweep[name]
    last = one_line_failure(result)  # status 1, not "reached step:1"
    for words in TOO_SMALL[name][1]:
        assert words in last, last
    assert not [f for f in result["output"] or [] if f.endswith(".pth")]


@pytest.mark.parametrize("name", list(PAST_THE_RUN))
def test_schedule_past_the_run_is_one_warning_line_and_the_run_goes_on(sweep, name):
    result = sweep[name]
    assert result["status"] == "reached step:2", result["stderr"][-3000:]
    lines = [line for line in result["stdout"].splitlines() if "past the end" in line]
    assert len(lines) == 1, result["stdout"][-3000:]
    assert "WARNING" in lines[0] and "Schedule past the end of this" in lines[0], lines
    for words in PAST_THE_RUN[name][1]:
        assert words in lines[0], lines[0]


@pytest.mark.parametrize("tool", OTHER_TOOLS)
def test_other_tools_share_the_check(sweep, tool):
    for key, value in TOOL_KEYS:
        result = sweep[f"{tool}:{key}"]
        last = one_line_failure(result, tool)
        assert last.startswith(f"{tool}: error: {key} is {shown(value)}: expected "), last
        assert result["output"] is None  # nothing written


# The sets and boundaries the checks use, against fastreid's and torch's own behaviour ------


def test_norm_names_are_those_fastreid_builds():
    from fastreid.layers import get_norm

    for name in fastreid_internals.NORM_NAMES:
        assert isinstance(get_norm(name, 64), torch.nn.Module), name
    with pytest.raises(KeyError):
        get_norm("LN", 64)


def _optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_schedulers_and_warmup_methods_are_those_fastreid_builds():
    from fastreid.solver.build import build_lr_scheduler
    from fastreid.solver.lr_scheduler import WarmupLR

    cfg = build_cfg(CONFIG, BASE)
    cfg.defrost()
    for name in fastreid_internals.LR_SCHEDULERS:
        cfg.SOLVER.SCHED = name
        assert type(build_lr_scheduler(cfg, _optimizer(), 3)["lr_sched"]).__name__ == name
    cfg.SOLVER.SCHED = "StepLR"
    with pytest.raises(KeyError):
        build_lr_scheduler(cfg, _optimizer(), 3)
    for method in fastreid_internals.WARMUP_METHODS:
        assert 0 < WarmupLR(_optimizer(), 0.1, 10, method).get_lr()[0] < 1, method
    with pytest.raises(ValueError, match="Unknown warmup method"):
        WarmupLR(_optimizer(), 0.1, 10, "cosine")


def test_train_samplers_are_those_fastreid_builds(synthetic_root, monkeypatch):
    from lastreid.loaders import build_train_set

    from fastreid.data import samplers

    monkeypatch.setenv("FASTREID_DATASETS", str(synthetic_root))
    cfg = build_cfg(CONFIG, BASE)
    cfg.defrost()
    train_set = None
    for name in fastreid_internals.TRAIN_SAMPLERS + ("RandomSampler",):
        cfg.DATALOADER.SAMPLER_TRAIN = name
        cfg.DATALOADER.SET_WEIGHT = [1.0]  # SetReWeightSampler's
        train_set = train_set or build_train_set(cfg)
        if name == "RandomSampler":
            with pytest.raises(ValueError, match="Unknown training sampler"):
                fastreid_internals.train_sampler(cfg, train_set)
        else:
            sampler = fastreid_internals.train_sampler(cfg, train_set)
            assert type(sampler) is getattr(samplers, name)


def test_resnet_depths_give_the_feature_dims_checked():
    from fastreid.modeling.backbones import build_resnet_backbone

    cfg = build_cfg(CONFIG, BASE)
    cfg.defrost()
    for depth, dim in fastreid_internals.RESNET_FEAT_DIMS.items():
        cfg.MODEL.BACKBONE.DEPTH = depth  # set past the checks: fastreid builds any
        with torch.device("meta"):  # shapes only: no weights to initialise, no arithmetic
            out = build_resnet_backbone(cfg)(torch.zeros(1, 3, 32, 16))
        assert out.shape[1] == dim, depth
    cfg.MODEL.BACKBONE.DEPTH = "152x"
    with pytest.raises(KeyError):
        build_resnet_backbone(cfg)


@pytest.fixture
def one_thread():
    """Tiny forward passes: with 2 threads on a busy machine OpenMP's waits cost 50x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_baseline_computes_exactly_the_loss_names_checked(one_thread):
    from lastreid.modeling import build_model

    from fastreid.utils.events import EventStorage

    torch.manual_seed(0)
    model = build_model(build_cfg(CONFIG, BASE + ["MODEL.HEADS.NUM_CLASSES", "2"])).train()
    images = {"images": torch.rand(4, 3, 32, 16) * 255, "targets": torch.arange(4) // 2}
    computed = {}
    for name in fastreid_internals.BASELINE_LOSSES + ("TripletLos",):
        model.loss_kwargs["loss_names"] = (name,)  # MODEL.LOSSES.NAME, as Baseline keeps it
        with EventStorage():
            computed[name] = len(model(images))
    assert computed.pop("TripletLos") == 0  # silently no loss at all: why the name is checked
    assert set(computed.values()) == {1}


def _survives(backbone, size):
    """The backbone takes a batch of 2 images of `size` in training and in eval mode (on the
    meta device: torch works out every shape and raises as it would on numbers)."""
    try:
        with torch.device("meta"):
            for training in (True, False):
                backbone.train(training)(torch.zeros(2, 3, *size))
        return True
    except (RuntimeError, ValueError) as err:
        # Only the two ways a too-small image fails count; anything else is a real error.
        message = str(err)
        if isinstance(err, RuntimeError) and "Output size is too small" in message:
            return False  # an empty pooling window (the stem's max-pool, a stride)
        if isinstance(err, ValueError) and "Expected more than 1 spatial element" in message:
            return False  # IBN's InstanceNorm over a single cell
        raise


@pytest.mark.parametrize(
    "opts, widths",
    [
        ([], (3, 8, 31)),
        (["MODEL.BACKBONE.TORCHVISION_STEM", "True"], (1, 8)),
        (["MODEL.BACKBONE.WITH_IBN", "True"], (8, 16, 17)),
    ],
    ids=["fastreid_stem", "torchvision_stem", "ibn"],
)
def test_the_smallest_image_size_accepted_is_the_smallest_the_resnet_survives(opts, widths):
    from lastreid.modeling import build_model

    cfg = build_cfg(CONFIG, BASE + opts)
    cfg.defrost()
    on_meta = cfg.clone()
    on_meta.MODEL.DEVICE = "meta"  # the model as lastreid builds it, without weights
    backbone = build_model(on_meta).backbone

    def accepted(size):
        cfg.INPUT.SIZE_TEST = list(size)
        try:
            config_checks.check_values(cfg)
            return True
        except ConfigError:
            return False

    for width in widths:
        smallest = next(h for h in range(1, 64) if accepted((h, width)))
        assert _survives(backbone, (smallest, width)), (smallest, width)
        if smallest > 1:
            assert not _survives(backbone, (smallest - 1, width)), (smallest - 1, width)


def _lr_per_epoch(cfg, iters_per_epoch):
    """The learning rate of every epoch, as fastreid's LRScheduler hook steps its schedulers
    over train_loop's epochs."""
    from fastreid.engine import hooks
    from fastreid.solver.build import build_lr_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hook = hooks.LRScheduler(optimizer, build_lr_scheduler(cfg, optimizer, iters_per_epoch))
    trainer = type("Trainer", (), {})()
    trainer.iter, trainer.grad_scaler = 0, None
    trainer.warmup_iters, trainer.delay_epochs = cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.DELAY_EPOCHS
    trainer.storage = type("Storage", (), {"put_scalar": lambda *a, **k: None})()
    hook.trainer, lrs = trainer, []
    for trainer.epoch in range(cfg.SOLVER.MAX_EPOCH):
        lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(iters_per_epoch):
            hook.after_step()
            trainer.iter += 1
        hook.after_epoch()
    return lrs


def _accepted_schedule(opts, iters_per_epoch):
    try:
        config_checks.check_schedule(build_cfg(CONFIG, BASE + opts), iters_per_epoch)
        return True
    except ConfigError:
        return False


def _steps_warned(opts, iters_per_epoch):
    parts = config_checks.schedule_warnings(build_cfg(CONFIG, BASE + opts), iters_per_epoch)
    return any(part.startswith("SOLVER.STEPS") for part in parts)


@pytest.mark.parametrize("max_epoch, iters, warmup, delay", [(6, 3, 0, 0), (6, 3, 6, 0),
                         (6, 3, 7, 0), (6, 3, 0, 2), (6, 3, 7, 3), (4, 5, 20, 0),
                         (2, 3, 7, 0), (3, 3, 0, 3)])  # fmt: skip
def test_a_step_is_warned_about_exactly_when_it_changes_no_learning_rate(
    max_epoch, iters, warmup, delay
):
    """SOLVER.STEPS [s] passes the config check always and draws the warning of
    check_schedule exactly when fastreid's scheduler, stepped by its hook over the epochs,
    gives every epoch the learning rate that no step does (warm-ups and delays past the
    run included)."""
    solver = ["SOLVER.MAX_EPOCH", str(max_epoch), "SOLVER.WARMUP_ITERS", str(warmup)]
    solver += ["SOLVER.DELAY_EPOCHS", str(delay)]
    cfg = build_cfg(CONFIG, BASE + solver + ["SOLVER.STEPS", "[]"])
    cfg.defrost()
    plain = _lr_per_epoch(cfg, iters)
    for step in range(1, max_epoch + 2):
        cfg.SOLVER.STEPS = [step]
        changes = _lr_per_epoch(cfg, iters) != plain
        opts = solver + ["SOLVER.STEPS", f"[{step}]"]
        build_cfg(CONFIG, BASE + opts)  # no ConfigError
        assert _steps_warned(opts, iters) == (not changes), (step, changes)


def test_cosine_warmup_check_matches_fastreids_division():
    """check_schedule refuses exactly the warm-ups after which fastreid's CosineAnnealingLR
    has no epoch (T_max 0: torch divides by it on its first step)."""
    for warmup in range(0, 13):
        opts = ["SOLVER.SCHED", "CosineAnnealingLR", "SOLVER.MAX_EPOCH", "3"]
        opts += ["SOLVER.WARMUP_ITERS", str(warmup)]
        try:
            _lr_per_epoch(build_cfg(CONFIG, BASE + opts), 3)
            runs = True
        except ZeroDivisionError:
            runs = False
        assert _accepted_schedule(opts, 3) == runs, warmup


def _brute_force_largest(cfg, num_identities, num_images, world):
    """The largest batch for which the per-process split holds, an epoch has a step and the
    Naive / Balanced identity samplers find their identities."""
    best = 0
    for batch in range(1, num_images + 1):
        cfg.SOLVER.IMS_PER_BATCH = batch
        try:
            launch.check_batch_split(cfg, world)
        except ConfigError:
            continue
        ids_needed = batch // cfg.DATALOADER.NUM_INSTANCE
        if cfg.DATALOADER.SAMPLER_TRAIN == "NaiveIdentitySampler" and ids_needed > num_identities:
            continue
        best = batch
    return best


@pytest.mark.parametrize("sampler", ["TrainingSampler", "NaiveIdentitySampler"])
def test_largest_batch_is_the_largest_that_works(sampler):
    cfg = build_cfg(CONFIG, BASE + ["DATALOADER.SAMPLER_TRAIN", sampler])
    cfg.defrost()
    for world in (1, 2, 3):
        for k in (1, 2, 4):
            cfg.DATALOADER.NUM_INSTANCE = k
            for ids, images in ((1, 3), (3, 24), (6, 7), (10, 13), (5, 40)):
                expected = _brute_force_largest(cfg, ids, images, world)
                assert launch.largest_batch(cfg, ids, world, images) == expected, (world, k)
                if expected:  # the check lets the largest batch through
                    cfg.SOLVER.IMS_PER_BATCH = expected
                    launch.check_training_set(cfg, images, ids, ("X",), world)


# The manual's list ------------------------------------------------------------------------


def test_the_manual_lists_exactly_the_checked_keys():
    with open(os.path.join(REPO, "docs", "config_keys.md")) as f:
        text = f.read()
    section = text.split("\n## Checked config values\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_.]+)` \| (.*) \|$", section, flags=re.M)
    expected = [(rule.key, rule.allowed) for rule in RULES]
    table = config_checks.markdown_table()
    assert rows == expected, "docs/config_keys.md table from RULES:\n" + table


def test_a_message_names_the_key_the_value_and_what_is_allowed():
    with pytest.raises(ConfigError) as err:
        build_cfg(CONFIG, BASE + ["SOLVER.MAX_EPOCH", "-3"])
    assert str(err.value) == "SOLVER.MAX_EPOCH is -3: expected an integer >= 1"


def test_a_key_has_one_rule_and_a_refused_registration_adds_none():
    """`register_rules` (a model's module registers its keys' rules): a key already in the
    table is refused, and the other rules given with it are not added either."""
    from lastreid.config_checks import Rule, integer, register_rules

    before = list(RULES)
    with pytest.raises(ValueError, match="MODEL.PCB.NUM_STRIPES is already registered"):
        register_rules(
            Rule("MODEL.NEW_HEAD.DIM", integer(1)), Rule("MODEL.PCB.NUM_STRIPES", integer(2))
        )
    assert RULES == before
