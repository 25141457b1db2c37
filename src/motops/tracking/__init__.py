"""Tracking runtime: the detection/track array types, ByteTrack/BoT-SORT, matching and frame skipping.

Detections are ``(N, 6)`` ``[x1, y1, x2, y2, conf, cls]`` and tracks ``(M, 8)``
``[x1, y1, x2, y2, track_id, conf, cls, det_index]`` float32 arrays in pixels (see
:mod:`motops.tracking.types`). The trackers are ours (:mod:`motops.tracking.bytetrack`, numpy
and OpenCV): neither importing this package nor tracking imports torch or Ultralytics; only
``make_tracker(..., impl="ultralytics")``, the benchmarks' peer, does.
"""

from motops.tracking.bytetrack import ByteTracker
from motops.tracking.matching import fuse_score, iou_distance, iou_matrix, linear_assignment
from motops.tracking.skipping import SkippingTracker
from motops.tracking.trackers import (
    EMBED_MODES,
    GMC_METHODS,
    IMPLEMENTATIONS,
    TRACKER_NAMES,
    TRACKER_PARAM_NAMES,
    TrackerParams,
    UltralyticsTracker,
    make_tracker,
)
from motops.tracking.types import (
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
    "UltralyticsTracker",
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
