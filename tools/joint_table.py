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
evaluation after the last epoch) or its per-epoch history in metrics.json (paper: the best
(Rank-1 + mAP) / 2 epoch on the test split, as the paper's code). Running the same command
again skips the finished runs and resumes an interrupted one; a run made with another
recipe is never reused silently (--stale). Trailing `KEY VALUE` pairs override the config
of every run (e.g. SOLVER.MAX_EPOCH 2 SOLVER.STEPS "[]").
"""

import argparse
import os

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid.errors import InputError, MissingFileError, run_tool
from lastreid.experiments import cli
from lastreid.experiments.protocols import add_protocol_option
from lastreid.joint import JointComparison
from lastreid.startup import parse_with_overrides


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--imagenet", metavar="FILE", help="torchvision ImageNet ResNet-50 file: every run's start"
    )
    add_protocol_option(p)
    cli.add_table_options(p, output="logs/joint")
    args = parse_with_overrides(p, argv)
    runner = cli.runner_of(args, "[joint]")
    if not args.imagenet and not cli.pretrain_off(args.opts):
        raise InputError("the runs start from ImageNet: give --imagenet FILE, or "
                         "MODEL.BACKBONE.PRETRAIN False among the overrides")  # fmt: skip
    if args.imagenet and not os.path.isfile(args.imagenet):
        raise MissingFileError("--imagenet {}: no such file".format(args.imagenet))
    imagenet = os.path.abspath(args.imagenet) if args.imagenet else None
    output = os.path.abspath(args.output)
    comparison = JointComparison(output, runner, imagenet, args.opts, args.protocol)
    numbers = comparison.run()
    cli.print_table(args, os.path.join(output, "joint_table.md"))
    return 1 if None in numbers.values() else 0


if __name__ == "__main__":
    run_tool(main)
