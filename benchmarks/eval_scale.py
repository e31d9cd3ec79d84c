"""Exact re-id evaluation at LaST scale: fastreid's evaluator path vs lastreid's blocked one.

Seeded synthetic features (random normal plus a per-identity component; every query has
about 20 gallery matches, some on its own camera and hence removed, like LaST). Each
method runs in its own child process, so its peak RSS (the child's own getrusage maxrss,
the feature arrays included) is its own:

  gemm      the bare fp32 distance product: one q @ g.T per query block, nothing else
  lastreid  lastreid.evaluation.rank_metrics (cosine, blocked, exact) with overwrite=True,
            the evaluator's path (it normalises its own feature buffer in place)
  api       rank_metrics(qf, gf, pids, camids) with its default arguments on caller-owned
            arrays (never modified: checked by hashing them before and after), then the bare
            product twice in the same process for the time ratio
  fastreid  fastreid build_dist + evaluate_rank (Cython), what ReidEvaluator runs
  evaluator lastreid.evaluation.BlockedReidEvaluator fed as train_net.py feeds it: batches
            of 128 features into its buffer preallocated for num_items (the features never
            exist elsewhere), then evaluate(); its memory is reported above the RSS at the
            start of evaluate() (buffer filled), with the peak reset there
  clothes   with --clothes-protocols CC SC: the `lastreid` child's path computing those
            clothes-aware protocols too (synthetic clothes: each image wears one of its
            person's three outfits), timed against the `lastreid` child (general only); the
            evaluator child then gets the clothes and the protocols as well

Memory is whole-process peak RSS in GiB; "after imports" is the RSS of the interpreter with
torch and lastreid imported (0.67 GiB here with the CUDA build of torch), which every
method pays before any feature exists. `--dim` sets the feature dimension (2,048 for BoT and
MGN, 3,840 for HPM, 12,288 for PCB).

    python benchmarks/eval_scale.py --preset mid
    python benchmarks/eval_scale.py --preset test --skip-fastreid   # fastreid needs ~17 GB
    python benchmarks/eval_scale.py --preset test --skip-fastreid --dim 12288   # PCB: 6.7 GB
    python benchmarks/eval_scale.py --skip-fastreid --skip-api --clothes-protocols CC SC
"""

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time

PRESETS = {"val": (100, 21279), "mid": (2000, 30000), "test": (10176, 125353)}


def make_labels(nq, ng, seed, matches=20):
    """pids and camids of the queries and the gallery. Queries come in pairs per identity;
    each identity has 10..30 gallery images; the rest of the gallery is distractor
    identities."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_id = -(-nq // 2)
    q_pids = np.repeat(np.arange(n_id), 2)[:nq]
    counts = rng.integers(matches // 2, 3 * matches // 2 + 1, n_id)
    if counts.sum() > ng:
        raise SystemExit("gallery too small for {} identities".format(n_id))
    g_pids = np.repeat(np.arange(n_id), counts)
    rest = ng - g_pids.size
    g_pids = np.concatenate([g_pids, n_id + np.arange(rest) // matches])
    g_pids = g_pids[rng.permutation(ng)]
    q_cams, g_cams = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    return q_pids, g_pids, q_cams, g_cams


def make_clothes(q_pids, g_pids, seed, outfits=3):
    """Clothes ids of the queries and the gallery: each image wears one of its person's
    `outfits` outfits, drawn uniformly (its own stream: the other labels do not change)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    return tuple(p * outfits + rng.integers(0, outfits, p.size) for p in (q_pids, g_pids))


def feature_chunks(pid_lists, dim, seed, weight, chunk=8192):
    """Yields (features, index of the pid list, start row) for the identities of each list in
    turn, `chunk` rows at a time: random normal plus `weight` times a per-identity centre."""
    import numpy as np
    import torch

    n_all = int(max(p.max() for p in pid_lists)) + 1
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_all, dim, generator=gen)
    for which, pids in enumerate(pid_lists):
        for s in range(0, len(pids), chunk):
            p = torch.from_numpy(np.asarray(pids[s : s + chunk]))
            yield torch.randn(len(p), dim, generator=gen).add_(centers[p], alpha=weight), which, s


