"""Writing a table: its markdown, its CSV and its chart, each atomically (lastreid.atomic),
so an interrupted tool leaves the previous table or the whole new one."""

import csv
import io
import os

from ..atomic import write_bytes_atomic, write_text_atomic

__all__ = ["CHART_DPI", "CONFIG_DIGITS", "column_table", "csv_text", "number", "r1_map"]
__all__ += ["write_tables"]

CHART_DPI = 100
CONFIG_DIGITS = 12  # of a run's config_sha256 in a CSV: enough to tell recipes apart


def number(value, fmt="{:.2f}"):
    """A CSV cell: `fmt` of a number, "" when missing."""
    return "" if value is None else fmt.format(value)


def r1_map(result):
    """ "Rank-1 / mAP" of a run's stored numbers, " (ep N)" after a selected epoch; or "-"."""
    metrics = (result or {}).get("metrics") or {}
    if not isinstance(metrics.get("Rank-1"), (int, float)):
        return "-"
    epoch = result.get("best_epoch")
    return f"{metrics['Rank-1']:.1f} / {metrics['mAP']:.1f}" + (f" (ep {epoch})" if epoch else "")


def csv_text(rows):
    """Rows (header first) as CSV text, "\\n" line ends."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def column_table(note, columns, rows):
    """(markdown, CSV rows) of a line per row. columns: [(markdown header, CSV header, cell)],
    cell(row) = (markdown text, CSV value); a header None leaves the column out of its table."""
    shown = [c for c in columns if c[0] is not None]
    lines = [note, "", "| " + " | ".join(c[0] for c in shown) + " |", "|" + "---|" * len(shown)]
    table = [[c[1] for c in columns if c[1] is not None]]
    for row in rows:
        cells = [(md, name, cell(row)) for md, name, cell in columns]
        lines.append("| " + " | ".join(text for md, _, (text, _) in cells if md is not None) + " |")
        table.append([value for _, name, (_, value) in cells if name is not None])
    return "\n".join(lines) + "\n", table


def write_tables(folder, stem, markdown, rows, draw=None, size=(11.0, 4.5)):
    """Writes <folder>/<stem>.md and .csv (`rows`: header first) and, with `draw(figure)`, the
    chart (<stem> "table" -> "chart").png of `size` inches at CHART_DPI; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, stem + ".md"), os.path.join(folder, stem + ".csv")]
    write_text_atomic(markdown, paths[0])
    write_text_atomic(csv_text(rows), paths[1])
    if draw is not None:
        import matplotlib  # here: its start-up is paid only when a chart is drawn

        matplotlib.use("Agg")
        from matplotlib.figure import Figure  # no pyplot: no global figure state

        fig = Figure(figsize=size, dpi=CHART_DPI)
        draw(fig)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=CHART_DPI)
        paths.append(os.path.join(folder, stem.replace("table", "chart") + ".png"))
        write_bytes_atomic(buf.getvalue(), paths[-1])
    return paths
