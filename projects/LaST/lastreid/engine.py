"""The project's Trainer: fast-reid's DefaultTrainer with a CPU path and our evaluator.

On CUDA everything stays fast-reid's own (DataLoaderX prefetching onto the GPU, AMPTrainer,
DDP through `fastreid.engine.launch`). fastreid has no CPU path: DataLoaderX creates a
`torch.cuda.Stream` in its constructor and AMPTrainer asserts CUDA, so on CPU the loaders
are plain `torch.utils.data.DataLoader`s over the same datasets, samplers and collate
function, and training runs without AMP.
"""
import json
import logging
import os

import torch
from fastreid.data import build as fastreid_build
from fastreid.data import samplers
from fastreid.data.transforms import build_transforms
from fastreid.engine import DefaultTrainer
from fastreid.engine.train_loop import AMPTrainer
from fastreid.engine import default_setup as fastreid_default_setup
from fastreid.solver import build_optimizer
from fastreid.utils import comm
from fastreid.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter, get_event_storage
from fastreid.utils.logger import setup_logger

from . import precision
from .checkpoint import Checkpointer, backbone_loaded, use_reference_maxpool
from .data import ReidImageDataset, drop_unreadable
from .datasets import build_dataset
from .evaluation import BlockedReidEvaluator
from .evaluation.single_shot import SingleShotReidEvaluator
from .resume import arrange_hooks, continue_run

logger = logging.getLogger(__name__)


def on_cpu(cfg):
    return torch.device(cfg.MODEL.DEVICE).type == "cpu"


def resolve_device(cfg):
    """Falls back to the CPU (and turns fp16 AMP off) when CUDA is asked for but absent.

    Call it on an unfrozen cfg before the model is built.
    """
    if not on_cpu(cfg) and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    if on_cpu(cfg) and cfg.SOLVER.AMP.ENABLED:
        logger.info("SOLVER.AMP.ENABLED is fp16 AMP for CUDA: turned off on the CPU")
        cfg.SOLVER.AMP.ENABLED = False
    return cfg


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
        for key, (value, itr) in get_event_storage().latest_with_smoothing_hint(self._window_size).items():
            if itr > self._written.get(key, -1):
                new.setdefault(itr, {})[key] = value
                self._written[key] = itr
        for itr in sorted(new):
            self._file_handle.write(json.dumps(dict(new[itr], iteration=itr), sort_keys=True) + "\n")
        self._file_handle.flush()
        os.fsync(self._file_handle.fileno())


def default_setup(cfg, args):
    """fast-reid's default_setup (output folder, logs, config dump, seeding), plus a log
    handler for our own `lastreid.*` loggers, which fast-reid's setup does not cover."""
    fastreid_default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="lastreid", abbrev_name="lastreid")


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


def build_train_set(cfg, names=None):
    items = []
    for name in names or cfg.DATASETS.NAMES:
        data = build_dataset(name, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    # A bad image raises BadImageError naming it, or is replaced when SKIP_BAD_IMAGES.
    return ReidImageDataset(items, build_transforms(cfg, is_train=True), relabel=True,
                            skip_bad_images=cfg.DATALOADER.SKIP_BAD_IMAGES)


def build_test_set(cfg, dataset_name):
    """Returns (dataset of query + gallery items, number of queries)."""
    data = build_dataset(dataset_name)
    if comm.is_main_process():
        data.show_test()
    query, gallery = data.query, data.gallery
    if cfg.DATALOADER.SKIP_BAD_IMAGES:  # never skipped mid-evaluation: checked up front
        query, gallery = drop_unreadable(dataset_name, query, gallery, cfg.DATALOADER.NUM_WORKERS)
    test_set = ReidImageDataset(query + gallery, build_transforms(cfg, is_train=False), relabel=False)
    return test_set, len(query)


class Trainer(DefaultTrainer):
    """DefaultTrainer that builds CPU loaders when needed, evaluates with the blocked
    exact evaluator, saves checkpoints atomically and, after training, tests the best
    checkpoint on TEST.FINAL_TESTS."""

    def __init__(self, cfg):
        super().__init__(cfg)
        fast = precision.resolve(self.cfg, log=False)
        if on_cpu(self.cfg):  # the CPU step (bf16 autocast, channels-last batches as resolved)
            self._trainer = precision.CpuTrainer.from_trainer(self._trainer, fast)
        elif self.cfg.SOLVER.AMP.ENABLED:  # fp16 AMP through torch.amp, same GradScaler
            self._trainer = precision.CudaAMPTrainer.from_trainer(self._trainer, fast)

    @classmethod
    def build_model(cls, cfg):
        # Channels-last weights when the precision path says so: training, evaluation
        # and evaluate_weights all build the model here. Logs the path taken.
        model = precision.prepare_model(super().build_model(cfg), precision.resolve(cfg))
        if cfg.MODEL.BACKBONE.TORCHVISION_STEM:  # reference / ImageNet checkpoints
            use_reference_maxpool(model)
        return model

    @classmethod
    def test(cls, cfg, model):
        # Forward passes under the precision path's autocast with float32 features out;
        # the evaluator's distances and ranking run outside autocast, in float32.
        return super().test(cfg, precision.for_inference(model, precision.resolve(cfg, log=False)))

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        train_set = build_train_set(cfg)
        # fastreid's own sampler choice (SAMPLER_TRAIN, NUM_INSTANCE, batch per process).
        sampler = fastreid_build._train_loader_from_config(cfg, train_set=train_set)["sampler"]
        batch_size = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        batch_sampler = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=True)
        return _loader(cfg, train_set, batch_sampler, cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        test_set, num_query = build_test_set(cfg, dataset_name)
        batch_size = cfg.TEST.IMS_PER_BATCH // comm.get_world_size()
        batch_sampler = torch.utils.data.BatchSampler(
            samplers.InferenceSampler(len(test_set)), batch_size, drop_last=False
        )
        return _loader(cfg, test_set, batch_sampler, cfg.DATALOADER.NUM_WORKERS), num_query

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        evaluator_class = SingleShotReidEvaluator if cfg.TEST.SINGLE_SHOT.ENABLED else BlockedReidEvaluator
        evaluator = evaluator_class(
            cfg, num_query, output_dir, num_items=len(data_loader.dataset)
        )
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
        return arrange_hooks(super().build_hooks())

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
            CommonMetricPrinter(self.max_iter),
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
        model = self.model.module if hasattr(self.model, "module") else self.model
        if os.path.isfile(best):
            logger.info("Testing the best checkpoint %s on %s", best, ", ".join(self.cfg.TEST.FINAL_TESTS))
            Checkpointer(model).load(best)  # our own file: weights-only, full model
        else:
            logger.warning("No model_best.pth in %s: testing the final weights", self.cfg.OUTPUT_DIR)
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TESTS = tuple(cfg.TEST.FINAL_TESTS)
        return self.test(cfg, self.model)


def evaluate_weights(cfg):
    """--eval-only: builds the model, loads MODEL.WEIGHTS and tests it on DATASETS.TESTS.
    Refuses to report numbers for a model whose backbone did not load."""
    model = Trainer.build_model(cfg)
    checkpointer = Checkpointer.from_config(cfg, model)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    if not backbone_loaded(checkpointer.last_load_report):
        raise RuntimeError(
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: no backbone weights fit this model "
            "(see the key report above); refusing to evaluate random features"
        )
    return Trainer.test(cfg, model)
