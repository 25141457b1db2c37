"""The offline labeller: the champion's engine turns unlabelled footage into MOT ground truth.

Offline it can afford more than the live engine:

1. *Detection* once per frame, cached: the bundle's ONNX, or at another input size
   (``pseudo_labels.imgsz``, e.g. larger for small people) the champion's ``detector.pt``.
2. *Tracking forward and backward* over the cached detections with the bundle's tracker
   settings (BoT-SORT's camera-motion warps are measured once, going forward, and inverted for
   the backward pass). A track starts only once confirmed, so the backward pass recovers the
   first frames of the people the forward pass picked up late, and vice versa.
3. *Fusion* (:func:`fuse_passes`): the forward tracks, cut where the backward pass puts two
   consecutive boxes of one in different tracks (the boxes within ``conflict_margin`` frames of
   the cut are uncertain), extended by the boxes only the backward pass tracked.
4. *Stitching* (:func:`stitch_tracks`): a track that ends is joined to one that starts up to
   ``stitch_max_gap_s`` later where the motion of each, carried across the gap, lands near the
   other (``stitch_max_distance`` box heights) and, when the bundle has a ReID model, their mean
   appearance agrees (cosine ``stitch_min_similarity``); best pairs first, each end used once.
   The trackers lose a person for longer than their buffer behind an occluder or a missed
   stretch; offline the labeller can look at both sides of the gap.
5. *Track-consistency filter*: a track with fewer than ``min_track_frames`` detected boxes or
   a mean score below ``min_mean_score`` is uncertain as a whole; a step of more than
   ``max_jump`` box heights per frame cuts the track and marks the boxes beside the cut;
   a box scoring below ``uncertain_below`` is uncertain.
6. *Interpolation* of gaps of at most ``max_gap`` frames inside a track (linear in the box).

The result is MOT ground truth (``left, top`` 1-based as in MOTChallenge) whose uncertain boxes
have the consider flag 0: ``prepare`` masks them out of training images and TrackEval ignores
them; the review task (:mod:`motops.pseudo.review`) holds the frames with such boxes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motops.errors import DataFormatError
from motops.runtime.types import DET_INDEX, TRACK_ID

#: Written next to the sequence: how and by which champion the batch was labelled, and its statistics.
PSEUDO_FILE = "pseudo.json"


@dataclass(frozen=True)
class Labeller:
    """What labels: a detector callable and the tracker settings (from the champion's bundle).

    Attributes:
        detector: ``frame_bgr -> (N, 6)`` ``[x1, y1, x2, y2, conf, cls]``.
        tracker: ``botsort`` or ``bytetrack``.
        tracker_params: Association settings for :func:`motops.runtime.make_tracker`.
        described: Where the detector came from and at which input size (recorded in the stats).
        reid: ``(frame_bgr, boxes (N, 4)) -> (N, D)`` unit embeddings for stitching, or None
            (motion alone decides).
    """

    detector: Any
    tracker: str
    tracker_params: dict[str, Any]
    described: dict[str, Any]
    reid: Any = None


def labelling_size(width: int, height: int, imgsz: int) -> tuple[int, int]:
    """``(H, W)``: ``imgsz`` wide, the height fitting the footage's aspect, rounded up to a multiple of 32."""
    h = int(np.ceil(imgsz * height / width / 32) * 32)
    return max(32, h), imgsz


def load_labeller(bundle: str | Path, *, detector_pt: str | Path | None, imgsz: int | None, conf: float,
                  frame_size: tuple[int, int], threads: int = 0) -> Labeller:
    """The champion's labeller: its bundle's tracker settings and NMS IoU, its ``.pt`` at ``imgsz`` when given.

    Args:
        bundle: The champion's engine bundle (verified).
        detector_pt: Its Ultralytics checkpoint; None: the bundle's ONNX at its own input size.
        imgsz: Input width for the checkpoint; None: the bundle's ONNX at its own input size.
        conf: Detector score threshold.
        frame_size: ``(width, height)`` of the footage.
        threads: ONNX Runtime threads (0: automatic).
    """
    from motops.runtime.backends import load_detector
    from motops.runtime.bundle import load_bundle

    engine = load_bundle(bundle, device="cpu", intra_op_num_threads=threads)
    cfg = engine.config
    if detector_pt is not None and imgsz is not None:
        size = labelling_size(*frame_size, imgsz)
        detector = load_detector(detector_pt, imgsz=size, conf=conf, iou=cfg["iou"], classes=cfg["classes"],
                                 device="cpu")
        described = {"detector": str(detector_pt), "imgsz": list(size), "backend": "torch"}
    else:
        detector = engine.detector
        detector.conf = min(conf, detector.conf)
        why = "pseudo_labels.imgsz is null" if imgsz is None else "no detector.pt for this engine"
        described = {"detector": str(Path(bundle) / "detector.onnx"), "imgsz": list(engine.imgsz),
                     "backend": "onnxruntime", "note": f"{why}: labelled at the bundle's input size"}
    params = dict(engine.tracker_params)
    params["with_reid"] = False
    reid = _bundle_reid(Path(bundle), engine, threads)
    described["reid"] = str(reid.source) if reid is not None else "none in the bundle: motion alone stitches"
    return Labeller(detector, engine.tracker, params, described, reid)


def _bundle_reid(root: Path, engine: Any, threads: int) -> Any:
    """The bundle's FP32 ReID for stitching (whether or not its tracker uses appearance), or None."""
    from motops.runtime import select
    from motops.runtime.runner import model_roles

    roles = model_roles(engine)
    if "reid" not in roles:
        return None
    reid, _ = select.load_device_reid(root, roles, runtime="onnxruntime", int8=False, device="cpu", threads=threads,
                                      on_gpu=False)
    return reid


# --------------------------------------------------------------------------- passes


_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)


