"""Exact fastreid re-id metrics computed one block of queries at a time.

Semantics are those of fastreid's `build_dist` + `evaluate_rank` (market1501 protocol):
gallery items with the query's pid AND camid are removed, queries left without a match
are skipped, CMC / AP / INP are defined as in `fastreid.evaluation.rank`, cosine distance is
`1 - normalize(q) @ normalize(g).T` and euclidean is `|q|^2 + |g|^2 - 2 q.g`, both computed
with the same torch operations as `fastreid.utils.compute_dist`, in float32.

Tie rule: gallery items at exactly the same distance from a query are ranked by gallery
index (lower first), i.e. the order of a *stable* argsort of the distance row. fastreid
uses a non-stable argsort, so its order among exact ties is undefined; the two agree
whenever no kept positive is at exactly the distance of an item of another identity
(`stats['tied_positives']` counts those).

Neither the full distance matrix nor any row sort is ever built. For each query the
kept positives are sorted by (distance, gallery index); the rank of the i-th of them is
i plus the number of other-identity gallery items before it, which is counted by
comparing the row with each distinct positive distance (on the items not farther than
the last positive). CMC needs the first rank, INP the last one and AP all of them.

Where a query keeps fewer gallery items than max_rank (tiny galleries only), CMC is 1 from
its first match on; fastreid's Cython code reads stale buffer values there. NaN distances
are not supported. Bitwise, the blocked float32 products may differ from fastreid's single
product by a few ulps (the BLAS kernel depends on the shape); metrics only move if a match and
another item are that close.

Clothes-aware protocols (`blocked_metrics(..., protocols=("CC", "SC"))`, the definitions of
Simple-CCReID's `evaluate_with_clothes`): `CC` keeps as positives the same pid on another camera
in OTHER clothes, `SC` the same pid on another camera in the SAME clothes; every other item of
the query's pid is removed. Both positive sets are subsets of the general ones and every item
of the query's pid is either a positive or removed, so a positive's rank under them is the
number of other-identity items before it (its general rank minus the general positives
before it) plus the protocol's positives before it: they reuse the general ranks of each
query, with no second sort and no second pass over the row.

Memory: with default arguments every entry point holds the caller's features, one block of
distances (TEST.EVAL_MEMORY_MB / `memory_mb`) and two small buffers; queries and gallery
chunks are normalised into reused buffers, so the caller's arrays are never modified and
never copied whole (`benchmarks/eval_scale.py` measures it).
"""

import logging
import time

import numpy as np
import torch

from .blocks import DistanceBlocks

__all__ = [
    "CLOTHES_PROTOCOL_NAMES",
    "blocked_metrics",
    "clothes_aware_protocols",
    "positive_ranks",
    "rank_metrics",
    "rank_metrics_from_distmat",
]

logger = logging.getLogger(__name__)
_LOG_EVERY_S = 10.0
_SORT_LIMIT = 1024  # below this many candidates sorting them beats one pass per threshold
# The protocols blocked_metrics computes (module docstring); "general" is always computed.
CLOTHES_PROTOCOL_NAMES = ("general", "CC", "SC")


def clothes_aware_protocols(names):
    """The clothes-aware protocols among `names` ("CC", "SC", in that order), checking that
    each name is one of CLOTHES_PROTOCOL_NAMES ("general" is accepted: it is always computed)."""
    names = tuple(names or ())
    unknown = [n for n in names if n not in CLOTHES_PROTOCOL_NAMES]
    if unknown:
        raise ValueError(
            "unknown evaluation protocol(s) {}: expected some of {}".format(
                ", ".join(map(repr, unknown)), ", ".join(CLOTHES_PROTOCOL_NAMES)
            )
        )
    return tuple(n for n in CLOTHES_PROTOCOL_NAMES[1:] if n in names)


class _Progress:
    def __init__(self, what, total):
        self.what, self.total, self.t0 = what, total, time.perf_counter()
        self.last = self.t0

    def step(self, done):
        now = time.perf_counter()
        if now - self.last >= _LOG_EVERY_S and done < self.total:
            self.last, el = now, now - self.t0
            logger.info(
                "%s: block %d/%d, %.0f s elapsed, ETA %.0f s",
                self.what,
                done,
                self.total,
                el,
                el * (self.total - done) / done,
            )


