"""Resuming a killed run without losing or repeating work (docs/training.md: Resuming).

`ResumableCheckpointer` keeps the best metric across resumes, so `model_best.pth` is only
replaced by a better one, and repairs a kill between a checkpoint and its copy to
`model_best.pth`; `arrange_hooks` writes metrics before each checkpoint, and
`repair_metrics_history` drops the lines a resumed run redoes. `continue_run` does the
bookkeeping of `Trainer.resume_or_load(resume=True)`, including a run killed after its last
checkpoint, which evaluates its final weights again.
"""

import json
import logging
import os
import re

import torch
from fastreid.engine import hooks
from fastreid.utils import comm
from fastreid.utils.events import get_event_storage

from .atomic import remove_stale_temp_files, save_atomic, write_atomic
from .fastreid_internals import (
    history_tails,
    put_history,
    reopen_json_writers,
    set_last_evaluation,
    trainer_hooks,
)
from .randomness import TrainBatches, capture_states, restore_states

logger = logging.getLogger(__name__)

__all__ = [
    "RandomStatesHook",
    "ResumableCheckpointer",
    "arrange_hooks",
    "continue_run",
    "continue_streams",
    "remove_old_checkpoints",
    "repair_metrics_history",
    "checkpoint_info",
    "save_best",
]

BEST = "model_best.pth"
HISTORY = 20  # values of each smoothed scalar a checkpoint keeps: the writers' median window
METRICS = "metrics.json"
PERIODIC = re.compile(r"model_(\d{4,})\.pth")  # what ResumableCheckpointer.step names them


def checkpoint_info(path):
    """The scalar entries (epoch, metric, best_metric, ...) of one of our checkpoint files,
    read weights-only and memory-mapped (the tensors are not read); None if unreadable."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing, torn, not ours: the caller decides what that means
        return None
    if not isinstance(data, dict):
        return None
    return {
        k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def save_best(source, best_path):
    """Writes `best_path` (model_best.pth) from the checkpoint `source`: its weights and its
    scalars (epoch, metric, best_metric, best_epoch), not the optimizer, scheduler and
    random states that only --resume reads, from the checkpoint itself. Every tool loads
    it as it loads a checkpoint (the `model` entry); it costs the weights once more, not
    the optimizer's state (twice the weights with Adam) too."""
    data = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    kept = {"model": data["model"]}
    kept.update(checkpoint_info(source) or {})
    save_atomic(kept, best_path)