def _invert(warp: np.ndarray) -> np.ndarray:
    a, b = warp[:, :2], warp[:, 2:]
    inv = np.linalg.inv(a)
    return np.hstack([inv, -inv @ b])


def track_pass(dets: Sequence[np.ndarray], tracker: str, params: dict[str, Any], fps: float,
               warps: Sequence[np.ndarray] | None, *, backward: bool) -> dict[tuple[int, int], int]:
    """One tracking pass over cached detections; ``{(frame, det_index): track_id}`` of the boxes it tracked.

    Args:
        dets: Per frame (frame 1 first) ``(N, 6)`` detections.
        tracker: ``botsort`` or ``bytetrack``.
        params: Association settings.
        fps: Frame rate (scales the lost buffer).
        warps: Per frame the camera-motion warp from the previous frame (BoT-SORT), or None.
        backward: Run from the last frame to the first (warps inverted).
    """
    from motops.runtime import make_tracker

    trk = make_tracker(tracker, frame_rate=fps, **params)
    order = range(len(dets) - 1, -1, -1) if backward else range(len(dets))
    out: dict[tuple[int, int], int] = {}
    for step, i in enumerate(order):
        warp = None
        if tracker == "botsort":  # no frames here: the warps measured once (identity without them)
            if step == 0 or warps is None:
                warp = np.eye(2, 3)
            elif backward:
                warp = _invert(warps[i + 1])
            else:
                warp = warps[i]
        # a stand-in image: BoT-SORT compensates camera motion only when given one; the warp is ours
        tracks = trk.update(dets[i], _NO_IMAGE if warp is not None else None, warp=warp)
        for row in tracks:
            out[(i + 1, int(row[DET_INDEX]))] = int(row[TRACK_ID])
    return out


def _chains(assigned: dict[tuple[int, int], int]) -> list[list[tuple[int, int]]]:
    by_id: dict[int, list[tuple[int, int]]] = {}
    for node, tid in assigned.items():
        by_id.setdefault(tid, []).append(node)
    return [sorted(nodes) for nodes in by_id.values()]