def make_data(nq, ng, dim, seed, weight, matches=20):
    """Features (float32 torch), pids, camids (`make_labels`, `feature_chunks`)."""
    import torch

    q_pids, g_pids, q_cams, g_cams = make_labels(nq, ng, seed, matches)
    out = (torch.empty(nq, dim), torch.empty(ng, dim))
    for feats, which, s in feature_chunks((q_pids, g_pids), dim, seed, weight):
        out[which][s : s + len(feats)] = feats
    return out[0], out[1], q_pids, g_pids, q_cams, g_cams


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def reset_peak_rss():
    """Resets this process's peak RSS to its current RSS (Linux: /proc/self/clear_refs, 5);
    False where that is not possible (the peak then includes what came before)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_gb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def digest(*tensors):
    """SHA-1 of the tensors' bytes, read in place (no copy of the features)."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(memoryview(t.numpy()).cast("B"))
    return h.hexdigest()


def bare_product(qf, gf, block_size):
    """(wall, CPU) seconds of the bare blocked fp32 product (the reference all times are
    compared to)."""
    import torch

    c0, t0 = cpu_seconds(), time.perf_counter()
    buf = torch.empty(block_size, gf.shape[0])
    for s in range(0, qf.shape[0], block_size):
        qb = qf[s : s + block_size]
        torch.mm(qb, gf.t(), out=buf[: qb.shape[0]])
    return time.perf_counter() - t0, cpu_seconds() - c0


def api_child(qf, gf, qp, gp, qc, gc, nq, ng):
    """rank_metrics with default arguments on caller-owned features, then the bare product
    with the same (default) block size twice, in this process."""
    from lastreid.evaluation import auto_block_size, rank_metrics

    before = digest(qf, gf)
    rss_features = current_rss_gb()
    c0, t0 = cpu_seconds(), time.perf_counter()
    cmc, m_ap, m_inp = rank_metrics(qf, gf, qp, gp, qc, gc)
    res = dict(
        time=time.perf_counter() - t0,
        cpu=cpu_seconds() - c0,
        rss_gb=peak_rss_gb(),
        rss_features_gb=rss_features,
        cmc=cmc.tolist(),
        mAP=m_ap,
        mINP=m_inp,
    )
    res["unchanged"] = digest(qf, gf) == before
    bs = auto_block_size(ng, 512, nq)
    (w1, c1), (w2, c2) = bare_product(qf, gf, bs), bare_product(qf, gf, bs)
    res.update(bare_s=[w1, w2], bare_cpu_s=[c1, c2])
    return res


def evaluator_child(args, nq, ng):
    """BlockedReidEvaluator on streamed features: its buffer, then its evaluate()."""
    from lastreid.evaluation import BlockedReidEvaluator
    from lastreid.startup import build_cfg

    import numpy as np
    import torch

    # The checked config, as every tool builds it (a bad --memory-mb is one line).
    opts = ["MODEL.DEVICE", "cpu", "TEST.METRIC", "cosine", "TEST.EVAL_MEMORY_MB", args.memory_mb]
    opts += ["TEST.QUERY_BLOCK_SIZE", args.block_size]
    cfg = build_cfg("", [str(x) for x in opts])
    labels = make_labels(nq, ng, args.seed)
    clothes = None
    if args.clothes_protocols:
        clothes = np.concatenate(make_clothes(labels[0], labels[1], args.seed))
    evaluator = BlockedReidEvaluator(
        cfg, nq, num_items=nq + ng, clothes=clothes, clothes_protocols=args.clothes_protocols
    )
    t0 = time.perf_counter()
    for feats, which, s in feature_chunks(labels[:2], args.dim, args.seed, args.weight):
        pids, cams = labels[which][s : s + len(feats)], labels[2 + which][s : s + len(feats)]
        for b in range(0, len(feats), 128):  # TEST.IMS_PER_BATCH
            inputs = {"targets": torch.from_numpy(pids[b : b + 128])}
            inputs["camids"] = torch.from_numpy(cams[b : b + 128])
            evaluator.process(inputs, feats[b : b + 128])
        del feats
    fill_s, loaded = time.perf_counter() - t0, current_rss_gb()
    reset = reset_peak_rss()
    c0, t0 = cpu_seconds(), time.perf_counter()
    r = evaluator.evaluate()
    return dict(
        fill_s=fill_s,
        time=time.perf_counter() - t0,
        cpu=cpu_seconds() - c0,
        rss_gb=peak_rss_gb(),
        rss_loaded_gb=loaded,
        added_gb=peak_rss_gb() - loaded,
        peak_reset=reset,
        buffer_rows=evaluator.capacity,
        cmc=[r["Rank-1"] / 100],
        mAP=r["mAP"] / 100,
        mINP=r["mINP"] / 100,
        protocols={
            p: {"Rank-1": r[p + "-Rank-1"], "mAP": r[p + "-mAP"]} for p in args.clothes_protocols
        },
    )


