"""A CPU training run killed with SIGKILL at exact moments (each reached through
tests/stop_at.py, whatever the machine's speed) and resumed with --resume each time ends as
the same run uninterrupted, bit for bit (final weights, every number of metrics.json): with
no loader workers at every moment (a checkpoint's rename, the config.yaml write, an
evaluation, a training step, the final checkpoint's rename, the final test), with 2 loader
workers in a training step; also every epoch trained, loadable final and best checkpoints,
the best metric the maximum of the history. The runs are the session's BoT recipe
(conftest.BOT_DEFAULT_OPTS) in batches of 16 on the tiny synthetic LaST with 8 images per
training person (conftest.all_datasets_root: 3 steps per epoch): every process of a phase
starts, loads, trains and evaluates, and a bigger set would only make each phase longer.
Plus fast unit tests of lastreid.resume."""

import json
import os
import select
import signal
import subprocess
import sys

from lastreid.checkpoint import Checkpointer, load_checkpoint_file
from lastreid.resume import ResumableCheckpointer, arrange_hooks, repair_metrics_history

import pytest
import torch
from conftest import BOT_CONFIG, BOT_DEFAULT_OPTS, BOT_EPOCHS, train_net_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS, BATCH = BOT_EPOCHS, 16
# The runs' recipe: 3 epochs of 3 steps (48 training images), so that every kill moment
# below has an epoch before and after it.
OPTS = BOT_DEFAULT_OPTS + ["SOLVER.IMS_PER_BATCH", str(BATCH)]


STOP_AT = os.path.join(REPO, "tests", "stop_at.py")
# Only a guard against a hung child: every kill is triggered by the child reaching its moment.
PHASE_TIMEOUT = 900


class Phase:
    """One process of the run, killed with SIGKILL when it reaches `moment` (a moment of
    tests/stop_at.py), or left to finish when `moment` is None."""

    def __init__(self, name, moment, resume=True):
        self.name, self.moment, self.resume = name, moment, resume


def run_phase(phase, output, env, workers=0):
    """Returns "killed at <moment>" once the child reached its moment and was killed there,
    else the child's exit code."""
    args = train_net_command(OPTS, output, phase.resume, workers)
    read_end, write_end = os.pipe()
    if phase.moment:
        args = [sys.executable, STOP_AT, phase.moment] + args[1:]
    with open(output.parent / f"{phase.name}.out", "wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=dict(env, STOP_AT_FD=str(write_end)),
            pass_fds=(write_end,),
        )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as channel:
            ready, _, _ = select.select([channel], [], [], PHASE_TIMEOUT)
            assert ready, (
                f"{phase.name}: neither reached {phase.moment} nor ended in {PHASE_TIMEOUT} s"
            )
            line = channel.readline().strip()  # "" at EOF: the child ended without reaching it
        if line:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert line == f"reached {phase.moment}", line
            return f"killed at {phase.moment}"
        return proc.wait(timeout=PHASE_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]  # every line must be complete JSON


def last_checkpoint_epoch(output):
    """The epoch of the checkpoint last_checkpoint names (it must load), None before any."""
    pointer = output / "last_checkpoint"
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    return load_checkpoint_file(str(output / name))["epoch"]


# What metrics.json holds besides numbers of the run itself: how long things took.
TIMING_KEYS = {"time", "data_time", "eta_seconds"}


def model_weights(path):
    return load_checkpoint_file(str(path))["model"]


def metric_numbers(output):
    """metrics.json's lines without the timings: every loss, learning rate and metric."""
    return [
        {k: v for k, v in line.items() if k not in TIMING_KEYS}
        for line in read_lines(output / "metrics.json")
    ]


@pytest.fixture(scope="module")
def uninterrupted(all_datasets_root, module_tmp):
    """The runs the killed ones must end as, never killed, with no loader workers and with
    2."""
    env = dict(os.environ, FASTREID_DATASETS=str(all_datasets_root), PYTHONUNBUFFERED="1")
    outputs = {}
    for workers in (0, 2):
        name = f"uninterrupted_{workers}"
        outputs[workers] = module_tmp.mktemp(name) / "run"
        result = run_phase(Phase(name, None, False), outputs[workers], env, workers)
        log = (outputs[workers].parent / f"{name}.out").read_text(errors="replace")
        assert result == 0, log[-3000:]
    return outputs


