"""The one place that reaches into fastreid 1.4.0's private names, so that a fastreid
upgrade has one module to check. Each function says what it stands for.

It also holds the names fastreid matches in its code rather than in a registry (the config
checks, `lastreid.config_checks`, accept exactly these; tests/test_config_ranges.py builds
each one with fastreid, so an upgrade that changes them fails there).
"""

import os

from fastreid.data import build as _build
from fastreid.utils import checkpoint as _checkpoint
from fastreid.utils import comm as _comm

__all__ = [
    "registered_names",
    "NORM_NAMES",
    "LR_SCHEDULERS",
    "WARMUP_METHODS",
    "TRAIN_SAMPLERS",
    "RESNET_FEAT_DIMS",
    "BASELINE_LOSSES",
    "NECK_FEATS",
    "group_keys",
    "strip_prefix_if_present",
    "filter_reused_missing_keys",
    "train_sampler",
    "sampler_seed",
    "set_sampler_seed",
    "history_tails",
    "put_history",
    "step_runner",
    "batch_iterator",
    "set_batch_iterator",
    "set_local_process_group",
    "trainer_hooks",
    "set_last_evaluation",
    "reopen_json_writers",
]


# MODEL.BACKBONE.NORM / MODEL.HEADS.NORM: the table of fastreid.layers.get_norm.
NORM_NAMES = ("BN", "syncBN", "GhostBN", "FrozenBN", "GN")
# SOLVER.SCHED: the schedulers fastreid.solver.build.build_lr_scheduler has arguments for.
LR_SCHEDULERS = ("MultiStepLR", "CosineAnnealingLR")
# SOLVER.WARMUP_METHOD: fastreid.solver.lr_scheduler.WarmupLR's methods.
WARMUP_METHODS = ("constant", "linear", "exp")
# DATALOADER.SAMPLER_TRAIN: the names fastreid.data.build._train_loader_from_config builds.
TRAIN_SAMPLERS = (
    "TrainingSampler",
    "NaiveIdentitySampler",
    "BalancedIdentitySampler",
    "SetReWeightSampler",
    "ImbalancedDatasetSampler",
)
# MODEL.BACKBONE.DEPTH -> channels out (MODEL.BACKBONE.FEAT_DIM) of build_resnet_backbone.
RESNET_FEAT_DIMS = {"18x": 512, "34x": 512, "50x": 2048, "101x": 2048}
# MODEL.LOSSES.NAME: the losses fastreid's Baseline computes (MGN: the first two); any
# other name is silently no loss at all.
BASELINE_LOSSES = ("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface")
# MODEL.HEADS.NECK_FEAT: the two features EmbeddingHead can give the triplet loss.
NECK_FEATS = ("before", "after")


def registered_names(registry):
    """The names in a fastreid Registry, sorted (its Registry has no public listing)."""
    return sorted(registry._obj_map)


def group_keys(keys):
    """fastreid's grouping of state-dict keys by module: a list of `prefix{a,b}` strings."""
    groups = _checkpoint._group_checkpoint_keys(sorted(keys))
    return [head + _checkpoint._group_to_str(tails) for head, tails in groups.items()]


def strip_prefix_if_present(state, prefix):
    """Removes `prefix` from every key of `state`, in place, if all keys have it."""
    _checkpoint._strip_prefix_if_present(state, prefix)


def filter_reused_missing_keys(model, keys):
    """`keys` without those of parameters shared with a loaded module (fastreid's rule)."""
    return _checkpoint._filter_reused_missing_keys(model, keys)


def sampler_seed(sampler):
    """The seed of a fastreid training sampler's stream (its `_seed`)."""
    return int(sampler._seed)


def set_sampler_seed(sampler, seed):
    """Sets the seed a fastreid training sampler starts its stream from (before iterating)."""
    sampler._seed = int(seed)


def history_tails(storage, length):
    """{name: [(value, iteration), ...]} of the last `length` values of each smoothed scalar
    of a fastreid EventStorage (what its writers' medians are taken over)."""
    hints = storage.smoothing_hints()
    return {
        name: [list(pair) for pair in buffer.values()[-length:]]
        for name, buffer in storage.histories().items()
        if hints.get(name)
    }


def put_history(storage, tails):
    """Puts `history_tails` back into a fresh EventStorage, without making them the latest
    values (so its writers do not write them again)."""
    for name, pairs in tails.items():
        buffer = storage.histories()[name]
        for value, iteration in pairs:
            buffer.update(float(value), iteration)
        storage.smoothing_hints()[name] = True


def train_sampler(cfg, train_set):
    """The training sampler fastreid's build_reid_train_loader would choose for `cfg`
    (DATALOADER.SAMPLER_TRAIN, NUM_INSTANCE, the per-process batch, the shared seed)."""
    return _build._train_loader_from_config(cfg, train_set=train_set)["sampler"]


def step_runner(trainer):
    """The SimpleTrainer (or AMPTrainer, or lastreid's CPU / CUDA-AMP step) a fastreid
    DefaultTrainer runs each step with (its `_trainer`)."""
    return trainer._trainer


def batch_iterator(step):
    """The iterator over the training loader a SimpleTrainer takes each step's batch from."""
    return step._data_loader_iter


def set_batch_iterator(step, batches):
    """Has a SimpleTrainer take its next batches from the iterator `batches`."""
    step._data_loader_iter = batches


def set_local_process_group(group):
    """Makes `group` (the processes on this machine) the one fastreid's
    `comm.get_local_rank()` / `get_local_size()` read (its `_LOCAL_PROCESS_GROUP`, which
    only fastreid's own launch sets)."""
    _comm._LOCAL_PROCESS_GROUP = group


def trainer_hooks(trainer):
    """The hooks a fastreid DefaultTrainer runs (its `_hooks`), in order."""
    return trainer._hooks


def set_last_evaluation(trainer, results):
    """The evaluation results a fastreid DefaultTrainer's `train()` returns (its
    `_last_eval_results`)."""
    trainer._last_eval_results = results


def reopen_json_writers(hook_list, path):
    """Has every JSONWriter of the PeriodicWriter hooks in `hook_list` that appends to the
    file `path` (its `_file_handle`, in the hook's `_writers`) append to the file now there."""
    target = os.path.realpath(path)
    for hook in hook_list:
        for writer in getattr(hook, "_writers", ()):
            handle = getattr(writer, "_file_handle", None)
            if handle is not None and os.path.realpath(getattr(handle, "name", "")) == target:
                handle.close()
                writer._file_handle = open(path, "a")
