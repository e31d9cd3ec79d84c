"""The transfer table's cells as runs: an --eval-only of a row's checkpoint or training from it."""

import json
import os
import time
from dataclasses import dataclass, field, replace
from typing import List, Optional

from ..atomic import write_text_atomic
from ..experiments.folder import finished_training, selected_metrics, weights_signature
from ..experiments.protocols import PAPER_FINETUNE_OPTS, PAPER_OPTS, PROTOCOL_CHOICES
from ..experiments.runs import Runner, RunSpec, repo_path
from ..experiments.table import write_tables
from ..run_results import read_json, run_config_sha256
from .report import DEFAULT_DATASETS, SETTINGS, Cell, cell_summary, columns, tables
from .sources import Source, model_overrides, write_random_init

__all__ = ["TransferMatrix"]


@dataclass
class TransferMatrix:
    """The cells of `sources` x `datasets` x `settings` x protocols as runs, and the table."""

    output: str
    sources: List[Source]
    configs: dict
    runner: Runner = field(default_factory=lambda: Runner("[transfer]"))
    datasets: tuple = DEFAULT_DATASETS
    settings: tuple = SETTINGS
    opts: List[str] = field(default_factory=list)
    stem: Optional[bool] = None  # None: from each file's layout
    trust: bool = False  # MODEL.TRUST_CHECKPOINTS of the cells
    seed: int = 0  # of the random-init weights
    single_shot: bool = False  # TEST.SINGLE_SHOT for the PRCC cells (SS- columns in the CSV)
    protocol: str = "clean"  # PROTOCOL_CHOICES
    imagenet: Optional[str] = None

    def log(self, message):
        self.runner.log("[transfer] " + message)

    def cell_dir(self, cell):
        name = f"{cell.dataset}-{cell.setting}" + ("-paper" if cell.protocol == "paper" else "")
        return os.path.join(self.output, "runs", cell.source.slug, name)

    def result_path(self, cell):
        name = f"{cell.source.slug}__{cell.dataset}__{cell.setting}"
        name += "__paper.json" if cell.protocol == "paper" else ".json"
        return os.path.join(self.output, "results", name)

    def source_dir(self, source):
        return os.path.join(self.output, "sources", source.slug + source.run_suffix)

    def model_source(self, cell):
        """The Source whose model a cell starts from (paper protocol: `Source.paper`, if any)."""
        return (cell.source.paper if cell.protocol == "paper" else None) or cell.source

    def trained_runs(self):
        """The trained rows' runs this command's protocols use (paper: `Source.paper`)."""
        runs, protocols = [], PROTOCOL_CHOICES[self.protocol]
        for source in (s for s in self.sources if s.train):
            runs += [source] if source.paper is None or "clean" in protocols else []
            runs += [source.paper] if source.paper is not None and "paper" in protocols else []
        return runs

    def cells(self):
        cols, protocols = columns(self.datasets, self.settings), PROTOCOL_CHOICES[self.protocol]
        return [Cell(s, d, t, protocol=p) for s in self.sources for d, t in cols for p in protocols]

    def source_spec(self, source):
        """A trained row's run: from --imagenet, the command's overrides, then its own."""
        opts = ["MODEL.BACKBONE.PRETRAIN_PATH", self.imagenet] if self.imagenet else []
        title = source.name + (" (the paper's selection)" if source.train_opts else "")
        opts += self.opts + source.train_opts
        return RunSpec(title, source.train, opts, self.source_dir(source))

    def spec(self, cell):
        """A cell's run: the command's overrides, the protocol's, the row's model, its own."""
        source, direct = self.model_source(cell), cell.setting == "direct"
        weights = self.weights(source)
        opts = self.opts + (PAPER_OPTS if cell.protocol == "paper" else [])
        opts += PAPER_FINETUNE_OPTS if cell.paper_selection else []
        opts += model_overrides(source.path) if source.path else []
        opts += ["MODEL.WEIGHTS", weights] + ([] if direct else ["MODEL.LOAD_CLASSIFIER", "False"])
        opts += ["MODEL.BACKBONE.TORCHVISION_STEM", str(self._stem(cell.source))]
        opts += ["MODEL.TRUST_CHECKPOINTS", "True"] if self.trust else []
        opts += ["DATASETS.TESTS", f'("{cell.dataset}",)']
        if self.single_shot and cell.dataset == "PRCC":
            opts += ["TEST.SINGLE_SHOT.ENABLED", "True"]
        config = self.configs["direct"] if direct else self.configs["finetune"][cell.dataset]
        stamp = None
        if os.path.isfile(weights):
            stamp = {"weights": weights, "weights_signature": weights_signature(weights)}
        return RunSpec(cell.title, config, opts, self.cell_dir(cell), direct, stamp)

    def _stem(self, source):
        return source.torchvision_stem if self.stem is None else bool(self.stem)

    def weights(self, source):
        """The checkpoint of a source; random init is written once (seeded) and reused."""
        path = source.path or os.path.join(self.output, "random_init.pth")
        if not os.path.isfile(path) and not source.path:
            self.log(f"writing the random-init model to {path} (seed {self.seed})")
            write_random_init(path, repo_path(self.configs["direct"]), self.opts, self.seed)
        return path

    def stale_candidates(self):
        """[(RunSpec, paths removed to redo it)]: the trained rows, the cells with weights."""
        found = [(self.source_spec(s), [self.source_dir(s)]) for s in self.trained_runs()]
        for cell in (c for c in self.cells() if not c.is_source):
            if os.path.isfile(self.weights(self.model_source(cell))):
                found.append((self.spec(cell), [self.result_path(cell), self.cell_dir(cell)]))
        return found

    def run(self):
        """Applies --stale, trains the rows to train, runs the cells, writes the table."""
        os.makedirs(os.path.join(self.output, "results"), exist_ok=True)
        self.runner.settle(self.stale_candidates(), self.output)
        self.train_sources()
        cells, t0 = self.cells(), time.time()
        targets = f"{'/'.join(self.datasets)} x {'/'.join(self.settings)} = {len(cells)} cells"
        skipped = sum(c.is_source for c in cells)
        self.log(f"{len(self.sources)} sources x {targets} ({skipped} on a row's own training "
                 "data, not run)")  # fmt: skip
        for i, cell in enumerate(cells, 1):
            counter, cell.error = f"{i}/{len(cells)}", self.model_source(cell).error
            weights = self.weights(self.model_source(cell))
            if cell.is_source:
                self.log(f"{counter} {cell.title}: the row's model was trained on {cell.dataset}: "
                         "shown as source, not run")  # fmt: skip
            elif cell.error or not os.path.isfile(weights):
                cell.error = cell.error or f"no checkpoint {weights}"
                self.log(f"{counter} {cell.title}: skipped ({cell.error})")
            else:
                self._run_cell(cell, counter)
        done = [c.result or c.is_source for c in cells]  # a row's own data: shown, not run
        took = f" in {time.time() - t0:.0f} s"
        self.runner.summary(done, self.write_table(cells), "cells", took)
        return cells

    def train_sources(self):
        """Trains the `trained_runs`; a row without model_best.pth uses its final one."""
        trained = self.trained_runs()
        for i, source in enumerate(trained, 1):
            spec = self.source_spec(source)
            if not self.runner.execute(spec, f"source {i}/{len(trained)}"):
                source.error = "training the source failed"
            elif not os.path.isfile(source.path) and finished_training(spec.output):
                source.path = os.path.join(spec.output, "model_final.pth")
                self.log(f"{spec.title}: no model_best.pth: its row uses {source.path}")

    def _run_cell(self, cell, counter):
        spec = self.spec(cell)
        stored, signature = read_json(self.result_path(cell)), spec.stamp["weights_signature"]
        if stored.get("metrics") and stored.get("weights_signature") == signature:
            cell.result = stored  # its recipe was checked by Runner.settle
            self.log(f"{counter} {cell.title}: done before, skipped ({cell_summary(cell)})")
            return
        t0 = time.time()
        read = lambda results: self._numbers(cell, spec, results)  # noqa: E731
        show = lambda numbers: cell_summary(replace(cell, result=numbers))  # noqa: E731
        numbers = self.runner.execute(spec, counter, read, show)
        cell.error = "" if numbers else "the run failed"
        if numbers:
            cell.result = dict(numbers, seconds=round(time.time() - t0, 1))
            write_text_atomic(json.dumps(cell.result, indent=2) + "\n", self.result_path(cell))

    def _numbers(self, cell, spec, results):
        paper = cell.paper_selection
        metrics, selection = selected_metrics(spec.output, results, cell.dataset, paper)
        if not metrics:
            return None
        source = self.model_source(cell)
        result = {"source": cell.source.name, "dataset": cell.dataset, "setting": cell.setting}
        result.update(weights=source.path or "random init", layout=cell.source.layout)
        result.update(torchvision_stem=self._stem(cell.source), metrics=metrics, opts=spec.opts)
        result.update(weights_signature=spec.stamp["weights_signature"], protocol=cell.protocol)
        result.update(config_sha256=run_config_sha256(spec.output))
        result.update(command=spec.command(self.runner.num_gpus))
        result.update({k: selection[k] for k in ("best_epoch", "last", "history") if selection})
        return result

    def write_table(self, cells):
        rows, cols = [s.name for s in self.sources], columns(self.datasets, self.settings)
        grid = {(c.source.name, c.dataset, c.setting, c.protocol): c for c in cells}
        return write_tables(self.output, "transfer_table", *tables(rows, cols, grid, self.protocol))
