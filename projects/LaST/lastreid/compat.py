"""Every adaptation of fastreid 1.4.0 to a current Python / PyTorch / NumPy, in one list.

Patched here, before fastreid is first imported (nothing in site-packages is modified):
1. `from collections import Mapping` (data/build.py, evaluation/testing.py): the ABC
   aliases left `collections` in Python 3.10.
2. `from torch._six import string_classes` (data/build.py): `torch._six` left in torch 2.0.
3. `np.bool` (evaluation/rank.py, Python fallback): missing in NumPy 1.24-1.26.
4. The Cython rank / ROC evaluators: fastreid runs `make` in its own package folder on first
   use and calls `sys.exit(1)` when that fails. setup.py compiles the same sources into
   `lastreid._cylib`; they are registered here under fastreid's module names.
5. `Baseline.preprocess_image` (and `MGN.preprocess_image`, its copy in fastreid's MGN)
   normalised `inputs["images"]` in place, and fastreid's `inference_on_dataset` then
   flipped that normalised batch: every flip-averaged evaluation normalised the mirrored
   half twice. Both now normalise into a new tensor.

6. `DefaultTrainer.__init__` wraps the model in DistributedDataParallel with
   `device_ids=[comm.get_local_rank()]` whenever the world size is above 1, which DDP
   refuses for a CPU model; the DDP it builds leaves `device_ids` out for a CPU model, and
   finds unused parameters for a model that says it has some (`ddp_find_unused_parameters`:
   CAL's clothes classifier, stepped by its own optimizer; fastreid never sets it).
7. `data.transforms.functional.to_tensor` (fastreid's ToTensor, used by every image loader)
   builds a PIL image's tensor through `torch.ByteStorage.from_buffer`, which makes torch
   print `UserWarning: TypedStorage is deprecated` in every tool that loads images; the
   same bytes now reach the same uint8 tensor through `torch.frombuffer`.

Worked around where the code that needs it lives:
- `engine.Trainer.build_optimizer`: fastreid's ContiguousParams buffer never sees a gradient
  under torch 2's `zero_grad(set_to_none=True)`, so nothing trained; plain parameters.
- `loaders`: `DataLoaderX` creates a `torch.cuda.Stream` and `AMPTrainer` asserts CUDA; on
  the CPU, plain DataLoaders (and `train_steps.CpuTrainer`). fastreid's SimpleTrainer
  starts the training loader's iterator when it is built, before a resumed run knows its
  first batch: `loaders.DeferredLoader` starts it at the first step.
- `randomness.TrainBatches`: fastreid's training samplers draw from NumPy's global
  generator (seeded once), which anything else in the process moves; they run on their own
  copy of it, and a resumed run skips the batches trained on. fastreid seeds every process
  alike and lets each loader worker's augmentation depend on which batches it got:
  `randomness` seeds SEED + rank and each training image from its place in the stream.
- `resume.ResumableCheckpointer` / `RandomStatesHook`: fastreid's checkpoints hold no
  generator states, sampler position or scalar history (the writers' medians), so a
  resumed run drew other batches and augmentations than the run it continued.
- `engine.MetricsWriter`: fastreid's JSONWriter drops the evaluation after the last epoch.
- `engine.ProgressPrinter`: fastreid's CommonMetricPrinter divides by zero when it prints
  twice at one iteration within a run's first steps.
- `engine.default_setup` and `engine.Trainer.auto_scale_hyperparams`: fastreid's rewrite
  config.yaml in place (at start, and again with the derived MODEL.HEADS.NUM_CLASSES);
  ours replace it atomically.
- `resume`: fastreid's checkpoint hook forgets the best metric on resume and takes a metric
  from an earlier evaluation; a resumed, finished run leaves `epoch` unset.
- `evaluation.rerank`: fastreid's jaccard distance hard-codes a CUDA search.
- `images.ReidImageDataset`: a bad image raised a bare PIL error from a loader worker.
- `train_steps.CudaAMPTrainer`: fp16 AMP through `torch.amp` instead of fastreid's deprecated
  `torch.cuda.amp`; `engine.Trainer.build_hooks` checkpoints the AMP GradScaler's state
  (`grad_scaler`), which fastreid never saves, so `--resume` restores it.
- `train_steps.freeze_by_iteration` / `ResumableLayerFreeze` (installed by
  `engine.Trainer.build_optimizer` / `build_hooks`): fastreid's frozen-layer warm-up
  (MODEL.FREEZE_LAYERS, SOLVER.FREEZE_ITERS) counts optimizer steps from the optimizer's
  creation, so every `--resume` froze the layers again for FREEZE_ITERS steps; it now
  follows the run's iteration.
- `gather.gather_rows` (the evaluator's and FeatureExtractor's gather): fastreid's
  `comm.gather` pickles a whole share and unpickles every rank's on the receiver, several
  copies of a 6.7 GB feature matrix; the shares now arrive in bounded chunks.
- `precision.OneColumnSafeConv2d` (installed by `modeling.build_model`): not fastreid's but
  torch 2.14's: its CPU bfloat16 convolution returns garbage or NaN for a strided
  convolution to a one-column map; those calls run in float32.
- `startup.build_cfg`: yacs reports an unknown key as a bare AssertionError.
- `transforms`: fastreid's `build_transforms` hard-codes bicubic resizing; ours sets
  INPUT.INTERPOLATION on its Resize transforms.
- `datasets.fastreid_sources`: fastreid's Market1501 / DukeMTMC / MSMT17 list files in
  file-system order and stop on a missing folder with a bare `assert`; `build_dataset`
  checks their layout first (one-line errors) and sorts the lists.
- `launch`: sets fastreid's local process group under torchrun (only fastreid's own
  launch sets it, and `comm.get_local_rank()` asserts it). `check_batch_split` and
  `check_training_set` (called by `engine.Trainer.build_train_loader`): fastreid's
  identity samplers spin forever when NUM_INSTANCE does not divide a process's batch or
  the training set has fewer identities than one step takes, and its scheduler divides by
  an epoch of zero steps when the set has fewer images than one batch.
- `config_checks`: values fastreid takes without a word and fails on later (a traceback
  after the output folder is written) or reads silently otherwise: `TEST.EVAL_PERIOD 0`
  (its EvalHook divides by it), an unknown `MODEL.LOSSES.NAME` (no loss), a
  `SOLVER.STEPS` past the run (no decay: a warning line), a negative `LOSSES.TRI.MARGIN` (soft margin),
  image sizes its ResNet stem cannot pool; `check_schedule`: a warm-up that leaves
  CosineAnnealingLR no epoch (it divides by zero).
- `fastreid_internals`: the only module that calls fastreid's private functions (and reads
  its registry's table, its samplers' `_seed`, an EventStorage's live history dicts, a
  DefaultTrainer's step runner, hooks and last evaluation, a SimpleTrainer's batch iterator,
  the JSON writers' files, and the local process group, for code outside fastreid's
  subclasses). The private attributes of the fastreid classes we subclass are used in the
  subclasses only: DefaultTrainer's `_trainer` (engine.Trainer), SimpleTrainer's
  `_data_loader_iter`, `_write_metrics` (train_steps), JSONWriter's `_file_handle`,
  `_window_size` (engine.MetricsWriter), CommonMetricPrinter's `_last_write`
  (engine.ProgressPrinter) and Checkpointer's `_convert_ndarray_to_tensor` (checkpoint).
"""