def _count_below_and_equal(cand, u):
    """For each ascending threshold in `u`: (#cand < u, #cand == u)."""
    if cand.size <= _SORT_LIMIT:
        srt = np.sort(cand)
        lt = np.searchsorted(srt, u, "left")
        return lt, np.searchsorted(srt, u, "right") - lt
    buf = np.empty(cand.shape, dtype=bool)
    lt = np.fromiter((np.count_nonzero(np.less(cand, x, out=buf)) for x in u), np.int64, u.size)
    eq = np.fromiter((np.count_nonzero(np.equal(cand, x, out=buf)) for x in u), np.int64, u.size)
    return lt, eq


def positive_ranks(row, same, pos, mask_buf=None):
    """0-based ranks, among kept gallery items and under the stable tie rule, of the kept
    positives `pos` of one query, in ascending order (with their distances and gallery
    indices, same order).

    row: float32 distances to the whole gallery. same: ascending gallery indices with the
    query's pid (kept positives and removed same-camera items). pos: ascending subset of
    `same` (the kept positives), non-empty. Returns (ranks, distances, number of
    positives tied with an other-identity item, gallery indices).
    """
    pv = row[pos]
    order = np.argsort(pv, kind="stable")  # by (distance, gallery index): pos is ascending
    pv, pos = pv[order], pos[order]
    mask = np.less_equal(row, pv[-1], out=mask_buf)
    cand = row.take(np.flatnonzero(mask)) if 2 * np.count_nonzero(mask) < row.size else row
    new = np.empty(pv.size, dtype=bool)  # distinct distances (pv is sorted)
    new[0] = True
    np.not_equal(pv[1:], pv[:-1], out=new[1:])
    u, inv = pv[new], np.cumsum(new) - 1
    lt, eq = _count_below_and_equal(cand, u)
    sv = np.sort(row[same])
    s_lt, s_le = np.searchsorted(sv, u, "left"), np.searchsorted(sv, u, "right")
    before = (lt - s_lt)[inv]  # other identities strictly closer
    tied = np.flatnonzero((eq - (s_le - s_lt))[inv] > 0)  # other identities at equal distance
    for i in tied:
        j, p = pos[i], pv[i]
        before[i] += np.count_nonzero(row[:j] == p) - np.count_nonzero(
            (row[same] == p) & (same < j)
        )
    return before + np.arange(pos.size), pv, tied.size, pos


class _GalleryGroups:
    """Gallery indices grouped by pid, ascending within each pid."""

    def __init__(self, g_pids):
        self.order = np.argsort(g_pids, kind="stable")
        self.sorted_pids = g_pids[self.order]

    def same_pid(self, pid):
        lo = np.searchsorted(self.sorted_pids, pid, side="left")
        hi = np.searchsorted(self.sorted_pids, pid, side="right")
        return self.order[lo:hi]


def _as_int64(a):
    if isinstance(a, torch.Tensor):
        a = a.cpu().numpy()
    return np.asarray(a, dtype=np.int64).reshape(-1)


class _PerQuery:
    """First / last rank, AP and INP of each query under one protocol (first -1: no
    positive, the query is skipped)."""

    def __init__(self, num_query):
        self.first = np.full(num_query, -1, dtype=np.int64)
        self.last = np.zeros(num_query, dtype=np.int64)
        self.ap = np.zeros(num_query, dtype=np.float64)
        self.inp = np.zeros(num_query, dtype=np.float64)

    def add(self, qi, ranks):
        """ranks: the ascending 0-based ranks of query qi's positives (non-empty)."""
        self.first[qi], self.last[qi] = ranks[0], ranks[-1]
        self.ap[qi] = np.mean(np.arange(1, ranks.size + 1) / (ranks + 1.0))
        self.inp[qi] = ranks.size / (ranks[-1] + 1.0)

    def summary(self, max_rank):
        """{'cmc', 'mAP', 'mINP', 'num_valid'} over the queries with a positive; None
        without any."""
        valid = self.first >= 0
        num_valid = int(valid.sum())
        if num_valid == 0:
            return None
        hits = np.bincount(np.minimum(self.first[valid], max_rank), minlength=max_rank + 1)
        return {
            "cmc": (np.cumsum(hits[:max_rank]) / num_valid).astype(np.float32),
            "mAP": float(self.ap[valid].mean()),
            "mINP": float(self.inp[valid].mean()),
            "num_valid": num_valid,
        }


