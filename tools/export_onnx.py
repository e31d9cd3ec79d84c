#!/usr/bin/env python
"""Export the inference model (eval mode: the BNNeck feature) to ONNX with a dynamic
batch axis, then check with onnxruntime (CPU) that its features match PyTorch's.

    python tools/export_onnx.py --config-file configs/LaST/bagtricks_R50.yml \\
        --weights logs/LaST/bagtricks_R50/model_best.pth -o bot_r50.onnx

Input `images`: float32 (batch, 3, H, W) RGB in 0..255 at INPUT.SIZE_TEST; output
`features`: float32 (batch, dim). Exits 1, removing the file, if any batch's relative error
exceeds --tolerance. Any KEY VALUE pairs at the end override the config.
"""

import argparse
import os

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid.errors import report_error, run_tool
from lastreid.features import inference_argument_parser
from lastreid.onnx_export import EXPORTERS, available_exporters, check_onnx, export_onnx
from lastreid.startup import add_overrides, parse_with_overrides

from fastreid.utils.logger import setup_logger


def _sizes(text):
    sizes = [int(x) for x in text.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"positive batch sizes, comma-separated: {text!r}")
    return sizes


def parse_args(argv=None):
    parser = inference_argument_parser(__doc__)
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--exporter",
        choices=("auto",) + EXPORTERS,
        default="auto",
        help="auto: dynamo when onnxscript is installed, else torchscript",
    )
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument(
        "--batch-sizes",
        type=_sizes,
        default=[1, 3, 8],
        metavar="N,N,...",
        help="sizes of the random batches compared with PyTorch (default 1,3,8)",
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max relative error")
    add_overrides(parser)
    return parse_with_overrides(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="lastreid", abbrev_name="lastreid")  # load reports, precision path
    from lastreid.features import FeatureExtractor, build_inference_cfg

    # The CPU float32 model: ONNX gets float32 weights whatever the precision path says.
    cfg = build_inference_cfg(
        args.config_file,
        args.weights,
        list(args.opts)
        + ["MODEL.DEVICE", "cpu", "MODEL.CHANNELS_LAST", "off", "MODEL.CPU_BF16", "off"],
    )
    model = FeatureExtractor(cfg, progress=False).model.eval()
    size = tuple(cfg.INPUT.SIZE_TEST)
    print(f"exporters available: {', '.join(available_exporters())}")
    used = export_onnx(model, args.output, size, args.exporter, args.opset)  # InputError: 1 line
    print(
        f"wrote {args.output} ({used} exporter, opset {args.opset}, "
        f"input (batch, 3, {size[0]}, {size[1]}))"
    )
    results = check_onnx(model, args.output, size, args.batch_sizes)
    worst = max(err for _, err in results)
    for b, err in results:
        print(f"  batch {b}: max relative error {err:.2e}")
    if worst > args.tolerance:
        os.remove(args.output)  # a graph that does not compute the model's features
        report_error(
            f"ONNX and PyTorch features differ (max relative error {worst:.2e} "
            f"> {args.tolerance:g})"
        )
        return 1
    print(f"onnxruntime matches PyTorch within {args.tolerance:g} (max relative error {worst:.2e})")
    return 0


if __name__ == "__main__":
    run_tool(main)