def test_the_loader_workers_do_not_change_a_run(uninterrupted):
    """Each training image draws its augmentation from its own seed (lastreid.randomness):
    the main process or any of 2 workers decoding it makes no difference."""
    zero, two = (model_weights(uninterrupted[w] / "model_final.pth") for w in (0, 2))
    assert zero.keys() == two.keys() and all(torch.equal(zero[k], two[k]) for k in zero)
    assert metric_numbers(uninterrupted[0]) == metric_numbers(uninterrupted[2])


def kill_phases(workers, iters_per_epoch):
    """With no loader workers, a kill at each moment where a run can be caught (each
    resumed from the last); with 2, one kill in a training step (the workers' prefetched
    batches are lost) and the resume that finishes the run."""
    if workers:  # step:N counts the steps of one process: mid epoch 1, epoch 0 checkpointed
        moment = f"step:{iters_per_epoch + iters_per_epoch // 2 + 1}"
        return [Phase("training_step", moment, resume=False), Phase("finish", None)]
    # resumed after epoch 1's evaluation was killed: a step in the middle of epoch 1
    mid_epoch = Phase("training_step", f"step:{iters_per_epoch // 2 + 1}")
    return [
        # epoch 0's periodic checkpoint is complete, its copy to model_best.pth is not
        Phase("best_copy", "rename:model_best.pth", resume=False),
        # the start of the next process: config.yaml is being replaced
        Phase("config_write", "rename:config.yaml"),
        Phase("evaluation", "inference:1"),  # epoch 1's LaSTVal evaluation
        mid_epoch,
        Phase("final_write", "rename:model_final.pth"),
        Phase("final_test", "final_test"),
        Phase("finish", None),
    ]


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_run_resumes_to_the_same_end(all_datasets_root, tmp_path, workers, uninterrupted):
    from lastreid.datasets import build_dataset

    output = tmp_path / "run"
    env = dict(os.environ, FASTREID_DATASETS=str(all_datasets_root), PYTHONUNBUFFERED="1")
    iters_per_epoch = len(build_dataset("LaST", root=str(all_datasets_root)).train) // BATCH
    assert iters_per_epoch == 3  # OPTS' comment
    phases = kill_phases(workers, iters_per_epoch)
    best_seen = []
    for phase in phases:
        config_before = (
            (output / "config.yaml").read_bytes() if phase.name == "config_write" else None
        )
        result = run_phase(phase, output, env, workers)
        tail = (tmp_path / f"{phase.name}.out").read_text(errors="replace")[-3000:]
        if phase.moment is None:
            assert result == 0, f"{phase.name} failed:\n{tail}"
        else:
            assert result == f"killed at {phase.moment}", f"{phase.name} ended ({result}):\n{tail}"
        if config_before is not None:  # the old config.yaml whole, the new one only in a temp file
            assert (output / "config.yaml").read_bytes() == config_before
            assert [n for n in os.listdir(output) if n.startswith(".config.yaml.tmp.")]
        epoch = last_checkpoint_epoch(output)  # the pointer always names a complete file
        assert epoch is None or 0 <= epoch < EPOCHS, (phase.name, epoch)
        if (output / "model_best.pth").exists():
            best = load_checkpoint_file(str(output / "model_best.pth"))
            best_seen.append(best["metric"])

    # The same end as the uninterrupted run, bit for bit: the final weights and every
    # number in metrics.json (each training line, evaluation and the final test).
    ended, reference = (
        model_weights(output / "model_final.pth"),
        model_weights(uninterrupted[workers] / "model_final.pth"),
    )
    assert ended.keys() == reference.keys()
    assert [k for k in ended if not torch.equal(ended[k], reference[k])] == []
    assert metric_numbers(output) == metric_numbers(uninterrupted[workers])

    assert (output / "last_checkpoint").read_text().strip() == "model_final.pth"
    final = load_checkpoint_file(str(output / "model_final.pth"))
    best = load_checkpoint_file(str(output / "model_best.pth"))
    assert final["epoch"] == EPOCHS - 1
    assert not [n for n in os.listdir(output) if ".tmp." in n]

    max_iter = EPOCHS * iters_per_epoch
    lines = read_lines(output / "metrics.json")
    evals = [m for m in lines if "metric" in m]
    assert [m["iteration"] for m in evals] == [(e + 1) * iters_per_epoch - 1 for e in range(EPOCHS)]
    train_iters = [m["iteration"] for m in lines if "total_loss" in m]
    assert train_iters == sorted(set(train_iters)), "training lines duplicated or out of order"
    expected = {(e + 1) * iters_per_epoch - 1 for e in range(EPOCHS)}
    expected |= {i - 1 for i in range(200, max_iter, 200)}  # PeriodicWriter's period
    assert set(train_iters) == expected and max(train_iters) == max_iter - 1

    metrics = [m["metric"] for m in evals]
    assert best["metric"] == pytest.approx(max(metrics))
    assert best["epoch"] == metrics.index(max(metrics))
    assert final["best_metric"] == pytest.approx(max(metrics))
    # model_best.pth was only ever replaced by a better one.
    assert best_seen == sorted(best_seen)


