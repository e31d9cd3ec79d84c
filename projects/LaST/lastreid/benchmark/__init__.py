"""The LaST baselines compared (docs/baselines.md): `tools/benchmark.py` is the
command line. `runner` trains each method and measures its --eval-only run, `report` writes
the table, `measure.py` is the measuring wrapper of those runs."""

from .report import COLUMNS, Row, format_csv, format_markdown, write_chart
from .runner import DEFAULT_METHODS, METHODS, Benchmark, config_path

__all__ = [
    "COLUMNS",
    "DEFAULT_METHODS",
    "METHODS",
    "Benchmark",
    "Row",
    "config_path",
    "format_csv",
    "format_markdown",
    "write_chart",
]
