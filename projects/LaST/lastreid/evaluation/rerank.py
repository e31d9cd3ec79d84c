"""Feature / distance post-processing of fastreid's ReidEvaluator, CPU-safe and sized.

- `blocked_aqe`: fastreid's `aqe` (TEST.AQE) without its (N x N) similarity matrix, which
  at LaST test scale (N = 135,529) would be 73 GB; rows of similarities are computed one
  block at a time. Peak extra memory: two more copies of the features plus one block.
- `rerank_distmat`: fastreid's k-reciprocal re-ranking (TEST.RERANK) through its own
  `compute_jaccard_distance`, which builds several dense (N x N) float32 matrices. It stays
  full-matrix (usable on small galleries only, with a logged estimate of its memory);
  fastreid's `build_dist(..., "jaccard")` hard-codes a CUDA search, so on CPU we call
  the jaccard code with its CPU faiss search (search_option=3).
"""

import logging

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["blocked_aqe", "rerank_distmat", "rerank_memory_gb"]


@torch.no_grad()
def blocked_aqe(all_feat, num_query, qe_times=1, qe_k=10, alpha=3.0, memory_mb=512):
    """fastreid.evaluation.query_expansion.aqe on `all_feat` = cat(query, gallery) (float32,
    (N, dim)); returns new (query, gallery) float32 tensors. Neighbours are the qe_k most
    similar items (itself included) by cosine similarity, in descending order."""
    feat = torch.as_tensor(all_feat, dtype=torch.float32).numpy()
    n = feat.shape[0]
    rows = max(1, int(memory_mb * 2**20) // (4 * (n + qe_k * feat.shape[1])))
    logger.info(
        "AQE on %d items in blocks of %d rows (%.1f GB of feature copies)",
        n,
        rows,
        2 * feat.nbytes / 1e9,
    )
    norm = F.normalize(torch.from_numpy(feat), p=2, dim=1)
    for _ in range(qe_times):
        new = np.empty_like(feat)
        for s in range(0, n, rows):
            sims = torch.mm(norm[s : s + rows], norm.t())
            vals, idx = torch.topk(sims, qe_k, dim=1)
            weights = np.power(vals.numpy(), alpha)[:, :, None]
            new[s : s + rows] = np.mean(feat[idx.numpy()] * weights, axis=1)
            del sims
        feat = new
        norm = F.normalize(torch.from_numpy(feat), p=2, dim=1)
    del norm
    out = torch.from_numpy(feat)
    return out[:num_query], out[num_query:]


def rerank_memory_gb(num_query, num_gallery):
    """Rough peak of fastreid's jaccard re-ranking: two dense (N x N) float32 matrices at
    once inside compute_jaccard_distance, plus three (num_query x num_gallery) ones."""
    n = num_query + num_gallery
    return (2 * n * n + 3 * num_query * num_gallery) * 4 / 1e9


@torch.no_grad()
def rerank_distmat(query_feat, gallery_feat, dist, k1=20, k2=6, lambda_value=0.3):
    """fastreid's re-ranked distance `jaccard * (1 - lambda) + dist * lambda`.

    query_feat / gallery_feat: as fastreid feeds the jaccard code (already L2-normalized
    for the cosine metric). dist: the original (num_query, num_gallery) float32 distances.
    """
    # Here: compute_dist imports faiss, which only re-ranking needs (see evaluation/__init__).
    from fastreid.utils.compute_dist import compute_jaccard_distance

    nq, ng = query_feat.shape[0], gallery_feat.shape[0]
    logger.warning(
        "TEST.RERANK is full-matrix: about %.1f GB for %d queries x %d gallery "
        "items (N x N jaccard matrices, N = %d)",
        rerank_memory_gb(nq, ng),
        nq,
        ng,
        nq + ng,
    )
    feat = torch.cat((query_feat, gallery_feat), dim=0).float()
    # fastreid's build_dist uses the CUDA search (0), which needs faiss-gpu; 3 = CPU faiss.
    option = 0 if torch.cuda.is_available() and _faiss_has_gpu() else 3
    jaccard = compute_jaccard_distance(feat, k1=k1, k2=k2, search_option=option)[:nq, nq:]
    return jaccard * (1 - lambda_value) + np.asarray(dist) * lambda_value


def _faiss_has_gpu():
    import faiss  # loaded by compute_jaccard_distance's module already

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
