"""Ranked-list pictures and CMC curves from query / gallery features.

`rank_queries` picks queries (worst AP first, best first, or a seeded random draw) and
returns, for each, its AP and top-k gallery matches under the evaluation protocol
(cosine or euclidean distance, gallery items with the query's pid AND camid removed, ties
by gallery order, as `lastreid.evaluation.rank`). Distances are computed one block of
queries at a time, never as the full query x gallery matrix, and only the drawn queries'
rows are sorted; ordering by AP costs one blocked pass over all queries (like an
evaluation) that keeps one AP per query.

`draw_rank_grid` draws the rows with PIL: the query (blue border), then its top-k matches
with green (same person) or red (another person) borders. `save_cmc_curve` draws the CMC
from `lastreid.evaluation.rank_metrics` with matplotlib (Agg).
"""

import logging
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from tqdm import tqdm

from .atomic import write_atomic
from .errors import InputError
from .evaluation import DistanceBlocks, rank_metrics
from .evaluation.rank import positive_ranks

__all__ = [
    "ORDERS",
    "cmc_and_map",
    "rank_queries",
    "grid_size",
    "draw_rank_grid",
    "save_cmc_curve",
    "write_rank_pages",
]

logger = logging.getLogger(__name__)

ORDERS = ("worst", "best", "random")
GREEN, RED, BLUE = (0, 170, 60), (220, 30, 30), (40, 90, 230)


# Ranking ---------------------------------------------------------------------------------


def cmc_and_map(
    qf, gf, q_pids, g_pids, q_camids, g_camids, metric="cosine", max_rank=50, memory_mb=512
):
    """(cmc, mAP, mINP) of `lastreid.evaluation.rank_metrics` (exact, blocked). The inputs
    are not modified. InputError (one line) when no query has a match (fastreid's wording,
    a ValueError, would end the tool in a traceback)."""
    try:
        return rank_metrics(
            qf,
            gf,
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            metric=metric,
            max_rank=max_rank,
            memory_mb=memory_mb,
            overwrite=False,
        )
    except ValueError as error:
        if "do not appear in gallery" not in str(error):
            raise
        raise InputError("no query has a matching gallery item (pids / camids)") from error


class _Rows:
    """Distance rows of selected queries against the whole gallery, block by block, from
    `lastreid.evaluation.DistanceBlocks` (same distances as the evaluation; the features
    are neither copied whole nor modified)."""

    def __init__(self, qf, gf, metric, memory_mb=512):
        self.blocks = DistanceBlocks(qf, gf, metric, memory_mb=memory_mb)

    def __call__(self, query_index):
        """Yields (query index, float32 numpy distance row) for each of `query_index`."""
        query_index = np.asarray(query_index, dtype=np.int64)
        for s, block in self.blocks.subset(query_index):
            for b in range(block.shape[0]):
                yield int(query_index[s + b]), block[b]


class _Groups:
    def __init__(self, g_pids):
        self.order = np.argsort(g_pids, kind="stable")
        self.sorted = g_pids[self.order]

    def same(self, pid):
        lo, hi = (
            np.searchsorted(self.sorted, pid, "left"),
            np.searchsorted(self.sorted, pid, "right"),
        )
        return np.sort(self.order[lo:hi])


def _kept_positives(groups, g_camids, pid, camid):
    same = groups.same(pid)
    return same, same[g_camids[same] != camid]


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="query", dynamic_ncols=True)


def _ap(row, same, pos):
    ranks = positive_ranks(row, same, pos)[0]
    return float(np.mean(np.arange(1, ranks.size + 1) / (ranks + 1.0)))


def _top_k(row, same, q_camid, g_camids, k):
    """The k nearest kept gallery indices (ascending distance, ties by index)."""
    row = row.copy()
    row[same[g_camids[same] == q_camid]] = np.inf  # the protocol removes same pid + camid
    k = min(k, row.size)
    kth = np.partition(row, k - 1)[k - 1]
    cand = np.flatnonzero(row <= kth)
    cand = cand[np.lexsort((cand, row[cand]))][:k]
    return cand[np.isfinite(row[cand])]