import collections
import collections.abc
import importlib
import sys
import types

import numpy as np
import torch

_COLLECTIONS_ABCS = ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable")
_CYTHON_MODULES = ("rank_cy", "roc_cy")


def _patch_collections():
    for name in _COLLECTIONS_ABCS:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


def _patch_torch_six():
    if "torch._six" in sys.modules:
        return
    try:
        importlib.import_module("torch._six")
    except ImportError:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        sys.modules["torch._six"] = six


def _patch_numpy():
    if not hasattr(np, "bool"):
        np.bool = np.bool_


def _register_cython_evaluators():
    # A missing module (a source checkout that was never built) leaves fastreid's own
    # fallback, the Python evaluator, in place.
    for name in _CYTHON_MODULES:
        try:
            module = importlib.import_module("lastreid._cylib." + name)
        except ImportError:
            continue
        sys.modules["fastreid.evaluation.rank_cylib." + name] = module


def _patch_baseline_preprocess():
    # fastreid is imported only now, after the patches above made it importable.
    from fastreid.modeling.meta_arch.baseline import Baseline
    from fastreid.modeling.meta_arch.mgn import MGN

    def preprocess_image(self, batched_inputs):
        images = batched_inputs["images"] if isinstance(batched_inputs, dict) else batched_inputs
        if not isinstance(images, torch.Tensor):
            raise TypeError(
                f"batched_inputs must be a dict or a tensor, got {type(batched_inputs)}"
            )
        return (images.to(self.pixel_mean.device) - self.pixel_mean) / self.pixel_std

    Baseline.preprocess_image = preprocess_image
    MGN.preprocess_image = preprocess_image


def _patch_cpu_ddp():
    # As above: fastreid is importable only after the first patches ran.
    import fastreid.engine.defaults as defaults
    from torch.nn.parallel import DistributedDataParallel

    class DeviceAwareDDP(DistributedDataParallel):
        def __init__(self, module, device_ids=None, **kwargs):
            on_cpu = all(p.device.type == "cpu" for p in module.parameters())
            unused = bool(getattr(module, "ddp_find_unused_parameters", False))
            kwargs.setdefault("find_unused_parameters", unused)
            super().__init__(module, device_ids=None if on_cpu else device_ids, **kwargs)

    defaults.DistributedDataParallel = DeviceAwareDDP


def _patch_to_tensor():
    import fastreid.data.transforms.functional as functional
    import fastreid.data.transforms.transforms as transforms

    fastreid_to_tensor = functional.to_tensor

    def to_tensor(pic):
        # fastreid's own branches that do not touch a storage: arrays, 32-bit, 16-bit,
        # float and 1-bit images.
        if isinstance(pic, np.ndarray) or pic.mode in ("I", "I;16", "F", "1"):
            return fastreid_to_tensor(pic)
        channels = 3 if pic.mode == "YCbCr" else len(pic.mode)
        img = torch.frombuffer(bytearray(pic.tobytes()), dtype=torch.uint8)  # writable copy
        img = img.view(pic.size[1], pic.size[0], channels).permute(2, 0, 1).contiguous()
        return img.float()

    functional.to_tensor = to_tensor
    transforms.to_tensor = to_tensor  # ToTensor calls the name it imported


_patch_collections()
_patch_torch_six()
_patch_numpy()
_register_cython_evaluators()
_patch_baseline_preprocess()
_patch_cpu_ddp()
_patch_to_tensor()
