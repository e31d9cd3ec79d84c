"""What the cells read from their runs besides results.json (lastreid.run_results): whether
training finished, and the paper's code's best epoch from the per-epoch history
(metrics.json)."""

import json
import os
import re

import yaml

from ..curves import iterations_per_epoch, read_metrics

__all__ = ["best_epoch", "finished_training", "read_json"]

_EVAL_KEY = re.compile(r"^(Rank-\d+|mAP|mINP|metric|(SS|CC|SC)-.+)$")


def finished_training(out):
    """True when the cell's last checkpoint is the final one (training is complete)."""
    try:
        with open(os.path.join(out, "last_checkpoint")) as f:
            last = f.read().strip()
    except OSError:
        return False
    return last == "model_final.pth" and os.path.isfile(os.path.join(out, last))


def best_epoch(run_dir, dataset):
    """The paper's selection from a run's per-epoch evaluations (metrics.json): the epoch
    with the best (Rank-1 + mAP) / 2, the later one on a tie (the paper's code keeps on `>=`).

    Returns {"best_epoch" (1-based), "metrics" (that epoch's), "last" (the last epoch's),
    "history": [{"epoch", "Rank-1", "mAP"}, ...]}, or None unless every epoch
    1..SOLVER.MAX_EPOCH of the run (its config.yaml) was evaluated once."""
    try:
        records = read_metrics(run_dir)
    except OSError:
        return None
    ipe = iterations_per_epoch(run_dir, records)
    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            max_epoch = int(yaml.safe_load(f)["SOLVER"]["MAX_EPOCH"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    if not ipe:
        return None
    evaluations = {}
    for record in records:
        metrics = {}
        for key, value in record.items():
            prefix, sep, name = key.rpartition("/")
            if sep and prefix != dataset:
                continue
            if _EVAL_KEY.match(name) and isinstance(value, (int, float)):
                metrics[name] = float(value)
        if "Rank-1" in metrics and "mAP" in metrics:
            evaluations[(record["iteration"] + 1) // ipe] = metrics
    if sorted(evaluations) != list(range(1, max_epoch + 1)):
        return None
    best = None
    for epoch in sorted(evaluations):
        m = evaluations[epoch]
        if best is None or (m["Rank-1"] + m["mAP"]) / 2 >= best[1]:
            best = (epoch, (m["Rank-1"] + m["mAP"]) / 2)
    return {
        "best_epoch": best[0],
        "metrics": evaluations[best[0]],
        "last": evaluations[max_epoch],
        "history": [
            {"epoch": e, "Rank-1": evaluations[e]["Rank-1"], "mAP": evaluations[e]["mAP"]}
            for e in sorted(evaluations)
        ],
    }


def read_json(path):
    """The dict in a JSON file; {} when it is missing, unreadable or not a dict."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
