"""The generalisation experiments: pre-trained models x {PRCC, Celeb-reID} x {direct, fine-tuned}.

`tools/transfer_matrix.py` is the command line; this module does the work:

- trained sources (`--train`): BoT is first trained on each named source dataset (the
  recipes of SOURCE_RECIPES, from the ImageNet file) as a resumable train_net run under
  `<output>/sources/<name>/`, skipped once finished; the row's model is the file that
  recipe keeps (model_best.pth by LaST val, model_final.pth for the others). The
  "ImageNet" row is the ImageNet file itself.
- protocols: "clean" (the evaluation after the last epoch) and "seed" (the public LaST
  code's measurement: fine-tuned cells evaluated on the test split after every epoch,
  the best (Rank-1 + mAP) / 2 epoch reported with its number, bilinear resize and the
  other seed details of SEED_OPTS); "both" runs both and shows both numbers.

- sources: every `*.pth` of a folder (name = file stem), `NAME=PATH` pairs, and a
  "random init" source (a randomly initialised model, written once to
  `<output>/random_init.pth` with a fixed seed). Each file's layout decides the stem:
  the public LaST code's checkpoints and torchvision ImageNet files get the reference
  max-pool (MODEL.BACKBONE.TORCHVISION_STEM True), fastreid checkpoints (our BoT) not.
- cells: one `tools/train_net.py` subprocess per (source, dataset, setting, protocol). Direct
  transfer is `--eval-only` with the direct config; fine-tuning is a training run of the
  dataset's fine-tune config with `--resume` (fast-reid resumes from the cell's
  `last_checkpoint`, else starts from MODEL.WEIGHTS), or, when training had finished but
  its final evaluation was lost, an `--eval-only` run of the cell's `model_final.pth`.
  A clean cell's numbers come from the run's `results.json` (the evaluation after the
  last epoch, not a checkpoint picked on the test split), a seed fine-tune's from the
  per-epoch evaluations of its `metrics.json` (`best_epoch`); they are stored atomically
  in `<output>/results/<source>__<dataset>__<setting>[__seed].json`; a cell with such a file is
  skipped on the next run, unless its source checkpoint changed since (size or
  modification time, e.g. the demo retrained its BoT model): then the cell, and any
  unfinished fine-tune of it, is redone from scratch.
- the table: `transfer_table.md` and `.csv` in the shape of the paper's table (Rank-1 /
  mAP in %), and `transfer_chart.png` (grouped bars per source, Rank-1 and mAP panels).

Subprocesses rather than in-process runs: a cell takes minutes (hours at full scale)
against a few seconds of interpreter start-up, and a separate process gives each cell a
fresh fastreid logger / seed / dataset state, `--num-gpus` through fast-reid's `launch`,
fast-reid's own `--resume`, and a failure (or an out-of-memory kill) confined to its cell.
"""
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import yaml

from .atomic import save_atomic, write_bytes_atomic, write_text_atomic
from .checkpoint import is_reference_state_dict, is_torchvision_resnet_state_dict, load_checkpoint_file
from .errors import InputError, MissingFileError
from .curves import iterations_per_epoch, read_metrics

