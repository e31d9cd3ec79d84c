"""One `tools/train_net.py` process per run of a table (a fresh fastreid state, --num-gpus,
--resume, a failure confined to its run): `RunSpec` says what to run, `Runner` runs it."""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from ..atomic import write_text_atomic
from ..errors import InputError, MissingFileError
from ..run_results import (
    RESULTS_FILE,
    config_sha256,
    read_json,
    read_run_results,
    run_config_sha256,
)
from ..startup import build_cfg
from .folder import finished_training

__all__ = ["REPO", "STALE_CHOICES", "TRAIN_NET", "RunSpec", "Runner", "recipe_sha256"]
__all__ += ["other_recipe", "repo_path", "run_logged", "training_status"]

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
STALE_CHOICES = ("stop", "redo", "reuse")
STAMP_FILE, MEASURED_FILE = "source.json", "measured.json"


def repo_path(path):
    """A config path as given: absolute, or relative to the repository."""
    return path if os.path.isabs(path) else os.path.join(REPO, path)


@dataclass
class RunSpec:
    """A train_net.py run (--resume, or eval_only); a folder of another `stamp` is run again."""

    title: str
    config: str
    opts: List[str] = field(default_factory=list)
    output: str = ""
    eval_only: bool = False
    stamp: Optional[dict] = None
    log_name: str = "stdout.txt"

    def command(self, num_gpus=0):
        argv = [sys.executable, TRAIN_NET, "--config-file", repo_path(self.config)]
        argv += ["--eval-only" if self.eval_only else "--resume"]
        argv += ["--num-gpus", str(num_gpus)] if num_gpus else []
        return argv + list(self.opts) + ["OUTPUT_DIR", self.output]

    def finished(self):
        return self.eval_only or finished_training(self.output)

    def done(self):  # the folder holds this run's results (from the stamped start)
        stamped = self.stamp is None or read_json(self._at(STAMP_FILE)) == self.stamp
        return stamped and bool(read_run_results(self.output)) and self.finished()

    def _at(self, name):
        return os.path.join(self.output, name)


def recipe_sha256(spec):
    """config_sha256 of a RunSpec's merged config; None while it cannot be built (no weights)."""
    try:
        return config_sha256(build_cfg(repo_path(spec.config), spec.opts, spec.eval_only))
    except MissingFileError:
        return None


def other_recipe(spec):
    """True when the spec's folder was started with another recipe than the spec's."""
    found = run_config_sha256(spec.output)
    return found is not None and found != (recipe_sha256(spec) or found)


