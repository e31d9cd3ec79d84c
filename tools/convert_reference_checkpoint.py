#!/usr/bin/env python
"""Converts a ResNet-50 BoT checkpoint of the public LaST code to fastreid's layout.

    python tools/convert_reference_checkpoint.py checkpoint_best.pth -o bot_r50_fastreid.pth

The output is `{'model': state_dict}` with fastreid's key names (see
`lastreid.checkpoint.convert_reference_state_dict`), saved atomically and readable with
weights_only=True. `Checkpointer` also converts such files on the fly, so this is only
needed to keep a converted copy. The key report lists how many keys went where and any
key outside the mapping; unless --no-verify, the result is then loaded into a fastreid
BoT ResNet-50 (ours, or the one --config-file describes) and the load report printed.
"""

import argparse
from collections import Counter

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid import checkpoint as ckpt
from lastreid.atomic import save_atomic
from lastreid.errors import report_error, run_tool

_GROUP_DEPTH = {"backbone": 2, "heads": 2}


def _group(key):
    parts = key.split(".")
    depth = _GROUP_DEPTH.get(parts[0], 1)
    if parts[:2] == ["heads", "bottleneck"]:
        depth = 3
    return ".".join(parts[:depth])


def _state_dict_of(raw):
    if isinstance(raw, dict):
        for name in ("state_dict", "model"):
            if isinstance(raw.get(name), dict):
                return raw[name]
    return raw


# The public LaST code's BoT ResNet-50, when no --config-file is given.
# fmt: off
REFERENCE_BOT = [
    "MODEL.BACKBONE.DEPTH", "50x",
    "MODEL.BACKBONE.LAST_STRIDE", "1",
    "MODEL.BACKBONE.NORM", "BN",
    "MODEL.HEADS.NAME", "EmbeddingHead",
    "MODEL.HEADS.NECK_FEAT", "before",
    "MODEL.HEADS.WITH_BNNECK", "True",
    "MODEL.HEADS.POOL_LAYER", "GlobalAvgPool",
    "MODEL.HEADS.CLS_LAYER", "Linear",
    "MODEL.HEADS.NORM", "BN",
]
# fmt: on


def _bot_model(num_classes, config_file=""):
    """The verification model, built as every tool builds one (`startup.build_cfg`,
    `modeling.build_model`): only the layout matters, so no ImageNet file and no GPU, and
    the float32 path (the CPU fast path's channels-last layout changes no key)."""
    from lastreid.modeling import build_model
    from lastreid.startup import build_cfg

    opts = [] if config_file else list(REFERENCE_BOT)
    # fmt: off
    opts += [
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.HEADS.NUM_CLASSES", str(int(num_classes)),
        "MODEL.CHANNELS_LAST", "off",
        "MODEL.CPU_BF16", "off",
    ]
    # fmt: on
    return build_model(build_cfg(config_file, opts), log=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="checkpoint of the public LaST code")
    parser.add_argument("-o", "--output", help="fastreid checkpoint to write")
    # Its spelling before the tools shared one name for one thing: a second positional.
    parser.add_argument("output_file", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument(
        "--trust",
        action="store_true",
        help="allow a full-pickle load of the input (only for files you trust)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="do not load the result into a fastreid BoT ResNet-50",
    )
    parser.add_argument(
        "--config-file", default="", help="build the verification model from this config instead"
    )
    args = parser.parse_args(argv)
    if bool(args.output) == bool(args.output_file):
        parser.error("give the file to write once: -o/--output FILE")
    args.output = args.output or args.output_file

    raw = ckpt.load_checkpoint_file(args.input, trust=args.trust)  # CheckpointError: 1 line
    state = _state_dict_of(raw)
    if not ckpt.is_reference_state_dict(state):
        raise ckpt.CheckpointError(
            f"{args.input} does not use the public LaST code's key names "
            "(no base.0.weight / layer4.*)"
        )

    converted, unknown = ckpt.convert_reference_keys(state)
    for key in unknown:
        converted.pop(key)
    save_atomic({"model": converted}, args.output)

    print(f"{args.input} -> {args.output}: {len(converted)} keys converted")
    for group, count in sorted(Counter(_group(k) for k in converted).items()):
        print(f"  {group:<24} {count:4d}")
    if unknown:
        print(f"  not converted (no fastreid counterpart, left out): {len(unknown)}")
        for key in unknown:
            print(f"    {key}")
    else:
        print("  not converted: none")

    if args.no_verify:
        return 0
    classifier = converted.get("heads.weight")
    model = _bot_model(classifier.shape[0] if classifier is not None else 1, args.config_file)
    checkpointer = ckpt.Checkpointer(model)
    checkpointer.load(args.output)
    report = checkpointer.last_load_report
    print(report.summary())
    if not ckpt.has_torchvision_stem(model):
        print(
            f"note: the reference pools with MaxPool2d(3, stride=2, padding=1), this model with "
            f"{model.backbone.maxpool}; lastreid.checkpoint.use_torchvision_stem(model) "
            "reproduces the reference features exactly"
        )
    if not ckpt.backbone_loaded(report):
        report_error(
            f"{args.output}: the backbone of a fastreid BoT ResNet-50 was not fully loaded"
        )
        return 1
    return 0


if __name__ == "__main__":
    run_tool(main)