def clothes_child(args, qf, gf, qp, gp, qc, gc):
    """The `lastreid` child's computation (blocks normalised in place) with the
    clothes-aware protocols as well."""
    from lastreid.evaluation import DistanceBlocks, blocked_metrics

    q_clothes, g_clothes = make_clothes(qp, gp, args.seed)
    blocks = DistanceBlocks(qf, gf, "cosine", args.block_size, args.memory_mb, overwrite=True)
    stats = {}
    r = blocked_metrics(
        blocks,
        qp,
        gp,
        qc,
        gc,
        max_rank=50,
        stats=stats,
        q_clothes=q_clothes,
        g_clothes=g_clothes,
        protocols=args.clothes_protocols,
    )
    out = dict(
        cmc=r["cmc"].tolist(),
        mAP=r["mAP"],
        mINP=r["mINP"],
        rank_s=stats["rank_seconds"],
        dist_s=stats["distance_seconds"],
    )
    out["protocols"] = {
        p: dict(Rank1=float(r[p]["cmc"][0]), mAP=r[p]["mAP"], num_valid=r[p]["num_valid"])
        for p in args.clothes_protocols
    }
    return out


def child(args):
    nq, ng = PRESETS[args.preset] if args.preset else (args.num_query, args.num_gallery)
    import lastreid  # noqa: F401  (before fastreid)

    import numpy as np
    import torch

    rss_imports = peak_rss_gb()
    if args.child == "evaluator":
        res = dict(evaluator_child(args, nq, ng), rss_imports_gb=rss_imports)
        res["features_gb"], res["threads"] = (
            (nq + ng) * args.dim * 4 / 2**30,
            torch.get_num_threads(),
        )
        print("RESULT " + json.dumps(res))
        return
    qf, gf, qp, gp, qc, gc = make_data(nq, ng, args.dim, args.seed, args.weight)
    res = {
        "rss_imports_gb": rss_imports,
        "features_gb": (qf.numel() + gf.numel()) * qf.element_size() / 2**30,
    }
    c0, t0 = cpu_seconds(), time.perf_counter()
    if args.child == "api":
        res.update(api_child(qf, gf, qp, gp, qc, gc, nq, ng))
        res["threads"] = torch.get_num_threads()
        print("RESULT " + json.dumps(res))
        return
    if args.child == "gemm":
        from lastreid.evaluation import auto_block_size

        bs = args.block_size or auto_block_size(ng, args.memory_mb, nq)
        bare_product(qf, gf, bs)
        res["block_size"] = bs
    elif args.child == "clothes":
        res.update(clothes_child(args, qf, gf, qp, gp, qc, gc))
    elif args.child == "lastreid":
        from lastreid.evaluation import rank_metrics

        stats = {}
        cmc, m_ap, m_inp = rank_metrics(
            qf,
            gf,
            qp,
            gp,
            qc,
            gc,
            metric="cosine",
            max_rank=50,
            block_size=args.block_size,
            memory_mb=args.memory_mb,
            overwrite=True,
            stats=stats,
        )
        res.update(
            cmc=cmc.tolist(),
            mAP=m_ap,
            mINP=m_inp,
            tied=stats["tied_positives"],
            rank_s=stats["rank_seconds"],
            dist_s=stats["distance_seconds"],
        )
    else:
        from fastreid.evaluation.rank import IS_CYTHON_AVAI, evaluate_rank
        from fastreid.utils.compute_dist import build_dist

        assert IS_CYTHON_AVAI
        dist = build_dist(qf, gf, "cosine")
        cmc, all_ap, all_inp = evaluate_rank(dist, qp, gp, qc, gc, max_rank=50)
        res.update(
            cmc=np.asarray(cmc).tolist(), mAP=float(np.mean(all_ap)), mINP=float(np.mean(all_inp))
        )
        # Diagnostic, after the timing: fastreid's own matrix ranked with lastreid's tie rule.
        from lastreid.evaluation import rank_metrics_from_distmat

        cmc2, m_ap2, m_inp2 = rank_metrics_from_distmat(dist, qp, gp, qc, gc, max_rank=50)
        res["stable"] = dict(cmc=cmc2.tolist(), mAP=m_ap2, mINP=m_inp2)
    res.update(
        time=time.perf_counter() - t0,
        cpu=cpu_seconds() - c0,
        rss_gb=peak_rss_gb(),
        threads=torch.get_num_threads(),
    )
    print("RESULT " + json.dumps(res))


