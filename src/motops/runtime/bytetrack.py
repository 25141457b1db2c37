"""ByteTrack and BoT-SORT in numpy, scipy's ``lap`` assignment and OpenCV: no torch, no Ultralytics.

Built by :func:`motops.runtime.make_tracker` (the default ``impl="motops"``); the same
``(N, 6)`` detections in, ``(M, 8)`` tracks out interface and :class:`TrackerParams` as the
Ultralytics-backed peer (:class:`motops.tracking.ultralytics.UltralyticsTracker`), which stays
for training and benchmarks only.

One frame (``update``), as in ByteTrack (Zhang et al., 2022) and BoT-SORT (Aharon et al., 2022):

1. Detections with a non-empty box are split: ``conf >= track_high_thresh`` (high) and
   ``track_low_thresh < conf < track_high_thresh`` (low); the rest are discarded.
2. Confirmed tracks and lost tracks are predicted one frame ahead by the Kalman filter
   (:mod:`motops.runtime.kalman`: ``xyah`` for ByteTrack, ``xywh`` for BoT-SORT; a lost
   track's size velocity is zeroed first, so a box does not keep growing while unseen).
   BoT-SORT then moves every track (unconfirmed ones too) by the camera motion
   (:mod:`motops.runtime.gmc`), measured here or given ahead as ``warp``.
3. First association, confirmed + lost tracks with high detections: cost ``1 - IoU``
   (times the detection score with ``fuse_score``); BoT-SORT takes the smaller of that and
   half the cosine distance of the track's smoothed embedding and the detection's, where
   the pair overlaps by at least ``proximity_thresh`` IoU and that distance is at most
   ``1 - appearance_thresh``. Minimum-cost assignment up to ``match_thresh``.
4. Second association, still-unmatched *tracked* (not lost) tracks with low detections:
   IoU only, up to cost 0.5. Tracks still unmatched become lost.
5. Tracks born on the previous frame (unconfirmed) with the high detections left: as in
   step 3, up to cost 0.7; an unconfirmed track left unmatched is dropped.
6. High detections left with ``conf >= new_track_thresh`` start new tracks (confirmed at
   once on the first frame, otherwise when matched again on the next one); ids come from
   this instance's counter, starting at 1.
7. A lost track missed for more than ``int(track_buffer * frame_rate / 30)`` frames is
   dropped; it is no longer matchable from the next frame on. Of a tracked and a lost track
   overlapping by IoU > 0.85, the younger one is dropped.

Appearance, and which detections get an embedding (``TrackerParams.embed``): with
``"all"``, every kept detection is embedded, as in BoT-SORT. With ``"needed"``, the
embeddings are computed after the prediction and camera-motion steps, in one batched
``reid`` call, only for the high detections whose assignment appearance could change or
that start a track; see :meth:`ByteTracker._needs_embedding`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Final

import numpy as np

from motops.runtime.gmc import CameraMotion
from motops.runtime.kalman import KalmanFilter
from motops.runtime.matching import iou_matrix, linear_assignment
from motops.runtime.trackers import ReidFn, TrackerParams, check_warp
from motops.runtime.types import CLS, CONF, as_detections, empty_tracks

# The fixed thresholds of ByteTrack's later stages (not in params.yaml, as in both papers' code).
SECOND_STAGE_THRESH: Final = 0.5  # low-score boxes continue a track only with IoU > 0.5
UNCONFIRMED_THRESH: Final = 0.7  # a one-frame-old track is confirmed by a box with IoU > 0.3
DUPLICATE_IOU: Final = 0.85  # a tracked and a lost track overlapping more are one object
EMA_ALPHA: Final = 0.9  # weight of a track's past appearance in its smoothed embedding

# embed "needed": a track matched by IoU alone still gets a new embedding when its last one is
# this many frames old, so its smoothed embedding (EMA) follows the object at half rate at least.
# Synthetic val (5 fps, appearance on): IDF1 0.651 at 2 frames (7.7 crops per frame), 0.630 at
# 3, 0.631 at 5, 0.628 never; 0.648 embedding all 17.4 boxes.
FEATURE_REFRESH_FRAMES: Final = 2

_TRACKED, _LOST = 0, 1


class _Track:
    """One track's state; the tracker keeps lists of these and batches their Kalman steps."""

    __slots__ = ("mean", "cov", "state", "confirmed", "track_id", "score", "cls", "det_index", "frame_id",
                 "start_frame", "feat", "feat_frame")  # fmt: skip

    def __init__(self, mean: np.ndarray, cov: np.ndarray, det: np.ndarray, det_index: int, frame_id: int) -> None:
        self.mean, self.cov = mean, cov
        self.state = _TRACKED
        self.confirmed = frame_id == 1
        self.track_id = 0
        self.score, self.cls = float(det[CONF]), float(det[CLS])
        self.det_index = det_index
        self.frame_id = self.start_frame = frame_id
        self.feat: np.ndarray | None = None  # smoothed, L2-normalized embedding (BoT-SORT)
        self.feat_frame = 0  # the frame that last updated it

    def embed(self, feat: np.ndarray | None, frame_id: int) -> None:
        """Blend a detection's embedding into the smoothed one (EMA, ``EMA_ALPHA``); ``None``: keep it."""
        if feat is None:
            return
        self.feat_frame = frame_id
        if self.feat is None:
            self.feat = feat.copy()
        else:
            smooth = EMA_ALPHA * self.feat + (1 - EMA_ALPHA) * feat
            self.feat = smooth / np.linalg.norm(smooth)


