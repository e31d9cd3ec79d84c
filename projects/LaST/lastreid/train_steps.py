"""The training steps `lastreid.engine.Trainer` installs: `CpuTrainer` (fast-reid's step
with the forward pass under bf16 autocast and channels-last batches, losses in float32),
`CudaAMPTrainer` (fast-reid's fp16 AMP step through `torch.amp`), and the frozen-layer
warm-up (MODEL.FREEZE_LAYERS for SOLVER.FREEZE_ITERS steps) counted in the run's iterations,
so that it survives `--resume` (`freeze_by_iteration`, `ResumableLayerFreeze`), and CAL's
second optimizer, the clothes classifier's (`ClothesClassifierStep`), which both steps
install in a CAL model for the duration of its forward pass."""

import contextlib
import time

import torch
import torch.distributed as dist
from fastreid.engine.hooks import LayerFreeze
from fastreid.engine.train_loop import AMPTrainer, SimpleTrainer, TrainerBase

from .fastreid_internals import batch_iterator
from .precision import autocast, channels_last_images, to_float32

__all__ = [
    "ClothesClassifierStep",
    "CpuTrainer",
    "CudaAMPTrainer",
    "ResumableLayerFreeze",
    "freeze_by_iteration",
]


class _FreezeByIteration:
    """Optimizer mixin: while `freeze_active`, the parameter groups fastreid marked
    `freeze_status == "freeze"` (MODEL.FREEZE_LAYERS) skip the step, as in fastreid's frozen
    warm-up, but the switch is set by `ResumableLayerFreeze` from the trainer's iteration."""

    freeze_active = False

    def step(self, closure=None):
        if not self.freeze_active:
            return super().step(closure)
        hidden = [
            (p, p.grad)
            for group in self.param_groups
            if group.get("freeze_status") == "freeze"
            for p in group["params"]
            if p.grad is not None
        ]
        for p, _ in hidden:
            p.grad = None  # a parameter without a gradient is left alone by the step
        try:
            return super().step(closure)
        finally:
            for p, grad in hidden:
                p.grad = grad


def freeze_by_iteration(optimizer):
    """Replaces, in place, the class fastreid gives an optimizer built with frozen layers
    (SOLVER.FREEZE_ITERS > 0): its step counts the steps since the optimizer was built, so a
    run resumed past FREEZE_ITERS froze the layers again for FREEZE_ITERS steps. The new
    class (`_FreezeByIteration` over the same optimizer) lets `ResumableLayerFreeze` decide
    from the run's iteration. An optimizer without frozen groups is returned unchanged."""
    frozen = any(g.get("freeze_status") == "freeze" for g in optimizer.param_groups)
    if frozen and not isinstance(optimizer, _FreezeByIteration):
        base = type(optimizer).__bases__[0]  # what fastreid's generated class wraps
        name = base.__name__ + "FrozenByIteration"
        optimizer.__class__ = type(name, (_FreezeByIteration, base), {})
    return optimizer


class ResumableLayerFreeze(LayerFreeze):
    """fastreid's LayerFreeze hook (frozen layers' BatchNorms in eval mode for the first
    FREEZE_ITERS iterations) that also switches the optimizer's freeze
    (`freeze_by_iteration`) by the trainer's iteration."""

    def before_step(self):
        super().before_step()
        self.trainer.optimizer.freeze_active = self.trainer.iter < self.freeze_iters


class _Fp32Losses:
    """For the duration of a step, `net.losses(outputs, targets)` (fast-reid's meta-archs
    call it at the end of their training forward) runs with autocast off on float32
    copies of the outputs; an instance attribute shadows the method, removed on exit."""

    def __init__(self, net, losses):
        self.net, self.losses = net, losses

    def __enter__(self):
        net, losses = self.net, self.losses

        def fp32_losses(outputs, *args, **kwargs):
            with torch.autocast("cpu", enabled=False):
                return losses(net, to_float32(outputs), *args, **kwargs)

        net.__dict__["losses"] = fp32_losses  # nn.Module.__setattr__ is not needed here
        return self

    def __exit__(self, *exc):
        self.net.__dict__.pop("losses", None)
        return False