def blocked_metrics(
    blocks,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank=50,
    roc_fprs=(),
    stats=None,
    q_clothes=None,
    g_clothes=None,
    protocols=(),
):
    """Exact CMC / mAP / mINP (and fastreid's TPR@FPR when `roc_fprs` is given) over the
    distance blocks of a `DistanceBlocks`. Returns a dict with 'cmc' (float32, length
    min(max_rank, num_gallery)), 'mAP', 'mINP', 'num_valid' and, with roc_fprs, 'tpr'
    ({fpr: tpr}; this costs a second pass over the blocks). `stats`, if a dict, receives
    'tied_positives' (kept positives at exactly the distance of an other-identity item),
    'distance_seconds' and 'rank_seconds' (time producing blocks / ranking in them).

    protocols: clothes-aware protocols to compute as well ("CC", "SC"; "general" is
    always computed), from the clothes ids `q_clothes` / `g_clothes` (ints, equal = same
    clothes). Each gets a key of its own with a dict like the general one ('cmc', 'mAP',
    'mINP', 'num_valid'), over its own queries with a positive.
    """
    q_pids, g_pids = _as_int64(q_pids), _as_int64(g_pids)
    q_camids, g_camids = _as_int64(q_camids), _as_int64(g_camids)
    nq, ng = blocks.num_query, blocks.num_gallery
    assert q_pids.size == nq and g_pids.size == ng, "pids do not match the features"
    extra = clothes_aware_protocols(protocols)
    if extra:
        if q_clothes is None or g_clothes is None:
            raise ValueError("protocols {} need q_clothes and g_clothes".format(extra))
        q_clothes, g_clothes = _as_int64(q_clothes), _as_int64(g_clothes)
        if q_clothes.size != nq or g_clothes.size != ng:
            raise ValueError(
                "clothes ids for {} queries and {} gallery items, features for {} and {}".format(
                    q_clothes.size, g_clothes.size, nq, ng
                )
            )
    groups = _GalleryGroups(g_pids)
    general = _PerQuery(nq)
    by_clothes = {name: _PerQuery(nq) for name in extra}
    tied = np.zeros(nq, dtype=np.int64)
    pos_dists = [None] * nq if roc_fprs else None

    mask_buf = np.empty(ng, dtype=bool)

    def work(start, block):
        for b in range(block.shape[0]):
            qi = start + b
            same = groups.same_pid(q_pids[qi])
            pos = same[g_camids[same] != q_camids[qi]]
            if pos.size == 0:
                continue
            ranks, pv, tied[qi], pos_sorted = positive_ranks(block[b], same, pos, mask_buf)
            general.add(qi, ranks)
            if pos_dists is not None:
                pos_dists[qi] = pv
            if by_clothes:
                # Other-identity items before each general positive; a protocol's positive
                # is preceded by those and by the protocol's own positives (docstring).
                others = ranks - np.arange(ranks.size)
                same_clothes = g_clothes[pos_sorted] == q_clothes[qi]
                for name, per_query in by_clothes.items():
                    keep = same_clothes if name == "SC" else ~same_clothes
                    if keep.any():
                        per_query.add(qi, others[keep] + np.arange(np.count_nonzero(keep)))

    t0 = time.perf_counter()
    rank_s = _for_each_block(blocks, work, "rank metrics")
    total_s = time.perf_counter() - t0
    max_rank = min(int(max_rank), ng)
    out = general.summary(max_rank)
    if out is None:
        raise ValueError("Error: all query identities do not appear in gallery")
    for name, per_query in by_clothes.items():
        out[name] = per_query.summary(max_rank)
        if out[name] is None:
            raise ValueError(
                "no query has a positive under the {} protocol (same pid, another camera, "
                "{} clothes)".format(name, "the same" if name == "SC" else "other")
            )
    if isinstance(stats, dict):
        stats.update(
            tied_positives=int(tied.sum()), rank_seconds=rank_s, distance_seconds=total_s - rank_s
        )
    if roc_fprs:
        pos_all = np.concatenate([p for p in pos_dists if p is not None])
        out["tpr"] = _tpr_at_fpr(blocks, groups, q_pids, pos_all, roc_fprs)
    return out


def _for_each_block(blocks, work, what):
    """Runs work(start, block) on every block, logging progress. The per-row work is
    many small numpy calls holding the GIL: threads do not speed it up, measured."""
    progress = _Progress(what, blocks.num_blocks)
    work_s = 0.0
    for i, (start, block) in enumerate(blocks):
        t = time.perf_counter()
        work(start, block)
        work_s += time.perf_counter() - t
        progress.step(i + 1)
    return work_s


