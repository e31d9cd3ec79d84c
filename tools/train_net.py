#!/usr/bin/env python
"""Train BoT (or any fast-reid model) on LaST, evaluate a checkpoint, or resume a run.

    python tools/train_net.py --config-file configs/LaST/bagtricks_R50.yml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_best.pth
    python tools/train_net.py --config-file ... --resume
    python tools/train_net.py --config-file ... --num-gpus 8 SOLVER.IMS_PER_BATCH 256

Any `KEY VALUE` pairs after the flags override the config, as in fast-reid.
"""
import lastreid  # noqa: F401  (patches fastreid; must come first)
from fastreid.engine import default_argument_parser, launch

from lastreid.config import build_cfg
from lastreid.engine import Trainer, default_setup, evaluate_weights


def main(args):
    cfg = build_cfg(args.config_file, args.opts, eval_only=args.eval_only)
    default_setup(cfg, args)
    if args.eval_only:
        return evaluate_weights(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