# Unit tests: metrics history repair, best metric across resumes ---------------------------


def test_metrics_history_drops_redone_iterations_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.json"
    lines = [json.dumps({"iteration": i, "total_loss": 1.0}) for i in (9, 19, 29)]
    path.write_text("\n".join(lines) + "\n" + '{"iteration": 39, "tot')
    inode = path.stat().st_ino
    assert repair_metrics_history(str(path), start_iter=20) == 2
    assert path.read_text() == "\n".join(lines[:2]) + "\n"
    assert path.stat().st_ino != inode  # replaced, not rewritten in place
    assert repair_metrics_history(str(path), start_iter=20) == 0  # nothing more to do
    assert repair_metrics_history(str(path), start_iter=0) == 2 and path.read_text() == ""
    assert repair_metrics_history(str(tmp_path / "absent.json"), 0) == 0


def test_metrics_history_keeps_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 9}\n{"iteration": 19}')
    assert repair_metrics_history(str(path), start_iter=20) == 0
    assert [m["iteration"] for m in read_lines(path)] == [9, 19]


class _Trainer:
    epoch = 0


def _checkpoint_hook(folder, period=1, max_epoch=10, keep_last=0):
    model = torch.nn.Linear(2, 2)
    hook = ResumableCheckpointer(Checkpointer(model, str(folder)), period, max_epoch, keep_last)
    return hook


def _best(folder):
    data = load_checkpoint_file(str(folder / "model_best.pth"))
    return data["epoch"], data["metric"]


def test_best_metric_survives_a_resume(tmp_path):
    hook = _checkpoint_hook(tmp_path)
    hook.step(0, metric=50.0)
    hook.step(1, metric=40.0)
    assert _best(tmp_path) == (0, 50.0)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0001.pth"  # not model_best

    resumed = _checkpoint_hook(tmp_path)
    resumed.restore(
        load_checkpoint_file(str(tmp_path / "model_0001.pth")), str(tmp_path / "model_0001.pth")
    )
    assert (resumed.best_metric, resumed.best_epoch) == (50.0, 0)
    before = (tmp_path / "model_best.pth").stat().st_ino  # every save is a new file (rename)
    resumed.step(2, metric=45.0)  # fastreid's hook (best -1 after a resume) would overwrite
    assert _best(tmp_path) == (0, 50.0)
    assert (tmp_path / "model_best.pth").stat().st_ino == before
    resumed.step(3, metric=55.0)
    assert _best(tmp_path) == (3, 55.0)
    assert load_checkpoint_file(str(tmp_path / "model_0003.pth"))["best_epoch"] == 3


def test_kill_between_checkpoint_and_best_copy_is_repaired(tmp_path):
    hook = _checkpoint_hook(tmp_path)
    hook.step(0, metric=50.0)
    hook.step(1, metric=60.0)
    # As if killed after model_0001.pth and the pointer, before the copy: best is epoch 0.
    hook.checkpointer.save("model_best", epoch=0, metric=50.0)
    hook.checkpointer.tag_last_checkpoint("model_0001.pth")
    resumed = _checkpoint_hook(tmp_path)
    resumed.restore(
        load_checkpoint_file(str(tmp_path / "model_0001.pth")), str(tmp_path / "model_0001.pth")
    )
    assert _best(tmp_path) == (1, 60.0)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0001.pth"


