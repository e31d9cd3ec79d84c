#!/usr/bin/env python
"""Run the generalisation matrix (pre-trained models x targets x settings), write the table.

    # every pre_feat/*.pth (name = file stem), plus random init and a checkpoint of elsewhere
    python tools/transfer_matrix.py --models pre_feat --random-init \\
        --source mine=logs/LaST/bagtricks_R50/model_best.pth --output logs/transfer
    # the paper's whole table: BoT trained here on four sources, plus the ImageNet row
    python tools/transfer_matrix.py --train LaST Market1501 DukeMTMC MSMT17 \\
        --imagenet pretrained/resnet50-0676ba61.pth --output logs/transfer --protocol both
    # the demo's small version on the synthetic data (configs/*/..._synthetic.yml)
    python tools/transfer_matrix.py --preset synthetic --random-init \\
        --source synthetic-LaST=demo/runs/bot_synthetic_last/model_best.pth \\
        --output demo/runs/transfer

Targets PRCC and Celeb-reID (default), Market1501, DukeMTMC; direct and fine-tuned; protocol
clean (a fine-tune's last epoch), paper (its best (Rank-1 + mAP) / 2 epoch on the test split,
bilinear) or both. A row's cells build the model of the config.yaml beside its file, never on
its own training data ("source"). Each cell is a train_net.py run under OUTPUT/runs/, its
numbers in OUTPUT/results/; the same command again skips what is done and resumes the rest.
Trailing KEY VALUE pairs override every run's config. docs/generalisation.md.
"""

import argparse
import os

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid.errors import InputError, run_tool
from lastreid.experiments import cli
from lastreid.experiments.protocols import add_protocol_option
from lastreid.startup import parse_with_overrides
from lastreid.transfer.matrix import TransferMatrix
from lastreid.transfer.report import DEFAULT_DATASETS, SETTINGS
from lastreid.transfer.sources import (
    CONFIGS,
    DATASETS,
    SOURCE_RECIPES,
    discover_sources,
    trained_sources,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--models", metavar="DIR", help="folder of pre-trained *.pth (name = file stem)")
    p.add_argument("--source", metavar="NAME=PATH", action="append", default=[],
                   help="one more pre-trained checkpoint (repeatable)")  # fmt: skip
    p.add_argument("--random-init", action="store_true", help="add a randomly initialised source")
    p.add_argument("--train", nargs="+", default=[], metavar="NAME",
                   choices=list(SOURCE_RECIPES),
                   help="train these sources first (BoT; LaSTClothes: the base recipe), one "
                   "row each: " + ", ".join(SOURCE_RECIPES))  # fmt: skip
    p.add_argument("--imagenet", metavar="FILE", help="torchvision ImageNet ResNet-50 file: the "
                   "ImageNet row, and the initialisation of the --train sources")  # fmt: skip
    add_protocol_option(p)
    p.add_argument("--preset", choices=sorted(CONFIGS), default="reference",
                   help="reference: the paper's recipes (configs/transfer/direct.yml, configs/*/"
                   "bagtricks_R50_finetune.yml); synthetic: the demo's short ones")  # fmt: skip
    p.add_argument(
        "--direct-config", help="config of the direct-transfer runs (overrides --preset)"
    )
    p.add_argument("--finetune-config", metavar="DATASET=FILE", action="append", default=[],
                   help="a dataset's fine-tune config (repeatable)")  # fmt: skip
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS),
                   choices=DATASETS, help="target datasets (default: %(default)s)")  # fmt: skip
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--torchvision-stem", choices=("auto", "on", "off"), default="auto",
                   help="auto: from each checkpoint's layout")  # fmt: skip
    p.add_argument("--single-shot", action="store_true",
                   help="also report PRCC's single-shot protocol (TEST.SINGLE_SHOT)")  # fmt: skip
    p.add_argument(
        "--trust", action="store_true", help="MODEL.TRUST_CHECKPOINTS True for the sources"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init weights")
    cli.add_table_options(p, output="logs/transfer")
    return parse_with_overrides(p, argv)


def _pairs(items, what):
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (name, sep, value) in zip(items, pairs) if not (name and sep and value)]
    if bad:
        raise InputError("{} expects NAME=VALUE, got {!r}".format(what, bad[0]))
    return [(name, value) for name, _, value in pairs]


def main(argv=None):
    args = parse_args(argv)
    runner = cli.runner_of(args, "[transfer]")
    configs = dict(CONFIGS[args.preset], finetune=dict(CONFIGS[args.preset]["finetune"]))
    if args.direct_config:
        configs["direct"] = os.path.abspath(args.direct_config)
    for dataset, path in _pairs(args.finetune_config, "--finetune-config"):
        if dataset not in DATASETS:
            raise InputError("--finetune-config: unknown dataset {!r}".format(dataset))
        configs["finetune"][dataset] = os.path.abspath(path)
    if args.train and not args.imagenet and not cli.pretrain_off(args.opts):
        raise InputError("--train needs --imagenet FILE (the sources start from ImageNet), or "
                         "MODEL.BACKBONE.PRETRAIN False among the overrides")  # fmt: skip
    sources = discover_sources(
        args.models,
        [(n, os.path.abspath(p)) for n, p in _pairs(args.source, "--source")],
        random_init=args.random_init,
        trust=args.trust,
        first=trained_sources(args.output, args.train, args.imagenet, args.preset),
    )
    for s in sources:
        trained = (", trained here" if s.train else "") + (
            ", trained on " + ", ".join(s.trained_on) if s.trained_on else "")  # fmt: skip
        where = f"{s.path} ({s.layout} layout)" if s.path else "random weights (fastreid layout)"
        print(f"[transfer] source {s.name!r}: {where}{trained}", flush=True)
    matrix = TransferMatrix(
        output=os.path.abspath(args.output),
        sources=sources,
        configs=configs,
        runner=runner,
        datasets=tuple(d for d in DATASETS if d in args.datasets),
        settings=tuple(s for s in SETTINGS if s in args.settings),
        opts=args.opts,
        stem={"auto": None, "on": True, "off": False}[args.torchvision_stem],
        trust=args.trust,
        seed=args.seed,
        single_shot=args.single_shot,
        protocol=args.protocol,
        imagenet=os.path.abspath(args.imagenet) if args.imagenet else None,
    )
    cells = matrix.run()
    cli.print_table(args, os.path.join(matrix.output, "transfer_table.md"))
    return 1 if any(c.result is None and not c.is_source for c in cells) else 0


if __name__ == "__main__":
    run_tool(main)
