#!/usr/bin/env python
"""Run the generalisation matrix (pre-trained models x targets x settings), write the table.

Targets: PRCC and Celeb-reID (the default), Market1501 and DukeMTMC (--datasets); settings:
direct transfer and fine-tuned. The table is written as markdown and CSV, with a bar chart.

    # every pre_feat/*.pth (name = file stem), the paper's recipes at 256x128
    python tools/transfer_matrix.py --models pre_feat --output logs/transfer
    # plus a randomly initialised model and a checkpoint from elsewhere
    python tools/transfer_matrix.py --models pre_feat --random-init \\
        --source mine=logs/LaST/bagtricks_R50/model_best.pth
    # the paper's whole table: BoT trained here on four sources, plus the ImageNet row
    python tools/transfer_matrix.py --train LaST Market1501 DukeMTMC MSMT17 \\
        --imagenet pretrained/resnet50-0676ba61.pth --output logs/transfer --protocol both
    # the demo's small version on the synthetic data (configs/*/..._synthetic.yml)
    python tools/transfer_matrix.py --preset synthetic --random-init \\
        --source synthetic-LaST=demo/runs/bot_synthetic_last/model_best.pth \\
        --output demo/runs/transfer
    # the short-term targets too, and LaST's clothes classes as a row
    python tools/transfer_matrix.py --train LaST LaSTClothes Market1501 \\
        --imagenet pretrained/resnet50-0676ba61.pth \\
        --datasets PRCC CelebReID Market1501 DukeMTMC --output logs/transfer

--train first trains each named source from the --imagenet file under
OUTPUT/sources/<name>/ (BoT, configs/<name>/bagtricks_R50.yml; LaSTClothes: the base recipe
on LaST's person x outfit classes, configs/LaST/clothes_R50.yml); the row's model is the one
the recipe keeps (model_best.pth by LaST val for LaST and LaSTClothes, model_final.pth for
the others). --imagenet alone adds the "ImageNet" row (the file itself). --protocol clean
(default) reports each fine-tune's last epoch; seed measures as the public LaST code did
(the best (Rank-1 + mAP) / 2 epoch on the test split, bilinear resize; the LaSTClothes row
selected on Market1501 test, a run of its own); both runs and shows both. A row is never
transferred to a dataset its model was trained on (--train: its name; a file: DATASETS.NAMES
of the config.yaml beside it, else a file named after the dataset): those cells read
"source".

Each cell is a tools/train_net.py run under OUTPUT/runs/<source>/<dataset>-<setting>[-paper]/;
its numbers are kept in OUTPUT/results/*.json. Running the same command again skips the
trained sources and finished cells and resumes an interrupted run from its last checkpoint;
a run made with another recipe (config file or overrides) is never reused silently: the
command stops and names it (--stale redo / reuse decide). Trailing `KEY VALUE` pairs
override the config of every run (e.g. SOLVER.MAX_EPOCH 2 SOLVER.STEPS "[]": a step past
the shortened run is refused). Reference
(public LaST code) and torchvision checkpoints get MODEL.BACKBONE.TORCHVISION_STEM True,
fastreid ones False (--torchvision-stem to force it).
"""

