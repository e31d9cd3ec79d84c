"""Training curves of a run folder: losses, learning rate and validation Rank-1 / mAP.

A run's metrics.json has one JSON object per line. Training lines carry total_loss,
loss_cls, loss_triplet, lr and iteration; evaluation lines carry Rank-1, mAP, metric, ...
(keyed `<dataset>/Rank-1` etc. when several test sets are evaluated); one line may be both.
The x axis is epochs when the iterations per epoch are known (results.json, or worked out
from config.yaml and the iterations of the evaluations), else iterations. The test of the
kept checkpoint (results.json's final_test) is drawn as stars at its epoch.
"""

import json
import logging
import math
import os
import re

from .atomic import write_atomic
from .errors import InputError, MissingFileError
from .run_results import read_run_results, run_config

__all__ = ["read_metrics", "iterations_per_epoch", "plot_curves"]

logger = logging.getLogger(__name__)

_EVAL_KEY = re.compile(r"^(?:(?P<dataset>.+)/)?(?P<metric>Rank-1|mAP)$")
FINAL_TEST = "final_test/"  # metrics.json's keys of the final test (engine.record_final_test)


def read_metrics(path):
    """The JSON objects of metrics.json (a file or a run folder), skipping blank lines and
    a partly written last line."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    if not os.path.isfile(path):
        raise MissingFileError(f"{path} does not exist (a run folder holds its metrics.json)")
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d is not JSON (a run still writing?): skipped", path, number)
                continue
            if isinstance(record, dict) and "iteration" in record:
                records.append(record)
    return records


def _eval_series(records):
    """{(dataset or "", "Rank-1" | "mAP"): [(iteration, value), ...]} of the evaluations
    during training (the final test of the kept checkpoint is not one of them)."""
    series = {}
    for r in records:
        for key, value in r.items():
            m = _EVAL_KEY.match(key)
            if m and isinstance(value, (int, float)) and not key.startswith(FINAL_TEST):
                series.setdefault((m["dataset"] or "", m["metric"]), []).append(
                    (r["iteration"], value)
                )
    return series


def iterations_per_epoch(run_dir, records=None):
    """Iterations per epoch of the run, or None when it cannot be worked out.

    A finished run's results.json says; otherwise: fast-reid evaluates after every
    TEST.EVAL_PERIOD-th epoch and after the last one, at the last iteration of that epoch,
    so the first evaluation's iteration + 1 is min(EVAL_PERIOD, SOLVER.MAX_EPOCH) epochs
    (checked against every other evaluation)."""
    saved = read_run_results(run_dir).get("iterations_per_epoch")
    if isinstance(saved, int) and saved > 0:
        return saved
    cfg = run_config(run_dir)
    try:
        first = min(int(cfg["TEST"]["EVAL_PERIOD"]), int(cfg["SOLVER"]["MAX_EPOCH"]))
    except (TypeError, KeyError, ValueError):
        return None
    records = read_metrics(run_dir) if records is None else records
    evals = sorted({it for points in _eval_series(records).values() for it, _ in points})
    if first <= 0 or not evals or (evals[0] + 1) % first:
        return None
    ipe = (evals[0] + 1) // first
    if ipe <= 0 or any((it + 1) % ipe for it in evals):
        return None
    return ipe


def plot_curves(run_dir, output=None, x_axis="auto", size=(15.0, 4.2), dpi=100):
    """Draws losses, learning rate and validation Rank-1 / mAP of `run_dir` into a PNG
    (default <run_dir>/curves.png) of size[0]*dpi x size[1]*dpi pixels; returns its path.
    x_axis: "auto" (epochs when known), "epoch" or "iteration"."""
    import matplotlib  # here, not at the top: a second of start-up only the plotting tools pay

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    if not records:
        raise InputError(f"{run_dir}: metrics.json has no metric lines")
    ipe = iterations_per_epoch(run_dir, records) if x_axis in ("auto", "epoch") else None
    if x_axis == "epoch" and ipe is None:
        raise InputError(
            f"{run_dir}: cannot work out the iterations per epoch "
            "(needs config.yaml and at least one evaluation)"
        )

    def x_of(iteration):
        return (iteration + 1) / ipe if ipe else iteration

    train = [r for r in records if "total_loss" in r]
    loss_keys = sorted(
        {k for r in train for k in r if k == "total_loss" or k.startswith("loss_")},
        key=lambda k: (k != "total_loss", k),
    )
    fig, (ax_loss, ax_lr, ax_eval) = plt.subplots(1, 3, figsize=size, dpi=dpi)
    for key in loss_keys:
        points = [(x_of(r["iteration"]), r[key]) for r in train if key in r]
        ax_loss.plot(*zip(*points), label=key, lw=1.5)
    ax_loss.set_title("training losses")
    lrs = [(x_of(r["iteration"]), r["lr"]) for r in train if "lr" in r]
    if lrs:
        ax_lr.plot(*zip(*lrs), color="tab:purple", lw=1.5)
        values = [v for _, v in lrs if v > 0]
        if values and max(values) / min(values) > 20:
            ax_lr.set_yscale("log")
    ax_lr.set_title("learning rate")
    series = _eval_series(records)
    colours = {}
    for (dataset, metric), points in sorted(series.items()):
        colour = colours.setdefault(dataset, f"C{len(colours)}")
        label = f"{dataset} {metric}".strip()
        ax_eval.plot(
            [x_of(it) for it, _ in points],
            [v for _, v in points],
            label=label,
            color=colour,
            ls="-" if metric == "Rank-1" else "--",
            marker="o",
            ms=4,
        )
    _plot_final_test(ax_eval, read_run_results(run_dir), x_of, colours)
    ax_eval.set_title("validation Rank-1 / mAP (%)")
    for ax, has in ((ax_loss, loss_keys), (ax_lr, lrs), (ax_eval, series)):
        ax.set_xlabel("epoch" if ipe else "iteration")
        ax.grid(alpha=0.3)
        if not has:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        elif ax is not ax_lr:
            ax.legend(fontsize=8)
    best = _best_line(series)
    fig.suptitle(f"{os.path.basename(os.path.abspath(run_dir))}" + (f"  ({best})" if best else ""))
    fig.tight_layout()
    output = output or os.path.join(run_dir, "curves.png")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    # No bbox "tight": the size stays size * dpi.
    write_atomic(output, lambda f: fig.savefig(f, format="png", dpi=dpi))
    plt.close(fig)
    return output


def _plot_final_test(ax, results, x_of, colours):
    """The test of the kept checkpoint (results.json's final_test) as stars at its epoch."""
    final, per_epoch = results.get("final_test"), results.get("iterations_per_epoch")
    if not final or not per_epoch:
        return
    x = x_of(final["epoch"] * per_epoch - 1)  # the checkpoint is its epoch's last iteration
    for dataset, metrics in sorted(final["datasets"].items()):
        colour = colours.setdefault("test " + dataset, f"C{len(colours)}")
        for metric, marker in (("Rank-1", "*"), ("mAP", "X")):
            if metric in metrics:
                label = f"{dataset} {metric}, {final['checkpoint']} (final test)"
                ax.plot([x], [metrics[metric]], marker, ms=12, color=colour, label=label)


def _best_line(series):
    """'best <dataset> Rank-1 x / mAP y' for the first dataset, by their mean."""
    datasets = sorted({d for d, _ in series})
    if not datasets:
        return ""
    d = datasets[0]
    r1, m = dict(series.get((d, "Rank-1"), [])), dict(series.get((d, "mAP"), []))
    both = [(it, r1[it], m[it]) for it in r1 if it in m and not math.isnan(r1[it] + m[it])]
    if not both:
        return ""
    _, r, a = max(both, key=lambda t: t[1] + t[2])
    return f"best {d + ' ' if d else ''}Rank-1 {r:.1f} / mAP {a:.1f}"
