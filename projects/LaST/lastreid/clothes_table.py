"""The clothes-changing table (docs/clothes_changing.md; `tools/clothes_table.py`), declared on
lastreid.experiments: methods (BoT, CAL or any config) x the long-term benchmarks (LaST, PRCC,
LTCC, DeepChange, VC-Clothes), one training run per cell, each benchmark reported under the
protocols its papers use; the published numbers beneath as "(published)"."""

import os
from dataclasses import dataclass, field
from functools import partial
from typing import List, Tuple

from .errors import InputError
from .experiments.folder import epoch_evaluations
from .experiments.protocols import PROTOCOL_CHOICES
from .experiments.runs import REPO, Runner, RunSpec
from .experiments.table import CONFIG_DIGITS, number, write_tables
from .run_results import dataset_metrics, run_config_sha256
from .startup import build_cfg

__all__ = ["BENCHMARKS", "DEFAULT_METHODS", "PUBLISHED", "Benchmark", "ClothesTable"]
__all__ += ["clothes_csv_rows", "clothes_markdown", "method_config"]


@dataclass(frozen=True)
class Benchmark:
    """A column group: trained on `name`; `val` (a test-only dataset) selects model_best.pth
    under the clean protocol ("": the last epoch counts); `columns`: (protocol, test dataset,
    metric prefix) as its papers report them; `paper_key`: (test dataset, metric) by which
    the reference code (Simple-CCReID) keeps its best test epoch."""

    name: str
    val: str
    columns: Tuple[Tuple[str, str, str], ...]
    paper_key: Tuple[str, str]

    @property
    def tests(self):
        return tuple(dict.fromkeys(test for _, test, _ in self.columns))


BENCHMARKS = (
    Benchmark("LaST", "LaSTVal", (("general", "LaST", ""),), ("LaST", "Rank-1")),
    Benchmark(
        "PRCC", "", (("SC", "PRCCSameClothes", "SC-"), ("CC", "PRCC", "CC-")), ("PRCC", "Rank-1")
    ),
    Benchmark("LTCC", "", (("general", "LTCC", ""), ("CC", "LTCC", "CC-")), ("LTCC", "CC-Rank-1")),
    Benchmark(
        "DeepChange", "DeepChangeVal", (("general", "DeepChange", ""),), ("DeepChange", "Rank-1")
    ),
    Benchmark(
        "VCClothes",
        "",
        (
            ("general", "VCClothes", ""),
            ("SC", "VCClothesSameClothes", "SC-"),
            ("CC", "VCClothesClothesChanging", "CC-"),
        ),
        ("VCClothesClothesChanging", "Rank-1"),
    ),
)
BY_NAME = {b.name: b for b in BENCHMARKS}
_CLEAN = "model_best.pth chosen on val (LaST, DeepChange), else the last epoch"
_PAPER = "the best test epoch by the Rank-1 the reference code keeps"
NOTES = {
    "clean": f"protocol clean: {_CLEAN}",
    "paper": f"protocol paper: {_PAPER}",
    "both": f"protocol both: clean ({_CLEAN}); paper ({_PAPER})",
}
DEFAULT_METHODS = ("bagtricks", "cal")
TITLES = {"bagtricks": "BoT", "cal": "CAL"}
# Rank-1 / mAP (%) as published: CAL (Gu et al., CVPR 2022) and later methods on LaST.
PUBLISHED = {
    "CAL": {
        ("LaST", "general"): (73.7, 28.8),
        ("PRCC", "CC"): (55.2, 55.8),
        ("LTCC", "CC"): (40.1, 18.0),
        ("DeepChange", "general"): (54.0, 19.0),
    },
    "FIRe": {("LaST", "general"): (75.0, 32.2)},
    "GEFF": {("LaST", "general"): (78.0, 37.2)},
    "RLQ": {("LaST", "general"): (77.9, 35.3)},
}


def method_config(method, benchmark):
    """A method's config for a benchmark: a .yml path as given, else the benchmark's
    configs/<benchmark>/<method>_R50.yml, else the method's LaST recipe (the table sets the
    datasets of every run)."""
    if method.endswith((".yml", ".yaml")):
        path = os.path.abspath(method)
        if not os.path.isfile(path):
            raise InputError(f"--methods {method}: no such config file")
        return path
    for folder in (benchmark, "LaST"):
        path = os.path.join(REPO, "configs", folder, f"{method}_R50.yml")
        if os.path.isfile(path):
            return path
    raise InputError(
        f"--methods {method}: neither configs/{benchmark}/{method}_R50.yml nor "
        f"configs/LaST/{method}_R50.yml exists; give a config file's path"
    )


def method_title(method):
    stem = os.path.splitext(os.path.basename(method))[0]
    return TITLES.get(stem, stem)


def _tuple(names):
    return "(" + "".join(f'"{n}",' for n in names) + ")"


def selection_opts(benchmark, protocol):
    """The datasets of a run: clean, model_best.pth by `val` then tested (or, without a val
    split, the evaluation after the last epoch); paper, every evaluation on the test sets."""
    if protocol == "paper" or not benchmark.val:
        tests, final = benchmark.tests, ()
    else:
        tests, final = (benchmark.val,), benchmark.tests
    return ["DATASETS.NAMES", _tuple([benchmark.name]), "DATASETS.TESTS", _tuple(tests)] + [
        "TEST.FINAL_TESTS",
        _tuple(final),
    ]


