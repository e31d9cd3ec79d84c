"""What a run folder (a train_net.py OUTPUT_DIR) says, from the files the run saved, never its
log; and the signature that tells one version of a checkpoint file from the next."""

import os
import re
import statistics

from ..curves import iterations_per_epoch, read_metrics
from ..run_results import dataset_metrics, run_config
from ..startup import build_cfg

__all__ = ["best_epoch", "config_value", "epoch_evaluations", "finished_training"]
__all__ += ["run_cfg", "selected_metrics", "training_speed", "weights_signature"]

_EVAL_KEY = re.compile(r"^(Rank-\d+|mAP|mINP|metric|(SS|CC|SC)-.+)$")


def config_value(config, key):
    """config["A"]["B"] for key "A.B" of a run_config dict; None where a part is missing."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def finished_training(run_dir):
    """True when the run's last checkpoint is the final one."""
    try:
        with open(os.path.join(run_dir, "last_checkpoint")) as f:
            last = f.read().strip()
    except OSError:
        return False
    return last == "model_final.pth" and os.path.isfile(os.path.join(run_dir, last))


def weights_signature(path):
    """A checkpoint file's version: size, mtime and inode (an atomic rewrite is a new inode)."""
    st = os.stat(path)
    return "{}-{}-{}".format(st.st_size, st.st_mtime_ns, st.st_ino)


def run_cfg(run_dir):
    """The checked config of a run's config.yaml (its MODEL.IMPORTS honoured), on the CPU."""
    opts = ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu"]
    return build_cfg(os.path.join(run_dir, "config.yaml"), opts)


def training_speed(run_dir, batch):
    """Training images / s: `batch` over the median of metrics.json's step "time"s; or None."""
    try:
        records = read_metrics(run_dir)
    except (OSError, ValueError):
        return None
    times = [r["time"] for r in records if isinstance(r.get("time"), (int, float))]
    return batch / statistics.median(times) if times else None


def epoch_evaluations(run_dir, datasets):
    """{epoch (1-based): {dataset: metrics with Rank-1 and mAP}} of metrics.json's evaluations
    on `datasets` (fastreid writes `<dataset>/<metric>`, the bare metric for one test set)."""
    try:
        records = read_metrics(run_dir)
    except (OSError, ValueError):
        return {}
    ipe = iterations_per_epoch(run_dir, records)
    found = {}
    for record in records if ipe else ():
        metrics = {}
        for key, value in record.items():
            prefix, sep, name = key.rpartition("/")
            dataset = prefix if sep else datasets[0] if len(datasets) == 1 else None
            if dataset in datasets and _EVAL_KEY.match(name) and isinstance(value, (int, float)):
                metrics.setdefault(dataset, {})[name] = float(value)
        for dataset, m in metrics.items():
            if "Rank-1" in m and "mAP" in m:
                found.setdefault((record["iteration"] + 1) // ipe, {})[dataset] = m
    return found


def best_epoch(run_dir, dataset):
    """The paper's selection, the best (Rank-1 + mAP) / 2 epoch (the later on a tie: `>=` in its
    code), and the history; None unless every epoch 1..SOLVER.MAX_EPOCH was evaluated once."""
    try:
        max_epoch = int(config_value(run_config(run_dir), "SOLVER.MAX_EPOCH"))
    except (ValueError, TypeError):
        return None
    evaluations = {e: found[dataset] for e, found in epoch_evaluations(run_dir, [dataset]).items()}
    if sorted(evaluations) != list(range(1, max_epoch + 1)):
        return None
    best = max(
        evaluations, key=lambda e: ((evaluations[e]["Rank-1"] + evaluations[e]["mAP"]) / 2, e)
    )
    return {
        "best_epoch": best,
        "metrics": evaluations[best],
        "last": evaluations[max_epoch],
        "history": [
            {"epoch": e, "Rank-1": evaluations[e]["Rank-1"], "mAP": evaluations[e]["mAP"]}
            for e in sorted(evaluations)
        ],
    }


def selected_metrics(run_dir, results, dataset, paper):
    """(metrics on `dataset`, best_epoch's selection): `paper`, of the best epoch, else results'."""
    if not paper:
        return dataset_metrics(results, dataset), None
    selection = best_epoch(run_dir, dataset)
    return selection and selection["metrics"], selection
