"""Training the rows of `--train`: a resumable run of each source's recipe under
`<output>/sources/<name>/` (and `<name>-paper/` for the paper's other selection, where it
has one), skipped once finished; a source that fails leaves its cells out."""

import os
import sys
import time

from .process import REPO, TRAIN_NET
from .results import finished_training

__all__ = ["pretrain_off", "source_recipe", "train_sources", "training_command"]


def source_recipe(matrix, source):
    """(config, overrides) of the run of a trained source: its recipe from the --imagenet
    file, the command's overrides, the run's own (which win), into its source folder."""
    config = source.train if os.path.isabs(source.train) else os.path.join(REPO, source.train)
    pretrain = ["MODEL.BACKBONE.PRETRAIN_PATH", matrix.imagenet] if matrix.imagenet else []
    opts = pretrain + list(matrix.opts) + list(source.train_opts)
    return config, opts + ["OUTPUT_DIR", matrix.source_dir(source)]


def training_command(config, opts, num_gpus=0):
    """The train_net.py command of a resumable training run (a finished one is evaluated
    again, a started one continues from its last checkpoint)."""
    gpus = ["--num-gpus", str(num_gpus)] if num_gpus else []
    return [sys.executable, TRAIN_NET, "--config-file", config, "--resume"] + gpus + list(opts)


def pretrain_off(opts):
    """True when `KEY VALUE` overrides say MODEL.BACKBONE.PRETRAIN False (no ImageNet file
    is then needed to train a source)."""
    pairs = dict(zip(opts[::2], opts[1::2]))
    return str(pairs.get("MODEL.BACKBONE.PRETRAIN", "")).lower() in ("false", "0", "off", "no")


def _title(source):
    return source.name + (" (the paper's selection)" if source.train_opts else "")


def _final_if_no_kept(matrix, counter, title, source, out):
    """A finished run whose kept file was never written (e.g. no evaluation, so no
    model_best.pth): its row uses the final model."""
    final = os.path.join(out, "model_final.pth")
    if finished_training(out) and not os.path.isfile(source.path):
        matrix.log(
            "[transfer] {} {}: no {}: its row uses {}".format(
                counter, title, os.path.basename(source.path), final
            )
        )
        source.path = final


def train_sources(matrix):
    """Trains (or resumes, or skips when finished) every run of `matrix.trained_runs()`."""
    trained = matrix.trained_runs()
    for i, source in enumerate(trained, 1):
        counter, title = "source {}/{}".format(i, len(trained)), _title(source)
        out = matrix.source_dir(source)
        _final_if_no_kept(matrix, counter, title, source, out)
        if finished_training(out):
            matrix.log(
                "[transfer] {} {}: trained before, skipped ({})".format(counter, title, source.path)
            )
            continue
        os.makedirs(out, exist_ok=True)
        cmd = training_command(*source_recipe(matrix, source), matrix.num_gpus)
        resuming = os.path.isfile(os.path.join(out, "last_checkpoint"))
        matrix.log(
            "[transfer] {} {}: {} (log {})".format(
                counter, title, "resuming" if resuming else "training", os.path.join(out, "log.txt")
            )
        )
        t0 = time.time()
        code = matrix._spawn(cmd, os.path.join(out, "stdout.txt"))
        if code == 0:
            _final_if_no_kept(matrix, counter, title, source, out)
        if code != 0 or not finished_training(out):
            source.error = "training the source failed (exit code {})".format(code)
            matrix.log(
                "[transfer] {} {}: FAILED after {:.0f} s; see {}".format(
                    counter, title, time.time() - t0, os.path.join(out, "stdout.txt")
                )
            )
            matrix._show_tail(os.path.join(out, "stdout.txt"))
            continue
        matrix.log(
            "[transfer] {} {}: trained in {:.0f} s ({})".format(
                counter, title, time.time() - t0, source.path
            )
        )
