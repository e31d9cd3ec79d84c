"""The LaST baselines compared (docs/baselines.md; `tools/benchmark.py`): per method a training
run under OUTPUT/runs/<method>/, then an --eval-only of its kept checkpoint under eval_only/."""

import os
from dataclasses import dataclass, field
from functools import partial
from typing import List, Optional

from .errors import InputError
from .experiments.folder import run_cfg, training_speed, weights_signature
from .experiments.runs import REPO, Runner, RunSpec, other_recipe, recipe_sha256
from .experiments.table import column_table, number, write_tables
from .modeling import build_model, feature_dim
from .run_results import read_json

__all__ = ["COLUMNS", "DEFAULT_METHODS", "METRICS", "Benchmark", "Row", "method_config", "tables"]

DEFAULT_METHODS = ("bagtricks", "mgn", "pcb", "hpm", "agw", "sbs")
METRICS = ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")
TOLERANCE = 1e-4  # percentage points between the run's test and --eval-only's


def method_config(method):
    """(name, config path) of a --methods entry: a .yml file, or configs/LaST/<name>_R50.yml."""
    if method.endswith((".yml", ".yaml")):
        if not os.path.isfile(method):
            raise InputError(f"--methods {method}: no such config file")
        return os.path.splitext(os.path.basename(method))[0], os.path.abspath(method)
    folder = os.path.join(REPO, "configs", "LaST")
    names = [n for n in sorted(os.listdir(folder)) if n.lower().endswith("_r50.yml")]
    known = {n[:-8].lower(): n for n in names}
    if method.lower() not in known:
        raise InputError(
            f"--methods {method}: no configs/LaST/{method}_R50.yml; known: "
            f"{', '.join(known)}; or give the path of a .yml"
        )
    return method.lower(), os.path.join(folder, known[method.lower()])


@dataclass
class Row:
    method: str
    config: str
    test: dict = field(default_factory=dict)  # LaST test numbers of the kept checkpoint (%)
    epoch: Optional[int] = None  # of the kept checkpoint, 1-based
    params: Optional[int] = None
    feature_dim: Optional[int] = None
    train_images_per_s: Optional[float] = None
    eval_seconds: Optional[float] = None
    eval_peak_gib: Optional[float] = None
    eval_reproduced: Optional[bool] = None  # --eval-only gave the run's own test numbers
    error: str = ""


# (markdown header, CSV header, value of a row, markdown format)
COLUMNS = [("method", "method", lambda r: r.method, "{}")]
COLUMNS += [("config", "config", lambda r: r.config, "{}")]
COLUMNS += [(m, m, (lambda r, m=m: r.test.get(m)), "{:.1f}") for m in METRICS]
COLUMNS += [
    ("epoch", "epoch", lambda r: r.epoch, "{}"),
    ("params (M)", "params", lambda r: r.params, "{:.1f}"),
    ("feature dim", "feature_dim", lambda r: r.feature_dim, "{:,}"),
    ("train img/s", "train_images_per_s", lambda r: r.train_images_per_s, "{:.1f}"),
    ("eval s", "eval_seconds", lambda r: r.eval_seconds, "{:.1f}"),
    ("eval peak GiB", "eval_peak_rss_gib", lambda r: r.eval_peak_gib, "{:.2f}"),
    ("eval-only = run", "eval_only_reproduced", lambda r: r.eval_reproduced, "{}"),
]
NOTE = (
    "LaST test (%) of the checkpoint kept on LaST val (best (Rank-1 + mAP) / 2; its epoch); "
    "train img/s: median step time in metrics.json; eval: a separate `train_net.py --eval-only` "
    "of that checkpoint on LaST test (wall time, peak RSS), which must give the run's numbers"
)


