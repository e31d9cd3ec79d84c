"""The generalisation experiments: pre-trained models x {PRCC, Celeb-reID, Market-1501,
DukeMTMC-reID} x {direct, fine-tuned}, under the clean and the paper protocol, and the
joint-training comparison on Market-1501 (docs/generalisation.md). `tools/transfer_matrix.py`
and `tools/joint_table.py` are the command lines. The rows come from `sources`, each cell's
numbers from `results`, `runner` runs the cells, `report` writes the table, `joint` runs
and reports the joint trainings."""

from ..checkpoint import LAYOUT_FASTREID, LAYOUT_REFERENCE, LAYOUT_TORCHVISION, checkpoint_layout
from .joint import JOINT_RUNS, JointComparison, JointRun
from .recipes import (
    STALE_CHOICES,
    add_stale_option,
    recipe_sha256,
    settle,
    settle_stale,
    stale_runs,
)
from .report import (
    CHART_SIZE,
    DATASETS,
    DEFAULT_DATASETS,
    PROTOCOL_CHOICES,
    PROTOCOLS,
    PUBLISHED,
    SETTINGS,
    SOURCE_CELL,
    add_protocol_option,
    column_title,
    columns,
    format_csv,
    format_markdown,
    write_chart,
)
from .results import best_epoch
from .runner import PAPER_FINETUNE_OPTS, PAPER_OPTS, SOURCE_FILE, Cell, TransferMatrix
from .sources import (
    CONFIGS,
    IMAGENET,
    PAPER_ROWS,
    PAPER_SELECTION,
    RANDOM_INIT,
    ROW_ORDER,
    SOURCE_RECIPES,
    Source,
    discover_sources,
    slugify,
    trained_sources,
    training_datasets,
    weights_signature,
    write_random_init,
)
from .training import pretrain_off

__all__ = [
    "CHART_SIZE",
    "CONFIGS",
    "DATASETS",
    "DEFAULT_DATASETS",
    "IMAGENET",
    "JOINT_RUNS",
    "LAYOUT_FASTREID",
    "LAYOUT_REFERENCE",
    "LAYOUT_TORCHVISION",
    "PAPER_ROWS",
    "PAPER_SELECTION",
    "PROTOCOLS",
    "PROTOCOL_CHOICES",
    "add_protocol_option",
    "add_stale_option",
    "PUBLISHED",
    "RANDOM_INIT",
    "ROW_ORDER",
    "STALE_CHOICES",
    "PAPER_FINETUNE_OPTS",
    "PAPER_OPTS",
    "SETTINGS",
    "SOURCE_CELL",
    "SOURCE_FILE",
    "SOURCE_RECIPES",
    "Cell",
    "JointComparison",
    "JointRun",
    "Source",
    "TransferMatrix",
    "best_epoch",
    "checkpoint_layout",
    "column_title",
    "columns",
    "discover_sources",
    "format_csv",
    "format_markdown",
    "pretrain_off",
    "recipe_sha256",
    "settle",
    "settle_stale",
    "stale_runs",
    "slugify",
    "trained_sources",
    "training_datasets",
    "weights_signature",
    "write_chart",
    "write_random_init",
]
