"""The runtime: what a device runs -- engine bundles, detector/ReID backends, trackers, frame skipping, video.

Modules: :mod:`~motops.runtime.bundle` (read/verify a bundle, :func:`~motops.runtime.bundle.load_bundle`,
:class:`~motops.runtime.bundle.Engine`), :mod:`~motops.runtime.backends` (ONNX Runtime, TensorRT, and
on request torch/Ultralytics ``.pt`` models), :mod:`~motops.runtime.tensorrt` (plans for this GPU),
:mod:`~motops.runtime.trackers` / :mod:`~motops.runtime.bytetrack` (our ByteTrack/BoT-SORT),
:mod:`~motops.runtime.skipping`, :mod:`~motops.runtime.video`, :mod:`~motops.runtime.runner`
(``motops track``). It imports nothing from ``export``, ``training``, ``registry`` or
``evaluation``, and neither torch nor Ultralytics unless a ``.pt`` model or the Ultralytics peer
tracker is asked for: a device installs only numpy, OpenCV and ONNX Runtime to run it.

Detections are ``(N, 6)`` ``[x1, y1, x2, y2, conf, cls]`` and tracks ``(M, 8)``
``[x1, y1, x2, y2, track_id, conf, cls, det_index]`` float32 arrays in pixels (see
:mod:`motops.runtime.types`). The trackers are ours (:mod:`motops.runtime.bytetrack`, numpy
and OpenCV): neither importing this package nor tracking imports torch or Ultralytics; only
``make_tracker(..., impl="ultralytics")``, the benchmarks' peer, does.
"""

from motops.runtime.bytetrack import ByteTracker
from motops.runtime.matching import fuse_score, iou_distance, iou_matrix, linear_assignment
from motops.runtime.skipping import SkippingTracker
from motops.runtime.trackers import (
    EMBED_MODES,
    GMC_METHODS,
    IMPLEMENTATIONS,
    TRACKER_NAMES,
    TRACKER_PARAM_NAMES,
    TrackerParams,
    make_tracker,
)
from motops.runtime.types import (
    DET_COLUMNS,
    TRACK_COLUMNS,
    Tracker,
    as_detections,
    as_tracks,
    empty_detections,
    empty_tracks,
)

__all__ = [
    "DET_COLUMNS",
    "EMBED_MODES",
    "GMC_METHODS",
    "IMPLEMENTATIONS",
    "TRACKER_NAMES",
    "TRACKER_PARAM_NAMES",
    "TRACK_COLUMNS",
    "ByteTracker",
    "SkippingTracker",
    "Tracker",
    "TrackerParams",
    "as_detections",
    "as_tracks",
    "empty_detections",
    "empty_tracks",
    "fuse_score",
    "iou_distance",
    "iou_matrix",
    "linear_assignment",
    "make_tracker",
]
