"""One job on several processes: torchrun (env://), or fastreid's own launch on CUDA.

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT in the
environment, one process per GPU or CPU worker) `launch` joins the job from inside the
process: `init_process_group("env://")` with gloo on the CPU and NCCL on CUDA (after
`torch.cuda.set_device(LOCAL_RANK)`), a timeout on every collective
(DISTRIBUTED.TIMEOUT_MINUTES, so a peer that is gone ends the process instead of blocking
it forever), and fastreid's per-machine group (`fastreid_internals.set_local_process_group`),
which `comm.get_local_rank()` asserts and which only fastreid's own launch sets.

Without torchrun, `--num-gpus / --num-machines / --dist-url` go to fastreid's launch
unchanged (it spawns one NCCL process per GPU and asserts CUDA); on the CPU more than one
process stops with one line pointing to torchrun.

`check_batch_split(cfg, world_size)` is the per-process batch rule every run is checked
against (before launching and again when the train loader is built);
`check_training_set` the sizes of the training set once it is read, before the first step.
"""

import datetime
import logging
import os
import socket

import torch
import torch.distributed as dist
from fastreid.engine import launch as fastreid_launch
from fastreid.utils import comm

from .errors import ConfigError
from .fastreid_internals import set_local_process_group

logger = logging.getLogger(__name__)

__all__ = [
    "launch",
    "check_launch",
    "under_torchrun",
    "init_from_env",
    "finish",
    "env_rank",
    "expected_world_size",
    "check_batch_split",
    "check_identities_per_batch",
    "check_training_set",
    "largest_batch",
    "IDENTITY_SAMPLERS",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# fastreid's samplers that put NUM_INSTANCE images of each identity in a process's batch.
IDENTITY_SAMPLERS = ("NaiveIdentitySampler", "BalancedIdentitySampler", "SetReWeightSampler")
# Those that need SOLVER.IMS_PER_BATCH / NUM_INSTANCE identities for a step (SetReWeightSampler
# draws per camera set and fails on its own).
IDENTITIES_PER_STEP_SAMPLERS = ("NaiveIdentitySampler", "BalancedIdentitySampler")
TORCHRUN_HINT = (
    "python -m torch.distributed.run --standalone --nproc-per-node N tools/train_net.py ..."
)


def under_torchrun(environ=None):
    """True when torchrun (or any env:// launcher, e.g. a SLURM script) started this process."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in _TORCHRUN_VARS)


def env_rank(environ=None):
    """This process's rank as the launcher set it (0 outside torchrun), usable before the
    process group exists (e.g. to keep other processes' logs off the console)."""
    environ = os.environ if environ is None else environ
    return int(environ.get("RANK", 0)) if under_torchrun(environ) else 0


def _on_cuda(device):
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def expected_world_size(args=None, environ=None):
    """The number of processes the job will have: WORLD_SIZE under torchrun, else
    --num-gpus x --num-machines (1 without args)."""
    environ = os.environ if environ is None else environ
    if under_torchrun(environ):
        return int(environ["WORLD_SIZE"])
    if args is None:
        return 1
    return max(1, int(getattr(args, "num_gpus", 1))) * max(1, int(getattr(args, "num_machines", 1)))


def check_batch_split(cfg, world_size):
    """Raises ConfigError (one line, naming the keys) unless SOLVER.IMS_PER_BATCH splits
    evenly over the processes and, for the identity samplers, NUM_INSTANCE divides each
    process's share (fastreid's samplers would otherwise loop forever looking for a
    batch of the right size). Returns the per-process batch."""
    total, k = int(cfg.SOLVER.IMS_PER_BATCH), int(cfg.DATALOADER.NUM_INSTANCE)
    if world_size < 1 or total % world_size or total < world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH {total} does not split over {world_size} "
            f"processes: use a multiple of {world_size}"
        )
    per_process = total // world_size
    if cfg.DATALOADER.SAMPLER_TRAIN in IDENTITY_SAMPLERS and (k < 1 or per_process % k):
        raise ConfigError(
            f"DATALOADER.NUM_INSTANCE {k} does not divide the per-process batch "
            f"{per_process} (SOLVER.IMS_PER_BATCH {total} / {world_size} "
            f"processes): use a multiple of {k * world_size}"
        )
    return per_process


def largest_batch(cfg, num_identities, world_size=1, num_images=None):
    """The largest SOLVER.IMS_PER_BATCH that `world_size` processes can train on a set of
    `num_identities` (and `num_images`, if given) with: a multiple of the processes (for
    the identity samplers, of NUM_INSTANCE per process), no more than the images (fastreid's
    epoch is len(train) // IMS_PER_BATCH steps) and, for the Naive and Balanced identity
    samplers, no more identities a step than the set has. 0 when there is none."""
    sampler, k = cfg.DATALOADER.SAMPLER_TRAIN, int(cfg.DATALOADER.NUM_INSTANCE)
    unit = world_size * (k if sampler in IDENTITY_SAMPLERS else 1)
    largest = None if num_images is None else num_images // unit * unit
    if sampler in IDENTITIES_PER_STEP_SAMPLERS:
        by_identities = num_identities // world_size * world_size * k
        largest = by_identities if largest is None else min(largest, by_identities)
    return largest


def _use_instead(largest):
    return f"use SOLVER.IMS_PER_BATCH {largest} or less" if largest else "use more data"


def check_identities_per_batch(cfg, num_identities, names, world_size=1):
    """Raises ConfigError (one line) when the training set `names` has fewer identities than
    one step of fastreid's Naive or Balanced identity sampler takes (SOLVER.IMS_PER_BATCH /
    NUM_INSTANCE over all processes): those samplers would spin forever without a batch."""
    if cfg.DATALOADER.SAMPLER_TRAIN not in IDENTITIES_PER_STEP_SAMPLERS:
        return
    total, k = int(cfg.SOLVER.IMS_PER_BATCH), int(cfg.DATALOADER.NUM_INSTANCE)
    if num_identities < total // k:
        raise ConfigError(
            f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN} takes {total // k} "
            f"identities a step (SOLVER.IMS_PER_BATCH {total} / DATALOADER.NUM_INSTANCE {k}) "
            f"but the training set ({', '.join(names)}) has {num_identities}: "
            + _use_instead(largest_batch(cfg, num_identities, world_size))
        )


def check_training_set(cfg, num_images, num_identities, names, world_size=1):
    """Raises ConfigError (one line naming the keys and, for the batch, the largest that
    works) when the training set `names` is too small for `cfg`: fewer images than one
    batch (fastreid's epoch would have no step and its scheduler divides by the steps),
    fewer identities than one step of an identity sampler takes (it would spin forever),
    or than MODEL.HEADS.NUM_CLASSES leaves classes for (a label would be out of range)."""
    total, where = int(cfg.SOLVER.IMS_PER_BATCH), f"the training set ({', '.join(names)})"
    if num_images < total:
        largest = largest_batch(cfg, num_identities, world_size, num_images)
        multiple = ""
        if largest and cfg.DATALOADER.SAMPLER_TRAIN in IDENTITY_SAMPLERS:
            multiple = f", a multiple of DATALOADER.NUM_INSTANCE {cfg.DATALOADER.NUM_INSTANCE}"
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH {total} is more than the {num_images} images of {where}: "
            f"an epoch ({num_images} // {total} steps) would have no step; "
            + _use_instead(largest)
            + multiple
        )
    check_identities_per_batch(cfg, num_identities, names, world_size)
    classes = int(cfg.MODEL.HEADS.NUM_CLASSES)
    if 0 < classes < num_identities:
        raise ConfigError(
            f"MODEL.HEADS.NUM_CLASSES {classes} is fewer than the {num_identities} identities "
            f"of {where}: use 0 (taken from the training set) or {num_identities} or more"
        )


