"""The transfer table as text and picture: markdown, CSV and the bar chart, in the shape of
the paper's table (Rank-1 / mAP in %). Pure: it formats the cells it is given. A cell on a
dataset its row was trained on is shown as "source" (it is not run)."""

import csv
import io
import math
from dataclasses import dataclass
from typing import Optional

from ..atomic import write_bytes_atomic

__all__ = [
    "add_protocol_option",
    "Cell",
    "DATASETS",
    "DEFAULT_DATASETS",
    "SOURCE_CELL",
    "SETTINGS",
    "PROTOCOLS",
    "PROTOCOL_CHOICES",
    "PUBLISHED",
    "CHART_SIZE",
    "cell_summary",
    "column_title",
    "columns",
    "format_markdown",
    "format_csv",
    "write_chart",
]

# The targets in column order: clothes-changing (PRCC, Celeb-reID), then short-term.
DATASETS = ("PRCC", "CelebReID", "Market1501", "DukeMTMC")
DEFAULT_DATASETS = ("PRCC", "CelebReID")  # the paper's published table
SETTINGS = ("direct", "finetune")
SHORT_NAMES = {"PRCC": "PRCC", "CelebReID": "Celeb", "Market1501": "Market", "DukeMTMC": "Duke"}
SOURCE_CELL = "source"  # the text of a cell on its row's own training data
SETTING_NAMES = {"direct": "direct", "finetune": "fine-tuned"}

# How a cell is measured. clean: the evaluation after the last epoch. seed: as the public
# LaST code (engine/trainer.py) did: every epoch on the test split, best (R1 + mAP) / 2.
PROTOCOLS = ("clean", "paper")
PROTOCOL_CHOICES = {"clean": ("clean",), "paper": ("paper",), "both": ("clean", "paper")}


def add_protocol_option(parser):
    """--protocol of the tools that fine-tune on a test split (transfer and joint tables)."""
    parser.add_argument(
        "--protocol",
        choices=sorted(PROTOCOL_CHOICES),
        default="clean",
        help="clean: last epoch; paper: best (R1 + mAP) / 2 epoch on the test split, "
        "bilinear (the public LaST code's); both: both numbers",
    )


PROTOCOL_NOTES = {
    "clean": "protocol clean: fine-tuned cells report the evaluation after the last epoch",
    "paper": "protocol paper: fine-tuned cells report the epoch with the best (Rank-1 + mAP) / 2 "
    "on the test split (epoch in brackets), bilinear resize, as the public LaST code",
    "both": "protocol both: clean (last epoch); seed (best (Rank-1 + mAP) / 2 epoch on the "
    "test split, in brackets; bilinear resize)",
}

# The paper's table (Rank-1, mAP in %): BoT ResNet-50 pre-trained on each source.
PUBLISHED = {
    "ImageNet": {
        ("PRCC", "direct"): (24.7, 13.5),
        ("CelebReID", "direct"): (28.7, 3.0),
        ("PRCC", "finetune"): (43.1, 41.3),
        ("CelebReID", "finetune"): (49.2, 8.7),
    },
    "Market1501": {
        ("PRCC", "direct"): (29.0, 24.3),
        ("CelebReID", "direct"): (36.7, 3.7),
        ("PRCC", "finetune"): (44.3, 43.1),
        ("CelebReID", "finetune"): (49.3, 8.7),
    },
    "DukeMTMC": {
        ("PRCC", "direct"): (28.3, 24.1),
        ("CelebReID", "direct"): (40.9, 4.6),
        ("PRCC", "finetune"): (43.9, 44.2),
        ("CelebReID", "finetune"): (49.8, 8.9),
    },
    "MSMT17": {
        ("PRCC", "direct"): (26.2, 24.6),
        ("CelebReID", "direct"): (43.4, 5.0),
        ("PRCC", "finetune"): (43.7, 44.1),
        ("CelebReID", "finetune"): (51.0, 9.0),
    },
    "LaST": {
        ("PRCC", "direct"): (39.3, 32.6),
        ("CelebReID", "direct"): (47.0, 7.0),
        ("PRCC", "finetune"): (54.4, 54.3),
        ("CelebReID", "finetune"): (56.1, 11.7),
    },
}

