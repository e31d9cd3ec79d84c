#!/usr/bin/env python
"""Draw ranked lists (query + top-k gallery matches, green = same person, red = another)
and the CMC curve, from saved features or from a model.

    python tools/visualize_ranks.py --features val_feats.npz -o vis/ --order worst
    python tools/visualize_ranks.py --config-file configs/LaST/bagtricks_R50.yml \\
        --weights model_best.pth --dataset LaSTVal -o vis/ --order random --seed 1

Writes <output>/ranks_000.png, ... (--per-page queries each) and <output>/cmc.png.
Features files come from tools/extract_features.py; the first num_query rows are the
queries (--num-query overrides it, e.g. for features of a folder of crops). Only the
drawn queries' distance rows are sorted; --order worst / best computes one AP per query
in a blocked pass (no full distance matrix), --order random does not. From a model under
torchrun, the processes share the feature extraction and the main process draws.
"""

import argparse

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid import launch
from lastreid.errors import InputError, run_tool
from lastreid.features import load_features
from lastreid.startup import add_overrides, parse_with_overrides
from lastreid.visualize import ORDERS, cmc_and_map, rank_queries, save_cmc_curve, write_rank_pages

from fastreid.utils.logger import setup_logger


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--features", help="a .npz from tools/extract_features.py")
    parser.add_argument("--config-file", metavar="FILE", help="or: a config ...")
    parser.add_argument("--weights", help="... its checkpoint (default MODEL.WEIGHTS) ...")
    parser.add_argument("--dataset", help="... and a registered dataset to extract")
    parser.add_argument("--root", default=None, help="datasets root (default $FASTREID_DATASETS)")
    parser.add_argument("-o", "--output", default="rank_vis", help="the folder the PNGs go to")
    # The spellings before the tools shared one name for one thing.
    parser.add_argument("--output-dir", dest="output", help=argparse.SUPPRESS)
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="worst",
        help="which queries: lowest AP first, highest first, or random",
    )
    parser.add_argument("--seed", type=int, default=0, help="for --order random")
    parser.add_argument("--draw", type=int, default=8, metavar="N", help="how many queries to draw")
    parser.add_argument("--num-queries", dest="draw", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--per-page", type=int, default=8, help="queries per PNG")
    parser.add_argument(
        "--thumb",
        type=int,
        nargs=2,
        default=(64, 128),
        metavar=("W", "H"),
        help="thumbnail size in pixels",
    )
    parser.add_argument(
        "--colors",
        type=int,
        default=0,
        help="save palette PNGs of this many colours (smaller files; 0: full colour)",
    )
    parser.add_argument(
        "--num-query",
        type=int,
        default=None,
        help="the first N features are the queries (default: the stored num_query)",
    )
    parser.add_argument(
        "--metric",
        choices=("cosine", "euclidean"),
        default=None,
        help="default: the one stored with the features / TEST.METRIC",
    )
    parser.add_argument("--max-rank", type=int, default=50, help="ranks on the CMC curve")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_overrides(parser)
    args = parse_with_overrides(parser, argv)
    if bool(args.features) == bool(args.config_file and args.dataset):
        parser.error("give either --features, or --config-file and --dataset")
    return args


def load(args):
    if args.features:
        return load_features(args.features)
    from lastreid.features import FeatureExtractor, build_inference_cfg

    cfg = build_inference_cfg(args.config_file, args.weights, args.opts)
    launch.init_from_env(cfg)
    data = FeatureExtractor(cfg, progress=not args.quiet).extract_dataset(
        args.dataset, root=args.root
    )
    launch.finish()  # the main process draws alone
    if data is not None:  # None: not the main process of a torchrun job
        data["metric"] = cfg.TEST.METRIC
    return data


def main(argv=None):
    args = parse_args(argv)
    # Load reports, precision path; from the main process only under torchrun.
    setup_logger(name="lastreid", abbrev_name="lastreid", distributed_rank=launch.env_rank())
    data = load(args)
    if data is None:
        return 0
    nq = args.num_query if args.num_query is not None else int(data.get("num_query", 0))
    feats, pids, camids, paths = data["features"], data["pids"], data["camids"], data["paths"]
    if not 0 < nq < len(feats):
        raise InputError(f"num_query is {nq} for {len(feats)} features; give --num-query")
    metric = args.metric or str(data.get("metric", "cosine"))
    split = (feats[:nq], feats[nq:], pids[:nq], pids[nq:], camids[:nq], camids[nq:])
    cmc, m_ap, _ = cmc_and_map(*split, metric=metric, max_rank=args.max_rank)
    rows = rank_queries(
        *split,
        metric=metric,
        order=args.order,
        num_queries=args.draw,
        topk=args.topk,
        seed=args.seed,
        progress=not args.quiet,
    )
    pages = write_rank_pages(
        rows,
        paths[:nq],
        paths[nq:],
        pids[:nq],
        pids[nq:],
        args.output,
        args.topk,
        args.per_page,
        tuple(args.thumb),
        colors=args.colors,
    )
    name = str(data.get("dataset") or "features")
    curve = save_cmc_curve(cmc, f"{args.output}/cmc.png", m_ap, title=f"{name} CMC ({metric})")
    print(
        f"{name}: Rank-1 {cmc[0] * 100:.1f}  Rank-5 {cmc[min(4, len(cmc) - 1)] * 100:.1f}  "
        f"mAP {m_ap * 100:.1f}; {len(rows)} queries ({args.order}) in "
        f"{', '.join(pages)}; CMC in {curve}"
    )
    return 0


if __name__ == "__main__":
    run_tool(main)
