#!/usr/bin/env python
"""Train and compare the LaST baselines in one table: BoT, the paper's MGN / PCB / HPM and
fast-reid's AGW / SBS (and fast-reid's own MGN), each with LaST's protocol.

    python tools/benchmark.py --methods bagtricks mgn pcb hpm agw sbs --output logs/benchmark
    # shrunk for a CPU on the synthetic LaST (tools/make_synthetic_data.py):
    python tools/benchmark.py --methods bagtricks mgn --output /tmp/bench MODEL.DEVICE cpu \\
        MODEL.BACKBONE.PRETRAIN False SOLVER.MAX_EPOCH 2 INPUT.SIZE_TRAIN [64,32] ...

Each method is a tools/train_net.py --resume run of configs/LaST/<its config> under
OUTPUT/runs/<method>/, skipped once finished; then a separate train_net.py --eval-only of the
checkpoint it kept (its wall time and peak memory; it must give the run's own numbers).
Running the same command again continues after any interruption. Trailing `KEY VALUE` pairs
override the config of every run. Writes OUTPUT/benchmark_table.md, .csv and
benchmark_chart.png, built from what the runs saved (results.json, metrics.json).
"""

import argparse

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid import launch, transfer
from lastreid.benchmark import DEFAULT_METHODS, METHODS, Benchmark, format_markdown
from lastreid.errors import InputError, run_tool
from lastreid.transfer.process import add_run_options, parse_run_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=list(METHODS),
        help="in this order (default: %(default)s)",
    )
    p.add_argument("--output", default="logs/benchmark", help="runs/ and the table go here")
    transfer.add_stale_option(p)
    p.add_argument("--heartbeat", type=float, default=120.0, help="seconds between progress lines")
    add_run_options(p)
    args = parse_run_args(p, argv)
    if len(set(args.methods)) != len(args.methods):
        p.error("--methods names a method twice")
    return args


def main(argv=None):
    args = parse_args(argv)
    if launch.under_torchrun():  # N copies would run every method N times into one table
        raise InputError(
            "run it as one process, not under torchrun; --num-gpus N gives each run N processes"
        )
    bench = Benchmark(
        methods=args.methods,
        output=args.output,
        opts=args.opts,
        num_gpus=args.num_gpus,
        stale=args.stale,
        verbose=args.verbose,
        heartbeat_s=args.heartbeat,
        log=lambda line: print(line, flush=True),
    )
    rows = bench.run()
    print("\n" + format_markdown(rows), flush=True)
    for path in bench.table_paths():
        print("[benchmark] wrote " + path, flush=True)
    return 1 if any(r.error or r.eval_reproduced is False for r in rows) else 0


if __name__ == "__main__":
    run_tool(main)
