"""The training and test loaders of every run and tool: fastreid's own DataLoaderX on CUDA,
plain DataLoaders over the same datasets, samplers and collate function on the CPU (where
DataLoaderX cannot run: it creates a `torch.cuda.Stream`).

Training batches come from `randomness.TrainBatches` (fastreid's sampler, each image with
its own augmentation seed), and the training loader starts its iterator only at the first
step (`DeferredLoader`), once a resumed run has said which batch comes first."""

import logging

import numpy as np
import torch
from fastreid.data import build as fastreid_build
from fastreid.data import samplers
from fastreid.utils import comm

from .config_checks import check_schedule
from .datasets import build_dataset
from .evaluation.rank import clothes_aware_protocols
from .fastreid_internals import train_sampler
from .images import ReidImageDataset, drop_unreadable
from .launch import check_batch_split, check_training_set
from .randomness import TrainBatches
from .startup import needs_clothes, on_cpu, require_clothes_labels
from .transforms import build_transforms

logger = logging.getLogger(__name__)

__all__ = [
    "DeferredLoader",
    "build_test_loader",
    "build_test_set",
    "build_train_loader",
    "build_train_set",
]


def _loader(cfg, dataset, batch_sampler):
    """fastreid's own DataLoaderX on CUDA; a plain DataLoader with the same pieces on CPU.
    Its own generator: starting one never draws from the global torch stream (which a
    resumed run restores)."""
    kwargs = dict(
        dataset=dataset,
        batch_sampler=batch_sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=fastreid_build.fast_batch_collator,
        generator=torch.Generator().manual_seed(max(cfg.SEED, 0)),
    )
    if on_cpu(cfg):
        return torch.utils.data.DataLoader(**kwargs)
    return fastreid_build.DataLoaderX(comm.get_local_rank(), pin_memory=True, **kwargs)


class DeferredLoader:
    """A training loader whose iterator is started at its first batch, not by `iter()`.

    fastreid's SimpleTrainer calls `iter(loader)` when it is built, and a DataLoader with
    workers starts drawing batches right then, before `resume_or_load` knows which batch a
    resumed run starts from (`TrainBatches.start`). Everything else is the loader's."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        return _Deferred(self.loader)


class _Deferred:
    def __init__(self, loader):
        self.loader, self.iterator = loader, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.iterator is None:
            self.iterator = iter(self.loader)
        return next(self.iterator)


def build_train_set(cfg, names=None):
    """The relabelled training set of `names` (DATASETS.NAMES). When the model trains on
    clothes classes, each item also carries its clothes class, keyed by dataset name and
    the dataset's clothes key (`ReidImageDataset`), so combined datasets stay apart."""
    names = names or cfg.DATASETS.NAMES
    require_clothes_labels(cfg, names)
    items, clothes = [], [] if needs_clothes(cfg) else None
    for name in names:
        data = build_dataset(name, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
        if clothes is not None:
            clothes.extend(f"{name}_{key}" for key in data.train_clothes)
    # A bad image raises BadImageError naming it, or is replaced when SKIP_BAD_IMAGES.
    return ReidImageDataset(
        items,
        build_transforms(cfg, is_train=True),
        relabel=True,
        skip_bad_images=cfg.DATALOADER.SKIP_BAD_IMAGES,
        clothes=clothes,
    )


def build_train_loader(cfg):
    """This process's training loader: SOLVER.IMS_PER_BATCH / world size images a step
    (its contiguous share of one global batch of fastreid's sampler, whose seed is the main
    process's in every process)."""
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
    # zero or spin); one warning line for schedule points past the end of this run.
    check_training_set(cfg, len(train_set), train_set.num_classes, cfg.DATASETS.NAMES, world)
    check_schedule(cfg, len(train_set) // cfg.SOLVER.IMS_PER_BATCH)
    # fastreid's own sampler choice (SAMPLER_TRAIN, NUM_INSTANCE, batch per process).
    batches = TrainBatches(
        train_sampler(cfg, train_set), batch_size, offset=comm.get_rank() * batch_size
    )
    return DeferredLoader(_loader(cfg, train_set, batches))


def build_test_set(cfg, dataset_name):
    """Returns (dataset of query + gallery items, number of queries). The dataset also
    carries, for the evaluator, `clothes_ids` (an int per item, equal for equal clothes
    keys; None for a dataset without clothes labels) and `clothes_protocols` (the
    dataset's CLOTHES_PROTOCOLS, default ("general",))."""
    data = build_dataset(dataset_name)
    if comm.is_main_process():
        data.show_test()
    query, gallery = data.query, data.gallery
    clothes = getattr(data, "query_clothes", None), getattr(data, "gallery_clothes", None)
    if cfg.DATALOADER.SKIP_BAD_IMAGES:  # never skipped mid-evaluation: checked up front
        kept = drop_unreadable(dataset_name, query, gallery, cfg.DATALOADER.NUM_WORKERS)
        clothes = tuple(map(_kept_values, (query, gallery), kept, clothes))
        query, gallery = kept
    test_set = ReidImageDataset(
        query + gallery, build_transforms(cfg, is_train=False), relabel=False
    )
    test_set.clothes_ids = _clothes_ids(*clothes)
    test_set.clothes_protocols = tuple(getattr(data, "CLOTHES_PROTOCOLS", ("general",)))
    if clothes_aware_protocols(test_set.clothes_protocols) and test_set.clothes_ids is None:
        raise ValueError(
            "dataset {} declares CLOTHES_PROTOCOLS {} but has no query_clothes / "
            "gallery_clothes".format(dataset_name, test_set.clothes_protocols)
        )
    return test_set, len(query)


def _kept_values(items, kept, values):
    """`values` (parallel to `items`, or None) for the items drop_unreadable kept: it drops
    by image path, keeping the order."""
    if values is None or len(kept) == len(items):
        return values
    kept_paths = {item[0] for item in kept}
    return [value for item, value in zip(items, values) if item[0] in kept_paths]


def _clothes_ids(query_clothes, gallery_clothes):
    """Clothes keys of query then gallery as int64 ids (numbered in order of first
    appearance), None unless both splits have them."""
    if query_clothes is None or gallery_clothes is None:
        return None
    ids = {}
    keys = list(query_clothes) + list(gallery_clothes)
    return np.fromiter((ids.setdefault(key, len(ids)) for key in keys), np.int64, len(keys))


def build_test_loader(cfg, dataset_name):
    """(loader, number of queries): contiguous shares of the test set in rank order, which
    the evaluator's gather puts back into dataset order."""
    test_set, num_query = build_test_set(cfg, dataset_name)
    batch_size = max(1, cfg.TEST.IMS_PER_BATCH // comm.get_world_size())
    batch_sampler = torch.utils.data.BatchSampler(
        samplers.InferenceSampler(len(test_set)), batch_size, drop_last=False
    )
    return _loader(cfg, test_set, batch_sampler), num_query
