#!/usr/bin/env python
"""Check a dataset tree: ids / images (and clothes, where labelled) per split next to the
documented statistics, every file name that does not parse and every image that does not
decode.

    python tools/check_dataset.py --datasets LaST LaSTVal --root /data/datasets
    python tools/check_dataset.py --datasets PRCC CelebReID --no-decode
    python tools/check_dataset.py --datasets Market1501 DukeMTMC MSMT17
    python tools/check_dataset.py --datasets LTCC DeepChange DeepChangeVal VCClothes

Exits 1 if any split folder is missing or empty, any name does not parse or any image does
not decode (with --strict also when counts differ from the expected ones), else 0. For a
tree written by lastreid.datasets.synthetic the expected counts are the generator's.
"""

import argparse

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid.datasets.check import CHECKABLE, check_dataset
from lastreid.errors import report_error, run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--datasets",
        "--dataset",  # its spelling before the tools shared one name for one thing
        nargs="+",
        required=True,
        choices=list(CHECKABLE),
        metavar="NAME",
        help="one or more of: " + ", ".join(CHECKABLE),
    )
    parser.add_argument(
        "--root", default=None, help="datasets root (default: $FASTREID_DATASETS, else datasets/)"
    )
    parser.add_argument(
        "--no-decode",
        action="store_true",
        help="only walk and parse names; do not decode the images",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding threads (default: the number of CPUs, at most 8)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also fail when counts differ from the expected statistics",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    problems = 0
    for name in dict.fromkeys(args.datasets):
        report = check_dataset(
            name,
            args.root,
            decode=not args.no_decode,
            workers=args.workers,
            progress=not args.quiet,
        )
        print(report.format(strict=args.strict), flush=True)
        problems += report.problems(strict=args.strict)
    if problems:
        report_error(f"{problems} problem(s) found")
    return 1 if problems else 0


if __name__ == "__main__":
    run_tool(main)
