"""The benchmark's runs: for each method a resumable `train_net.py --resume` run under
OUTPUT/runs/<method>/ (skipped once finished), then a measured `train_net.py --eval-only`
of the checkpoint it kept under OUTPUT/runs/<method>/eval_only/ (skipped once done for
that checkpoint), and the table from what the runs saved (results.json, metrics.json,
config.yaml), never from their logs."""

import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List

from ..atomic import write_text_atomic
from ..errors import InputError
from ..modeling import build_model, feature_dim
from ..run_results import config_sha256, read_run_results, run_config_sha256
from ..startup import build_cfg
from ..transfer.process import REPO, TRAIN_NET, log_tail, run_logged, training_status
from ..transfer.results import read_json
from .measure import MEASURE
from .report import METRICS, Row, format_csv, format_markdown, write_chart

__all__ = ["DEFAULT_METHODS", "METHODS", "Benchmark", "config_path"]

# method -> its config (configs/LaST/*_R50.yml)
METHODS = {
    "bagtricks": "bagtricks_R50.yml",
    "mgn": "mgn_R50.yml",
    "pcb": "pcb_R50.yml",
    "hpm": "hpm_R50.yml",
    "agw": "AGW_R50.yml",
    "sbs": "SBS_R50.yml",
    "mgn_fastreid": "mgn_fastreid_R50.yml",
}
DEFAULT_METHODS = ("bagtricks", "mgn", "pcb", "hpm", "agw", "sbs")
EVAL_DIR, MEASURED = "eval_only", "measured.json"
TOLERANCE = 1e-4  # percentage points between the run's test and --eval-only's


def config_path(method):
    return os.path.join(REPO, "configs", "LaST", METHODS[method])


@dataclass
class Benchmark:
    methods: List[str]
    output: str
    opts: List[str] = field(default_factory=list)  # KEY VALUE overrides of every run
    num_gpus: int = 0  # passed on to train_net.py (0: not passed)
    stale: str = "stop"  # runs of another recipe: stop, redo or reuse (transfer's choices)
    verbose: bool = False
    heartbeat_s: float = 120.0
    log: Callable[[str], None] = print

    def run_dir(self, method):
        return os.path.join(self.output, "runs", method)

    def recipe(self, method):
        """The checked config of a method's run (the command line's overrides merged)."""
        return build_cfg(config_path(method), self.opts + ["OUTPUT_DIR", self.run_dir(method)])

    def run(self):
        """Trains and measures every method, writing the table after each; returns the
        rows. Every recipe is checked (and every finished run's recipe compared) first."""
        recipes = {m: self.recipe(m) for m in self.methods}
        for method, cfg in recipes.items():
            self.check_recipe(method, cfg)
        rows = []
        for i, method in enumerate(self.methods, 1):
            counter = f"[{i}/{len(self.methods)}] {method}"
            rows.append(self.run_method(counter, method, recipes[method]))
            self.write_table(rows)
        return rows

    # one method

    def run_method(self, counter, method, cfg):
        out = self.run_dir(method)
        if final_test(out) is None:
            self.log(f"[benchmark] {counter}: training -> {out} (log: {out}/console.txt)")
            t0 = time.time()
            code = self.spawn(self.train_command(method), os.path.join(out, "console.txt"), counter)
            if code != 0 or final_test(out) is None:
                return self.failed(counter, method, out, "training", code, "console.txt")
            self.log(f"[benchmark] {counter}: trained in {time.time() - t0:.0f} s")
        else:
            self.log(f"[benchmark] {counter}: finished run in {out}, not trained again")
        test = final_test(out)
        measured, evaluation = self.evaluate(counter, method, test["checkpoint"])
        if measured is None:
            return self.failed(counter, method, out, "--eval-only", -1, EVAL_DIR + "/console.txt")
        row = self.make_row(method, cfg, test, measured, evaluation)
        self.log(f"[benchmark] {counter}: {summary(row)}")
        return row

    def failed(self, counter, method, out, what, code, log_name):
        self.log(f"[benchmark] {counter}: {what} FAILED (exit {code}); the end of its log:")
        for line in log_tail(os.path.join(out, log_name)):
            self.log("    " + line)
        return Row(method, METHODS[method], error=f"{what} failed (exit {code})")

    def train_command(self, method):
        cmd = [sys.executable, TRAIN_NET, "--config-file", config_path(method), "--resume"]
        if self.num_gpus:
            cmd += ["--num-gpus", str(self.num_gpus)]
        return cmd + self.opts + ["OUTPUT_DIR", self.run_dir(method)]

    def evaluate(self, counter, method, checkpoint):
        """The measured --eval-only run of the kept checkpoint: (measured.json, its
        numbers per dataset), from an earlier run of the same checkpoint when there is one."""
        out = self.run_dir(method)
        weights, folder = os.path.join(out, checkpoint), os.path.join(out, EVAL_DIR)
        measured_path = os.path.join(folder, MEASURED)
        done = read_json(measured_path)
        if done.get("returncode") != 0 or done.get("weights") != signature(weights):
            self.log(f"[benchmark] {counter}: --eval-only of {checkpoint} on LaST test")
            os.makedirs(folder, exist_ok=True)
            cmd = [sys.executable, MEASURE, measured_path] + self.eval_command(method, weights)
            self.spawn(cmd, os.path.join(folder, "console.txt"), counter)
            done = read_json(measured_path)
            if done.get("returncode") != 0:
                return None, None
            done["weights"] = signature(weights)
            write_text_atomic(json.dumps(done, indent=2) + "\n", measured_path)
        return done, evaluation_datasets(folder)

    def eval_command(self, method, weights):
        """train_net.py --eval-only of `weights` on the run's TEST.FINAL_TESTS, with the
        command's config and overrides (a run kept under --stale reuse: its own config)."""
        out = self.run_dir(method)
        config, opts = config_path(method), self.opts
        if recipe_of(out) != config_sha256(self.recipe(method)):
            config, opts = os.path.join(out, "config.yaml"), []
        tests = "(" + "".join(f'"{d}",' for d in final_test(out)["datasets"]) + ")"
        cmd = [sys.executable, TRAIN_NET, "--config-file", config, "--eval-only"]
        cmd += ["--num-gpus", str(self.num_gpus)] if self.num_gpus else []
        folder = os.path.join(out, EVAL_DIR)
        return (
            cmd + opts + ["MODEL.WEIGHTS", weights, "DATASETS.TESTS", tests, "OUTPUT_DIR", folder]
        )

    def make_row(self, method, cfg, test, measured, evaluation):
        name = next(iter(test["datasets"]))
        numbers = test["datasets"][name]
        again = (evaluation or {}).get(name, {})
        reproduced = all(abs(numbers[k] - again.get(k, float("inf"))) <= TOLERANCE for k in METRICS)
        return Row(
            method=method,
            config=METHODS[method],
            test={k: numbers[k] for k in METRICS},
            epoch=test.get("epoch"),
            params=count_parameters(self.run_dir(method)),
            feature_dim=feature_dim(cfg),
            train_images_per_s=training_speed(self.run_dir(method), cfg.SOLVER.IMS_PER_BATCH),
            eval_seconds=measured["wall_s"],
            eval_peak_gib=measured["peak_rss_gib"],
            eval_reproduced=reproduced,
        )

    # plumbing

    def spawn(self, cmd, log_path, counter):
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        run_dir = os.path.dirname(log_path)

        def heartbeat(seconds):
            status = training_status(run_dir)
            self.log(f"[benchmark] {counter}: running for {seconds:.0f} s{status}")

        return run_logged(cmd, log_path, None, self.verbose, heartbeat, self.heartbeat_s)

    def check_recipe(self, method, cfg):
        """A run folder of another recipe than this command's (its merged config's hash):
        stops with one line naming it (stale "stop"), removes it (redo), or keeps a finished
        one's numbers (reuse)."""
        out = self.run_dir(method)
        saved = recipe_of(out)
        if saved is None or saved == config_sha256(cfg):
            return
        finished = final_test(out) is not None
        if self.stale == "redo":
            self.log(f"[benchmark] {method}: {out} was made with another recipe: redoing it")
            shutil.rmtree(out)
        elif self.stale == "reuse" and finished:
            self.log(f"[benchmark] note: {method}: {out} was made with another recipe, kept")
        else:
            raise InputError(
                f"{out} holds a {'finished' if finished else 'started'} run of another recipe "
                "(config file or overrides) than this command's; run again with --stale redo "
                "to redo it" + (", or --stale reuse to keep its numbers" if finished else "")
            )

    def table_paths(self):
        """benchmark_table.md, benchmark_table.csv, benchmark_chart.png under the output."""
        names = ("benchmark_table.md", "benchmark_table.csv", "benchmark_chart.png")
        return [os.path.join(self.output, name) for name in names]

    def write_table(self, rows):
        """The table of `rows` as markdown, CSV and chart (`table_paths`)."""
        md, csv_path, chart = self.table_paths()
        os.makedirs(self.output, exist_ok=True)
        write_text_atomic(format_markdown(rows), md)
        write_text_atomic(format_csv(rows), csv_path)
        write_chart(rows, chart)


