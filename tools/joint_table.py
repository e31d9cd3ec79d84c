#!/usr/bin/env python
"""Train Market-1501 alone, with LaST's clothes classes and with MSMT17; compare on Market-1501.

    # the three runs of the public LaST code's joint-training comparison, 120 epochs each
    python tools/joint_table.py --imagenet pretrained/resnet50-0676ba61.pth --output logs/joint
    # the paper's selection too (best epoch on the test split) beside the last epoch
    python tools/joint_table.py --imagenet pretrained/resnet50-0676ba61.pth --protocol both

Each run is tools/train_net.py with the base recipe from ImageNet (configs/Market1501/
base_R50.yml, joint_LaSTClothes_R50.yml, joint_MSMT17_R50.yml) under
OUTPUT/runs/<training set>[-paper]/, tested on Market1501 only; the table (OUTPUT/
joint_table.md and .csv) is read from each run's results.json (--protocol clean: the
evaluation after the last epoch) or its per-epoch history in metrics.json (seed: the best
(Rank-1 + mAP) / 2 epoch on the test split, as the paper's code). Running the same command
again skips the finished runs and resumes an interrupted one from its last checkpoint; a
run made with another recipe (config file or overrides) is never reused silently (--stale).
Trailing `KEY VALUE` pairs override the config of every run (e.g. SOLVER.MAX_EPOCH 2
SOLVER.STEPS "[]").
"""

import argparse
import os

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid import launch, transfer
from lastreid.errors import InputError, MissingFileError, run_tool
from lastreid.transfer.process import add_run_options, parse_run_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--imagenet", metavar="FILE", help="torchvision ImageNet ResNet-50 file: every run's start"
    )
    p.add_argument("--output", default="logs/joint", help="runs/ and the table go here")
    transfer.add_protocol_option(p)
    transfer.add_stale_option(p)
    p.add_argument(
        "--no-print-table", action="store_true", help="do not print the table at the end"
    )
    add_run_options(p)
    args = parse_run_args(p, argv)
    return args


def main(argv=None):
    args = parse_args(argv)
    if launch.under_torchrun():
        raise InputError("run it as one process, not under torchrun; --num-gpus N for each run")
    if not args.imagenet and not transfer.pretrain_off(args.opts):
        raise InputError(
            "the runs start from ImageNet: give --imagenet FILE, or MODEL.BACKBONE.PRETRAIN "
            "False among the overrides"
        )
    if args.imagenet and not os.path.isfile(args.imagenet):
        raise MissingFileError("--imagenet {}: no such file".format(args.imagenet))
    comparison = transfer.JointComparison(
        output=os.path.abspath(args.output),
        imagenet=os.path.abspath(args.imagenet) if args.imagenet else None,
        opts=list(args.opts),
        protocol=args.protocol,
        stale=args.stale,
        num_gpus=args.num_gpus,
        verbose=args.verbose,
    )
    runs = comparison.run()
    if not args.no_print_table:
        with open(os.path.join(comparison.output, "joint_table.md")) as f:
            print("\n" + f.read(), flush=True)
    return 1 if any(r.result is None for r in runs) else 0


if __name__ == "__main__":
    run_tool(main)
