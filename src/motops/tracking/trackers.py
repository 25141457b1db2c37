"""ByteTrack and BoT-SORT behind one array interface: ``(N, 6)`` detections in, ``(M, 8)`` tracks out.

:func:`make_tracker` builds one of two implementations of the same trackers, with the same
:class:`TrackerParams`:

* ``impl="motops"`` (the default, what the runtime runs): :class:`motops.tracking.bytetrack.ByteTracker`,
  written on numpy, ``lap`` and OpenCV (:mod:`~motops.tracking.kalman`, :mod:`~motops.tracking.gmc`),
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
import difflib
import math
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from motops.tracking.gmc import GMC_MAX_CORNERS, GMC_WIDTH
from motops.tracking.types import CONF, as_detections, empty_tracks

if TYPE_CHECKING:
    from motops.tracking.bytetrack import ByteTracker

TRACKER_NAMES: Final = ("bytetrack", "botsort")
#: ``make_tracker(impl=)``: ours (numpy/OpenCV, the runtime's) or Ultralytics' (benchmarks, tests).
IMPLEMENTATIONS: Final = ("motops", "ultralytics")
GMC_METHODS: Final = ("none", "sparseOptFlow", "orb", "ecc")
# Kalman / buffer settings in params.yaml are stated for 30 fps footage (as in ByteTrack).
REFERENCE_FPS: Final = 30.0
# Camera-motion compensation (ours and, sized after construction, Ultralytics'): a 160-px wide
# image with 200 corners (see motops.tracking.gmc for the measurement).
EMBED_MODES: Final = ("all", "needed")

ReidFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(frame_bgr (H, W, 3) uint8, boxes_xyxy (N, 4)) -> (N, D) float32`` L2-normalized embeddings."""


@dataclasses.dataclass(frozen=True)
class TrackerParams:
    """Association settings shared by ByteTrack and BoT-SORT (same names as ``params.yaml`` ``track:``).

    Attributes:
        track_high_thresh: Detections scoring at least this go to the first association stage
            (IoU plus appearance). Raising it sends more boxes to the weaker, IoU-only second
            stage, which can only continue existing tracks.
        track_low_thresh: Detections scoring at or below this are discarded. Raising it throws
            away more weak boxes: fewer false matches, but occluded objects are lost sooner.
        new_track_thresh: Score an unmatched detection needs to start a new track. Raising it
            gives fewer spurious tracks but starts real ones later (or never, for weak objects).
        match_thresh: Largest first-stage cost (``1 - IoU``, fused with score) accepted as a
            match. Raising it accepts weaker overlaps: fast or jittery objects keep their ids,
            but neighbours are swapped more often.
        track_buffer: Frames (at 30 fps; scaled by ``frame_rate``) a lost track is kept for
            re-association. Raising it bridges longer occlusions but may re-attach an old id to
            a different object, and keeps more tracks in memory.
        fuse_score: Multiply the IoU similarity by the detection score in the first stage, so
            weak detections must overlap more. Disabling it trusts low-score boxes as much as
            high-score ones.
        with_reid: BoT-SORT only: use appearance embeddings from the ``reid`` callable. Without
            a ``reid`` callable (or without a frame) the tracker is motion-only regardless.
        proximity_thresh: BoT-SORT only: smallest IoU a track/detection pair needs before its
            appearance is considered. Raising it lets appearance overrule motion only for
            boxes that already overlap well; at 5-7 fps a true match often overlaps its track
            little, so the default is low (0.05; 0.0 lets look-alikes across the image match).
        appearance_thresh: BoT-SORT only: smallest appearance agreement for an appearance
            match; a pair whose embedding distance (cosine distance / 2) exceeds
            ``1 - appearance_thresh`` is ignored. Raising it demands more similar embeddings.
        gmc_method: BoT-SORT only: camera-motion compensation, one of ``none``,
            ``sparseOptFlow``, ``orb``, ``ecc``; needs a frame. ``none`` is right (and faster)
            for a static camera; ``ecc`` is the most accurate and the slowest.
        embed: BoT-SORT with appearance, our implementation only: which detections the
            ``reid`` callable embeds (one batched call per frame). ``"all"``: every kept
            detection, as in BoT-SORT. ``"needed"``: only the high-score detections whose
            match appearance could change, or that start a track (the rule is documented at
            :meth:`motops.tracking.bytetrack.ByteTracker._needs_embedding`); the others keep
            their track's smoothed embedding. The Ultralytics peer always embeds all.
    """

    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.35
    match_thresh: float = 0.8
    track_buffer: int = 30
    fuse_score: bool = True
    with_reid: bool = True
    proximity_thresh: float = 0.05
    appearance_thresh: float = 0.75
    gmc_method: str = "sparseOptFlow"
    embed: str = "needed"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "float":
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                    raise ValueError(f"tracker parameter {field.name}={value!r}: expected a number in [0, 1]")
            elif field.type == "bool" and not isinstance(value, bool | np.bool_):
                raise ValueError(f"tracker parameter {field.name}={value!r}: expected true or false")
        if isinstance(self.track_buffer, bool) or not isinstance(self.track_buffer, int) or self.track_buffer < 1:
            raise ValueError(f"tracker parameter track_buffer={self.track_buffer!r}: expected an integer >= 1")
        if self.gmc_method not in GMC_METHODS:
            raise ValueError(f"tracker parameter gmc_method={self.gmc_method!r}: expected one of {list(GMC_METHODS)}")
        if self.embed not in EMBED_MODES:
            raise ValueError(f"tracker parameter embed={self.embed!r}: expected one of {list(EMBED_MODES)}")
        if self.track_low_thresh > self.track_high_thresh:
            raise ValueError(
                f"tracker parameters: track_low_thresh={self.track_low_thresh} > track_high_thresh="
                f"{self.track_high_thresh}; expected low <= high"
            )


    def max_frames_lost(self, frame_rate: float) -> int:
        """Frames a lost track is kept at ``frame_rate``: ``track_buffer`` is stated at :data:`REFERENCE_FPS`."""
        return int(frame_rate / REFERENCE_FPS * self.track_buffer)

    def uses_appearance(self, name: str, reid: ReidFn | None) -> bool:
        """Whether tracker ``name`` calls ``reid``: BoT-SORT with ``with_reid`` and a callable."""
        return name == "botsort" and self.with_reid and reid is not None


