"""The Ultralytics peer: Ultralytics' ByteTrack and BoT-SORT behind the runtime's ``(N, 6)`` -> ``(M, 8)`` interface.

Not part of the runtime (:mod:`motops.runtime`): it needs torch and Ultralytics (AGPL-3.0), which
a device does not install. Built by :func:`motops.runtime.trackers.make_tracker` with
``impl="ultralytics"``, for the benchmarks and tests that compare our trackers with it.

:func:`make_tracker` builds one of two implementations of the same trackers, with the same
:class:`TrackerParams`:

* ``impl="motops"`` (the default, what the runtime runs): :class:`motops.runtime.bytetrack.ByteTracker`,
  written on numpy, ``lap`` and OpenCV (:mod:`~motops.runtime.kalman`, :mod:`~motops.runtime.gmc`),
  so a device needs neither torch nor Ultralytics (AGPL-3.0) to track. It keeps every
  behaviour listed below for the wrapper (ids per instance, buffer scaled by frame rate,
  removed tracks unmatchable, GMC sized to 160 px with 200 corners, warp given ahead,
  parameter checking) and adds ``embed``: appearance embeddings only where they can matter.
* ``impl="ultralytics"``: :class:`UltralyticsTracker`, the wrapper around Ultralytics' own
  trackers described here; training's environment and the benchmarks use it as the peer.

What the wrapper reuses from Ultralytics (``ultralytics>=8.4.190,<8.5``, imported only when a
tracker is built, so importing this module stays cheap and side-effect free):

* ``ultralytics.trackers.byte_tracker.BYTETracker`` and ``ultralytics.trackers.bot_sort.BOTSORT``
  do all the association work (two-stage ByteTrack matching, Kalman filters, lost-track
  buffer, BoT-SORT's IoU/appearance gating and its ``GMC`` camera-motion compensation).
  Their output rows ``[x1, y1, x2, y2, track_id, score, cls, idx]`` already are our track
  layout, with ``idx`` the detection row in the full input array.
* Track ids: from 8.4.190 on, each ``BYTETracker`` instance hands out ids from its own
  counter (``self._ids``, attached to every new ``STrack`` as ``next_id``), so two trackers
  in one process do not share an id sequence and ``reset()`` restarts at 1. The legacy
  class-level ``BaseTrack._count`` is never touched. :class:`UltralyticsTracker` checks at
  construction that the installed version has the per-instance counter and refuses to run
  otherwise, rather than silently sharing ids.

What is written here, and why:

* The results-like adapter (:class:`DetectionView`): Ultralytics expects a ``Boxes``-like
  object (``.conf``, ``.cls``, ``.xywh``, ``.xyxy``, boolean indexing); we hold a plain array.
* Appearance: Ultralytics' external encoder path loads a model file by path (``ReID``), which
  would bypass our own ReID backend. Instead BoT-SORT is built in its ``model="auto"`` mode,
  which takes precomputed per-detection ``feats``; we compute them by calling the ``reid``
  callable ourselves, only for the boxes BoT-SORT can use (``conf > track_low_thresh``).
* ``frame_rate``: Ultralytics keeps a lost track for exactly ``track_buffer`` frames; the
  original ByteTrack (and ``params.yaml``) define the buffer at 30 fps and scale it, so
  ``max_frames_lost`` is set to ``int(frame_rate / 30 * track_buffer)`` after construction.
* Lost-pool clean-up: Ultralytics (like the original ByteTrack) subtracts the removed tracks
  from the lost pool *before* adding this frame's removals, so a track dropped for exceeding
  the buffer stays matchable for one more frame; if it is matched then, it is live while
  also listed as removed, and the next time it is lost it is discarded at once. After each
  update the wrapper drops ``Removed`` tracks from the lost pool, so a track survives at most
  ``track_buffer`` (scaled) missed frames, exactly as documented.
* Camera-motion compensation cost: Ultralytics' sparse-flow ``GMC`` is sized for the frame
  on the first update (:data:`GMC_WIDTH`, :data:`GMC_MAX_CORNERS`), which halves the
  tracker's time per frame on 640-px footage without a measurable IDF1 change.
* Camera motion computed ahead: the sparse-flow (and ECC) warp depends only on the frames, not
  on the tracks, so :meth:`UltralyticsTracker.motion_estimator` gives a second, identical GMC
  that a decoding thread runs over the same frames; :meth:`UltralyticsTracker.update` then
  takes its ``warp`` instead of computing one (Ultralytics calls ``self.gmc.apply``; the
  tracker's ``gmc`` is wrapped so that a given warp is returned and the frame not re-measured).
* Parameter checking: unknown keywords are refused with a close-match suggestion and every
  value is range-checked, instead of Ultralytics' untyped namespace.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from motops.runtime.gmc import GMC_MAX_CORNERS, GMC_WIDTH
from motops.runtime.trackers import ReidFn, TrackerParams, check_warp
from motops.runtime.types import CONF, as_detections, empty_tracks


class DetectionView:
    """The slice of Ultralytics' ``Boxes`` API its trackers read, over a ``(N, 6)`` detection array."""

    __slots__ = ("_dets",)

    def __init__(self, dets: np.ndarray) -> None:
        self._dets = dets

    def __len__(self) -> int:
        return len(self._dets)

    def __getitem__(self, index: Any) -> DetectionView:
        return DetectionView(self._dets[index])

    @property
    def xyxy(self) -> np.ndarray:
        return self._dets[:, :4]

    @property
    def xywh(self) -> np.ndarray:
        xyxy = self._dets[:, :4]
        return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)

    @property
    def conf(self) -> np.ndarray:
        return self._dets[:, 4]

    @property
    def cls(self) -> np.ndarray:
        return self._dets[:, 5]


