"""The transfer table as markdown, CSV rows and a bar chart, in the shape of the paper's."""

import math
from dataclasses import dataclass
from typing import Optional

from ..experiments.protocols import PROTOCOL_CHOICES, protocol_note
from ..experiments.table import CONFIG_DIGITS, number, r1_map

__all__ = ["CHART_SIZE", "DEFAULT_DATASETS", "PUBLISHED", "SETTINGS", "SOURCE_CELL", "Cell"]
__all__ += ["cell_summary", "columns", "csv_rows", "format_markdown", "tables"]

DEFAULT_DATASETS = ("PRCC", "CelebReID")  # the paper's published table
SETTINGS = ("direct", "finetune")
SHORT_NAMES = dict(CelebReID="Celeb", Market1501="Market", DukeMTMC="Duke", VCClothes="VC-Clothes")
SETTING_NAMES = {"direct": "direct", "finetune": "fine-tuned"}
SOURCE_CELL = "source"  # the text of a cell on its row's own training data
CHART_SIZE = (1100, 450)  # (w, h) px at experiments.table.CHART_DPI
# The paper's table (Rank-1, mAP in %): BoT ResNet-50 pre-trained on each source; per row
# (PRCC direct, Celeb direct, PRCC fine-tuned, Celeb fine-tuned).
_PAPER = {
    "ImageNet": ((24.7, 13.5), (28.7, 3.0), (43.1, 41.3), (49.2, 8.7)),
    "Market1501": ((29.0, 24.3), (36.7, 3.7), (44.3, 43.1), (49.3, 8.7)),
    "DukeMTMC": ((28.3, 24.1), (40.9, 4.6), (43.9, 44.2), (49.8, 8.9)),
    "MSMT17": ((26.2, 24.6), (43.4, 5.0), (43.7, 44.1), (51.0, 9.0)),
    "LaST": ((39.3, 32.6), (47.0, 7.0), (54.4, 54.3), (56.1, 11.7)),
}


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
        paper = " | paper" if self.protocol == "paper" else ""
        return f"{self.source.name} | {_column_title(self.dataset, self.setting, ' | ')}{paper}"

    @property
    def is_source(self):  # on a dataset the row's model was trained on: not run
        return self.dataset in getattr(self.source, "trained_on", ())

    @property
    def paper_selection(self):  # the cell picks its best epoch on the test split
        return self.protocol == "paper" and self.setting == "finetune"

    def metric(self, key):
        value = (self.result or {}).get("metrics", {}).get(key)
        return float(value) if isinstance(value, (int, float)) else None

    def get(self, key):
        """A value of the cell's CSV: "source", a metric, its epoch or its recipe hash."""
        if self.is_source:
            return SOURCE_CELL if key in ("Rank-1", "mAP") else ""
        if key in ("best_epoch", "config_sha256"):
            return str((self.result or {}).get(key) or "")[:CONFIG_DIGITS]
        return number(self.metric(key))


def _column_title(dataset, setting, sep=" "):
    return SHORT_NAMES.get(dataset, dataset) + sep + SETTING_NAMES[setting]


def columns(datasets=DEFAULT_DATASETS, settings=SETTINGS):
    """(dataset, setting) pairs in the paper's column order: settings outer, datasets inner."""
    return [(d, s) for s in settings for d in datasets]


PUBLISHED = {row: dict(zip(columns(), numbers)) for row, numbers in _PAPER.items()}


def _text(cell):
    return SOURCE_CELL if cell.is_source else r1_map(cell.result)


def _lookup(grid, name, dataset, setting, protocol):  # a missing cell: an empty one
    cell = grid.get((name, dataset, setting, protocol))
    return cell or Cell(None, dataset, setting, protocol=protocol)


