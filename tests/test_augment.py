"""Tracking augmentations: pure, seeded, and doing what their docstrings say."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from motops.config import AugmentParams
from motops.training.augment import (
    TrackingAugment,
    UltralyticsTrackingTransform,
    adjust_brightness_contrast,
    brightness_contrast,
    install_tracking_augment,
    line_kernel,
    motion_blur,
    random_occlusion,
    visible_fractions,
)


def _scene(seed: int = 0, height: int = 120, width: int = 160) -> np.ndarray:
    """A textured image: noise and sharp-edged rectangles (lots of high-frequency energy)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    for _ in range(8):
        x, y = rng.integers(0, width - 20), rng.integers(0, height - 20)
        cv2.rectangle(img, (int(x), int(y)), (int(x) + 15, int(y) + 15), rng.integers(0, 256, 3).tolist(), -1)
    return img


def _laplacian_var(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


# --------------------------------------------------------------------------- motion blur


def test_line_kernel_points_along_the_direction() -> None:
    horizontal = line_kernel(7, 0.0)
    assert horizontal.shape == (7, 7) and horizontal.sum() == pytest.approx(1.0)
    assert np.count_nonzero(horizontal[3]) == 7 and np.count_nonzero(horizontal) == 7
    vertical = line_kernel(7, 90.0)
    assert np.count_nonzero(vertical[:, 3]) == 7 and np.count_nonzero(vertical) == 7


def test_motion_blur_smooths_along_its_direction_and_keeps_the_input() -> None:
    img = _scene()
    before = img.copy()
    out = motion_blur(img, np.random.default_rng(0), max_len=15)
    np.testing.assert_array_equal(img, before)  # not in place
    assert out.shape == img.shape and out.dtype == np.uint8
    assert _laplacian_var(out) < 0.5 * _laplacian_var(img)
    # a horizontal smear removes horizontal gradients far more than vertical ones
    smeared = cv2.filter2D(img, -1, line_kernel(11, 0.0)).astype(np.float64)
    gx = lambda a: np.abs(np.diff(a.astype(np.float64), axis=1)).mean()  # noqa: E731
    gy = lambda a: np.abs(np.diff(a.astype(np.float64), axis=0)).mean()  # noqa: E731
    assert gx(smeared) / gx(img) < 0.5 * gy(smeared) / gy(img)


def test_motion_blur_too_short_is_identity_copy() -> None:
    img = _scene()
    out = motion_blur(img, np.random.default_rng(0), max_len=2)
    np.testing.assert_array_equal(out, img)
    assert out is not img


# --------------------------------------------------------------------------- occlusion


def test_occlusion_changes_only_pixels_inside_boxes() -> None:
    img = _scene(1)
    boxes = np.array([[10.0, 10.0, 50.0, 90.0], [90.5, 20.2, 140.7, 100.9]])
    inside = np.zeros(img.shape[:2], bool)
    inside[10:90, 10:50] = True
    inside[20:101, 90:141] = True
    changed_any = False
    for seed in range(20):
        before, boxes_before = img.copy(), boxes.copy()
        out, keep = random_occlusion(img, boxes, np.random.default_rng(seed), max_frac=0.4, box_p=1.0)
        np.testing.assert_array_equal(img, before)
        np.testing.assert_array_equal(boxes, boxes_before)
        changed = np.any(out != img, axis=2)
        assert not changed[~inside].any(), seed
        changed_any |= bool(changed.any())
        # one slab covers at most 40 % of its own box, and the boxes do not overlap: all stay visible
        assert keep.all()
    assert changed_any


def test_occlusion_drops_a_fully_covered_box_and_keeps_an_untouched_one() -> None:
    img = _scene(2)
    boxes = np.array([[10.0, 10.0, 50.0, 90.0], [100.0, 20.0, 140.0, 100.0]])
    found = False
    for seed in range(50):
        out, keep = random_occlusion(
            img, boxes, np.random.default_rng(seed), max_frac=1.0, min_frac=1.0, box_p=0.5, min_visible=0.3
        )
        if keep.tolist() != [False, True]:
            continue
        found = True
        np.testing.assert_array_equal(out[20:100, 100:140], img[20:100, 100:140])  # the kept box is untouched
        assert np.any(out[10:90, 10:50] != img[10:90, 10:50])
    assert found, "no seed among 50 occluded exactly the first box"


def test_visible_fractions() -> None:
    covered = np.zeros((10, 10), bool)
    covered[0:10, 0:5] = True
    np.testing.assert_allclose(
        visible_fractions(np.array([[0, 0, 10, 10], [5, 0, 10, 10], [-5, -5, 0, 0]]), covered), [0.5, 1.0, 1.0]
    )


# --------------------------------------------------------------------------- exposure


@pytest.mark.parametrize("brightness", [-0.3, 0.3])
def test_brightness_moves_the_mean(brightness: float) -> None:
    img = np.clip(_scene(3).astype(np.int16) // 2 + 64, 0, 255).astype(np.uint8)  # room on both sides
    out = adjust_brightness_contrast(img, brightness, 0.0)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.sign(out.mean() - img.mean()) == np.sign(brightness)
    assert out.mean() == pytest.approx(img.mean() * (1 + brightness), rel=0.02)


@pytest.mark.parametrize("contrast", [-0.4, 0.4])
def test_contrast_moves_the_std(contrast: float) -> None:
    img = np.clip(_scene(3).astype(np.int16) // 2 + 64, 0, 255).astype(np.uint8)
    out = adjust_brightness_contrast(img, 0.0, contrast)
    assert np.sign(out.std() - img.std()) == np.sign(contrast)
    assert out.mean() == pytest.approx(img.mean(), abs=1.0)


def test_random_brightness_contrast_is_bounded_and_pure() -> None:
    img = _scene(4)
    before = img.copy()
    out = brightness_contrast(img, np.random.default_rng(0), strength=0.3)
    np.testing.assert_array_equal(img, before)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert abs(out.mean() / img.mean() - 1) <= 0.3 + 0.01
    np.testing.assert_array_equal(brightness_contrast(img, np.random.default_rng(0), strength=0.0), img)


# --------------------------------------------------------------------------- composition

BOXES = np.array([[10.0, 10.0, 50.0, 90.0], [100.0, 20.0, 140.0, 100.0]])


def test_probability_zero_is_identity() -> None:
    img = _scene(5)
    aug = TrackingAugment(AugmentParams(motion_blur_p=0, occlusion_p=0, brightness_p=0), seed=1)
    out, keep = aug(img, BOXES)
    np.testing.assert_array_equal(out, img)
    assert out is not img and keep.all() and aug.applied["calls"] == 1 and aug.applied["motion_blur"] == 0


def test_seeded_is_deterministic_and_pure() -> None:
    img = _scene(6)
    before = img.copy()
    params = AugmentParams(motion_blur_p=1.0, occlusion_p=1.0, brightness_p=1.0, occlusion_max_frac=0.9)
    a, b, c = TrackingAugment(params, seed=7), TrackingAugment(params, seed=7), TrackingAugment(params, seed=8)
    runs_a = [a(img, BOXES) for _ in range(3)]
    runs_b = [b(img, BOXES) for _ in range(3)]
    for (ia, ka), (ib, kb) in zip(runs_a, runs_b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ka, kb)
    assert not np.array_equal(runs_a[0][0], c(img, BOXES)[0])
    np.testing.assert_array_equal(img, before)
    assert a.applied["motion_blur"] == a.applied["occlusion"] == a.applied["brightness_contrast"] == 3


# --------------------------------------------------------------------------- Ultralytics hook


class _Transform:
    def __call__(self, labels):
        labels.setdefault("trace", []).append(type(self).__name__)
        return labels


class Format(_Transform):
    pass


class Flip(_Transform):
    pass


class _Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def insert(self, index, transform):
        self.transforms.insert(index, transform)

    def __call__(self, labels):
        for t in self.transforms:
            labels = t(labels)
        return labels


class _Dataset:
    """Stands in for an Ultralytics dataset: transforms built by build_transforms, rebuilt on close_mosaic."""

    def __init__(self):
        self.builds = 0
        self.transforms = self.build_transforms(None)

    def build_transforms(self, hyp):
        self.builds += 1
        return _Compose([Flip(), Format()])

    def close_mosaic(self, hyp):
        self.transforms = self.build_transforms(hyp)


def test_install_inserts_before_format_and_survives_rebuild() -> None:
    dataset = _Dataset()
    aug = TrackingAugment(AugmentParams(motion_blur_p=1.0, occlusion_p=0, brightness_p=0), seed=0)
    hook = install_tracking_augment(dataset, aug)
    assert install_tracking_augment(dataset, aug) is hook  # idempotent
    names = lambda: [type(t).__name__ for t in dataset.transforms.transforms]  # noqa: E731
    assert names() == ["Flip", "UltralyticsTrackingTransform", "Format"]
    dataset.close_mosaic(None)
    assert dataset.builds == 2 and names() == ["Flip", "UltralyticsTrackingTransform", "Format"]


def test_install_refuses_a_pipeline_without_format() -> None:
    dataset = _Dataset()
    dataset.transforms = _Compose([Flip()])
    with pytest.raises(RuntimeError, match="no Format step"):
        install_tracking_augment(dataset, TrackingAugment(AugmentParams(), seed=0))


def test_ultralytics_transform_drops_hidden_boxes_from_instances() -> None:
    from ultralytics.utils.instance import Instances

    img = _scene(7)
    h, w = img.shape[:2]
    xywh_norm = np.array([[30 / w, 50 / h, 40 / w, 80 / h], [120 / w, 60 / h, 40 / w, 80 / h]], np.float32)
    xyxy = np.array([[10, 10, 50, 90], [100, 20, 140, 100]], np.float64)
    params = AugmentParams(motion_blur_p=0, occlusion_p=1.0, occlusion_max_frac=1.0, brightness_p=0)
    seen = set()
    for seed in range(30):
        labels = {
            "img": img.copy(),
            "cls": np.array([[3.0], [5.0]], np.float32),
            "instances": Instances(
                xywh_norm.copy(), np.zeros((0, 1000, 2), np.float32), None, bbox_format="xywh", normalized=True
            ),
        }
        aug = TrackingAugment(params, seed=seed, min_visible=0.999)  # a box losing any pixel is dropped
        out = UltralyticsTrackingTransform(aug)(labels)
        assert out["instances"].normalized is False and len(out["instances"]) == len(out["cls"])
        for box, cls in zip(out["instances"].bboxes, out["cls"][:, 0], strict=True):
            j = int(cls == 5.0)
            np.testing.assert_allclose(box, xyxy[j], atol=1e-3)  # kept boxes are the untouched ones
            x0, y0, x1, y1 = xyxy[j].astype(int)
            np.testing.assert_array_equal(out["img"][y0:y1, x0:x1], img[y0:y1, x0:x1])
        seen.add(len(out["cls"]))
    assert 1 in seen  # in one image, one box dropped and the other kept