# What a run saved (lastreid.run_results) ---------------------------------------------------


def final_test(run_dir):
    """The run's test of its kept checkpoint (results.json's `final_test`: checkpoint,
    epoch, datasets), None until the run has finished."""
    return read_run_results(run_dir).get("final_test")


def evaluation_datasets(run_dir):
    """{dataset: numbers} of a run's (here: an --eval-only run's) evaluation."""
    return (read_run_results(run_dir).get("evaluation") or {}).get("datasets")


def recipe_of(run_dir):
    """The recipe hash a run's folder was made with (its results.json's once finished,
    else its config.yaml's), None for a fresh folder."""
    return read_run_results(run_dir).get("config_sha256") or run_config_sha256(run_dir)


def signature(path):
    """Size and modification time of a file: a different checkpoint is measured again."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def training_speed(run_dir, batch):
    """Training images per second: `batch` over the median step time ("time", fastreid's
    per-iteration timer) of the run's metrics.json; None without one."""
    times = []
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            for line in f:
                record = json.loads(line) if line.strip() else {}
                if isinstance(record.get("time"), (int, float)):
                    times.append(record["time"])
    except (OSError, ValueError):
        return None
    return batch / statistics.median(times) if times else None


def count_parameters(run_dir):
    """Parameters of the run's model (classifiers included), built from its config.yaml."""
    cfg = build_cfg(
        os.path.join(run_dir, "config.yaml"),
        ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu"],
    )
    return sum(p.numel() for p in build_model(cfg).parameters())


def summary(row):
    t = row.test
    return (
        f"LaST test Rank-1 {t['Rank-1']:.1f}, mAP {t['mAP']:.1f} (epoch {row.epoch}); "
        f"{row.train_images_per_s or 0:.1f} training img/s; --eval-only {row.eval_seconds:.0f} s, "
        f"peak {row.eval_peak_gib:.2f} GiB, same numbers: {'yes' if row.eval_reproduced else 'NO'}"
    )