def fuse_passes(fwd: dict[tuple[int, int], int], bwd: dict[tuple[int, int], int]
                ) -> tuple[list[list[tuple[int, int]]], list[tuple[tuple[int, int], tuple[int, int]]]]:
    """Identities from a forward and a backward pass over the same detections.

    The forward tracks are the base. A link between two consecutive boxes of a forward track is
    cut where the backward pass put them in two different tracks (a disagreement, returned).
    Boxes only the backward pass tracked (typically the first frames of a person, before the
    forward pass confirmed them) join the forward track their backward neighbours belong to,
    unless that track already has a box in one of their frames; otherwise they form a track of
    their own.

    Returns:
        ``(tracks, conflicts)``: each track its ``(frame, det_index)`` nodes sorted by frame, no
        two in one frame; each conflict the two nodes whose link the passes disagree on.
    """
    owner: dict[tuple[int, int], int] = {}
    conflicts = []
    next_id = 0
    for chain in _chains(fwd):
        next_id += 1
        owner[chain[0]] = next_id
        for a, b in zip(chain, chain[1:], strict=False):
            ba, bb = bwd.get(a), bwd.get(b)
            if ba is not None and bb is not None and ba != bb:
                conflicts.append((a, b))
                next_id += 1
            owner[b] = next_id
    frames_of: dict[int, set[int]] = {}
    for (frame, _), tid in owner.items():
        frames_of.setdefault(tid, set()).add(frame)
    for chain in _chains(bwd):
        k = 0
        while k < len(chain):
            if chain[k] in owner:
                k += 1
                continue
            stop = k
            while stop < len(chain) and chain[stop] not in owner:
                stop += 1
            run = chain[k:stop]
            sides = {owner[chain[i]] for i in (k - 1, stop) if 0 <= i < len(chain)}
            frames = {f for f, _ in run}
            if len(sides) == 1 and not frames & frames_of[next(iter(sides))]:
                tid = sides.pop()
            else:
                next_id += 1
                tid = next_id
                frames_of[tid] = set()
            for node in run:
                owner[node] = tid
            frames_of[tid] |= frames
            k = stop
    tracks: dict[int, list[tuple[int, int]]] = {}
    for node, tid in owner.items():
        tracks.setdefault(tid, []).append(node)
    return sorted(sorted(nodes) for nodes in tracks.values()), conflicts


# --------------------------------------------------------------------------- stitching


#: Boxes at each end of a track whose centres give its velocity for stitching.
_MOTION_BOXES = 8


