"""Exact, memory-bounded re-id evaluation for large galleries (LaST test: 10k x 125k).

- `rank_metrics` / `rank_metrics_from_distmat`: fastreid's (cmc, mAP, mINP), computed one
  query block at a time; ties broken by gallery order (see `rank`).
- the clothes-aware protocols `CC` and `SC` beside the general one (`blocked_metrics(...,
  protocols=...)`, `BlockedReidEvaluator(..., clothes=, clothes_protocols=)`).
- `BlockedReidEvaluator`: drop-in for fastreid's ReidEvaluator built on them. It is
  imported on first use, so that the metrics alone do not load fastreid's evaluation
  package (faiss, sklearn: ~70 MB of RSS).
"""

from .blocks import DistanceBlocks, auto_block_size
from .rank import (
    CLOTHES_PROTOCOL_NAMES,
    blocked_metrics,
    clothes_aware_protocols,
    rank_metrics,
    rank_metrics_from_distmat,
)
from .rerank import blocked_aqe, rerank_distmat

__all__ = [
    "BlockedReidEvaluator",
    "CLOTHES_PROTOCOL_NAMES",
    "DistanceBlocks",
    "auto_block_size",
    "blocked_aqe",
    "blocked_metrics",
    "clothes_aware_protocols",
    "rank_metrics",
    "rank_metrics_from_distmat",
    "rerank_distmat",
]


def __getattr__(name):
    # Lazy for memory, not for a cycle: the evaluator imports fastreid.evaluation.
    if name == "BlockedReidEvaluator":
        from .evaluator import BlockedReidEvaluator

        return BlockedReidEvaluator
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