TRACKER_PARAM_NAMES: Final = tuple(f.name for f in dataclasses.fields(TrackerParams))


def _suggest(word: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


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

        Arguments, result and errors as :meth:`motops.tracking.bytetrack.ByteTracker.update`.
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


def check_warp(name: str, warp: Any) -> np.ndarray:
    """A given camera-motion warp as a ``(2, 3)`` float64 array; refused for ``bytetrack`` or when malformed."""
    if name != "botsort":
        raise ValueError(f"{name}: a camera-motion warp was given; only botsort compensates camera motion")
    warp = np.asarray(warp, dtype=np.float64)
    if warp.shape != (2, 3) or not np.isfinite(warp).all():
        raise ValueError(f"{name}: warp must be a finite (2, 3) affine matrix, got shape {warp.shape}")
    return warp


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


def make_tracker(
    name: str,
    *,
    frame_rate: float = REFERENCE_FPS,
    reid: ReidFn | None = None,
    impl: str = "motops",
    **params: Any,
) -> ByteTracker | UltralyticsTracker:
    """Build a multi-object tracker with the ``update(dets, frame) -> tracks`` / ``reset()`` interface.

    Args:
        name: ``"bytetrack"`` (motion only) or ``"botsort"`` (motion, optional appearance and
            camera-motion compensation).
        frame_rate: Frames per second of the footage; ``track_buffer`` is scaled by
            ``frame_rate / 30``. Raising it keeps lost tracks for more frames.
        reid: BoT-SORT appearance: a callable ``(frame_bgr, boxes_xyxy (N, 4)) -> (N, D)``
            float32 L2-normalized embeddings (our ReID backend). ``None`` = motion only.
            Refused for ``bytetrack``, which would ignore it.
        impl: ``"motops"`` (the default): our numpy/OpenCV implementation
            (:class:`motops.tracking.bytetrack.ByteTracker`), which needs neither torch nor
            Ultralytics. ``"ultralytics"``: Ultralytics' trackers behind the same interface
            (:class:`UltralyticsTracker`), the peer of the benchmarks and tests; it imports
            torch and always embeds every detection (``embed`` is ignored).
        **params: Association settings, every one optional: ``track_high_thresh`` (0.25),
            ``track_low_thresh`` (0.1), ``new_track_thresh`` (0.35), ``match_thresh`` (0.8),
            ``track_buffer`` (30), ``fuse_score`` (True), ``with_reid`` (True),
            ``proximity_thresh`` (0.05), ``appearance_thresh`` (0.75), ``gmc_method``
            (``"sparseOptFlow"``), ``embed`` (``"needed"``). :class:`TrackerParams` documents
            what raising each does. The last five are BoT-SORT's and ``bytetrack`` ignores them, so one ``track:``
            section of ``params.yaml`` can configure either tracker.

    Returns:
        A tracker whose ids start at 1 and belong to it alone.

    Raises:
        ValueError: Unknown tracker name or ``impl`` (with a suggestion), a value out of
            range, or a ``reid`` callable for ``bytetrack``.
        TypeError: An unknown keyword; the message suggests the closest valid one and lists all.
    """
    if name not in TRACKER_NAMES:
        hint = _suggest(str(name), TRACKER_NAMES)
        raise ValueError(f"unknown tracker {name!r}{hint}; expected one of {list(TRACKER_NAMES)}")
    unknown = [key for key in params if key not in TRACKER_PARAM_NAMES]
    if unknown:
        key = unknown[0]
        raise TypeError(
            f"make_tracker: unknown parameter {key!r}{_suggest(key, TRACKER_PARAM_NAMES)}; "
            f"valid parameters: {', '.join(TRACKER_PARAM_NAMES)}"
        )
    if isinstance(frame_rate, bool) or not isinstance(frame_rate, int | float) or not math.isfinite(frame_rate):
        raise ValueError(f"make_tracker: frame_rate={frame_rate!r}; expected a positive number of frames per second")
    if frame_rate <= 0:
        raise ValueError(f"make_tracker: frame_rate={frame_rate!r}; expected a positive number of frames per second")
    if reid is not None and not callable(reid):
        raise ValueError(f"make_tracker: reid={reid!r}; expected a callable (frame_bgr, boxes_xyxy) -> embeddings")
    if reid is not None and name == "bytetrack":
        raise ValueError(
            "make_tracker: bytetrack uses no appearance, so a reid callable would never be called; "
            "use 'botsort' or pass reid=None"
        )
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"make_tracker: unknown impl {impl!r}{_suggest(str(impl), IMPLEMENTATIONS)}; "
                         f"expected one of {list(IMPLEMENTATIONS)}")
    checked = TrackerParams(**params)
    if impl == "ultralytics":
        return UltralyticsTracker(name, checked, float(frame_rate), reid)
    from motops.tracking.bytetrack import ByteTracker

    return ByteTracker(name, checked, float(frame_rate), reid)
