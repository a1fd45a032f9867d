"""darknet's ``detector calc_anchors``: k-means on box sizes with the ``1 - IoU`` distance.

Pure numpy, no state. Box sizes and anchors are ``(N, 2)`` / ``(K, 2)`` float32 ``(w, h)`` in
network-input pixels; the IoU of two sizes is that of two boxes sharing their centre:
``min(w) * min(h) / (w1 * h1 + w2 * h2 - min(w) * min(h))`` (darknet's ``dist`` in
``src/matrix.c``, and the loop at the end of ``calc_anchors`` in ``src/detector.c``).

darknet runs one k-means from ``k`` random boxes (``random_centers``) until no assignment
changes (at most 1000 rounds), sorts the centres by area and prints the average, over every
box, of the IoU with its best anchor. :func:`fit_anchors` runs the same k-means from several
starts (darknet's random boxes and k-means++ seeds), keeps the start with the best average,
and then improves that figure directly by a short mutation search (the k-means centre, a mean
of sizes, is not the size that maximises the IoU of its cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AnchorFit",
    "MAX_ROUNDS",
    "wh_iou",
    "best_iou",
    "closest_anchor",
    "avg_best_iou",
    "kmeans",
    "fit_anchors",
    "iou_histogram",
]

MAX_ROUNDS = 1000  # darknet's do_kmeans: at most 1000 expectation/maximisation rounds
EVOLVE_BOXES = 20000  # the mutation search scores candidates on at most this many boxes
MUTATION_SIGMA = 0.1  # relative size change of a mutated anchor (ultralytics' kmean_anchors)
HIST_BINS = 10  # histogram of best IoUs: [0, 0.1), ..., [0.9, 1.0]


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``(N, K)`` float32 IoU of each box size with each anchor (centres aligned), computed in
    float32 in darknet's order of operations."""
    wh = np.asarray(wh, np.float32)
    anchors = np.asarray(anchors, np.float32)
    bw, bh = wh[:, None, 0], wh[:, None, 1]
    aw, ah = anchors[None, :, 0], anchors[None, :, 1]
    inter = np.minimum(bw, aw) * np.minimum(bh, ah)
    union = bw * bh + aw * ah - inter
    return inter / union


def closest_anchor(wh: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each box's nearest anchor by ``1 - IoU`` (the first on ties, as darknet's strict
    ``<``) and that IoU: ``(N,)`` int64, ``(N,)`` float32."""
    iou = wh_iou(wh, anchors)
    index = np.argmin(np.float32(1.0) - iou, axis=1)
    return index, iou[np.arange(len(iou)), index]


def best_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``(N,)`` float32: each box's IoU with its best anchor."""
    return closest_anchor(wh, anchors)[1]


def avg_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """darknet's figure, in percent: ``100 * sum(best IoU) / N`` with the sum accumulated in
    float32 box after box (a best IoU outside ``[0, 1]`` adds nothing, as in darknet)."""
    best = best_iou(wh, anchors)
    if len(best) == 0:
        return 0.0
    best = np.where((best > 1) | (best < 0), np.float32(0), best)
    total = np.cumsum(best, dtype=np.float32)[-1]  # sequential, like darknet's `avg_iou +=`
    return float(np.float32(100) * total / np.float32(len(best)))


