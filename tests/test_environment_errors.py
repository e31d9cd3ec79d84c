"""Errors of the machine, not of the config, through a real tools/train_net.py run: the disk
filling at the write of model_best.pth (as the kernel reports it, errno 28, and as
torch.save's zip writer does, a RuntimeError; tests/fail_write.py makes it happen at that
exact write), an OUTPUT_DIR that cannot be written, a dataset gone mid-run and a read-only
folder (lastreid.interruptions' advice). Each ends in one line naming the file and what to do, exit status 1, no traceback, nothing lost: every checkpoint left loads, no
temporary file stays, and `--resume` afterwards finishes. Also: model_best.pth holds the
weights and scalars only (no second copy of the optimizer state), and the loader every tool
uses (lastreid.modeling.load_weights) and the final test read it.
"""

import json
import os
import subprocess
import sys

from lastreid.atomic import TEMP_FILE
from lastreid.checkpoint import load_checkpoint_file
from lastreid.engine import Trainer
from lastreid.modeling import load_weights
from lastreid.startup import build_cfg

import pytest
import torch
from conftest import FAST_CPU_OPTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50_synthetic.yml")
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
FAIL_WRITE = os.path.join(REPO, "tests", "fail_write.py")
# The tiny synthetic LaST: batches of 8, 3 steps an epoch, two epochs, each checkpointed and
# evaluated, float32.
OPTS = FAST_CPU_OPTS + [
    "SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_ITERS", "0",
    "MODEL.CPU_BF16", "off", "MODEL.CHANNELS_LAST", "off",
]  # fmt: skip


