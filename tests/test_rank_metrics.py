"""lastreid.evaluation.rank: exact blocked metrics vs fastreid and vs a direct numpy version."""

import lastreid  # noqa: F401  (before fastreid)
from lastreid.evaluation import (
    DistanceBlocks,
    blocked_metrics,
    rank_metrics,
    rank_metrics_from_distmat,
)
from lastreid.evaluation import blocks as blocks_module

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastreid.evaluation.rank import IS_CYTHON_AVAI, evaluate_rank
from fastreid.evaluation.roc import evaluate_roc
from fastreid.utils.compute_dist import build_dist
from sklearn import metrics as skm

ROC_FPRS = (1e-4, 1e-3, 1e-2)


def make_case(seed, nq=40, ng=300, dim=16, n_pid=12, n_cam=3, signal=1.0):
    """Features with an identity component; some query pids absent from the gallery,
    camera ids shared so that same-pid-same-camera removal happens."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, n_pid + 3, nq)  # pids >= n_pid have no gallery image
    g_pids = rng.integers(0, n_pid, ng)
    centers = rng.standard_normal((n_pid + 3, dim))
    qf = rng.standard_normal((nq, dim)) + signal * centers[q_pids]
    gf = rng.standard_normal((ng, dim)) + signal * centers[g_pids]
    return (
        torch.from_numpy(qf.astype(np.float32)),
        torch.from_numpy(gf.astype(np.float32)),
        q_pids,
        g_pids,
        rng.integers(0, n_cam, nq),
        rng.integers(0, n_cam, ng),
    )


def reference(dist, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Direct computation from the definitions, with a stable sort of every row."""
    cmc_sum, aps, inps = np.zeros(min(max_rank, dist.shape[1])), [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        hit = g_pids[order][keep] == q_pids[i]
        if not hit.any():
            continue
        ranks = np.flatnonzero(hit)  # 0-based positions of the matches
        cmc_sum += np.arange(cmc_sum.size) >= ranks[0]
        aps.append(np.mean(np.arange(1, ranks.size + 1) / (ranks + 1)))
        inps.append(ranks.size / (ranks[-1] + 1))
    return cmc_sum / len(aps), np.mean(aps), np.mean(inps)


def separated(dist, q_pids, g_pids, q_camids, g_camids, tol=1e-5):
    """Queries none of whose kept matches is within tol (relative) of a kept item of another
    identity: only there is the ranking independent of ties and of float32 rounding."""
    ok = np.ones(dist.shape[0], dtype=bool)
    for i in range(dist.shape[0]):
        same = g_pids == q_pids[i]
        pos = same & (g_camids != q_camids[i])
        d_pos, d_other = dist[i, pos], dist[i, ~same]
        gap = np.abs(d_pos[:, None] - d_other[None, :])
        ok[i] = gap.size == 0 or gap.min() > tol * max(1.0, np.abs(dist[i]).max())
    return ok


def assert_metrics_close(ours, theirs, atol=1e-6):
    cmc, m_ap, m_inp = ours
    assert cmc.dtype == np.float32
    np.testing.assert_allclose(cmc, np.asarray(theirs[0])[: cmc.size], rtol=0, atol=atol)
    assert abs(m_ap - float(np.mean(theirs[1]))) <= atol
    assert abs(m_inp - float(np.mean(theirs[2]))) <= atol


def separated_case(seed, metric, **kw):
    qf, gf, qp, gp, qc, gc = make_case(seed, **kw)
    dist = build_dist(qf, gf, metric)
    keep = separated(dist, qp, gp, qc, gc)
    return qf[keep], gf, qp[keep], gp, qc[keep], gc, dist[keep]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("block_size", [1, 3, 7, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_fastreid_cython_python_and_numpy(metric, block_size, seed):
    qf, gf, qp, gp, qc, gc, dist = separated_case(seed, metric)
    assert qf.shape[0] >= 30  # most queries are well separated
    no_match = ~np.isin(qp, gp)
    removed = sum(((gp == p) & (gc == c)).sum() for p, c in zip(qp, qc))
    assert no_match.any() and removed > 0  # both protocol rules are exercised
    ours = rank_metrics(qf, gf, qp, gp, qc, gc, metric=metric, block_size=block_size)
    assert IS_CYTHON_AVAI
    assert_metrics_close(ours, evaluate_rank(dist, qp, gp, qc, gc, max_rank=50))
    assert_metrics_close(ours, evaluate_rank(dist, qp, gp, qc, gc, max_rank=50, use_cython=False))
    ref = reference(dist, qp, gp, qc, gc)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-6)
    assert abs(ours[1] - ref[1]) < 1e-9 and abs(ours[2] - ref[2]) < 1e-9


def test_block_sizes_and_memory_budget_agree():
    qf, gf, qp, gp, qc, gc = make_case(3, nq=23)
    runs = [rank_metrics(qf, gf, qp, gp, qc, gc, block_size=b) for b in (1, 5, 23, 500)]
    runs.append(rank_metrics(qf, gf, qp, gp, qc, gc, memory_mb=0.005))  # a few rows a block
    assert DistanceBlocks(qf, gf, memory_mb=0.005).num_blocks > 1
    dist = build_dist(qf, gf, "cosine")
    runs += [rank_metrics_from_distmat(dist, qp, gp, qc, gc, block_size=b) for b in (1, 4, 99)]
    for cmc, m_ap, m_inp in runs[1:]:
        np.testing.assert_allclose(cmc, runs[0][0], atol=1e-6)
        assert abs(m_ap - runs[0][1]) < 1e-6 and abs(m_inp - runs[0][2]) < 1e-6


INPUT_KINDS = {
    "torch-f32": lambda x: x.clone(),
    "numpy-f32": lambda x: x.numpy().copy(),
    "torch-f64": lambda x: x.double(),
    "numpy-f16": lambda x: x.half().numpy(),
    "strided-f32": lambda x: torch.cat([x, x], dim=1)[:, ::2],  # a non-contiguous view
}


def previous_distances(qf, gf, metric):
    """The whole-matrix float32 distances of the previous path (cast, F.normalize, one
    product), i.e. fastreid's compute_dist on float32 features."""
    q, g = torch.as_tensor(qf).float(), torch.as_tensor(gf).float()
    if metric == "cosine":
        return (1 - torch.mm(F.normalize(q, dim=1), F.normalize(g, dim=1).t())).numpy()
    out = torch.pow(q, 2).sum(1)[:, None] + torch.pow(g, 2).sum(1)[None]
    return out.addmm_(q, g.t(), beta=1, alpha=-2).numpy()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("kind", sorted(INPUT_KINDS))
def test_caller_arrays_unchanged_and_distances_as_before(metric, kind, monkeypatch):
    """The default path reads the caller's features (any float dtype, tensor or array,
    contiguous or not) without modifying them; gallery chunks of 7 rows (patched: the real
    chunk is larger than these galleries) give the previous path's distances."""
    monkeypatch.setattr(blocks_module, "_GALLERY_CHUNK", 7)
    qf0, gf0, qp, gp, qc, gc = make_case(4, nq=30, ng=101)
    qf, gf = INPUT_KINDS[kind](qf0), INPUT_KINDS[kind](gf0)
    q_before, g_before = torch.as_tensor(qf).clone(), torch.as_tensor(gf).clone()
    blocks = DistanceBlocks(qf, gf, metric, block_size=8)
    dist = np.concatenate([b.copy() for _, b in blocks])
    ours = rank_metrics(qf, gf, qp, gp, qc, gc, metric=metric, block_size=8)
    assert torch.equal(torch.as_tensor(qf), q_before) and torch.equal(torch.as_tensor(gf), g_before)
    before = previous_distances(qf, gf, metric)
    # A few ulps of the terms at most (BLAS kernel shapes, strided rows): 8 float32 ulps of
    # the largest term is the tolerance on any BLAS (bit-identical with some).
    scale = 1.0 if metric == "cosine" else 2 * float(np.abs(before).max())
    np.testing.assert_allclose(dist, before, rtol=0, atol=8 * np.finfo(np.float32).eps * scale)
    theirs = evaluate_rank(
        build_dist(torch.as_tensor(qf).float(), torch.as_tensor(gf).float(), metric),
        qp,
        gp,
        qc,
        gc,
        max_rank=50,
    )
    assert_metrics_close(ours, theirs)
    # overwrite=True normalises float32 CPU inputs in place (the evaluator's own buffer)
    # and gives the same distances (torch's row norms of a strided view round differently).
    q2, g2 = torch.as_tensor(qf).float().contiguous(), torch.as_tensor(gf).float().contiguous()
    dist2 = np.concatenate([b.copy() for _, b in DistanceBlocks(q2, g2, metric, 8, overwrite=True)])
    # Products of other shapes than the default path's chunks: the same 8-ulp tolerance.
    np.testing.assert_allclose(dist2, dist, rtol=0, atol=8 * np.finfo(np.float32).eps * scale)
    if metric == "cosine":
        assert torch.allclose(g2.norm(dim=1), torch.ones(g2.shape[0]), atol=1e-6)


def test_subset_blocks_are_rows_of_the_full_blocks():
    qf, gf, *_ = make_case(10, nq=25, ng=60)
    blocks = DistanceBlocks(qf, gf, block_size=4)
    full = np.concatenate([b.copy() for _, b in blocks])
    pick = np.array([24, 3, 3, 0, 17])
    part = np.concatenate([b.copy() for _, b in blocks.subset(pick)])
    # the same numbers up to the few ulps of BLAS kernel shapes (5 rows vs 4 per product)
    np.testing.assert_allclose(part, full[pick], rtol=0, atol=4 * np.finfo(np.float32).eps)


def test_mismatched_feature_dims_are_refused():
    with pytest.raises(ValueError, match="same dim"):
        DistanceBlocks(torch.zeros(3, 8), torch.zeros(5, 9))


@pytest.mark.parametrize("block_size", [1, 3, 64])
def test_ties_follow_gallery_order(block_size):
    """Integer distances: many exact ties, ranked by gallery index (a stable argsort)."""
    rng = np.random.default_rng(5)
    qf, gf, qp, gp, qc, gc = make_case(5, nq=30, ng=120)
    dist = rng.integers(0, 6, (30, 120)).astype(np.float32)
    stats = {}
    ours = rank_metrics_from_distmat(dist, qp, gp, qc, gc, block_size=block_size, stats=stats)
    assert stats["tied_positives"] > 10
    ref = reference(dist, qp, gp, qc, gc)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-6)
    assert abs(ours[1] - ref[1]) < 1e-9 and abs(ours[2] - ref[2]) < 1e-9
    # Reversing the gallery changes the tie order, hence (here) the metrics.
    rev = rank_metrics_from_distmat(dist[:, ::-1].copy(), qp, gp[::-1], qc, gc[::-1])
    assert rev[1] != ours[1]


def test_tie_rule_by_hand():
    # One query (pid 7, camera 0); gallery: 0 other id @0.5, 1 match @0.5, 2 match @0.2,
    # 3 other id @0.5, 4 match on the query's camera @0.1 (removed).
    dist = np.array([[0.5, 0.5, 0.2, 0.5, 0.1]], dtype=np.float32)
    g_pids, g_camids = np.array([3, 7, 7, 3, 7]), np.array([1, 1, 2, 1, 0])
    cmc, m_ap, m_inp = rank_metrics_from_distmat(dist, [7], g_pids, [0], g_camids)
    # kept order: 2 (match), then the 0.5 ties by index: 0, 1 (match), 3
    assert cmc[0] == 1.0
    assert m_ap == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert m_inp == pytest.approx(2 / 3)


def test_duplicate_features_tie_rule():
    """Duplicated gallery images: exact ties in real distances, ranked by gallery index."""
    qf, gf, qp, gp, qc, gc = make_case(6, nq=20, ng=100)
    gf = torch.cat([gf, gf[:50]])  # duplicates of the first 50 images at the end,
    gp = np.concatenate([gp, (gp[:50] + 1) % 12])  # mostly under another identity
    gc = np.concatenate([gc, gc[:50]])
    for metric in ("cosine", "euclidean"):
        blocks = DistanceBlocks(qf, gf, metric, block_size=7)
        dist = np.concatenate([b.copy() for _, b in blocks])
        stats = {}
        r = blocked_metrics(blocks, qp, gp, qc, gc, stats=stats)
        assert stats["tied_positives"] > 0
        ref = reference(dist, qp, gp, qc, gc)
        np.testing.assert_allclose(r["cmc"], ref[0], atol=1e-6)
        assert abs(r["mAP"] - ref[1]) < 1e-9 and abs(r["mINP"] - ref[2]) < 1e-9


def test_small_gallery_clips_max_rank():
    qf, gf, qp, gp, _, _ = make_case(7, nq=12, ng=30)
    qc, gc = np.zeros(12, int), np.ones(30, int)  # nothing removed
    dist = build_dist(qf, gf, "cosine")
    keep = separated(dist, qp, gp, qc, gc)
    ours = rank_metrics(qf[keep], gf, qp[keep], gp, qc[keep], gc, max_rank=50)
    assert ours[0].size == 30
    assert_metrics_close(ours, evaluate_rank(dist[keep], qp[keep], gp, qc[keep], gc, max_rank=50))


def test_no_valid_query_raises():
    qf, gf, _, gp, qc, gc = make_case(8, nq=5)
    with pytest.raises(ValueError):
        rank_metrics(qf, gf, np.full(5, 999), gp, qc, gc)


def fastreid_tpr(dist, qp, gp, qc, gc, targets):
    """What fastreid's ReidEvaluator reports under TEST.ROC, for any target FPRs."""
    scores, labels = evaluate_roc(dist, qp, gp, qc, gc)
    fprs, tprs, _ = skm.roc_curve(labels, scores)
    return {f: tprs[np.argmin(np.abs(fprs - f))] for f in targets}


@pytest.mark.parametrize("kind", ["real", "integer"])
def test_tpr_at_fpr_equals_fastreid(kind):
    qf, gf, qp, gp, qc, gc = make_case(9, nq=60, ng=400, signal=0.6)
    if kind == "real":
        dist = build_dist(qf, gf, "cosine")
    else:  # heavy ties: exercises sklearn's drop_intermediate logic
        dist = np.random.default_rng(9).integers(0, 40, (60, 400)).astype(np.float32)
    targets = ROC_FPRS + (0.003, 0.02, 0.05, 0.2, 0.5, 0.9)  # 1e-4 is below 1 / #matches here
    r = blocked_metrics(
        DistanceBlocks.from_distmat(dist, block_size=7), qp, gp, qc, gc, roc_fprs=targets
    )
    expected = fastreid_tpr(dist, qp, gp, qc, gc, targets)
    assert len(set(expected.values())) > 4
    for f in targets:
        assert r["tpr"][f] == expected[f], f


def test_tpr_from_counts_follows_sklearn_drop_intermediate():
    """Small tied score sets where sklearn drops collinear ROC points: the counts-only
    version must pick the same point for every target FPR."""
    from lastreid.evaluation.rank import tpr_from_counts

    rng = np.random.default_rng(11)
    mattered = 0
    for _ in range(300):
        pos = rng.integers(0, 12, rng.integers(1, 15)).astype(np.float32)
        neg = rng.integers(0, 12, rng.integers(1, 15)).astype(np.float32)
        u, m = np.unique(pos, return_counts=True)
        hist = np.zeros(2 * u.size + 1, dtype=np.int64)
        edges = np.concatenate(([-np.inf], u, [np.inf]))
        for a in range(u.size + 1):
            hist[2 * a] = np.sum((neg > edges[a]) & (neg < edges[a + 1]))
            if a < u.size:
                hist[2 * a + 1] = np.sum(neg == u[a])
        scores = np.concatenate((pos, neg))
        labels = np.concatenate((np.zeros(pos.size), np.ones(neg.size)))
        fpr, tpr, _ = skm.roc_curve(labels, scores)
        fpr_all, tpr_all, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
        targets = tuple(np.linspace(0, 1, 61))
        got = tpr_from_counts(u, m, hist, targets)
        for t in targets:
            expected = tpr[np.argmin(np.abs(fpr - t))]
            assert got[t] == expected
            mattered += expected != tpr_all[np.argmin(np.abs(fpr_all - t))]
    assert mattered > 0  # the dropped points did change some answers
