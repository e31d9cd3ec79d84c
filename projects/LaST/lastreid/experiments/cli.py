"""The options every table tool shares, and the tools' common start."""

from ..errors import InputError
from ..launch import under_torchrun
from ..startup import add_overrides
from .runs import STALE_CHOICES, Runner

__all__ = ["add_table_options", "pretrain_off", "print_table", "runner_of"]


def add_table_options(parser, output):
    """Adds the shared options (`output`: the default of --output), the overrides last."""
    parser.add_argument("--output", default=output, help="runs and the table go here")
    parser.add_argument(
        "--stale",
        choices=STALE_CHOICES,
        default="stop",
        help="finished or started runs made with another recipe (config file or overrides) "
        "than this command's: stop (say which, run nothing), redo them, or reuse their numbers",
    )
    parser.add_argument("--num-gpus", type=int, default=0, help="passed to train_net.py")
    parser.add_argument("--verbose", action="store_true", help="show the runs' output, not logged")
    parser.add_argument("--no-print-table", action="store_true", help="do not print the table")
    add_overrides(parser, help="KEY VALUE overrides for every run")


def runner_of(args, tag, **kw):
    """The Runner of a tool's arguments; never under torchrun (N copies: every run N times)."""
    if under_torchrun():
        raise InputError(
            "run it as one process, not under torchrun; --num-gpus N gives each run N processes"
        )
    return Runner(tag, num_gpus=args.num_gpus, verbose=args.verbose, stale=args.stale, **kw)


def pretrain_off(opts):
    """True when the overrides say MODEL.BACKBONE.PRETRAIN False (no ImageNet file needed)."""
    pairs = dict(zip(opts[::2], opts[1::2]))
    return str(pairs.get("MODEL.BACKBONE.PRETRAIN", "")).lower() in ("false", "0", "off", "no")


def print_table(args, path):
    if not args.no_print_table:
        with open(path) as f:
            print("\n" + f.read(), flush=True)
