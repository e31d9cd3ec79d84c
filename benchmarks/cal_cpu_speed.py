"""CPU training speed of CAL relative to BoT at the same size (docs/clothes_changing.md).

Both models come from their LaST configs (configs/LaST/bagtricks_R50.yml and
configs/LaST/cal_R50.yml, with the depth, input size and precision given here), seeded
random weights, one random batch of --batch images (4 per identity) used for every step.
A step is lastreid's CPU training step (`train_steps.CpuTrainer`: forward, losses, backward,
optimizer step); CAL's includes its clothes classifier's own step and both clothes terms
(the run is past MODEL.CAL.START_EPOCH_CC / START_EPOCH_ADV). The two models take turns step
by step and img/s uses the median step, so a change in the machine's load hits both alike.
The classifier sizes are LaST's by default (5,000 identities, 16,012 clothes classes: the
clothes classifier's rows are a cost of CAL's own).

    python benchmarks/cal_cpu_speed.py                                # R50 128x64 batch 32
    python benchmarks/cal_cpu_speed.py --depth 18x --size 64 32 --steps 30
"""

import argparse
import itertools
import os
import statistics
import time

import lastreid  # noqa: F401  (before fastreid)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "BoT": os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml"),
    "CAL": os.path.join(REPO, "configs", "LaST", "cal_R50.yml"),
}
FEAT_DIMS = {"18x": 512, "34x": 512, "50x": 2048, "101x": 2048}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", default="50x", help="ResNet depth: 18x, 34x, 50x, 101x")
    p.add_argument("--size", type=int, nargs=2, default=[128, 64], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=32, help="images per step (4 per identity)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--num-classes", type=int, default=5000, help="identities (LaST: 5000)")
    p.add_argument("--num-clothes", type=int, default=16012, help="clothes classes (LaST)")
    p.add_argument("--bf16", default="off", help="MODEL.CPU_BF16 and CHANNELS_LAST: off, on")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args()


def build_trainer(name, args):
    import torch
    from fastreid.engine.train_loop import SimpleTrainer
    from lastreid import precision
    from lastreid.engine import Trainer
    from lastreid.startup import build_cfg
    from lastreid.train_steps import ClothesClassifierStep, CpuTrainer

    h, w = args.size
    # fmt: off
    cfg = build_cfg(CONFIGS[name], [
        "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.BACKBONE.DEPTH", args.depth, "MODEL.BACKBONE.FEAT_DIM", str(FEAT_DIMS[args.depth]),
        "INPUT.SIZE_TRAIN", f"[{h}, {w}]", "INPUT.SIZE_TEST", f"[{h}, {w}]",
        "MODEL.HEADS.NUM_CLASSES", str(args.num_classes),
        "MODEL.CAL.NUM_CLOTHES", str(args.num_clothes),
        "MODEL.CAL.START_EPOCH_CC", "0", "MODEL.CAL.START_EPOCH_ADV", "0",
        "MODEL.CPU_BF16", args.bf16, "MODEL.CHANNELS_LAST", args.bf16,
        "SOLVER.IMS_PER_BATCH", str(args.batch),
    ])
    # fmt: on
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    optimizer, params = Trainer.build_optimizer(cfg, model)
    gen = torch.Generator().manual_seed(0)
    ids = args.batch // 4
    batch = {
        "images": torch.rand(args.batch, 3, h, w, generator=gen) * 255,
        "targets": torch.arange(ids).repeat_interleave(4) % args.num_classes,
        "camids": torch.zeros(args.batch, dtype=torch.long),
    }
    if name == "CAL":
        # Two outfits per identity; the identities' clothes classes in clothes_pids.
        batch["clothes"] = 2 * batch["targets"] + torch.arange(args.batch) % 2
        model.clothes_pids.copy_(torch.arange(args.num_clothes) // 2 % args.num_classes)
    plain = SimpleTrainer(model, [batch], optimizer, params)
    trainer = CpuTrainer.from_trainer(plain, precision.resolve(cfg, log=False, training=True))
    trainer._data_loader_iter = itertools.repeat(batch)
    trainer.iter = trainer.epoch = 0
    clothes_optimizer = Trainer.build_clothes_optimizer(cfg, model)
    if clothes_optimizer is not None:
        trainer.clothes_step = ClothesClassifierStep(clothes_optimizer)
    return trainer


def main():
    args = parse_args()
    import torch
    from fastreid.utils.events import EventStorage

    if args.threads:
        torch.set_num_threads(args.threads)
    trainers = {name: build_trainer(name, args) for name in CONFIGS}
    times = {name: [] for name in trainers}
    with EventStorage(0):
        for i in range(args.warmup + args.steps):
            for name, trainer in trainers.items():  # turns: the same load for both
                start = time.perf_counter()
                trainer.run_step()
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    rates = {name: args.batch / statistics.median(t) for name, t in times.items()}
    print(
        f"R{args.depth[:-1]} {args.size[0]}x{args.size[1]}, batch {args.batch}, "
        f"{args.num_classes} ids / {args.num_clothes} clothes classes, bf16 {args.bf16}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    for name, rate in rates.items():
        print(f"  {name}: {rate:.1f} img/s (median of {args.steps} steps)")
    print(f"  CAL / BoT: {rates['CAL'] / rates['BoT']:.2f}")


if __name__ == "__main__":
    main()