class ClothesClassifierStep:
    """CAL's clothes classifier update (lastreid.modeling.cal): its own optimizer steps on
    `loss_clothes` in the middle of the model's forward pass, before `loss_cal` is computed
    with the updated weights (the reference's order). `installed(model, epoch)` puts it,
    and the run's epoch, in the model for one step.

    The backward pass here runs inside the forward pass of a DDP model, where DDP does not
    reduce gradients; with several processes the clothes classifier's gradients are
    averaged here, as DDP would."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def __call__(self, loss_clothes):
        self.optimizer.zero_grad(set_to_none=True)
        loss_clothes.backward()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad.div_(dist.get_world_size())
        self.optimizer.step()
        # Zeros, not None: the backward pass above marked the weights used for DDP, which
        # then reduces their gradient after the step's main backward pass (loss_cal reads
        # the weights without one, so these zeros stay zeros).
        self.optimizer.zero_grad(set_to_none=False)

    @contextlib.contextmanager
    def installed(self, model, epoch):
        net = getattr(model, "module", model)  # DDP
        net.epoch = int(epoch)
        net.__dict__["update_clothes_classifier"] = self  # shadows the method for one step
        try:
            yield
        finally:
            net.__dict__.pop("update_clothes_classifier", None)


def _clothes_step(trainer):
    step = getattr(trainer, "clothes_step", None)
    if step is None:
        return contextlib.nullcontext()
    return step.installed(trainer.model, getattr(trainer, "epoch", 0))


class CpuTrainer(SimpleTrainer):
    """fast-reid's SimpleTrainer with the forward pass under bf16 autocast (when on) and the
    batch in channels-last layout (when on); the losses, backward and the optimizer step
    run outside autocast, in float32 (see `fp32_losses`).

    Build it from an existing SimpleTrainer with `CpuTrainer.from_trainer(trainer, fast)`:
    that reuses the trainer's data-loader iterator instead of starting a second one. On
    CUDA without AMP (the fast path off there) it is fastreid's step with CAL's clothes
    step (`clothes_step`, set by the engine for a CAL model)."""

    clothes_step = None  # a ClothesClassifierStep for CAL models

    def __init__(
        self, model, data_loader, optimizer, param_wrapper, fast_path, data_loader_iter=None
    ):
        TrainerBase.__init__(self)
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter = iter(data_loader) if data_loader_iter is None else data_loader_iter
        self.optimizer = optimizer
        self.param_wrapper = param_wrapper
        self.fast_path = fast_path

    # The meta-architecture's `losses` run outside autocast on float32 head outputs. Under
    # bf16 autocast fast-reid's triplet loss builds its distances as |x|^2 + |y|^2 - 2 x.y
    # with a bf16 matmul, which loses most of the small distances (BoT R50, random
    # weights: triplet loss 2.40 instead of 1.64); the cross-entropy is unaffected.
    fp32_losses = True

    def _loss_precision(self):
        net = getattr(self.model, "module", self.model)  # DDP
        losses = getattr(type(net), "losses", None)
        if not (self.fast_path.bf16 and self.fp32_losses and callable(losses)):
            return contextlib.nullcontext()
        return _Fp32Losses(net, losses)

    @classmethod
    def from_trainer(cls, trainer, fast_path):
        new = cls(
            trainer.model,
            trainer.data_loader,
            trainer.optimizer,
            trainer.param_wrapper,
            fast_path,
            data_loader_iter=batch_iterator(trainer),
        )
        for attr in ("iter", "start_iter", "epoch"):
            if hasattr(trainer, attr):
                setattr(new, attr, getattr(trainer, attr))
        return new

    def run_step(self):
        assert self.model.training, "[CpuTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        data = channels_last_images(data, self.fast_path)
        with autocast(self.fast_path), self._loss_precision(), _clothes_step(self):
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


class CudaAMPTrainer(AMPTrainer):
    """fast-reid's AMPTrainer step (fp16 autocast on the forward pass and the losses, a
    GradScaler on the backward pass and the step) written with `torch.amp.autocast("cuda")`;
    fast-reid enters the deprecated `torch.cuda.amp.autocast()` on every step. Batches go
    channels-last when fast_path.channels_last.

    Build it with `CudaAMPTrainer.from_trainer(trainer, fast)` from fast-reid's AMPTrainer:
    it keeps that trainer's GradScaler (the object the checkpointer saves as `grad_scaler`)
    and data-loader iterator."""

    clothes_step = None  # a ClothesClassifierStep for CAL models

    @classmethod
    def from_trainer(cls, trainer, fast_path):
        new = cls.__new__(cls)
        TrainerBase.__init__(new)
        for attr in (
            "model",
            "data_loader",
            "_data_loader_iter",
            "optimizer",
            "param_wrapper",
            "grad_scaler",
            "iter",
            "start_iter",
            "epoch",
        ):
            if hasattr(trainer, attr):
                setattr(new, attr, getattr(trainer, attr))
        new.fast_path = fast_path
        return new

    def run_step(self):
        assert self.model.training, "[CudaAMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        data = channels_last_images(data, self.fast_path)
        with torch.amp.autocast("cuda", dtype=torch.float16), _clothes_step(self):
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
