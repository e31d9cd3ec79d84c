#!/usr/bin/env python
"""The built-in default job (`make demo`): writes the synthetic LaST / PRCC / Celeb-reID
trees, trains BoT on synthetic LaST on whatever device there is, and evaluates it; then
runs the transfer table (tools/transfer_matrix.py --preset synthetic) with two sources, a
random init and that BoT model ("synthetic-LaST"), on synthetic PRCC and Celeb-reID,
direct and fine-tuned, and prints it.

Everything goes under --workdir (default `demo/`): `datasets/` and `runs/`. --smoke runs
every step at the smallest size (tiny synthetic trees, ResNet-18 at 64x32, one epoch, batches
of 8, the transfer table on PRCC only): a check that the job works end to end, whose numbers
mean nothing (tests/test_demo.py runs it).
"""

import argparse
import os
import subprocess
import sys
import time

import lastreid  # noqa: F401
from lastreid.datasets import synthetic
from lastreid.errors import LastreidError, run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo", help="where datasets/ and runs/ go")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every step at the smallest size (tiny data, ResNet-18 at 64x32, one epoch): "
        "checks the job, its numbers mean nothing",
    )
    return parser.parse_args()


# --smoke: the tiny trees with 5 training iterations of 8 images an epoch and galleries of 10
# or more (Rank-10), and the overrides that make each run a few seconds on a CPU.
SMOKE_DATA = dict(preset="tiny", test_ids=5, images_per_camera=3, train_images=8)
# fmt: off
SMOKE_OPTS = [
    "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.DEPTH", "18x",
    "MODEL.BACKBONE.FEAT_DIM", "512", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST",
    "[64, 32]", "SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_EPOCH", "1", "SOLVER.STEPS", "[]",
    "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "1",
    "TEST.IMS_PER_BATCH", "64", "DATALOADER.NUM_WORKERS", "0",
]
# fmt: on


def write_data(root, seed, smoke=False):
    # A few seconds; rewriting (only folders the generator made) keeps the seed honest.
    print(f"[demo] writing synthetic LaST, PRCC and Celeb-reID under {root} (seed {seed})")
    if smoke:
        synthetic.write_all(root, seed=seed, **SMOKE_DATA)
    else:
        synthetic.write_all(root, preset="default", seed=seed)


def run(cmd, env):
    print("[demo] $ " + " ".join(cmd), flush=True)
    code = subprocess.run(cmd, env=env).returncode
    if code:
        raise LastreidError(
            f"{os.path.basename(cmd[1])} failed (exit status {code}; its error is above)"
        )


def main():
    args = parse_args()
    start = time.time()
    datasets = os.path.abspath(os.path.join(args.workdir, "datasets"))
    runs = os.path.abspath(os.path.join(args.workdir, "runs"))
    write_data(datasets, args.seed, args.smoke)
    opts = SMOKE_OPTS if args.smoke else []
    env = dict(os.environ, FASTREID_DATASETS=datasets)
    bot_dir = os.path.join(runs, "bot_synthetic_last")
    # fmt: off
    run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config-file",
            os.path.join(REPO, "configs", "LaST", "bagtricks_R50_synthetic.yml"),
            "OUTPUT_DIR", bot_dir,
            *opts,
        ],
        env,
    )
    # fmt: on
    bot_seconds = time.time() - start
    transfer_dir = os.path.join(runs, "transfer")
    run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "transfer_matrix.py"),
            "--preset",
            "synthetic",
            "--random-init",
            "--source",
            "synthetic-LaST=" + os.path.join(bot_dir, "model_best.pth"),
            "--output",
            transfer_dir,
            *(["--datasets", "PRCC"] if args.smoke else []),
            "--no-print-table",
            *opts,
        ],
        env,
    )
    transfer_seconds = time.time() - start - bot_seconds
    # The manual's pictures (docs/tools.md) for this run: training curves, ranked lists on LaST val.
    run([sys.executable, os.path.join(REPO, "tools", "plot_curves.py"), bot_dir], env)
    run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "visualize_ranks.py"),
            "--config-file",
            os.path.join(REPO, "configs", "LaST", "bagtricks_R50_synthetic.yml"),
            "--weights",
            os.path.join(bot_dir, "model_best.pth"),
            "--dataset",
            "LaSTVal",
            "-o",
            os.path.join(bot_dir, "ranks"),
            "--order",
            "random",
            "--draw",
            "4",
            "--topk",
            "8",
            "--colors",
            "128",
            "--quiet",
            *opts,
        ],
        env,
    )
    # Last: the total time and the transfer table.
    print(
        f"[demo] done in {time.time() - start:.0f} s (data + BoT {bot_seconds:.0f} s, transfer "
        f"table {transfer_seconds:.0f} s); BoT run in {bot_dir}, transfer runs, table (.md, .csv) "
        f"and chart (.png) in {transfer_dir}\n"
    )
    with open(os.path.join(transfer_dir, "transfer_table.md")) as f:
        print(f.read(), end="", flush=True)


if __name__ == "__main__":
    run_tool(main)
