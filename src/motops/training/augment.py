"""Tracking augmentations: what video footage does to a detector that still photos do not.

Three image-level effects, each a pure function of an image and a NumPy ``Generator``:
camera/object motion blur, partial occlusion of the tracked objects, and exposure
changes. None of them works in place: the input image and boxes are never modified.
Images are ``(H, W, 3)`` (or ``(H, W)``) ``uint8``; boxes are ``(N, 4)`` pixel ``xyxy``.

:class:`TrackingAugment` applies them with the probabilities of
:class:`motops.config.AugmentParams`. :func:`install_tracking_augment` hooks it into an
Ultralytics training dataset, right before its final ``Format`` transform, i.e. on the
finished training image after mosaic, affine, HSV and flips; it survives the dataset
rebuilding its transforms when mosaic closes.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

import cv2
import numpy as np

from motops.config import AugmentParams

#: Default of ``min_visible``: a box whose visible share falls below this after occlusion is
#: dropped, matching ``prepare.min_visibility``'s default so the augmented set follows the same rule.
MIN_VISIBLE = 0.3


# --------------------------------------------------------------------------- motion blur


def line_kernel(length: int, angle_deg: float) -> np.ndarray:
    """Normalized line kernel: a motion of ``length`` pixels at ``angle_deg``.

    Args:
        length: Length of the smear in pixels (>= 1).
        angle_deg: Direction, degrees counter-clockwise from the +x axis (image y points down).

    Returns:
        ``(k, k)`` float32 kernel summing to 1, ``k`` = ``length`` rounded up to odd.
    """
    length = max(1, int(length))
    k = length | 1
    kernel = np.zeros((k, k), np.float32)
    c = (k - 1) / 2
    dx, dy = math.cos(math.radians(angle_deg)), -math.sin(math.radians(angle_deg))
    half = (length - 1) / 2
    p0 = (round(c - dx * half), round(c - dy * half))
    p1 = (round(c + dx * half), round(c + dy * half))
    cv2.line(kernel, p0, p1, 1.0, 1)
    return kernel / kernel.sum()


def motion_blur(img: np.ndarray, rng: np.random.Generator, max_len: int) -> np.ndarray:
    """Smear the image along a random direction, as a moving camera or object does.

    Boxes are unchanged: the blur keeps the object centred where it is, and a smear of a
    few pixels is within the label noise of MOT annotations.

    Args:
        img: ``(H, W, C)`` or ``(H, W)`` uint8 image.
        rng: Source of the direction (uniform over 0-180 degrees) and the length
            (uniform integer in ``[3, max_len]``).
        max_len: Longest smear, pixels (``augment.motion_blur_max_len``); raising it
            allows stronger blur. Below 3 the image is returned unchanged (a copy).

    Returns:
        A new image of the same shape and dtype.
    """
    if max_len < 3:
        return img.copy()
    length = int(rng.integers(3, int(max_len) + 1))
    angle = float(rng.uniform(0.0, 180.0))
    return cv2.filter2D(img, -1, line_kernel(length, angle), borderType=cv2.BORDER_REFLECT_101)


# --------------------------------------------------------------------------- occlusion


def _box_slices(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (
        int(np.clip(math.floor(x0), 0, width)),
        int(np.clip(math.floor(y0), 0, height)),
        int(np.clip(math.ceil(x1), 0, width)),
        int(np.clip(math.ceil(y1), 0, height)),
    )


def visible_fractions(boxes: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Share of each box's pixels not covered.

    Args:
        boxes: ``(N, 4)`` pixel xyxy.
        covered: ``(H, W)`` bool, True where an occluder was drawn.

    Returns:
        ``(N,)`` float64 in [0, 1]; 1 for a box with no pixel inside the image.
    """
    height, width = covered.shape
    out = np.ones(len(boxes), np.float64)
    for i, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        x0, y0, x1, y1 = _box_slices(box, width, height)
        if x1 > x0 and y1 > y0:
            out[i] = 1.0 - float(covered[y0:y1, x0:x1].mean())
    return out


