"""`TransferMatrix`: runs every cell of sources x targets (PRCC, Celeb-reID, Market-1501,
DukeMTMC-reID) x {direct, fine-tuned} (x protocols) as a `tools/train_net.py` subprocess,
resumably, and writes the table. A cell on a dataset its row was trained on is not run.

A subprocess per cell: a cell takes minutes (hours at full scale) against seconds of
start-up, and gets a fresh fastreid state, `--num-gpus`, fast-reid's own `--resume`, and a
failure (or an out-of-memory kill) confined to itself. docs/generalisation.md.
"""

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..atomic import write_text_atomic
from ..run_results import RESULTS_FILE, dataset_metrics, read_run_results, run_config_sha256
from .process import REPO, TRAIN_NET, log_tail, run_logged, training_status
from .recipes import settle_stale
from .report import (
    DEFAULT_DATASETS,
    PROTOCOL_CHOICES,
    SETTINGS,
    Cell,
    cell_summary,
    columns,
    format_csv,
    format_markdown,
    write_chart,
)
from .results import best_epoch, finished_training, read_json
from .sources import Source, model_overrides, weights_signature, write_random_init
from .training import train_sources

__all__ = ["TransferMatrix", "PAPER_OPTS", "PAPER_FINETUNE_OPTS"]

SOURCE_FILE = "source.json"  # which checkpoint version a cell's run started from

# The paper's details a config can express, for every paper cell: bilinear resize (train and
# test), fp32 throughout (no AMP, no bf16), random erasing filled with (0.485, 0.456, 0.406)
# *after* normalisation, i.e. mean + value * std in the 0..255 input scale.
# fmt: off
PAPER_OPTS = [
    "INPUT.INTERPOLATION", "bilinear",
    "SOLVER.AMP.ENABLED", "False",
    "MODEL.CPU_BF16", "off",
    "INPUT.REA.VALUE", "[151.997, 142.327, 126.824]",
]
# fmt: on
PAPER_FINETUNE_OPTS = ["TEST.EVAL_PERIOD", "1"]  # the test split after every epoch


