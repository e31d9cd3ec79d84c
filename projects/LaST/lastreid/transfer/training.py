"""Training the rows of `--train`: a resumable BoT run of each source's recipe under
`<output>/sources/<name>/`, skipped once finished; a source that fails leaves its row's
cells out."""

import os
import sys
import time

from .process import REPO, TRAIN_NET
from .results import finished_training

__all__ = ["source_recipe", "train_sources"]


def source_recipe(matrix, source):
    """(config, overrides) of the BoT run of a trained source: its recipe from the
    --imagenet file, the command's overrides, into `<output>/sources/<name>/`."""
    config = source.train if os.path.isabs(source.train) else os.path.join(REPO, source.train)
    pretrain = ["MODEL.BACKBONE.PRETRAIN_PATH", matrix.imagenet] if matrix.imagenet else []
    return config, pretrain + list(matrix.opts) + ["OUTPUT_DIR", matrix.source_dir(source)]


def train_sources(matrix):
    """Trains (or resumes, or skips when finished) BoT on every trained source."""
    trained = [s for s in matrix.sources if s.train]
    for i, source in enumerate(trained, 1):
        counter = "source {}/{}".format(i, len(trained))
        out = matrix.source_dir(source)
        final = os.path.join(out, "model_final.pth")
        if finished_training(out) and not os.path.isfile(source.path):
            # e.g. a recipe's model_best.pth never written (no evaluation): the final model
            matrix.log(
                "[transfer] {} {}: no {}: its row uses {}".format(
                    counter, source.name, os.path.basename(source.path), final
                )
            )
            source.path = final
        if finished_training(out):
            matrix.log(
                "[transfer] {} {}: trained before, skipped ({})".format(
                    counter, source.name, source.path
                )
            )
            continue
        os.makedirs(out, exist_ok=True)
        config, opts = source_recipe(matrix, source)
        resuming = os.path.isfile(os.path.join(out, "last_checkpoint"))
        gpus = ["--num-gpus", str(matrix.num_gpus)] if matrix.num_gpus else []
        cmd = [sys.executable, TRAIN_NET, "--config-file", config, "--resume"] + gpus + opts
        matrix.log(
            "[transfer] {} {}: {} BoT (log {})".format(
                counter,
                source.name,
                "resuming" if resuming else "training",
                os.path.join(out, "log.txt"),
            )
        )
        t0 = time.time()
        code = matrix._spawn(cmd, os.path.join(out, "stdout.txt"))
        if code == 0 and finished_training(out) and not os.path.isfile(source.path):
            matrix.log(
                "[transfer] {} {}: no {} was written: its row uses {}".format(
                    counter, source.name, os.path.basename(source.path), final
                )
            )
            source.path = final
        if code != 0 or not finished_training(out):
            source.error = "training the source failed (exit code {})".format(code)
            matrix.log(
                "[transfer] {} {}: FAILED after {:.0f} s; see {}".format(
                    counter, source.name, time.time() - t0, os.path.join(out, "stdout.txt")
                )
            )
            matrix._show_tail(os.path.join(out, "stdout.txt"))
            continue
        matrix.log(
            "[transfer] {} {}: trained in {:.0f} s ({})".format(
                counter, source.name, time.time() - t0, source.path
            )
        )