class ResumableCheckpointer(hooks.PeriodicCheckpointer):
    """fastreid's checkpoint hook with the best metric kept across resumes.

    Every checkpoint holds `epoch`, `metric` (this epoch's, -1 if it was not evaluated),
    `best_metric` and `best_epoch` (best so far, this epoch included). As in fastreid, the
    best is looked at on checkpoint epochs only; `model_best.pth` holds the weights and
    scalars of the periodic (or final) checkpoint it comes from (`save_best`) and does not
    move the `last_checkpoint` pointer.
    """

    def __init__(self, checkpointer, period, max_epoch=None, keep_last=0):
        super().__init__(checkpointer, period, max_epoch)
        self.best_epoch = -1
        self._history = {}  # a resumed run's metric_history (restore)
        self.keep_last = int(keep_last)  # SOLVER.KEEP_LAST_CHECKPOINTS

    def after_epoch(self):
        # fastreid takes the latest value of the metric even if it comes from an earlier
        # evaluation; only this epoch's evaluation counts here.
        storage = get_event_storage()
        latest = storage.latest().get(self.metric_name)
        metric = float(latest[0]) if latest is not None and latest[1] == storage.iter else -1.0
        self.step(self.trainer.epoch, metric=metric, **self._streams(storage))

    def _streams(self, storage):
        """What a resumed run needs to draw what this one would have drawn next: every
        process's generator states (RandomStatesHook), the training sampler's seed and the
        last values of each smoothed scalar (the writers' medians span epochs)."""
        streams = {"metric_history": history_tails(storage, HISTORY)}
        states = getattr(self.trainer, "random_states", None)
        if states:
            streams["random_states"] = states
        batches = getattr(getattr(self.trainer, "data_loader", None), "batch_sampler", None)
        if isinstance(batches, TrainBatches):
            streams["sampler_seed"] = batches.stream_seed
        return streams

    def before_train(self):
        super().before_train()  # fastreid's: the metric's name, from DATASETS.TESTS
        # A resumed run's writers take their medians over the values before the kill too.
        put_history(get_event_storage(), self._history)

    def step(self, epoch, **kwargs):
        epoch = int(epoch)
        metric = float(kwargs.pop("metric", -1))
        final = epoch >= self.max_epoch - 1
        if not final and (epoch + 1) % self.period != 0:
            return
        better = metric > self.best_metric
        best_metric, best_epoch = (metric, epoch) if better else (self.best_metric, self.best_epoch)
        name = "model_final" if final else f"model_{epoch:04d}"
        self.checkpointer.save(
            name,
            **kwargs,
            epoch=epoch,
            metric=metric,
            best_metric=best_metric,
            best_epoch=best_epoch,
        )
        self.best_metric, self.best_epoch = best_metric, best_epoch
        saved = os.path.join(self.checkpointer.save_dir or "", name + ".pth")
        if better and self.checkpointer.save_to_disk and os.path.isfile(saved):
            logger.info(
                "New best %s %.4f at epoch %d: the weights of %s to %s",
                getattr(self, "metric_name", "metric"),
                metric,
                epoch,
                name + ".pth",
                BEST,
            )
            save_best(saved, os.path.join(self.checkpointer.save_dir, BEST))
        if self.keep_last > 0 and self.checkpointer.save_to_disk:
            # After the copy to model_best.pth, so a kill in between still finds its source.
            current = os.path.basename(self.checkpointer.get_checkpoint_file())
            remove_old_checkpoints(self.checkpointer.save_dir, epoch, self.keep_last, current)

    def restore(self, checkpoint, checkpoint_path=None):
        """Takes the best metric and the scalars' history from the extra data of the
        checkpoint resumed from (`{}` when starting afresh) and makes `model_best.pth` agree
        with it."""
        self.best_metric, self.best_epoch = -1, -1
        self._history = checkpoint.get("metric_history") or {}
        if "epoch" not in checkpoint:
            return
        folder = self.checkpointer.save_dir
        best_path = os.path.join(folder, BEST)
        best_info = checkpoint_info(best_path) if os.path.isfile(best_path) else None
        if "best_metric" in checkpoint:
            self.best_metric = float(checkpoint["best_metric"])
            self.best_epoch = int(checkpoint.get("best_epoch", -1))
        elif best_info is not None and best_info.get("epoch", 1 << 30) <= checkpoint["epoch"]:
            # A checkpoint written before the best was stored in it: trust model_best.pth.
            self.best_metric = float(best_info.get("metric", -1))
            self.best_epoch = int(best_info["epoch"])
            logger.info(
                "%s holds no best metric: taking %.4f (epoch %d) from %s",
                checkpoint_path,
                self.best_metric,
                self.best_epoch,
                best_path,
            )
            return
        logger.info(
            "Resumed best %s so far: %.4f (epoch %d)",
            getattr(self, "metric_name", "metric"),
            self.best_metric,
            self.best_epoch,
        )
        if self.best_epoch < 0 or not self.checkpointer.save_to_disk:
            return
        if best_info is not None and best_info.get("epoch") == self.best_epoch:
            return
        # The run was killed between a checkpoint and the copy to model_best.pth (then the
        # best checkpoint is the one resumed from), or model_best.pth is missing / stale.
        found = "missing" if best_info is None else f"from epoch {best_info.get('epoch')}"
        for source in (checkpoint_path, os.path.join(folder, f"model_{self.best_epoch:04d}.pth")):
            if (
                source
                and os.path.isfile(source)
                and (checkpoint_info(source) or {}).get("epoch") == self.best_epoch
            ):
                logger.warning(
                    "%s is %s but the best epoch is %d: restoring it from %s",
                    best_path,
                    found,
                    self.best_epoch,
                    source,
                )
                save_best(source, best_path)
                return
        logger.warning(
            "%s is %s but the best epoch is %d, whose checkpoint is gone: it is "
            "replaced by the next better evaluation",
            best_path,
            found,
            self.best_epoch,
        )


def remove_old_checkpoints(folder, epoch, keep_last, current=""):
    """Removes the periodic checkpoints of `folder` up to `epoch` but the `keep_last` newest
    (by epoch number, not listing order) and `current` (the one `last_checkpoint` names).
    Later epochs (left by an earlier, longer run in the same folder) are not this run's to
    remove."""
    found = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(folder)
        if (m := PERIODIC.fullmatch(name)) and int(m.group(1)) <= epoch
    )
    for _, name in found[:-keep_last]:
        if name != current:
            os.remove(os.path.join(folder, name))
            logger.info("Removed %s (SOLVER.KEEP_LAST_CHECKPOINTS %d)", name, keep_last)


class RandomStatesHook(hooks.HookBase):
    """Gathers every process's generator states at the end of each epoch into
    `trainer.random_states`, for the checkpoint that follows (in every process: it is a
    collective, and only the main process has the checkpoint hook)."""

    def after_epoch(self):
        self.trainer.random_states = comm.all_gather(capture_states())