def _end_motion(rows: np.ndarray, at_end: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """``(centre, velocity per frame, height)`` at one end of a track from its last (first) boxes."""
    part = rows[-_MOTION_BOXES:] if at_end else rows[:_MOTION_BOXES]
    frames = part[:, 0]
    centre = np.stack([(part[:, 1] + part[:, 3]) / 2, (part[:, 2] + part[:, 4]) / 2], axis=1)
    edge = -1 if at_end else 0
    moving = len(part) >= 3 and np.ptp(frames) > 0  # fewer boxes: too noisy for a velocity
    velocity = np.polyfit(frames - frames[edge], centre, 1)[0] if moving else np.zeros(2)
    return centre[edge], velocity, float(np.mean(part[:, 4] - part[:, 2]))


def _mean_embedding(nodes: list[tuple[int, int]], embeddings: Sequence[np.ndarray]) -> np.ndarray | None:
    vectors = [embeddings[f - 1][k] for f, k in nodes if len(embeddings[f - 1]) > k]
    if not vectors:
        return None
    mean = np.mean(vectors, axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None


def stitch_tracks(chains: list[list[tuple[int, int]]], dets: Sequence[np.ndarray], fps: float, cfg: Any,
                  embeddings: Sequence[np.ndarray] | None = None) -> tuple[list[list[tuple[int, int]]], int]:
    """Join tracks across gaps the online trackers could not bridge.

    A pair of tracks the consistency filter would trust (``min_track_frames``, ``min_mean_score``),
    ``a`` ending and ``b`` starting 1 to ``stitch_max_gap_s * fps`` frames later, is a candidate
    where each one's motion at its end (a line through the centres of its last / first
    :data:`_MOTION_BOXES` boxes), carried across the gap, lands within ``stitch_max_distance`` box
    heights of the other's end, their heights differ by less than half, and, with embeddings,
    the cosine similarity of their mean appearance is at least ``stitch_min_similarity``.
    Candidates are taken best first (appearance, then distance); each track ends and starts at
    most one join, so the result has no two boxes of one track in a frame.

    Args:
        chains: Tracks, each ``(frame, det_index)`` nodes sorted by frame.
        dets: Per frame ``(N, 6)`` detections.
        fps: Frame rate (the gap limit is in seconds).
        cfg: ``pseudo_labels`` params.
        embeddings: Per frame ``(N, D)`` unit appearance embeddings of ``dets``, or None.

    Returns:
        ``(tracks, joins)``: the stitched tracks (sorted) and how many joins were made.
    """
    max_gap = int(round(cfg.stitch_max_gap_s * fps))
    if max_gap < 1 or len(chains) < 2:
        return chains, 0
    rows = [_track_rows(nodes, dets) for nodes in chains]
    # only tracks the filter would trust: a join must not lend a clutter blip the weight of a person
    sure = [len(r) >= cfg.min_track_frames and float(r[:, 5].mean()) >= cfg.min_mean_score for r in rows]
    heads = [_end_motion(r, at_end=False) for r in rows]
    tails = [_end_motion(r, at_end=True) for r in rows]
    looks = [_mean_embedding(nodes, embeddings) for nodes in chains] if embeddings is not None else None
    candidates = []
    for a, ra in enumerate(rows):
        for b, rb in enumerate(rows):
            gap = int(rb[0, 0] - ra[-1, 0])
            if a == b or not 1 <= gap <= max_gap or not (sure[a] and sure[b]):
                continue
            (ca, va, ha), (cb, vb, hb) = tails[a], heads[b]
            if max(ha, hb) > 1.5 * min(ha, hb):
                continue
            height = (ha + hb) / 2
            # each end's motion carried across the gap; the better of the two (a short track's is poor)
            miss = min(np.linalg.norm(ca + va * gap - cb), np.linalg.norm(cb - vb * gap - ca)) / max(height, 1.0)
            if miss > cfg.stitch_max_distance:
                continue
            similarity = 1.0
            if looks is not None:
                if looks[a] is None or looks[b] is None:
                    continue
                similarity = float(looks[a] @ looks[b])
                if similarity < cfg.stitch_min_similarity:
                    continue
            candidates.append((-similarity, miss, a, b))
    successor: dict[int, int] = {}
    predecessor: dict[int, int] = {}
    for _, _, a, b in sorted(candidates):
        if a in successor or b in predecessor:
            continue
        successor[a] = b
        predecessor[b] = a
    out = []
    for start in range(len(chains)):
        if start in predecessor:
            continue
        nodes, k = list(chains[start]), start
        while k in successor:
            k = successor[k]
            nodes.extend(chains[k])
        out.append(nodes)
    return sorted(out), len(successor)


# --------------------------------------------------------------------------- filter, interpolation


def _track_rows(nodes: list[tuple[int, int]], dets: Sequence[np.ndarray]) -> np.ndarray:
    """``(K, 7)`` ``frame, x1, y1, x2, y2, score, det_index`` of a track's detected boxes."""
    return np.array([[f, *dets[f - 1][k, :5], k] for f, k in nodes], dtype=np.float64)


def _cut_jumps(rows: np.ndarray, max_jump: float) -> list[int]:
    """Indices ``i`` where the step from box ``i - 1`` to box ``i`` is implausible."""
    if len(rows) < 2:
        return []
    centre = np.stack([(rows[:, 1] + rows[:, 3]) / 2, (rows[:, 2] + rows[:, 4]) / 2], axis=1)
    height = np.maximum(rows[:, 4] - rows[:, 2], 1.0)
    step = np.linalg.norm(np.diff(centre, axis=0), axis=1)
    frames = np.diff(rows[:, 0])
    per_frame = step / np.maximum((height[1:] + height[:-1]) / 2, 1.0) / np.maximum(frames, 1)
    return [int(i) + 1 for i in np.nonzero(per_frame > max_jump)[0]]


def _interpolate(rows: np.ndarray, max_gap: int) -> np.ndarray:
    """``rows`` plus linearly interpolated boxes in gaps of at most ``max_gap`` frames (score NaN)."""
    out = [rows]
    for a, b in zip(rows[:-1], rows[1:], strict=True):
        gap = int(b[0] - a[0]) - 1
        if 0 < gap <= max_gap:
            t = np.arange(1, gap + 1)[:, None] / (gap + 1)
            boxes = a[1:5] + t * (b[1:5] - a[1:5])
            filled = np.column_stack([a[0] + np.arange(1, gap + 1), boxes, np.full(gap, np.nan), np.full(gap, -1)])
            out.append(filled)
    merged = np.concatenate(out)
    return merged[np.argsort(merged[:, 0], kind="stable")]


def pseudo_tracks(dets: Sequence[np.ndarray], fwd: dict[tuple[int, int], int], bwd: dict[tuple[int, int], int],
                  cfg: Any, *, fps: float = 0.0, embeddings: Sequence[np.ndarray] | None = None
                  ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """MOT ground truth from cached detections and the two passes; uncertain boxes get consider flag 0.

    Args:
        dets: Per frame (frame 1 first) ``(N, 6)`` detections in pixels.
        fwd: The forward pass, ``{(frame, det_index): id}``.
        bwd: The backward pass.
        cfg: ``pseudo_labels`` params (:class:`motops.config.PseudoLabelParams`).
        fps: Frame rate, for stitching (0: no stitching).
        embeddings: Per frame ``(N, D)`` unit embeddings of ``dets`` for stitching, or None.

    Returns:
        ``(gt, counts)``: gt with :data:`motops.data.mot.MOT_COLUMNS` (``left = x1 + 1``, class 1,
        visibility 1; ``conf`` 1 certain, 0 uncertain) and counts (``tracks``, ``tracks_uncertain``,
        ``conflicts``, ``stitched``, ``jumps``, ``interpolated``).
    """
    chains, conflicts = fuse_passes(fwd, bwd)
    chains, stitched = stitch_tracks(chains, dets, fps, cfg, embeddings)
    conflict_frames: dict[tuple[int, int], int] = {}
    for a, b in conflicts:
        conflict_frames[a] = a[0]
        conflict_frames[b] = b[0]
    pieces: list[tuple[np.ndarray, set[int]]] = []  # (rows, frames marked by a cut or a conflict)
    jumps = 0
    for nodes in chains:
        rows = _track_rows(nodes, dets)
        marked = {conflict_frames[n] for n in nodes if n in conflict_frames}
        cuts = _cut_jumps(rows, cfg.max_jump)
        jumps += len(cuts)
        for start, stop in zip([0, *cuts], [*cuts, len(rows)], strict=True):
            piece = rows[start:stop]
            edge = set()
            if start > 0:
                edge.add(int(piece[0, 0]))
            if stop < len(rows):
                edge.add(int(piece[-1, 0]))
            pieces.append((piece, marked | edge))
    out, uncertain_tracks, interpolated, next_id = [], 0, 0, 1
    for rows, marked in pieces:
        scores = rows[:, 5]
        trusted = len(rows) >= cfg.min_track_frames and float(scores.mean()) >= cfg.min_mean_score
        uncertain_tracks += not trusted
        full = _interpolate(rows, cfg.max_gap)
        interpolated += len(full) - len(rows)
        frames = full[:, 0].astype(int)
        near = np.zeros(len(full), bool)
        for f in marked:
            near |= np.abs(frames - f) <= cfg.conflict_margin
        certain = trusted & ~near & ~(full[:, 5] < cfg.uncertain_below)
        if certain.sum() < cfg.min_track_frames:  # what is left certain is too short to trust (and to validate)
            certain[:] = False
        out.append(np.column_stack([frames, np.full(len(full), next_id), full[:, 1:5], certain]))
        next_id += 1
    counts = {"tracks": len(pieces), "tracks_uncertain": uncertain_tracks, "conflicts": len(conflicts),
              "stitched": stitched, "jumps": jumps, "interpolated": interpolated}
    if not out:
        return _empty_gt(), counts
    arr = np.concatenate(out)
    gt = pl.DataFrame({
        "frame": arr[:, 0].astype(np.int64), "id": arr[:, 1].astype(np.int64),
        "left": arr[:, 2] + 1.0, "top": arr[:, 3] + 1.0,
        "width": arr[:, 4] - arr[:, 2], "height": arr[:, 5] - arr[:, 3],
        "conf": arr[:, 6].astype(np.float64), "class": np.ones(len(arr), np.int64),
        "visibility": np.ones(len(arr)),
    }).sort(["frame", "id"])
    return gt, counts


def _empty_gt() -> pl.DataFrame:
    return pl.DataFrame(schema={"frame": pl.Int64, "id": pl.Int64, "left": pl.Float64, "top": pl.Float64,
                                "width": pl.Float64, "height": pl.Float64, "conf": pl.Float64, "class": pl.Int64,
                                "visibility": pl.Float64})


def uncertain_spans(gt: pl.DataFrame) -> list[dict[str, int]]:
    """Runs of consecutive uncertain frames per id: ``[{"id", "first", "last"}]``, sorted."""
    spans = []
    bad = gt.filter(pl.col("conf") == 0).sort(["id", "frame"])
    for (tid,), rows in bad.group_by("id", maintain_order=True):
        frames = rows["frame"].to_list()
        first = prev = frames[0]
        for f in frames[1:]:
            if f != prev + 1:
                spans.append({"id": int(tid), "first": first, "last": prev})
                first = f
            prev = f
        spans.append({"id": int(tid), "first": first, "last": prev})
    return sorted(spans, key=lambda s: (s["first"], s["id"]))


def batch_stats(gt: pl.DataFrame, counts: dict[str, Any], *, frames: int, detections: int) -> dict[str, Any]:
    """Per-batch statistics: tracks, boxes kept, share marked uncertain, spans to review."""
    boxes = gt.height
    uncertain = int((gt["conf"] == 0).sum()) if boxes else 0
    return {
        "frames": frames, "detections": detections, **counts, "boxes": boxes, "boxes_uncertain": uncertain,
        "uncertain_share": round(uncertain / boxes, 4) if boxes else 0.0,
        "uncertain_spans": len(uncertain_spans(gt)) if boxes else 0,
        "frames_to_review": int(gt.filter(pl.col("conf") == 0)["frame"].n_unique()) if boxes else 0,
    }


# --------------------------------------------------------------------------- a batch


def label_frames(frames: Iterable[tuple[int, np.ndarray]], labeller: Labeller, fps: float, cfg: Any, *,
                 length: int | None = None, progress: bool = True) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Detect (and embed) every frame once, track forward and backward, fuse, stitch, filter, interpolate.

    Args:
        frames: ``(frame, image_bgr)`` from frame 1.
        labeller: From :func:`load_labeller`.
        fps: Frame rate of the footage.
        cfg: ``pseudo_labels`` params.
        length: Frame count for the progress bar.
        progress: Show a tqdm bar (frames per second in its rate).

    Returns:
        ``(gt, stats)`` (see :func:`pseudo_tracks` and :func:`batch_stats`; stats add ``seconds``,
        ``frames_per_s`` and the detector used).
    """
    from tqdm import tqdm

    from motops.runtime import make_tracker

    start = time.perf_counter()
    estimate = make_tracker(labeller.tracker, frame_rate=fps, **labeller.tracker_params).motion_estimator()
    dets: list[np.ndarray] = []
    stitching = labeller.reid is not None and cfg.stitch_max_gap_s > 0  # embeddings serve stitching only
    embeddings: list[np.ndarray] | None = [] if stitching else None
    warps: list[np.ndarray] | None = [] if estimate is not None else None
    for _, image in tqdm(frames, total=length, disable=not progress, unit="frame", desc="pseudo-label"):
        dets.append(labeller.detector(image))
        if embeddings is not None:
            embeddings.append(labeller.reid(image, dets[-1][:, :4]))
        if warps is not None:
            warps.append(np.asarray(estimate(image), dtype=np.float64))
    fwd = track_pass(dets, labeller.tracker, labeller.tracker_params, fps, warps, backward=False)
    bwd = track_pass(dets, labeller.tracker, labeller.tracker_params, fps, warps, backward=True)
    gt, counts = pseudo_tracks(dets, fwd, bwd, cfg, fps=fps, embeddings=embeddings)
    seconds = time.perf_counter() - start
    stats = batch_stats(gt, counts, frames=len(dets), detections=int(sum(len(d) for d in dets)))
    stats.update(seconds=round(seconds, 2), frames_per_s=round(len(dets) / seconds, 2) if seconds else None,
                 **labeller.described)
    return gt, stats


def pseudo_label_batch(footage: str | Path, out_dir: str | Path, *, name: str, labeller: Labeller, cfg: Any,
                       champion: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Label an unlabelled batch and write it as a pseudo-labelled MOTChallenge dataset root.

    Writes ``out_dir/NAME/`` (``seqinfo.ini``, ``img1/``, ``gt/gt.txt``), ``out_dir/pseudo.json``
    (champion, settings, statistics) and the review task ``out_dir/review/`` when some boxes are
    uncertain (:func:`motops.pseudo.review.write_review_task`).

    Args:
        footage: A video file or a folder of frames (see :mod:`motops.pseudo.footage`).
        out_dir: The batch folder written (``data/raw/NAME`` in the inbox flow).
        name: Batch and sequence name.
        labeller: From :func:`load_labeller`.
        cfg: ``pseudo_labels`` params.
        champion: Which engine labelled, recorded (e.g. ``motops-tracker version 3``).

    Returns:
        The contents of ``pseudo.json``.

    Raises:
        DataFormatError: the footage cannot be decoded or has no frame rate, or the champion finds
            nobody it is sure of in it (one line naming the footage).
    """
    from motops.data.mot import SeqInfo, write_mot_sequence
    from motops.pseudo.footage import open_footage, write_frames
    from motops.pseudo.review import write_review_task

    footage, out_dir = Path(footage), Path(out_dir)
    seq_dir = out_dir / name
    with open_footage(footage) as source:
        fps, (width, height) = float(source.fps), source.size
        gt, stats = label_frames(write_frames(source, seq_dir / "img1"), labeller, fps, cfg, length=source.length,
                                 progress=progress)
    if gt.height == 0 or not (gt["conf"] > 0).any():
        raise DataFormatError(footage, f"the champion ({champion or labeller.described['detector']}) finds nobody it "
                                       f"is sure of in this footage ({stats['detections']} detections in "
                                       f"{stats['frames']} frames); label it by hand (a CVAT MOT 1.1 zip)")
    info = SeqInfo(name=name, im_dir="img1", fps=fps, length=stats["frames"], width=width, height=height,
                   im_ext=".jpg")
    write_mot_sequence(seq_dir, info, gt)
    review = write_review_task(out_dir, name) if stats["boxes_uncertain"] else None
    record = {"batch": name, "footage": footage.name, "champion": champion, "settings": cfg.model_dump(),
              "stats": stats, "review": review, "reviews_applied": []}
    (out_dir / PSEUDO_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return record


def champion_label(bundle: str | Path, detector_pt: str | Path | None, cfg: Any, champion: str, *,
                   progress: bool = True):
    """``label(footage, out_dir, name) -> pseudo.json record``: :func:`pseudo_label_batch` with the champion's labeller.

    What :func:`motops.data.inbox.admit_unlabelled` calls; the labeller is built per batch, for
    its frame size.
    """
    from motops.pseudo.footage import open_footage

    def label(footage: Path, out_dir: Path, name: str) -> dict[str, Any]:
        with open_footage(footage) as source:
            size = source.size
        labeller = load_labeller(bundle, detector_pt=detector_pt, imgsz=cfg.imgsz, conf=cfg.conf, frame_size=size)
        return pseudo_label_batch(footage, out_dir, name=name, labeller=labeller, cfg=cfg, champion=champion,
                                  progress=progress)

    return label
