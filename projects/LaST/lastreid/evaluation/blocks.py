"""Query x gallery distances one block of queries at a time, never the full matrix: cosine
or euclidean with the same torch operations as `fastreid.utils.compute_dist`, in float32.
Queries and gallery chunks are normalised into reused buffers, so the caller's features are
never modified or copied whole (docs/evaluation.md)."""

import copy

import numpy as np
import torch

__all__ = ["DistanceBlocks", "METRICS", "auto_block_size", "normalize_rows_"]

METRICS = ("cosine", "euclidean")  # TEST.METRIC: the distances DistanceBlocks computes


def auto_block_size(num_gallery, memory_mb=512, num_query=None):
    """Queries per block so that one float32 block of distances fits in `memory_mb` MB
    (a multiple of 64 when possible, which suits the BLAS kernels)."""
    rows = int(memory_mb * 2**20) // (4 * max(int(num_gallery), 1))
    if rows >= 64:
        rows -= rows % 64
    rows = max(rows, 1)
    return min(rows, num_query) if num_query else rows


_GALLERY_CHUNK = 2048  # gallery rows per product call: their float32 (normalised) copy is one
# reused buffer (16 MB at 2048-d) that stays in cache for the product; measured as fast as one
# product over the whole gallery, and bit-identical to it with this machine's BLAS.


@torch.no_grad()
def normalize_rows_(x, chunk=8192):
    """In-place `F.normalize(x, dim=1)` (bit-identical to it), chunk by chunk."""
    for s in range(0, x.shape[0], chunk):
        c = x[s : s + chunk]
        c.div_(c.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12).expand_as(c))
    return x


def _is_cpu_f32(t):
    return t.dtype == torch.float32 and t.device.type == "cpu"


@torch.no_grad()
def _row_reduce(x, reduce, chunk=8192):
    """float32 CPU vector of `reduce(rows)` over float32 CPU copies of `x`'s rows, chunk by
    chunk. Row reductions do not depend on how many rows are reduced together, so this is
    bit-identical to `reduce(x.float())`."""
    out = torch.empty(x.shape[0], dtype=torch.float32)
    for s in range(0, x.shape[0], chunk):
        out[s : s + chunk] = reduce(x[s : s + chunk].to("cpu", torch.float32))
    return out


def _l2_denominators(x):
    # What F.normalize divides by: the row norm, clamped at its eps.
    return _row_reduce(x, lambda c: c.norm(p=2, dim=1).clamp_min(1e-12))


def _squared_norms(x):
    # fastreid's compute_dist: torch.pow(x, 2).sum(dim=1).
    return _row_reduce(x, lambda c: torch.pow(c, 2).sum(dim=1))


def _float32_rows(x, start, end, denominators, buf):
    """Rows start:end of `x` as float32 on the CPU, divided by their `denominators` (None:
    as they are). A view of `x` when no work is needed, else written into `buf`, so the
    caller's array is never modified."""
    part = x[start:end]
    if denominators is None:
        return part if _is_cpu_f32(part) else buf[: end - start].copy_(part)
    den = denominators[start:end, None]
    if _is_cpu_f32(part):
        return torch.div(part, den, out=buf[: end - start])
    return buf[: end - start].copy_(part).div_(den)