@dataclass
class TransferMatrix:
    """Runs (or skips) every cell of sources x datasets x settings and writes the table.

    configs: {"direct": path, "finetune": {dataset: path}} (paths relative to the repo
    or absolute). opts: `KEY VALUE` overrides for every run. env: environment of the
    subprocesses (e.g. FASTREID_DATASETS). stem: None (from each file's layout) or a bool.
    """

    output: str
    sources: List[Source]
    configs: Dict
    datasets: tuple = DEFAULT_DATASETS
    settings: tuple = SETTINGS
    opts: List[str] = field(default_factory=list)
    env: Optional[Dict[str, str]] = None
    num_gpus: int = 0
    stem: Optional[bool] = None
    trust: bool = False
    verbose: bool = False
    seed: int = 0
    single_shot: bool = False  # TEST.SINGLE_SHOT for the PRCC cells (SS- columns in the CSV)
    heartbeat_s: float = 120.0  # a progress line this often while a cell runs
    protocol: str = "clean"  # clean, seed or both (PROTOCOL_CHOICES)
    imagenet: Optional[str] = None  # MODEL.BACKBONE.PRETRAIN_PATH of the trained sources
    stale: str = "stop"  # runs made with another recipe: stop, redo or reuse (recipes.py)

    @property
    def protocols(self):
        return PROTOCOL_CHOICES[self.protocol]

    def log(self, message):
        print(message, flush=True)

    # paths

    def _config(self, setting, dataset):
        path = self.configs["direct"] if setting == "direct" else self.configs["finetune"][dataset]
        return path if os.path.isabs(path) else os.path.join(REPO, path)

    def cell_dir(self, cell):
        suffix = "-paper" if cell.protocol == "paper" else ""
        return os.path.join(
            self.output,
            "runs",
            cell.source.slug,
            "{}-{}{}".format(cell.dataset, cell.setting, suffix),
        )

    def result_path(self, cell):
        suffix = "__paper" if cell.protocol == "paper" else ""
        return os.path.join(
            self.output,
            "results",
            "{}__{}__{}{}.json".format(cell.source.slug, cell.dataset, cell.setting, suffix),
        )

    def source_dir(self, source):
        return os.path.join(self.output, "sources", source.slug + source.run_suffix)

    def model_source(self, cell):
        """The Source whose model a cell starts from: the row's, or under the paper protocol
        the row's other selection where the paper's code has one (`Source.paper`)."""
        paper = cell.source.paper if cell.protocol == "paper" else None
        return paper or cell.source

    def trained_runs(self):
        """The Sources this command trains: each trained row's run, and its paper-selection
        run where the paper protocol needs it (the row's own run only where a protocol
        uses it)."""
        runs = []
        for source in (s for s in self.sources if s.train):
            if source.paper is None or "clean" in self.protocols:
                runs.append(source)
            if source.paper is not None and "paper" in self.protocols:
                runs.append(source.paper)
        return runs

    def cells(self):
        return [
            Cell(s, d, st, protocol=p)
            for s in self.sources
            for d, st in columns(self.datasets, self.settings)
            for p in self.protocols
        ]

    def cell_opts(self, cell):
        """The overrides of a cell's run: ours, then the protocol's (which win)."""
        if cell.protocol != "paper":
            return list(self.opts)
        per_epoch = PAPER_FINETUNE_OPTS if cell.setting == "finetune" else []
        return list(self.opts) + PAPER_OPTS + per_epoch

    # running

    def run(self):
        """Settles the runs of other recipes (`stale`), trains the trained sources, runs
        every unfinished cell, then writes the table. Returns the cells."""
        os.makedirs(os.path.join(self.output, "results"), exist_ok=True)
        settle_stale(self, self.stale)
        self.train_sources()
        cells = self.cells()
        t0 = time.time()
        self.log(
            "[transfer] {} sources x {} x {} = {} cells ({} on a row's own training data, "
            "not run), output {}".format(
                len(self.sources),
                "/".join(self.datasets),
                "/".join(self.settings),
                len(cells),
                sum(c.is_source for c in cells),
                self.output,
            )
        )
        for i, cell in enumerate(cells, 1):
            if cell.is_source:
                self.log(
                    "[transfer] {}/{} {}: the row's model was trained on {}: shown as "
                    "source, not run".format(i, len(cells), cell.title, cell.dataset)
                )
                continue
            if self.model_source(cell).error:
                cell.error = self.model_source(cell).error
                self.log(
                    "[transfer] {}/{} {}: skipped ({})".format(
                        i, len(cells), cell.title, cell.error
                    )
                )
                continue
            self._run_cell(cell, "{}/{}".format(i, len(cells)))
        paths = self.write_table(cells)
        failed = [c for c in cells if c.result is None and not c.is_source]
        self.log(
            "[transfer] {} of {} cells done in {:.0f} s{}; table: {}".format(
                len(cells) - len(failed),
                len(cells),
                time.time() - t0,
                " ({} failed)".format(len(failed)) if failed else "",
                ", ".join(paths),
            )
        )
        return cells

    def train_sources(self):
        """Trains (or resumes, or skips when finished) BoT on every trained source."""
        train_sources(self)

    def _run_cell(self, cell, counter):
        weights = self.weights(self.model_source(cell))
        if not os.path.isfile(weights):
            cell.error = "no checkpoint {}".format(weights)
            self.log("[transfer] {} {}: skipped ({})".format(counter, cell.title, cell.error))
            return
        signature = weights_signature(weights)
        stored = read_json(self.result_path(cell))
        if stored.get("metrics") and stored.get("weights_signature") == signature:
            cell.result = stored  # its recipe was checked by recipes.settle_stale
            self.log(
                "[transfer] {} {}: done before, skipped ({})".format(
                    counter, cell.title, cell_summary(cell)
                )
            )
            return
        out = self._prepare_run_dir(cell, counter, weights, signature)
        cmd, how = self.command(cell)
        t0 = time.time()
        selection, code = None, 0
        if cell.paper_selection and finished_training(out):
            selection = best_epoch(out, cell.dataset)  # the history is all it needs
        if selection is None:
            self.log(
                "[transfer] {} {}: {} (log {})".format(
                    counter, cell.title, how, os.path.join(out, "log.txt")
                )
            )
            code = self._spawn(
                cmd,
                os.path.join(out, "stdout.txt"),
                heartbeat=lambda s: self._heartbeat(counter, cell, out, s),
            )
            if code == 0 and cell.paper_selection:
                selection = best_epoch(out, cell.dataset)
        seconds = time.time() - t0
        if cell.paper_selection:
            metrics = selection["metrics"] if selection else None
        else:
            metrics = dataset_metrics(read_run_results(out), cell.dataset) if code == 0 else None
        if metrics is None:
            cell.error = (
                "exit code {}".format(code)
                if code
                else "no complete per-epoch history in metrics.json"
                if cell.paper_selection
                else "no {} written".format(RESULTS_FILE)
            )
            self.log(
                "[transfer] {} {}: FAILED after {:.0f} s ({}); see {}".format(
                    counter, cell.title, seconds, cell.error, os.path.join(out, "stdout.txt")
                )
            )
            self._show_tail(os.path.join(out, "stdout.txt"))
            return
        cell.result = self._record(cell, signature, metrics, cmd, seconds)
        if selection:  # seed: which epoch, the last epoch's numbers and the whole history
            cell.result.update({k: selection[k] for k in ("best_epoch", "last", "history")})
        write_text_atomic(json.dumps(cell.result, indent=2) + "\n", self.result_path(cell))
        self.log(
            "[transfer] {} {}: done in {:.0f} s ({})".format(
                counter, cell.title, seconds, cell_summary(cell)
            )
        )

    def _prepare_run_dir(self, cell, counter, weights, signature):
        """The cell's run folder, emptied if it ran from another version of the source
        checkpoint, with that version recorded (source.json) and no numbers of an earlier
        run (results.json: only this run's count)."""
        out = self.cell_dir(cell)
        if read_json(os.path.join(out, SOURCE_FILE)).get("weights_signature") not in (
            None,
            signature,
        ):
            self.log(
                "[transfer] {} {}: the source checkpoint changed since this cell ran: "
                "redoing it".format(counter, cell.title)
            )
            shutil.rmtree(out)
        os.makedirs(out, exist_ok=True)
        write_text_atomic(
            json.dumps({"weights": weights, "weights_signature": signature}) + "\n",
            os.path.join(out, SOURCE_FILE),
        )
        if os.path.exists(os.path.join(out, RESULTS_FILE)):
            os.remove(os.path.join(out, RESULTS_FILE))
        return out

    def _record(self, cell, signature, metrics, cmd, seconds):
        """A done cell's stored result (results/<row>__<dataset>__<setting>.json)."""
        return {
            "source": cell.source.name,
            "dataset": cell.dataset,
            "setting": cell.setting,
            "weights": self.model_source(cell).path or "random init",
            "layout": cell.source.layout,
            "torchvision_stem": self._stem(cell.source),
            "weights_signature": signature,
            # the merged config of the run (its config.yaml), which recipes.settle_stale
            # compares with this command's
            "config_sha256": run_config_sha256(self.cell_dir(cell)),
            "metrics": metrics,
            "protocol": cell.protocol,
            "seconds": round(seconds, 1),
            "opts": self.cell_opts(cell),
            "command": cmd,
        }

    def _stem(self, source):
        return source.torchvision_stem if self.stem is None else bool(self.stem)

    def weights(self, source):
        """The checkpoint of a source; random init is written once (seeded) and reused."""
        if source.path:
            return source.path
        path = os.path.join(self.output, "random_init.pth")
        if not os.path.isfile(path):
            self.log(
                "[transfer] writing the random-init model to {} (seed {})".format(path, self.seed)
            )
            write_random_init(path, self._config("direct", self.datasets[0]), self.opts, self.seed)
        return path

    def recipe(self, cell):
        """(config, overrides, eval_only) of the run a cell's numbers come from: the direct
        evaluation, or the fine-tune (resumed, or re-evaluated once finished, with the same
        command). Its merged config is the cell's recipe (`recipes.recipe_sha256`)."""
        direct = cell.setting == "direct"
        source = self.model_source(cell)
        # The checkpoint's own model (an MGN, PCB or HPM row), whatever the overrides say.
        model = model_overrides(source.path) if source.path else []
        opts = self.cell_opts(cell) + model + ["MODEL.WEIGHTS", self.weights(source)]
        opts += [] if direct else ["MODEL.LOAD_CLASSIFIER", "False"]
        opts += ["MODEL.BACKBONE.TORCHVISION_STEM", str(self._stem(cell.source))]
        opts += ["MODEL.TRUST_CHECKPOINTS", "True"] if self.trust else []
        opts += ["DATASETS.TESTS", '("{}",)'.format(cell.dataset)]
        if self.single_shot and cell.dataset == "PRCC":
            opts += ["TEST.SINGLE_SHOT.ENABLED", "True"]
        opts += ["OUTPUT_DIR", self.cell_dir(cell)]
        return self._config(cell.setting, cell.dataset), opts, direct

    def command(self, cell):
        """(argv, description) of the train_net.py run for a cell. A finished fine-tune is
        resumed too: train_net then evaluates its final weights again."""
        config, opts, direct = self.recipe(cell)
        if direct:
            mode, how = "--eval-only", "direct transfer"
        else:
            out = self.cell_dir(cell)
            mode, how = "--resume", "fine-tuning"
            if finished_training(out):
                how = "evaluating the finished fine-tune"
            elif os.path.isfile(os.path.join(out, "last_checkpoint")):
                how = "resuming the fine-tune"
        argv = [sys.executable, TRAIN_NET, "--config-file", config, mode]
        argv += ["--num-gpus", str(self.num_gpus)] if self.num_gpus else []
        return argv + opts, how

    def _spawn(self, cmd, log_path, heartbeat=None):
        """Runs one train_net process (`process.run_logged`); returns its exit code."""
        return run_logged(cmd, log_path, self.env, self.verbose, heartbeat, self.heartbeat_s)

    def _heartbeat(self, counter, cell, out, seconds):
        """A progress line for a long run: elapsed time and its last training status."""
        status = training_status(out)
        self.log(
            "[transfer] {} {}: running for {:.0f} s{}".format(counter, cell.title, seconds, status)
        )

    def _show_tail(self, path, lines=15):
        for line in log_tail(path, lines):
            self.log("    " + line)

    # output

    def write_table(self, cells):
        """Writes transfer_table.md / .csv / transfer_chart.png; returns their paths."""
        rows = [s.name for s in self.sources]
        cols = columns(self.datasets, self.settings)
        grid = {(c.source.name, c.dataset, c.setting, c.protocol): c for c in cells}
        md = format_markdown(rows, cols, grid, self.protocol)
        table_csv = format_csv(rows, cols, grid, self.protocol)
        paths = [
            os.path.join(self.output, n)
            for n in ("transfer_table.md", "transfer_table.csv", "transfer_chart.png")
        ]
        write_text_atomic(md, paths[0])
        write_text_atomic(table_csv, paths[1])
        write_chart(rows, cols, grid, paths[2], self.protocol)
        return paths
