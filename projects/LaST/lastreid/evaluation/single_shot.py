"""PRCC's single-shot protocol beside the full-gallery metrics (TEST.SINGLE_SHOT).

Single-shot: the gallery keeps ONE randomly drawn image of each identity; the metrics of
the query set against that reduced gallery are averaged over TEST.SINGLE_SHOT.TRIALS draws,
drawn from one `numpy.random.default_rng(TEST.SINGLE_SHOT.SEED)` stream, so the numbers are
reproducible. The usual rule still applies to each reduced gallery (an item with the
query's pid and camid is not a match candidate; PRCC's query C / gallery A never share a
camera).

`SingleShotReidEvaluator` is `BlockedReidEvaluator` plus the keys `SS-Rank-1`, `SS-Rank-5`,
`SS-Rank-10`, `SS-mAP` and `SS-mINP` (in %, means over the trials); the full-gallery keys,
including `metric`, are unchanged. The trials use the stored query / gallery features
(before TEST.AQE / TEST.RERANK, which apply to the full-gallery numbers only) and
`rank_metrics`, so they are exact and memory-bounded like the full evaluation.
"""

import logging

import numpy as np
import torch

from ..errors import ConfigError
from .evaluator import BlockedReidEvaluator
from .rank import rank_metrics

logger = logging.getLogger(__name__)

__all__ = ["SingleShotReidEvaluator", "single_shot_draws", "single_shot_metrics"]

SS_PREFIX = "SS-"


def single_shot_draws(g_pids, trials, seed=0):
    """`trials` arrays of gallery indices, each holding one uniformly drawn index per
    gallery identity (identities in ascending pid order, indices ascending with them)."""
    g_pids = np.asarray(g_pids).reshape(-1)
    if g_pids.size == 0:
        raise ValueError("single-shot protocol on an empty gallery")
    order = np.argsort(g_pids, kind="stable")
    _, starts, counts = np.unique(g_pids[order], return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)
    return [order[starts + rng.integers(0, counts)] for _ in range(int(trials))]


def single_shot_metrics(
    query_feats,
    gallery_feats,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    trials=10,
    seed=0,
    metric="cosine",
    block_size=0,
    memory_mb=512,
    ranks=(1, 5, 10),
):
    """Mean single-shot metrics (fractions, not %) over `trials` draws: a dict with
    'Rank-k' for k in `ranks` (capped at the reduced gallery size), 'mAP', 'mINP' and
    'trials'. Features: (n, dim) tensors or arrays; pids / camids: 1-D int arrays."""
    if int(trials) < 1:
        raise ConfigError("TEST.SINGLE_SHOT.TRIALS must be at least 1, got {}".format(trials))
    q = torch.as_tensor(query_feats)
    g = torch.as_tensor(gallery_feats)
    g_pids, g_camids = np.asarray(g_pids).reshape(-1), np.asarray(g_camids).reshape(-1)
    sums = {}
    for sel in single_shot_draws(g_pids, trials, seed):
        idx = torch.from_numpy(sel)
        cmc, m_ap, m_inp = rank_metrics(
            q,
            g.index_select(0, idx),
            q_pids,
            g_pids[sel],
            q_camids,
            g_camids[sel],
            metric=metric,
            max_rank=max(ranks),
            block_size=block_size,
            memory_mb=memory_mb,
        )
        values = {"Rank-{}".format(k): float(cmc[min(k, len(cmc)) - 1]) for k in ranks}
        values.update({"mAP": float(m_ap), "mINP": float(m_inp)})
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
    out = {key: value / int(trials) for key, value in sums.items()}
    out["trials"] = int(trials)
    return out


class SingleShotReidEvaluator(BlockedReidEvaluator):
    """BlockedReidEvaluator that also reports the single-shot protocol (module docstring)."""

    def extra_metrics(self, feats, pids, camids):
        nq, test = self._num_query, self.cfg.TEST
        ss = single_shot_metrics(
            feats[:nq],
            feats[nq:],
            pids[:nq],
            pids[nq:],
            camids[:nq],
            camids[nq:],
            trials=test.SINGLE_SHOT.TRIALS,
            seed=test.SINGLE_SHOT.SEED,
            metric=test.METRIC,
            block_size=test.QUERY_BLOCK_SIZE,
            memory_mb=test.EVAL_MEMORY_MB,
        )
        extra = {SS_PREFIX + key: value * 100 for key, value in ss.items() if key != "trials"}
        logger.info(
            "Single-shot protocol (%d trials, seed %d): Rank-1 %.2f, mAP %.2f",
            ss["trials"],
            test.SINGLE_SHOT.SEED,
            extra["SS-Rank-1"],
            extra["SS-mAP"],
        )
        return extra