__all__ = [
    "DATASETS", "SETTINGS", "PROTOCOLS", "PUBLISHED", "SOURCE_RECIPES", "IMAGENET", "Source",
    "Cell", "TransferMatrix", "best_epoch", "trained_sources",
    "checkpoint_layout", "discover_sources", "format_markdown", "format_csv", "write_chart",
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")

DATASETS = ("PRCC", "CelebReID")
SETTINGS = ("direct", "finetune")
SHORT_NAMES = {"PRCC": "PRCC", "CelebReID": "Celeb"}
SETTING_NAMES = {"direct": "direct", "finetune": "fine-tuned"}
RANDOM_INIT = "random init"
RESULTS_FILE = "results.json"  # written by tools/train_net.py into OUTPUT_DIR
SOURCE_FILE = "source.json"  # which checkpoint version a cell's run started from

# How a cell is measured. clean: the evaluation after the last epoch. seed: as the public
# LaST code (engine/trainer.py) did: every epoch on the test split, best (R1 + mAP) / 2.
PROTOCOLS = ("clean", "seed")
PROTOCOL_CHOICES = {"clean": ("clean",), "seed": ("seed",), "both": ("clean", "seed")}
PROTOCOL_NOTES = {
    "clean": "protocol clean: fine-tuned cells report the evaluation after the last epoch",
    "seed": "protocol seed: fine-tuned cells report the epoch with the best (Rank-1 + mAP) / 2 "
            "on the test split (epoch in brackets), bilinear resize, as the public LaST code",
    "both": "protocol both: clean (last epoch); seed (best (Rank-1 + mAP) / 2 epoch on the "
            "test split, in brackets; bilinear resize)",
}
# The seed details a config can express, for every seed cell: bilinear resize (train and
# test), fp32 throughout (no AMP, no bf16), random erasing filled with (0.485, 0.456, 0.406)
# *after* normalisation, i.e. mean + value * std in the 0..255 input scale.
SEED_OPTS = ["INPUT.INTERPOLATION", "bilinear", "SOLVER.AMP.ENABLED", "False",
             "MODEL.CPU_BF16", "off", "INPUT.REA.VALUE", "[151.997, 142.327, 126.824]"]
SEED_FINETUNE_OPTS = ["TEST.EVAL_PERIOD", "1"]  # the test split after every epoch
_EVAL_KEY = re.compile(r"^(Rank-\d+|mAP|mINP|metric|SS-.+)$")

# Pre-training sources BoT can be trained on here: config, and the file the recipe keeps.
IMAGENET = "ImageNet"
PAPER_ROWS = (IMAGENET, "Market1501", "DukeMTMC", "MSMT17", "LaST")
SOURCE_RECIPES = {
    "Market1501": ("configs/Market1501/bagtricks_R50.yml", "model_final.pth"),
    "DukeMTMC": ("configs/DukeMTMC/bagtricks_R50.yml", "model_final.pth"),
    "MSMT17": ("configs/MSMT17/bagtricks_R50.yml", "model_final.pth"),
    "LaST": ("configs/LaST/bagtricks_R50.yml", "model_best.pth"),  # best on LaST val
}

CONFIGS = {
    "reference": {
        "direct": "configs/transfer/direct.yml",
        "finetune": {"PRCC": "configs/PRCC/bagtricks_R50_finetune.yml",
                     "CelebReID": "configs/CelebReID/bagtricks_R50_finetune.yml"},
    },
    "synthetic": {
        "sources": {"LaST": "configs/LaST/bagtricks_R50_synthetic.yml"},
        "direct": "configs/transfer/direct_synthetic.yml",
        "finetune": {"PRCC": "configs/PRCC/bagtricks_R50_finetune_synthetic.yml",
                     "CelebReID": "configs/CelebReID/bagtricks_R50_finetune_synthetic.yml"},
    },
}

# The paper's table (Rank-1, mAP in %): BoT ResNet-50 pre-trained on each source.
PUBLISHED = {
    "ImageNet": {("PRCC", "direct"): (24.7, 13.5), ("CelebReID", "direct"): (28.7, 3.0),
                 ("PRCC", "finetune"): (43.1, 41.3), ("CelebReID", "finetune"): (49.2, 8.7)},
    "Market1501": {("PRCC", "direct"): (29.0, 24.3), ("CelebReID", "direct"): (36.7, 3.7),
                   ("PRCC", "finetune"): (44.3, 43.1), ("CelebReID", "finetune"): (49.3, 8.7)},
    "DukeMTMC": {("PRCC", "direct"): (28.3, 24.1), ("CelebReID", "direct"): (40.9, 4.6),
                 ("PRCC", "finetune"): (43.9, 44.2), ("CelebReID", "finetune"): (49.8, 8.9)},
    "MSMT17": {("PRCC", "direct"): (26.2, 24.6), ("CelebReID", "direct"): (43.4, 5.0),
               ("PRCC", "finetune"): (43.7, 44.1), ("CelebReID", "finetune"): (51.0, 9.0)},
    "LaST": {("PRCC", "direct"): (39.3, 32.6), ("CelebReID", "direct"): (47.0, 7.0),
             ("PRCC", "finetune"): (54.4, 54.3), ("CelebReID", "finetune"): (56.1, 11.7)},
}

CHART_DPI = 100
CHART_SIZE_INCHES = (11.0, 4.5)
CHART_SIZE = (int(CHART_SIZE_INCHES[0] * CHART_DPI), int(CHART_SIZE_INCHES[1] * CHART_DPI))  # (w, h) px


def column_title(dataset, setting):
    return "{} {}".format(SHORT_NAMES.get(dataset, dataset), SETTING_NAMES[setting])


def columns(datasets=DATASETS, settings=SETTINGS):
    """(dataset, setting) pairs in the paper's column order: settings outer, datasets inner."""
    return [(d, s) for s in settings for d in datasets]


# Sources -----------------------------------------------------------------------------------

LAYOUT_REFERENCE, LAYOUT_TORCHVISION, LAYOUT_FASTREID = "reference", "torchvision", "fastreid"


def checkpoint_layout(path, trust=False):
    """'reference' (the public LaST code's `{'state_dict': ...}`), 'torchvision' (an
    ImageNet ResNet state dict) or 'fastreid' (`{'model': ...}` or a bare fastreid state
    dict). Raises lastreid.checkpoint.CheckpointError for unreadable files."""
    raw = load_checkpoint_file(path, trust=trust)
    state = raw.get("model", raw.get("state_dict", raw)) if isinstance(raw, dict) else raw
    if is_reference_state_dict(state):
        return LAYOUT_REFERENCE
    if is_torchvision_resnet_state_dict(state):
        return LAYOUT_TORCHVISION
    return LAYOUT_FASTREID


@dataclass
class Source:
    """A pre-training source: a checkpoint (path) or random initialisation (path None).
    `train`: the config of the BoT run that makes `path` (a trained source), else None."""
    name: str
    path: Optional[str] = None
    layout: str = LAYOUT_FASTREID
    train: Optional[str] = None
    error: str = ""

    @property
    def torchvision_stem(self):
        """The reference / torchvision max-pool for the checkpoints that were trained with it."""
        return self.layout in (LAYOUT_REFERENCE, LAYOUT_TORCHVISION)

    @property
    def slug(self):
        return slugify(self.name)


def slugify(name):
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return slug or "source"


def trained_sources(output, names, imagenet=None, preset="reference"):
    """The sources of `--train` in the paper's row order: "ImageNet" (the file itself, when
    given), then BoT trained on each of `names`, its model the file the recipe keeps under
    `<output>/sources/<name>/` (written by TransferMatrix.train_sources)."""
    unknown = [n for n in names if n not in SOURCE_RECIPES]
    if unknown:
        raise InputError("--train: unknown source {}; known: {}".format(
            ", ".join(map(repr, unknown)), ", ".join(SOURCE_RECIPES)))
    sources = []
    if imagenet:
        if not os.path.isfile(imagenet):
            raise MissingFileError("--imagenet {}: no such file".format(imagenet))
        sources.append(Source(IMAGENET, os.path.abspath(imagenet), LAYOUT_TORCHVISION))
    for name in PAPER_ROWS:
        if name in names:
            config, kept = SOURCE_RECIPES[name]
            config = CONFIGS.get(preset, {}).get("sources", {}).get(name, config)
            path = os.path.join(os.path.abspath(output), "sources", slugify(name), kept)
            sources.append(Source(name, path, LAYOUT_FASTREID, train=config))
    return sources


def discover_sources(folder=None, pairs=(), random_init=False, trust=False, first=()):
    """Sources in table order: random init (if asked), `first` (e.g. trained_sources), the
    folder's `*.pth` by name, then `pairs` of (name, path). Names (and their file-name
    slugs) must be unique."""
    sources = ([Source(RANDOM_INIT)] if random_init else []) + list(first)
    found = []
    if folder:
        if not os.path.isdir(folder):
            raise MissingFileError("--models {}: no such folder".format(folder))
        found = [(os.path.splitext(n)[0], os.path.join(folder, n))
                 for n in sorted(os.listdir(folder)) if n.endswith(".pth") and not n.startswith(".")]
    for name, path in list(found) + list(pairs):
        if not os.path.isfile(path):
            raise MissingFileError("source {!r}: {} does not exist".format(name, path))
        sources.append(Source(name, os.path.abspath(path), checkpoint_layout(path, trust=trust)))
    seen = {}
    for s in sources:
        if s.slug in seen:
            raise InputError("two sources named {!r} and {!r} (file names {!r}): rename one"
                             .format(seen[s.slug], s.name, s.slug))
        seen[s.slug] = s.name
    if not sources:
        raise InputError("no sources: give --models DIR with *.pth files, --source NAME=PATH, "
                         "--train NAMES, --imagenet FILE or --random-init")
    return sources


# Cells ------------------------------------------------------------------------------------

@dataclass
class Cell:
    source: Source
    dataset: str
    setting: str
    result: Optional[dict] = None   # the stored cell JSON once done
    error: str = ""
    protocol: str = "clean"

    @property
    def title(self):
        return "{} | {} | {}{}".format(
            self.source.name, SHORT_NAMES.get(self.dataset, self.dataset),
            SETTING_NAMES[self.setting], " | seed" if self.protocol == "seed" else "")

    @property
    def seed_selection(self):
        """True for the cells that pick their best epoch on the test split."""
        return self.protocol == "seed" and self.setting == "finetune"

    def metric(self, key):
        if not self.result:
            return None
        value = self.result.get("metrics", {}).get(key)
        return float(value) if isinstance(value, (int, float)) else None


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
    datasets: tuple = DATASETS
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
        seed = "-seed" if cell.protocol == "seed" else ""
        return os.path.join(self.output, "runs", cell.source.slug,
                            "{}-{}{}".format(cell.dataset, cell.setting, seed))

    def result_path(self, cell):
        seed = "__seed" if cell.protocol == "seed" else ""
        return os.path.join(self.output, "results", "{}__{}__{}{}.json".format(
            cell.source.slug, cell.dataset, cell.setting, seed))

    def source_dir(self, source):
        return os.path.join(self.output, "sources", source.slug)

    def cells(self):
        return [Cell(s, d, st, protocol=p) for s in self.sources
                for d, st in columns(self.datasets, self.settings) for p in self.protocols]

    def cell_opts(self, cell):
        """The overrides of a cell's run: ours, then the protocol's (which win)."""
        if cell.protocol != "seed":
            return list(self.opts)
        per_epoch = SEED_FINETUNE_OPTS if cell.setting == "finetune" else []
        return list(self.opts) + SEED_OPTS + per_epoch

    # running

    def run(self):
        """Trains the trained sources, runs every unfinished cell, then writes the table.
        Returns the cells."""
        os.makedirs(os.path.join(self.output, "results"), exist_ok=True)
        self.train_sources()
        cells = self.cells()
        t0 = time.time()
        self.log("[transfer] {} sources x {} x {} = {} cells, output {}".format(
            len(self.sources), "/".join(self.datasets), "/".join(self.settings), len(cells), self.output))
        for i, cell in enumerate(cells, 1):
            if cell.source.error:
                cell.error = cell.source.error
                self.log("[transfer] {}/{} {}: skipped ({})".format(
                    i, len(cells), cell.title, cell.error))
                continue
            self._run_cell(cell, "{}/{}".format(i, len(cells)))
        paths = self.write_table(cells)
        failed = [c for c in cells if c.result is None]
        self.log("[transfer] {} of {} cells done in {:.0f} s{}; table: {}".format(
            len(cells) - len(failed), len(cells), time.time() - t0,
            " ({} failed)".format(len(failed)) if failed else "", ", ".join(paths)))
        return cells

    def train_sources(self):
        """Trains (or resumes, or skips when finished) BoT on every trained source."""
        trained = [s for s in self.sources if s.train]
        for i, source in enumerate(trained, 1):
            counter = "source {}/{}".format(i, len(trained))
            out = self.source_dir(source)
            final = os.path.join(out, "model_final.pth")
            if _finished_training(out) and not os.path.isfile(source.path):
                # e.g. a recipe's model_best.pth never written (no evaluation): the final model
                self.log("[transfer] {} {}: no {}: its row uses {}".format(
                    counter, source.name, os.path.basename(source.path), final))
                source.path = final
            if _finished_training(out):
                self.log("[transfer] {} {}: trained before, skipped ({})".format(
                    counter, source.name, source.path))
                continue
            os.makedirs(out, exist_ok=True)
            config = source.train if os.path.isabs(source.train) else os.path.join(
                REPO, source.train)
            resuming = os.path.isfile(os.path.join(out, "last_checkpoint"))
            pretrain = ["MODEL.BACKBONE.PRETRAIN_PATH", self.imagenet] if self.imagenet else []
            gpus = ["--num-gpus", str(self.num_gpus)] if self.num_gpus else []
            cmd = ([sys.executable, TRAIN_NET, "--config-file", config, "--resume"] + gpus
                   + pretrain + self.opts + ["OUTPUT_DIR", out])
            self.log("[transfer] {} {}: {} BoT (log {})".format(
                counter, source.name, "resuming" if resuming else "training",
                os.path.join(out, "log.txt")))
            t0 = time.time()
            code = self._spawn(cmd, os.path.join(out, "stdout.txt"))
            if code == 0 and _finished_training(out) and not os.path.isfile(source.path):
                self.log("[transfer] {} {}: no {} was written: its row uses {}".format(
                    counter, source.name, os.path.basename(source.path), final))
                source.path = final
            if code != 0 or not _finished_training(out):
                source.error = "training the source failed (exit code {})".format(code)
                self.log("[transfer] {} {}: FAILED after {:.0f} s; see {}".format(
                    counter, source.name, time.time() - t0, os.path.join(out, "stdout.txt")))
                self._show_tail(os.path.join(out, "stdout.txt"))
                continue
            self.log("[transfer] {} {}: trained in {:.0f} s ({})".format(
                counter, source.name, time.time() - t0, source.path))

    def _read_stored(self, cell):
        path = self.result_path(cell)
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                stored = json.load(f)
        except (OSError, ValueError):
            self.log("[transfer] {}: unreadable {}, running it again".format(cell.title, path))
            return None
        if stored.get("opts") != self.cell_opts(cell):
            self.log("[transfer] note: {} was run with other overrides ({}); delete {} to redo it"
                     .format(cell.title, " ".join(stored.get("opts", [])) or "none", path))
        return stored

    def _run_cell(self, cell, counter):
        out = self.cell_dir(cell)
        if not os.path.isfile(self.weights(cell.source)):
            cell.error = "no checkpoint {}".format(self.weights(cell.source))
            self.log("[transfer] {} {}: skipped ({})".format(counter, cell.title, cell.error))
            return
        signature = _signature(self.weights(cell.source))
        stored = self._read_stored(cell)
        if stored is not None and stored.get("weights_signature") == signature:
            cell.result = stored
            self.log("[transfer] {} {}: done before, skipped ({})".format(counter, cell.title, _short(cell)))
            return
        if _read_json(os.path.join(out, SOURCE_FILE)).get("weights_signature") not in (None, signature):
            self.log("[transfer] {} {}: the source checkpoint changed since this cell ran: "
                     "redoing it".format(counter, cell.title))
            shutil.rmtree(out)
        os.makedirs(out, exist_ok=True)
        write_text_atomic(json.dumps({"weights": self.weights(cell.source), "weights_signature": signature})
                          + "\n", os.path.join(out, SOURCE_FILE))
        cmd, how = self.command(cell)
        t0 = time.time()
        results_file = os.path.join(out, RESULTS_FILE)
        selection, code = None, 0
        if cell.seed_selection and _finished_training(out):
            selection = best_epoch(out, cell.dataset)  # the history is all it needs
        if selection is None:
            self.log("[transfer] {} {}: {} (log {})".format(counter, cell.title, how,
                                                             os.path.join(out, "log.txt")))
            if os.path.exists(results_file):
                os.remove(results_file)  # only this run's numbers count
            code = self._spawn(cmd, os.path.join(out, "stdout.txt"),
                               heartbeat=lambda s: self._heartbeat(counter, cell, out, s))
            if code == 0 and cell.seed_selection:
                selection = best_epoch(out, cell.dataset)
        seconds = time.time() - t0
        if cell.seed_selection:
            metrics = selection["metrics"] if selection else None
        else:
            metrics = _read_results(results_file, cell.dataset) if code == 0 else None
        if metrics is None:
            cell.error = ("exit code {}".format(code) if code else
                          "no complete per-epoch history in metrics.json" if cell.seed_selection
                          else "no {} written".format(RESULTS_FILE))
            self.log("[transfer] {} {}: FAILED after {:.0f} s ({}); see {}".format(
                counter, cell.title, seconds, cell.error, os.path.join(out, "stdout.txt")))
            self._show_tail(os.path.join(out, "stdout.txt"))
            return
        cell.result = {
            "source": cell.source.name, "dataset": cell.dataset, "setting": cell.setting,
            "weights": cell.source.path or "random init", "layout": cell.source.layout,
            "torchvision_stem": self._stem(cell.source), "weights_signature": signature,
            "metrics": metrics, "protocol": cell.protocol,
            "seconds": round(seconds, 1), "opts": self.cell_opts(cell), "command": cmd,
        }
        if selection:  # seed: which epoch, the last epoch's numbers and the whole history
            cell.result.update({k: selection[k] for k in ("best_epoch", "last", "history")})
        write_text_atomic(json.dumps(cell.result, indent=2) + "\n", self.result_path(cell))
        self.log("[transfer] {} {}: done in {:.0f} s ({})".format(counter, cell.title, seconds, _short(cell)))

    def _stem(self, source):
        return source.torchvision_stem if self.stem is None else bool(self.stem)

    def weights(self, source):
        """The checkpoint of a source; random init is written once (seeded) and reused."""
        if source.path:
            return source.path
        path = os.path.join(self.output, "random_init.pth")
        if not os.path.isfile(path):
            self.log("[transfer] writing the random-init model to {} (seed {})".format(path, self.seed))
            write_random_init(path, self._config("direct", self.datasets[0]), self.opts, self.seed)
        return path

    def command(self, cell):
        """(argv, description) of the train_net.py run for a cell."""
        out = self.cell_dir(cell)
        stem = ["MODEL.BACKBONE.TORCHVISION_STEM", str(self._stem(cell.source))]
        trust = ["MODEL.TRUST_CHECKPOINTS", "True"] if self.trust else []
        tests = ["DATASETS.TESTS", '("{}",)'.format(cell.dataset)]
        if self.single_shot and cell.dataset == "PRCC":
            tests += ["TEST.SINGLE_SHOT.ENABLED", "True"]
        base = [sys.executable, TRAIN_NET]
        gpus = ["--num-gpus", str(self.num_gpus)] if self.num_gpus else []
        opts = self.cell_opts(cell)
        if cell.setting == "direct":
            return (base + ["--config-file", self._config("direct", cell.dataset), "--eval-only"] + gpus
                    + opts + ["MODEL.WEIGHTS", self.weights(cell.source)] + stem + trust + tests
                    + ["OUTPUT_DIR", out]), "direct transfer"
        config = self._config("finetune", cell.dataset)
        if _finished_training(out):
            return (base + ["--config-file", config, "--eval-only"] + gpus + opts
                    + ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth")] + stem + tests
                    + ["OUTPUT_DIR", out]), "evaluating the finished fine-tune"
        resuming = os.path.isfile(os.path.join(out, "last_checkpoint"))
        how = "resuming the fine-tune" if resuming else "fine-tuning"
        return (base + ["--config-file", config, "--resume"] + gpus + opts
                + ["MODEL.WEIGHTS", self.weights(cell.source), "MODEL.LOAD_CLASSIFIER", "False"]
                + stem + trust + tests + ["OUTPUT_DIR", out]), how

    def _spawn(self, cmd, log_path, heartbeat=None):
        """Runs one cell; calls heartbeat(elapsed seconds) every `heartbeat_s` meanwhile."""
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        t0 = time.time()
        with open(os.devnull if self.verbose else log_path, "w") as f:
            out = None if self.verbose else f
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
            try:
                while True:
                    try:
                        return proc.wait(timeout=self.heartbeat_s)
                    except subprocess.TimeoutExpired:
                        if heartbeat is not None:
                            heartbeat(time.time() - t0)
            finally:
                if proc.poll() is None:  # interrupted: do not leave the run behind
                    proc.terminate()
                    proc.wait()

    def _heartbeat(self, counter, cell, out, seconds):
        """A progress line for a long run: elapsed time and its last training status."""
        status = ""
        try:
            with open(os.path.join(out, "log.txt"), errors="replace") as f:
                lines = [line for line in f if "epoch/iter:" in line]
            if lines:  # fastreid's "eta: 0:05:09  epoch/iter: 1/43  total_loss: 5.97 ..."
                words = lines[-1].split()
                status = "; " + ", ".join(
                    "{} {}".format(words[i].rstrip(":"), words[i + 1]) for i in range(len(words) - 1)
                    if words[i] in ("eta:", "epoch/iter:", "total_loss:"))
        except OSError:
            pass
        self.log("[transfer] {} {}: running for {:.0f} s{}".format(counter, cell.title, seconds, status))

    def _show_tail(self, path, lines=15):
        try:
            with open(path, errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
        except OSError:
            return
        for line in tail:
            self.log("    " + line)

    # output

    def write_table(self, cells):
        """Writes transfer_table.md / .csv / transfer_chart.png; returns their paths."""
        rows = [s.name for s in self.sources]
        cols = columns(self.datasets, self.settings)
        grid = {(c.source.name, c.dataset, c.setting, c.protocol): c for c in cells}
        md = format_markdown(rows, cols, grid, self.protocol)
        table_csv = format_csv(rows, cols, grid, self.protocol)
        paths = [os.path.join(self.output, n) for n in
                 ("transfer_table.md", "transfer_table.csv", "transfer_chart.png")]
        write_text_atomic(md, paths[0])
        write_text_atomic(table_csv, paths[1])
        write_chart(rows, cols, grid, paths[2], self.protocol)
        return paths


def _signature(path):
    """Identifies one version of a checkpoint file: size, modification time and inode (an
    atomic rewrite is a new inode even within one tick of the file system's clock)."""
    st = os.stat(path)
    return "{}-{}-{}".format(st.st_size, st.st_mtime_ns, st.st_ino)


def _read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finished_training(out):
    """True when the cell's last checkpoint is the final one (training is complete)."""
    try:
        with open(os.path.join(out, "last_checkpoint")) as f:
            last = f.read().strip()
    except OSError:
        return False
    return last == "model_final.pth" and os.path.isfile(os.path.join(out, last))


def _read_results(path, dataset):
    """The metrics of one dataset from a train_net results.json (flat for one dataset,
    keyed by dataset name for several); None if absent or unreadable."""
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(results.get(dataset), dict):
        results = results[dataset]
    metrics = {k: v for k, v in results.items() if isinstance(v, (int, float))}
    return metrics if "Rank-1" in metrics and "mAP" in metrics else None


def best_epoch(run_dir, dataset):
    """The seed's selection from a run's per-epoch evaluations (metrics.json): the epoch
    with the best (Rank-1 + mAP) / 2, the later one on a tie (the seed keeps on `>=`).

    Returns {"best_epoch" (1-based), "metrics" (that epoch's), "last" (the last epoch's),
    "history": [{"epoch", "Rank-1", "mAP"}, ...]}, or None unless every epoch
    1..SOLVER.MAX_EPOCH of the run (its config.yaml) was evaluated once."""
    try:
        records = read_metrics(run_dir)
    except OSError:
        return None
    ipe = iterations_per_epoch(run_dir, records)
    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            max_epoch = int(yaml.safe_load(f)["SOLVER"]["MAX_EPOCH"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    if not ipe:
        return None
    evaluations = {}
    for record in records:
        metrics = {}
        for key, value in record.items():
            prefix, sep, name = key.rpartition("/")
            if sep and prefix != dataset:
                continue
            if _EVAL_KEY.match(name) and isinstance(value, (int, float)):
                metrics[name] = float(value)
        if "Rank-1" in metrics and "mAP" in metrics:
            evaluations[(record["iteration"] + 1) // ipe] = metrics
    if sorted(evaluations) != list(range(1, max_epoch + 1)):
        return None
    best = None
    for epoch in sorted(evaluations):
        m = evaluations[epoch]
        if best is None or (m["Rank-1"] + m["mAP"]) / 2 >= best[1]:
            best = (epoch, (m["Rank-1"] + m["mAP"]) / 2)
    return {"best_epoch": best[0], "metrics": evaluations[best[0]], "last": evaluations[max_epoch],
            "history": [{"epoch": e, "Rank-1": evaluations[e]["Rank-1"],
                         "mAP": evaluations[e]["mAP"]} for e in sorted(evaluations)]}


def _short(cell):
    r1, m_ap = cell.metric("Rank-1"), cell.metric("mAP")
    text = "Rank-1 {:.1f}, mAP {:.1f}".format(r1, m_ap)
    if cell.result and cell.result.get("best_epoch"):
        text += " at epoch {} of {}".format(cell.result["best_epoch"], len(cell.result["history"]))
    if cell.metric("SS-Rank-1") is not None:
        text += "; single-shot Rank-1 {:.1f}, mAP {:.1f}".format(cell.metric("SS-Rank-1"),
                                                                 cell.metric("SS-mAP"))
    return text


def write_random_init(path, config_file, opts, seed=0):
    """Builds the cells' model (config + overrides) with seeded random weights and saves it
    in fastreid's `{'model': state_dict}` layout."""
    import torch

    from .startup import build_cfg
    from .engine import Trainer

    cfg = build_cfg(config_file, list(opts) + ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(seed)
    model = Trainer.build_model(cfg)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_atomic({"model": state}, path)


# Table ------------------------------------------------------------------------------------

def _lookup(grid, name, dataset, setting, protocol):
    """A cell of the grid, keyed (name, dataset, setting, protocol) or, for clean, also
    (name, dataset, setting)."""
    cell = grid.get((name, dataset, setting, protocol))
    if cell is None and protocol == "clean":
        cell = grid.get((name, dataset, setting))
    return cell


def _pair(cell):
    if cell is None or cell.result is None:
        return None
    return cell.metric("Rank-1"), cell.metric("mAP")


def _epoch(cell):
    return cell.result.get("best_epoch") if cell is not None and cell.result else None


def _text(cell):
    pair = _pair(cell)
    if not pair:
        return "-"
    text = "{:.1f} / {:.1f}".format(*pair)
    return text + (" (ep {})".format(_epoch(cell)) if _epoch(cell) else "")


def format_markdown(rows, cols, grid, protocol="clean"):
    """The paper's table shape: one row per source, "R1 / mAP" per column, "-" if missing;
    seed fine-tuned cells add their epoch, "both" shows "clean; seed". The first line
    says which protocol made it."""
    lines = ["Rank-1 / mAP (%); " + PROTOCOL_NOTES[protocol], "",
             "| pre-training | " + " | ".join(column_title(d, s) for d, s in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name in rows:
        values = ["; ".join(_text(_lookup(grid, name, d, s, p)) for p in PROTOCOL_CHOICES[protocol])
                  for d, s in cols]
        lines.append("| {} | {} |".format(name, " | ".join(values)))
    return "\n".join(lines) + "\n"


def format_csv(rows, cols, grid, protocol="clean"):
    """One row per source; per column `<title> R1` and `<title> mAP` (empty if missing),
    seed fine-tuned cells also `<title> epoch` (under "both" the seed columns are named
    `<title> seed ...`), single-shot columns for the cells that report them, and a last
    `protocol` column."""
    protocols = PROTOCOL_CHOICES[protocol]
    groups = []  # (header, cell lookup, key)
    for p in protocols:
        prefix = " seed" if protocol == "both" and p == "seed" else ""
        for d, s in cols:
            title = column_title(d, s) + prefix
            groups += [(title + " R1", (d, s, p), "Rank-1"), (title + " mAP", (d, s, p), "mAP")]
            if p == "seed" and s == "finetune":
                groups.append((title + " epoch", (d, s, p), "best_epoch"))
    for p in protocols:
        prefix = " seed" if protocol == "both" and p == "seed" else ""
        for d, s in cols:
            found = [_lookup(grid, n, d, s, p) for n in rows]
            if any(c is not None and c.metric("SS-Rank-1") is not None for c in found):
                title = column_title(d, s) + prefix
                groups += [(title + " SS-R1", (d, s, p), "SS-Rank-1"),
                           (title + " SS-mAP", (d, s, p), "SS-mAP")]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["pre-training"] + [g[0] for g in groups] + ["protocol"])
    for name in rows:
        line = [name]
        for _, (d, s, p), key in groups:
            cell = _lookup(grid, name, d, s, p)
            if key == "best_epoch":
                line.append(str(_epoch(cell) or ""))
                continue
            value = cell.metric(key) if cell is not None else None
            line.append("" if value is None else "{:.2f}".format(value))
        writer.writerow(line + [protocol])
    return buf.getvalue()


def write_chart(rows, cols, grid, path, protocol="clean"):
    """Grouped bars, one colour per source, for Rank-1 and mAP (CHART_SIZE pixels), of the
    seed numbers under protocol seed, else of the clean ones."""
    shown = "seed" if protocol == "seed" else "clean"
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    fig = Figure(figsize=CHART_SIZE_INCHES, dpi=CHART_DPI)
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(rows), 1)
    colours = matplotlib.colormaps["tab10"]
    for ax, (key, title) in zip(axes, (("Rank-1", "Rank-1 (%)"), ("mAP", "mAP (%)"))):
        for i, name in enumerate(rows):
            xs, ys = [], []
            for j, (d, s) in enumerate(cols):
                cell = _lookup(grid, name, d, s, shown)
                value = cell.metric(key) if cell is not None else None
                if value is not None and not math.isnan(value):
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(value)
            bars = ax.bar(xs, ys, width, label=name, color=colours(i % 10))
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([column_title(d, s) for d, s in cols], fontsize=9)
        ax.set_ylim(0, 105)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(title="pre-training", fontsize=8, loc="upper left")
    fig.suptitle("Transfer to clothes-changing re-id: direct and fine-tuned (protocol {})"
                 .format(shown))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI)
    write_bytes_atomic(buf.getvalue(), path)