def _tpr_at_fpr(blocks, groups, q_pids, pos_all, fprs):
    """fastreid's TPR@FPR (evaluate_roc + sklearn roc_curve with drop_intermediate + argmin
    over |fpr - target|) from the kept positive distances and, counted in a second pass,
    the number of negatives (other-identity pairs, all queries) strictly between and
    equal to each distinct positive distance."""
    u, m = np.unique(pos_all, return_counts=True)
    nu = u.size
    u_t = torch.from_numpy(u)
    hist = torch.zeros(2 * nu + 2, dtype=torch.int64)
    chunk = max(1, (1 << 22) // max(blocks.num_gallery, 1))

    def work(start, block):
        for s in range(0, block.shape[0], chunk):
            e = min(s + chunk, block.shape[0])
            x = torch.from_numpy(block[s:e])
            slot = torch.bucketize(x, u_t, out_int32=True)
            slot += torch.bucketize(x, u_t, right=True, out_int32=True)
            for r in range(s, e):  # same-pid items are not negatives
                slot[r - s, torch.from_numpy(groups.same_pid(q_pids[start + r]))] = 2 * nu + 1
            hist.add_(torch.bincount(slot.view(-1), minlength=2 * nu + 2))

    _for_each_block(blocks, work, "TPR@FPR")
    return tpr_from_counts(u, m, hist[: 2 * nu + 1].numpy(), fprs)


def tpr_from_counts(u, m, hist, fprs):
    """sklearn's roc_curve(labels, scores) (labels: 0 = positive pair, 1 = negative pair,
    scores = distances) evaluated at the points fastreid picks, from counts only.

    u, m: ascending distinct positive-pair distances and their multiplicities.
    hist[2a]: negatives strictly between u[a-1] and u[a] (a = 0: below u[0]; a = len(u):
    above u[-1]); hist[2a + 1]: negatives equal to u[a].
    """
    nu = u.size
    n_pos, n_neg = int(m.sum()), int(hist.sum())
    m_d = m[::-1].astype(np.int64)  # descending distances, as sklearn walks them
    eq_d = hist[1 : 2 * nu : 2][::-1].astype(np.int64)
    gap_d = hist[0 : 2 * nu : 2][::-1].astype(np.int64)  # negatives between u_d[k+1] and u_d[k]
    above = int(hist[2 * nu])
    fps = np.cumsum(m_d)
    tps = above + np.cumsum(eq_d) + np.concatenate(([0], np.cumsum(gap_d)[:-1]))
    k = np.arange(nu)
    has_prev = (k > 0) | (above > 0)
    nxt = np.minimum(k + 1, nu - 1)
    dropped = has_prev & (k < nu - 1) & (gap_d == 0) & (m_d[nxt] == m_d) & (eq_d[nxt] == eq_d)
    fpr = np.concatenate(([0.0], fps[~dropped] / float(n_pos)))
    tpr = np.concatenate(
        ([0.0], tps[~dropped] / float(n_neg) if n_neg else np.full((~dropped).sum(), np.nan))
    )
    return {f: float(tpr[np.argmin(np.abs(fpr - f))]) for f in fprs}


def rank_metrics(
    query_feats,
    gallery_feats,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    metric="cosine",
    max_rank=50,
    block_size=0,
    memory_mb=512,
    overwrite=False,
    stats=None,
):
    """Exact (cmc, mAP, mINP) of fastreid's build_dist + evaluate_rank, in query blocks.

    block_size: queries per block (0: from `memory_mb`, the budget of one float32 block).
    The inputs are not modified and not copied (see `DistanceBlocks`); overwrite=True lets
    float32 CPU inputs be normalised in place (cosine), which saves re-normalising gallery
    chunks per block and gives the same numbers. cmc is a float32 array like fastreid's;
    mAP, mINP are floats.
    """
    blocks = DistanceBlocks(query_feats, gallery_feats, metric, block_size, memory_mb, overwrite)
    r = blocked_metrics(blocks, q_pids, g_pids, q_camids, g_camids, max_rank, stats=stats)
    return r["cmc"], r["mAP"], r["mINP"]


def rank_metrics_from_distmat(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank=50,
    block_size=0,
    memory_mb=512,
    stats=None,
):
    """Same metrics for a precomputed (num_query, num_gallery) distance matrix."""
    blocks = DistanceBlocks.from_distmat(distmat, block_size, memory_mb)
    r = blocked_metrics(blocks, q_pids, g_pids, q_camids, g_camids, max_rank, stats=stats)
    return r["cmc"], r["mAP"], r["mINP"]
