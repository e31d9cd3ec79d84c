"""lastreid.evaluation.BlockedReidEvaluator end to end vs fastreid's ReidEvaluator."""

import lastreid  # noqa: F401  (before fastreid)
from lastreid.config import add_lastreid_config
from lastreid.evaluation import BlockedReidEvaluator, blocked_aqe

import fastreid.utils.compute_dist as fastreid_dist
import numpy as np
import pytest
import torch
from fastreid.config import get_cfg
from fastreid.evaluation import ReidEvaluator
from fastreid.evaluation.query_expansion import aqe

NQ, NG, DIM = 30, 170, 24


def make_cfg(**test):
    cfg = add_lastreid_config(get_cfg())
    for key, value in test.items():
        node, *path = key.split("__")
        target = cfg.TEST[node] if path else cfg.TEST
        target[path[0] if path else node] = value
    return cfg


def make_data(seed, ng=NG):
    """Query then gallery items; some query pids absent from the gallery; shared cameras."""
    rng = np.random.default_rng(seed)
    pids = np.concatenate([rng.integers(0, 12, NQ), rng.integers(0, 10, ng)])
    centers = rng.standard_normal((12, DIM))
    feats = rng.standard_normal((NQ + ng, DIM)) + 0.6 * centers[pids]
    return torch.from_numpy(feats.astype(np.float32)), pids, rng.integers(0, 3, NQ + ng)


def batches(feats, pids, camids, size=16, dtype=torch.float32):
    for s in range(0, len(pids), size):
        inputs = {
            "targets": torch.from_numpy(pids[s : s + size]),
            "camids": torch.from_numpy(camids[s : s + size]),
        }
        yield inputs, feats[s : s + size].to(dtype)


def run(evaluator, data, **kw):
    evaluator.reset()
    for inputs, outputs in batches(*data, **kw):
        evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def assert_same_results(ours, theirs):
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key] == pytest.approx(float(theirs[key]), abs=1e-4), key


def well_separated(cfg, data):
    """True if no kept match lies within 1e-5 of another identity's item in fastreid's
    distance matrix (what ReidEvaluator ranks), so that tie order cannot matter."""
    feats, pids, camids = data
    qf, gf = feats[:NQ], feats[NQ:]
    if cfg.TEST.AQE.ENABLED:
        qf, gf = aqe(qf, gf, cfg.TEST.AQE.QE_TIME, cfg.TEST.AQE.QE_K, cfg.TEST.AQE.ALPHA)
    dist = fastreid_dist.build_dist(qf, gf, cfg.TEST.METRIC)
    for i in range(NQ):
        same = pids[NQ:] == pids[i]
        pos = same & (camids[NQ:] != camids[i])
        if pos.any() and np.abs(dist[i, pos][:, None] - dist[i, ~same][None]).min() < 1e-5:
            return False
    return True


def separated_data(cfg):
    for seed in range(20):
        data = make_data(seed)
        if well_separated(cfg, data):
            return data
    raise AssertionError("no well separated seed")


@pytest.mark.parametrize(
    "test_cfg",
    [
        {},
        {"METRIC": "euclidean"},
        {"AQE__ENABLED": True},
        {"AQE__ENABLED": True, "AQE__QE_TIME": 2, "METRIC": "euclidean"},
        {"ROC__ENABLED": True},
        {"QUERY_BLOCK_SIZE": 7},
        {"EVAL_MEMORY_MB": 0.002},  # one-row blocks
    ],
)
def test_same_results_as_fastreid(test_cfg):
    cfg = make_cfg(**test_cfg)
    data = separated_data(cfg)
    theirs = run(ReidEvaluator(cfg, NQ), data)
    ours = run(BlockedReidEvaluator(cfg, NQ, num_items=NQ + NG), data)
    assert_same_results(ours, theirs)
    assert 0 < ours["mAP"] < 100
    if cfg.TEST.ROC.ENABLED:
        assert "TPR@FPR=1e-04" in ours


def test_rerank_on_cpu_same_as_fastreid(monkeypatch, caplog):
    cfg = make_cfg(RERANK__ENABLED=True, RERANK__K1=8, RERANK__K2=3)
    data = make_data(0)
    ours = run(BlockedReidEvaluator(cfg, NQ), data)
    assert any("full-matrix" in r.getMessage() and "GB" in r.getMessage() for r in caplog.records)
    # fastreid's own path hard-codes a CUDA faiss search; run it with the CPU search.
    jaccard = fastreid_dist.compute_jaccard_distance
    monkeypatch.setattr(
        fastreid_dist,
        "compute_jaccard_distance",
        lambda feat, k1, k2, search_option=0: jaccard(feat, k1, k2, search_option=3),
    )
    theirs = run(ReidEvaluator(cfg, NQ), data)
    assert_same_results(ours, theirs)
    no_rerank = run(BlockedReidEvaluator(make_cfg(), NQ), data)
    assert no_rerank["mAP"] != ours["mAP"]


def test_half_precision_outputs_are_cast():
    cfg = make_cfg()
    data = separated_data(cfg)
    for dtype in (torch.bfloat16, torch.float16):
        theirs = run(ReidEvaluator(cfg, NQ), data, dtype=dtype)
        ours = run(BlockedReidEvaluator(cfg, NQ), data, dtype=dtype)
        assert_same_results(ours, theirs)


