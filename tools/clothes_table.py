#!/usr/bin/env python
"""Train methods on the clothes-changing benchmarks and compare them in one table.

    # BoT and CAL on LaST, PRCC, LTCC, DeepChange and VC-Clothes, from ImageNet
    python tools/clothes_table.py --imagenet pretrained/resnet50-0676ba61.pth --output logs/clothes
    # any config as a method; two benchmarks; the reference code's selection beside ours
    python tools/clothes_table.py --methods cal my/cal_variant.yml --datasets PRCC LTCC \\
        --imagenet pretrained/resnet50-0676ba61.pth --protocol both

A method is a name (configs/<dataset>/<name>_R50.yml, else configs/LaST/<name>_R50.yml) or
a config file; the table sets every run's datasets: it trains on the benchmark and reports
the protocols its papers use (LaST and DeepChange: general; PRCC: same-clothes and
clothes-changing query sets; LTCC: general and CC; VC-Clothes: all cameras, SC and CC).
--protocol clean (default) keeps model_best.pth by the val split where one exists (LaST,
DeepChange), else the last epoch; paper measures as the reference code (Simple-CCReID): the
test sets at every evaluation, the best Rank-1 epoch kept; both runs the two. Each run is
tools/train_net.py under OUTPUT/runs/<method>/<dataset>[-paper]/; the table (OUTPUT/
clothes_table.md and .csv) is read from each run's results.json / metrics.json, with the
published numbers beneath. Running the same command again skips finished runs and resumes
an interrupted one; a run of another recipe is never reused silently (--stale). Trailing
`KEY VALUE` pairs override the config of every run.
"""

import argparse
import os

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid.clothes_table import BENCHMARKS, DEFAULT_METHODS, ClothesTable, method_config
from lastreid.errors import MissingFileError, run_tool
from lastreid.experiments import cli
from lastreid.experiments.protocols import add_protocol_option
from lastreid.startup import parse_with_overrides


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    names = [b.name for b in BENCHMARKS]
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="NAME|FILE",
                   help="method names or config files, in this order "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--datasets", nargs="+", default=names, choices=names, help="benchmarks")
    p.add_argument("--imagenet", metavar="FILE", help="MODEL.BACKBONE.PRETRAIN_PATH of every run")
    add_protocol_option(p)
    cli.add_table_options(p, output="logs/clothes")
    args = parse_with_overrides(p, argv)
    runner = cli.runner_of(args, "[clothes]")
    if len(set(args.methods)) != len(args.methods):
        p.error("--methods names a method twice")
    for method in args.methods:  # one line for an unknown method, before any run
        method_config(method, args.datasets[0])
    opts = list(args.opts)
    if args.imagenet:
        if not os.path.isfile(args.imagenet):
            raise MissingFileError(f"--imagenet {args.imagenet}: no such file")
        opts = ["MODEL.BACKBONE.PRETRAIN_PATH", os.path.abspath(args.imagenet)] + opts
    datasets = [n for n in names if n in args.datasets]
    output = os.path.abspath(args.output)
    table = ClothesTable(output, runner, args.methods, datasets, opts, args.protocol)
    numbers = table.run()
    cli.print_table(args, os.path.join(output, "clothes_table.md"))
    return 1 if None in numbers.values() else 0


if __name__ == "__main__":
    run_tool(main)
