"""Confidence-threshold sweep: detection precision/recall and tracking scores per threshold.

The detector runs once per frame at a low confidence; every threshold of the sweep then
filters those cached detections, so the sweep costs one tracker pass and one TrackEval call
per threshold, not one detector pass. The threshold with the best ``metric`` becomes the
tracker's ``track_high_thresh`` (and ``new_track_thresh``, a fixed margin above it) in the
engine bundle's ``tracker.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from motops.data.mot import SeqInfo
from motops.data.schema import PEDESTRIAN
from motops.evaluation.trackeval_adapter import EvalResult, score
from motops.runtime.matching import iou_matrix
from motops.runtime.trackers import make_tracker
from motops.runtime.types import empty_detections

#: IoU a detection needs with a ground-truth box to count as a true positive (PASCAL/COCO-50).
PR_IOU = 0.5

#: ``new_track_thresh`` is set this far above the swept ``track_high_thresh``: a new identity
#: needs slightly more evidence than continuing one (ByteTrack's published 0.5/0.6 pair).
NEW_TRACK_MARGIN = 0.1

#: Per-sequence detections: frame (1-based) -> ``(N, 6)`` ``[x1, y1, x2, y2, conf, cls]``.
FrameDetections = Mapping[int, np.ndarray]

#: ``(sequence, frame) -> BGR image`` for trackers that look at pixels (appearance, GMC).
FrameSource = Callable[[str, int], np.ndarray]


@dataclass(frozen=True)
class SweepResult:
    """What the sweep measured and chose.

    Attributes:
        table: One row per threshold: ``threshold``, detection ``precision``/``recall``/``tp``/
            ``fp``/``fn`` and tracking ``hota``, ``idf1``, ``mota``, ``idsw``, ``frag``.
        metric: The column the choice maximised.
        best_threshold: The chosen ``track_high_thresh``.
        tracker_params: The tracker settings with the chosen thresholds filled in.
        best: The full TrackEval result at the chosen threshold.
    """

    table: pl.DataFrame
    metric: str
    best_threshold: float
    tracker_params: dict[str, Any]
    best: EvalResult


def _scored_gt(gt: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ground truth into the boxes that count (considered pedestrians) and distractors."""
    cols = gt.columns
    conf = pl.col("conf") if "conf" in cols else pl.lit(1.0)
    cls = pl.col("class") if "class" in cols else pl.lit(PEDESTRIAN)
    scored = (conf > 0) & (cls == PEDESTRIAN)
    return gt.filter(scored), gt.filter(~scored)


def _xyxy(table: pl.DataFrame) -> np.ndarray:
    arr = table.select("left", "top", "width", "height").to_numpy().astype(np.float64).reshape(-1, 4)
    return np.column_stack([arr[:, 0], arr[:, 1], arr[:, 0] + arr[:, 2], arr[:, 1] + arr[:, 3]])


def _match_frame(dets: np.ndarray, gt_boxes: np.ndarray, ignore_boxes: np.ndarray, iou: float) -> np.ndarray:
    """Label each detection of one frame: 1 true positive, 0 false positive, -1 ignored.

    Greedy by confidence, as COCO/PASCAL do, so the labels do not depend on the threshold
    and one pass gives the whole PR curve. A detection that matches no scored box but covers
    a distractor (a reflection, a person on a vehicle, …) is ignored rather than penalised.
    """
    labels = np.zeros(len(dets), dtype=np.int8)
    if not len(dets):
        return labels
    order = np.argsort(-dets[:, 4], kind="stable")
    taken = np.zeros(len(gt_boxes), dtype=bool)
    ious = iou_matrix(dets[:, :4], gt_boxes) if len(gt_boxes) else np.zeros((len(dets), 0))
    ignore = iou_matrix(dets[:, :4], ignore_boxes) if len(ignore_boxes) else np.zeros((len(dets), 0))
    for i in order:
        if ious.shape[1]:
            candidates = np.where(taken, -1.0, ious[i])
            j = int(np.argmax(candidates))
            if candidates[j] >= iou:
                taken[j] = True
                labels[i] = 1
                continue
        if ignore.shape[1] and ignore[i].max() >= iou:
            labels[i] = -1
    return labels


def detection_pr(
    detections: Mapping[str, FrameDetections],
    gt: Mapping[str, pl.DataFrame],
    thresholds: Sequence[float],
    *,
    iou: float = PR_IOU,
) -> pl.DataFrame:
    """Detection precision and recall at each confidence threshold, over all sequences.

    Args:
        detections: Per sequence, frame -> ``(N, 6)`` detections (any confidence).
        gt: Per sequence, ground truth (``frame, left, top, width, height`` and, as in
            ``gt.txt``, ``conf`` = consider flag and ``class``).
        thresholds: Confidence thresholds; a detection counts when ``conf >= threshold``.
        iou: IoU for a true positive. Raising it demands tighter boxes.

    Returns:
        Columns ``threshold, precision, recall, tp, fp, fn``, one row per threshold.
    """
    confs, labels, positives = [], [], 0
    for seq, table in gt.items():
        scored, ignored = _scored_gt(table)
        positives += len(scored)
        by_frame = {f: _xyxy(g) for (f,), g in scored.group_by("frame")}
        ignore_by_frame = {f: _xyxy(g) for (f,), g in ignored.group_by("frame")}
        for frame, dets in detections.get(seq, {}).items():
            dets = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
            empty = np.zeros((0, 4))
            lab = _match_frame(dets, by_frame.get(frame, empty), ignore_by_frame.get(frame, empty), iou)
            confs.append(dets[:, 4])
            labels.append(lab)
    conf = np.concatenate(confs) if confs else np.zeros(0)
    lab = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int8)
    rows = []
    for t in thresholds:
        kept = lab[conf >= t]
        tp, fp = int((kept == 1).sum()), int((kept == 0).sum())
        rows.append(
            {
                "threshold": float(t),
                "precision": tp / (tp + fp) if tp + fp else 1.0,
                "recall": tp / positives if positives else 0.0,
                "tp": tp,
                "fp": fp,
                "fn": positives - tp,
            }
        )
    return pl.DataFrame(rows)


