"""The project's Trainer: fast-reid's DefaultTrainer with a CPU path and our evaluator.

On CUDA everything stays fast-reid's own (DataLoaderX prefetching onto the GPU, AMPTrainer,
DDP through `fastreid.engine.launch`). fastreid has no CPU path: DataLoaderX creates a
`torch.cuda.Stream` in its constructor and AMPTrainer asserts CUDA, so on CPU the loaders
are plain `torch.utils.data.DataLoader`s over the same datasets, samplers and collate
function, and training runs without AMP.

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

import numpy as np
import torch
from fastreid.data import build as fastreid_build
from fastreid.data import samplers
from fastreid.engine import DefaultTrainer
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

from . import precision
from .atomic import write_text_atomic
from .checkpoint import Checkpointer
from .datasets import build_dataset
from .evaluation import BlockedReidEvaluator
from .evaluation.single_shot import SingleShotReidEvaluator
from .images import ReidImageDataset, drop_unreadable
from .config_checks import check_schedule
from .launch import check_batch_split, check_training_set
from .modeling import build_model, load_weights
from .resume import arrange_hooks, continue_run
from .startup import on_cpu
from .train_steps import CpuTrainer, CudaAMPTrainer
from .transforms import build_transforms

logger = logging.getLogger(__name__)


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
        write_text_atomic(cfg.dump(), path)
        log.info("Full config saved to %s", os.path.abspath(path))
    seed_all_rng(cfg.SEED if cfg.SEED >= 0 else None)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def _loader(cfg, dataset, batch_sampler, num_workers):
    """fastreid's own DataLoaderX on CUDA; a plain DataLoader with the same pieces on CPU."""
    kwargs = dict(
        dataset=dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=fastreid_build.fast_batch_collator,
    )
    if on_cpu(cfg):
        return torch.utils.data.DataLoader(**kwargs)
    return fastreid_build.DataLoaderX(comm.get_local_rank(), pin_memory=True, **kwargs)