def run_child(name, argv):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name] + argv
    print("running {} ...".format(name), flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("RESULT ")][-1][7:])


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="mid")
    ap.add_argument("--num-query", type=int)
    ap.add_argument("--num-gallery", type=int)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--weight",
        type=float,
        default=None,
        help="scale of the per-identity component (noise std is 1); default 0.27 x "
        "(2048 / dim) ** 0.25, which gives LaST-like difficulty at test scale (R1 ~0.67, "
        "mAP ~0.21 at 2048-d) at any dim (cosine noise falls as 1 / sqrt(dim))",
    )
    ap.add_argument("--block-size", type=int, default=0, help="0: from --memory-mb")
    ap.add_argument("--memory-mb", type=int, default=512)
    ap.add_argument("--skip-fastreid", action="store_true")
    ap.add_argument("--skip-api", action="store_true", help="skip the API-default child")
    ap.add_argument("--skip-evaluator", action="store_true", help="skip the evaluator child")
    ap.add_argument(
        "--clothes-protocols",
        nargs="+",
        choices=("CC", "SC"),
        default=[],
        help="also compute these clothes-aware protocols on synthetic clothes ids (the "
        "`clothes` child, timed against the general-only `lastreid` child; the evaluator "
        "child gets them too)",
    )
    ap.add_argument(
        "--child",
        choices=("gemm", "lastreid", "api", "fastreid", "evaluator", "clothes"),
        help=argparse.SUPPRESS,
    )
    args = ap.parse_args()
    if args.weight is None:
        args.weight = 0.27 * (2048 / args.dim) ** 0.25
    if args.num_query or args.num_gallery:
        args.preset = None
    if args.child:
        return child(args)

    argv = [
        "--dim",
        str(args.dim),
        "--seed",
        str(args.seed),
        "--weight",
        str(args.weight),
        "--block-size",
        str(args.block_size),
        "--memory-mb",
        str(args.memory_mb),
    ]
    if args.clothes_protocols:
        argv += ["--clothes-protocols"] + args.clothes_protocols
    argv += (
        ["--preset", args.preset]
        if args.preset
        else ["--num-query", str(args.num_query), "--num-gallery", str(args.num_gallery)]
    )
    nq, ng = PRESETS[args.preset] if args.preset else (args.num_query, args.num_gallery)
    print(
        "{} queries x {} gallery, dim {}, seed {}, identity weight {:.4f}".format(
            nq, ng, args.dim, args.seed, args.weight
        )
    )
    gemm = run_child("gemm", argv)
    ours = run_child("lastreid", argv)
    clothes = run_child("clothes", argv) if args.clothes_protocols else None
    gemm2 = run_child("gemm", argv)  # the machine may be shared: keep the faster product
    gemm_times = (gemm["time"], gemm2["time"])
    gemm["time"], gemm["cpu"] = min(gemm_times), min(gemm["cpu"], gemm2["cpu"])
    api = None if args.skip_api else run_child("api", argv)
    evaluator = None if args.skip_evaluator else run_child("evaluator", argv)
    theirs = None if args.skip_fastreid else run_child("fastreid", argv)

    print("\nthreads: {}, query block: {}".format(ours["threads"], gemm["block_size"]))
    print(
        "lastreid: R1 {:.4f}  mAP {:.4f}  mINP {:.4f}  (positives tied with an other-identity "
        "item: {})".format(ours["cmc"][0], ours["mAP"], ours["mINP"], ours["tied"])
    )
    row = "{:<28}{:>8.1f}{:>8.1f}{:>13.2f}   {}"
    print("{:<28}{:>8}{:>8}{:>13}".format("", "wall s", "CPU s", "peak RSS GB"))
    print(
        row.format(
            "bare fp32 q @ g.T (blocks)",
            gemm["time"],
            gemm["cpu"],
            gemm["rss_gb"],
            "(wall: min of {:.1f}, {:.1f})".format(*gemm_times),
        )
    )
    print(
        row.format(
            "lastreid rank_metrics",
            ours["time"],
            ours["cpu"],
            ours["rss_gb"],
            "(distances {:.1f} s, ranking {:.1f} s)".format(ours["dist_s"], ours["rank_s"]),
        )
    )
    if clothes:
        print(
            row.format(
                "+ " + " ".join(args.clothes_protocols),
                clothes["time"],
                clothes["cpu"],
                clothes["rss_gb"],
                "(distances {:.1f} s, ranking {:.1f} s)".format(
                    clothes["dist_s"], clothes["rank_s"]
                ),
            )
        )
    if api:
        print(
            row.format(
                "rank_metrics, API defaults",
                api["time"],
                api["cpu"],
                api["rss_gb"],
                "(caller's arrays unchanged: {})".format(api["unchanged"]),
            )
        )
    if evaluator:
        print(
            row.format(
                "BlockedReidEvaluator",
                evaluator["time"],
                evaluator["cpu"],
                evaluator["rss_gb"],
                "(evaluate(); filling its buffer took {:.1f} s)".format(evaluator["fill_s"]),
            )
        )
    if theirs:
        print(
            row.format(
                "fastreid build_dist+rank", theirs["time"], theirs["cpu"], theirs["rss_gb"], ""
            )
        )
    print(
        "\nlastreid / bare product: wall {:.2f}x, CPU {:.2f}x".format(
            ours["time"] / gemm["time"], ours["cpu"] / gemm["cpu"]
        )
    )
    ok = True
    if clothes:
        ok = report_clothes(clothes, ours) and ok
    if api:
        ok = report_api(api) and ok
        ok = compare("API defaults vs overwrite=True", api, ours) and ok
    if evaluator:
        ok = report_evaluator(evaluator, ng, gemm["block_size"], args.dim) and ok
        ok = (
            compare("BlockedReidEvaluator vs rank_metrics", evaluator, ours, rank1_only=True) and ok
        )
        if clothes:
            ok = compare_protocols(evaluator["protocols"], clothes["protocols"]) and ok
    if theirs:
        print(
            "fastreid / lastreid: time {:.1f}x, peak RSS {:.1f}x".format(
                theirs["time"] / ours["time"], theirs["rss_gb"] / ours["rss_gb"]
            )
        )
        ok = compare("fastreid vs lastreid", theirs, ours)
        if not ok:
            compare(
                "fastreid's distance matrix ranked with lastreid's tie rule vs lastreid",
                theirs["stable"],
                ours,
            )
            print(
                "(fastreid's argsort is not stable: exact distance ties with an other "
                "identity ({} positives here) are ordered arbitrarily)".format(ours["tied"])
            )
    return 0 if ok else 1


