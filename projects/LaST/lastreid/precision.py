"""The precision path of a run (docs/performance.md): channels-last weights and batches,
bfloat16 autocast for CPU training, float32 evaluation unless MODEL.CPU_BF16 is "on" (then a
frozen, BatchNorm-folded bf16 copy, `for_inference`), and fast-reid's fp16 AMP on CUDA
through `torch.amp`. `resolve` decides the path from the config and says why in one line;
`CpuTrainer` and `CudaAMPTrainer` are the training steps `lastreid.engine.Trainer` installs.
"""

import contextlib
import copy
import logging
import os
from dataclasses import dataclass
from functools import lru_cache

import torch
from fastreid.modeling.backbones.resnet import BasicBlock, Bottleneck, ResNet
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "FastPath",
    "autocast",
    "channels_last_images",
    "to_float32",
    "cpu_bf16_support",
    "cpu_bf16_probe",
    "fold_batchnorm_",
    "for_inference",
    "guard_one_column_convs_",
    "prepare_model",
    "resolve",
]

CHOICES = ("auto", "on", "off")
# Instruction sets that run bfloat16 arithmetic natively (oneDNN uses them for bf16
# convolutions and matrix products); without them bf16 is emulated and slower than fp32.
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class FastPath:
    """Which fast path a run takes. `reason` says why, for the log."""

    channels_last: bool
    bf16: bool
    reason: str = ""

    @property
    def name(self):
        parts = (["channels-last"] if self.channels_last else []) + (
            ["bf16 autocast"] if self.bf16 else []
        )
        return " + ".join(parts) if parts else "fp32"

    def __str__(self):
        return "{} ({})".format(self.name, self.reason) if self.reason else self.name


FP32 = FastPath(False, False, "plain float32")


# Set to 0 or 1 to make `cpu_bf16_support` answer as on a CPU without / with native bf16
# (the test suite and the docs' figures can then be checked for both kinds of CPU on one).
NATIVE_BF16_ENV = "LASTREID_NATIVE_BF16"


def cpu_bf16_support():
    """(supported, how it was found): whether this CPU runs bfloat16 natively, as
    LASTREID_NATIVE_BF16 (0 or 1) says when it is set, else as `cpu_bf16_probe` finds.
    Raises ConfigError for another value of LASTREID_NATIVE_BF16."""
    value = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if not value:
        return cpu_bf16_probe()
    if value not in ("0", "1"):
        raise ConfigError(
            "{} is {!r}: expected 0 (as a CPU without native bf16), 1 (with it) or "
            "unset (ask the CPU)".format(NATIVE_BF16_ENV, value)
        )
    return value == "1", "{}={} says the CPU {} native bf16".format(
        NATIVE_BF16_ENV, value, "has" if value == "1" else "has no"
    )


@lru_cache(None)
def cpu_bf16_probe():
    """(supported, how it was found): whether this CPU has native bfloat16 instructions.

    Asks torch's own cpuinfo-based probe (`torch.cpu.get_capabilities`) and falls back to
    the flags of /proc/cpuinfo when this torch has no such probe."""
    if not torch.backends.mkldnn.is_available():
        return False, "torch built without oneDNN"
    caps = None
    get_caps = getattr(torch.cpu, "get_capabilities", None)
    if get_caps is not None:
        try:
            caps = dict(get_caps())
        except Exception:  # an unexpected probe failure is "unknown", not a crash
            caps = None
    if caps is not None:
        found = [f for f in _NATIVE_BF16_FLAGS if caps.get(f)]
        source = "torch.cpu.get_capabilities"
    else:
        flags = set()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("flags"):
                        flags.update(line.split(":", 1)[1].split())
        except OSError:
            return False, "CPU features unknown (no torch probe, no /proc/cpuinfo)"
        found = [f for f in _NATIVE_BF16_FLAGS if f in flags]
        source = "/proc/cpuinfo"
    if found:
        return True, "CPU has {} ({})".format("/".join(found), source)
    return False, "CPU has no native bf16 ({})".format(source)