@dataclass
class Benchmark:
    """Trains and measures `methods` (names or config files) under `output`, with `opts`."""

    methods: List[str]
    output: str
    opts: List[str] = field(default_factory=list)
    runner: Runner = field(default_factory=lambda: Runner("[benchmark]"))
    paths: List[str] = field(default_factory=list)  # the table's files, once written

    def train_spec(self, method):
        name, config = method_config(method)
        out = os.path.join(self.output, "runs", name)
        return RunSpec(name, config, self.opts, out, log_name="console.txt")

    def eval_spec(self, train, final_test):
        """The kept checkpoint's --eval-only, of the command's recipe (--stale reuse: the run's)."""
        config, opts = train.config, list(self.opts)
        if other_recipe(train):
            config, opts = os.path.join(train.output, "config.yaml"), []
        weights = os.path.join(train.output, final_test["checkpoint"])
        tests = "(" + "".join(f'"{d}",' for d in final_test["datasets"]) + ")"
        opts += ["MODEL.WEIGHTS", weights, "DATASETS.TESTS", tests]
        stamp = {"weights_signature": weights_signature(weights)}
        title = f"{train.title} --eval-only of {final_test['checkpoint']}"
        out = os.path.join(train.output, "eval_only")
        return RunSpec(title, config, opts, out, True, stamp, "console.txt")

    def run(self):
        """Checks every recipe, applies --stale, runs every method, the table after each: rows."""
        specs = [self.train_spec(m) for m in self.methods]
        for spec in specs:
            recipe_sha256(spec)  # a bad recipe stops the command before anything runs
        self.runner.settle([(spec, [spec.output]) for spec in specs], self.output)
        rows = []
        for i, spec in enumerate(specs, 1):
            rows.append(self.run_method(f"[{i}/{len(specs)}]", spec))
            self.write_table(rows)
        return rows

    def run_method(self, counter, train):
        row = Row(train.title, os.path.basename(train.config))
        final = self.runner.execute(train, counter, lambda results: results.get("final_test"))
        evaluation = final and self.runner.execute(
            self.eval_spec(train, final), counter, lambda results: _measured(train, results)
        )
        if not evaluation:
            row.error = "--eval-only failed" if final else "training failed"
            return row
        name = next(iter(final["datasets"]))
        numbers, again = final["datasets"][name], evaluation["datasets"].get(name, {})
        cfg = run_cfg(train.output)
        row.test, row.epoch = {k: numbers[k] for k in METRICS}, final.get("epoch")
        row.params = sum(p.numel() for p in build_model(cfg, log=False).parameters())
        row.feature_dim = feature_dim(cfg)
        row.train_images_per_s = training_speed(train.output, cfg.SOLVER.IMS_PER_BATCH)
        row.eval_seconds = evaluation["measured"]["wall_s"]
        row.eval_peak_gib = evaluation["measured"]["peak_rss_gib"]
        row.eval_reproduced = all(
            abs(numbers[k] - again.get(k, float("inf"))) <= TOLERANCE for k in METRICS
        )
        return row

    def write_table(self, rows):
        draw = partial(_draw, rows=rows)
        self.paths = write_tables(self.output, "benchmark_table", *tables(rows), draw, (12.0, 4.2))


def _measured(train, results):
    """The --eval-only's evaluation with what it cost (measured.json), or None."""
    measured = read_json(os.path.join(train.output, "eval_only", "measured.json"))
    if measured.get("returncode") != 0 or not results.get("evaluation"):
        return None
    return dict(results["evaluation"], measured=measured)


def _cell(name, get, fmt, row):
    """(markdown, CSV) of a value; in the CSV metrics with two places, other floats four digits."""
    value = get(row)
    if value is None:
        return "error" if row.error and name == "Rank-1" else "-", ""
    if isinstance(value, bool):
        return "yes" if value else "NO", value
    text = fmt.format(value / 1e6 if name == "params" else value)
    if isinstance(value, float):
        return text, number(value, "{:.2f}" if name in METRICS else "{:.4g}")
    return text, value


def tables(rows):
    """(markdown, CSV rows) of COLUMNS, a line per method; in the CSV a last `error` column."""
    columns = [(md, name, partial(_cell, name, get, fmt)) for md, name, get, fmt in COLUMNS]
    return column_table(NOTE, columns + [(None, "error", lambda r: (None, r.error))], rows)


def _draw(fig, rows):
    """Three panels: Rank-1 / mAP on LaST test, training images/s, evaluation seconds."""
    acc, speed, cost = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2, 1, 1]})
    xs = list(range(len(rows)))
    for offset, key in ((-0.2, "Rank-1"), (0.2, "mAP")):
        values = [r.test.get(key) or 0.0 for r in rows]
        bars = acc.bar([x + offset for x in xs], values, 0.4, label=key)
        acc.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    acc.set_ylim(0, 105)
    acc.legend(fontsize=8, loc="upper left")
    for ax, key, title in (
        (acc, None, "LaST test (%), checkpoint kept on LaST val"),
        (speed, "train_images_per_s", "training images / s"),
        (cost, "eval_seconds", "--eval-only on LaST test, s"),
    ):
        if key:
            values = [getattr(r, key) or 0.0 for r in rows]
            ax.bar_label(ax.bar(xs, values, 0.6, color="tab:gray"), fmt="%.1f", fontsize=7)
        ax.set_title(title)
        ax.set_xticks(xs)
        ax.set_xticklabels([r.method for r in rows], fontsize=8, rotation=30)
        ax.grid(axis="y", alpha=0.3)
