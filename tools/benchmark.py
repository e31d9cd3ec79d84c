#!/usr/bin/env python
"""Train and compare the LaST baselines in one table: BoT, the paper's MGN / PCB / HPM and
fast-reid's AGW / SBS (and fast-reid's own MGN), each with LaST's protocol.

    python tools/benchmark.py --methods bagtricks mgn pcb hpm agw sbs --output logs/benchmark
    # shrunk for a CPU on the synthetic LaST (tools/make_synthetic_data.py):
    python tools/benchmark.py --methods bagtricks mgn --output /tmp/bench MODEL.DEVICE cpu \\
        MODEL.BACKBONE.PRETRAIN False SOLVER.MAX_EPOCH 2 INPUT.SIZE_TRAIN [64,32] ...

A method is a config: a name stands for configs/LaST/<name>_R50.yml, or give a path to a
.yml (a model of your own: a registered module plus its config). Each is a
tools/train_net.py --resume run under OUTPUT/runs/<method>/, skipped once finished; then a
separate train_net.py --eval-only of the checkpoint it kept (its wall time and peak memory;
it must give the run's own numbers). Running the same command again continues after any
interruption. Trailing `KEY VALUE` pairs override the config of every run. Writes
OUTPUT/benchmark_table.md, .csv and benchmark_chart.png, built from what the runs saved.
"""

import argparse

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid.benchmark import DEFAULT_METHODS, Benchmark, method_config
from lastreid.errors import run_tool
from lastreid.experiments.cli import add_table_options, print_table, runner_of
from lastreid.startup import parse_with_overrides


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="NAME|FILE.yml",
                   help="in this order (default: %(default)s)")  # fmt: skip
    p.add_argument("--heartbeat", type=float, default=120.0, help="seconds between progress lines")
    add_table_options(p, output="logs/benchmark")
    args = parse_with_overrides(p, argv)
    names = [method_config(m)[0] for m in args.methods]  # an unknown one stops here
    if len(set(names)) != len(names):
        p.error("--methods names a method twice")
    runner = runner_of(args, "[benchmark]", heartbeat_s=args.heartbeat)
    bench = Benchmark(args.methods, args.output, args.opts, runner)
    rows = bench.run()
    print_table(args, bench.paths[0])
    for path in bench.paths:
        print("[benchmark] wrote " + path, flush=True)
    return 1 if any(r.error or r.eval_reproduced is False for r in rows) else 0


if __name__ == "__main__":
    run_tool(main)
