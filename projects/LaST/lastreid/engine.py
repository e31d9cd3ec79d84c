"""The project's Trainer: fast-reid's DefaultTrainer with a CPU path and our evaluator.

On CUDA everything stays fast-reid's own (DataLoaderX prefetching onto the GPU, AMPTrainer,
DDP through `fastreid.engine.launch`). fastreid has no CPU path: DataLoaderX creates a
`torch.cuda.Stream` in its constructor and AMPTrainer asserts CUDA, so on CPU the loaders
are plain `torch.utils.data.DataLoader`s over the same datasets, samplers and collate
function (`lastreid.loaders`), and training runs without AMP. A resumed run continues the
random streams of the run it resumes (`lastreid.randomness`, `lastreid.resume`).

With several processes (`lastreid.launch`: torchrun, or fastreid's launch on CUDA) each
process trains on SOLVER.IMS_PER_BATCH / world size images of every step (its contiguous
share of one global batch drawn by fastreid's sampler from a seed shared by all processes;
the NUM_INSTANCE images of each identity drawn stay in one process), evaluates its
contiguous share of the test set
(gathered back into dataset order by the evaluator), and only the main process writes
checkpoints, metrics and events; DDP wraps the model on CPU as on CUDA (`lastreid.compat`).
"""

import json
import logging
import os
import time

import torch
from fastreid.engine import DefaultTrainer
from fastreid.engine.hooks import LayerFreeze
from fastreid.engine.train_loop import AMPTrainer
from fastreid.solver import build_optimizer
from fastreid.utils import comm
from fastreid.utils.collect_env import collect_env_info
from fastreid.utils.env import seed_all_rng
from fastreid.utils.events import (
    CommonMetricPrinter,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)
from fastreid.utils.logger import setup_logger

from . import loaders, precision
from .atomic import write_atomic, write_text_atomic
from .checkpoint import Checkpointer
from .evaluation import BlockedReidEvaluator
from .evaluation.single_shot import SingleShotReidEvaluator
from .gather import process_share
from .interruptions import QuietKnownErrors
from .modeling import build_model, load_weights
from .randomness import process_seed
from .resume import METRICS, arrange_hooks, checkpoint_info, continue_run
from .run_results import by_dataset, config_sha256, config_yaml_text, evaluation_part
from .startup import on_cpu
from .train_steps import (
    ClothesClassifierStep,
    CpuTrainer,
    CudaAMPTrainer,
    ResumableLayerFreeze,
    freeze_by_iteration,
)

logger = logging.getLogger(__name__)
# fastreid's train loop logs a traceback before re-raising; the tools print ours as one line.
logging.getLogger("fastreid.engine.train_loop").addFilter(QuietKnownErrors())


class ProgressPrinter(CommonMetricPrinter):
    """fastreid's console progress line, skipping a second one at the same iteration (the
    end of an epoch right after its last step's line). Before the iteration timer has a
    history (the first 3 steps) fastreid estimates the ETA by dividing by the steps since
    its last line, zero then: a run of a few steps (a smoke test) died of it."""

    def write(self):
        if self._last_write is not None and self._last_write[0] == get_event_storage().iter:
            return
        super().write()


class MetricsWriter(JSONWriter):
    """fastreid's JSONWriter skips every scalar whose iteration is not newer than the last
    line written, so the evaluation after the last epoch (same iteration as the last
    training step) never reaches metrics.json. This one remembers the last iteration
    written per key."""

    def __init__(self, json_file, window_size=20):
        super().__init__(json_file, window_size)
        self._written = {}

    def write(self):
        new = {}
        for key, (value, itr) in (
            get_event_storage().latest_with_smoothing_hint(self._window_size).items()
        ):
            if itr > self._written.get(key, -1):
                new.setdefault(itr, {})[key] = value
                self._written[key] = itr
        for itr in sorted(new):
            self._file_handle.write(
                json.dumps(dict(new[itr], iteration=itr), sort_keys=True) + "\n"
            )
        self._file_handle.flush()
        os.fsync(self._file_handle.fileno())