def track_detections(
    detections: FrameDetections,
    *,
    length: int,
    fps: float,
    tracker: str,
    tracker_params: Mapping[str, Any],
    frames: Callable[[int], np.ndarray] | None = None,
    reid: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> pl.DataFrame:
    """Run one tracker over cached detections of one sequence.

    Returns:
        A results table (``frame, id, left, top, width, height, conf``) for :func:`score`.
    """
    trk = make_tracker(tracker, frame_rate=fps, reid=reid, **tracker_params)
    parts = []
    for frame in range(1, length + 1):
        dets = detections.get(frame)
        tracks = trk.update(empty_detections() if dets is None else dets, frames(frame) if frames else None)
        if len(tracks):
            t = np.asarray(tracks, dtype=np.float64)
            parts.append(np.column_stack([np.full(len(t), frame), t[:, 4], t[:, 0], t[:, 1],
                                          t[:, 2] - t[:, 0], t[:, 3] - t[:, 1], t[:, 5]]))
    data = np.concatenate(parts) if parts else np.zeros((0, 7))
    table = pl.DataFrame(data, schema=["frame", "id", "left", "top", "width", "height", "conf"], orient="row")
    return table.with_columns(pl.col("frame").cast(pl.Int64), pl.col("id").cast(pl.Int64))


def thresholds_params(base: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    """The tracker settings for one swept confidence threshold."""
    return {
        **base,
        "track_high_thresh": float(threshold),
        "new_track_thresh": float(min(1.0, threshold + NEW_TRACK_MARGIN)),
    }


def choose_threshold(table: pl.DataFrame, metric: str, tolerance: float = 0.0) -> float:
    """The highest ``threshold`` of ``table`` whose ``metric`` is within ``tolerance`` of the best.

    Raises:
        ValueError: A negative ``tolerance`` or an empty table.
    """
    if tolerance < 0:
        raise ValueError(f"sweep tolerance must be >= 0 (evaluate.sweep_tolerance), got {tolerance}")
    if table.is_empty():
        raise ValueError("no swept thresholds to choose from")
    top = table[metric].max()
    return float(table.filter(pl.col(metric) >= top - tolerance - 1e-12)["threshold"].max())


def sweep_thresholds(
    detections: Mapping[str, FrameDetections],
    gt: Mapping[str, pl.DataFrame],
    seqinfo: Mapping[str, SeqInfo],
    *,
    thresholds: Sequence[float],
    tracker: str = "bytetrack",
    tracker_params: Mapping[str, Any] | None = None,
    metric: Literal["idf1", "hota"] = "idf1",
    frames: FrameSource | None = None,
    reid: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    progress: bool = True,
    tolerance: float = 0.0,
) -> SweepResult:
    """Track the val sequences at each confidence threshold and keep the best.

    Args:
        detections: Per sequence, frame -> ``(N, 6)`` detections from one low-threshold pass.
        gt: Per sequence ground truth (as for :func:`motops.evaluation.score`).
        seqinfo: Per sequence a ``SeqInfo`` (``length`` and ``fps`` are read).
        thresholds: Candidate ``track_high_thresh`` values.
        tracker: ``bytetrack`` or ``botsort``.
        tracker_params: The other tracker settings (``params.yaml`` ``track:``).
        metric: What the choice maximises; ties (and, with ``tolerance``, near-ties) go to the
            higher threshold (fewer boxes).
        frames: Images for trackers that use pixels; None = motion only.
        reid: Appearance callable for BoT-SORT (needs ``frames``).
        progress: Show a progress bar over thresholds.
        tolerance: The highest threshold scoring within this of the best ``metric`` is chosen
            (``evaluate.sweep_tolerance``); 0 keeps the best.

    Returns:
        The :class:`SweepResult`.

    Raises:
        ValueError: No thresholds.
    """
    if not thresholds:
        raise ValueError("sweep_thresholds: no thresholds to try (evaluate.sweep_thresholds is empty)")
    base = dict(tracker_params or {})
    pr = detection_pr(detections, gt, thresholds)
    rows, results = [], {}
    for t in tqdm(sorted(thresholds), desc="threshold sweep", unit="thr", disable=not progress):
        params = thresholds_params(base, t)
        tracked = {}
        for seq in gt:
            info = seqinfo[seq]
            frame_fn = (lambda f, s=seq: frames(s, f)) if frames is not None else None
            tracked[seq] = track_detections(
                detections.get(seq, {}), length=int(info.length), fps=float(info.fps), tracker=tracker,
                tracker_params=params, frames=frame_fn, reid=reid,
            )
        result = score(gt, tracked, seqinfo)
        results[t] = result
        m = result.combined
        rows.append({"threshold": float(t), "hota": m.hota, "idf1": m.idf1, "mota": m.mota,
                     "idsw": m.idsw, "frag": m.frag})
    table = pr.join(pl.DataFrame(rows), on="threshold").sort("threshold")
    best = choose_threshold(table, metric, tolerance)
    return SweepResult(table=table, metric=metric, best_threshold=best,
                       tracker_params=thresholds_params(base, best), best=results[best])
