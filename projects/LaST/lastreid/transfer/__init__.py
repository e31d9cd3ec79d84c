"""The generalisation experiments: pre-trained models x {PRCC, Celeb-reID} x {direct,
fine-tuned}, under the clean and the seed protocol (README: Generalisation).
`tools/transfer_matrix.py` is the command line. The rows come from `sources`, each cell's
numbers from `results`, `runner` runs the cells and `report` writes the table."""

from ..checkpoint import LAYOUT_FASTREID, LAYOUT_REFERENCE, LAYOUT_TORCHVISION, checkpoint_layout
from .recipes import STALE_CHOICES, recipe_sha256, settle_stale, stale_runs
from .report import (
    CHART_SIZE,
    DATASETS,
    PROTOCOL_CHOICES,
    PROTOCOLS,
    PUBLISHED,
    SETTINGS,
    column_title,
    columns,
    format_csv,
    format_markdown,
    write_chart,
)
from .results import best_epoch
from .runner import SEED_FINETUNE_OPTS, SEED_OPTS, SOURCE_FILE, Cell, TransferMatrix
from .sources import (
    CONFIGS,
    IMAGENET,
    PAPER_ROWS,
    RANDOM_INIT,
    SOURCE_RECIPES,
    Source,
    discover_sources,
    slugify,
    trained_sources,
    weights_signature,
    write_random_init,
)

__all__ = [
    "CHART_SIZE",
    "CONFIGS",
    "DATASETS",
    "IMAGENET",
    "LAYOUT_FASTREID",
    "LAYOUT_REFERENCE",
    "LAYOUT_TORCHVISION",
    "PAPER_ROWS",
    "PROTOCOLS",
    "PROTOCOL_CHOICES",
    "PUBLISHED",
    "RANDOM_INIT",
    "STALE_CHOICES",
    "SEED_FINETUNE_OPTS",
    "SEED_OPTS",
    "SETTINGS",
    "SOURCE_FILE",
    "SOURCE_RECIPES",
    "Cell",
    "Source",
    "TransferMatrix",
    "best_epoch",
    "checkpoint_layout",
    "column_title",
    "columns",
    "discover_sources",
    "format_csv",
    "format_markdown",
    "recipe_sha256",
    "settle_stale",
    "stale_runs",
    "slugify",
    "trained_sources",
    "weights_signature",
    "write_chart",
    "write_random_init",
]
