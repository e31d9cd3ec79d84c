"""The shares of a distributed evaluation: `process_share` (a process's contiguous range of
the items, in rank order, as fastreid's InferenceSampler cuts them) and `gather_rows`
(those shares' feature rows into the main process's own preallocated buffer, a bounded
chunk at a time).

fastreid's `comm.gather` pickles its whole argument on the sender and receives every rank's
bytes, a copy of them and the unpickled objects on the receiver: gathering the 6.7 GB of
PCB's LaST test features at once would hold several copies of them. `gather_rows` sends
at most CHUNK_MB per process per round and writes each piece into place, so the main
process holds the features once plus a few chunks (docs/evaluation.md)."""

import numpy as np
import torch
from fastreid.utils import comm

__all__ = ["CHUNK_MB", "gather_rows", "process_share"]

CHUNK_MB = 32  # per process and round


def process_share(n, rank=None, world_size=None):
    """The contiguous range of n items of one process (as fastreid's InferenceSampler):
    in rank order the shares cover range(n) in order."""
    rank = comm.get_rank() if rank is None else rank
    world_size = comm.get_world_size() if world_size is None else world_size
    size = (n - 1) // world_size + 1 if n else 0
    return range(min(size * rank, n), min(size * (rank + 1), n))


def gather_rows(local, out=None, chunk_rows=None):
    """Every process's `local` rows (a 2-D float32 tensor or array; the processes' shares in
    rank order, the main process's first) on the main process, None on the others. Call it
    in every process.

    out: the main process's buffer (a tensor or array, at least the total rows) whose first
    rows already hold its own share; without it one is allocated (of `local`'s kind) and the
    share copied in. Returns out[:total]. chunk_rows: rows per process and round (default:
    CHUNK_MB worth)."""
    world = comm.get_world_size()
    if world == 1:
        return local
    shapes = comm.all_gather(tuple(local.shape))
    counts = [int(s[0]) for s in shapes]
    dim = max(int(s[1]) for s in shapes)
    total, main = sum(counts), comm.is_main_process()
    if main and out is None:
        shape = (total, dim)
        out = torch.empty(shape) if torch.is_tensor(local) else np.empty(shape, np.float32)
        out[: counts[0]] = local
    if main and out.shape[0] < total:
        raise ValueError(f"gather_rows: a buffer of {out.shape[0]} rows for {total}")
    step = chunk_rows or max(1, CHUNK_MB * 2**20 // (4 * max(dim, 1)))
    offsets = np.cumsum([0] + counts)
    for start in range(0, max(counts), step):
        # The main process's own rows are in place already: it sends nothing.
        pieces = comm.gather(local[:0] if main else local[start : start + step], dst=0)
        for rank in range(1, world) if main else ():
            part = pieces[rank]
            at = int(offsets[rank]) + start
            out[at : at + len(part)] = part
    return out[:total] if main else None