def _checkpoint_files(folder):
    return {p.name for p in folder.glob("model_*.pth")}


def test_keep_last_checkpoints_removes_the_older_periodic_ones(tmp_path):
    (tmp_path / "model_0011.pth").write_bytes(b"from an earlier, longer run")
    hook = _checkpoint_hook(tmp_path, period=2, max_epoch=10, keep_last=2)
    for epoch, metric in enumerate([-1, 11.0, -1, 50.0, -1, 14.0]):
        hook.step(epoch, metric=metric)  # checkpoints at epochs 1, 3, 5; the best at 3
    kept = {"model_0003.pth", "model_0005.pth", "model_best.pth", "model_0011.pth"}
    assert _checkpoint_files(tmp_path) == kept
    assert _best(tmp_path) == (3, 50.0)

    resumed = _checkpoint_hook(tmp_path, period=2, max_epoch=10, keep_last=2)
    last = str(tmp_path / (tmp_path / "last_checkpoint").read_text())
    resumed.restore(load_checkpoint_file(last), last)
    resumed.step(6, metric=15.0)
    resumed.step(7, metric=16.0)
    kept = {"model_0005.pth", "model_0007.pth", "model_best.pth", "model_0011.pth"}
    assert _checkpoint_files(tmp_path) == kept
    assert _best(tmp_path) == (3, 50.0)  # a copy: it outlives model_0003.pth


def test_keep_last_checkpoints_zero_keeps_them_all(tmp_path):
    hook = _checkpoint_hook(tmp_path, max_epoch=4)
    for epoch in range(4):
        hook.step(epoch, metric=float(epoch))
    names = {"model_0000.pth", "model_0001.pth", "model_0002.pth", "model_final.pth"}
    assert _checkpoint_files(tmp_path) == names | {"model_best.pth"}


def test_keep_last_checkpoints_must_not_be_negative():
    from lastreid.errors import ConfigError
    from lastreid.startup import build_cfg

    with pytest.raises(ConfigError, match=r"^SOLVER.KEEP_LAST_CHECKPOINTS is -1: expected .* >= 0"):
        build_cfg(
            BOT_CONFIG, ["MODEL.BACKBONE.PRETRAIN", "False", "SOLVER.KEEP_LAST_CHECKPOINTS", "-1"]
        )


def test_metric_of_an_earlier_evaluation_does_not_count(tmp_path):
    from fastreid.utils.events import EventStorage

    hook = _checkpoint_hook(tmp_path)
    hook.trainer, hook.metric_name = _Trainer(), "metric"
    with EventStorage(0) as storage:
        storage.iter = 9
        storage.put_scalar("metric", 50.0, smoothing_hint=False)
        hook.after_epoch()
        storage.iter, hook.trainer.epoch = 19, 1
        hook.after_epoch()  # not evaluated this epoch: metric -1, not 50 again
    assert load_checkpoint_file(str(tmp_path / "model_0001.pth"))["metric"] == -1
    assert _best(tmp_path) == (0, 50.0)


def test_hooks_write_metrics_before_checkpointing():
    from fastreid.engine import hooks
    from fastreid.utils.checkpoint import Checkpointer as FastreidCheckpointer

    stock = [
        hooks.IterationTimer(),
        hooks.EvalHook(1, lambda: {}),
        hooks.PeriodicCheckpointer(FastreidCheckpointer(torch.nn.Linear(1, 1)), 1),
        hooks.PeriodicWriter([], 20),
    ]
    kinds = [type(h).__name__ for h in arrange_hooks(stock)]
    assert kinds == [
        "IterationTimer",
        "EvalHook",
        "RandomStatesHook",  # the generator states the checkpoint keeps
        "PeriodicWriter",
        "ResumableCheckpointer",
    ]
    # Another process has no writers and no checkpoint hook, but gathers the states too.
    kinds = [type(h).__name__ for h in arrange_hooks(stock[:2])]
    assert kinds == ["IterationTimer", "EvalHook", "RandomStatesHook"]