def _choice(cfg, key):
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    if isinstance(value, str) and value.strip().lower() in CHOICES:
        return value.strip().lower()
    raise ConfigError(
        "{} must be one of {}, got {!r}".format(key, ", ".join('"%s"' % c for c in CHOICES), value)
    )


def resolve(cfg, log=True, training=False):
    """The FastPath for cfg (MODEL.DEVICE, MODEL.CHANNELS_LAST, MODEL.CPU_BF16), for the
    training step (training=True) or for evaluation / inference (the default).

    Under MODEL.CPU_BF16 "auto" only CPU training takes bf16; evaluation stays float32.
    Raises ValueError naming the key for a value other than auto/on/off. With log=True,
    logs the path taken as one line on the `lastreid.precision` logger."""
    cl, bf = _choice(cfg, "MODEL.CHANNELS_LAST"), _choice(cfg, "MODEL.CPU_BF16")
    settings = "MODEL.CHANNELS_LAST={}, MODEL.CPU_BF16={}".format(cl, bf)
    device = torch.device(cfg.MODEL.DEVICE).type
    if device != "cpu":
        why = [
            "{}: MODEL.CPU_BF16 is for the CPU (fp16 AMP is SOLVER.AMP.ENABLED={})".format(
                device, bool(cfg.SOLVER.AMP.ENABLED)
            )
        ]
        if cl == "auto":
            why.append("channels-last off under auto on {}".format(device))
        fast = FastPath(cl == "on", False, "; ".join([settings] + why))
    else:
        native, how = cpu_bf16_support()
        use_cl = cl == "on" or (cl == "auto" and native)
        use_bf = bf == "on" or (bf == "auto" and native and training)
        why = [settings, how]
        if bf == "auto" and native and not training:
            why.append(
                "evaluation in float32 under auto, so the numbers do not depend on "
                "the CPU (MODEL.CPU_BF16 on for bf16 inference)"
            )
        if use_bf and not native:
            why.append("bf16 forced on without native support: expect it to be slow")
        fast = FastPath(use_cl, use_bf, "; ".join(why))
    if log:
        logger.info("Precision path (%s): %s", "training" if training else "evaluation", fast)
    return fast


def autocast(fast_path):
    """bfloat16 CPU autocast when fast_path.bf16, else a context that does nothing."""
    if fast_path.bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model, fast_path):
    """Puts the model's weights in channels-last layout when fast_path.channels_last (in
    place; returns the model). Loading a state dict later keeps the layout."""
    if fast_path.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def channels_last_images(data, fast_path):
    """The batch with its "images" tensor in channels-last layout (when asked for)."""
    if fast_path.channels_last and isinstance(data, dict):
        images = data.get("images")
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            data["images"] = images.contiguous(memory_format=torch.channels_last)
    return data


def to_float32(out):
    """`out` (a tensor, or a dict / list / tuple of them) with floating tensors in float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, dict):
        return type(out)((k, to_float32(v)) for k, v in out.items())
    if isinstance(out, (list, tuple)):
        return type(out)(to_float32(v) for v in out)
    return out


class AutocastModel(torch.nn.Module):
    """Runs `model` under the fast path's autocast and returns float32 outputs.

    `eval()`/`train()` reach the wrapped model. Meant for inference: fast-reid's
    `inference_on_dataset` averages the flipped and unflipped features in float32 and the
    evaluator gets float32, while its distances run outside autocast."""

    def __init__(self, model, fast_path):
        super().__init__()
        self.model = model
        self.fast_path = fast_path
        self.training = model.training

    def forward(self, *args, **kwargs):
        with autocast(self.fast_path):
            out = self.model(*args, **kwargs)
        return to_float32(out)


def _one_column_output(conv, shape):
    """True when `conv` (strided) maps an input of `shape` to a map one column wide and
    more than one row high: the shapes torch 2.14's CPU bfloat16 convolution gets wrong."""
    h, w = shape[-2], shape[-1]
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    (ph, pw), (dh, dw) = conv.padding, conv.dilation
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return max(sh, sw) > 1 and out_w == 1 and out_h > 1


