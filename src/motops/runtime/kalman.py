"""The constant-velocity Kalman filter of ByteTrack (``xyah``) and BoT-SORT (``xywh``), batched over tracks.

State, ``(8,)`` per track: four box coordinates and their velocities per frame. ByteTrack
(Zhang et al., 2022) measures ``[cx, cy, a, h]`` (centre, aspect ratio ``w / h``, height);
BoT-SORT (Aharon et al., 2022) measures ``[cx, cy, w, h]``, which follows a box whose width
changes independently of its height better. In both, the noise is proportional to the box
size (the published weights 1/20 for positions and 1/160 for velocities), so a large, near
object may move more pixels per frame than a small, far one. ``xyah``'s aspect-ratio noise is
a small constant instead, as the aspect ratio of a person changes little.

Every function takes and returns arrays for ``n`` tracks at once (``means (n, 8)``,
``covs (n, 8, 8)``): a tracker predicts and updates all its tracks with a few matrix
products per frame rather than one small product per track.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np

STD_POSITION: Final = 1.0 / 20
STD_VELOCITY: Final = 1.0 / 160
# xyah: the aspect ratio's standard deviations (initial/process position, process velocity, measurement).
_ASPECT_POS: Final = 1e-2
_ASPECT_VEL: Final = 1e-5
_ASPECT_MEAS: Final = 1e-1

Form = Literal["xyah", "xywh"]

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # one frame of constant velocity


class KalmanFilter:
    """Constant-velocity Kalman filter over box states; ``form`` picks ByteTrack's or BoT-SORT's measurement.

    Args:
        form: ``"xyah"`` (ByteTrack: centre, aspect ratio, height) or ``"xywh"`` (BoT-SORT:
            centre, width, height).
    """

    def __init__(self, form: Form) -> None:
        if form not in ("xyah", "xywh"):
            raise ValueError(f"KalmanFilter: form={form!r}; expected 'xyah' or 'xywh'")
        self.form = form

    def _scale(self, boxes: np.ndarray, aspect: float) -> np.ndarray:
        """``(n, 4)`` per-coordinate scale: box height (xyah; ``aspect`` for the ratio) or width/height."""
        if self.form == "xyah":
            h = boxes[:, 3]
            return np.stack([h, h, np.full_like(h, aspect), h], axis=1)
        w, h = boxes[:, 2], boxes[:, 3]
        return np.stack([w, h, w, h], axis=1)

    def _weighted(self, boxes: np.ndarray, weight: float, aspect: float) -> np.ndarray:
        std = self._scale(boxes, aspect)
        if self.form == "xyah":  # the aspect column is a constant, not scaled by the weight
            std[:, :2] *= weight
            std[:, 3] *= weight
        else:
            std *= weight
        return std

    def measure(self, xyxy: np.ndarray) -> np.ndarray:
        """Corner boxes ``(n, 4)`` to this filter's measurement ``(n, 4)``."""
        xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        wh = xyxy[:, 2:] - xyxy[:, :2]
        centre = xyxy[:, :2] + wh / 2
        if self.form == "xyah":
            return np.concatenate([centre, wh[:, :1] / wh[:, 1:], wh[:, 1:]], axis=1)
        return np.concatenate([centre, wh], axis=1)

    def xyxy(self, means: np.ndarray) -> np.ndarray:
        """States ``(n, 8)`` to corner boxes ``(n, 4)``."""
        m = means[:, :4]
        w = m[:, 2] * m[:, 3] if self.form == "xyah" else m[:, 2]
        h = m[:, 3]
        return np.stack([m[:, 0] - w / 2, m[:, 1] - h / 2, m[:, 0] + w / 2, m[:, 1] + h / 2], axis=1)

    def initiate(self, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from measurements ``(n, 4)``: zero velocity, uncertainty scaled by box size.

        Returns:
            ``means (n, 8)`` and diagonal ``covs (n, 8, 8)``.
        """
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, 4)
        means = np.concatenate([z, np.zeros_like(z)], axis=1)
        std = np.concatenate(
            [self._weighted(z, 2 * STD_POSITION, _ASPECT_POS), self._weighted(z, 10 * STD_VELOCITY, _ASPECT_VEL)],
            axis=1,
        )
        return means, _diag(std**2)

    def predict(self, means: np.ndarray, covs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead: ``means (n, 8)``, ``covs (n, 8, 8)`` -> the predicted ones (new arrays)."""
        if len(means) == 0:
            return means.copy(), covs.copy()
        q = np.concatenate(
            [self._weighted(means[:, :4], STD_POSITION, _ASPECT_POS),
             self._weighted(means[:, :4], STD_VELOCITY, _ASPECT_VEL)],
            axis=1,
        )  # fmt: skip
        return means @ _F.T, _F @ covs @ _F.T + _diag(q**2)

    def update(
        self, means: np.ndarray, covs: np.ndarray, measurements: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Correct ``n`` predicted states with their measurements ``(n, 4)``; returns new arrays."""
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, 4)
        if len(z) == 0:
            return means.copy(), covs.copy()
        r = self._weighted(means[:, :4], STD_POSITION, _ASPECT_MEAS) ** 2
        innovation_cov = covs[:, :4, :4] + _diag(r)  # (n, 4, 4)
        gain_t = np.linalg.solve(innovation_cov, covs[:, :4, :])  # K^T = S^-1 H P (S, P symmetric)
        gain = np.swapaxes(gain_t, 1, 2)  # (n, 8, 4)
        innovation = z - means[:, :4]
        new_means = means + np.einsum("nij,nj->ni", gain, innovation)
        new_covs = covs - gain @ innovation_cov @ gain_t
        return new_means, new_covs

    @staticmethod
    def warp(means: np.ndarray, covs: np.ndarray, warp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply a camera-motion warp ``(2, 3)`` (rotation/scale ``A``, translation ``t``) to the states.

        As in BoT-SORT: the centre and its velocity are multiplied by ``A`` and the centre is
        translated; the size and its velocity are multiplied by ``|A|`` (element-wise), so a
        small camera rotation never turns a width or height negative.
        """
        if len(means) == 0:
            return means.copy(), covs.copy()
        a = np.asarray(warp[:, :2], dtype=np.float64)
        big = np.kron(np.eye(4), a)  # (8, 8): one 2x2 block per coordinate pair
        big[2:4, 2:4] = big[6:8, 6:8] = np.abs(a)
        new_means = means @ big.T
        new_means[:, :2] += warp[:, 2]
        return new_means, big @ covs @ big.T


def _diag(values: np.ndarray) -> np.ndarray:
    """``(n, k)`` -> ``(n, k, k)`` diagonal matrices."""
    n, k = values.shape
    out = np.zeros((n, k, k))
    idx = np.arange(k)
    out[:, idx, idx] = values
    return out
