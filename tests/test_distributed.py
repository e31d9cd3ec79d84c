"""Two processes under torchrun on the CPU (gloo), on the tiny synthetic trees: evaluation and
feature extraction give the one-process numbers, a short training run shards its batches
and writes each file once from the main process, a SIGKILL of one rank ends the job and
--resume finishes it. Plus unit tests of lastreid.launch's checks."""

import collections
import json
import os
import subprocess
import sys
from types import SimpleNamespace

from lastreid import launch
from lastreid.checkpoint import load_checkpoint_file
from lastreid.engine import evaluate_weights
from lastreid.features import load_features, process_share
from lastreid.randomness import TrainBatches
from lastreid.run_results import read_run_results
from lastreid.startup import build_cfg

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml")
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
WRAPPER = os.path.join(REPO, "tests", "dist_train.py")
# A hang guard only (a healthy run takes seconds): a job that outlives it fails the test.
TIMEOUT_S = 300
# The tiny LaST train split: 24 images of 6 identities. Batches of 8 = 2 processes x
# (2 identities x 2 images): 3 steps per epoch.
EPOCHS, BATCH, INSTANCES, TRAIN_IMAGES = 2, 8, 2, 24
ITERS = TRAIN_IMAGES // BATCH


def fast_opts(*extra):
    from conftest import FAST_CPU_OPTS, FP32_OPTS

    return FAST_CPU_OPTS + FP32_OPTS + ["TEST.IMS_PER_BATCH", "4"] + list(extra)