import argparse
import os

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid import launch, transfer
from lastreid.errors import InputError, run_tool
from lastreid.transfer.process import add_run_options, parse_run_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--models", metavar="DIR", help="folder of pre-trained *.pth (name = file stem)")
    p.add_argument(
        "--source",
        metavar="NAME=PATH",
        action="append",
        default=[],
        help="one more pre-trained checkpoint (repeatable)",
    )
    p.add_argument("--random-init", action="store_true", help="add a randomly initialised source")
    p.add_argument(
        "--train",
        nargs="+",
        default=[],
        metavar="NAME",
        choices=list(transfer.SOURCE_RECIPES),
        help="train these sources first (BoT; LaSTClothes: the base recipe), one row each: "
        + ", ".join(transfer.SOURCE_RECIPES),
    )
    p.add_argument(
        "--imagenet",
        metavar="FILE",
        help="torchvision ImageNet ResNet-50 file: the ImageNet row, and the "
        "initialisation of the --train sources",
    )
    transfer.add_protocol_option(p)
    p.add_argument("--output", default="logs/transfer", help="runs, results/ and the table go here")
    transfer.add_stale_option(p)
    p.add_argument(
        "--preset",
        choices=sorted(transfer.CONFIGS),
        default="reference",
        help="reference: the paper's recipes (configs/transfer/direct.yml, "
        "configs/*/bagtricks_R50_finetune.yml); synthetic: the demo's short ones",
    )
    p.add_argument(
        "--direct-config", help="config of the direct-transfer runs (overrides --preset)"
    )
    p.add_argument(
        "--finetune-config",
        metavar="DATASET=FILE",
        action="append",
        default=[],
        help="fine-tune config of a dataset (overrides --preset; repeatable)",
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        default=list(transfer.DEFAULT_DATASETS),
        choices=transfer.DATASETS,
        help="target datasets (default: %(default)s)",
    )
    p.add_argument(
        "--settings", nargs="+", default=list(transfer.SETTINGS), choices=transfer.SETTINGS
    )
    p.add_argument(
        "--torchvision-stem",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: from each checkpoint's layout",
    )
    p.add_argument(
        "--single-shot",
        action="store_true",
        help="also report PRCC's single-shot protocol (TEST.SINGLE_SHOT) for the PRCC cells",
    )
    p.add_argument(
        "--trust", action="store_true", help="MODEL.TRUST_CHECKPOINTS True for the sources"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init weights")
    p.add_argument(
        "--no-print-table", action="store_true", help="do not print the table at the end"
    )
    add_run_options(p)
    args = parse_run_args(p, argv)
    return args


def _pairs(items, what):
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InputError("{} expects NAME=VALUE, got {!r}".format(what, item))
        out.append((name, value))
    return out


def main(argv=None):
    args = parse_args(argv)
    if launch.under_torchrun():  # N copies would run every cell N times into one table
        raise InputError(
            "run it as one process, not under torchrun; --num-gpus N gives each "
            "cell N processes on CUDA"
        )
    configs = {
        "direct": transfer.CONFIGS[args.preset]["direct"],
        "finetune": dict(transfer.CONFIGS[args.preset]["finetune"]),
    }
    if args.direct_config:
        configs["direct"] = os.path.abspath(args.direct_config)
    for dataset, path in _pairs(args.finetune_config, "--finetune-config"):
        if dataset not in transfer.DATASETS:
            raise InputError("--finetune-config: unknown dataset {!r}".format(dataset))
        configs["finetune"][dataset] = os.path.abspath(path)
    if args.train and not args.imagenet and not transfer.pretrain_off(args.opts):
        raise InputError(
            "--train needs --imagenet FILE (the sources start from ImageNet), or "
            "MODEL.BACKBONE.PRETRAIN False among the overrides"
        )
    first = transfer.trained_sources(args.output, args.train, args.imagenet, args.preset)
    sources = transfer.discover_sources(
        args.models,
        [(n, os.path.abspath(p)) for n, p in _pairs(args.source, "--source")],
        random_init=args.random_init,
        trust=args.trust,
        first=first,
    )
    for s in sources:
        print(
            "[transfer] source {!r}: {} ({} layout){}{}".format(
                s.name,
                s.path or "random weights",
                s.layout if s.path else "fastreid",
                ", trained here" if s.train else "",
                ", trained on " + ", ".join(s.trained_on) if s.trained_on else "",
            ),
            flush=True,
        )
    matrix = transfer.TransferMatrix(
        output=os.path.abspath(args.output),
        sources=sources,
        configs=configs,
        datasets=tuple(d for d in transfer.DATASETS if d in args.datasets),
        settings=tuple(s for s in transfer.SETTINGS if s in args.settings),
        opts=list(args.opts),
        num_gpus=args.num_gpus,
        trust=args.trust,
        verbose=args.verbose,
        stem={"auto": None, "on": True, "off": False}[args.torchvision_stem],
        seed=args.seed,
        single_shot=args.single_shot,
        protocol=args.protocol,
        imagenet=os.path.abspath(args.imagenet) if args.imagenet else None,
        stale=args.stale,
    )
    cells = matrix.run()
    if not args.no_print_table:
        with open(os.path.join(matrix.output, "transfer_table.md")) as f:
            print("\n" + f.read(), flush=True)
    return 1 if any(c.result is None and not c.is_source for c in cells) else 0


if __name__ == "__main__":
    run_tool(main)