def report_clothes(clothes, ours):
    """Prints the clothes-aware protocols' numbers and cost against the general-only child;
    True when the general numbers of the two agree."""
    for name, r in clothes["protocols"].items():
        print(
            "{} protocol: R1 {:.4f}  mAP {:.4f}  ({} queries with a positive)".format(
                name, r["Rank1"], r["mAP"], r["num_valid"]
            )
        )
    print(
        "with {}: wall {:.2f}x, ranking {:.2f}x, peak RSS {:+.3f} GiB, against general only".format(
            " ".join(clothes["protocols"]),
            clothes["time"] / ours["time"],
            clothes["rank_s"] / ours["rank_s"],
            clothes["rss_gb"] - ours["rss_gb"],
        )
    )
    return compare("general numbers with / without clothes protocols", clothes, ours)


def compare_protocols(evaluator, clothes):
    """The evaluator's clothes-aware Rank-1 / mAP (%) against the `clothes` child's."""
    diff = max(
        max(abs(r["Rank-1"] / 100 - clothes[p]["Rank1"]), abs(r["mAP"] / 100 - clothes[p]["mAP"]))
        for p, r in evaluator.items()
    )
    ok = diff <= 1e-6
    print(
        "BlockedReidEvaluator vs blocked_metrics, {}: max abs diff of Rank-1 and mAP {:.2e} "
        "-> {}".format(" ".join(evaluator), diff, "AGREE" if ok else "DISAGREE")
    )
    return ok


