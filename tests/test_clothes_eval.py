"""Clothes-aware evaluation (general / CC / SC) in the blocked evaluator against a direct
computation of Simple-CCReID's definitions, and its data path (clothes ids from the test
set to the evaluator, results.json)."""

import json
import os
from argparse import Namespace

import lastreid  # noqa: F401  (before fastreid)
from lastreid.config import add_lastreid_config
from lastreid.datasets import synthetic
from lastreid.evaluation import BlockedReidEvaluator, DistanceBlocks, blocked_metrics
from lastreid.loaders import build_test_set
from lastreid.startup import build_cfg

import numpy as np
import pytest
import torch
from conftest import FAST_CPU_OPTS, load_tool, write_random_bot
from fastreid.config import get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml")
PROTOCOLS = ("general", "CC", "SC")


def direct_metrics(dist, q_pids, g_pids, q_cams, g_cams, q_clothes, g_clothes, protocol):
    """(cmc, mAP, mINP, number of queries with a positive) from the definitions: every
    row fully sorted (stable: ties by gallery index), each gallery item of the query's pid
    classed as positive or removed, one item at a time."""
    num_gallery = dist.shape[1]
    cmc_sum, aps, inps = np.zeros(num_gallery), [], []
    for i in range(dist.shape[0]):
        hits = []  # one bool per kept gallery item, in ranked order
        for j in np.argsort(dist[i], kind="stable"):
            if g_pids[j] != q_pids[i]:
                hits.append(False)
                continue
            same_clothes = g_clothes[j] == q_clothes[i]
            if g_cams[j] == q_cams[i]:
                continue  # removed under every protocol
            if protocol == "CC" and same_clothes:
                continue
            if protocol == "SC" and not same_clothes:
                continue
            hits.append(True)
        ranks = [r for r, hit in enumerate(hits) if hit]
        if not ranks:
            continue  # no positive: the query is skipped
        cmc_sum[ranks[0] :] += 1
        aps.append(np.mean([(k + 1) / (r + 1) for k, r in enumerate(ranks)]))
        inps.append(len(ranks) / (ranks[-1] + 1))
    return cmc_sum / len(aps), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def blocked(dist, labels, block_size, protocols=("CC", "SC")):
    blocks = DistanceBlocks.from_distmat(dist, block_size=block_size)
    q_pids, g_pids, q_cams, g_cams, q_clothes, g_clothes = labels
    return blocked_metrics(
        blocks,
        q_pids,
        g_pids,
        q_cams,
        g_cams,
        max_rank=dist.shape[1],
        q_clothes=q_clothes,
        g_clothes=g_clothes,
        protocols=protocols,
    )


def assert_equal_to_direct(ours, dist, labels):
    for protocol in PROTOCOLS:
        mine = ours if protocol == "general" else ours[protocol]
        cmc, m_ap, m_inp, valid = direct_metrics(dist, *labels, protocol)
        np.testing.assert_allclose(mine["cmc"], cmc, rtol=0, atol=1e-6, err_msg=protocol)
        assert mine["mAP"] == pytest.approx(m_ap, abs=1e-12), protocol
        assert mine["mINP"] == pytest.approx(m_inp, abs=1e-12), protocol
        assert mine["num_valid"] == valid, protocol


