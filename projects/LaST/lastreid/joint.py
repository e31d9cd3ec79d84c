"""The joint-training comparison of the paper's code (docs/generalisation.md): Market-1501
trained alone, with LaST's clothes classes and with MSMT17, tested on Market-1501 only."""

import os
from dataclasses import dataclass, field
from functools import partial
from typing import List, Optional

from .experiments.folder import config_value, selected_metrics
from .experiments.protocols import PAPER_FINETUNE_OPTS, PAPER_OPTS, PROTOCOL_CHOICES, protocol_note
from .experiments.runs import Runner, RunSpec
from .experiments.table import CONFIG_DIGITS, column_table, number, r1_map, write_tables
from .run_results import run_config, run_config_sha256

__all__ = ["JOINT_RUNS", "TARGET", "JointComparison", "joint_tables"]

TARGET = "Market1501"  # every run is tested here, and only here
# (training set, config): the plain run first, the two joint ones after it.
JOINT_RUNS = (
    ("Market1501", "configs/Market1501/base_R50.yml"),
    ("Market1501 + LaSTClothes", "configs/Market1501/joint_LaSTClothes_R50.yml"),
    ("Market1501 + MSMT17", "configs/Market1501/joint_MSMT17_R50.yml"),
)


@dataclass
class JointComparison:
    """The runs of JOINT_RUNS x protocols under `output`, and joint_table.md / .csv."""

    output: str
    runner: Runner = field(default_factory=lambda: Runner("[joint]"))
    imagenet: Optional[str] = None
    opts: List[str] = field(default_factory=list)
    protocol: str = "clean"

    def specs(self):
        """[(training set, protocol, RunSpec)]: the command's overrides, then the protocol's."""
        found = []
        for name, config in JOINT_RUNS:
            for p in PROTOCOL_CHOICES[self.protocol]:
                opts = ["MODEL.BACKBONE.PRETRAIN_PATH", self.imagenet] if self.imagenet else []
                opts += self.opts + (PAPER_OPTS + PAPER_FINETUNE_OPTS if p == "paper" else [])
                suffix, tail = ("-paper", " | paper") if p == "paper" else ("", "")
                out = os.path.join(self.output, "runs", name.replace(" + ", "-") + suffix)
                found.append((name, p, RunSpec(name + tail, config, opts, out)))
        return found

    def run(self):
        """Applies --stale, trains, writes the table: {(set, protocol): numbers or None}."""
        specs = self.specs()
        self.runner.settle([(spec, [spec.output]) for _, _, spec in specs], self.output)
        numbers = {}
        for i, (name, p, spec) in enumerate(specs, 1):
            read = partial(self.numbers, p, spec.output)
            numbers[name, p] = self.runner.execute(spec, f"{i}/{len(specs)}", read)
        paths = write_tables(self.output, "joint_table", *joint_tables(numbers, self.protocol))
        self.runner.summary(list(numbers.values()), paths)
        return numbers

    @staticmethod
    def numbers(protocol, out, results):
        """A finished run's numbers on TARGET (paper: of its best epoch), or None."""
        metrics, selection = selected_metrics(out, results, TARGET, protocol == "paper")
        if metrics is None:
            return None
        epoch = selection["best_epoch"] if selection else results["evaluation"].get("epoch")
        return {
            "metrics": metrics,
            "epoch": epoch,
            "best_epoch": epoch if selection else None,
            # fastreid writes the training set's count there
            "classes": config_value(run_config(out), "MODEL.HEADS.NUM_CLASSES") or None,
            "iterations_per_epoch": results.get("iterations_per_epoch"),
            "config_sha256": run_config_sha256(out),
        }


def _count(key, row):  # of the training set, from whichever protocol's run has it
    value = next((n[key] for n in row[1].values() if n and n.get(key)), None)
    return number(value, "{:,}") or "-", value or ""


def _csv_cell(protocol, i, row):  # the i-th of R1, mAP, epoch, config of a protocol's run
    found = row[1][protocol] or {}
    metrics = found.get("metrics") or {}
    config = (found.get("config_sha256") or "")[:CONFIG_DIGITS]
    return None, (number(metrics.get("Rank-1")), number(metrics.get("mAP")),
                  found.get("epoch") or "", config)[i]  # fmt: skip


def joint_tables(numbers, protocol="clean"):
    """(markdown, CSV rows): a line per training set, its classes, iterations, Rank-1 / mAP."""
    protocols = PROTOCOL_CHOICES[protocol]
    columns = [
        ("training set", "training set", lambda row: (row[0], row[0])),
        ("classes", "classes", partial(_count, "classes")),
        ("iterations / epoch", "iterations per epoch", partial(_count, "iterations_per_epoch")),
        (TARGET, None, lambda row: ("; ".join(r1_map(n) for n in row[1].values()), None)),
    ]
    for p in protocols:
        prefix = "paper " if protocol == "both" and p == "paper" else ""
        for i, header in enumerate(("R1", "mAP", "epoch", "config")):
            columns.append((None, prefix + header, partial(_csv_cell, p, i)))
    columns.append((None, "protocol", lambda row: (None, protocol)))
    rows = [(name, {p: numbers.get((name, p)) for p in protocols}) for name, _ in JOINT_RUNS]
    note = f"{TARGET} test, Rank-1 / mAP (%); {protocol_note(protocol)}"
    return column_table(note, columns, rows)