def report_api(api):
    """Prints the API-default figures against the targets (features + 0.6 GiB, 1.15x the bare
    product timed in the same process); True when the caller's arrays were unchanged."""
    feats, bare = api["features_gb"], min(api["bare_s"])
    print(
        "API defaults: peak RSS {:.2f} GiB = features {:.2f} + {:.2f} (target: under "
        "features + 0.6); RSS after imports {:.2f}, so {:.2f} over imports + features".format(
            api["rss_gb"],
            feats,
            api["rss_gb"] - feats,
            api["rss_imports_gb"],
            api["rss_gb"] - feats - api["rss_imports_gb"],
        )
    )
    print(
        "API defaults / bare product in the same process: wall {:.2f}x (bare: min of "
        "{:.1f}, {:.1f} s; target <= 1.15x), CPU {:.2f}x".format(
            api["time"] / bare, *api["bare_s"], api["cpu"] / min(api["bare_cpu_s"])
        )
    )
    if not api["unchanged"]:
        print("API defaults MODIFIED the caller's arrays")
    return api["unchanged"]


def report_evaluator(ev, num_gallery, block_size, dim):
    """Prints what the evaluator holds: its buffer (the features, once) and what evaluate()
    adds above it, against one distance block (block_size x gallery) plus the two
    normalisation buffers of `DistanceBlocks`; True when the addition stays within them
    (and 64 MiB of slack for the metrics' own arrays)."""
    gib = 2**30
    expected = (block_size * num_gallery + (block_size + min(2048, num_gallery)) * dim) * 4 / gib
    held = ev["rss_loaded_gb"] - ev["rss_imports_gb"]
    print(
        "BlockedReidEvaluator: buffer of {} rows; RSS with it filled {:.2f} GiB = after imports "
        "{:.2f} + {:.2f} (the features: {:.2f}); evaluate() peaked at {:.2f} GiB, +{:.2f} GiB "
        "above that (one distance block + buffers: {:.2f}){}".format(
            ev["buffer_rows"],
            ev["rss_loaded_gb"],
            ev["rss_imports_gb"],
            held,
            ev["features_gb"],
            ev["rss_gb"],
            ev["added_gb"],
            expected,
            "" if ev["peak_reset"] else " (peak not resettable here: it includes the filling)",
        )
    )
    within = ev["added_gb"] <= expected + 64 / 1024
    if not within:
        print("BlockedReidEvaluator added MORE than one distance block and its buffers")
    return within


def compare(what, a, b, rank1_only=False):
    import numpy as np

    cmc_a, cmc_b = (a["cmc"][:1], b["cmc"][:1]) if rank1_only else (a["cmc"], b["cmc"])
    d_cmc = float(np.max(np.abs(np.subtract(cmc_a, cmc_b))))
    d_map, d_inp = abs(a["mAP"] - b["mAP"]), abs(a["mINP"] - b["mINP"])
    ok = max(d_cmc, d_map, d_inp) <= 1e-6
    print(
        "{}: max abs diff CMC {:.2e}, mAP {:.2e}, mINP {:.2e} -> {}".format(
            what, d_cmc, d_map, d_inp, "AGREE" if ok else "DISAGREE"
        )
    )
    return ok


if __name__ == "__main__":
    sys.exit(main())
