"""Camera-motion compensation for BoT-SORT: a ``(2, 3)`` similarity warp between consecutive frames.

Methods (``TrackerParams.gmc_method``):

* ``sparseOptFlow`` (the default): corners (``cv2.goodFeaturesToTrack``) of the previous frame
  followed into this one with pyramidal Lucas-Kanade flow, then a RANSAC 4-parameter
  similarity (``cv2.estimateAffinePartial2D``). It runs on a grey image scaled down by an
  integer factor to about :data:`GMC_WIDTH` px with at most :data:`GMC_MAX_CORNERS`
  corners: a 4-parameter warp needs few points, and on synthetic pan/jitter footage this
  gave the IDF1 of the half-resolution, 400-corner setting (0.429 against 0.430 over 3
  sequences) at half the tracker's time per frame. Translations are scaled back to pixels.
* ``ecc``: OpenCV's enhanced-correlation maximisation of a Euclidean warp on a 4x smaller
  image; the most accurate and the slowest.
* ``orb``: ORB features outside the detected boxes (people move on their own), matched
  to the previous frame's by Hamming distance, then the same RANSAC similarity.

The warp depends only on the frames (``orb`` also on the boxes), so it can be computed
ahead in another thread (:meth:`CameraMotion.apply` on the same frames in the same order).
A first frame, too few points or a failed estimate give the identity.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np

GMC_WIDTH: Final = 160
GMC_MAX_CORNERS: Final = 200
# Corner detector settings besides the count: weak corners are fine for a RANSAC fit, and
# integer-pixel corners need no minimum distance.
_CORNER_QUALITY: Final = 0.01
_CORNER_BLOCK: Final = 3
_MIN_POINTS: Final = 5  # a similarity has 4 parameters; RANSAC needs more points than that
_ECC_DOWNSCALE: Final = 4
_ECC_CRITERIA: Final = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
_ORB_DOWNSCALE: Final = 2
_ORB_MAX_DISTANCE: Final = 50  # Hamming distance above which two ORB descriptors are not the same point


class CameraMotion:
    """Frame-to-frame camera motion of one video stream.

    Args:
        method: ``"sparseOptFlow"``, ``"ecc"`` or ``"orb"`` (see the module docstring).
        width: Target width of the image the motion is measured on (sparse flow); the
            integer downscale factor is fixed on the first frame (``width // GMC_WIDTH``).
        max_corners: Corners followed by the sparse flow.

    Attributes:
        downscale: The integer factor frames are shrunk by (set on the first frame; 1 before).
    """

    def __init__(self, method: str, width: int = GMC_WIDTH, max_corners: int = GMC_MAX_CORNERS) -> None:
        if method not in ("sparseOptFlow", "ecc", "orb"):
            raise ValueError(f"CameraMotion: method={method!r}; expected 'sparseOptFlow', 'ecc' or 'orb'")
        self.method = method
        self.width = width
        self.max_corners = max_corners
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (the next one gives the identity) and the downscale factor."""
        self.downscale = 1
        self._sized = False
        self._prev: np.ndarray | None = None
        self._prev_points: np.ndarray | None = None
        self._prev_desc: np.ndarray | None = None

    def apply(self, frame: np.ndarray, boxes_xyxy: np.ndarray | None = None) -> np.ndarray:
        """The warp ``(2, 3)`` float64 taking the previous frame's pixel coordinates to this frame's.

        Args:
            frame: BGR ``(H, W, 3)`` or grey ``(H, W)`` uint8 image.
            boxes_xyxy: ``orb`` only: ``(N, 4)`` boxes whose pixels are ignored (moving objects).
        """
        if not self._sized:
            factor = _ORB_DOWNSCALE if self.method == "orb" else _ECC_DOWNSCALE
            self.downscale = max(1, frame.shape[1] // self.width) if self.method == "sparseOptFlow" else factor
            self._sized = True
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        if self.downscale > 1:
            h, w = grey.shape
            grey = cv2.resize(grey, (w // self.downscale, h // self.downscale))
        if self.method == "sparseOptFlow":
            warp = self._sparse_flow(grey)
        elif self.method == "ecc":
            warp = self._ecc(grey)
        else:
            warp = self._orb(grey, boxes_xyxy)
        warp[:, 2] *= self.downscale
        return warp

    def _sparse_flow(self, grey: np.ndarray) -> np.ndarray:
        points = cv2.goodFeaturesToTrack(grey, self.max_corners, _CORNER_QUALITY, 0, blockSize=_CORNER_BLOCK)
        warp = np.eye(2, 3)
        prev, prev_points = self._prev, self._prev_points
        self._prev, self._prev_points = grey, points
        if prev is None or prev_points is None or prev.shape != grey.shape:
            return warp
        moved, status, _ = cv2.calcOpticalFlowPyrLK(prev, grey, prev_points, None)
        good = status.ravel().astype(bool)
        return _similarity(prev_points[good], moved[good])

    def _ecc(self, grey: np.ndarray) -> np.ndarray:
        grey = cv2.GaussianBlur(grey, (3, 3), 1.5)
        prev, self._prev = self._prev, grey
        warp = np.eye(2, 3, dtype=np.float32)
        if prev is None or prev.shape != grey.shape:
            return warp.astype(np.float64)
        try:
            _, found = cv2.findTransformECC(prev, grey, warp, cv2.MOTION_EUCLIDEAN, _ECC_CRITERIA, None, 1)
        except cv2.error:
            return np.eye(2, 3)
        return found.astype(np.float64)

    def _orb(self, grey: np.ndarray, boxes_xyxy: np.ndarray | None) -> np.ndarray:
        h, w = grey.shape
        mask = np.zeros_like(grey)
        mask[int(0.02 * h) : int(0.98 * h), int(0.02 * w) : int(0.98 * w)] = 255  # borders often warp
        if boxes_xyxy is not None:
            scaled = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) / self.downscale
            for x1, y1, x2, y2 in scaled.astype(int):
                mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = 0
        orb = cv2.ORB_create()
        keypoints, desc = orb.detectAndCompute(grey, mask)
        points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 1, 2)
        prev_points, prev_desc = self._prev_points, self._prev_desc
        self._prev_points, self._prev_desc = points, desc
        if prev_desc is None or desc is None or prev_points is None:
            return np.eye(2, 3)
        matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(prev_desc, desc)
        matches = [m for m in matches if m.distance < _ORB_MAX_DISTANCE]
        if not matches:
            return np.eye(2, 3)
        src = prev_points[[m.queryIdx for m in matches]]
        dst = points[[m.trainIdx for m in matches]]
        return _similarity(src, dst)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """RANSAC similarity ``(2, 3)`` float64 from point pairs; the identity when it cannot be estimated."""
    if len(src) < _MIN_POINTS:
        return np.eye(2, 3)
    warp, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC)
    return np.eye(2, 3) if warp is None else warp.astype(np.float64)
