"""The joint-training comparison of the paper's code: Market-1501 trained alone, together with
LaST's clothes classes (its market_last_cloth_train_base_imagenet.py) and together with
MSMT17, the control (market_msmt_train_base_imagenet.py), each with the base recipe from
ImageNet and tested on Market-1501 only. `JointComparison` trains the three resumably (a
finished run is skipped; one made with another recipe is never reused silently, as in the
transfer table) and writes the table from each run's results.json (clean protocol) or its
per-epoch history (the paper's selection). `tools/joint_table.py` is the command line."""

import csv
import io
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import yaml

from ..atomic import write_text_atomic
from ..run_results import RESULTS_FILE, dataset_metrics, read_run_results, run_config_sha256
from .process import REPO, run_logged, training_status
from .recipes import recipe_sha256, settle
from .report import CONFIG_DIGITS, PROTOCOL_CHOICES
from .results import best_epoch, finished_training
from .runner import PAPER_FINETUNE_OPTS, PAPER_OPTS
from .sources import slugify
from .training import training_command

__all__ = ["JOINT_RUNS", "TARGET", "JointComparison", "JointRun"]

TARGET = "Market1501"  # every run is tested here, and only here
# (training set, config): the plain run first, the two joint ones after it.
JOINT_RUNS = (
    ("Market1501", "configs/Market1501/base_R50.yml"),
    ("Market1501 + LaSTClothes", "configs/Market1501/joint_LaSTClothes_R50.yml"),
    ("Market1501 + MSMT17", "configs/Market1501/joint_MSMT17_R50.yml"),
)
NOTES = {
    "clean": "protocol clean: the evaluation after the last epoch",
    "paper": "protocol paper: the epoch with the best (Rank-1 + mAP) / 2 on the test split "
    "(in brackets), bilinear resize, as the public LaST code",
    "both": "protocol both: clean (last epoch); seed (best (Rank-1 + mAP) / 2 epoch on the "
    "test split, in brackets; bilinear resize)",
}
TAG = "[joint]"


@dataclass
class JointRun:
    """One training of the comparison under one protocol; `result` once its numbers are
    read: {"metrics", "epoch", "best_epoch" (seed), "classes", "iterations_per_epoch",
    "config_sha256"}."""

    name: str
    config: str
    protocol: str = "clean"
    result: Optional[dict] = None
    error: str = ""

    @property
    def title(self):
        return self.name + (" | paper" if self.protocol == "paper" else "")


@dataclass
class JointComparison:
    """Trains (or skips) every run of JOINT_RUNS x protocols under `output` and writes
    joint_table.md / .csv. opts: `KEY VALUE` overrides for every run; imagenet: their
    MODEL.BACKBONE.PRETRAIN_PATH; stale: runs of another recipe, stop / redo / reuse."""

    output: str
    imagenet: Optional[str] = None
    opts: List[str] = field(default_factory=list)
    protocol: str = "clean"
    stale: str = "stop"
    num_gpus: int = 0
    env: Optional[Dict[str, str]] = None
    verbose: bool = False
    heartbeat_s: float = 120.0

    def log(self, message):
        print(message, flush=True)

    def runs(self):
        return [
            JointRun(name, config, protocol=p)
            for name, config in JOINT_RUNS
            for p in PROTOCOL_CHOICES[self.protocol]
        ]

    def run_dir(self, run):
        suffix = "-paper" if run.protocol == "paper" else ""
        return os.path.join(self.output, "runs", slugify(run.name) + suffix)

    def recipe(self, run):
        """(config, overrides) of a run: the command's overrides, then the protocol's."""
        config = run.config if os.path.isabs(run.config) else os.path.join(REPO, run.config)
        opts = ["MODEL.BACKBONE.PRETRAIN_PATH", self.imagenet] if self.imagenet else []
        opts += list(self.opts)
        opts += PAPER_OPTS + PAPER_FINETUNE_OPTS if run.protocol == "paper" else []
        return config, opts + ["OUTPUT_DIR", self.run_dir(run)]

    def stale_runs(self):
        """[(title, [run folder])] of the started or finished runs of another recipe."""
        stale = []
        for run in self.runs():
            found = run_config_sha256(self.run_dir(run))
            expected = recipe_sha256(*self.recipe(run))
            if found is not None and expected is not None and found != expected:
                stale.append((run.title, [self.run_dir(run)]))
        return stale

    def run(self):
        """Settles the runs of other recipes, trains every unfinished run, writes the
        table. Returns the runs."""
        os.makedirs(self.output, exist_ok=True)
        settle(self.stale_runs(), self.output, self.stale, self.log, TAG)
        runs = self.runs()
        for i, run in enumerate(runs, 1):
            self._train(run, "{}/{}".format(i, len(runs)))
        paths = self.write_table(runs)
        failed = [r for r in runs if r.result is None]
        self.log(
            "{} {} of {} runs done{}; table: {}".format(
                TAG,
                len(runs) - len(failed),
                len(runs),
                " ({} failed)".format(len(failed)) if failed else "",
                ", ".join(paths),
            )
        )
        return runs

    def _train(self, run, counter):
        out = self.run_dir(run)
        if finished_training(out):
            run.result = self.numbers(run)
        if run.result is not None:
            self.log("{} {} {}: trained before, skipped".format(TAG, counter, run.title))
            return
        os.makedirs(out, exist_ok=True)
        if os.path.exists(os.path.join(out, RESULTS_FILE)):  # only this run's numbers count
            os.remove(os.path.join(out, RESULTS_FILE))
        how = "resuming" if os.path.isfile(os.path.join(out, "last_checkpoint")) else "training"
        log = os.path.join(out, "log.txt")
        self.log("{} {} {}: {} (log {})".format(TAG, counter, run.title, how, log))
        t0 = time.time()
        code = self._spawn(
            training_command(*self.recipe(run), self.num_gpus),
            os.path.join(out, "stdout.txt"),
            heartbeat=lambda s: self.log(
                "{} {} {}: running for {:.0f} s{}".format(
                    TAG, counter, run.title, s, training_status(out)
                )
            ),
        )
        run.result = self.numbers(run) if code == 0 else None
        if run.result is None:
            run.error = "exit code {}".format(code) if code else "no numbers written"
            self.log(
                "{} {} {}: FAILED after {:.0f} s ({}); see {}".format(
                    TAG,
                    counter,
                    run.title,
                    time.time() - t0,
                    run.error,
                    os.path.join(out, "stdout.txt"),
                )
            )
            return
        self.log("{} {} {}: done in {:.0f} s".format(TAG, counter, run.title, time.time() - t0))

    def _spawn(self, cmd, log_path, heartbeat=None):
        """Runs one train_net process (`process.run_logged`); returns its exit code."""
        return run_logged(cmd, log_path, self.env, self.verbose, heartbeat, self.heartbeat_s)

    def numbers(self, run):
        """A finished run's numbers on TARGET, or None: the evaluation after its last epoch
        (results.json), or under the paper protocol the best epoch of its history."""
        out = self.run_dir(run)
        results = read_run_results(out)
        if run.protocol == "paper":
            selection = best_epoch(out, TARGET)
            if selection is None:
                return None
            metrics, epoch = selection["metrics"], selection["best_epoch"]
        else:
            metrics = dataset_metrics(results, TARGET)
            epoch = (results.get("evaluation") or {}).get("epoch")
            if metrics is None:
                return None
        return {
            "metrics": metrics,
            "epoch": epoch,
            "best_epoch": epoch if run.protocol == "paper" else None,
            "classes": _trained_classes(out),
            "iterations_per_epoch": results.get("iterations_per_epoch"),
            "config_sha256": run_config_sha256(out),
        }

    def write_table(self, runs):
        """Writes joint_table.md and joint_table.csv; returns their paths."""
        paths = [os.path.join(self.output, n) for n in ("joint_table.md", "joint_table.csv")]
        write_text_atomic(format_joint_markdown(runs, self.protocol), paths[0])
        write_text_atomic(format_joint_csv(runs, self.protocol), paths[1])
        return paths