class UltralyticsTracker:
    """A ByteTrack or BoT-SORT tracker with the motops array interface; build it with :func:`make_tracker`.

    Attributes:
        name: ``"bytetrack"`` or ``"botsort"``.
        params: The validated :class:`TrackerParams`.
        frame_rate: Frames per second of the footage (scales ``track_buffer``).
        uses_appearance: Whether ``reid`` is called (BoT-SORT with ``with_reid`` and a callable).
    """

    def __init__(self, name: str, params: TrackerParams, frame_rate: float, reid: ReidFn | None) -> None:
        from ultralytics.trackers.basetrack import TrackState
        from ultralytics.trackers.bot_sort import BOTSORT
        from ultralytics.trackers.byte_tracker import BYTETracker

        self.name = name
        self.params = params
        self.frame_rate = frame_rate
        self.uses_appearance = params.uses_appearance(name, reid)
        self._reid = reid if self.uses_appearance else None
        args = types.SimpleNamespace(
            **dataclasses.asdict(params),
            # "auto" = take precomputed per-detection feats; never load a model file by path.
            model="auto",
        )
        args.with_reid = self.uses_appearance
        self._impl = BOTSORT(args) if name == "botsort" else BYTETracker(args)
        if not hasattr(self._impl, "_ids"):  # pre-8.4.190 trackers share a class-level id counter
            raise RuntimeError(
                "the installed ultralytics trackers share track ids across instances; motops needs ultralytics>=8.4.190"
            )
        if name == "botsort":
            self._impl.gmc = _GivenWarp(self._impl.gmc)
        self._gmc_sized = False
        self._removed = TrackState.Removed
        self._max_frames_lost = params.max_frames_lost(frame_rate)
        self._impl.max_frames_lost = self._max_frames_lost
        self._frame_index = 0

    def update(self, dets: np.ndarray, frame: np.ndarray | None = None, warp: np.ndarray | None = None) -> np.ndarray:
        """Associate one frame's detections with the tracks (Ultralytics' tracker does the work).

        Arguments, result and errors as :meth:`motops.runtime.bytetrack.ByteTracker.update`.
        """
        dets = as_detections(dets, name=f"{self.name} input detections, frame {self._frame_index}")
        self._frame_index += 1
        if frame is not None and (not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3)):
            raise ValueError(f"{self.name}: frame must be a BGR image array (H, W, 3) or None, got {type(frame)}")
        feats = self._embed(frame, dets) if self._reid is not None and frame is not None else None
        img = frame if self.name == "botsort" else None
        if img is not None and not self._gmc_sized:
            _size_gmc(getattr(self._impl, "gmc", None), img.shape[1])
            self._gmc_sized = True
        if warp is not None:
            self._impl.gmc.given = check_warp(self.name, warp)
        try:
            out = self._impl.update(DetectionView(dets), img, feats=feats)
        finally:
            if self.name == "botsort":
                self._impl.gmc.given = None
        # See the module docstring: a removed track must not stay matchable for one more frame.
        self._impl.lost_stracks = [t for t in self._impl.lost_stracks if t.state != self._removed]
        if out.size == 0:
            return empty_tracks()
        return np.ascontiguousarray(out[:, :8], dtype=np.float32)

    def motion_estimator(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """A ``frame -> (2, 3) warp`` callable giving the camera-motion warps this tracker would compute.

        It runs its own GMC, configured and sized like the tracker's, so it can run in another
        thread; feed it the frames given to :meth:`update`, in the same order, and pass each
        result as ``update(..., warp=...)``. ``None`` when the tracker compensates no camera
        motion (``bytetrack``, ``gmc_method: none``) or its method also needs the detections
        (``orb`` masks them out).
        """
        if self.name != "botsort" or self.params.gmc_method not in ("sparseOptFlow", "ecc"):
            return None
        from ultralytics.trackers.utils.gmc import GMC

        gmc = GMC(method=self.params.gmc_method)
        sized = False

        def estimate(frame: np.ndarray) -> np.ndarray:
            nonlocal sized
            if not sized:
                _size_gmc(gmc, frame.shape[1])
                sized = True
            return gmc.apply(frame)

        return estimate

    def _embed(self, frame: np.ndarray, dets: np.ndarray) -> np.ndarray | None:
        """Per-detection embeddings ``(N, D)``; rows BoT-SORT will drop stay zero (= "no appearance")."""
        wh = dets[:, 2:4] - dets[:, :2]
        usable = (dets[:, CONF] > self.params.track_low_thresh) & (wh[:, 0] > 0) & (wh[:, 1] > 0)
        if not usable.any():
            return None
        boxes = np.ascontiguousarray(dets[usable, :4])
        emb = np.asarray(self._reid(frame, boxes), dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(boxes) or not np.isfinite(emb).all():
            raise ValueError(
                f"reid callable returned shape {emb.shape} for {len(boxes)} boxes; "
                "expected a finite (N, D) array, one embedding per box"
            )
        feats = np.zeros((len(dets), emb.shape[1]), dtype=np.float32)
        feats[usable] = emb
        return feats

    def reset(self) -> None:
        """Forget every track (tracked, lost, removed) and restart ids at 1."""
        self._impl.reset()
        self._impl.max_frames_lost = self._max_frames_lost
        self._frame_index = 0
        self._gmc_sized = False  # the next footage may have another width

    def __repr__(self) -> str:
        return f"UltralyticsTracker({self.name!r}, frame_rate={self.frame_rate}, appearance={self.uses_appearance})"


def _size_gmc(gmc: Any, width: int) -> None:
    """Sparse-flow GMC on a :data:`GMC_WIDTH`-px wide image with :data:`GMC_MAX_CORNERS` corners."""
    if gmc is not None and getattr(gmc, "method", None) == "sparseOptFlow":
        gmc.downscale = max(1, int(width) // GMC_WIDTH)
        gmc.feature_params["maxCorners"] = GMC_MAX_CORNERS


class _GivenWarp:
    """Ultralytics' ``GMC`` that returns a warp computed elsewhere when one is given (see ``update``)."""

    def __init__(self, gmc: Any) -> None:
        self.__dict__["_gmc"] = gmc
        self.__dict__["given"] = None

    def apply(self, raw_frame: np.ndarray, detections: Any = None) -> np.ndarray:
        return self.given if self.given is not None else self._gmc.apply(raw_frame, detections)

    def __getattr__(self, name: str) -> Any:  # method, downscale, feature_params, reset_params, ...
        return getattr(self._gmc, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "given":
            self.__dict__[name] = value
        else:
            setattr(self._gmc, name, value)
