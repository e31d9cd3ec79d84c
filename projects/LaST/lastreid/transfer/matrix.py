"""`TransferMatrix`: the transfer table declared on lastreid.experiments: every cell of
sources x targets (PRCC, Celeb-reID, Market-1501, DukeMTMC-reID) x {direct, fine-tuned}
(x protocols) is a RunSpec (direct: --eval-only of the row's checkpoint; fine-tuned: a
resumable training from it), the trained rows (`--train`) are RunSpecs run first, and each
done cell's numbers are kept in results/<row>__<dataset>__<setting>[__paper].json beside the
checkpoint version they came from. docs/generalisation.md."""

import json
import os
import time
from dataclasses import dataclass, field, replace
from typing import List, Optional

from ..atomic import write_text_atomic
from ..experiments.folder import best_epoch, finished_training, read_json, weights_signature
from ..experiments.protocols import PAPER_FINETUNE_OPTS, PAPER_OPTS, PROTOCOL_CHOICES
from ..experiments.runs import Runner, RunSpec, repo_path
from ..experiments.table import write_tables
from ..run_results import dataset_metrics, run_config_sha256
from .report import (
    DEFAULT_DATASETS,
    SETTINGS,
    Cell,
    cell_summary,
    columns,
    csv_rows,
    draw_chart,
    format_markdown,
)
from .sources import Source, model_overrides, write_random_init

__all__ = ["TransferMatrix"]


