"""The benchmark table as text and picture: markdown, CSV (one row per method, a `method`
column) and a bar chart. Pure: it formats the rows it is given (`Row`)."""

import csv
import io
from dataclasses import dataclass, field
from typing import Optional

from ..atomic import write_bytes_atomic
from ..transfer.report import CHART_DPI

__all__ = ["COLUMNS", "Row", "format_csv", "format_markdown", "write_chart"]

METRICS = ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")


@dataclass
class Row:
    method: str
    config: str
    test: dict = field(default_factory=dict)  # LaST test numbers of the kept checkpoint (%)
    epoch: Optional[int] = None  # of the kept checkpoint, 1-based
    params: Optional[int] = None
    feature_dim: Optional[int] = None
    train_images_per_s: Optional[float] = None
    eval_seconds: Optional[float] = None
    eval_peak_gib: Optional[float] = None
    eval_reproduced: Optional[bool] = None  # --eval-only gave the run's own test numbers
    error: str = ""


# (CSV header, markdown header, value of a row, markdown format)
COLUMNS = (
    [("method", "method", lambda r: r.method, "{}"), ("config", "config", lambda r: r.config, "{}")]
    + [(m, m, (lambda r, m=m: r.test.get(m)), "{:.1f}") for m in METRICS]
    + [
        ("epoch", "epoch", lambda r: r.epoch, "{}"),
        ("params", "params (M)", lambda r: r.params, "{:.1f}"),
        ("feature_dim", "feature dim", lambda r: r.feature_dim, "{:,}"),
        ("train_images_per_s", "train img/s", lambda r: r.train_images_per_s, "{:.1f}"),
        ("eval_seconds", "eval s", lambda r: r.eval_seconds, "{:.1f}"),
        ("eval_peak_rss_gib", "eval peak GiB", lambda r: r.eval_peak_gib, "{:.2f}"),
        ("eval_only_reproduced", "eval-only = run", lambda r: r.eval_reproduced, "{}"),
    ]
)

NOTE = (
    "LaST test (%) of the checkpoint kept on LaST val (best (Rank-1 + mAP) / 2; its epoch); "
    "train img/s: median step time in metrics.json; eval: a separate `train_net.py --eval-only` "
    "of that checkpoint on LaST test (wall time, peak RSS), which must give the run's numbers"
)


def _markdown_cell(row, value, fmt, name):
    if value is None:
        return "error" if row.error and name == "Rank-1" else "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return fmt.format(value / 1e6 if name == "params" else value)


def format_markdown(rows):
    """One line per method: the columns of COLUMNS, "-" where a number is missing."""
    lines = [NOTE, "", "| " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_markdown_cell(row, get(row), fmt, name) for name, _, get, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows):
    """One row per method; numbers unrounded but for the metrics (2 places), empty where
    missing; a last `error` column."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c[0] for c in COLUMNS] + ["error"])
    for row in rows:
        line = []
        for name, _, get, _ in COLUMNS:
            value = get(row)
            if value is None:
                value = ""
            elif name in METRICS:
                value = "{:.2f}".format(value)
            elif isinstance(value, float):
                value = "{:.4g}".format(value)
            line.append(value)
        writer.writerow(line + [row.error])
    return buf.getvalue()


def write_chart(rows, path):
    """Three panels: Rank-1 / mAP on LaST test, training images/s, evaluation seconds."""
    import matplotlib  # here: its start-up is paid only when a chart is drawn

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    fig = Figure(figsize=(12.0, 4.2), dpi=CHART_DPI)
    acc, speed, cost = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2, 1, 1]})
    names = [r.method for r in rows]
    xs = range(len(rows))
    for offset, key in ((-0.2, "Rank-1"), (0.2, "mAP")):
        values = [r.test.get(key) or 0.0 for r in rows]
        bars = acc.bar([x + offset for x in xs], values, 0.4, label=key)
        acc.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    acc.set_ylim(0, 105)
    acc.set_title("LaST test (%), checkpoint kept on LaST val")
    acc.legend(fontsize=8, loc="upper left")
    for ax, key, title in (
        (speed, "train_images_per_s", "training images / s"),
        (cost, "eval_seconds", "--eval-only on LaST test, s"),
    ):
        values = [getattr(r, key) or 0.0 for r in rows]
        ax.bar_label(ax.bar(list(xs), values, 0.6, color="tab:gray"), fmt="%.1f", fontsize=7)
        ax.set_title(title)
    for ax in (acc, speed, cost):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, fontsize=8, rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI)
    write_bytes_atomic(buf.getvalue(), path)