def _random_centers(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """darknet's ``random_centers``: ``k`` distinct boxes drawn at random."""
    return wh[rng.permutation(len(wh))[:k]].copy()


def _plusplus_centers(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with the ``1 - IoU`` distance."""
    centers = [wh[rng.integers(len(wh))]]
    dist = np.float32(1.0) - wh_iou(wh, np.array(centers))[:, 0]
    for _ in range(1, k):
        weights = dist.astype(np.float64) ** 2
        total = weights.sum()
        i = rng.choice(len(wh), p=weights / total) if total > 0 else rng.integers(len(wh))
        centers.append(wh[i])
        dist = np.minimum(dist, np.float32(1.0) - wh_iou(wh, wh[i : i + 1])[:, 0])
    return np.array(centers, np.float32)


def _maximization(wh: np.ndarray, assign: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """darknet's ``kmeans_maximization``: each centre the mean of its boxes; a coordinate that
    comes out 0 (an empty cluster) keeps its old value."""
    k = len(centers)
    counts = np.bincount(assign, minlength=k).astype(np.float32)
    sums = np.zeros((k, 2), np.float32)
    np.add.at(sums, assign, wh)
    new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], 0).astype(np.float32)
    return np.where(new == 0, centers, new)


def kmeans(
    wh: np.ndarray, centers: np.ndarray, max_rounds: int = MAX_ROUNDS
) -> tuple[np.ndarray, int]:
    """darknet's ``do_kmeans`` from ``centers`` ``(K, 2)``: expectation (nearest centre by
    ``1 - IoU``) and maximisation until no assignment changes. Returns the ``(K, 2)`` float32
    centres (unsorted) and the number of rounds."""
    wh = np.asarray(wh, np.float32)
    centers = np.asarray(centers, np.float32).copy()
    assign = np.zeros(len(wh), np.int64)
    if len(centers) == 1:
        centers = _maximization(wh, assign, centers)
    rounds = 0
    while rounds < max_rounds:
        new, _ = closest_anchor(wh, centers)
        converged = bool(np.array_equal(new, assign))
        assign = new
        if converged:
            break
        centers = _maximization(wh, assign, centers)
        rounds += 1
    return centers, rounds


def _sort_by_area(anchors: np.ndarray) -> np.ndarray:
    """Ascending area (darknet's ``anchors_data_comparator``), stable."""
    return anchors[np.argsort(anchors[:, 0] * anchors[:, 1], kind="stable")]


def _evolve(
    wh: np.ndarray, anchors: np.ndarray, generations: int, rng: np.random.Generator
) -> np.ndarray:
    """Mutation search on the average best IoU: each generation scales one anchor's width and
    height by random factors around 1 and keeps the change only when the average rises (scored
    on at most ``EVOLVE_BOXES`` boxes)."""
    sample = wh if len(wh) <= EVOLVE_BOXES else wh[rng.permutation(len(wh))[:EVOLVE_BOXES]]
    best, score = anchors.copy(), float(best_iou(sample, anchors).mean(dtype=np.float64))
    for g in range(generations):
        sigma = MUTATION_SIGMA * (1 - g / generations) + 0.01  # finer steps towards the end
        candidate = best.copy()
        i = rng.integers(len(best))
        candidate[i] *= np.clip(rng.normal(1.0, sigma, 2), 0.5, 2.0).astype(np.float32)
        s = float(best_iou(sample, candidate).mean(dtype=np.float64))
        if s > score:
            best, score = candidate, s
    return best


@dataclass(frozen=True)
class AnchorFit:
    """The result of :func:`fit_anchors`: ``anchors`` ``(K, 2)`` float32 sorted by area,
    ``avg_iou`` darknet's figure for them (percent), ``restart_ious`` the figure each k-means
    start reached (before the mutation search)."""

    anchors: np.ndarray
    avg_iou: float
    restart_ious: tuple[float, ...]


def fit_anchors(
    wh: np.ndarray,
    k: int,
    restarts: int = 10,
    seed: int = 0,
    generations: int = 1000,
    decimals: int = 2,
) -> AnchorFit:
    """``k`` anchors for box sizes ``wh`` ``(N, 2)`` (network-input pixels, ``N >= k``).

    Start ``i`` of ``restarts`` seeds the k-means with darknet's random boxes (even ``i``) or
    k-means++ (odd ``i``); the start with the highest :func:`avg_best_iou` is refined by
    ``generations`` rounds of mutation search, rounded to ``decimals``, sorted by area. The
    result is never worse than the best start (rounding aside)."""
    wh = np.asarray(wh, np.float32).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    best, best_score, scores = None, -1.0, []
    for i in range(max(1, restarts)):
        init = _random_centers if i % 2 == 0 else _plusplus_centers
        centers, _ = kmeans(wh, init(wh, k, rng))
        score = avg_best_iou(wh, centers)
        scores.append(score)
        if score > best_score:
            best, best_score = centers, score
    assert best is not None
    evolved = _evolve(wh, best, generations, rng) if generations > 0 else best
    candidates = [best, evolved]
    rounded = [_sort_by_area(np.round(c, decimals).astype(np.float32)) for c in candidates]
    rounded = [np.maximum(c, np.float32(10.0**-decimals)) for c in rounded]
    figures = [avg_best_iou(wh, c) for c in rounded]
    pick = int(np.argmax(figures))
    return AnchorFit(rounded[pick], figures[pick], tuple(scores))


def iou_histogram(best: np.ndarray, bins: int = HIST_BINS) -> list[int]:
    """Counts of best IoUs in ``bins`` equal bins of ``[0, 1]`` (the last one closed)."""
    counts, _ = np.histogram(np.clip(best, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    return [int(c) for c in counts]