@dataclass
class TransferMatrix:
    """The cells of sources x datasets x settings, run (or skipped) by `runner`.

    configs: {"direct": path, "finetune": {dataset: path}} (relative to the repo or
    absolute). opts: `KEY VALUE` overrides for every run. stem: None (from each file's
    layout) or a bool. imagenet: MODEL.BACKBONE.PRETRAIN_PATH of the trained sources."""

    output: str
    sources: List[Source]
    configs: dict
    runner: Runner = field(default_factory=lambda: Runner("[transfer]"))
    datasets: tuple = DEFAULT_DATASETS
    settings: tuple = SETTINGS
    opts: List[str] = field(default_factory=list)
    stem: Optional[bool] = None
    trust: bool = False
    seed: int = 0  # of the random-init weights
    single_shot: bool = False  # TEST.SINGLE_SHOT for the PRCC cells (SS- columns in the CSV)
    protocol: str = "clean"  # PROTOCOL_CHOICES
    imagenet: Optional[str] = None

    def log(self, message):
        self.runner.log(message)

    def cell_dir(self, cell):
        suffix = "-paper" if cell.protocol == "paper" else ""
        return os.path.join(
            self.output, "runs", cell.source.slug, f"{cell.dataset}-{cell.setting}{suffix}"
        )

    def result_path(self, cell):
        suffix = "__paper" if cell.protocol == "paper" else ""
        name = f"{cell.source.slug}__{cell.dataset}__{cell.setting}{suffix}.json"
        return os.path.join(self.output, "results", name)

    def source_dir(self, source):
        return os.path.join(self.output, "sources", source.slug + source.run_suffix)

    def model_source(self, cell):
        """The Source whose model a cell starts from: the row's, or under the paper protocol
        the row's other selection where the paper's code has one (`Source.paper`)."""
        return (cell.source.paper if cell.protocol == "paper" else None) or cell.source

    def trained_runs(self):
        """The Sources this command trains: each trained row's run where a protocol uses it,
        and its paper-selection run where the paper protocol needs it."""
        protocols, runs = PROTOCOL_CHOICES[self.protocol], []
        for source in (s for s in self.sources if s.train):
            runs += [source] if source.paper is None or "clean" in protocols else []
            runs += [source.paper] if source.paper is not None and "paper" in protocols else []
        return runs

    def cells(self):
        return [
            Cell(s, d, st, protocol=p)
            for s in self.sources
            for d, st in columns(self.datasets, self.settings)
            for p in PROTOCOL_CHOICES[self.protocol]
        ]

    def source_spec(self, source):
        """The run of a trained source: its recipe from the --imagenet file, the command's
        overrides, the run's own (which win)."""
        pretrain = ["MODEL.BACKBONE.PRETRAIN_PATH", self.imagenet] if self.imagenet else []
        title = source.name + (" (the paper's selection)" if source.train_opts else "")
        opts = pretrain + self.opts + source.train_opts
        return RunSpec(title, source.train, opts, self.source_dir(source))

    def spec(self, cell):
        """The run a cell's numbers come from: the direct evaluation, or the fine-tune
        (resumed, or evaluated again once finished), from the checkpoint version stamped."""
        source, direct = self.model_source(cell), cell.setting == "direct"
        weights = self.weights(source)
        opts = self.opts + (PAPER_OPTS if cell.protocol == "paper" else [])
        opts += PAPER_FINETUNE_OPTS if cell.paper_selection else []
        opts += model_overrides(source.path) if source.path else []  # the row's own model
        opts += ["MODEL.WEIGHTS", weights] + ([] if direct else ["MODEL.LOAD_CLASSIFIER", "False"])
        opts += ["MODEL.BACKBONE.TORCHVISION_STEM", str(self._stem(cell.source))]
        opts += ["MODEL.TRUST_CHECKPOINTS", "True"] if self.trust else []
        opts += ["DATASETS.TESTS", f'("{cell.dataset}",)']
        opts += (
            ["TEST.SINGLE_SHOT.ENABLED", "True"]
            if self.single_shot and cell.dataset == "PRCC"
            else []
        )
        config = self.configs["direct"] if direct else self.configs["finetune"][cell.dataset]
        stamp = None
        if os.path.isfile(weights):
            stamp = {"weights": weights, "weights_signature": weights_signature(weights)}
        return RunSpec(cell.title, config, opts, self.cell_dir(cell), direct, stamp)

    def _stem(self, source):
        return source.torchvision_stem if self.stem is None else bool(self.stem)

    def weights(self, source):
        """The checkpoint of a source; random init is written once (seeded) and reused."""
        if source.path:
            return source.path
        path = os.path.join(self.output, "random_init.pth")
        if not os.path.isfile(path):
            self.log(f"[transfer] writing the random-init model to {path} (seed {self.seed})")
            config = repo_path(self.configs["direct"])
            write_random_init(path, config, self.opts, self.seed)
        return path

    def stale_candidates(self):
        """[(RunSpec, paths to remove to redo it)] of the trained sources and of the cells
        whose checkpoint exists (a cell to come from a changed one is redone anyway)."""
        found = [(self.source_spec(s), [self.source_dir(s)]) for s in self.trained_runs()]
        for cell in (c for c in self.cells() if not c.is_source):
            if os.path.isfile(self.weights(self.model_source(cell))):
                found.append((self.spec(cell), [self.result_path(cell), self.cell_dir(cell)]))
        return found

    def run(self):
        """Settles the runs of other recipes (--stale), trains the trained sources, runs
        every unfinished cell, then writes the table. Returns the cells."""
        os.makedirs(os.path.join(self.output, "results"), exist_ok=True)
        self.runner.settle(self.stale_candidates(), self.output)
        self.train_sources()
        cells, t0 = self.cells(), time.time()
        self.log(
            "[transfer] {} sources x {} x {} = {} cells ({} on a row's own training data, "
            "not run), output {}".format(
                len(self.sources), "/".join(self.datasets), "/".join(self.settings),
                len(cells), sum(c.is_source for c in cells), self.output,
            )
        )  # fmt: skip
        for i, cell in enumerate(cells, 1):
            counter = f"{i}/{len(cells)}"
            cell.error = self.model_source(cell).error
            if cell.is_source:
                self.log(f"[transfer] {counter} {cell.title}: the row's model was trained on "
                         f"{cell.dataset}: shown as source, not run")  # fmt: skip
            elif cell.error or not os.path.isfile(self.weights(self.model_source(cell))):
                cell.error = cell.error or f"no checkpoint {self.weights(self.model_source(cell))}"
                self.log(f"[transfer] {counter} {cell.title}: skipped ({cell.error})")
            else:
                self._run_cell(cell, counter)
        paths = self.write_table(cells)
        failed = sum(c.result is None and not c.is_source for c in cells)
        self.log(
            "[transfer] {} of {} cells done in {:.0f} s{}; table: {}".format(
                len(cells) - failed, len(cells), time.time() - t0,
                f" ({failed} failed)" if failed else "", ", ".join(paths),
            )
        )  # fmt: skip
        return cells

    def train_sources(self):
        """Trains (or resumes, or skips when finished) every run of `trained_runs`; a row
        whose recipe keeps no file (no evaluation, so no model_best.pth) uses the final one."""
        trained = self.trained_runs()
        for i, source in enumerate(trained, 1):
            spec = self.source_spec(source)
            if not self.runner.execute(spec, f"source {i}/{len(trained)}"):
                source.error = "training the source failed"
                continue
            final = os.path.join(spec.output, "model_final.pth")
            if not os.path.isfile(source.path) and finished_training(spec.output):
                self.log(
                    f"[transfer] {spec.title}: no {os.path.basename(source.path)}: its row uses {final}"
                )
                source.path = final

    def _run_cell(self, cell, counter):
        spec = self.spec(cell)
        stored = read_json(self.result_path(cell))
        if (
            stored.get("metrics")
            and stored.get("weights_signature") == spec.stamp["weights_signature"]
        ):
            cell.result = stored  # its recipe was checked by Runner.settle
            self.log(
                f"[transfer] {counter} {cell.title}: done before, skipped ({cell_summary(cell)})"
            )
            return
        t0 = time.time()
        numbers = self.runner.execute(
            spec,
            counter,
            read=lambda results: self._numbers(cell, spec, results),
            summary=lambda numbers: cell_summary(replace(cell, result=numbers)),
        )
        if numbers is None:
            cell.error = "the run failed"
            return
        cell.result = dict(numbers, seconds=round(time.time() - t0, 1))
        write_text_atomic(json.dumps(cell.result, indent=2) + "\n", self.result_path(cell))

    def _numbers(self, cell, spec, results):
        """A cell's stored result from its finished run, or None: the evaluation on its
        dataset, or (paper fine-tune) the best epoch of its history, with that history."""
        selection = best_epoch(spec.output, cell.dataset) if cell.paper_selection else None
        metrics = selection and selection["metrics"]
        metrics = metrics if cell.paper_selection else dataset_metrics(results, cell.dataset)
        if metrics is None:
            return None
        return dict(
            {"source": cell.source.name, "dataset": cell.dataset, "setting": cell.setting},
            weights=self.model_source(cell).path or "random init",
            layout=cell.source.layout,
            torchvision_stem=self._stem(cell.source),
            weights_signature=spec.stamp["weights_signature"],
            config_sha256=run_config_sha256(spec.output),  # its merged config (config.yaml)
            metrics=metrics,
            protocol=cell.protocol,
            opts=spec.opts,
            command=spec.command(self.runner.num_gpus),
            **{k: selection[k] for k in ("best_epoch", "last", "history") if selection},
        )

    def write_table(self, cells):
        """Writes transfer_table.md / .csv / transfer_chart.png; returns their paths."""
        rows = [s.name for s in self.sources]
        cols = columns(self.datasets, self.settings)
        grid = {(c.source.name, c.dataset, c.setting, c.protocol): c for c in cells}
        return write_tables(
            self.output,
            "transfer_table",
            format_markdown(rows, cols, grid, self.protocol),
            csv_rows(rows, cols, grid, self.protocol),
            draw_chart(rows, cols, grid, self.protocol),
            chart_name="transfer_chart",
        )
