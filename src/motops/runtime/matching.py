"""Small pure association functions: IoU, score fusion, thresholded linear assignment.

These mirror ``ultralytics.trackers.utils.matching`` (which the Ultralytics trackers used by
:func:`motops.runtime.make_tracker` call internally) but are written here on plain box
arrays because the Ultralytics versions do not fit as a public API: their ``iou_distance``
and ``fuse_score`` take lists of ``STrack`` objects, their ``linear_assignment`` returns a
list of lists (or an empty array) depending on the branch, and importing that module
imports the whole ``ultralytics`` package (settings file, torch) — too heavy for the
frame-skipping path and unit tests. The assignment itself is the same call, ``lap.lapjv``
with ``extend_cost`` and ``cost_limit``.
"""

from __future__ import annotations

import lap
import numpy as np


def _boxes(arr: np.ndarray, what: str) -> np.ndarray:
    out = np.asarray(arr, dtype=np.float64)
    if out.size == 0:
        return np.zeros((0, 4))
    if out.ndim != 2 or out.shape[1] < 4:
        raise ValueError(f"{what}: got shape {out.shape}; expected (N, >=4) boxes [x1, y1, x2, y2, ...]")
    return out[:, :4]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of two sets of corner boxes.

    Args:
        a: ``(N, 4)`` boxes ``[x1, y1, x2, y2]`` (further columns are ignored, so detection
            ``(N, 6)`` and track ``(M, 8)`` arrays can be passed as they are).
        b: ``(M, 4)`` boxes in the same layout.

    Returns:
        ``(N, M)`` float64 IoU in ``[0, 1]``; a pair whose union has zero area scores 0.
    """
    a, b = _boxes(a, "a"), _boxes(b, "b")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def iou_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Association cost ``1 - IoU`` of two box sets, ``(N, 4) x (M, 4) -> (N, M)``."""
    return 1.0 - iou_matrix(a, b)


def fuse_score(cost: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Fold detection confidences into an IoU cost (ByteTrack's ``fuse_score``).

    The similarity ``1 - cost`` of each pair is multiplied by the detection's score, so a
    weak detection must overlap more to be matched.

    Args:
        cost: ``(N, M)`` cost in ``[0, 1]``, rows are tracks, columns detections.
        scores: ``(M,)`` detection confidences in ``[0, 1]``.

    Returns:
        ``(N, M)`` fused cost ``1 - (1 - cost) * scores``.
    """
    cost = np.asarray(cost, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if cost.ndim != 2 or cost.shape[1] != len(scores):
        raise ValueError(f"fuse_score: cost has shape {cost.shape} but {len(scores)} scores; expected one per column")
    return 1.0 - (1.0 - cost) * scores[None, :]


def linear_assignment(cost: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment, refusing pairs that cost more than ``thresh``.

    Args:
        cost: ``(N, M)`` cost matrix.
        thresh: Largest cost a matched pair may have; raising it accepts worse matches
            (fewer unmatched rows/columns, more wrong associations).

    Returns:
        ``matches`` ``(K, 2)`` int64 of ``(row, column)`` pairs, sorted by row;
        ``unmatched_a`` ``(N - K,)`` int64 rows without a partner;
        ``unmatched_b`` ``(M - K,)`` int64 columns without a partner.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"linear_assignment: cost has shape {cost.shape}; expected a 2-D (N, M) matrix")
    n, m = cost.shape
    if cost.size == 0:
        return np.zeros((0, 2), dtype=np.int64), np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64)
    _, x, y = lap.lapjv(cost, extend_cost=True, cost_limit=float(thresh))
    x, y = np.asarray(x), np.asarray(y)
    rows = np.flatnonzero(x >= 0)
    matches = np.stack([rows, x[rows]], axis=1).astype(np.int64) if len(rows) else np.zeros((0, 2), dtype=np.int64)
    return matches, np.flatnonzero(x < 0).astype(np.int64), np.flatnonzero(y < 0).astype(np.int64)