def read_numbers(benchmark, protocol, out, results):
    """{test dataset: metrics} of a finished run, with its "epoch", or None: clean, the final
    test of model_best.pth (with a val split) or the last evaluation; paper, the evaluated
    epoch with the best `paper_key`, the later one on a tie."""
    if protocol == "paper":
        history = epoch_evaluations(out, benchmark.tests)
        dataset, key = benchmark.paper_key
        scored = [e for e, found in history.items() if key in found.get(dataset, {})]
        if not scored:
            return None
        epoch = max(scored, key=lambda e: (history[e][dataset][key], e))
        found = {test: history[epoch].get(test) for test in benchmark.tests}
    else:
        part = "final_test" if benchmark.val else "evaluation"
        found = {test: dataset_metrics(results, test, part) for test in benchmark.tests}
        epoch = ((results or {}).get(part) or {}).get("epoch")
    if any(m is None for m in found.values()):
        return None
    return {"datasets": found, "epoch": epoch, "config_sha256": run_config_sha256(out)}


@dataclass
class ClothesTable:
    """Trains (or skips) every method x benchmark x protocol run under `output`
    (runs/<method>/<benchmark>[-paper]/) and writes clothes_table.md / .csv. opts: KEY VALUE
    overrides for every run, before the table's datasets."""

    output: str
    runner: Runner = field(default_factory=lambda: Runner("[clothes]"))
    methods: List[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    benchmarks: List[str] = field(default_factory=lambda: [b.name for b in BENCHMARKS])
    opts: List[str] = field(default_factory=list)
    protocol: str = "clean"

    def specs(self):
        """[(method, benchmark, protocol, RunSpec)] in table order."""
        found = []
        for method in self.methods:
            label = os.path.splitext(os.path.basename(method))[0]
            for name in self.benchmarks:
                bench, config = BY_NAME[name], method_config(method, name)
                for p in PROTOCOL_CHOICES[self.protocol]:
                    suffix, tail = ("-paper", " | paper") if p == "paper" else ("", "")
                    out = os.path.join(self.output, "runs", label, name + suffix)
                    title = f"{method_title(method)} | {name}{tail}"
                    opts = self.opts + selection_opts(bench, p)
                    found.append((method, bench, p, RunSpec(title, config, opts, out)))
        return found

    def run(self):
        """Settles runs of other recipes, trains every unfinished run, writes the table.
        Returns {(method, benchmark, protocol): numbers or None}."""
        specs = self.specs()
        for *_, spec in specs:  # a config that cannot run is one line before any run starts
            build_cfg(spec.config, spec.opts)
        self.runner.settle([(spec, [spec.output]) for *_, spec in specs], self.output)
        numbers = {}
        for i, (method, bench, p, spec) in enumerate(specs, 1):
            read = partial(read_numbers, bench, p, spec.output)
            numbers[method, bench.name, p] = self.runner.execute(spec, f"{i}/{len(specs)}", read)
        args = (numbers, self.methods, self.benchmarks, self.protocol)
        tables = (clothes_markdown(*args), clothes_csv_rows(*args))
        paths = write_tables(self.output, "clothes_table", *tables)
        self.runner.summary(list(numbers.values()), paths)
        return numbers


def _columns(benchmarks):
    return [(BY_NAME[n], col) for n in benchmarks for col in BY_NAME[n].columns]


def _cell(numbers, column):
    _, test, prefix = column
    if not numbers:
        return "-"
    metrics = numbers["datasets"][test]
    r1, ap = metrics.get(prefix + "Rank-1"), metrics.get(prefix + "mAP")
    return "-" if r1 is None or ap is None else f"{r1:.1f} / {ap:.1f}"


def clothes_markdown(numbers, methods, benchmarks, protocol="clean"):
    """A row per method ("clean; paper" cells under protocol both), the published rows
    beneath; a column per benchmark and protocol."""
    columns, protocols = _columns(benchmarks), PROTOCOL_CHOICES[protocol]
    heads = [f"{b.name} {col[0]}" if len(b.columns) > 1 else b.name for b, col in columns]
    lines = [
        f"Rank-1 / mAP (%); {NOTES[protocol]}",
        "",
        "| method | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for method in methods:
        cells = [
            "; ".join(_cell(numbers.get((method, b.name, p)), col) for p in protocols)
            for b, col in columns
        ]
        lines.append(f"| {method_title(method)} | " + " | ".join(cells) + " |")
    for row, published in PUBLISHED.items():
        found = [published.get((b.name, col[0])) for b, col in columns]
        if any(found):
            cells = ["{:.1f} / {:.1f}".format(*v) if v else "-" for v in found]
            lines.append(f"| {row} (published) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSV_METRICS = ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")


def clothes_csv_rows(numbers, methods, benchmarks, protocol="clean"):
    """One row per method x benchmark x reported protocol x selection protocol: `method`,
    `dataset`, `protocol` (general / SC / CC), `test set`, `selection` (clean / paper),
    R1, R5, R10, mAP, mINP, `epoch`, `config` (the first CONFIG_DIGITS of the run's recipe
    hash)."""
    header = ["method", "dataset", "protocol", "test set", "selection"]
    table = [header + ["R1", "R5", "R10", "mAP", "mINP", "epoch", "config"]]
    for method in methods:
        for bench, (label, test, prefix) in _columns(benchmarks):
            for p in PROTOCOL_CHOICES[protocol]:
                found = numbers.get((method, bench.name, p)) or {}
                metrics = (found.get("datasets") or {}).get(test) or {}
                line = [method_title(method), bench.name, label, test, p]
                line += [number(metrics.get(prefix + k)) for k in CSV_METRICS]
                config = (found.get("config_sha256") or "")[:CONFIG_DIGITS]
                table.append(line + [found.get("epoch") or "", config])
    return table
