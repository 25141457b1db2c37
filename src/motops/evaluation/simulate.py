"""A detector simulated from ground truth, to test trackers on real motion without images.

Real MOTChallenge ground truth carries real motion (walking, occlusion, crossing
paths); degrading it the way a detector does gives tracker input whose failure
modes are known and repeatable: misses that grow with occlusion, box jitter,
confidence that falls for occluded people, false positives in the background, and
a few detections of distractors (static people, reflections).

Detections use the tracker interface of :mod:`motops.runtime`: an ``(N, 6)``
float64 array per frame, columns ``x1, y1, x2, y2, conf, cls``, boxes in pixels.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from motops.data.schema import PEDESTRIAN

#: GT classes that look like people to a detector (MOT17 ids): person on vehicle,
#: static person, distractor, reflection. Cars and occluders never fire.
PERSON_LIKE_CLASSES: tuple[int, ...] = (2, 7, 8, 12)

#: COCO class id of a person, which a YOLO-style detector emits.
COCO_PERSON = 0


def simulate_detections(
    gt: pl.DataFrame,
    *,
    seed: int,
    miss_rate: float = 0.05,
    occlusion_miss: float = 0.8,
    jitter: float = 0.05,
    fp_rate: float = 0.5,
    conf_mean: float = 0.9,
    occlusion_conf_drop: float = 0.5,
    conf_noise: float = 0.08,
    min_conf: float = 0.05,
    distractor_rate: float = 0.2,
    num_frames: int | None = None,
    image_size: tuple[int, int] | None = None,
    class_id: int = COCO_PERSON,
) -> dict[int, np.ndarray]:
    """Turn one sequence's ground truth into per-frame detections.

    Only pedestrians (class 1) with consider flag 1 are "true" objects. Each
    frame's rows are drawn independently; the same ``seed`` and arguments give
    the same output.

    Args:
        gt: One sequence in MOT columns (``frame, id, left, top, width, height``;
            ``conf`` = consider flag, ``class`` and ``visibility`` default to 1).
        seed: Seed of the random generator (``numpy.random.default_rng``).
        miss_rate: Probability that a fully visible pedestrian is not detected.
            Raising it drops more detections everywhere.
        occlusion_miss: Extra miss probability at zero visibility; the miss
            probability is ``miss_rate + occlusion_miss * (1 - visibility) ** 2``
            (clipped to [0, 1]): half-visible people are still mostly found,
            nearly hidden ones mostly not. Raising it makes occluded people
            vanish more.
        jitter: Standard deviation of box noise as a fraction of box size: the
            centre moves by ``N(0, jitter * w)`` / ``N(0, jitter * h)`` and the
            size scales by ``1 + N(0, jitter)``. Raising it makes boxes shakier
            (lower IoU between frames, lower MOTP).
        fp_rate: Mean number of false positives per frame (Poisson). They take
            sizes of random GT boxes of the sequence and random positions in
            the image. Raising it adds clutter.
        conf_mean: Confidence of a fully visible detection before noise.
        occlusion_conf_drop: Confidence lost at zero visibility: the mean is
            ``conf_mean - occlusion_conf_drop * (1 - visibility)``. Raising it
            pushes occluded people below the tracker's high threshold.
        conf_noise: Standard deviation of Gaussian noise added to every
            confidence. Raising it blurs the line between good and bad boxes.
        min_conf: Confidences are clipped to ``[min_conf, 1]`` (a detector's
            output threshold). False positives draw from ``[min_conf, 0.6]``.
        distractor_rate: Probability that a person-like GT box that is not
            scored (classes 2, 7, 8, 12 or a consider flag of 0) is detected,
            as real detectors do; scoring with preprocessing ignores those.
        num_frames: Frames ``1..num_frames`` get a key (empty arrays where
            nothing is detected); default the last GT frame.
        image_size: ``(width, height)`` for false positive placement and
            clipping; default the extent of the GT boxes.
        class_id: Value of the ``cls`` column (COCO person by default).

    Returns:
        ``{frame: (N, 6) float64 array}`` for frames ``1..num_frames``, columns
        ``x1, y1, x2, y2, conf, cls`` in pixels, rows sorted by confidence
        (highest first).

    Raises:
        ValueError: a rate outside [0, 1], a negative noise, or missing columns.
    """
    for name, value in (
        ("miss_rate", miss_rate),
        ("occlusion_miss", occlusion_miss),
        ("distractor_rate", distractor_rate),
        ("min_conf", min_conf),
        ("conf_mean", conf_mean),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    for name, value in (("jitter", jitter), ("fp_rate", fp_rate), ("conf_noise", conf_noise)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    missing = [c for c in ("frame", "id", "left", "top", "width", "height") if c not in gt.columns]
    if missing:
        raise ValueError(f"ground truth lacks columns {missing}")

    rng = np.random.default_rng(seed)
    table = gt.with_columns(
        pl.lit(v).alias(c)
        for c, v in {"conf": 1.0, "class": PEDESTRIAN, "visibility": 1.0}.items()
        if c not in gt.columns
    ).sort(["frame", "id"])
    frame = table["frame"].to_numpy().astype(np.int64)
    box = table.select("left", "top", "width", "height").to_numpy().astype(np.float64)
    visibility = np.clip(table["visibility"].to_numpy().astype(np.float64), 0.0, 1.0)
    cls = table["class"].to_numpy().astype(np.int64)
    consider = table["conf"].to_numpy() != 0
    scored = (cls == PEDESTRIAN) & consider
    person_like = np.isin(cls, PERSON_LIKE_CLASSES) | ((cls == PEDESTRIAN) & ~consider)

    last = int(num_frames) if num_frames is not None else int(frame.max(initial=0))
    if image_size is None:
        width = float(np.max(box[:, 0] + box[:, 2], initial=1.0))
        height = float(np.max(box[:, 1] + box[:, 3], initial=1.0))
    else:
        width, height = float(image_size[0]), float(image_size[1])

    # Draw every random number for every row in a fixed order, so that turning one
    # knob does not reshuffle the others' draws.
    n = len(frame)
    u_detect = rng.random(n)
    noise_xy = rng.standard_normal((n, 2))
    noise_wh = rng.standard_normal((n, 2))
    noise_conf = rng.standard_normal(n)

    p_miss = np.clip(miss_rate + occlusion_miss * (1.0 - visibility) ** 2, 0.0, 1.0)
    keep = (scored & (u_detect >= p_miss)) | (person_like & (u_detect < distractor_rate))
    keep &= (box[:, 2] > 0) & (box[:, 3] > 0)

    w = box[:, 2] * np.maximum(1.0 + jitter * noise_wh[:, 0], 0.2)
    h = box[:, 3] * np.maximum(1.0 + jitter * noise_wh[:, 1], 0.2)
    cx = box[:, 0] + box[:, 2] / 2 + jitter * box[:, 2] * noise_xy[:, 0]
    cy = box[:, 1] + box[:, 3] / 2 + jitter * box[:, 3] * noise_xy[:, 1]
    conf = conf_mean - occlusion_conf_drop * (1.0 - visibility) + conf_noise * noise_conf
    conf = np.clip(conf, min_conf, 1.0)
    dets = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, conf, np.full(n, float(class_id))])

    # false positives: Poisson count per frame, GT-sized boxes at random places
    fp_counts = rng.poisson(fp_rate, size=last) if last > 0 else np.zeros(0, dtype=np.int64)
    n_fp = int(fp_counts.sum())
    fp_frames = np.repeat(np.arange(1, last + 1), fp_counts)
    # without GT boxes to copy sizes from, a pedestrian-ish default (3 % x 10 % of the image)
    sizes = box[rng.integers(0, n, size=n_fp), 2:4] if n else np.tile([width * 0.03, height * 0.1], (n_fp, 1))
    x1 = rng.random(n_fp) * np.maximum(width - sizes[:, 0], 1.0)
    y1 = rng.random(n_fp) * np.maximum(height - sizes[:, 1], 1.0)
    fp_conf = min_conf + rng.random(n_fp) * max(0.6 - min_conf, 0.0)
    fps = np.column_stack([x1, y1, x1 + sizes[:, 0], y1 + sizes[:, 1], fp_conf, np.full(n_fp, float(class_id))])

    all_frames = np.concatenate([frame[keep], fp_frames])
    all_dets = np.concatenate([dets[keep], fps.reshape(-1, 6)])
    all_dets[:, [0, 2]] = np.clip(all_dets[:, [0, 2]], 0.0, width)
    all_dets[:, [1, 3]] = np.clip(all_dets[:, [1, 3]], 0.0, height)
    valid = (all_dets[:, 2] - all_dets[:, 0] > 1.0) & (all_dets[:, 3] - all_dets[:, 1] > 1.0)
    valid &= (all_frames >= 1) & (all_frames <= last)
    all_frames, all_dets = all_frames[valid], all_dets[valid]

    # group by frame, highest confidence first (as a detector's NMS output)
    order = np.lexsort((-all_dets[:, 4], all_frames))
    all_frames, all_dets = all_frames[order], all_dets[order]
    bounds = np.searchsorted(all_frames, np.arange(1, last + 2))
    return {f: all_dets[bounds[f - 1] : bounds[f]].copy() for f in range(1, last + 1)}


__all__ = ["COCO_PERSON", "PERSON_LIKE_CLASSES", "simulate_detections"]
