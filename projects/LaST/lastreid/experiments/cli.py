"""The command-line options every table tool shares: --output, --stale, --num-gpus,
--verbose, --no-print-table and the trailing KEY VALUE overrides of every run; and the
tools' common start (one process, not under torchrun)."""

import argparse

from ..errors import InputError
from ..launch import under_torchrun
from .runs import STALE_CHOICES, Runner

__all__ = ["add_table_options", "pretrain_off", "print_table", "parse_table_args", "runner_of"]
__all__ += ["split_overrides"]


def add_table_options(parser, output, print_option=True):
    """Adds the shared options; `output`: the default of --output. The overrides come last
    (they take the rest of the line)."""
    parser.add_argument("--output", default=output, help="runs and the table go here")
    parser.add_argument(
        "--stale",
        choices=STALE_CHOICES,
        default="stop",
        help="finished or started runs made with another recipe (config file or overrides) "
        "than this command's: stop (say which, run nothing), redo them, or reuse their numbers",
    )
    parser.add_argument("--num-gpus", type=int, default=0, help="passed to train_net.py")
    parser.add_argument(
        "--verbose", action="store_true", help="show the runs' output instead of logging it"
    )
    if print_option:
        parser.add_argument(
            "--no-print-table", action="store_true", help="do not print the table at the end"
        )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")


def split_overrides(opts):
    """The overrides after an optional "--", checked to come in KEY VALUE pairs."""
    opts = list(opts[1:] if opts[:1] == ["--"] else opts)
    if len(opts) % 2:
        raise InputError("overrides come in KEY VALUE pairs, got: " + " ".join(opts))
    return opts


def parse_table_args(parser, argv):
    """parser.parse_args(argv) with the overrides checked (a usage error otherwise)."""
    args = parser.parse_args(argv)
    try:
        args.opts = split_overrides(args.opts)
    except InputError as e:
        parser.error(str(e))
    return args


def runner_of(args, tag, **kw):
    """The Runner of a tool's parsed arguments; refuses to run under torchrun (N copies
    would run every run N times into one table)."""
    if under_torchrun():
        raise InputError(
            "run it as one process, not under torchrun; --num-gpus N gives each run N processes"
        )
    return Runner(tag, num_gpus=args.num_gpus, verbose=args.verbose, stale=args.stale, **kw)


def pretrain_off(opts):
    """True when `KEY VALUE` overrides say MODEL.BACKBONE.PRETRAIN False (no ImageNet file
    is then needed to train)."""
    pairs = dict(zip(opts[::2], opts[1::2]))
    return str(pairs.get("MODEL.BACKBONE.PRETRAIN", "")).lower() in ("false", "0", "off", "no")


def print_table(args, path):
    """Prints the markdown table at `path` unless --no-print-table."""
    if not getattr(args, "no_print_table", False):
        with open(path) as f:
            print("\n" + f.read(), flush=True)
