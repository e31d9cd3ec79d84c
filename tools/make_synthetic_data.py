#!/usr/bin/env python3
"""Writes synthetic LaST / PRCC / Celeb-reID (and, on request, Market-1501 / DukeMTMC-reID /
MSMT17 / LTCC / DeepChange / VC-Clothes) trees (see lastreid/datasets/synthetic/).

    python tools/make_synthetic_data.py --root datasets --preset default
    python tools/make_synthetic_data.py --root /tmp/d --datasets last --train-ids 20
    python tools/make_synthetic_data.py --root /tmp/d --datasets ltcc deepchange vcclothes

A dataset folder written by an earlier run is replaced; any other existing, non-empty
dataset folder is left alone and the command fails.
"""

import argparse
import json

from lastreid.datasets import synthetic
from lastreid.errors import run_tool

SIZE_FLAGS = sorted(
    {key for preset in synthetic.PRESETS.values() for sizes in preset.values() for key in sizes}
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="datasets root (FASTREID_DATASETS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--datasets", nargs="+", choices=synthetic.ALL_DATASETS, default=list(synthetic.DATASETS)
    )
    parser.add_argument("--preset", choices=sorted(synthetic.PRESETS), default="default")
    for key in SIZE_FLAGS:
        parser.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            type=int,
            help="override the preset's %s (datasets that have it)" % key,
        )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sizes = {key: getattr(args, key) for key in SIZE_FLAGS if getattr(args, key) is not None}
    # A foreign folder in the way, a bad size: one line from run_tool.
    counts = synthetic.write_all(args.root, args.preset, args.seed, tuple(args.datasets), **sizes)
    for dataset, splits in counts.items():
        print(f"{dataset}: " + json.dumps(splits))
    print(f"wrote under {args.root} (preset {args.preset}, seed {args.seed})")


if __name__ == "__main__":
    run_tool(main)
