"""`BlockedReidEvaluator`: fastreid's ReidEvaluator with bounded memory and exact metrics.

Drop-in for `fastreid.evaluation.ReidEvaluator` (same `process(inputs, outputs)` contract
and result keys), but:
- features go into ONE preallocated float32 buffer (num_items x dim, allocated on the first
  batch, grown geometrically when num_items is unknown or exceeded), pids/camids likewise;
  with several processes the main process gathers the others' shares into it a chunk at a
  time (`lastreid.gather`), so it never holds the features twice;
- distances and metrics are computed one query block at a time (`lastreid.evaluation.rank`,
  block size TEST.QUERY_BLOCK_SIZE or from TEST.EVAL_MEMORY_MB), exact, ties broken by
  gallery order;
- with `clothes_protocols` ("CC", "SC": a dataset's CLOTHES_PROTOCOLS) and the clothes ids
  of all items (query then gallery, dataset order; given at construction, never batched:
  the gathered items are in dataset order), it also reports the clothes-changing / same-
  clothes metrics `CC-Rank-1`, `CC-Rank-5`, `CC-Rank-10`, `CC-mAP`, `CC-mINP` (`SC-...`),
  from the same distance blocks and ranks (`lastreid.evaluation.rank`);
- TEST.AQE runs blockwise, TEST.RERANK stays full-matrix (with a memory warning) and works
  on CPU, TEST.ROC gives fastreid's TPR@FPR keys from counts (a second pass of blocks).

`evaluate()` normalizes the stored features in place (cosine) instead of copying them; its
results are cached, and `reset()` must be called before processing a new dataset.
"""

import copy
import logging
import time
from collections import OrderedDict

import numpy as np
import torch
from fastreid.evaluation.evaluator import DatasetEvaluator
from fastreid.utils import comm

from ..gather import gather_rows
from .blocks import DistanceBlocks
from .rank import blocked_metrics, clothes_aware_protocols
from .rerank import blocked_aqe, rerank_distmat

logger = logging.getLogger(__name__)

__all__ = ["BlockedReidEvaluator"]

_ROC_FPRS = (1e-4, 1e-3, 1e-2)


