"""How a table that fine-tunes on a test split measures a run (--protocol): clean, its last
epoch; paper, as the public LaST code, the best epoch on the test split, bilinear; both."""

__all__ = ["PAPER_FINETUNE_OPTS", "PAPER_OPTS", "PROTOCOL_CHOICES"]
__all__ += ["add_protocol_option", "protocol_note"]

PROTOCOL_CHOICES = {"clean": ("clean",), "paper": ("paper",), "both": ("clean", "paper")}
_NOTES = {
    "clean": "protocol clean: {} the evaluation after the last epoch",
    "paper": "protocol paper: {} the epoch with the best (Rank-1 + mAP) / 2 on the test split "
    "(in brackets), bilinear resize, as the public LaST code",
    "both": "protocol both: {} clean (last epoch); paper (best (Rank-1 + mAP) / 2 epoch on the "
    "test split, in brackets; bilinear resize)",
}
# The paper's details a config can express, for every paper run: bilinear resize (train and
# test), fp32 throughout (no AMP, no bf16), random erasing filled with (0.485, 0.456, 0.406)
# *after* normalisation, i.e. mean + value * std in the 0..255 input scale.
PAPER_OPTS = "INPUT.INTERPOLATION bilinear SOLVER.AMP.ENABLED False MODEL.CPU_BF16 off".split()
PAPER_OPTS += ["INPUT.REA.VALUE", "[151.997, 142.327, 126.824]"]
PAPER_FINETUNE_OPTS = ["TEST.EVAL_PERIOD", "1"]  # the test split after every epoch


def protocol_note(protocol, subject=""):
    """The table's line saying how `protocol` measured it; `subject`: what it measured."""
    return " ".join(_NOTES[protocol].format(subject).split())


def add_protocol_option(parser):
    """--protocol of the tools that fine-tune on a test split (transfer and joint tables)."""
    parser.add_argument(
        "--protocol",
        choices=sorted(PROTOCOL_CHOICES),
        default="clean",
        help="clean: last epoch; paper: best (R1 + mAP) / 2 epoch on the test split, "
        "bilinear (the public LaST code's); both: both numbers",
    )