class OneColumnSafeConv2d(torch.nn.Conv2d):
    """A Conv2d that runs in float32 where torch 2.14's CPU bfloat16 convolution (oneDNN,
    both memory layouts) returns wrong values or NaN: a strided convolution whose output is
    one column wide and several rows high (e.g. a stride-2 ResNet layer4 on 64x32 inputs,
    the paper's MGN's global branch; measured relative errors 0.7 to 1e37 against float32).
    Everywhere else it is a Conv2d: same parameters, same state dict."""

    def _conv_forward(self, input, weight, bias):
        lowered = input.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")
        if lowered and input.device.type == "cpu" and _one_column_output(self, input.shape):
            bias = None if bias is None else bias.float()
            with torch.autocast("cpu", enabled=False):
                return super()._conv_forward(input.float(), weight.float(), bias)
        return super()._conv_forward(input, weight, bias)


def guard_one_column_convs_(model):
    """Makes every strided Conv2d of `model` a `OneColumnSafeConv2d`, in place (the class
    changes, nothing else); returns how many. Only bf16 runs on the CPU take the float32
    branch, and only at the shapes it names."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Conv2d and max(module.stride) > 1:
            module.__class__ = OneColumnSafeConv2d
            count += 1
    return count


def fold_batchnorm_(model):
    """Folds, in place, each BatchNorm that directly follows a convolution into it, using
    the running statistics, and returns how many were folded. Only for a model that stays in
    eval mode from then on.

    Two places say a BatchNorm directly follows a convolution: fast-reid's ResNet and its
    blocks (`convK` feeds `bnK`; also a ResNet cut short, as the paper's MGN shares one), and
    any Sequential holding a Conv2d and then a BatchNorm (downsample branches, deep copies
    of ResNet stages in branch heads, the Conv1x1-BN-ReLU reductions of the part models,
    a non-local block's output). Folding leaves the eval-mode function unchanged up to float
    rounding; IBN and other norms that are not a plain BatchNorm are left alone."""
    folded = 0
    for module in list(model.modules()):
        pairs = []  # (owner, conv name, norm name)
        if isinstance(module, (BasicBlock, Bottleneck, ResNet)):
            pairs = [(module, "conv%d" % k, "bn%d" % k) for k in (1, 2, 3)]
        elif isinstance(module, torch.nn.Sequential):
            names = [name for name, _ in module.named_children()]
            pairs = [(module, a, b) for a, b in zip(names, names[1:])]
        for owner, conv_name, bn_name in pairs:
            conv, bn = getattr(owner, conv_name, None), getattr(owner, bn_name, None)
            if not (isinstance(conv, torch.nn.Conv2d) and _is_plain_batchnorm(bn)):
                continue
            setattr(owner, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
            setattr(owner, bn_name, torch.nn.Identity())
            folded += 1
    return folded


def _is_plain_batchnorm(module):
    return (
        isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        and module.running_mean is not None
        and module.running_var is not None
    )


def for_inference(model, fast_path):
    """The model to run inference with on `fast_path`.

    fp32 path: `model` itself. bf16 path: a frozen copy in eval mode, its ResNet
    BatchNorms folded into the convolutions (`fold_batchnorm_`) and its convolution weights
    stored in bfloat16, run under autocast with float32 outputs (`AutocastModel`). That is
    about 1.15x faster than autocast on the model as it is (BoT R50 on a 2-core AVX512-BF16
    CPU, benchmarks/cpu_throughput.py), with features as close to fp32. The copy does not
    follow later changes of `model`: make a new one after training on."""
    if not fast_path.bf16:
        return model
    frozen = copy.deepcopy(getattr(model, "module", model)).eval()  # DDP: its module
    frozen.requires_grad_(False)
    fold_batchnorm_(frozen)
    for module in frozen.modules():
        if isinstance(module, torch.nn.Conv2d):  # autocast hands them bf16 inputs
            module.to(torch.bfloat16)
    return AutocastModel(prepare_model(frozen, fast_path), fast_path)
