#!/usr/bin/env python
"""Train BoT (or any fast-reid model) on LaST, evaluate a checkpoint, or resume a run.

    python tools/train_net.py --config-file configs/LaST/bagtricks_R50.yml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_best.pth
    python tools/train_net.py --config-file ... --resume
    python tools/train_net.py --config-file ... --num-gpus 8 SOLVER.IMS_PER_BATCH 256
    torchrun --standalone --nproc-per-node 2 tools/train_net.py --config-file ... MODEL.DEVICE cpu

Any `KEY VALUE` pairs after the flags override the config, as in fast-reid. Every number
the run reports (its last evaluation on DATASETS.TESTS, the test of the kept checkpoint on
TEST.FINAL_TESTS) is also written, atomically, to OUTPUT_DIR/results.json
(lastreid.run_results).

Several processes (`lastreid.launch`): under torchrun (any number of CPU processes over
gloo, or one per GPU over NCCL), or fastreid's --num-gpus / --num-machines / --dist-url on
CUDA. SOLVER.IMS_PER_BATCH is the batch of all processes together.
"""

import logging

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid.engine import Trainer, default_setup, evaluate_weights
from lastreid.errors import run_tool
from lastreid.interruptions import explained_interruptions
from lastreid.launch import check_launch, launch
from lastreid.run_results import evaluation_part, write_run_results
from lastreid.startup import build_cfg, check_can_start, parse_with_overrides

from fastreid.engine import default_argument_parser
from fastreid.utils import comm


def main(args):
    # Built again in each process (fastreid's launch spawns them); start() has checked it.
    cfg = build_cfg(args.config_file, args.opts, eval_only=args.eval_only)
    default_setup(cfg, args)
    if args.eval_only:
        results = evaluate_weights(cfg)
        record = dict(evaluation=evaluation_part(cfg, results, weights=cfg.MODEL.WEIGHTS))
        if comm.is_main_process():
            write_run_results(cfg, **record)
        return results
    # A full disk, an unwritable OUTPUT_DIR, the dataset gone: one line saying what to do.
    with explained_interruptions(cfg.OUTPUT_DIR):
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
        record = trainer.results_record(results)
        if comm.is_main_process():
            write_run_results(cfg, **record)
    return results


def start(args):
    # Every config, dataset or launch problem as one line before any process starts or
    # anything is written (under torchrun every process runs this). main() builds the config
    # again and logs the CPU fallback once, properly.
    logging.disable(logging.WARNING)
    try:
        cfg = build_cfg(args.config_file, args.opts, eval_only=args.eval_only)
        check_can_start(cfg, eval_only=args.eval_only)
        check_launch(args, cfg)
    finally:
        logging.disable(logging.NOTSET)
    return launch(main, args, cfg)


if __name__ == "__main__":
    run_tool(start, parse_with_overrides(default_argument_parser()))