@pytest.mark.parametrize("num_items", [None, 10])
def test_buffer_grows_geometrically(num_items):
    """num_items unknown (first allocation: 256 items) or too small: the one buffer grows
    by doubling and keeps every item in order."""
    cfg = make_cfg()
    data = make_data(2, ng=900)
    n = NQ + 900
    ev = BlockedReidEvaluator(cfg, NQ, num_items=num_items)
    caps = []
    for inputs, outputs in batches(*data, size=16):
        ev.process(inputs, outputs)
        caps.append(ev.capacity)
    distinct = sorted(set(caps))
    assert caps == sorted(caps) and len(distinct) >= 3 and distinct[-1] >= n
    assert all(b >= 2 * a for a, b in zip(distinct, distinct[1:]))
    feats, pids, camids = ev.buffered()
    assert torch.equal(feats, data[0])
    np.testing.assert_array_equal(pids, data[1])
    np.testing.assert_array_equal(camids, data[2])
    fixed = BlockedReidEvaluator(cfg, NQ, num_items=n)
    expected = run(fixed, data)
    assert fixed.capacity == n
    assert ev.evaluate() == expected


def test_evaluate_is_cached_and_reset_starts_over(monkeypatch):
    import lastreid.evaluation.evaluator as evaluator_module

    computed = []
    metrics = evaluator_module.blocked_metrics
    monkeypatch.setattr(
        evaluator_module, "blocked_metrics", lambda *a, **k: computed.append(1) or metrics(*a, **k)
    )
    cfg = make_cfg()
    data = separated_data(cfg)
    ev = BlockedReidEvaluator(cfg, NQ)
    first = run(ev, data)
    assert len(computed) == 1
    # The features were normalized in place: a second evaluate() returns the cached result
    # and computes nothing.
    assert ev.evaluate() == first and len(computed) == 1
    with pytest.raises(RuntimeError):
        ev.process(*next(batches(*data)))
    assert run(ev, data) == first and len(computed) == 2  # reset() inside run(): anew


@pytest.mark.parametrize("qe_time,metric_k", [(1, 5), (2, 3)])
def test_blocked_aqe_equals_fastreid_aqe(qe_time, metric_k):
    feats, _, _ = make_data(1)
    q_ref, g_ref = aqe(feats[:NQ].clone(), feats[NQ:].clone(), qe_time, metric_k, 3.0)
    q, g = blocked_aqe(feats.clone(), NQ, qe_time, metric_k, 3.0, memory_mb=0.01)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-5)
    assert not torch.allclose(q, feats[:NQ], atol=1e-3)  # the expansion did something


def _two_process_worker(rank, rendezvous, data, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)  # forked child: no inherited thread pool
    # A file rendezvous: no port to pick, so no race with another process taking it.
    dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=rank, world_size=2)
    try:
        feats, pids, camids = data
        half = (len(pids) + 1) // 2  # contiguous shards, as fastreid's InferenceSampler
        lo, hi = (0, half) if rank == 0 else (half, len(pids))
        ev = BlockedReidEvaluator(make_cfg(), NQ)
        results = run(ev, (feats[lo:hi], pids[lo:hi], camids[lo:hi]))
        torch.save(dict(results), "{}/rank{}.pt".format(out_dir, rank))
    finally:
        dist.destroy_process_group()


def test_two_processes_gather_to_main(tmp_path):
    import time

    import torch.multiprocessing as mp

    data = separated_data(make_cfg())
    # fork: the children reuse the imported modules (spawn re-imports torch and fastreid)
    ctx = mp.start_processes(
        _two_process_worker,
        args=(str(tmp_path / "rendezvous"), data, str(tmp_path)),
        nprocs=2,
        start_method="fork",
        join=False,
    )
    deadline = time.monotonic() + 900  # a guard against a hang only
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two evaluator processes did not finish in 900 s")
    main, other = (torch.load(tmp_path / "rank{}.pt".format(r)) for r in (0, 1))
    assert other == {}
    assert main == pytest.approx(run(BlockedReidEvaluator(make_cfg(), NQ), data))
    assert_same_results(main, run(ReidEvaluator(make_cfg(), NQ), data))


def test_gallery_smaller_than_rank_10():
    # fastreid's ReidEvaluator raises IndexError here (CMC has only num_gallery entries).
    feats = torch.tensor(
        [
            [1.0, 0.0],
            [0.0, 1.0],  # queries
            [0.9, 0.1],
            [0.2, 0.8],
            [0.8, 0.3],
            [0.1, 0.9],
        ]
    )  # gallery
    pids = np.array([0, 1, 1, 0, 0, 1])
    camids = np.array([0, 0, 1, 1, 1, 1])
    evaluator = BlockedReidEvaluator(make_cfg(), num_query=2)
    results = run(evaluator, (feats, pids, camids))
    # Query 0 (pid 0): nearest [0.9,0.1] is pid 1, then [0.8,0.3] pid 0 -> first hit at rank 2.
    # Query 1 (pid 1): nearest [0.1,0.9] is pid 1 -> rank 1. With 4 gallery items every
    # query has found its match by rank 4, so Rank-5 and Rank-10 are 100%.
    assert results["Rank-1"] == pytest.approx(50.0)
    assert results["Rank-5"] == pytest.approx(100.0)
    assert results["Rank-10"] == pytest.approx(100.0)
