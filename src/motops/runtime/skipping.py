"""Frame skipping: run the detector every N-th frame and propagate the tracks in between.

Ultralytics has no frame-skipping mode, so this is written here. On a detection frame the
wrapped tracker runs as usual. On the frames in between, every track reported on the last
frame is moved by two independent estimates, blended:

* a constant-velocity prediction, the least-squares slope of the track's last ``history``
  *detection* boxes against their frame numbers (so a gap of missed detections, or a track
  that was lost for a while, still gives a correct per-frame velocity);
* dense optical flow (DIS or Farnebäck) from the previous frame to this one, computed on a
  downscaled grayscale image; the median flow inside the central part of the box shifts it.

The propagation starts from the matched detection box rather than the tracker's filtered
box, because that is where the object's pixels were measured, and the flow displaces pixels.
Propagated rows carry ``det_index = -1``. With ``detect_every=1`` the output is exactly the
wrapped tracker's.
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np

from motops.runtime.types import (
    DET_INDEX,
    DTYPE,
    TRACK_ID,
    Tracker,
    as_detections,
    as_tracks,
    empty_tracks,
)

FLOW_METHODS: Final = ("dis", "farneback")

# Blend of the two box estimates on a propagated frame. Flow measures where the object's
# pixels actually went on *this* frame (it follows acceleration and turns); the
# constant-velocity prediction only extrapolates the past, but it is immune to flow noise on
# weakly textured objects and to background pixels inside the box. Flow gets the larger share;
# the prediction damps its per-frame noise.
FLOW_WEIGHT: Final = 0.7
PREDICTION_WEIGHT: Final = 1.0 - FLOW_WEIGHT

# Median flow is taken over the central part of the box: its border holds background pixels
# (and, after a few propagated frames, the box itself may be slightly off the object).
BOX_INNER_FRACTION: Final = 0.6
# A box whose central part covers fewer flow pixels than this (per side) gives no flow
# estimate; a median over a handful of pixels is noise.
MIN_FLOW_PIXELS: Final = 3
# The median is taken over this many x this many flow pixels spread evenly over the central
# part (every pixel of a small box, a regular subsample of a large one), for all boxes in one
# array operation. Against the exact median over every pixel of the central part, box by box:
# the same IDF1 over five synthetic sequences (0.446 both), 2.5 -> 0.5 ms per propagated frame
# of 20-35 tracks.
FLOW_GRID: Final = 8

# DIS settings: OpenCV's cheapest preset, its pyramid stopped at half the (already
# downscaled) frame. Measured on 640x360 footage: finest scale 0 (full resolution) made a
# propagated frame cost 13.9 ms, scale 1 5.3 ms, scale 2 (the preset's own) 3.2 ms, with the
# same IDF1 (0.446 / 0.447 / 0.447 over five synthetic sequences: 8-35 people, 10-30 fps,
# static/pan/jitter cameras, people down to 10 px high). Scale 2 is too coarse for a box
# moving a few pixels per frame, though (4.2 px error against 1.1 px at scale 1 in the
# constant-speed unit test), so scale 1 it is.
DIS_PRESET: Final = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST
DIS_FINEST_SCALE: Final = 1
# Farneback: pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags (OpenCV's documented example values).
FARNEBACK_ARGS: Final = (0.5, 3, 15, 3, 5, 1.2, 0)

DetectFn = Callable[[np.ndarray], np.ndarray]


class _Flow:
    """Dense flow along a frame sequence; one per thread (the DIS object keeps buffers)."""

    def __init__(self, method: str, scale: float) -> None:
        self.method, self.scale = method, scale
        self._dis = None  # built on first use: the DIS object holds buffers sized to the frames
        self._prev: np.ndarray | None = None  # the previous frame, gray and downscaled

    def advance(self, frame: np.ndarray, want_flow: bool) -> np.ndarray | None:
        """Take the next frame; its flow from the previous one when ``want_flow`` (None without a previous frame)."""
        gray = self.gray(frame)
        flow = self.flow(self._prev, gray) if want_flow and self._prev is not None else None
        self._prev = gray
        return flow

    def gray(self, frame: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        if gray.dtype != np.uint8:
            gray = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        if self.scale < 1.0:
            gray = cv2.resize(gray, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
        return gray

    def flow(self, prev: np.ndarray, curr: np.ndarray) -> np.ndarray | None:
        """Dense flow ``(h, w, 2)`` from ``prev`` to ``curr`` in downscaled pixels (None: sizes differ)."""
        if prev.shape != curr.shape:  # resolution changed mid-stream: no valid flow for this frame
            return None
        if self.method == "dis":
            if self._dis is None:
                self._dis = cv2.DISOpticalFlow_create(DIS_PRESET)
                self._dis.setFinestScale(DIS_FINEST_SCALE)
            return self._dis.calc(prev, curr, None)
        return cv2.calcOpticalFlowFarneback(prev, curr, None, *FARNEBACK_ARGS)


@dataclass(frozen=True)
class Ahead:
    """What :meth:`SkippingTracker.precompute` computed for one frame ahead of :meth:`SkippingTracker.step`."""

    flow: np.ndarray | None  # dense flow from the previous frame (propagated frames only)
    warp: np.ndarray | None  # the tracker's camera-motion warp (detection frames, BoT-SORT with GMC)


@dataclass
class _TrackState:
    """What is remembered per track id between frames."""

    history: deque[tuple[int, np.ndarray]]  # (frame index, detection box xyxy) of the last detections
    velocity: np.ndarray | None = None  # per-frame velocity fitted on ``history`` (None: < 2 boxes)
    box: np.ndarray = field(default_factory=lambda: np.zeros(4))  # latest (possibly propagated) box
    last_seen: int = 0  # last frame on which the wrapped tracker reported the track


class SkippingTracker:
    """Runs a detector every ``detect_every`` frames and propagates tracks by flow in between.

    Args:
        tracker: Any tracker with ``update(dets, frame) -> tracks`` and ``reset()`` (e.g. from
            :func:`motops.runtime.make_tracker`).
        detect_every: Run ``detect_fn`` and the tracker on frames ``0, N, 2N, ...``; ``1`` runs
            them on every frame. Raising it saves detector time and loses accuracy on fast or
            turning objects.
        flow: Dense optical flow on the frames in between: ``"dis"`` (fast, the default) or
            ``"farneback"`` (smoother, about three times slower).
        history: Number of past detection boxes per track the velocity is fitted on (>= 2).
            Raising it gives a steadier velocity that reacts later to a change of speed.
        flow_scale: The frames are downscaled by this factor before computing flow. Raising it
            (up to 1) gives more precise flow at a higher cost. The default 0.4 (256x144 for
            640x360 footage) scored the same IDF1 as 0.5 (0.446 against 0.447 over five
            synthetic sequences) at 0.5 ms less per propagated frame.
        max_gap: Frames a track's history is kept after the tracker stopped reporting it, so a
            track that comes back after missed detections keeps its velocity. Raising it costs
            a little memory.

    Raises:
        ValueError: An argument is out of range or ``flow`` is not a known method.
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        detect_every: int = 1,
        flow: str = "dis",
        history: int = 3,
        flow_scale: float = 0.4,
        max_gap: int = 90,
    ) -> None:
        if not (callable(getattr(tracker, "update", None)) and callable(getattr(tracker, "reset", None))):
            raise ValueError(f"SkippingTracker: {tracker!r} has no update(dets, frame) and reset() methods")
        if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
            raise ValueError(f"SkippingTracker: detect_every={detect_every!r}; expected an integer >= 1")
        if flow not in FLOW_METHODS:
            close = difflib.get_close_matches(str(flow), FLOW_METHODS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"SkippingTracker: flow={flow!r}{hint}; expected one of {list(FLOW_METHODS)}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 2:
            raise ValueError(f"SkippingTracker: history={history!r}; expected an integer >= 2 (two boxes per velocity)")
        if not 0.0 < flow_scale <= 1.0:
            raise ValueError(f"SkippingTracker: flow_scale={flow_scale!r}; expected a factor in (0, 1]")
        if isinstance(max_gap, bool) or not isinstance(max_gap, int) or max_gap < 0:
            raise ValueError(f"SkippingTracker: max_gap={max_gap!r}; expected an integer >= 0")
        self.tracker = tracker
        self.detect_every = detect_every
        self.flow = flow
        self.history = history
        self.flow_scale = float(flow_scale)
        self.max_gap = max_gap
        self.reset()

    @property
    def frame_index(self) -> int:
        """Index of the next frame :meth:`step` will process (0 before the first)."""
        return self._t

    def is_detection_frame(self, index: int) -> bool:
        """Whether frame ``index`` (0-based) runs the detector."""
        return index % self.detect_every == 0

    def reset(self) -> None:
        """Forget all tracks, the flow reference frame and the frame counter; reset the tracker."""
        self.tracker.reset()
        self._t = 0
        self._states: dict[int, _TrackState] = {}
        self._last = empty_tracks()
        self._engine = _Flow(self.flow, self.flow_scale)  # the flow when step() is given none

    def precompute(self, frames: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray, Ahead]]:
        """``(index, frame, ahead)`` for ``frames``: what depends only on the frames, computed ahead.

        The optical flow of the frames this tracker will propagate and, when the wrapped tracker
        offers a ``motion_estimator()`` (BoT-SORT's camera-motion compensation), the camera-motion
        warp of the frames it will see. Neither depends on the tracks, so both can be computed
        on another core (e.g. in the decoding thread of :func:`motops.runtime.video.prefetch`)
        while this tracker works on earlier frames; pass each ``ahead`` to :meth:`step`. The
        frames must be the ones then given to :meth:`step`, in order, starting right after a
        :meth:`reset` (or construction). The tracks are the same as without it.

        Args:
            frames: ``(index, frame_bgr)`` pairs, e.g. a frame source.
        """
        engine = _Flow(self.flow, self.flow_scale)  # its own DIS object: it may run in another thread
        make_estimator = getattr(self.tracker, "motion_estimator", None)
        estimator = make_estimator() if callable(make_estimator) else None
        for position, (index, frame) in enumerate(frames):
            detection = self.is_detection_frame(position)
            warp = estimator(frame) if estimator is not None and detection else None
            yield index, frame, Ahead(flow=self._next_flow(engine, position, frame), warp=warp)

    def _next_flow(self, engine: _Flow, t: int, frame: np.ndarray) -> np.ndarray | None:
        """Frame ``t``'s flow from frame ``t - 1`` if ``t`` is propagated; nothing is computed at ``detect_every=1``."""
        return engine.advance(frame, not self.is_detection_frame(t)) if self.detect_every > 1 else None

    def step(self, frame: np.ndarray, detect_fn: DetectFn, ahead: Ahead | None = None) -> np.ndarray:
        """Process the next frame.

        Args:
            frame: BGR image ``(H, W, 3)`` uint8 (or grayscale ``(H, W)``).
            detect_fn: ``frame -> (N, 6)`` detections ``[x1, y1, x2, y2, conf, cls]``; called only
                on detection frames.
            ahead: What :meth:`precompute` gave for this frame. Left out, the flow (and the
                tracker's camera motion) are computed here; give it for every frame or none.

        Returns:
            ``(M, 8)`` float32 tracks ``[x1, y1, x2, y2, track_id, conf, cls, det_index]``: the
            tracker's output on a detection frame, the propagated tracks of the last detection
            frame (``det_index = -1``) otherwise.
        """
        if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3):
            raise ValueError(
                f"SkippingTracker.step: frame {self._t} must be an image array (H, W[, 3]), got {type(frame).__name__}"
            )
        t = self._t
        self._t += 1
        flow = self._next_flow(self._engine, t, frame) if ahead is None else ahead.flow
        if self.is_detection_frame(t):
            out = self._detect(t, frame, detect_fn, None if ahead is None else ahead.warp)
        else:
            out = self._propagate(t, flow)
        self._last = out
        return out

    def _detect(self, t: int, frame: np.ndarray, detect_fn: DetectFn, warp: np.ndarray | None) -> np.ndarray:
        dets = as_detections(detect_fn(frame), name=f"detect_fn output for frame {t}")
        update = self.tracker.update(dets, frame, warp=warp) if warp is not None else self.tracker.update(dets, frame)
        tracks = as_tracks(update, name=f"tracker output for frame {t}")
        if self.detect_every == 1:  # no frame is ever propagated: the per-track history would go unused
            return tracks
        for row in tracks:
            tid, di = int(row[TRACK_ID]), int(row[DET_INDEX])
            box = dets[di, :4].astype(np.float64) if di >= 0 else row[:4].astype(np.float64)
            state = self._states.get(tid)
            if state is None:
                state = self._states[tid] = _TrackState(history=deque(maxlen=self.history))
            state.history.append((t, box))
            state.velocity = _velocity(state.history)  # the history only changes here
            state.box, state.last_seen = box.copy(), t
        for tid in [k for k, s in self._states.items() if t - s.last_seen > self.max_gap]:
            del self._states[tid]
        return tracks

    def _propagate(self, t: int, flow: np.ndarray | None) -> np.ndarray:
        out = self._last.copy()
        out[:, DET_INDEX] = -1
        if not len(out):
            return out.astype(DTYPE, copy=False)
        states = [self._states[int(tid)] for tid in out[:, TRACK_ID]]
        base = np.stack([s.box for s in states])
        has_velocity = np.array([s.velocity is not None for s in states])
        velocity = np.stack([s.velocity if s.velocity is not None else np.zeros(4) for s in states])
        predicted = base + velocity
        if flow is not None:
            shift, has_flow = self._median_flows(flow, base)
        else:
            shift, has_flow = np.zeros((len(base), 2)), np.zeros(len(base), dtype=bool)
        flowed = base + np.tile(shift, 2)
        boxes = np.where(
            (has_flow & has_velocity)[:, None],
            FLOW_WEIGHT * flowed + PREDICTION_WEIGHT * predicted,
            np.where(has_flow[:, None], flowed, predicted),  # without a velocity, predicted == base
        )
        for state, box in zip(states, boxes, strict=True):
            state.box, state.last_seen = box, t
        out[:, :4] = boxes
        return out.astype(DTYPE, copy=False)

    def _median_flows(self, flow: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Median ``(dx, dy)`` in full-resolution pixels inside the central part of each box.

        The median is taken over a :data:`FLOW_GRID` x :data:`FLOW_GRID` grid of flow pixels
        spread evenly over the central part, all boxes in one array operation. Returns the
        shifts ``(n, 2)`` and whether each box had one (False: its central part covers fewer
        than :data:`MIN_FLOW_PIXELS` flow pixels per side, or lies outside the frame).
        """
        h, w = flow.shape[:2]
        center = (boxes[:, :2] + boxes[:, 2:]) / 2 * self.flow_scale
        half = (boxes[:, 2:] - boxes[:, :2]) * self.flow_scale * BOX_INNER_FRACTION / 2
        lo = np.maximum(np.floor(center - half), 0)
        hi = np.minimum(np.ceil(center + half), (w, h))
        ok = ((hi - lo) >= MIN_FLOW_PIXELS).all(axis=1)
        steps = (np.arange(FLOW_GRID) + 0.5) / FLOW_GRID
        pos = lo[:, None, :] + (hi - lo)[:, None, :] * steps[None, :, None]  # (n, grid, [x, y])
        xs = np.clip(pos[..., 0].astype(np.intp), 0, w - 1)
        ys = np.clip(pos[..., 1].astype(np.intp), 0, h - 1)
        samples = flow[ys[:, :, None], xs[:, None, :]].reshape(len(boxes), -1, 2)
        shift = np.median(samples, axis=1).astype(np.float64) / self.flow_scale
        shift[~ok] = 0.0
        return shift, ok


def _velocity(history: deque[tuple[int, np.ndarray]]) -> np.ndarray | None:
    """Least-squares per-frame velocity ``(4,)`` of the boxes in ``history``, None with fewer than two."""
    if len(history) < 2:
        return None
    ts = np.array([t for t, _ in history], dtype=np.float64)
    boxes = np.stack([b for _, b in history])
    tc = ts - ts.mean()
    return tc @ (boxes - boxes.mean(axis=0)) / (tc @ tc)