def random_occlusion(
    img: np.ndarray,
    boxes: np.ndarray,
    rng: np.random.Generator,
    max_frac: float,
    *,
    min_frac: float = 0.0,
    box_p: float = 0.5,
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, np.ndarray]:
    """Hide parts of objects behind occluders, as passers-by, poles and parked cars do.

    Each box is occluded with probability ``box_p`` by one slab entering from a random
    side of the box (left or right: a pole, another person; top or bottom: a car, a
    bench), spanning the box in the other direction and covering a share of the box drawn
    uniformly from ``[min_frac, max_frac]``. The slab is filled, with equal chance, with
    texture copied from a random place of the same image (a background-like occluder) or
    with random-coloured noise. **Only pixels inside occluded boxes change**; pixels
    outside every box are untouched.

    A box is dropped (``keep`` False) when the share of it left visible by all slabs
    together (a slab drawn for a neighbour may cover it too) is below ``min_visible``.

    Args:
        img: ``(H, W, C)`` or ``(H, W)`` uint8 image.
        boxes: ``(N, 4)`` pixel xyxy (clipped to the image for drawing).
        rng: Source of every random choice.
        max_frac: Largest share of a box one slab covers (``augment.occlusion_max_frac``);
            raising it hides more of the object.
        min_frac: Smallest share of a box one slab covers.
        box_p: Probability that a given box gets a slab; raising it occludes more objects.
        min_visible: Visible share under which a box is dropped; raising it drops more
            partly hidden boxes from the labels.

    Returns:
        ``(image, keep)``: a new image of the same shape and dtype, and ``(N,)`` bool.
    """
    if not 0.0 <= min_frac <= max_frac <= 1.0:
        raise ValueError(f"need 0 <= min_frac <= max_frac <= 1, got min_frac={min_frac}, max_frac={max_frac}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = img.copy()
    height, width = img.shape[:2]
    covered = np.zeros((height, width), bool)
    for box in boxes:
        if rng.random() >= box_p:
            continue
        x0, y0, x1, y1 = _box_slices(box, width, height)
        bw, bh = x1 - x0, y1 - y0
        if bw <= 0 or bh <= 0:
            continue
        frac = float(rng.uniform(min_frac, max_frac))
        side = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
        if side < 2:
            span = round(frac * bw)
            px0 = x0 if side == 0 else x1 - span
            px1, py0, py1 = px0 + span, y0, y1
        else:
            span = round(frac * bh)
            py0 = y0 if side == 2 else y1 - span
            py1, px0, px1 = py0 + span, x0, x1
        ph, pw = py1 - py0, px1 - px0
        if ph <= 0 or pw <= 0:
            continue
        if rng.random() < 0.5:  # background-like: texture from elsewhere in the frame
            sy = int(rng.integers(0, height - ph + 1))
            sx = int(rng.integers(0, width - pw + 1))
            patch = img[sy : sy + ph, sx : sx + pw]
        else:  # random texture: a random colour with noise
            shape = (ph, pw) + img.shape[2:]
            colour = rng.integers(0, 256, size=img.shape[2:] or (1,))
            noise = rng.normal(0.0, 20.0, size=shape)
            patch = np.clip(colour.reshape((1, 1, -1)[: img.ndim]) + noise, 0, 255).astype(img.dtype)
        out[py0:py1, px0:px1] = patch
        covered[py0:py1, px0:px1] = True
    keep = visible_fractions(boxes, covered) >= min_visible
    return out, keep


# --------------------------------------------------------------------------- exposure


def adjust_brightness_contrast(img: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """Scale the image's mean by ``1 + brightness`` and its spread around the mean by ``1 + contrast``.

    Args:
        img: uint8 image, any shape.
        brightness: Relative change of the mean grey level (``0.2``: 20 % brighter).
        contrast: Relative change of the deviation from the mean (``-0.3``: 30 % flatter).

    Returns:
        A new uint8 image of the same shape (values clipped to 0-255).
    """
    x = img.astype(np.float32)
    mean = float(x.mean())
    y = (x - mean) * (1.0 + contrast) + mean * (1.0 + brightness)
    return np.clip(np.rint(y), 0, 255).astype(img.dtype)


def brightness_contrast(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random exposure change: brightness and contrast each drawn from ``[-strength, strength]``.

    Args:
        img: uint8 image.
        rng: Source of the two factors.
        strength: Largest relative change (``augment.brightness_strength``); raising it
            allows darker/brighter and flatter/harsher frames.

    Returns:
        A new uint8 image of the same shape.
    """
    brightness, contrast = (float(v) for v in rng.uniform(-strength, strength, size=2))
    return adjust_brightness_contrast(img, brightness, contrast)


# --------------------------------------------------------------------------- composition


class TrackingAugment:
    """Apply the tracking augmentations, each with its probability.

    Order: occlusion (it happens in the scene), then motion blur (the camera smears the
    occluder too), then exposure. The generator is owned by the instance: the same seed
    and the same inputs give the same outputs. In a forked data-loader worker the
    Ultralytics hook reseeds it from ``(seed, worker id)`` so workers do not repeat each
    other.

    Args:
        params: Probabilities and strengths (``prepare.augment``).
        seed: Seed of the instance's generator.
        min_visible: See :func:`random_occlusion`.

    Attributes:
        applied: How many times each augmentation was applied (``motion_blur``,
            ``occlusion``, ``brightness_contrast``), plus ``calls`` and ``dropped_boxes``.
    """

    def __init__(self, params: AugmentParams, seed: int = 0, *, min_visible: float = MIN_VISIBLE) -> None:
        self.params = params
        self.seed = int(seed)
        self.min_visible = float(min_visible)
        self.rng = np.random.default_rng(self.seed)
        self.applied: Counter[str] = Counter()

    def reseed(self, *keys: int) -> None:
        """Restart the generator from ``(seed, *keys)``."""
        self.rng = np.random.default_rng([self.seed, *(int(k) for k in keys)])

    def __call__(self, img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Augment one image.

        Args:
            img: ``(H, W, C)`` uint8 image (not modified).
            boxes: ``(N, 4)`` pixel xyxy (not modified).

        Returns:
            ``(image, keep)``: a new image and the ``(N,)`` bool mask of boxes still
            visible enough to be labelled.
        """
        p, rng = self.params, self.rng
        self.applied["calls"] += 1
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        keep = np.ones(len(boxes), bool)
        out = img
        if p.occlusion_p > 0 and rng.random() < p.occlusion_p and len(boxes):
            out, keep = random_occlusion(out, boxes, rng, p.occlusion_max_frac, min_visible=self.min_visible)
            self.applied["occlusion"] += 1
            self.applied["dropped_boxes"] += int((~keep).sum())
        if p.motion_blur_p > 0 and rng.random() < p.motion_blur_p:
            out = motion_blur(out, rng, p.motion_blur_max_len)
            self.applied["motion_blur"] += 1
        if p.brightness_p > 0 and rng.random() < p.brightness_p:
            out = brightness_contrast(out, rng, p.brightness_strength)
            self.applied["brightness_contrast"] += 1
        return (out.copy() if out is img else out), keep


# --------------------------------------------------------------------------- Ultralytics hook


class UltralyticsTrackingTransform:
    """An Ultralytics transform (``labels dict -> labels dict``) running :class:`TrackingAugment`.

    Reads ``labels["img"]`` (BGR uint8) and ``labels["instances"]`` (converted to pixel
    xyxy in place, as Ultralytics' own transforms do), writes the augmented image and
    removes the boxes occlusion hid (from ``instances`` and ``cls``). Needs no import of
    Ultralytics, so it pickles into data-loader workers as a plain object.

    Args:
        augment: The augmentations to run.
    """

    def __init__(self, augment: TrackingAugment) -> None:
        self.augment = augment
        self._pid = os.getpid()

    def _reseed_in_worker(self) -> None:
        # Forked workers inherit the generator's state: without this they would all draw the same numbers.
        if os.getpid() == self._pid:
            return
        self._pid = os.getpid()
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        self.augment.reseed(info.id if info is not None else self._pid, info.seed if info is not None else 0)

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        self._reseed_in_worker()
        img = labels["img"]
        instances = labels["instances"]
        height, width = img.shape[:2]
        instances.convert_bbox(format="xyxy")
        instances.denormalize(width, height)
        out, keep = self.augment(img, instances.bboxes)
        labels["img"] = np.ascontiguousarray(out)
        if not keep.all():
            labels["instances"] = instances[keep]
            labels["cls"] = labels["cls"][keep]
        return labels


def _format_index(compose: Any) -> int:
    """Index of the final ``Format`` transform of an Ultralytics ``Compose``."""
    transforms = compose.transforms
    for i in range(len(transforms) - 1, -1, -1):
        if any(cls.__name__ == "Format" for cls in type(transforms[i]).__mro__):
            return i
    names = ", ".join(type(t).__name__ for t in transforms)
    raise RuntimeError(
        f"the Ultralytics training transforms have no Format step ({names}); this Ultralytics version "
        "builds its pipeline differently, so the tracking augmentations cannot be inserted"
    )


def _with_tracking(compose: Any, transform: UltralyticsTrackingTransform) -> Any:
    if not any(t is transform for t in compose.transforms):
        compose.insert(_format_index(compose), transform)
    return compose


class _RebuildWithTracking:
    """Stands in for a dataset's ``build_transforms``: builds as before, then inserts the transform."""

    def __init__(self, build: Any, transform: UltralyticsTrackingTransform) -> None:
        self.build = build
        self.transform = transform

    def __call__(self, hyp: Any) -> Any:
        return _with_tracking(self.build(hyp), self.transform)


def install_tracking_augment(dataset: Any, augment: TrackingAugment) -> UltralyticsTrackingTransform:
    """Hook ``augment`` into an Ultralytics training dataset (e.g. ``YOLODataset``).

    The transform goes right before the dataset's final ``Format`` step. The dataset's
    ``build_transforms`` is wrapped on the instance, so the rebuild Ultralytics does when
    it closes mosaic for the last epochs keeps the transform. Installing twice is a no-op.

    Args:
        dataset: The dataset built for ``mode="train"``.
        augment: The augmentations.

    Returns:
        The inserted transform (its ``augment.applied`` counts what was done).

    Raises:
        RuntimeError: the dataset's transforms have no ``Format`` step.
    """
    current = dataset.__dict__.get("build_transforms")
    if isinstance(current, _RebuildWithTracking):
        return current.transform
    transform = UltralyticsTrackingTransform(augment)
    dataset.transforms = _with_tracking(dataset.transforms, transform)
    dataset.build_transforms = _RebuildWithTracking(dataset.build_transforms, transform)
    return transform