class BlockedReidEvaluator(DatasetEvaluator):
    def __init__(
        self, cfg, num_query, output_dir=None, num_items=None, clothes=None, clothes_protocols=()
    ):
        self.cfg = cfg
        self._num_query = int(num_query)
        self._output_dir = output_dir
        self._num_items = int(num_items) if num_items else None
        # The protocols beyond the general one, and the clothes id of every item (query
        # then gallery) they need; a dataset without clothes labels has clothes None.
        self._protocols = clothes_aware_protocols(clothes_protocols)
        self._clothes = None if clothes is None else _to_numpy(clothes).astype(np.int64)
        if self._protocols and self._clothes is None:
            raise ValueError(
                "the {} protocol(s) need the clothes ids of the query and gallery items "
                "(clothes=None)".format(", ".join(self._protocols))
            )
        self.reset()

    def reset(self):
        self._feats = self._pids = self._camids = None
        self._n = 0
        self._results = None

    @property
    def capacity(self):
        return 0 if self._feats is None else self._feats.shape[0]

    def process(self, inputs, outputs):
        if self._results is not None:
            raise RuntimeError("process() after evaluate(): call reset() first")
        b = outputs.shape[0]
        self._reserve(self._n + b, outputs.shape[1])
        end = self._n + b
        self._feats[self._n : end].copy_(outputs.detach())  # casts bf16/fp16, moves to CPU
        self._pids[self._n : end] = _to_numpy(inputs["targets"])
        self._camids[self._n : end] = _to_numpy(inputs["camids"])
        self._n = end

    def _reserve(self, need, dim):
        if self._feats is not None and self._feats.shape[1] != dim:
            raise ValueError("feature dim changed from {} to {}".format(self._feats.shape[1], dim))
        cap = self.capacity
        if need <= cap:
            return
        if cap == 0:
            new_cap = (
                self._num_items if self._num_items and self._num_items >= need else max(need, 256)
            )
        else:
            new_cap = max(need, 2 * cap)
            logger.info(
                "feature buffer grown from %d to %d items%s",
                cap,
                new_cap,
                " (num_items=%d exceeded)" % self._num_items if self._num_items else "",
            )
        feats = torch.empty((new_cap, dim), dtype=torch.float32)
        pids, camids = np.empty(new_cap, np.int64), np.empty(new_cap, np.int64)
        if cap:
            feats[: self._n] = self._feats[: self._n]
            pids[: self._n], camids[: self._n] = self._pids[: self._n], self._camids[: self._n]
        self._feats, self._pids, self._camids = feats, pids, camids

    def buffered(self):
        """(features, pids, camids) this process has processed so far, in order: views of
        its buffer."""
        n = self._n
        feats = self._feats[:n] if n else torch.empty((0, 0))
        pids = self._pids[:n] if n else np.empty(0, np.int64)
        camids = self._camids[:n] if n else np.empty(0, np.int64)
        return feats, pids, camids

    def _collect(self):
        """(features, pids, camids) of all ranks on the main process, None elsewhere."""
        n = self._n
        feats, pids, camids = self.buffered()
        if comm.get_world_size() > 1:
            comm.synchronize()
            labels = comm.gather((pids, camids), dst=0)
            main, out = comm.is_main_process(), None
            if main and n:
                # Into the main process's own buffer (its share comes first), a chunk at a
                # time: the features are never held twice.
                self._reserve(sum(len(p) for p, _ in labels), self._feats.shape[1])
                out = self._feats
            feats = gather_rows(feats, out=out)
            if not main:
                return None
            pids = np.concatenate([p for p, _ in labels])
            camids = np.concatenate([c for _, c in labels])
        if feats.numel() == 0:
            raise RuntimeError("BlockedReidEvaluator.evaluate() without any processed batch")
        return feats, pids, camids

    @torch.no_grad()
    def evaluate(self):
        if self._results is not None:
            return copy.deepcopy(self._results)
        collected = self._collect()
        if collected is None:
            return {}
        feats, pids, camids = collected
        # Before the full-gallery pass, which normalizes the features in place and, with
        # AQE, replaces them.
        extra = self.extra_metrics(feats, pids, camids)
        t0 = time.perf_counter()
        test, nq = self.cfg.TEST, self._num_query
        q_pids, g_pids, q_camids, g_camids = pids[:nq], pids[nq:], camids[:nq], camids[nq:]
        if test.AQE.ENABLED:
            logger.info("Test with AQE setting")
            qf, gf = blocked_aqe(
                feats, nq, test.AQE.QE_TIME, test.AQE.QE_K, test.AQE.ALPHA, test.EVAL_MEMORY_MB
            )
            self._feats = feats = None  # the expanded features replace the buffer
        else:
            qf, gf = feats[:nq], feats[nq:]
        blocks = DistanceBlocks(
            qf, gf, test.METRIC, test.QUERY_BLOCK_SIZE, test.EVAL_MEMORY_MB, overwrite=True
        )
        logger.info(
            "Evaluating %d queries x %d gallery (%s) in %d blocks of %d queries",
            blocks.num_query,
            blocks.num_gallery,
            test.METRIC,
            blocks.num_blocks,
            blocks.block_size,
        )
        if test.RERANK.ENABLED:
            logger.info("Test with rerank setting")
            dist = np.empty((blocks.num_query, blocks.num_gallery), dtype=np.float32)
            for s, block in blocks:
                dist[s : s + block.shape[0]] = block
            # cosine: blocks normalized qf / gf in place, as fastreid feeds the jaccard code
            dist = rerank_distmat(qf, gf, dist, test.RERANK.K1, test.RERANK.K2, test.RERANK.LAMBDA)
            blocks = DistanceBlocks.from_distmat(dist, test.QUERY_BLOCK_SIZE, test.EVAL_MEMORY_MB)
        roc = _ROC_FPRS if test.ROC.ENABLED else ()
        clothes = self._clothes_of(len(pids)) if self._protocols else None
        r = blocked_metrics(
            blocks,
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            max_rank=50,
            roc_fprs=roc,
            q_clothes=None if clothes is None else clothes[:nq],
            g_clothes=None if clothes is None else clothes[nq:],
            protocols=self._protocols,
        )
        cmc, m_ap, m_inp = r["cmc"], r["mAP"], r["mINP"]
        results = OrderedDict()
        for k in (1, 5, 10):  # CMC stops at the gallery size, where it has reached 1
            results["Rank-{}".format(k)] = float(cmc[min(k, len(cmc)) - 1]) * 100
        results["mAP"] = m_ap * 100
        results["mINP"] = m_inp * 100
        results["metric"] = (m_ap + float(cmc[0])) / 2 * 100
        for fpr in roc:
            results["TPR@FPR={:.0e}".format(fpr)] = r["tpr"][fpr]
        for name in self._protocols:
            results.update(_protocol_results(name, r[name]))
        logger.info(
            "Evaluation of %d valid queries done in %.1f s",
            r["num_valid"],
            time.perf_counter() - t0,
        )
        results.update(extra)
        self._results = results
        return copy.deepcopy(results)

    def _clothes_of(self, num_items):
        """The clothes ids of the collected items, checked to be as many."""
        if self._clothes.size != num_items:
            raise ValueError(
                "the evaluator was given clothes ids for {} items and evaluates {}".format(
                    self._clothes.size, num_items
                )
            )
        return self._clothes

    def extra_metrics(self, feats, pids, camids):
        """Hook for subclasses: more result keys from the collected (query + gallery)
        features, pids and camids, called once on the main process before the full-gallery
        metrics. The features are the evaluator's buffer: do not modify them."""
        return {}


def _protocol_results(name, r):
    """`<name>-Rank-k`, `<name>-mAP`, `<name>-mINP` (in %) of one clothes-aware protocol."""
    cmc = r["cmc"]
    out = OrderedDict(
        ("{}-Rank-{}".format(name, k), float(cmc[min(k, len(cmc)) - 1]) * 100) for k in (1, 5, 10)
    )
    out[name + "-mAP"] = r["mAP"] * 100
    out[name + "-mINP"] = r["mINP"] * 100
    logger.info(
        "%s protocol: %d queries with a positive, Rank-1 %.2f, mAP %.2f",
        name,
        r["num_valid"],
        out[name + "-Rank-1"],
        out[name + "-mAP"],
    )
    return out


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().reshape(-1)
    return np.asarray(x).reshape(-1)
