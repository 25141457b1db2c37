"""ByteTrack and BoT-SORT behind one array interface: ``(N, 6)`` detections in, ``(M, 8)`` tracks out.

:func:`make_tracker` builds one of two implementations of the same trackers, with the same
:class:`TrackerParams`:

* ``impl="motops"`` (the default, what the runtime runs): :class:`motops.runtime.bytetrack.ByteTracker`,
  written on numpy, ``lap`` and OpenCV (:mod:`~motops.runtime.kalman`, :mod:`~motops.runtime.gmc`),
  so a device needs neither torch nor Ultralytics (AGPL-3.0) to track: ids per instance, buffer
  scaled by frame rate, removed tracks unmatchable, GMC sized to 160 px with 200 corners, warp
  given ahead, parameter checking, and ``embed``: appearance embeddings only where they can matter.
* ``impl="ultralytics"``: :class:`motops.tracking.ultralytics.UltralyticsTracker`, a wrapper
  around Ultralytics' own trackers, outside the runtime and imported only when asked for;
  training's environment and the benchmarks use it as the peer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from motops.errors import did_you_mean

if TYPE_CHECKING:
    from motops.runtime.types import Tracker

TRACKER_NAMES: Final = ("bytetrack", "botsort")
#: ``make_tracker(impl=)``: ours (numpy/OpenCV, the runtime's) or Ultralytics' (benchmarks, tests).
IMPLEMENTATIONS: Final = ("motops", "ultralytics")
GMC_METHODS: Final = ("none", "sparseOptFlow", "orb", "ecc")
# Kalman / buffer settings in params.yaml are stated for 30 fps footage (as in ByteTrack).
REFERENCE_FPS: Final = 30.0
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
            :meth:`motops.runtime.bytetrack.ByteTracker._needs_embedding`); the others keep
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


def check_warp(name: str, warp: Any) -> np.ndarray:
    """A given camera-motion warp as a ``(2, 3)`` float64 array; refused for ``bytetrack`` or when malformed."""
    if name != "botsort":
        raise ValueError(f"{name}: a camera-motion warp was given; only botsort compensates camera motion")
    warp = np.asarray(warp, dtype=np.float64)
    if warp.shape != (2, 3) or not np.isfinite(warp).all():
        raise ValueError(f"{name}: warp must be a finite (2, 3) affine matrix, got shape {warp.shape}")
    return warp


def make_tracker(
    name: str,
    *,
    frame_rate: float = REFERENCE_FPS,
    reid: ReidFn | None = None,
    impl: str = "motops",
    **params: Any,
) -> Tracker:
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
            (:class:`motops.runtime.bytetrack.ByteTracker`), which needs neither torch nor
            Ultralytics. ``"ultralytics"``: Ultralytics' trackers behind the same interface
            (:class:`motops.tracking.ultralytics.UltralyticsTracker`), the peer of the
            benchmarks and tests; it imports torch and always embeds every detection
            (``embed`` is ignored).
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
        hint = did_you_mean(str(name), TRACKER_NAMES)
        raise ValueError(f"unknown tracker {name!r}{hint}; expected one of {list(TRACKER_NAMES)}")
    unknown = [key for key in params if key not in TRACKER_PARAM_NAMES]
    if unknown:
        key = unknown[0]
        raise TypeError(
            f"make_tracker: unknown parameter {key!r}{did_you_mean(key, TRACKER_PARAM_NAMES)}; "
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
        raise ValueError(f"make_tracker: unknown impl {impl!r}{did_you_mean(str(impl), IMPLEMENTATIONS)}; "
                         f"expected one of {list(IMPLEMENTATIONS)}")
    checked = TrackerParams(**params)
    if impl == "ultralytics":
        try:
            from motops.tracking.ultralytics import UltralyticsTracker
        except ImportError as exc:
            raise ImportError(
                f"make_tracker(impl='ultralytics') needs the training extra (pip install 'motops[train]'): {exc}"
            ) from None
        return UltralyticsTracker(name, checked, float(frame_rate), reid)
    from motops.runtime.bytetrack import ByteTracker

    return ByteTracker(name, checked, float(frame_rate), reid)