def arrange_hooks(hook_list, keep_last=0):
    """fastreid's default hooks with `ResumableCheckpointer` (keeping the `keep_last` newest
    periodic checkpoints, 0: all) in place of its checkpoint hook and the metrics writers
    moved in front of it (see the module docstring), `RandomStatesHook` before both."""
    writers = [h for h in hook_list if isinstance(h, hooks.PeriodicWriter)]
    arranged, placed = [], False
    for hook in hook_list:
        if isinstance(hook, hooks.PeriodicWriter):
            continue
        if isinstance(hook, hooks.PeriodicCheckpointer):
            if not placed:
                arranged.extend([RandomStatesHook()] + writers)
                placed = True
            if not isinstance(hook, ResumableCheckpointer):
                hook = ResumableCheckpointer(
                    hook.checkpointer, hook.period, hook.max_epoch, keep_last
                )
        arranged.append(hook)
    if not placed:
        arranged.extend([RandomStatesHook()] + writers)
    return arranged


def repair_metrics_history(path, start_iter):
    """Keeps the lines of `path` (a metrics.json) for iterations before `start_iter` and
    drops the others and a torn last line; rewrites the file atomically if anything goes.
    Returns the number of lines dropped."""
    if not os.path.isfile(path):
        return 0
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")  # the last piece is b"" unless the last write was cut short
    kept, later, broken = [], 0, 0
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            iteration = record["iteration"]
        except (ValueError, TypeError, KeyError):
            broken += 1  # a torn last line (or any other unreadable one)
            continue
        if iteration >= start_iter:
            later += 1
            continue
        kept.append(line)
    dropped = later + broken
    if dropped:
        text = b"".join(line + b"\n" for line in kept)
        write_atomic(path, lambda f: f.write(text))
        logger.info(
            "%s: kept %d lines before iteration %d; dropped %d after it (redone on "
            "resume) and %d unreadable (torn)",
            path,
            len(kept),
            start_iter,
            later,
            broken,
        )
    return dropped


def continue_run(trainer, checkpoint, resumed):
    """What `Trainer.resume_or_load(resume=True)` does after loading the checkpoint
    (`checkpoint` is what the load returned, `resumed` whether a checkpoint of the run was
    found): best-metric state, metrics history, stale temporary files, finished runs."""
    out = trainer.cfg.OUTPUT_DIR
    if comm.is_main_process() and out:
        remove_stale_temp_files(out)
        path = trainer.checkpointer.get_checkpoint_file() if resumed else None
        for hook in trainer_hooks(trainer):
            if isinstance(hook, ResumableCheckpointer):
                hook.restore(checkpoint if resumed else {}, path)
        metrics = os.path.join(out, METRICS)
        if repair_metrics_history(metrics, trainer.start_epoch * trainer.iters_per_epoch):
            # JSON writers hold metrics.json open for appending: after the file was
            # replaced they must append to the new one.
            reopen_json_writers(trainer_hooks(trainer), metrics)
    if resumed and trainer.start_epoch < trainer.max_epoch:
        continue_streams(trainer, checkpoint)
    if trainer.start_epoch >= trainer.max_epoch:
        # Nothing left to train (killed after the final checkpoint). fastreid's loop would
        # leave `epoch` unset and find no evaluation results: evaluate the final weights.
        logger.info(
            "The run already finished its %d epochs: evaluating the final weights "
            "again for its results",
            trainer.max_epoch,
        )
        trainer.epoch = trainer.max_epoch - 1
        set_last_evaluation(trainer, trainer.test(trainer.cfg, trainer.model))


def continue_streams(trainer, checkpoint):
    """Makes a resumed run draw what the uninterrupted run would have: the training sampler
    continues its stream after the batches trained on, and this process's generators
    continue from their states at the checkpoint (lastreid.randomness)."""
    batches = trainer.data_loader.batch_sampler
    batches.start = trainer.start_epoch * trainer.iters_per_epoch
    if "sampler_seed" in checkpoint:
        batches.stream_seed = checkpoint["sampler_seed"]
    states = checkpoint.get("random_states") or []
    rank, world = comm.get_rank(), comm.get_world_size()
    if len(states) == world:
        restore_states(states[rank])
        logger.info(
            "Continuing the random streams of the checkpoint: sampler after %d batches",
            batches.start,
        )
    else:
        logger.warning(
            "The checkpoint holds the random states of %d process(es), this run has %d: "
            "continuing with fresh ones (the run is no longer bit for bit the uninterrupted "
            "one)",
            len(states),
            world,
        )