class OwnNumpyRandom(torch.utils.data.Sampler):
    """Runs a fastreid sampler on its own copy of NumPy's global random state.

    fastreid's training samplers seed NumPy's global generator once and then draw from it,
    and every process must draw the same global batches to take disjoint shares of them.
    With DATALOADER.NUM_WORKERS 0 the transforms run in the same process between two draws,
    and some (AutoAugment, AugMix) draw from the same global generator a number of times
    that depends on the image, so the processes' streams would drift apart."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        outer = np.random.get_state()
        own = outer
        stream = iter(self.sampler)
        while True:
            np.random.set_state(own)
            try:
                index = next(stream)
            except StopIteration:
                return
            finally:
                own = np.random.get_state()
                np.random.set_state(outer)
            yield index
            outer = np.random.get_state()


def build_train_set(cfg, names=None):
    items = []
    for name in names or cfg.DATASETS.NAMES:
        data = build_dataset(name, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    # A bad image raises BadImageError naming it, or is replaced when SKIP_BAD_IMAGES.
    return ReidImageDataset(
        items,
        build_transforms(cfg, is_train=True),
        relabel=True,
        skip_bad_images=cfg.DATALOADER.SKIP_BAD_IMAGES,
    )


def build_test_set(cfg, dataset_name):
    """Returns (dataset of query + gallery items, number of queries)."""
    data = build_dataset(dataset_name)
    if comm.is_main_process():
        data.show_test()
    query, gallery = data.query, data.gallery
    if cfg.DATALOADER.SKIP_BAD_IMAGES:  # never skipped mid-evaluation: checked up front
        query, gallery = drop_unreadable(dataset_name, query, gallery, cfg.DATALOADER.NUM_WORKERS)
    test_set = ReidImageDataset(
        query + gallery, build_transforms(cfg, is_train=False), relabel=False
    )
    return test_set, len(query)


class Trainer(DefaultTrainer):
    """DefaultTrainer that builds CPU loaders when needed, evaluates with the blocked
    exact evaluator, saves checkpoints atomically and, after training, tests the best
    checkpoint on TEST.FINAL_TESTS."""

    def __init__(self, cfg):
        super().__init__(cfg)
        fast = precision.resolve(self.cfg, log=False, training=True)
        if on_cpu(self.cfg):  # the CPU step (bf16 autocast, channels-last batches as resolved)
            self._trainer = CpuTrainer.from_trainer(self._trainer, fast)
        elif self.cfg.SOLVER.AMP.ENABLED:  # fp16 AMP through torch.amp, same GradScaler
            self._trainer = CudaAMPTrainer.from_trainer(self._trainer, fast)

    @classmethod
    def build_model(cls, cfg):
        return build_model(cfg)

    @classmethod
    def test(cls, cfg, model):
        # The evaluation path: float32 unless MODEL.CPU_BF16 is on (then bf16 autocast with
        # float32 features out); distances and ranking run outside autocast, in float32.
        return super().test(cfg, precision.for_inference(model, precision.resolve(cfg, log=False)))

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        world = comm.get_world_size()
        batch_size = check_batch_split(cfg, world)
        if world > 1:
            logger.info(
                "Per-process batch: %d images (SOLVER.IMS_PER_BATCH %d over %d processes)",
                batch_size,
                cfg.SOLVER.IMS_PER_BATCH,
                world,
            )
        train_set = build_train_set(cfg)
        # One line, before any step, for a set too small for cfg (fastreid would divide by
        # zero or spin) and for SOLVER.STEPS past this run's scheduled epochs.
        check_training_set(cfg, len(train_set), train_set.num_classes, cfg.DATASETS.NAMES, world)
        check_schedule(cfg, len(train_set) // cfg.SOLVER.IMS_PER_BATCH)
        # fastreid's own sampler choice (SAMPLER_TRAIN, NUM_INSTANCE, batch per process);
        # its seed is comm.shared_random_seed(), the main process's, in every process.
        sampler = fastreid_build._train_loader_from_config(cfg, train_set=train_set)["sampler"]
        batch_sampler = torch.utils.data.BatchSampler(
            OwnNumpyRandom(sampler), batch_size, drop_last=True
        )
        return _loader(cfg, train_set, batch_sampler, cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        test_set, num_query = build_test_set(cfg, dataset_name)
        batch_size = max(1, cfg.TEST.IMS_PER_BATCH // comm.get_world_size())
        # Contiguous shares in rank order: the evaluator's gather restores dataset order.
        batch_sampler = torch.utils.data.BatchSampler(
            samplers.InferenceSampler(len(test_set)), batch_size, drop_last=False
        )
        return _loader(cfg, test_set, batch_sampler, cfg.DATALOADER.NUM_WORKERS), num_query

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        evaluator_class = (
            SingleShotReidEvaluator if cfg.TEST.SINGLE_SHOT.ENABLED else BlockedReidEvaluator
        )
        evaluator = evaluator_class(cfg, num_query, output_dir, num_items=len(data_loader.dataset))
        return data_loader, evaluator

    @classmethod
    def build_optimizer(cls, cfg, model):
        # fastreid's default packs the parameters into one ContiguousParams buffer. Since
        # torch 2.0 `optimizer.zero_grad()` sets that buffer's .grad to None while the
        # per-parameter grads keep accumulating into views of the old buffer, so the
        # optimizer never sees a gradient and nothing trains. Plain parameters avoid it.
        return build_optimizer(cfg, model, contiguous=False)

    def build_hooks(self):
        # DefaultTrainer.__init__ builds fastreid's plain Checkpointer and then calls this;
        # swap in ours before the checkpoint hook captures it.
        old = self.checkpointer
        checkpointables = dict(old.checkpointables)
        # fastreid checkpoints the optimizer and scheduler only: the AMP GradScaler's scale
        # and growth tracker would restart from 65536 after every --resume.
        if isinstance(self._trainer, AMPTrainer):
            checkpointables["grad_scaler"] = self._trainer.grad_scaler
        self.checkpointer = Checkpointer.from_config(
            self.cfg, old.model, old.save_dir, save_to_disk=old.save_to_disk, **checkpointables
        )
        # Our checkpoint hook (best metric kept across resumes), metrics written before it.
        return arrange_hooks(super().build_hooks(), self.cfg.SOLVER.KEEP_LAST_CHECKPOINTS)

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
        if self.cfg.TEST.FINAL_TESTS:
            self.final_results = self.test_best_checkpoint()
        return results

    def test_best_checkpoint(self):
        """Loads model_best.pth (else the final weights in memory) and evaluates it on
        TEST.FINAL_TESTS."""
        best = os.path.join(self.cfg.OUTPUT_DIR, "model_best.pth")
        comm.synchronize()  # the main process may still be writing model_best.pth
        model = self.model.module if hasattr(self.model, "module") else self.model
        if os.path.isfile(best):
            logger.info(
                "Testing the best checkpoint %s on %s", best, ", ".join(self.cfg.TEST.FINAL_TESTS)
            )
            Checkpointer(model).load(best)  # our own file: weights-only, full model
        else:
            logger.warning(
                "No model_best.pth in %s: testing the final weights", self.cfg.OUTPUT_DIR
            )
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TESTS = tuple(cfg.TEST.FINAL_TESTS)
        return self.test(cfg, self.model)


def evaluate_weights(cfg):
    """--eval-only: builds the model, loads MODEL.WEIGHTS (refusing one whose backbone does
    not load) and tests it on DATASETS.TESTS."""
    model = build_model(cfg)
    load_weights(cfg, model, cfg.MODEL.WEIGHTS)
    return Trainer.test(cfg, model)
