#!/usr/bin/env python
"""Plot a run's training curves (losses, learning rate, validation Rank-1 / mAP) to a PNG.

    python tools/plot_curves.py logs/LaST/bagtricks_R50            # -> <run>/curves.png
    python tools/plot_curves.py demo/runs/bot_synthetic_last -o curves.png --x iteration

Reads <run>/metrics.json and, to put epochs on the x axis, <run>/config.yaml.
"""

import argparse

from lastreid.curves import plot_curves
from lastreid.errors import run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a training output folder (with metrics.json)")
    parser.add_argument(
        "-o", "--output", default=None, help="PNG to write (default <run_dir>/curves.png)"
    )
    parser.add_argument(
        "--x",
        dest="x_axis",
        choices=("auto", "epoch", "iteration"),
        default="auto",
        help="x axis (auto: epochs when the iterations per epoch are known)",
    )
    parser.add_argument("--width", type=float, default=15.0, help="inches (at --dpi)")
    parser.add_argument("--height", type=float, default=4.2, help="inches (at --dpi)")
    parser.add_argument("--dpi", type=int, default=100)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    path = plot_curves(args.run_dir, args.output, args.x_axis, (args.width, args.height), args.dpi)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_tool(main)
