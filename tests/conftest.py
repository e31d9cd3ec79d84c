import importlib.util
import os
import shutil
import subprocess
import sys

import lastreid  # noqa: F401  (patches fastreid before any test imports it)
from lastreid.datasets import synthetic

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")

# Under `pytest -n N` (make test) the N workers share the CPU: each one's torch threads, and the
# tools it starts (they inherit OMP_NUM_THREADS), get a share of the cores, not all of them each:
# oversubscribed OpenMP threads spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, share)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def load_tool(name):
    """tools/<name>.py as a module, to call its main(argv) in the test's process (the tools
    are scripts, not a package)."""
    path = os.path.join(TOOLS, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ModuleTemp:
    """One test module's folder for the runs its tests share."""

    def __init__(self, root):
        self.root = root

    def mktemp(self, name):
        path = self.root / name
        path.mkdir()
        return path


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory):
    """Folders for a module's shared runs, removed when the module ends unless one of its tests
    failed. The suite writes about 5 GB of checkpoints; kept to the session's end (pytest's
    tmp_path_factory) they once filled a CI disk."""
    root = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    failed_before = request.session.testsfailed
    yield ModuleTemp(root)
    if request.session.testsfailed == failed_before:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A datasets root holding the `tiny` synthetic LaST, PRCC and Celeb-reID trees
    (seed 0), written once per session. `lastreid.datasets.synthetic.read_counts(root)` gives
    what the generator wrote."""
    root = tmp_path_factory.mktemp("datasets")
    synthetic.write_all(str(root), preset="tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def all_datasets_root(tmp_path_factory):
    """Tiny synthetic trees of every dataset (ALL_DATASETS), 8 training images per person
    (5 training iterations of 8 images on Market / Duke / PRCC), 5 test persons; written
    once."""
    root = tmp_path_factory.mktemp("datasets_all")
    synthetic.write_all(
        str(root),
        preset="tiny",
        seed=0,
        datasets=synthetic.ALL_DATASETS,
        test_ids=5,
        images_per_camera=3,
        train_images=8,
    )
    return root


@pytest.fixture(scope="session")
def default_root(tmp_path_factory):
    """The `default` synthetic preset (the demo's data) of all three datasets, seed 0."""
    root = tmp_path_factory.mktemp("datasets_default")
    synthetic.write_all(str(root), preset="default", seed=0)
    return root


# Overrides that make BoT small enough for a few CPU seconds per epoch: ResNet-18 at 64x32,
# no ImageNet file, every epoch evaluated and checkpointed, no learning-rate decay (a run of
# a few epochs has no room for SOLVER.STEPS).
# fmt: off
FAST_CPU_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.BACKBONE.PRETRAIN", "False",
    "MODEL.BACKBONE.DEPTH", "18x",
    "MODEL.BACKBONE.FEAT_DIM", "512",
    "INPUT.SIZE_TRAIN", "[64, 32]",
    "INPUT.SIZE_TEST", "[64, 32]",
    "INPUT.PADDING.SIZE", "4",
    "SOLVER.IMS_PER_BATCH", "32",
    "SOLVER.WARMUP_ITERS", "10",
    "SOLVER.STEPS", "[]",
    "SOLVER.CHECKPOINT_PERIOD", "1",
    "TEST.EVAL_PERIOD", "1",
    "TEST.IMS_PER_BATCH", "64",
    "DATALOADER.NUM_WORKERS", "0",
    "CUDNN_BENCHMARK", "False",
    "SEED", "0",  # a test's outcome never rests on a lucky draw
]
# fmt: on


def write_random_bot(config, opts, path):
    """Saves a seeded random BoT of `config` + `opts` as a fastreid checkpoint, with
    perturbed BatchNorm statistics so that eval mode is not the identity."""
    from lastreid.engine import Trainer
    from lastreid.startup import build_cfg

    torch.manual_seed(0)
    model = Trainer.build_model(build_cfg(config, opts))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save({"model": model.state_dict()}, path)
    return str(path)


@pytest.fixture
def fast_cpu_opts():
    return list(FAST_CPU_OPTS)


# FAST_CPU_OPTS leave MODEL.CPU_BF16 / CHANNELS_LAST at "auto": bf16 training on a CPU with
# native bf16, float32 elsewhere. A test whose threshold was measured in float32 adds these,
# so that it passes on either kind of CPU (LASTREID_NATIVE_BF16=0/1 try both on one).
FP32_OPTS = ["MODEL.CPU_BF16", "off", "MODEL.CHANNELS_LAST", "off"]