def _join_local_process_group():
    """fastreid's local process group (`fastreid_internals.set_local_process_group`): the
    processes on this machine. torchrun
    numbers the ranks of one node contiguously and says which node (GROUP_RANK); any other
    env:// launcher is grouped by host name."""
    node = os.environ.get("GROUP_RANK") or socket.gethostname()
    nodes = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    mine = None
    for key in dict.fromkeys(nodes):  # every process creates every group, in one order
        group = dist.new_group([rank for rank, n in enumerate(nodes) if n == key])
        if key == node:
            mine = group
    set_local_process_group(mine)
    local_rank = int(os.environ["LOCAL_RANK"])
    if dist.get_rank(group=mine) != local_rank:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} is not this process's place among the "
            f"ranks of its machine ({nodes}): start one launcher per machine"
        )


def init_from_env(cfg):
    """Joins the torchrun job of this process (see the module docstring); a no-op outside
    torchrun or when the process group already exists. Returns the world size."""
    if not under_torchrun() or dist.is_initialized():
        return comm.get_world_size()
    cuda = _on_cuda(cfg.MODEL.DEVICE)
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    timeout = datetime.timedelta(minutes=float(cfg.DISTRIBUTED.TIMEOUT_MINUTES))
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", timeout=timeout)
    _join_local_process_group()
    return dist.get_world_size()


def finish():
    """Ends this process's part of a torchrun job started by `init_from_env`: waits for the
    others (the main process may still be writing), then leaves the process group."""
    if dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()


def check_launch(args, cfg):
    """Raises ConfigError (one line) for a launch that cannot work: the batch split
    (`check_batch_split`), fastreid's process flags under torchrun, several processes on
    the CPU without torchrun."""
    world = expected_world_size(args)
    check_batch_split(cfg, world)
    if under_torchrun():
        if args.num_gpus > 1 or args.num_machines > 1:
            raise ConfigError(
                "under torchrun, leave out --num-gpus / --num-machines: "
                "torchrun's --nproc-per-node / --nnodes set the processes"
            )
    elif world > 1 and not _on_cuda(cfg.MODEL.DEVICE):
        raise ConfigError(
            f"{world} processes (--num-gpus x --num-machines) need CUDA "
            f"(MODEL.DEVICE is {cfg.MODEL.DEVICE}); on the CPU start them with "
            f"torchrun: {TORCHRUN_HINT}"
        )


def launch(main_func, args, cfg):
    """Runs `main_func(args)` in every process of the job that `args` (fastreid's
    --num-gpus / --num-machines / --machine-rank / --dist-url) and the environment ask for,
    after `check_launch`, and returns what it returns (None from fastreid's multi-process
    launch)."""
    check_launch(args, cfg)
    if under_torchrun():
        init_from_env(cfg)
        results = main_func(args)
        finish()
        return results
    return fastreid_launch(
        main_func,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