def torchrun(args, synthetic_root, nproc=2):
    """Runs `args` (a script and its arguments) as one torchrun job; returns the completed
    process (stdout and stderr together)."""
    env = dict(os.environ, FASTREID_DATASETS=str(synthetic_root), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
    ] + args
    return subprocess.run(
        cmd,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def weights(module_tmp):
    """A random ResNet-18 BoT at 64x32 with perturbed BatchNorm statistics (eval mode is
    not the identity), saved as a fastreid checkpoint."""
    from conftest import write_random_bot

    return write_random_bot(CONFIG, fast_opts(), module_tmp.mktemp("dist_weights") / "model.pth")


EXTRACT_FEATURES = os.path.join(REPO, "tools", "extract_features.py")


def eval_opts(weights):
    return fast_opts("MODEL.WEIGHTS", weights, "DATASETS.TESTS", '("LaST", "LaSTVal")')


def features_args(weights, synthetic_root):
    # fmt: off
    return [
        "--config-file", CONFIG, "--weights", weights, "--dataset", "LaST",
        "--root", str(synthetic_root),
    ]
    # fmt: on


def two_process_tools(weights, synthetic_root, folder):
    """The command lines (tests/dist_tools.py) that evaluate `weights` (train_net.py
    --eval-only) and then extract the LaST features (extract_features.py) in a job of 2
    processes, writing under `folder`; and where."""
    evaluation = ["--config-file", CONFIG, "--eval-only"] + eval_opts(weights)
    evaluation += ["TEST.IMS_PER_BATCH", "2", "OUTPUT_DIR", str(folder / "eval")]
    features = features_args(weights, synthetic_root) + ["-o", str(folder / "two.npz")]
    commands = [TRAIN_NET] + evaluation + ["--then", EXTRACT_FEATURES] + features + fast_opts()
    return commands, SimpleNamespace(eval=folder / "eval", features=folder / "two.npz")


def test_two_process_evaluation_gives_the_one_process_metrics(
    weights, synthetic_root, killed_and_resumed, monkeypatch
):
    # LaST test: 19 items, uneven shares (10 + 9). Every forward is of one image in both
    # runs (TEST.IMS_PER_BATCH is split over the processes), so the features, and so the
    # metrics, are equal by construction on any BLAS: batches of other sizes may round
    # differently.
    opts = eval_opts(weights) + ["TEST.IMS_PER_BATCH", "1"]
    monkeypatch.setenv("FASTREID_DATASETS", str(synthetic_root))
    one = evaluate_weights(build_cfg(CONFIG, opts, eval_only=True))
    assert killed_and_resumed.resumed.returncode == 0, killed_and_resumed.resumed.stdout[-3000:]
    two = read_run_results(str(killed_and_resumed.tools.eval))["evaluation"]["datasets"]
    for name in ("LaST", "LaSTVal"):
        assert two[name] == {k: v for k, v in one[name].items() if k != "dataset"}, name
    assert two["LaST"]["mAP"] > 0


def test_two_process_features_are_the_one_process_features(
    weights, synthetic_root, killed_and_resumed, tmp_path
):
    run = killed_and_resumed
    assert run.resumed.returncode == 0, run.resumed.stdout[-3000:]
    wrote = [line for line in run.resumed.stdout.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == 1 and str(run.tools.features) in wrote[0]  # the main process alone
    from conftest import load_tool

    args = features_args(weights, synthetic_root) + ["-o", str(tmp_path / "one.npz")]
    assert load_tool("extract_features").main(args + fast_opts()) == 0
    one = load_features(str(tmp_path / "one.npz"))
    two = load_features(str(run.tools.features))
    for key in ("paths", "pids", "camids"):
        assert list(two[key]) == list(one[key]), key  # dataset order
    assert two["num_query"] == one["num_query"] == 4
    np.testing.assert_allclose(two["features"], one["features"], rtol=1e-5, atol=1e-6)


def train_args(output, *extra):
    # fmt: off
    return (
        ["--config-file", CONFIG]
        + list(extra)
        + fast_opts(
            "SOLVER.IMS_PER_BATCH", str(BATCH),
            "DATALOADER.NUM_INSTANCE", str(INSTANCES),
            "SOLVER.WARMUP_ITERS", "2",
            "SOLVER.MAX_EPOCH", str(EPOCHS),
            "OUTPUT_DIR", str(output),
        )
    )
    # fmt: on


def read_records(folder, rank):
    """(training steps, files written, sampler seeds) recorded by one rank."""
    path = os.path.join(folder, f"rank{rank}.jsonl")
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    return (
        [r for r in lines if "iteration" in r],
        [r["wrote"] for r in lines if "wrote" in r],
        [r["seed"] for r in lines if "seed" in r],
    )


def expected_shares(seed, first, steps, monkeypatch, root):
    """The image paths fastreid's NaiveIdentitySampler gives each of 2 processes in steps
    `first` .. `first + steps - 1`, built here in one process: the global batches of seed
    `seed`, split by rank."""
    from lastreid.datasets import build_dataset

    from fastreid.data.samplers import NaiveIdentitySampler
    from fastreid.utils import comm

    items = build_dataset("LaST", root=str(root)).train
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        sampler = NaiveIdentitySampler(items, BATCH // 2, INSTANCES, seed=seed)
        monkeypatch.undo()
        stream = iter(sampler)
        drawn = [[items[next(stream)][0] for _ in range(BATCH // 2)] for _ in range(first + steps)]
        shares.append(drawn[first:])
    return shares


def evaluated_iterations(output):
    with open(os.path.join(output, "metrics.json")) as f:
        return [m["iteration"] for m in map(json.loads, f) if "metric" in m]


@pytest.fixture(scope="module")
def killed_and_resumed(synthetic_root, module_tmp, weights):
    """A 2-process training run of EPOCHS epochs through tests/dist_train.py whose rank 1
    sends itself SIGKILL in the middle step of the second epoch, then the same command
    with --resume (each phase records into its own folder). The resumed job first runs
    `two_process_tools` (its start-up shared)."""
    base = module_tmp.mktemp("dist_train")
    tools, tool_outputs = two_process_tools(weights, synthetic_root, base)
    output, phases = base / "run", [base / "killed", base / "resumed"]
    for folder in phases:
        folder.mkdir()
    kill_at = ITERS + 1
    killed = torchrun(
        [WRAPPER, str(phases[0]), "1", str(kill_at), "--"] + train_args(output), synthetic_root
    )
    after_kill = dict(files=set(os.listdir(output)), last=(output / "last_checkpoint").read_text())
    resumed = torchrun(
        [WRAPPER, str(phases[1]), "--before"] + tools + ["--"] + train_args(output, "--resume"),
        synthetic_root,
    )
    return SimpleNamespace(
        output=output,
        killed=killed,
        resumed=resumed,
        kill_at=kill_at,
        after_kill=after_kill,
        tools=tool_outputs,
        phases=[[read_records(f, r) for r in (0, 1)] for f in phases],
    )


def test_sigkill_of_one_rank_ends_the_job_and_resume_finishes_it(killed_and_resumed):
    run = killed_and_resumed
    assert run.killed.returncode != 0  # within TIMEOUT_S: torchrun stopped the other rank
    assert "Signal 9 (SIGKILL)" in run.killed.stdout  # torchrun's report of the root cause
    assert "model_final.pth" not in run.after_kill["files"]
    assert run.after_kill["last"].strip() == "model_0000.pth"
    assert run.resumed.returncode == 0, run.resumed.stdout[-3000:]
    assert "Starting training from epoch 1" in run.resumed.stdout
    killed_steps = [s["iteration"] for s in run.phases[0][0][0]]
    resumed_steps = [s["iteration"] for s in run.phases[1][0][0]]
    assert killed_steps == list(range(run.kill_at))  # rank 0 never finished the killed step
    assert resumed_steps == list(range(ITERS, EPOCHS * ITERS))  # the second epoch, again
    assert load_checkpoint_file(str(run.output / "model_final.pth"))["epoch"] == EPOCHS - 1
    assert evaluated_iterations(run.output) == [ITERS - 1, EPOCHS * ITERS - 1]  # each epoch once
    assert "mAP" in read_run_results(str(run.output))["evaluation"]["datasets"]["LaSTVal"]


def test_each_process_trains_on_its_share_of_every_batch(
    killed_and_resumed, synthetic_root, monkeypatch
):
    seeds = []
    for phase in killed_and_resumed.phases:
        (steps0, _, seed0), (steps1, _, seed1) = phase
        assert seed0 == seed1 and len(seed0) == 1  # comm.shared_random_seed() everywhere
        seeds += seed0
        steps1 = steps1[: len(steps0)]  # rank 0 did not finish the step rank 1 was killed in
        assert [s["iteration"] for s in steps0] == [s["iteration"] for s in steps1]
        first = steps0[0]["iteration"]  # the resumed run continues after the batches trained
        expected = expected_shares(seed0[0], first, len(steps0), monkeypatch, synthetic_root)
        assert [s["paths"] for s in steps0] == expected[0]
        assert [s["paths"] for s in steps1] == expected[1]
        for a, b in zip(steps0, steps1):
            for step in (a, b):  # BATCH / 2 images: 2 identities x INSTANCES images each
                assert sorted(collections.Counter(step["pids"]).values()) == [INSTANCES] * 2
            assert a["weights"] == b["weights"]  # DDP: the same gradient step everywhere
    assert seeds[0] == seeds[1]  # the resumed run continues the killed run's sampler stream
    # Epoch 0 trained before the kill, epoch 1 after the resume: each on all its images.
    for epoch, phase in enumerate(killed_and_resumed.phases):
        steps = [s for rank in phase for s in rank[0] if s["iteration"] // ITERS == epoch]
        assert sum(len(s["paths"]) for s in steps) == ITERS * BATCH == TRAIN_IMAGES


def test_only_the_main_process_writes_and_each_file_once(killed_and_resumed):
    run = killed_and_resumed
    assert [wrote for phase in run.phases for wrote in phase[1][1]] == []  # rank 1
    counts = collections.Counter(w for phase in run.phases for w in phase[0][1])
    assert counts["model_0000.pth"] == counts["model_final.pth"] == counts["results.json"] == 1
    assert 1 <= counts["model_best.pth"] <= EPOCHS
    # Twice a launch, by the main process: at the start, then with the number of classes
    # filled in (Trainer.auto_scale_hyperparams).
    assert counts["config.yaml"] == 2 * len(run.phases)
    assert set(counts) == {
        "model_0000.pth",
        "model_final.pth",
        "model_best.pth",
        "last_checkpoint",
        "results.json",
        "config.yaml",
    }
    files = os.listdir(run.output)
    assert len([f for f in files if f.startswith("events.out.tfevents")]) == 2  # one a phase
    assert [f for f in files if "rank" in f] == ["log.txt.rank1"]
    with open(run.output / "log.txt") as f:
        log = f.read()
    assert log.count("World size: 2") == 2  # once a phase
    assert log.count("Per-process batch: 4 images (SOLVER.IMS_PER_BATCH 8 over 2 processes)") == 2


# Unit tests of the launch checks -------------------------------------------------------


def cfg_with(*opts):
    return build_cfg(
        CONFIG, ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu"] + list(opts)
    )


def test_batch_split_errors_name_the_keys():
    assert launch.check_batch_split(cfg_with("SOLVER.IMS_PER_BATCH", "64"), 2) == 32
    with pytest.raises(ValueError, match=r"^SOLVER.IMS_PER_BATCH 63 does not split over 2 "):
        launch.check_batch_split(cfg_with("SOLVER.IMS_PER_BATCH", "63"), 2)
    with pytest.raises(
        ValueError,
        match=r"^DATALOADER.NUM_INSTANCE 4 does not divide the "
        r"per-process batch 6 .*multiple of 8$",
    ):
        launch.check_batch_split(cfg_with("SOLVER.IMS_PER_BATCH", "12"), 2)
    # TrainingSampler has no identities to keep together.
    cfg = cfg_with("SOLVER.IMS_PER_BATCH", "12", "DATALOADER.SAMPLER_TRAIN", "TrainingSampler")
    assert launch.check_batch_split(cfg, 2) == 6


@pytest.mark.parametrize("sampler", ("NaiveIdentitySampler", "BalancedIdentitySampler"))
@pytest.mark.parametrize("world", (1, 2))
def test_identity_bound_is_what_fastreids_samplers_need(monkeypatch, sampler, world):
    """At the bound, fastreid's sampler gives a whole global batch (below it, it would
    spin forever, so that side is only checked to raise)."""
    from fastreid.data import samplers
    from fastreid.utils import comm

    cfg = cfg_with("SOLVER.IMS_PER_BATCH", "24", "DATALOADER.SAMPLER_TRAIN", sampler)
    need = 24 // 4  # identities a step, over all processes
    items = [(f"{pid}_{i}.jpg", pid, i % 2) for pid in range(need) for i in range(3)]
    launch.check_identities_per_batch(cfg, need, ("X",), world)
    monkeypatch.setattr(comm, "get_world_size", lambda: world)
    monkeypatch.setattr(comm, "get_rank", lambda: 0)
    stream = iter(getattr(samplers, sampler)(items, 24 // world, 4, seed=0))
    first = [next(stream) for _ in range(24 // world)]  # rank 0's share of one batch
    assert len({items[i][1] for i in first}) == need // world
    largest = {1: 20, 2: 16}[world]  # 5 identities x 4, split evenly over the processes
    with pytest.raises(ValueError, match=rf"\(X\) has 5: use SOLVER.IMS_PER_BATCH {largest} or"):
        launch.check_identities_per_batch(cfg, need - 1, ("X",), world)


def test_several_cpu_processes_without_torchrun_point_to_torchrun(monkeypatch):
    for name in launch._TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    args = SimpleNamespace(num_gpus=2, num_machines=1)
    with pytest.raises(ValueError, match="on the CPU start them with torchrun"):
        launch.check_launch(args, cfg_with())
    launch.check_launch(SimpleNamespace(num_gpus=1, num_machines=1), cfg_with())
    env = {
        "RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1",
    }
    assert launch.under_torchrun(env) and launch.env_rank(env) == 1
    assert launch.expected_world_size(args, env) == 4
    assert launch.expected_world_size(args, {}) == 2


def test_shares_of_the_test_set_cover_it_in_order():
    for n in (0, 1, 5, 19, 20):
        for world in (1, 2, 3):
            shares = [process_share(n, rank, world) for rank in range(world)]
            assert [i for s in shares for i in s] == list(range(n))


def test_sampler_stream_ignores_other_numpy_draws():
    from fastreid.data.samplers import NaiveIdentitySampler

    items = [(f"{i}.jpg", i % 6, 0) for i in range(24)]

    def draws(disturb):
        stream = iter(TrainBatches(NaiveIdentitySampler(items, 4, 2, seed=3), 4))
        out = []
        for _ in range(10):
            out.append([index for index, _ in next(stream)])
            if disturb:
                np.random.random(out[-1][0] + 1)  # like a transform drawing per image
        return out

    # fastreid's sampler alone, undisturbed: the same batches.
    plain = iter(NaiveIdentitySampler(items, 4, 2, seed=3))
    assert draws(True) == draws(False) == [[next(plain) for _ in range(4)] for _ in range(10)]