def native_bf16():
    """Whether this CPU (or LASTREID_NATIVE_BF16) says it runs bfloat16 natively."""
    from lastreid.precision import cpu_bf16_support

    return cpu_bf16_support()[0]


# For a test that runs bfloat16 arithmetic: elsewhere torch emulates it, slowly, and the
# tolerances measured on native bf16 do not apply.
needs_native_bf16 = pytest.mark.skipif(
    not native_bf16(), reason="runs bfloat16 arithmetic; this CPU has no native bf16"
)


# BoT (ResNet-18 at 64x32, float32) trained 3 epochs on the default synthetic LaST through
# tools/train_net.py, batches of 128 (32 identities x 4; on the CPU much of a step's cost is
# the optimizer's, so fewer, larger steps make shorter epochs), the newest periodic
# checkpoint kept. 15 steps in all: no warm-up and a learning rate of 1e-3 so that they
# visibly train (LaST test mAP 20.0 at random init, 30.1 after; 22.4 with FAST_CPU_OPTS'
# warm-up and rate). The run `bot_default_run` shares; test_resume_kill kills and resumes
# runs of the same recipe in batches of 16 on a tinier LaST.
BOT_CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml")
BOT_EPOCHS = 3
BOT_BATCH = 128
# fmt: off
BOT_DEFAULT_OPTS = FAST_CPU_OPTS + FP32_OPTS + [
    "SOLVER.IMS_PER_BATCH", str(BOT_BATCH),
    "SOLVER.MAX_EPOCH", str(BOT_EPOCHS),
    "SOLVER.WARMUP_ITERS", "0",
    "SOLVER.BASE_LR", "0.001",
    "SOLVER.KEEP_LAST_CHECKPOINTS", "1",
]
# fmt: on


def train_net_command(opts, output, resume=False, workers=0):
    """tools/train_net.py's command line for BOT_CONFIG with `opts`, OUTPUT_DIR `output`."""
    args = [sys.executable, os.path.join(TOOLS, "train_net.py"), "--config-file", BOT_CONFIG]
    args += ["--resume"] if resume else []
    return args + list(opts) + ["DATALOADER.NUM_WORKERS", str(workers), "OUTPUT_DIR", str(output)]


@pytest.fixture(scope="session")
def bot_default_run(request, default_root, tmp_path_factory):
    """The folder of one BoT run on the default synthetic LaST (BOT_DEFAULT_OPTS, no loader
    workers), trained once for the whole session by every module that needs a trained BoT
    (test_training). Read it; copy it before writing into it. Removed at
    the session's end (its checkpoints are 400 MB) unless a test failed."""
    root = tmp_path_factory.mktemp("bot_default")
    output = root / "run"
    env = dict(os.environ, FASTREID_DATASETS=str(default_root), PYTHONUNBUFFERED="1")
    log = root / "train.out"
    with open(log, "wb") as out:
        code = subprocess.call(
            train_net_command(BOT_DEFAULT_OPTS, output),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    assert code == 0, log.read_text(errors="replace")[-3000:]
    yield output
    if request.session.testsfailed == 0:
        shutil.rmtree(root, ignore_errors=True)


def fake_runs(monkeypatch, action=lambda cmd, log_path: 1):
    """Replaces the train_net processes of the table tools (lastreid.experiments.runs):
    `action(cmd, log_path)` does what the run would and gives its exit code. Returns the
    list of the commands "run"."""
    from lastreid.experiments import runs

    spawned = []

    def run_logged(cmd, log_path, verbose=False, heartbeat=None, heartbeat_s=120.0):
        spawned.append(cmd)
        return action(cmd, log_path), {"wall_s": 0.0, "peak_rss_gib": 0.0}

    monkeypatch.setattr(runs, "run_logged", run_logged)
    return spawned


# The modules whose shared runs take longest (measured with --durations), started first: under
# `pytest -n N --dist loadfile` (make test) a module runs whole in one worker, and one of them
# started last would leave the other workers idle until it ends.
LONG_MODULES = (
    "test_benchmark",
    "test_demo",
    "test_resume_kill",
    "test_training",
    "test_distributed",
    "test_config_ranges",
    "test_cal",
    "test_transfer",
)


def pytest_collection_modifyitems(items):
    first = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: first.get(item.module.__name__, len(first)))