CONFIG_DIGITS = 12  # of a cell's config_sha256 in the CSV: enough to tell recipes apart
CHART_DPI = 100
CHART_SIZE_INCHES = (11.0, 4.5)
CHART_SIZE = (
    int(CHART_SIZE_INCHES[0] * CHART_DPI),
    int(CHART_SIZE_INCHES[1] * CHART_DPI),
)  # (w, h) px


@dataclass
class Cell:
    source: object  # a sources.Source: .name is the row
    dataset: str
    setting: str
    result: Optional[dict] = None  # the stored cell JSON once done
    error: str = ""
    protocol: str = "clean"

    @property
    def title(self):
        return "{} | {} | {}{}".format(
            self.source.name,
            SHORT_NAMES.get(self.dataset, self.dataset),
            SETTING_NAMES[self.setting],
            " | paper" if self.protocol == "paper" else "",
        )

    @property
    def is_source(self):
        """True on a dataset the row's model was trained on: shown as "source", not run."""
        return self.dataset in getattr(self.source, "trained_on", ())

    @property
    def paper_selection(self):
        """True for the cells that pick their best epoch on the test split."""
        return self.protocol == "paper" and self.setting == "finetune"

    def metric(self, key):
        if not self.result:
            return None
        value = self.result.get("metrics", {}).get(key)
        return float(value) if isinstance(value, (int, float)) else None


def column_title(dataset, setting):
    return "{} {}".format(SHORT_NAMES.get(dataset, dataset), SETTING_NAMES[setting])


def columns(datasets=DEFAULT_DATASETS, settings=SETTINGS):
    """(dataset, setting) pairs in the paper's column order: settings outer, datasets inner."""
    return [(d, s) for s in settings for d in datasets]


# Sources -----------------------------------------------------------------------------------


def _lookup(grid, name, dataset, setting, protocol):
    """A cell of the grid, keyed (name, dataset, setting, protocol) or, for clean, also
    (name, dataset, setting)."""
    cell = grid.get((name, dataset, setting, protocol))
    if cell is None and protocol == "clean":
        cell = grid.get((name, dataset, setting))
    return cell


def _pair(cell):
    if cell is None or cell.result is None:
        return None
    return cell.metric("Rank-1"), cell.metric("mAP")


def _epoch(cell):
    return cell.result.get("best_epoch") if cell is not None and cell.result else None


def _text(cell):
    if cell is not None and cell.is_source:
        return SOURCE_CELL
    pair = _pair(cell)
    if not pair:
        return "-"
    text = "{:.1f} / {:.1f}".format(*pair)
    return text + (" (ep {})".format(_epoch(cell)) if _epoch(cell) else "")


