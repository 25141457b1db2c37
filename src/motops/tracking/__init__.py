"""Tracking runtime: the detection/track array types, ByteTrack/BoT-SORT, matching and frame skipping.

Detections are ``(N, 6)`` ``[x1, y1, x2, y2, conf, cls]`` and tracks ``(M, 8)``
``[x1, y1, x2, y2, track_id, conf, cls, det_index]`` float32 arrays in pixels (see
:mod:`motops.tracking.types`). Importing this package does not import Ultralytics; that
happens when :func:`make_tracker` builds a tracker.
"""

from motops.tracking.matching import fuse_score, iou_distance, iou_matrix, linear_assignment
from motops.tracking.skipping import SkippingTracker
from motops.tracking.trackers import (
    GMC_METHODS,
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
    "GMC_METHODS",
    "TRACKER_NAMES",
    "TRACKER_PARAM_NAMES",
    "TRACK_COLUMNS",
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