# A hand-built case ---------------------------------------------------------------------------
# Gallery (pid, camera, clothes). Clothes ids are shared across persons on purpose (10 is worn
# by pids 1 and 3): only the query's own person's clothes matter.
G_PIDS = np.array([2, 1, 1, 3, 1, 2, 1, 1])
G_CAMS = np.array([1, 1, 0, 1, 2, 2, 1, 2])
G_CLOTHES = np.array([20, 10, 11, 10, 11, 20, 11, 10])
Q_PIDS = np.array([1, 2, 3, 1])
Q_CAMS = np.array([0, 0, 1, 1])
Q_CLOTHES = np.array([10, 20, 10, 11])
HAND_DIST = np.array(
    [
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        [0.5, 0.1, 0.2, 0.3, 0.9, 0.4, 0.6, 0.7],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        [0.3, 0.8, 0.1, 0.2, 0.6, 0.4, 0.05, 0.5],
    ],
    dtype=np.float32,
)
HAND_LABELS = (Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, Q_CLOTHES, G_CLOTHES)
# Worked out by hand, 0-based ranks of the positives among the kept items:
#   query 0: general 1, 3, 5, 6; CC 2, 4; SC 1, 4
#   query 1: general 3, 4; CC none (both its matches wear its clothes); SC 3, 4
#   query 2: its only match is on its own camera: skipped by every protocol
#   query 3: general 0, 4, 5; CC 3; SC 0, 4
HAND = {
    "general": dict(
        first=[1, 3, 0],
        mAP=((1 / 2 + 2 / 4 + 3 / 6 + 4 / 7) / 4 + (1 / 4 + 2 / 5) / 2 + (1 + 2 / 5 + 3 / 6) / 3)
        / 3,
        mINP=(4 / 7 + 2 / 5 + 3 / 6) / 3,
    ),
    "CC": dict(first=[2, 3], mAP=((1 / 3 + 2 / 5) / 2 + 1 / 4) / 2, mINP=(2 / 5 + 1 / 4) / 2),
    "SC": dict(
        first=[1, 3, 0],
        mAP=((1 / 2 + 2 / 5) / 2 + (1 / 4 + 2 / 5) / 2 + (1 + 2 / 5) / 2) / 3,
        mINP=(2 / 5 + 2 / 5 + 2 / 5) / 3,
    ),
}


def test_direct_computation_gives_the_hand_worked_numbers():
    for protocol, expected in HAND.items():
        cmc, m_ap, m_inp, valid = direct_metrics(HAND_DIST, *HAND_LABELS, protocol)
        first = np.asarray(expected["first"])
        assert valid == first.size
        np.testing.assert_allclose(cmc, [(first <= k).mean() for k in range(8)], atol=1e-12)
        assert m_ap == pytest.approx(expected["mAP"], abs=1e-12)
        assert m_inp == pytest.approx(expected["mINP"], abs=1e-12)


@pytest.mark.parametrize("block_size", [1, 3, 4])
def test_hand_case_three_protocols_differ_and_equal_the_direct_computation(block_size):
    ours = blocked(HAND_DIST, HAND_LABELS, block_size)
    assert_equal_to_direct(ours, HAND_DIST, HAND_LABELS)
    maps = {ours["mAP"], ours["CC"]["mAP"], ours["SC"]["mAP"]}
    assert len(maps) == 3
    assert (ours["num_valid"], ours["CC"]["num_valid"], ours["SC"]["num_valid"]) == (3, 2, 3)
    assert ours["cmc"][0] == pytest.approx(1 / 3) and ours["CC"]["cmc"][0] == 0
    # The general numbers are those of the evaluation without clothes protocols.
    plain = blocked(HAND_DIST, HAND_LABELS, block_size, protocols=())
    assert {"CC", "SC"}.isdisjoint(plain)
    np.testing.assert_array_equal(plain["cmc"], ours["cmc"])
    assert (plain["mAP"], plain["mINP"]) == (ours["mAP"], ours["mINP"])


# Randomized cases ----------------------------------------------------------------------------


