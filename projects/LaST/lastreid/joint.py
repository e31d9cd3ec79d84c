"""The joint-training comparison of the paper's code (docs/generalisation.md;
`tools/joint_table.py`), declared on lastreid.experiments: Market-1501 trained alone, with
LaST's clothes classes and with MSMT17 (the control), from ImageNet with the base recipe,
tested on Market-1501 only, under the clean and/or the paper protocol."""

import os
from dataclasses import dataclass, field
from functools import partial
from typing import List, Optional

from .experiments.folder import best_epoch, config_value, run_config
from .experiments.protocols import PAPER_FINETUNE_OPTS, PAPER_OPTS, PROTOCOL_CHOICES, protocol_note
from .experiments.runs import Runner, RunSpec
from .experiments.table import CONFIG_DIGITS, number, write_tables
from .run_results import dataset_metrics, run_config_sha256

__all__ = ["JOINT_RUNS", "TARGET", "JointComparison", "joint_markdown", "joint_csv_rows"]

TARGET = "Market1501"  # every run is tested here, and only here
# (training set, config): the plain run first, the two joint ones after it.
JOINT_RUNS = (
    ("Market1501", "configs/Market1501/base_R50.yml"),
    ("Market1501 + LaSTClothes", "configs/Market1501/joint_LaSTClothes_R50.yml"),
    ("Market1501 + MSMT17", "configs/Market1501/joint_MSMT17_R50.yml"),
)


@dataclass
class JointComparison:
    """Trains (or skips) every run of JOINT_RUNS x protocols under `output` and writes
    joint_table.md / .csv. opts: `KEY VALUE` overrides for every run; imagenet: their
    MODEL.BACKBONE.PRETRAIN_PATH."""

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
                suffix = "-paper" if p == "paper" else ""
                out = os.path.join(self.output, "runs", name.replace(" + ", "-") + suffix)
                title = name + (" | paper" if p == "paper" else "")
                found.append((name, p, RunSpec(title, config, opts, out)))
        return found

    def run(self):
        """Settles the runs of other recipes, trains every unfinished run, writes the table.
        Returns {(training set, protocol): numbers or None}."""
        specs = self.specs()
        self.runner.settle([(spec, [spec.output]) for _, _, spec in specs], self.output)
        numbers = {}
        for i, (name, p, spec) in enumerate(specs, 1):
            read = partial(self.numbers, p, spec.output)
            numbers[name, p] = self.runner.execute(spec, f"{i}/{len(specs)}", read)
        args = (numbers, self.protocol)
        paths = write_tables(
            self.output, "joint_table", joint_markdown(*args), joint_csv_rows(*args)
        )
        failed = sum(v is None for v in numbers.values())
        note = f"{len(specs) - failed} of {len(specs)} runs done" + (
            f" ({failed} failed)" * bool(failed)
        )
        self.runner.log(f"[joint] {note}; table: {', '.join(paths)}")
        return numbers

    @staticmethod
    def numbers(protocol, out, results):
        """A finished run's numbers on TARGET, or None: the evaluation after its last epoch
        (results.json), or under the paper protocol the best epoch of its history."""
        selection = best_epoch(out, TARGET) if protocol == "paper" else None
        metrics = selection["metrics"] if selection else None
        metrics = metrics if protocol == "paper" else dataset_metrics(results, TARGET)
        if metrics is None:
            return None
        epoch = (
            selection["best_epoch"] if selection else (results.get("evaluation") or {}).get("epoch")
        )
        return {
            "metrics": metrics,
            "epoch": epoch,
            "best_epoch": epoch if selection else None,
            # fastreid writes the training set's count there
            "classes": config_value(run_config(out), "MODEL.HEADS.NUM_CLASSES") or None,
            "iterations_per_epoch": results.get("iterations_per_epoch"),
            "config_sha256": run_config_sha256(out),
        }


KEYS = ("classes", "iterations_per_epoch")  # of a training set, whichever protocol's run


def _rows(numbers, protocol):
    """[(training set, {protocol: numbers}, classes, iterations / epoch)] in JOINT_RUNS order."""
    rows = []
    for name, _ in JOINT_RUNS:
        found = {p: numbers.get((name, p)) for p in PROTOCOL_CHOICES[protocol]}
        first = [next((n[k] for n in found.values() if n and n.get(k)), None) for k in KEYS]
        rows.append((name, found, *first))
    return rows


def _text(numbers):
    if not numbers:
        return "-"
    text = "{:.1f} / {:.1f}".format(numbers["metrics"]["Rank-1"], numbers["metrics"]["mAP"])
    return text + (" (ep {})".format(numbers["best_epoch"]) if numbers["best_epoch"] else "")


def joint_markdown(numbers, protocol="clean"):
    """One line per training set: its classes, iterations per epoch and Market-1501 Rank-1 /
    mAP ("clean; paper" under protocol both)."""
    lines = [
        "{} test, Rank-1 / mAP (%); {}".format(TARGET, protocol_note(protocol)),
        "",
        "| training set | classes | iterations / epoch | {} |".format(TARGET),
        "|---|---|---|---|",
    ]
    for name, found, classes, iters in _rows(numbers, protocol):
        cells = "; ".join(_text(n) for n in found.values())
        classes, iters = (number(v, "{:,}") or "-" for v in (classes, iters))
        lines.append(f"| {name} | {classes} | {iters} | {cells} |")
    return "\n".join(lines) + "\n"


def joint_csv_rows(numbers, protocol="clean"):
    """`training set`, `classes`, `iterations per epoch`, then per protocol `R1`, `mAP`,
    `epoch` and `config` (the first CONFIG_DIGITS of the run's recipe hash; under "both"
    the paper columns are prefixed `paper `), and `protocol`."""
    protocols = PROTOCOL_CHOICES[protocol]
    prefix = {p: "paper " if protocol == "both" and p == "paper" else "" for p in protocols}
    header = ["training set", "classes", "iterations per epoch"]
    header += [prefix[p] + h for p in protocols for h in ("R1", "mAP", "epoch", "config")]
    table = [header + ["protocol"]]
    for name, found, classes, iters in _rows(numbers, protocol):
        line = [name, classes or "", iters or ""]
        for n in (found[p] or {} for p in protocols):
            metrics = n.get("metrics") or {}
            line += [number(metrics.get(k)) for k in ("Rank-1", "mAP")] + [n.get("epoch") or ""]
            line.append((n.get("config_sha256") or "")[:CONFIG_DIGITS])
        table.append(line + [protocol])
    return table