class ByteTracker:
    """ByteTrack (``name="bytetrack"``) or BoT-SORT (``"botsort"``) on the motops array interface.

    Build it with :func:`motops.runtime.make_tracker`. See the module docstring for one frame.

    Attributes:
        name: ``"bytetrack"`` or ``"botsort"``.
        params: The validated :class:`TrackerParams`.
        frame_rate: Frames per second of the footage (scales ``track_buffer``).
        uses_appearance: Whether ``reid`` is called (BoT-SORT with ``with_reid`` and a callable).
        gmc: BoT-SORT's :class:`~motops.runtime.gmc.CameraMotion` (``None``: none compensated).
        reid_calls: ``reid`` calls made so far (at most one per frame).
        reid_boxes: Boxes embedded so far.
    """

    def __init__(self, name: str, params: TrackerParams, frame_rate: float, reid: ReidFn | None) -> None:
        self.name = name
        self.params = params
        self.frame_rate = frame_rate
        self.uses_appearance = params.uses_appearance(name, reid)
        self._reid = reid if self.uses_appearance else None
        self._kf = KalmanFilter("xywh" if name == "botsort" else "xyah")
        self._max_lost = params.max_frames_lost(frame_rate)
        compensate = name == "botsort" and params.gmc_method != "none"
        self.gmc = CameraMotion(params.gmc_method) if compensate else None
        self.reset()

    def reset(self) -> None:
        """Forget every track (tracked, lost) and the previous frame; restart ids at 1."""
        self._tracked: list[_Track] = []
        self._lost: list[_Track] = []
        self._frame_id = 0
        self._ids = itertools.count(1)
        self.reid_calls = 0
        self.reid_boxes = 0
        if self.gmc is not None:
            self.gmc.reset()

    def motion_estimator(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """A ``frame -> (2, 3) warp`` callable giving the camera-motion warps this tracker would compute.

        A second :class:`~motops.runtime.gmc.CameraMotion` configured like the tracker's, so it
        can run in another thread: feed it the frames given to :meth:`update`, in the same order,
        and pass each result as ``update(..., warp=...)``. ``None`` when the tracker compensates
        no camera motion (``bytetrack``, ``gmc_method: none``) or its method also needs the
        detections (``orb`` ignores the detected boxes).
        """
        if self.gmc is None or self.gmc.method == "orb":
            return None
        return CameraMotion(self.gmc.method, self.gmc.width, self.gmc.max_corners).apply

    # ------------------------------------------------------------------ one frame

    def update(self, dets: np.ndarray, frame: np.ndarray | None = None, warp: np.ndarray | None = None) -> np.ndarray:
        """Associate one frame's detections with the tracks.

        Args:
            dets: ``(N, 6)`` ``[x1, y1, x2, y2, conf, cls]`` in pixels (see :mod:`motops.runtime.types`).
            frame: The BGR image ``(H, W, 3)`` uint8 the detections come from, or ``None`` for
                motion-only tracking (then neither camera-motion compensation nor appearance).
            warp: BoT-SORT only: this frame's ``(2, 3)`` camera-motion warp, computed ahead by
                :meth:`motion_estimator` over exactly the frames given to this tracker (then
                give it on every update). ``None``: the tracker measures it itself.

        Returns:
            ``(M, 8)`` float32 ``[x1, y1, x2, y2, track_id, conf, cls, det_index]`` for the
            confirmed tracks updated on this frame; ``det_index`` is the row of ``dets``.
        """
        dets = as_detections(dets, name=f"{self.name} input detections, frame {self._frame_id}")
        if frame is not None and (not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3)):
            raise ValueError(f"{self.name}: frame must be a BGR image array (H, W, 3) or None, got {type(frame)}")
        if warp is not None:
            warp = check_warp(self.name, warp)
        self._frame_id += 1
        fid, p = self._frame_id, self.params
        boxes = dets[:, :4].astype(np.float64)
        conf = dets[:, CONF].astype(np.float64)
        wh = boxes[:, 2:] - boxes[:, :2]
        valid = (wh[:, 0] > 0) & (wh[:, 1] > 0)  # the xyah measurement divides by the height
        high = np.flatnonzero(valid & (conf >= p.track_high_thresh))
        low = np.flatnonzero(valid & (conf > p.track_low_thresh) & (conf < p.track_high_thresh))

        unconfirmed = [t for t in self._tracked if not t.confirmed]
        pool = [t for t in self._tracked if t.confirmed] + self._lost
        self._predict(pool)
        if self.gmc is not None and frame is not None:
            if warp is None:
                warp = self.gmc.apply(frame, boxes[high])
            self._warp(pool + unconfirmed, warp)
        pool_boxes = self._boxes(pool)
        unconf_boxes = self._boxes(unconfirmed)

        feats: dict[int, np.ndarray] = {}
        if self._reid is not None and frame is not None:
            feats = self._embed(frame, boxes, conf, high, low, pool, pool_boxes, unconfirmed, unconf_boxes)

        matched: list[tuple[_Track, int]] = []  # (track, detection row): Kalman-updated together below
        refound: list[_Track] = []
        # 3. confirmed + lost tracks with the high detections
        cost = self._cost(pool, pool_boxes, high, boxes, conf, feats)
        pairs, u_track, u_high = linear_assignment(cost, p.match_thresh)
        for ti, di in pairs:
            track = pool[ti]
            if track.state != _TRACKED:
                refound.append(track)
            matched.append((track, int(high[di])))
        # 4. still-unmatched tracked tracks with the low detections, IoU only
        rest = [pool[i] for i in u_track if pool[i].state == _TRACKED]
        rest_boxes = pool_boxes[[i for i in u_track if pool[i].state == _TRACKED]]
        pairs2, u_rest, _ = linear_assignment(1.0 - iou_matrix(rest_boxes, boxes[low]), SECOND_STAGE_THRESH)
        matched.extend((rest[ti], int(low[di])) for ti, di in pairs2)
        newly_lost = [rest[i] for i in u_rest]
        for track in newly_lost:
            track.state = _LOST
        # 5. unconfirmed tracks with the high detections left
        left = high[u_high]
        cost = self._cost(unconfirmed, unconf_boxes, left, boxes, conf, feats)
        pairs3, u_unconf, u_left = linear_assignment(cost, UNCONFIRMED_THRESH)
        matched.extend((unconfirmed[ti], int(left[di])) for ti, di in pairs3)
        dropped = {id(unconfirmed[i]) for i in u_unconf}
        self._correct(matched, dets, boxes, feats, fid)
        # 6. new tracks
        born = [int(d) for d in left[u_left] if conf[d] >= p.new_track_thresh]
        new_tracks = self._start(born, dets, boxes, feats, fid)
        # 7. bookkeeping
        lost = [t for t in self._lost if t.state == _LOST and fid - t.frame_id <= self._max_lost]
        refound_ids = {id(t) for t in refound}
        tracked = [t for t in self._tracked if t.state == _TRACKED and id(t) not in dropped]
        tracked += new_tracks + refound
        lost = [t for t in lost if id(t) not in refound_ids] + newly_lost
        self._tracked, self._lost = _drop_duplicates(tracked, lost, self._kf)
        out = [t for t in self._tracked if t.confirmed]
        if not out:
            return empty_tracks()
        rows = np.empty((len(out), 8), dtype=np.float64)
        rows[:, :4] = self._kf.xyxy(np.stack([t.mean for t in out]))
        rows[:, 4:] = [(t.track_id, t.score, t.cls, t.det_index) for t in out]
        return rows.astype(np.float32)

    # ------------------------------------------------------------------ steps

    def _predict(self, tracks: list[_Track]) -> None:
        if not tracks:
            return
        means = np.stack([t.mean for t in tracks])
        covs = np.stack([t.cov for t in tracks])
        unseen = np.array([t.state != _TRACKED for t in tracks])
        # A lost track's size is held: its height velocity (xyah) or size velocities (xywh) are zeroed.
        means[unseen, 7] = 0.0
        if self._kf.form == "xywh":
            means[unseen, 6] = 0.0
        means, covs = self._kf.predict(means, covs)
        for t, m, c in zip(tracks, means, covs, strict=True):
            t.mean, t.cov = m, c

    def _warp(self, tracks: list[_Track], warp: np.ndarray) -> None:
        if not tracks:
            return
        means, covs = self._kf.warp(np.stack([t.mean for t in tracks]), np.stack([t.cov for t in tracks]), warp)
        for t, m, c in zip(tracks, means, covs, strict=True):
            t.mean, t.cov = m, c

    def _boxes(self, tracks: list[_Track]) -> np.ndarray:
        return self._kf.xyxy(np.stack([t.mean for t in tracks])) if tracks else np.zeros((0, 4))

    def _iou_cost(self, track_boxes: np.ndarray, rows: np.ndarray, boxes: np.ndarray, conf: np.ndarray):
        """``(1 - IoU, IoU)`` of tracks x detections ``rows``; the cost is score-fused with ``fuse_score``."""
        iou = iou_matrix(track_boxes, boxes[rows])
        sim = iou * conf[rows][None, :] if self.params.fuse_score else iou
        return 1.0 - sim, iou

    def _cost(
        self,
        tracks: list[_Track],
        track_boxes: np.ndarray,
        rows: np.ndarray,
        boxes: np.ndarray,
        conf: np.ndarray,
        feats: dict[int, np.ndarray],
    ) -> np.ndarray:
        """First-stage cost ``(len(tracks), len(rows))``: IoU, and BoT-SORT's gated appearance."""
        cost, iou = self._iou_cost(track_boxes, rows, boxes, conf)
        if not feats or cost.size == 0:
            return cost
        t_has = [i for i, t in enumerate(tracks) if t.feat is not None]
        d_has = [j for j, r in enumerate(rows) if int(r) in feats]
        if not t_has or not d_has:
            return cost
        t_feat = np.stack([tracks[i].feat for i in t_has])
        d_feat = np.stack([feats[int(rows[j])] for j in d_has])
        emb = np.maximum(0.0, 1.0 - t_feat @ d_feat.T) / 2.0  # cosine distance / 2, in [0, 1]
        p = self.params
        emb[emb > 1.0 - p.appearance_thresh] = 1.0
        emb[iou[np.ix_(t_has, d_has)] < p.proximity_thresh] = 1.0
        sub = cost[np.ix_(t_has, d_has)]
        cost[np.ix_(t_has, d_has)] = np.minimum(sub, emb)
        return cost

    def _correct(
        self, matched: list[tuple[_Track, int]], dets: np.ndarray, boxes: np.ndarray,
        feats: dict[int, np.ndarray], fid: int,
    ) -> None:  # fmt: skip
        """Kalman-update every matched track with its detection (one batched update); mark it tracked."""
        if not matched:
            return
        tracks = [t for t, _ in matched]
        rows = [d for _, d in matched]
        means, covs = self._kf.update(
            np.stack([t.mean for t in tracks]), np.stack([t.cov for t in tracks]), self._kf.measure(boxes[rows])
        )
        for t, d, m, c in zip(tracks, rows, means, covs, strict=True):
            t.mean, t.cov = m, c
            t.state, t.confirmed, t.frame_id = _TRACKED, True, fid
            t.score, t.cls, t.det_index = float(dets[d, CONF]), float(dets[d, CLS]), d
            t.embed(feats.get(d), fid)

    def _start(
        self, rows: list[int], dets: np.ndarray, boxes: np.ndarray, feats: dict[int, np.ndarray], fid: int
    ) -> list[_Track]:
        if not rows:
            return []
        means, covs = self._kf.initiate(self._kf.measure(boxes[rows]))
        tracks = []
        for d, m, c in zip(rows, means, covs, strict=True):
            track = _Track(m, c, dets[d], d, fid)
            track.track_id = next(self._ids)
            track.embed(feats.get(d), fid)
            tracks.append(track)
        return tracks

    # ------------------------------------------------------------------ appearance

    def _embed(
        self,
        frame: np.ndarray,
        boxes: np.ndarray,
        conf: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        pool: list[_Track],
        pool_boxes: np.ndarray,
        unconfirmed: list[_Track],
        unconf_boxes: np.ndarray,
    ) -> dict[int, np.ndarray]:
        """Embeddings of the detections that need one, ``{row: (D,) unit vector}``, from ONE ``reid`` call."""
        if self.params.embed == "all":
            rows = np.concatenate([high, low])
        else:
            rows = high[self._needs_embedding(high, boxes, conf, pool, pool_boxes, unconfirmed, unconf_boxes)]
        if len(rows) == 0:
            return {}
        rows = np.sort(rows)
        emb = np.asarray(self._reid(frame, np.ascontiguousarray(boxes[rows], dtype=np.float32)), dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(rows) or not np.isfinite(emb).all():
            raise ValueError(
                f"reid callable returned shape {emb.shape} for {len(rows)} boxes; "
                "expected a finite (N, D) array, one embedding per box"
            )
        self.reid_calls += 1
        self.reid_boxes += len(rows)
        norm = np.linalg.norm(emb, axis=1)
        # A zero embedding carries no appearance: that detection is matched by motion alone.
        return {int(r): e / n for r, e, n in zip(rows, emb, norm, strict=True) if n > 1e-12}

    def _needs_embedding(
        self,
        high: np.ndarray,
        boxes: np.ndarray,
        conf: np.ndarray,
        pool: list[_Track],
        pool_boxes: np.ndarray,
        unconfirmed: list[_Track],
        unconf_boxes: np.ndarray,
    ) -> np.ndarray:
        """Which high detections (a mask over ``high``) the ``"needed"`` rule embeds.

        Appearance enters only the cost of a (track with an embedding, high detection) pair
        that overlaps by ``IoU >= proximity_thresh``, in the first and the unconfirmed stages,
        and it can only *lower* that cost. Link a track and a detection when either their IoU
        cost is within the stage's threshold, or appearance could apply to them. Then:

        * a detection linked to exactly one track, which is linked to no other detection, and
          whose IoU cost is below the threshold is matched to that track whatever the
          embeddings: it is not embedded, unless the track's embedding was last updated
          :data:`FEATURE_REFRESH_FRAMES` or more frames ago (so the EMA keeps following the
          object's look; refreshing less often lost 2 IDF1 points on the 5-fps synthetic val);
        * a detection linked to nothing is matched to nothing; it starts a track if its score
          reaches ``new_track_thresh`` and is embedded then (the new track's first appearance),
          and is dropped otherwise, unembedded;
        * every other high detection is embedded: appearance may decide its match, and if it
          loses, it may start a track.

        Low-score detections are never embedded: they are matched by IoU alone, so their
        embedding would only feed the EMA of a track, from a box that is weak (often occluded).
        """
        p = self.params
        tracks = pool + unconfirmed
        track_boxes = np.concatenate([pool_boxes, unconf_boxes])
        thresh = np.r_[np.full(len(pool), p.match_thresh), np.full(len(unconfirmed), UNCONFIRMED_THRESH)]
        if not tracks or len(high) == 0:
            return conf[high] >= p.new_track_thresh
        cost, iou = self._iou_cost(track_boxes, high, boxes, conf)
        has_feat = np.array([t.feat is not None for t in tracks])
        by_iou = cost <= thresh[:, None]
        link = by_iou | ((iou >= p.proximity_thresh) & has_feat[:, None])
        det_links, track_links = link.sum(axis=0), link.sum(axis=1)
        partner = link.argmax(axis=0)
        cols = np.arange(len(high))
        certain = (
            (det_links == 1)
            & (track_links[partner] == 1)
            & (cost[partner, cols] < thresh[partner])
        )
        age = self._frame_id - np.array([t.feat_frame for t in tracks])
        certain &= age[partner] < FEATURE_REFRESH_FRAMES
        unlinked = det_links == 0
        return ~certain & (~unlinked | (conf[high] >= p.new_track_thresh))


def _drop_duplicates(tracked: list[_Track], lost: list[_Track], kf: KalmanFilter) -> tuple[list, list]:
    """Of a tracked and a lost track overlapping by IoU > :data:`DUPLICATE_IOU`, drop the younger one."""
    if not tracked or not lost:
        return tracked, lost
    iou = iou_matrix(kf.xyxy(np.stack([t.mean for t in tracked])), kf.xyxy(np.stack([t.mean for t in lost])))
    drop_a, drop_b = set(), set()
    for i, j in zip(*np.nonzero(iou > DUPLICATE_IOU), strict=True):
        age_a = tracked[i].frame_id - tracked[i].start_frame
        age_b = lost[j].frame_id - lost[j].start_frame
        if age_a > age_b:
            drop_b.add(j)
        else:
            drop_a.add(i)
    return [t for i, t in enumerate(tracked) if i not in drop_a], [t for j, t in enumerate(lost) if j not in drop_b]