def format_markdown(rows, cols, grid, protocol="clean"):
    """The paper's table shape: one row per source, "R1 / mAP" per column, "-" if missing;
    paper fine-tuned cells add their epoch, "both" shows "clean; paper". A row named like one
    of the paper's (PUBLISHED) is followed by the paper's numbers where it has some for
    these columns. The first line says which protocol made it."""
    lines = [
        "Rank-1 / mAP (%); " + PROTOCOL_NOTES[protocol],
        "",
        "| pre-training | " + " | ".join(column_title(d, s) for d, s in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name in rows:
        values = [
            "; ".join(_text(_lookup(grid, name, d, s, p)) for p in PROTOCOL_CHOICES[protocol])
            for d, s in cols
        ]
        lines.append("| {} | {} |".format(name, " | ".join(values)))
        paper = [PUBLISHED.get(name, {}).get((d, s)) for d, s in cols]
        if any(paper):  # the paper's numbers for the same pre-training, beneath ours
            lines.append(
                "| {} (published) | {} |".format(
                    name, " | ".join("{:.1f} / {:.1f}".format(*v) if v else "" for v in paper)
                )
            )
    return "\n".join(lines) + "\n"


def format_csv(rows, cols, grid, protocol="clean"):
    """One row per source; per column `<title> R1` and `<title> mAP` (empty if missing,
    "source" on the row's own training data), paper fine-tuned cells also `<title> epoch`,
    then `<title> config` (the first
    CONFIG_DIGITS of the hash of the merged config the cell ran with); under "both" the
    seed columns are named `<title> seed ...`; single-shot columns for the cells that
    report them, and a last `protocol` column."""
    protocols = PROTOCOL_CHOICES[protocol]
    groups = []  # (header, cell lookup, key)
    for p in protocols:
        prefix = " paper" if protocol == "both" and p == "paper" else ""
        for d, s in cols:
            title = column_title(d, s) + prefix
            groups += [(title + " R1", (d, s, p), "Rank-1"), (title + " mAP", (d, s, p), "mAP")]
            if p == "paper" and s == "finetune":
                groups.append((title + " epoch", (d, s, p), "best_epoch"))
            groups.append((title + " config", (d, s, p), "config_sha256"))
    for p in protocols:
        prefix = " paper" if protocol == "both" and p == "paper" else ""
        for d, s in cols:
            found = [_lookup(grid, n, d, s, p) for n in rows]
            if any(c is not None and c.metric("SS-Rank-1") is not None for c in found):
                title = column_title(d, s) + prefix
                groups += [
                    (title + " SS-R1", (d, s, p), "SS-Rank-1"),
                    (title + " SS-mAP", (d, s, p), "SS-mAP"),
                ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["pre-training"] + [g[0] for g in groups] + ["protocol"])
    for name in rows:
        line = [name]
        for _, (d, s, p), key in groups:
            cell = _lookup(grid, name, d, s, p)
            if cell is not None and cell.is_source:
                line.append(SOURCE_CELL if key in ("Rank-1", "mAP") else "")
                continue
            if key == "best_epoch":
                line.append(str(_epoch(cell) or ""))
                continue
            if key == "config_sha256":
                line.append(((cell.result or {}).get(key) or "")[:CONFIG_DIGITS] if cell else "")
                continue
            value = cell.metric(key) if cell is not None else None
            line.append("" if value is None else "{:.2f}".format(value))
        writer.writerow(line + [protocol])
    return buf.getvalue()


def write_chart(rows, cols, grid, path, protocol="clean"):
    """Grouped bars, one colour per source, for Rank-1 and mAP (CHART_SIZE pixels), of the
    paper numbers under protocol paper, else of the clean ones."""
    shown = "paper" if protocol == "paper" else "clean"
    import matplotlib  # here: its start-up is paid only when a chart is drawn

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    fig = Figure(figsize=CHART_SIZE_INCHES, dpi=CHART_DPI)
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(rows), 1)
    colours = matplotlib.colormaps["tab10"]
    for ax, (key, title) in zip(axes, (("Rank-1", "Rank-1 (%)"), ("mAP", "mAP (%)"))):
        for i, name in enumerate(rows):
            xs, ys = [], []
            for j, (d, s) in enumerate(cols):
                cell = _lookup(grid, name, d, s, shown)
                value = cell.metric(key) if cell is not None else None
                if value is not None and not math.isnan(value):
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(value)
            bars = ax.bar(xs, ys, width, label=name, color=colours(i % 10))
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([column_title(d, s) for d, s in cols], fontsize=9)
        ax.set_ylim(0, 105)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(title="pre-training", fontsize=8, loc="upper left")
    fig.suptitle(
        "Transfer of pre-trained models: direct and fine-tuned (protocol {})".format(shown)
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI)
    write_bytes_atomic(buf.getvalue(), path)


def cell_summary(cell):
    """One line of a done cell's numbers, for the progress log."""
    r1, m_ap = cell.metric("Rank-1"), cell.metric("mAP")
    text = "Rank-1 {:.1f}, mAP {:.1f}".format(r1, m_ap)
    if cell.result and cell.result.get("best_epoch"):
        text += " at epoch {} of {}".format(cell.result["best_epoch"], len(cell.result["history"]))
    if cell.metric("SS-Rank-1") is not None:
        text += "; single-shot Rank-1 {:.1f}, mAP {:.1f}".format(
            cell.metric("SS-Rank-1"), cell.metric("SS-mAP")
        )
    return text