def train(output, env, fail=None, resume=False):
    """tools/train_net.py on OPTS into `output` (through tests/fail_write.py when `fail` is
    (file name, how)); returns the CompletedProcess."""
    args = [TRAIN_NET, "--config-file", CONFIG] + (["--resume"] if resume else [])
    args += OPTS + ["OUTPUT_DIR", str(output)]
    if fail:
        args = [FAIL_WRITE, *fail] + args
    return subprocess.run(
        [sys.executable] + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


def one_line_failure(proc):
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def temp_files(folder):
    return [name for name in os.listdir(folder) if TEMP_FILE.match(name)]


@pytest.fixture(scope="module")
def disk_full_runs(module_tmp, synthetic_root):
    """One run, stopped by a full disk at its first model_best.pth (errno 28), then resumed
    with `--resume` to its end. Each process's result and what the folder held after it."""
    output = module_tmp.mktemp("disk_full") / "run"
    env = dict(os.environ, FASTREID_DATASETS=str(synthetic_root), PYTHONUNBUFFERED="1")
    runs = {}
    for name, fail, resume in (
        ("enospc", ("model_best.pth", "enospc"), False),
        ("resumed", None, True),
    ):
        proc = train(output, env, fail, resume)
        runs[name] = (proc, sorted(os.listdir(output)))
    return output, runs


def test_a_full_disk_is_one_line_naming_the_file_and_what_to_do(disk_full_runs):
    output, runs = disk_full_runs
    proc, files = runs["enospc"]
    last = one_line_failure(proc)
    best, kept = output / "model_best.pth", output / "model_0000.pth"
    assert last == (
        f"train_net.py: error: cannot write {best}: no space left on device (errno 28); "
        f"nothing is lost: the last complete checkpoint is {kept}; free space on that disk, "
        "then run the same command with --resume"
    ), last
    assert "model_best.pth" not in files and not [f for f in files if TEMP_FILE.match(f)]
    assert "model_0000.pth" in files and "model_final.pth" not in files


def test_a_disk_filling_inside_torch_save_is_a_storage_error(tmp_path, monkeypatch):
    """torch.save's zip writer reports a short write as a RuntimeError without an errno
    (tests/fail_write.py's `torch`): the write is a StorageError naming the file, the old
    file stays whole, no temporary file stays."""
    from fail_write import TORCH_SHORT_WRITE
    from lastreid.atomic import save_atomic
    from lastreid.errors import StorageError

    path = tmp_path / "model_best.pth"
    save_atomic({"model": {"w": torch.ones(3)}}, path)

    def short_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04" + bytes(1024))
        raise RuntimeError(TORCH_SHORT_WRITE)

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(StorageError) as caught:
        save_atomic({"model": {"w": torch.zeros(3)}}, path)
    assert str(caught.value) == (
        f"cannot write {path}: torch.save wrote less than it had (a full disk): "
        f"{TORCH_SHORT_WRITE}"
    )
    monkeypatch.undo()
    assert torch.equal(load_checkpoint_file(str(path))["model"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["model_best.pth"]


def test_after_a_full_disk_every_checkpoint_loads_and_resume_finishes(disk_full_runs):
    output, runs = disk_full_runs
    proc, files = runs["resumed"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"model_0000.pth", "model_final.pth", "model_best.pth", "results.json"} <= set(files)
    assert not temp_files(output)
    for name in ("model_0000.pth", "model_final.pth", "model_best.pth"):
        data = load_checkpoint_file(str(output / name))  # weights-only
        assert isinstance(data["model"], dict) and data["model"], name
    with open(output / "results.json") as f:
        results = json.load(f)
    assert results["final_test"]["checkpoint"] == "model_best.pth"


def test_model_best_holds_the_weights_only_and_every_tool_loads_it(disk_full_runs):
    output, _ = disk_full_runs
    best = load_checkpoint_file(str(output / "model_best.pth"))
    name = "model_final.pth" if best["epoch"] == 1 else f"model_{best['epoch']:04d}.pth"
    source = load_checkpoint_file(str(output / name))
    assert {"model", "epoch", "metric", "best_metric", "best_epoch"} <= set(best)
    assert all(isinstance(v, (int, float)) for k, v in best.items() if k != "model")
    assert {"optimizer", "random_states", "metric_history"} <= set(source) - set(best)
    for key, value in source["model"].items():
        assert torch.equal(best["model"][key], value), key
    # Its size is the weights' (torch.save's framing adds a little), the checkpoint's is
    # larger by the optimizer's state.
    weights = sum(t.numel() * t.element_size() for t in best["model"].values())
    size = os.path.getsize(output / "model_best.pth")
    assert weights <= size < weights * 1.05, (size, weights)
    assert os.path.getsize(output / name) > 2 * weights  # Adam's two moments
    # --eval-only, extract_features, visualize_ranks, export_onnx and the transfer sources
    # all load MODEL.WEIGHTS with load_weights.
    cfg = build_cfg(CONFIG, OPTS + ["MODEL.WEIGHTS", str(output / "model_best.pth")])
    model = Trainer.build_model(cfg)
    report = load_weights(cfg, model, cfg.MODEL.WEIGHTS)
    assert not report.missing, report.summary()
    state = model.state_dict()
    for key in report.loaded:
        assert torch.equal(state[key], best["model"][key]), key


def test_an_output_dir_that_cannot_be_written_is_one_line_before_anything(
    module_tmp, synthetic_root
):
    """OUTPUT_DIR under a file (a folder cannot be made there, whoever runs the test: root
    writes into read-only folders)."""
    tmp = module_tmp.mktemp("unwritable")
    (tmp / "a_file").write_text("")
    env = dict(os.environ, FASTREID_DATASETS=str(synthetic_root))
    proc = train(tmp / "a_file" / "run", env)
    last = one_line_failure(proc)
    assert last == (
        f"train_net.py: error: OUTPUT_DIR {tmp / 'a_file' / 'run'}: {tmp / 'a_file'} is a "
        "file, not a folder: choose another OUTPUT_DIR"
    ), last
    assert sorted(os.listdir(tmp)) == ["a_file"]


def _explained(output_dir, error):
    from lastreid.errors import StorageError
    from lastreid.interruptions import explained_interruptions

    with pytest.raises(StorageError) as caught:
        with explained_interruptions(str(output_dir)):
            raise error
    return str(caught.value)


def test_a_dataset_gone_mid_run_and_a_read_only_folder_say_what_to_do(tmp_path):
    """The advice of explained_interruptions (what train_net.py wraps its run in) for a
    training image whose folder vanished and for a write the file system refuses, with and
    without a complete checkpoint in OUTPUT_DIR."""
    import errno

    from lastreid.atomic import save_atomic, write_text_atomic
    from lastreid.images import BadImageError, load_image

    gone = tmp_path / "datasets" / "last" / "train" / "0001" / "a.jpg"
    with pytest.raises(BadImageError) as caught:
        load_image(str(gone))
    assert _explained(tmp_path, caught.value) == (
        f"cannot read {gone}: FileNotFoundError: No such file or directory: the dataset "
        "changed during the run; no checkpoint was written yet: put the dataset back, then "
        "run the same command again"
    )
    save_atomic({"model": {}}, tmp_path / "model_0004.pth")
    write_text_atomic("model_0004.pth", tmp_path / "last_checkpoint")
    refused = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "metrics.json"))
    assert _explained(tmp_path, refused) == (
        f"cannot write {tmp_path / 'metrics.json'}: read-only file system (errno 30); nothing "
        f"is lost: the last complete checkpoint is {tmp_path / 'model_0004.pth'}; make "
        "OUTPUT_DIR writable, then run the same command with --resume"
    )
    # Any other error passes unchanged.
    from lastreid.interruptions import explained_interruptions

    with pytest.raises(ZeroDivisionError):
        with explained_interruptions(str(tmp_path)):
            1 / 0
