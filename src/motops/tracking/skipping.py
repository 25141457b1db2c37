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

from motops.tracking.types import (
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


#: ``step``'s default: compute the flow itself (no precomputed flow given).
_COMPUTE: Final = object()


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
            :func:`motops.tracking.make_tracker`).
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

    def precompute_flow(
        self, frames: Iterable[tuple[int, np.ndarray]]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """``(index, frame, flow)`` for ``frames``, the flow computed ahead (e.g. in a decoding thread).

        ``flow`` is the dense flow from the previous frame to this one on the frames this tracker
        will propagate, ``None`` on detection frames; pass it to :meth:`step`. The flow does not
        depend on the tracks, only on the frames, so it can be computed on another core while
        this tracker works on earlier frames (see :func:`motops.tracking.video.prefetch`). The
        frames must be the ones then given to :meth:`step`, in order, starting right after a
        :meth:`reset` (or construction). With ``detect_every=1`` nothing is computed.

        Args:
            frames: ``(index, frame_bgr)`` pairs, e.g. a frame source.
        """
        engine = _Flow(self.flow, self.flow_scale)  # its own DIS object: it may run in another thread
        for position, (index, frame) in enumerate(frames):
            yield index, frame, self._next_flow(engine, position, frame)

    def _next_flow(self, engine: _Flow, t: int, frame: np.ndarray) -> np.ndarray | None:
        """Frame ``t``'s flow from frame ``t - 1`` if ``t`` is propagated; nothing is computed at ``detect_every=1``."""
        return engine.advance(frame, not self.is_detection_frame(t)) if self.detect_every > 1 else None

    def step(self, frame: np.ndarray, detect_fn: DetectFn, flow: np.ndarray | None | object = _COMPUTE) -> np.ndarray:
        """Process the next frame.

        Args:
            frame: BGR image ``(H, W, 3)`` uint8 (or grayscale ``(H, W)``).
            detect_fn: ``frame -> (N, 6)`` detections ``[x1, y1, x2, y2, conf, cls]``; called only
                on detection frames.
            flow: The flow :meth:`precompute_flow` gave for this frame (``None``: no flow, the
                constant-velocity prediction alone moves the boxes). Left out, it is computed here.

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
        if flow is _COMPUTE:
            flow = self._next_flow(self._engine, t, frame)
        out = self._detect(t, frame, detect_fn) if self.is_detection_frame(t) else self._propagate(t, flow)
        self._last = out
        return out

    def _detect(self, t: int, frame: np.ndarray, detect_fn: DetectFn) -> np.ndarray:
        dets = as_detections(detect_fn(frame), name=f"detect_fn output for frame {t}")
        tracks = as_tracks(self.tracker.update(dets, frame), name=f"tracker output for frame {t}")
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
        for row in out:
            state = self._states[int(row[TRACK_ID])]
            base = state.box
            predicted = base + state.velocity if state.velocity is not None else None
            shift = self._median_flow(flow, base) if flow is not None else None
            flowed = base + np.array([shift[0], shift[1], shift[0], shift[1]]) if shift is not None else None
            if predicted is not None and flowed is not None:
                box = FLOW_WEIGHT * flowed + PREDICTION_WEIGHT * predicted
            else:
                box = flowed if flowed is not None else predicted if predicted is not None else base
            state.box, state.last_seen = box, t
            row[:4] = box
        out[:, DET_INDEX] = -1
        return out.astype(DTYPE, copy=False)

    def _median_flow(self, flow: np.ndarray | None, box: np.ndarray) -> np.ndarray | None:
        """Median ``(dx, dy)`` in full-resolution pixels inside the central part of ``box``, or None."""
        if flow is None:
            return None
        h, w = flow.shape[:2]
        center = (box[:2] + box[2:]) / 2 * self.flow_scale
        half = (box[2:] - box[:2]) * self.flow_scale * BOX_INNER_FRACTION / 2
        x0, y0 = np.floor(center - half).astype(int)
        x1, y1 = np.ceil(center + half).astype(int)
        x0, x1 = max(x0, 0), min(x1, w)
        y0, y1 = max(y0, 0), min(y1, h)
        if x1 - x0 < MIN_FLOW_PIXELS or y1 - y0 < MIN_FLOW_PIXELS:
            return None
        return _median_rows(flow[y0:y1, x0:x1].reshape(-1, 2)) / self.flow_scale


def _median_rows(values: np.ndarray) -> np.ndarray:
    """Column-wise median of ``(n, 2)`` values: ``np.median(values, axis=0)`` at a fraction of its call overhead."""
    n = len(values)
    k = n // 2
    if n % 2:
        return np.partition(values, k, axis=0)[k].astype(np.float64)
    part = np.partition(values, (k - 1, k), axis=0)
    return (part[k - 1].astype(np.float64) + part[k]) / 2


def _velocity(history: deque[tuple[int, np.ndarray]]) -> np.ndarray | None:
    """Least-squares per-frame velocity ``(4,)`` of the boxes in ``history``, None with fewer than two."""
    if len(history) < 2:
        return None
    ts = np.array([t for t, _ in history], dtype=np.float64)
    boxes = np.stack([b for _, b in history])
    tc = ts - ts.mean()
    return tc @ (boxes - boxes.mean(axis=0)) / (tc @ tc)
