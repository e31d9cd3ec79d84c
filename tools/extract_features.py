#!/usr/bin/env python
"""Extract re-id features (float32) of a dataset's query + gallery, or of a folder / glob of
crops, into one .npz with their paths, pids and camids.

    python tools/extract_features.py --config-file configs/LaST/bagtricks_R50.yml \\
        --weights logs/LaST/bagtricks_R50/model_best.pth --dataset LaSTVal -o val_feats.npz
    python tools/extract_features.py --config-file ... --weights ... \\
        --images 'crops/**/*.jpg' -o crops.npz MODEL.DEVICE cpu

The .npz holds: features (N, dim) float32, paths, pids, camids (int64; -1 where a crop's
name does not parse as a LaST / PRCC / Celeb-reID name), num_query (queries come first;
0 for crops), dataset, metric (TEST.METRIC), flip, config, weights. Features are
flip-averaged when TEST.FLIP.ENABLED (or --flip / --no-flip). Any KEY VALUE pairs at the
end override the config. Under torchrun (`torchrun --nproc-per-node N tools/extract_features.py
...`) the processes share the images and the main process writes the file.
"""

import os

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid import launch
from lastreid.errors import run_tool
from lastreid.features import (
    FeatureExtractor,
    build_inference_cfg,
    inference_argument_parser,
    save_features,
)
from lastreid.startup import add_overrides, parse_with_overrides

from fastreid.utils.logger import setup_logger


def parse_args(argv=None):
    parser = inference_argument_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="a registered dataset name: its query + gallery")
    source.add_argument(
        "--images", help="a folder of crops (searched recursively) or a glob pattern"
    )
    parser.add_argument("--root", default=None, help="datasets root (default $FASTREID_DATASETS)")
    parser.add_argument("-o", "--output", required=True, help="the .npz to write")
    parser.add_argument("--batch-size", type=int, default=None, help="default TEST.IMS_PER_BATCH")
    parser.add_argument(
        "--flip",
        dest="flip",
        action="store_true",
        default=None,
        help="average with mirrored images (default TEST.FLIP.ENABLED)",
    )
    parser.add_argument("--no-flip", dest="flip", action="store_false")
    add_overrides(parser)
    return parse_with_overrides(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    # Load reports, precision path; from the main process only under torchrun.
    setup_logger(name="lastreid", abbrev_name="lastreid", distributed_rank=launch.env_rank())
    cfg = build_inference_cfg(args.config_file, args.weights, args.opts)
    launch.init_from_env(cfg)
    extractor = FeatureExtractor(cfg, batch_size=args.batch_size, flip=args.flip)
    if args.dataset:
        data = extractor.extract_dataset(args.dataset, root=args.root)
    else:
        data = extractor.extract_files(args.images)
    if data is None:  # not the main process of a torchrun job
        launch.finish()
        return 0
    written = save_features(
        args.output,
        data,
        metric=cfg.TEST.METRIC,
        flip=extractor.flip,
        config=os.path.abspath(args.config_file),
        weights=extractor.weights or "",
    )
    feats = data["features"]
    print(
        f"wrote {written}: {feats.shape[0]} features of dim {feats.shape[1]} "
        f"({data['num_query']} queries), flip {'on' if extractor.flip else 'off'}"
    )
    launch.finish()
    return 0


if __name__ == "__main__":
    run_tool(main)