def random_case(seed, nq=37, ng=211, n_pid=9, decimals=2):
    """Distances rounded to `decimals` (many exact ties, broken by gallery index), three
    cameras, one to three outfits per person (person 0: one, so its queries have no CC
    positive; clothes id = pid * 3 + outfit)."""
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, n_pid + 2, nq), rng.integers(0, n_pid, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    outfits = rng.integers(1, 4, n_pid + 2)
    outfits[0] = 1
    q_clothes = q_pids * 3 + rng.integers(0, 3, nq) % outfits[q_pids]
    g_clothes = g_pids * 3 + rng.integers(0, 3, ng) % outfits[g_pids]
    dist = rng.random((nq, ng)).astype(np.float32)
    dist -= 0.3 * (q_pids[:, None] == g_pids[None, :])  # matches tend to come first
    dist = np.round(dist, decimals).astype(np.float32)
    return dist, (q_pids, g_pids, q_cams, g_cams, q_clothes, g_clothes)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block_size", [1, 5, 64])
def test_random_cases_across_block_sizes_equal_the_direct_computation(seed, block_size):
    dist, labels = random_case(seed)
    blocks = DistanceBlocks.from_distmat(dist, block_size=block_size)
    assert blocks.num_blocks == -(-dist.shape[0] // block_size)
    ours = blocked(dist, labels, block_size)
    assert_equal_to_direct(ours, dist, labels)
    assert ours["CC"]["num_valid"] < ours["num_valid"]  # person 0's queries, at least
    assert ours["CC"]["mAP"] != ours["SC"]["mAP"]


def test_features_in_memory_bounded_blocks_equal_the_direct_computation():
    """Cosine blocks of a few rows each (memory_mb) on features, against the direct
    computation on the distance matrix those blocks form."""
    rng = np.random.default_rng(5)
    _, labels = random_case(5)
    q_pids, g_pids = labels[0], labels[1]
    centers = rng.standard_normal((12, 16))
    qf = torch.from_numpy((rng.standard_normal((37, 16)) + centers[q_pids]).astype(np.float32))
    gf = torch.from_numpy((rng.standard_normal((211, 16)) + centers[g_pids]).astype(np.float32))
    blocks = DistanceBlocks(qf, gf, "cosine", memory_mb=0.01)
    assert blocks.num_blocks > 3
    dist = np.concatenate([block.copy() for _, block in blocks])
    q_pids, g_pids, q_cams, g_cams, q_clothes, g_clothes = labels
    ours = blocked_metrics(
        blocks,
        q_pids,
        g_pids,
        q_cams,
        g_cams,
        max_rank=211,
        q_clothes=q_clothes,
        g_clothes=g_clothes,
        protocols=("general", "CC", "SC"),
    )
    assert_equal_to_direct(ours, dist, labels)


def test_bad_protocol_arguments_are_one_clear_error():
    with pytest.raises(ValueError, match="unknown evaluation protocol.*'XC'"):
        blocked(HAND_DIST, HAND_LABELS, 2, protocols=("CC", "XC"))
    with pytest.raises(ValueError, match="need q_clothes and g_clothes"):
        blocked(HAND_DIST, HAND_LABELS[:4] + (None, None), 2)
    with pytest.raises(ValueError, match="clothes ids for 3 queries"):
        blocked(HAND_DIST, HAND_LABELS[:4] + (Q_CLOTHES[:3], G_CLOTHES), 2)
    no_cc = (Q_PIDS[1:2], G_PIDS, Q_CAMS[1:2], G_CAMS, Q_CLOTHES[1:2], G_CLOTHES)
    with pytest.raises(ValueError, match="no query has a positive under the CC protocol"):
        blocked(HAND_DIST[1:2], no_cc, 1)


# The evaluator -------------------------------------------------------------------------------
NQ, NG, DIM = 30, 170, 24


def make_cfg(**test):
    cfg = add_lastreid_config(get_cfg())
    for key, value in test.items():
        cfg.TEST[key] = value
    return cfg


def evaluator_data(seed):
    """Features, pids, camids, clothes of query then gallery items (two outfits each)."""
    rng = np.random.default_rng(seed)
    pids = np.concatenate([rng.integers(0, 10, NQ), rng.integers(0, 10, NG)])
    centers = rng.standard_normal((10, DIM))
    feats = rng.standard_normal((NQ + NG, DIM)) + 0.6 * centers[pids]
    clothes = pids * 2 + rng.integers(0, 2, NQ + NG)
    return torch.from_numpy(feats.astype(np.float32)), pids, rng.integers(0, 3, NQ + NG), clothes


def run(evaluator, feats, pids, camids, size=16):
    evaluator.reset()
    for s in range(0, len(pids), size):
        inputs = {
            "targets": torch.from_numpy(pids[s : s + size]),
            "camids": torch.from_numpy(camids[s : s + size]),
        }
        evaluator.process(inputs, feats[s : s + size])
    return evaluator.evaluate()


CLOTHES_KEYS = ["Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"]


@pytest.mark.parametrize("test_cfg", [{}, {"QUERY_BLOCK_SIZE": 7}, {"METRIC": "euclidean"}])
def test_evaluator_reports_cc_and_sc_keys_equal_to_the_direct_computation(test_cfg):
    cfg = make_cfg(**test_cfg)
    feats, pids, camids, clothes = evaluator_data(0)
    evaluator = BlockedReidEvaluator(cfg, NQ, clothes=clothes, clothes_protocols=PROTOCOLS)
    ours = run(evaluator, feats, pids, camids)
    plain = run(BlockedReidEvaluator(cfg, NQ), feats, pids, camids)
    general = list(plain)
    assert list(ours) == general + [f"{p}-{k}" for p in ("CC", "SC") for k in CLOTHES_KEYS]
    assert {k: ours[k] for k in general} == plain
    dist = np.concatenate(
        [b.copy() for _, b in DistanceBlocks(feats[:NQ], feats[NQ:], cfg.TEST.METRIC)]
    )
    labels = (pids[:NQ], pids[NQ:], camids[:NQ], camids[NQ:], clothes[:NQ], clothes[NQ:])
    for protocol in ("CC", "SC"):
        cmc, m_ap, m_inp, _ = direct_metrics(dist, *labels, protocol)
        for k in (1, 5, 10):
            assert ours[f"{protocol}-Rank-{k}"] == pytest.approx(100 * cmc[k - 1], abs=1e-4)
        assert ours[f"{protocol}-mAP"] == pytest.approx(100 * m_ap, abs=1e-4)
        assert ours[f"{protocol}-mINP"] == pytest.approx(100 * m_inp, abs=1e-4)


def test_evaluator_refuses_protocols_without_clothes_and_a_count_mismatch():
    with pytest.raises(ValueError, match="the CC protocol.*need the clothes ids"):
        BlockedReidEvaluator(make_cfg(), NQ, clothes_protocols=("general", "CC"))
    feats, pids, camids, clothes = evaluator_data(1)
    evaluator = BlockedReidEvaluator(
        make_cfg(), NQ, clothes=clothes[:-1], clothes_protocols=PROTOCOLS
    )
    with pytest.raises(
        ValueError, match=f"clothes ids for {NQ + NG - 1} items and evaluates {NQ + NG}"
    ):
        run(evaluator, feats, pids, camids)
    # "general" alone needs no clothes ids
    assert "CC-mAP" not in run(
        BlockedReidEvaluator(make_cfg(), NQ, clothes_protocols=("general",)), feats, pids, camids
    )


def _two_process_worker(rank, rendezvous, data, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)  # forked child: no inherited thread pool
    # A file rendezvous: no port to pick, none to lose to another process (pytest -n workers).
    dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=rank, world_size=2)
    try:
        feats, pids, camids, clothes = data
        half = (len(pids) + 1) // 2  # contiguous shards, as fastreid's InferenceSampler
        lo, hi = (0, half) if rank == 0 else (half, len(pids))
        # Every process is given the clothes of all items, as Trainer.build_evaluator does.
        evaluator = BlockedReidEvaluator(
            make_cfg(), NQ, clothes=clothes, clothes_protocols=PROTOCOLS
        )
        results = run(evaluator, feats[lo:hi], pids[lo:hi], camids[lo:hi])
        torch.save(dict(results), "{}/rank{}.pt".format(out_dir, rank))
    finally:
        dist.destroy_process_group()


def test_two_processes_keep_the_clothes_aligned(tmp_path):
    import time

    import torch.multiprocessing as mp

    data = evaluator_data(2)
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
    feats, pids, camids, clothes = data
    single = BlockedReidEvaluator(make_cfg(), NQ, clothes=clothes, clothes_protocols=PROTOCOLS)
    assert main == pytest.approx(run(single, feats, pids, camids))
    assert "CC-mAP" in main and "SC-mAP" in main


# The data path -------------------------------------------------------------------------------


def _prcc_keys(test_set):
    """The clothes key of each PRCC test item from its path (pid folder, camera folder)."""
    keys = []
    for path, pid, _ in test_set.img_items:
        camera = os.path.basename(os.path.dirname(os.path.dirname(path)))
        keys.append("{}_{}".format(pid, 1 if camera == "C" else 0))
    return keys


def _same_partition(ids, keys):
    """True when ids[i] == ids[j] exactly where keys[i] == keys[j]."""
    pairs = set(zip(ids.tolist(), keys))
    return len(pairs) == len(set(ids.tolist())) == len(set(keys))


@pytest.fixture(scope="module")
def prcc_root(module_tmp):
    root = module_tmp.mktemp("datasets")
    synthetic.write_all(
        str(root), preset="tiny", seed=0, datasets=("prcc",), test_ids=5, images_per_camera=3
    )
    return root


def _cfg(*opts):
    return build_cfg(CONFIG, FAST_CPU_OPTS + list(opts))


def test_test_set_carries_clothes_ids_and_protocols(prcc_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", str(prcc_root))
    for name, protocols in (("PRCC", ("general", "CC")), ("PRCCSameClothes", ("general", "SC"))):
        test_set, num_query = build_test_set(_cfg(), name)
        assert test_set.clothes_protocols == protocols
        assert test_set.clothes_ids.dtype == np.int64
        assert len(test_set.clothes_ids) == len(test_set)
        assert _same_partition(test_set.clothes_ids, _prcc_keys(test_set))
    # A dataset without clothes labels: no ids, the general protocol only.
    synthetic.write_all(str(tmp_path), preset="tiny", seed=0, datasets=("celebreid",))
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    test_set, _ = build_test_set(_cfg(), "CelebReID")
    assert test_set.clothes_ids is None and test_set.clothes_protocols == ("general",)


def test_skipped_bad_images_keep_the_clothes_parallel(prcc_root, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "datasets"
    shutil.copytree(prcc_root / "prcc", root / "prcc")
    monkeypatch.setenv("FASTREID_DATASETS", str(root))
    full, num_query = build_test_set(_cfg(), "PRCC")
    # Break the first query image and a gallery image in the middle.
    bad = [full.img_items[0][0], full.img_items[num_query + 7][0]]
    for path in bad:
        with open(path, "wb") as f:  # under the copy: FASTREID_DATASETS
            f.write(b"not an image")
    kept, kept_query = build_test_set(_cfg("DATALOADER.SKIP_BAD_IMAGES", "True"), "PRCC")
    assert kept_query == num_query - 1 and len(kept) == len(full) - 2
    assert len(kept.clothes_ids) == len(kept)
    assert _same_partition(kept.clothes_ids, _prcc_keys(kept))
    # Each kept item has the clothes id the full set gave it (same numbering order).
    full_key = dict(zip((item[0] for item in full.img_items), _prcc_keys(full)))
    assert [full_key[item[0]] for item in kept.img_items] == _prcc_keys(kept)


def test_eval_only_run_saves_cc_and_sc_metrics_in_results_json(prcc_root, tmp_path, monkeypatch):
    """A real --eval-only run (random ResNet-18 BoT) on synthetic PRCC and PRCCSameClothes:
    PRCC reports CC-*, PRCCSameClothes SC-*, each equal to its general numbers (every PRCC
    query C match wears other clothes, every query B match the same clothes)."""
    monkeypatch.setenv("FASTREID_DATASETS", str(prcc_root))
    opts = FAST_CPU_OPTS + ["MODEL.CPU_BF16", "off"]
    weights = write_random_bot(CONFIG, opts, tmp_path / "model.pth")
    out = tmp_path / "run"
    opts = opts + [
        "MODEL.WEIGHTS",
        weights,
        "DATASETS.TESTS",
        '("PRCC", "PRCCSameClothes")',
        "OUTPUT_DIR",
        str(out),
    ]
    args = Namespace(config_file=CONFIG, opts=opts, eval_only=True, resume=False)
    load_tool("train_net").main(args)
    with open(out / "results.json") as f:
        datasets = json.load(f)["evaluation"]["datasets"]
    prcc, same = datasets["PRCC"], datasets["PRCCSameClothes"]
    assert not any(k.startswith("SC-") for k in prcc)
    assert not any(k.startswith("CC-") for k in same)
    for metrics, protocol in ((prcc, "CC"), (same, "SC")):
        for key in CLOTHES_KEYS:
            assert metrics[f"{protocol}-{key}"] == pytest.approx(metrics[key], abs=1e-9)
    assert 0 < prcc["mAP"] < 100
