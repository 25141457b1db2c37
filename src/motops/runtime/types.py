"""The one detection type and the one track type of the tracking runtime.

Both are plain ``numpy`` arrays with a fixed column layout, so any detector backend,
tracker or evaluator can exchange them without a wrapper class (the BoxMOT interface).

Detections, shape ``(N, 6)``, ``float32``, one row per box, pixels of the full frame::

    [x1, y1, x2, y2, conf, cls]

``(x1, y1)`` is the top-left corner, ``(x2, y2)`` the bottom-right one (``x2 >= x1``,
``y2 >= y1``), ``conf`` is the detector score in ``[0, 1]`` and ``cls`` the class index.

Tracks, shape ``(M, 8)``, ``float32``, one row per track reported for the frame::

    [x1, y1, x2, y2, track_id, conf, cls, det_index]

The box is the tracker's estimate (Kalman-filtered, or propagated between detection
frames), ``track_id`` a positive integer owned by the tracker instance (the first track
of a fresh tracker is 1), ``conf`` and ``cls`` those of the detection that last updated
the track, and ``det_index`` the row of the detection array that updated the track on
this frame, or ``-1`` when the box was only predicted or propagated.
"""

from __future__ import annotations

from typing import Final, Protocol

import numpy as np

DET_COLUMNS: Final = ("x1", "y1", "x2", "y2", "conf", "cls")
TRACK_COLUMNS: Final = ("x1", "y1", "x2", "y2", "track_id", "conf", "cls", "det_index")

# Column indices, so code reads ``tracks[:, TRACK_ID]`` rather than ``tracks[:, 4]``.
CONF: Final = 4
CLS: Final = 5
TRACK_ID: Final = 4
TRACK_CONF: Final = 5
TRACK_CLS: Final = 6
DET_INDEX: Final = 7

DTYPE: Final = np.float32


class Tracker(Protocol):
    """What the runtime needs from a tracker (see :func:`motops.runtime.make_tracker`)."""

    def update(self, dets: np.ndarray, frame: np.ndarray | None) -> np.ndarray:
        """Associate one frame's detections ``(N, 6)``; return its tracks ``(M, 8)``."""
        ...

    def reset(self) -> None:
        """Forget every track and restart ids at 1."""
        ...


def empty_detections() -> np.ndarray:
    """Return a ``(0, 6)`` detection array (a frame where nothing was detected)."""
    return np.zeros((0, len(DET_COLUMNS)), dtype=DTYPE)


def empty_tracks() -> np.ndarray:
    """Return a ``(0, 8)`` track array (a frame without any confirmed track)."""
    return np.zeros((0, len(TRACK_COLUMNS)), dtype=DTYPE)


def _as_2d(arr: object, ncols: int, what: str, layout: tuple[str, ...]) -> np.ndarray:
    expected = f"expected an array of shape (N, {ncols}) with columns [{', '.join(layout)}]"
    try:
        out = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: not numeric ({exc}); {expected}") from exc
    if out.size == 0:  # [] or (0, k) from a detector that found nothing is a valid empty frame
        return np.zeros((0, ncols), dtype=DTYPE)
    if out.ndim != 2 or out.shape[1] != ncols:
        raise ValueError(f"{what}: got shape {out.shape}; {expected}")
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{what}: row {row} column '{layout[col]}' is {out[row, col]}; {expected} of finite values")
    for lo, hi in ((0, 2), (1, 3)):
        inverted = out[:, hi] < out[:, lo]
        if inverted.any():
            row = int(np.flatnonzero(inverted)[0])
            raise ValueError(
                f"{what}: row {row} has {layout[hi]}={out[row, hi]:g} < {layout[lo]}={out[row, lo]:g}; "
                "expected corner boxes with x2 >= x1 and y2 >= y1 (convert xywh first)"
            )
    return out


def as_detections(arr: object, *, name: str = "detections") -> np.ndarray:
    """Validate and convert detections to the ``(N, 6)`` float32 layout.

    Args:
        arr: Array-like ``(N, 6)`` ``[x1, y1, x2, y2, conf, cls]`` in pixels. An empty array
            of any shape (``[]``, ``(0, 6)``) means no detection.
        name: How to call the input in error messages (e.g. ``"detector output, frame 12"``).

    Returns:
        A C-contiguous ``(N, 6)`` float32 copy (or the same data when already conforming).

    Raises:
        ValueError: The shape is not ``(N, 6)``, a value is NaN or infinite, a box has
            ``x2 < x1`` or ``y2 < y1``, or a ``conf`` lies outside ``[0, 1]``; the message
            names the row and column and the expected layout.
    """
    out = _as_2d(arr, len(DET_COLUMNS), name, DET_COLUMNS)
    conf = out[:, CONF]
    outside = (conf < 0) | (conf > 1)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{name}: row {row} has conf={conf[row]:g}; expected a detector score in [0, 1]")
    return np.ascontiguousarray(out, dtype=DTYPE)


def as_tracks(arr: object, *, name: str = "tracks") -> np.ndarray:
    """Validate and convert tracks to the ``(M, 8)`` float32 layout.

    Args:
        arr: Array-like ``(M, 8)`` ``[x1, y1, x2, y2, track_id, conf, cls, det_index]``.
        name: How to call the input in error messages.

    Returns:
        A C-contiguous ``(M, 8)`` float32 array.

    Raises:
        ValueError: Wrong shape, NaN/inf, inverted boxes, a ``track_id`` that is not a
            positive integer, or a ``det_index`` that is neither ``-1`` nor a row index.
    """
    out = _as_2d(arr, len(TRACK_COLUMNS), name, TRACK_COLUMNS)
    ids, det_index = out[:, TRACK_ID], out[:, DET_INDEX]
    bad_id = (ids < 1) | (ids != np.round(ids))
    if bad_id.any():
        row = int(np.flatnonzero(bad_id)[0])
        raise ValueError(f"{name}: row {row} has track_id={ids[row]:g}; expected a positive integer")
    bad_index = (det_index < -1) | (det_index != np.round(det_index))
    if bad_index.any():
        row = int(np.flatnonzero(bad_index)[0])
        raise ValueError(f"{name}: row {row} has det_index={det_index[row]:g}; expected -1 or a detection row")
    return np.ascontiguousarray(out, dtype=DTYPE)