def _trained_classes(run_dir):
    """MODEL.HEADS.NUM_CLASSES of a run's config.yaml (fastreid writes the training set's
    count there), or None."""
    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            return int(yaml.safe_load(f)["MODEL"]["HEADS"]["NUM_CLASSES"]) or None
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def _by_name(runs, protocol):
    """{training set: {protocol: run}} in JOINT_RUNS order."""
    table = {}
    for run in runs:
        table.setdefault(run.name, {})[run.protocol] = run
    return table


def _first_result(by_protocol, key):
    found = [r.result.get(key) for r in by_protocol.values() if r.result]
    return next((v for v in found if v is not None), None)


def _text(run):
    if run is None or run.result is None:
        return "-"
    m = run.result["metrics"]
    text = "{:.1f} / {:.1f}".format(m["Rank-1"], m["mAP"])
    return text + (" (ep {})".format(run.result["best_epoch"]) if run.result["best_epoch"] else "")


def format_joint_markdown(runs, protocol="clean"):
    """One line per training set: its classes, iterations per epoch and Market-1501 Rank-1 /
    mAP ("clean; paper" under protocol both)."""
    lines = [
        "{} test, Rank-1 / mAP (%); {}".format(TARGET, NOTES[protocol]),
        "",
        "| training set | classes | iterations / epoch | {} |".format(TARGET),
        "|---|---|---|---|",
    ]
    for name, by_protocol in _by_name(runs, protocol).items():
        cells = "; ".join(_text(by_protocol.get(p)) for p in PROTOCOL_CHOICES[protocol])
        classes = _first_result(by_protocol, "classes")
        iters = _first_result(by_protocol, "iterations_per_epoch")
        lines.append(
            "| {} | {} | {} | {} |".format(
                name,
                "{:,}".format(classes) if classes else "-",
                "{:,}".format(iters) if iters else "-",
                cells,
            )
        )
    return "\n".join(lines) + "\n"


def format_joint_csv(runs, protocol="clean"):
    """`training set`, `classes`, `iterations per epoch`, then per protocol `R1`, `mAP`,
    `epoch` and `config` (the first CONFIG_DIGITS of the run's recipe hash; under "both"
    the paper columns are prefixed `paper `), and `protocol`."""
    protocols = PROTOCOL_CHOICES[protocol]
    prefixes = {p: "paper " if protocol == "both" and p == "paper" else "" for p in protocols}
    keys = (("R1", "Rank-1"), ("mAP", "mAP"), ("epoch", "epoch"), ("config", "config_sha256"))
    header = ["training set", "classes", "iterations per epoch"]
    header += [prefixes[p] + title for p in protocols for title, _ in keys] + ["protocol"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for name, by_protocol in _by_name(runs, protocol).items():
        line = [name] + [
            _first_result(by_protocol, k) or "" for k in ("classes", "iterations_per_epoch")
        ]
        for p in protocols:
            run = by_protocol.get(p)
            result = (run.result if run is not None else None) or {}
            metrics = result.get("metrics") or {}
            for _, key in keys:
                if key in ("Rank-1", "mAP"):
                    line.append("{:.2f}".format(metrics[key]) if key in metrics else "")
                elif key == "config_sha256":
                    line.append((result.get(key) or "")[:CONFIG_DIGITS])
                else:
                    line.append(result.get(key) or "")
        writer.writerow(line + [protocol])
    return buf.getvalue()