def format_markdown(rows, cols, grid, protocol="clean"):
    """A row per source, "R1 / mAP" ("clean; paper" under "both"), the paper's numbers beneath."""
    lines = [
        "Rank-1 / mAP (%); " + protocol_note(protocol, "fine-tuned cells report"),
        "",
        "| pre-training | " + " | ".join(_column_title(d, s) for d, s in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name in rows:
        values = [
            "; ".join(_text(_lookup(grid, name, d, s, p)) for p in PROTOCOL_CHOICES[protocol])
            for d, s in cols
        ]
        lines.append("| {} | {} |".format(name, " | ".join(values)))
        paper = [PUBLISHED.get(name, {}).get(col) for col in cols]
        if any(paper):  # the paper's numbers for the same pre-training, beneath ours
            published = ("{:.1f} / {:.1f}".format(*v) if v else "" for v in paper)
            lines.append("| {} (published) | {} |".format(name, " | ".join(published)))
    return "\n".join(lines) + "\n"


def csv_rows(rows, cols, grid, protocol="clean"):
    """Header, then a row per source: per column and protocol R1, mAP, (paper fine-tuned)
    epoch, config (its recipe hash); then single-shot columns where a cell has them."""
    groups, singles = [], []  # (header, (dataset, setting, protocol), key)
    for p in PROTOCOL_CHOICES[protocol]:
        for d, s in cols:
            title = _column_title(d, s) + (" paper" if protocol == "both" and p == "paper" else "")
            keys = [("R1", "Rank-1"), ("mAP", "mAP")]
            keys += [("epoch", "best_epoch")] if p == "paper" and s == "finetune" else []
            keys += [("config", "config_sha256")]
            groups += [(f"{title} {h}", (d, s, p), k) for h, k in keys]
            if any(_lookup(grid, n, d, s, p).metric("SS-Rank-1") is not None for n in rows):
                singles += [(f"{title} SS-{h}", (d, s, p), f"SS-{k}") for h, k in keys[:2]]
    groups += singles
    table = [["pre-training"] + [g[0] for g in groups] + ["protocol"]]
    for name in rows:
        table.append([name] + [_lookup(grid, name, *at).get(k) for _, at, k in groups] + [protocol])
    return table


def tables(rows, cols, grid, protocol="clean"):
    """(markdown, CSV rows, draw(figure)) of the table."""
    args = (rows, cols, grid, protocol)
    return format_markdown(*args), csv_rows(*args), lambda fig: _draw_chart(fig, *args)


def _draw_chart(fig, rows, cols, grid, protocol="clean"):
    """Grouped bars, a colour per source, of Rank-1 and mAP (paper's under protocol paper)."""
    import matplotlib

    shown = "paper" if protocol == "paper" else "clean"
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(rows), 1)
    for ax, key in zip(axes, ("Rank-1", "mAP")):
        for i, name in enumerate(rows):
            values = [_lookup(grid, name, d, s, shown).metric(key) for d, s in cols]
            found = [(j, v) for j, v in enumerate(values) if v is not None and not math.isnan(v)]
            xs = [j - 0.4 + width * (i + 0.5) for j, _ in found]
            color = matplotlib.colormaps["tab10"](i % 10)
            bars = ax.bar(xs, [v for _, v in found], width, label=name, color=color)
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([_column_title(d, s) for d, s in cols], fontsize=9)
        ax.set_ylim(0, 105)
        ax.set_title(key + " (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(title="pre-training", fontsize=8, loc="upper left")
    fig.suptitle(f"Transfer of pre-trained models: direct and fine-tuned (protocol {shown})")


def cell_summary(cell):
    """A done cell's numbers in a line, for the progress log."""
    text = "Rank-1 {:.1f}, mAP {:.1f}".format(cell.metric("Rank-1"), cell.metric("mAP"))
    if cell.result.get("best_epoch"):
        text += " at epoch {} of {}".format(cell.result["best_epoch"], len(cell.result["history"]))
    if cell.metric("SS-Rank-1") is not None:
        text += "; single-shot Rank-1 {:.1f}, mAP {:.1f}".format(
            cell.metric("SS-Rank-1"), cell.metric("SS-mAP")
        )
    return text