@dataclass
class Runner:
    """How a tool runs its RunSpecs: --num-gpus, --verbose, --stale, a line every heartbeat_s."""

    tag: str
    num_gpus: int = 0
    verbose: bool = False
    heartbeat_s: float = 120.0
    stale: str = "stop"
    log: Callable[[str], None] = lambda line: print(line, flush=True)

    def settle(self, candidates, where):
        """Applies --stale to `candidates`, [(RunSpec, paths removed to redo it)]: their titles."""
        stale = [(spec, paths) for spec, paths in candidates if other_recipe(spec)]
        unfinished = "; ".join(f"{s.title} ({s.output})" for s, _ in stale if not s.done())
        if unfinished and self.stale == "reuse":  # resuming it would mix two recipes
            raise InputError(
                f"--stale reuse keeps finished runs only; started with another recipe: "
                f"{unfinished}; run again with --stale redo to redo them"
            )
        if stale and self.stale == "stop":
            raise InputError(
                f"{len(stale)} run(s) under {where} were made with another recipe (config file "
                "or overrides) than this command's: "
                + "; ".join(f"{s.title} ({s.output})" for s, _ in stale)
                + "; run again with --stale redo to redo them, or --stale reuse to keep them"
            )
        for spec, paths in stale:
            if self.stale == "redo":
                self.log(f"{self.tag} {spec.title}: made with another recipe: redoing it")
                for path in paths:
                    shutil.rmtree(path) if os.path.isdir(path) else Path(path).unlink(True)
            else:
                self.log(f"{self.tag} note: {spec.title}: another recipe, kept (--stale reuse)")
        return [s.title for s, _ in stale]

    def execute(self, spec, counter="", read=None, summary=None):
        """Runs `spec` unless done: read(results.json's dict), or None (its log's tail shown)."""
        head = " ".join(x for x in (self.tag, counter, spec.title) if x)
        read = read or (lambda results: results or None)
        brackets = lambda numbers: f" ({summary(numbers)})" if summary else ""  # noqa: E731
        numbers = read(read_run_results(spec.output)) if spec.done() else None
        if numbers:
            self.log(f"{head}: done before, skipped{brackets(numbers)}")
            return numbers
        if spec.stamp is not None and read_json(spec._at(STAMP_FILE)) not in ({}, spec.stamp):
            self.log(f"{head}: what it starts from changed since it ran: redoing it")
            shutil.rmtree(spec.output)
        os.makedirs(spec.output, exist_ok=True)
        if spec.stamp is not None:
            write_text_atomic(json.dumps(spec.stamp) + "\n", spec._at(STAMP_FILE))
        Path(spec._at(RESULTS_FILE)).unlink(missing_ok=True)  # only this run's numbers count
        started = os.path.isfile(spec._at("last_checkpoint"))
        how = "evaluating" if spec.finished() else "resuming" if started else "training"
        self.log(f"{head}: {how} (log {spec._at('log.txt')})")
        beat = lambda s: self.log(f"{head}: {training_status(spec.output, s)}")  # noqa: E731
        cmd, log = spec.command(self.num_gpus), spec._at(spec.log_name)
        code, cost = run_logged(cmd, log, self.verbose, beat, self.heartbeat_s)
        write_text_atomic(json.dumps(dict(cost, returncode=code)) + "\n", spec._at(MEASURED_FILE))
        if code == 0 and spec.finished():
            numbers = read(read_run_results(spec.output))
        if not numbers:
            saved = f"no numbers saved ({RESULTS_FILE}, metrics.json)"
            why = f"exit code {code}" if code else saved
            self.log(f"{head}: FAILED after {cost['wall_s']:.0f} s ({why}); see {log}")
            for line in _lines(log)[-15:]:
                self.log("    " + line)
            return None
        self.log(f"{head}: done in {cost['wall_s']:.0f} s{brackets(numbers)}")
        return numbers

    def summary(self, results, paths, what="runs", took=""):
        """Logs a table's last line, "N of M runs done (k failed); table: <paths>"."""
        failed = sum(not r for r in results)
        failures = f" ({failed} failed)" if failed else ""
        done = f"{len(results) - failed} of {len(results)} {what} done{took}{failures}"
        self.log(f"{self.tag} {done}; table: {', '.join(paths)}")


def _lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def run_logged(cmd, log_path, verbose=False, heartbeat=None, heartbeat_s=120.0):
    """(exit code, {"wall_s", "peak_rss_gib" with its children}) of `cmd`, output in log_path."""
    env = {"PYTHONUNBUFFERED": "1", **os.environ}
    t0 = beat = time.time()
    with open(os.devnull if verbose else log_path, "w") as f:
        out = None if verbose else f
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    cost = {"wall_s": time.time() - t0, "peak_rss_gib": usage.ru_maxrss / 2**20}
                    return proc.returncode, cost
                time.sleep(0.1)
                if heartbeat is not None and time.time() - beat >= heartbeat_s:
                    beat = time.time()
                    heartbeat(beat - t0)
        finally:
            if proc.returncode is None:  # interrupted: do not leave the run behind
                proc.terminate()
                proc.wait()


def training_status(run_dir, seconds):
    """ "running for 65 s; eta 0:05:09, epoch/iter 1/43, total_loss 5.97", from log.txt."""
    lines = [line for line in _lines(os.path.join(run_dir, "log.txt")) if "epoch/iter:" in line]
    words = lines[-1].split() if lines else []
    return f"running for {seconds:.0f} s" + "".join(
        f"{', ' if i else '; '}{w.rstrip(':')} {words[words.index(w) + 1]}"
        for i, w in enumerate(x for x in words[:-1] if x in ("eta:", "epoch/iter:", "total_loss:"))
    )