class DistanceBlocks:
    """Re-iterable source of query x gallery distance blocks: yields `(start, block)` with
    `block` a float32 numpy array of rows `start:start + len(block)`. A block is only
    valid until the next one is requested (one buffer is reused).

    Memory: the caller's features, one block and two small buffers. The inputs (tensors on
    any device, or arrays, of any float dtype) are read, never copied whole nor modified:
    each block normalises (cosine) / casts its queries and, one gallery chunk at a time,
    the gallery into reused buffers, with the same float32 operations as `F.normalize`
    and fastreid's `compute_dist`. `overwrite=True` lets float32 CPU inputs be normalised
    in place once instead (the evaluator does this with its own buffer; the distances are
    the same).
    """

    def __init__(
        self, query, gallery, metric="cosine", block_size=0, memory_mb=512, overwrite=False
    ):
        if metric not in METRICS:
            raise ValueError("metric must be one of {}, got {!r}".format(METRICS, metric))
        q, g = torch.as_tensor(query), torch.as_tensor(gallery)
        if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
            raise ValueError(
                "query and gallery features must be (n, dim) with the same dim, "
                "got {} and {}".format(tuple(q.shape), tuple(g.shape))
            )
        self.metric, self._q, self._g, self._distmat = metric, q, g, None
        self._q_den = self._g_den = self._qq = self._gg = None
        if metric == "cosine":
            self._q_den = self._prepare_cosine(q, overwrite)
            self._g_den = self._prepare_cosine(g, overwrite)
        else:
            self._qq, self._gg = _squared_norms(q), _squared_norms(g)
        self._init_sizes(q.shape[0], g.shape[0], block_size, memory_mb)

    @staticmethod
    def _prepare_cosine(x, overwrite):
        """None once `x` is normalised in place (allowed and possible), else the
        denominators to normalise its rows with on the fly."""
        if overwrite and _is_cpu_f32(x):
            normalize_rows_(x)
            return None
        return _l2_denominators(x)

    @classmethod
    def from_distmat(cls, distmat, block_size=0, memory_mb=512):
        """Blocks of rows of a precomputed (num_query, num_gallery) distance matrix."""
        self = cls.__new__(cls)
        self.metric, self._distmat = "precomputed", distmat
        self._init_sizes(distmat.shape[0], distmat.shape[1], block_size, memory_mb)
        return self

    def _init_sizes(self, nq, ng, block_size, memory_mb):
        self.num_query, self.num_gallery = int(nq), int(ng)
        bs = int(block_size) if block_size and block_size > 0 else auto_block_size(ng, memory_mb)
        self.block_size = max(1, min(bs, max(self.num_query, 1)))
        self.num_blocks = -(-self.num_query // self.block_size)

    def subset(self, query_index):
        """Blocks of the distances of the queries `query_index` only (in that order): a
        copy of those query rows, the gallery shared with this object."""
        if self._distmat is not None:
            raise ValueError("subset() of precomputed distances: index the matrix instead")
        idx = torch.as_tensor(np.asarray(query_index, dtype=np.int64))
        sub = copy.copy(self)
        sub._q = self._q.index_select(0, idx.to(self._q.device))
        for name in ("_q_den", "_qq"):
            if getattr(self, name) is not None:
                setattr(sub, name, getattr(self, name).index_select(0, idx))
        sub._init_sizes(idx.numel(), self.num_gallery, self.block_size, 0)
        return sub

    @torch.no_grad()
    def __iter__(self):
        if self._distmat is not None:
            for s in range(0, self.num_query, self.block_size):
                block = self._distmat[s : s + self.block_size]
                if isinstance(block, torch.Tensor):
                    block = block.cpu().numpy()
                yield s, np.asarray(block, dtype=np.float32)
            return
        dim, ng = self._g.shape[1], self.num_gallery
        buf = torch.empty((self.block_size, ng), dtype=torch.float32)
        q_buf = torch.empty((self.block_size, dim), dtype=torch.float32)
        g_buf = torch.empty((min(_GALLERY_CHUNK, ng), dim), dtype=torch.float32)
        for s in range(0, self.num_query, self.block_size):
            e = min(s + self.block_size, self.num_query)
            qb = _float32_rows(self._q, s, e, self._q_den, q_buf)
            out = buf[: e - s]
            for c in range(0, ng, _GALLERY_CHUNK):
                c1 = min(c + _GALLERY_CHUNK, ng)
                gb = _float32_rows(self._g, c, c1, self._g_den, g_buf)
                part = out[:, c:c1]  # a strided view: the product writes into it directly
                if self.metric == "cosine":
                    torch.mm(qb, gb.t(), out=part)
                else:
                    torch.add(self._qq[s:e, None], self._gg[None, c:c1], out=part)
                    part.addmm_(qb, gb.t(), beta=1, alpha=-2)
            if self.metric == "cosine":
                out.neg_().add_(1.0)  # == 1 - sim, bit for bit
            yield s, out.numpy()