def default_setup(cfg, args):
    """The steps of fast-reid's `default_setup` (output folder, logs, config dump, seeding),
    with two differences: config.yaml is written atomically (fast-reid rewrites it in place
    at every start, so a kill at that moment tore the run's only record of its config), and
    our own `lastreid.*` loggers get a handler too."""
    output_dir = cfg.OUTPUT_DIR
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    rank = comm.get_rank()
    log = setup_logger(output_dir, distributed_rank=rank)
    setup_logger(output_dir, distributed_rank=rank, name="lastreid", abbrev_name="lastreid")
    log.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    log.info("Environment info:\n%s", collect_env_info())
    log.info("Command line arguments: %s", args)
    config_file = getattr(args, "config_file", "")
    if config_file:
        with open(config_file) as f:
            log.info("Contents of args.config_file=%s:\n%s", config_file, f.read())
    log.info("Running with full config:\n%s", cfg)
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        write_text_atomic(config_yaml_text(cfg), path)
        log.info("Full config saved to %s", os.path.abspath(path))
    seed_all_rng(process_seed(cfg.SEED, rank))  # SEED + rank: see lastreid.randomness
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


class Trainer(DefaultTrainer):
    """DefaultTrainer that builds CPU loaders when needed, evaluates with the blocked
    exact evaluator, saves checkpoints atomically and, after training, tests the best
    checkpoint on TEST.FINAL_TESTS."""

    def __init__(self, cfg):
        # fastreid's __init__ hands auto_scale_hyperparams the training set's class count
        # only; the set itself (its clothes classes, for CAL) is kept on the way.
        self.train_set = None
        build_train_loader = self.build_train_loader

        def build_and_keep(cfg):
            loader = build_train_loader(cfg)
            self.train_set = loader.dataset
            return loader

        self.build_train_loader = build_and_keep
        self.clothes_optimizer = None  # CAL's clothes classifier's own (build_hooks)
        super().__init__(cfg)
        del self.build_train_loader
        fast = precision.resolve(self.cfg, log=False, training=True)
        if on_cpu(self.cfg):  # the CPU step (bf16 autocast, channels-last batches as resolved)
            self._trainer = CpuTrainer.from_trainer(self._trainer, fast)
        elif self.cfg.SOLVER.AMP.ENABLED:  # fp16 AMP through torch.amp, same GradScaler
            self._trainer = CudaAMPTrainer.from_trainer(self._trainer, fast)
        elif self.clothes_optimizer is not None:  # fastreid's step + the clothes step
            self._trainer = CpuTrainer.from_trainer(self._trainer, fast)
        if self.clothes_optimizer is not None:
            self._trainer.clothes_step = ClothesClassifierStep(self.clothes_optimizer)
            net = getattr(self.model, "module", self.model)
            net.clothes_pids.copy_(self.train_set.clothes_pids)

    def run_step(self):
        self._trainer.epoch = self.epoch  # CAL's clothes terms start at configured epochs
        super().run_step()

    @classmethod
    def build_model(cls, cfg):
        return build_model(cfg)

    def auto_scale_hyperparams(self, cfg, num_classes):
        """fastreid's: MODEL.HEADS.NUM_CLASSES 0 becomes the training set's count, saved in
        config.yaml (and MODEL.CAL.NUM_CLOTHES 0 its clothes count). fastreid rewrites that
        file in place (a kill then tore it); this replaces it atomically and keeps the
        recipe's hash atop it (run_results)."""
        num_clothes = getattr(self.train_set, "num_clothes", 0)
        scale_classes = cfg.MODEL.HEADS.NUM_CLASSES == 0
        scale_clothes = cfg.MODEL.CAL.NUM_CLOTHES == 0 and num_clothes > 0
        if not (scale_classes or scale_clothes):
            return cfg
        scaled = cfg.clone()
        scaled.defrost()
        if scale_classes:
            scaled.MODEL.HEADS.NUM_CLASSES = num_classes
            logger.info("Auto-scaling the num_classes=%d", num_classes)
        if scale_clothes:
            scaled.MODEL.CAL.NUM_CLOTHES = num_clothes
            logger.info("Auto-scaling MODEL.CAL.NUM_CLOTHES=%d", num_clothes)
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            text = config_yaml_text(scaled, recipe_sha256=config_sha256(cfg))
            write_text_atomic(text, os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
        if cfg.is_frozen():
            scaled.freeze()
        return scaled

    @classmethod
    def test(cls, cfg, model):
        # The evaluation path: float32 unless MODEL.CPU_BF16 is on (then bf16 autocast with
        # float32 features out); distances and ranking run outside autocast, in float32.
        return super().test(cfg, precision.for_inference(model, precision.resolve(cfg, log=False)))

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        return loaders.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return loaders.build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        evaluator_class = (
            SingleShotReidEvaluator if cfg.TEST.SINGLE_SHOT.ENABLED else BlockedReidEvaluator
        )
        # The main process's buffer takes every process's share; the others hold their own.
        test_set = data_loader.dataset
        items = len(test_set)
        if not comm.is_main_process():
            items = len(process_share(items))
        # Clothes ids of every item in dataset order, for the dataset's clothes protocols.
        evaluator = evaluator_class(
            cfg,
            num_query,
            output_dir,
            num_items=items,
            clothes=test_set.clothes_ids,
            clothes_protocols=test_set.clothes_protocols,
        )
        return data_loader, evaluator

    @classmethod
    def build_optimizer(cls, cfg, model):
        # fastreid's default packs the parameters into one ContiguousParams buffer. Since
        # torch 2.0 `optimizer.zero_grad()` sets that buffer's .grad to None while the
        # per-parameter grads keep accumulating into views of the old buffer, so the
        # optimizer never sees a gradient and nothing trains. Plain parameters avoid it.
        # CAL's clothes classifier is left out: its own optimizer steps it
        # (build_clothes_optimizer).
        clothes = getattr(model, "clothes_classifier", None)
        trainable = [] if clothes is None else [p for p in clothes.parameters() if p.requires_grad]
        for p in trainable:
            p.requires_grad_(False)
        try:
            optimizer, params = build_optimizer(cfg, model, contiguous=False)
        finally:
            for p in trainable:
                p.requires_grad_(True)
        return freeze_by_iteration(optimizer), params

    @staticmethod
    def build_clothes_optimizer(cfg, model):
        """CAL's clothes classifier's own optimizer (None for a model without one):
        SOLVER.OPT at SOLVER.BASE_LR and SOLVER.WEIGHT_DECAY, not scheduled (the reference
        keeps its learning rate constant)."""
        clothes = getattr(getattr(model, "module", model), "clothes_classifier", None)
        if clothes is None:
            return None
        kwargs = dict(lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        if cfg.SOLVER.OPT == "SGD":
            kwargs.update(momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)
        return getattr(torch.optim, cfg.SOLVER.OPT)(clothes.parameters(), **kwargs)

    def build_hooks(self):
        # DefaultTrainer.__init__ builds fastreid's plain Checkpointer and then calls this;
        # swap in ours before the checkpoint hook captures it.
        old = self.checkpointer
        checkpointables = dict(old.checkpointables)
        # fastreid checkpoints the optimizer and scheduler only: the AMP GradScaler's scale
        # and growth tracker would restart from 65536 after every --resume.
        if isinstance(self._trainer, AMPTrainer):
            checkpointables["grad_scaler"] = self._trainer.grad_scaler
        # CAL: the clothes classifier's optimizer (the classifier is in the model).
        self.clothes_optimizer = self.build_clothes_optimizer(self.cfg, old.model)
        if self.clothes_optimizer is not None:
            checkpointables["clothes_optimizer"] = self.clothes_optimizer
        self.checkpointer = Checkpointer.from_config(
            self.cfg, old.model, old.save_dir, save_to_disk=old.save_to_disk, **checkpointables
        )
        # The frozen-layer warm-up counted in the run's iterations (it survives --resume).
        hook_list = [
            ResumableLayerFreeze(h.model, h.freeze_layers, h.freeze_iters)
            if type(h) is LayerFreeze
            else h
            for h in super().build_hooks()
        ]
        # Our checkpoint hook (best metric kept across resumes), metrics written before it.
        return arrange_hooks(hook_list, self.cfg.SOLVER.KEEP_LAST_CHECKPOINTS)

    def resume_or_load(self, resume=True):
        # DefaultTrainer's, plus the resume bookkeeping of lastreid.resume.continue_run.
        checkpoint = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        resumed = resume and self.checkpointer.has_checkpoint()
        if resumed:
            self.start_epoch = checkpoint.get("epoch", -1) + 1
        if resume:
            continue_run(self, checkpoint, resumed)

    def build_writers(self):
        return [
            ProgressPrinter(self.max_iter),
            MetricsWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
            TensorboardXWriter(self.cfg.OUTPUT_DIR),
        ]

    def train(self):
        results = super().train()
        self.final_test = self.test_best_checkpoint() if self.cfg.TEST.FINAL_TESTS else None
        return results

    def test_best_checkpoint(self):
        """Loads model_best.pth (else the final weights in memory), evaluates it on
        TEST.FINAL_TESTS and records the numbers in metrics.json too. Returns the
        `final_test` part of results.json (lastreid.run_results)."""
        best = os.path.join(self.cfg.OUTPUT_DIR, "model_best.pth")
        comm.synchronize()  # the main process may still be writing model_best.pth
        model = self.model.module if hasattr(self.model, "module") else self.model
        names = tuple(self.cfg.TEST.FINAL_TESTS)
        record = {"checkpoint": "model_best.pth", "epoch": self.max_epoch}
        if os.path.isfile(best):
            logger.info("Testing the best checkpoint %s on %s", best, ", ".join(names))
            Checkpointer(model).load(best)  # our own file: weights-only, full model
            record["epoch"] = int((checkpoint_info(best) or {}).get("epoch", -2)) + 1
        else:
            logger.warning(
                "No model_best.pth in %s: testing the final weights", self.cfg.OUTPUT_DIR
            )
            record["checkpoint"] = "model_final.pth"  # the weights in memory
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TESTS = names
        start = time.perf_counter()
        record["datasets"] = by_dataset(self.test(cfg, self.model), names)
        record["seconds"] = round(time.perf_counter() - start, 3)
        if comm.is_main_process():
            record_final_test(os.path.join(self.cfg.OUTPUT_DIR, METRICS), self.max_iter, record)
        return record

    def results_record(self, results):
        """The parts of results.json of a finished training run (lastreid.run_results)."""
        return dict(
            evaluation=evaluation_part(self.cfg, results, epoch=self.max_epoch),
            final_test=self.final_test,
            iterations_per_epoch=self.iters_per_epoch,
        )


def record_final_test(path, max_iter, record):
    """Puts the final test's numbers in metrics.json as `final_test/<dataset>/<metric>` at
    the last iteration, replacing those of an earlier final test (a finished run resumed)."""
    line = {"iteration": max_iter - 1, "final_test/epoch": record["epoch"]}
    for name, metrics in record["datasets"].items():
        line.update({f"final_test/{name}/{k}": v for k, v in metrics.items()})
    kept = b""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        kept = b"".join(raw + b"\n" for raw in lines if raw.strip() and b'"final_test/' not in raw)
    text = kept + json.dumps(line, sort_keys=True).encode() + b"\n"
    write_atomic(path, lambda f: f.write(text))


def evaluate_weights(cfg):
    """--eval-only: builds the model, loads MODEL.WEIGHTS (refusing one whose backbone does
    not load) and tests it on DATASETS.TESTS."""
    model = build_model(cfg)
    load_weights(cfg, model, cfg.MODEL.WEIGHTS)
    return Trainer.test(cfg, model)