def rank_queries(
    qf,
    gf,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    metric="cosine",
    order="worst",
    num_queries=8,
    topk=10,
    seed=0,
    memory_mb=512,
    progress=True,
):
    """Picks `num_queries` queries by `order` and returns a list of dicts, one per picked
    query in that order: query (index), ap, matches (gallery indices, nearest first),
    distances, correct (bool per match). Queries without a kept positive are never picked.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    q_pids, g_pids = np.asarray(q_pids, np.int64), np.asarray(g_pids, np.int64)
    q_camids, g_camids = np.asarray(q_camids, np.int64), np.asarray(g_camids, np.int64)
    groups = _Groups(g_pids)
    valid = np.array(
        [_kept_positives(groups, g_camids, p, c)[1].size > 0 for p, c in zip(q_pids, q_camids)],
        dtype=bool,
    )
    candidates = np.flatnonzero(valid)
    if candidates.size == 0:
        raise InputError("no query has a matching gallery item (pids / camids)")
    rows = _Rows(qf, gf, metric, memory_mb)
    n = min(int(num_queries), candidates.size)

    aps = {}
    if order == "random":
        picked = np.random.default_rng(seed).choice(candidates, size=n, replace=False)
    else:
        for qi, row in _progress(rows(candidates), candidates.size, "AP of every query", progress):
            same, pos = _kept_positives(groups, g_camids, q_pids[qi], q_camids[qi])
            aps[qi] = _ap(row, same, pos)
        ap = np.array([aps[qi] for qi in candidates])
        # Stable sorts: equal APs keep query order, so the pick is deterministic.
        by_ap = np.argsort(ap if order == "worst" else -ap, kind="stable")
        picked = candidates[by_ap[:n]]

    results = {}
    for qi, row in rows(picked):
        same, pos = _kept_positives(groups, g_camids, q_pids[qi], q_camids[qi])
        top = _top_k(row, same, q_camids[qi], g_camids, topk)
        results[qi] = dict(
            query=qi,
            ap=aps[qi] if qi in aps else _ap(row, same, pos),
            matches=top,
            distances=row[top].astype(np.float32),
            correct=g_pids[top] == q_pids[qi],
        )
    return [results[int(qi)] for qi in picked]


# Drawing ---------------------------------------------------------------------------------

_BORDER, _PAD, _LABEL, _GAP = 4, 6, 28, 14  # _LABEL: two lines of text


def grid_size(topk, n_rows, thumb=(64, 128)):
    """(width, height) in pixels of a grid of `n_rows` queries with `topk` matches each,
    thumbnails of thumb = (width, height)."""
    tw, th = thumb[0] + 2 * _BORDER, thumb[1] + 2 * _BORDER
    width = _PAD + tw + _GAP + topk * (tw + _PAD)
    height = _PAD + n_rows * (_LABEL + th + _PAD)
    return width, height


def _thumbnail(path, thumb):
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            return ImageOps.pad(
                image, thumb, method=Image.Resampling.BICUBIC, color=(235, 235, 235)
            )
    except (OSError, ValueError):
        tile = Image.new("RGB", thumb, (200, 200, 200))
        ImageDraw.Draw(tile).text((4, thumb[1] // 2 - 6), "missing", fill=(90, 90, 90))
        return tile


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1 has no size
        return ImageFont.load_default()


def draw_rank_grid(rows, paths_q, paths_g, q_pids, g_pids, output, topk, thumb=(64, 128), colors=0):
    """Draws the `rank_queries` rows into one PNG at `output`; returns its path. colors > 0
    saves a palette PNG of that many colours (a few times smaller)."""
    width, height = grid_size(topk, len(rows), thumb)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), _font()
    tw, th = thumb[0] + 2 * _BORDER, thumb[1] + 2 * _BORDER

    def tile(x, y, path, colour):
        draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=colour)
        canvas.paste(_thumbnail(path, thumb), (x + _BORDER, y + _BORDER))

    for r, row in enumerate(rows):
        y0 = _PAD + r * (_LABEL + th + _PAD)
        qi = row["query"]
        draw.text(
            (_PAD + 1, y0 + 1),
            f"query {q_pids[qi]}\nAP {row['ap']:.2f}",
            fill=(0, 0, 0),
            font=font,
            spacing=1,
        )
        tile(_PAD, y0 + _LABEL, paths_q[qi], BLUE)
        for j, (gi, d, ok) in enumerate(zip(row["matches"], row["distances"], row["correct"])):
            x = _PAD + tw + _GAP + j * (tw + _PAD)
            draw.text(
                (x + 1, y0 + 1),
                f"{j + 1}: {g_pids[gi]}\nd {d:.3f}",
                fill=GREEN if ok else RED,
                font=font,
                spacing=1,
            )
            tile(x, y0 + _LABEL, paths_g[gi], GREEN if ok else RED)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if colors:
        canvas = canvas.quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT)
    write_atomic(output, lambda f: canvas.save(f, format="PNG", optimize=True))
    return output


def write_rank_pages(
    rows,
    paths_q,
    paths_g,
    q_pids,
    g_pids,
    output_dir,
    topk,
    per_page=8,
    thumb=(64, 128),
    prefix="ranks",
    colors=0,
):
    """Draws the rows `per_page` per PNG: <output_dir>/<prefix>_000.png, ...; returns the paths."""
    pages = []
    for p in range(math.ceil(len(rows) / per_page)):
        path = os.path.join(output_dir, f"{prefix}_{p:03d}.png")
        pages.append(
            draw_rank_grid(
                rows[p * per_page : (p + 1) * per_page],
                paths_q,
                paths_g,
                q_pids,
                g_pids,
                path,
                topk,
                thumb,
                colors,
            )
        )
    return pages


def save_cmc_curve(cmc, output, mAP=None, title="CMC", size=(6.0, 4.5), dpi=100):
    """Draws the CMC (ranks 1..len(cmc), in %) into a PNG of size * dpi pixels."""
    import matplotlib  # here: its start-up is paid only by the tools that draw a curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmc = np.asarray(cmc, dtype=np.float64) * 100
    ranks = np.arange(1, cmc.size + 1)
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    ax.plot(ranks, cmc, marker="o", ms=3, lw=1.5)
    for k in (1, 5, 10):
        if k <= cmc.size:
            ax.annotate(
                f"R{k} {cmc[k - 1]:.1f}",
                (k, cmc[k - 1]),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
            )
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(0.5, cmc.size + 0.5)
    ax.set_ylim(min(cmc[0], 100) - 5 if cmc.size else 0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(title + (f"  (mAP {mAP * 100:.1f})" if mAP is not None else ""))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_atomic(output, lambda f: fig.savefig(f, format="png", dpi=dpi))
    plt.close(fig)
    return output
