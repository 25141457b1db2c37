"""The ``prepare`` stage, detector part: a train/val split by sequence and a YOLO detection set.

Whole sequences go to one side of the split, never frames of one sequence to both: frames
of a video are near-duplicates, so a frame-level split would score the detector on what it
trained on. Frames are sampled along short clips (``clip_length`` consecutive frames every
``clip_stride`` frames), which keeps the motion the tracking augmentations imitate while
dropping most of the redundancy of 25-30 fps footage.

The YOLO set written by :func:`build_yolo_dataset` looks like::

    out_dir/
    ├── data.yaml                    path (absolute), train, val, names {0: person}
    ├── split.json                   sequences, images and boxes per side
    ├── images/{train,val}/SEQ_000001.jpg   hard links to the ingested frames (copies across file systems)
    └── labels/{train,val}/SEQ_000001.txt   "class cx cy w h" per box, normalized to [0, 1]
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from motops.data.mot import link_or_copy
from motops.data.schema import MOT_CLASSES, PEDESTRIAN
from motops.errors import ConfigError, DataFormatError, MotopsError

#: MOT pedestrian -> YOLO class 0, named like COCO's 'person' so COCO-pretrained weights finetune in place.
DEFAULT_CLASS_MAP: Mapping[int, int] = {PEDESTRIAN: 0}

#: YOLO class names for MOT classes whose COCO name differs from the MOT one.
_YOLO_NAMES: Mapping[int, str] = {PEDESTRIAN: "person"}

#: Boxes narrower or shorter than this after clipping to the image (pixels) are not written.
MIN_BOX_PX = 1.0


# --------------------------------------------------------------------------- split


def split_sequences(
    sequences: Iterable[str],
    *,
    val_sequences: Sequence[str] = (),
    val_fraction: float = 0.25,
    seed: int = 0,
    train_only: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """Split sequence names into train and val, whole sequences only.

    Args:
        sequences: Every sequence name (duplicates are ignored).
        val_sequences: Explicit val sequences (``prepare.val_sequences``); when not empty it
            decides the split and ``val_fraction``/``seed`` are unused.
        val_fraction: Share of sequences drawn for val when no explicit list is given;
            rounded, at least one sequence and at most all but one. Raising it moves
            more sequences from train to val.
        seed: Seed of the draw; the same names and seed give the same split whatever
            their order.
        train_only: Sequences that may never be val (pseudo-labelled footage: the gate scores
            people's labels only); they go to train, and the draw is over the others.

    Returns:
        ``(train, val)``: sorted sequence names, disjoint, both non-empty.

    Raises:
        ConfigError: an explicit val sequence is unknown (all unknown names are listed),
            or the explicit list leaves no train sequence.
        MotopsError: fewer than two sequences, so one side would be empty.
    """
    names = sorted(set(sequences))
    if len(names) < 2:
        raise MotopsError(
            f"prepare: the train/val split is by whole sequence and needs at least 2 sequences, "
            f"got {len(names)} ({', '.join(names) or 'none'}); add footage or more synthetic sequences"
        )
    pinned = sorted(set(train_only) & set(names))
    if val_sequences:
        pseudo = sorted(set(val_sequences) & set(pinned))
        if pseudo:
            raise ConfigError(f"prepare.val_sequences: {', '.join(map(repr, pseudo))} are pseudo-labelled "
                              "(labels: pseudo); validation scores people's labels only, name labelled sequences")
        unknown = sorted(set(val_sequences) - set(names))
        if unknown:
            raise ConfigError(
                f"prepare.val_sequences: unknown sequence(s) {', '.join(map(repr, unknown))}; "
                f"the ingested sequences are: {', '.join(names)}"
            )
        val = sorted(set(val_sequences))
        train = [n for n in names if n not in set(val)]
        if not train:
            raise ConfigError(
                f"prepare.val_sequences lists every sequence ({', '.join(val)}); at least one must stay for training"
            )
        return train, val
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"prepare.val_fraction must be in (0, 1), got {val_fraction}")
    labelled = [n for n in names if n not in set(pinned)]
    if not labelled:
        raise MotopsError(f"prepare: every sequence is pseudo-labelled ({', '.join(names)}); validation needs "
                          "footage labelled by people")
    n_val = min(max(1, round(len(labelled) * val_fraction)), len(names) - 1, len(labelled))
    chosen = np.random.default_rng(seed).choice(len(labelled), size=n_val, replace=False)
    val = sorted(labelled[i] for i in chosen)
    train = [n for n in names if n not in set(val)]
    return train, val


# --------------------------------------------------------------------------- frames and labels


def clip_frames(length: int, clip_length: int, clip_stride: int) -> list[int]:
    """1-based frames sampled along clips: ``clip_length`` consecutive frames every ``clip_stride``.

    Args:
        length: Frames in the sequence.
        clip_length: Frames per clip (all frames when ``>= clip_stride``).
        clip_stride: Frames between clip starts; the first clip starts at frame 1.

    Returns:
        Sorted frame numbers.
    """
    if clip_length < 1 or clip_stride < 1:
        raise ConfigError(f"prepare: clip_length and clip_stride must be >= 1, got {clip_length}, {clip_stride}")
    return [f for f in range(1, length + 1) if (f - 1) % clip_stride < clip_length]


def yolo_labels(
    rows: pl.DataFrame,
    *,
    width: int,
    height: int,
    min_visibility: float,
    class_map: Mapping[int, int] = DEFAULT_CLASS_MAP,
) -> np.ndarray:
    """YOLO boxes of one image from its annotation rows.

    Kept: rows scored by MOTChallenge (``conf`` = the *consider* flag > 0), of a class in
    ``class_map``, with ``visibility >= min_visibility`` (a missing visibility counts as
    fully visible). MOT coordinates are 1-based (``left = 1`` is the first pixel column);
    boxes are clipped to the image and dropped when less than :data:`MIN_BOX_PX` remains.

    Args:
        rows: Annotation rows (``ANNOTATION_SCHEMA``) of one frame.
        width: Image width, pixels.
        height: Image height, pixels.
        min_visibility: Smallest visible fraction kept; raising it trains on fewer,
            clearer boxes.
        class_map: MOT class id -> YOLO class id.

    Returns:
        ``(N, 5)`` float64: YOLO class, centre x, centre y, width, height; the last four
        normalized by the image size, in [0, 1].
    """
    kept = rows.filter(
        (pl.col("conf") > 0)
        & pl.col("class").is_in(list(class_map))
        & (pl.col("visibility").fill_null(1.0) >= min_visibility)
    )
    if kept.height == 0:
        return np.zeros((0, 5), np.float64)
    x0 = (kept["left"].to_numpy() - 1.0).clip(0, width)
    y0 = (kept["top"].to_numpy() - 1.0).clip(0, height)
    x1 = (kept["left"].to_numpy() - 1.0 + kept["width"].to_numpy()).clip(0, width)
    y1 = (kept["top"].to_numpy() - 1.0 + kept["height"].to_numpy()).clip(0, height)
    cls = np.array([class_map[int(c)] for c in kept["class"].to_list()], np.float64)
    ok = ((x1 - x0) >= MIN_BOX_PX) & ((y1 - y0) >= MIN_BOX_PX)
    out = np.stack([cls, (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height], axis=1)
    return out[ok]


def ignore_boxes(rows: pl.DataFrame, class_map: Mapping[int, int] = DEFAULT_CLASS_MAP) -> np.ndarray:
    """``(K, 4)`` xyxy image pixels of one frame's rows that are of a trained class but not scored (``conf`` 0).

    Such a box is a person nobody vouches for (a pseudo-label the champion was unsure of, a CVAT
    box left *ignored*): training neither as a person nor as background, it is masked out.
    """
    kept = rows.filter((pl.col("conf") <= 0) & pl.col("class").is_in(list(class_map)))
    if kept.height == 0:
        return np.zeros((0, 4))
    x0, y0 = kept["left"].to_numpy() - 1.0, kept["top"].to_numpy() - 1.0
    return np.stack([x0, y0, x0 + kept["width"].to_numpy(), y0 + kept["height"].to_numpy()], axis=1)


def write_masked(src: Path, dst: Path, boxes: np.ndarray) -> None:
    """Copy the image ``src`` to ``dst`` with ``boxes`` (xyxy pixels) filled with the letterbox grey (114).

    Raises:
        DataFormatError: ``src`` cannot be decoded.
    """
    import cv2

    image = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if image is None:
        raise DataFormatError(src, "cannot decode the image")
    h, w = image.shape[:2]
    for x0, y0, x1, y1 in boxes:
        image[max(0, int(y0)):min(h, int(np.ceil(y1))), max(0, int(x0)):min(w, int(np.ceil(x1)))] = 114
    if dst.exists():
        dst.unlink()
    if not cv2.imwrite(str(dst), image):
        raise DataFormatError(dst, "cannot write the masked image")


def _format_labels(labels: np.ndarray) -> str:
    return "".join(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in labels)


def _class_names(class_map: Mapping[int, int]) -> dict[int, str]:
    ids = sorted(set(class_map.values()))
    if ids != list(range(len(ids))):
        raise ConfigError(f"prepare: YOLO class ids must be 0..K-1 without gaps, got {ids} from class_map {class_map}")
    names: dict[int, str] = {}
    for mot, yolo in sorted(class_map.items()):
        names.setdefault(yolo, _YOLO_NAMES.get(mot, MOT_CLASSES.get(mot, f"class{mot}")))
    return names


# --------------------------------------------------------------------------- the data set


def _refuse_sequences_without_targets(
    sequences: pl.DataFrame, annotations: pl.DataFrame, names: list[str], class_map: Mapping[int, int]
) -> None:
    """A sequence without one scored box of a trained class (e.g. gt with no pedestrians) stops the stage."""
    wanted = annotations.filter(pl.col("class").is_in(list(class_map)) & (pl.col("conf") > 0))
    have = set(wanted["sequence"].unique().to_list())
    for name in names:
        if name in have:
            continue
        rows = annotations.filter(pl.col("sequence") == name)
        where = rows["file"][0] if rows.height else str(
            Path(sequences.filter(pl.col("sequence") == name)["path"][0]) / "gt" / "gt.txt"
        )
        found = sorted(set(rows["class"].to_list()))
        raise DataFormatError(
            Path(where),
            f"sequence '{name}' has no scored box of class {sorted(class_map)} (pedestrian) "
            f"({rows.height} rows, classes {found or 'none'}); nothing to train or score on: fix the classes "
            "or drop the source",
        )


def build_yolo_dataset(
    sequences: pl.DataFrame,
    annotations: pl.DataFrame,
    *,
    train: Sequence[str],
    val: Sequence[str],
    out_dir: str | Path,
    clip_length: int,
    clip_stride: int,
    min_visibility: float,
    class_map: Mapping[int, int] = DEFAULT_CLASS_MAP,
    progress: bool = True,
) -> Path:
    """Write an Ultralytics detection set of frames sampled along clips.

    ``out_dir/images`` and ``out_dir/labels`` are replaced (so are Ultralytics' label
    caches inside them); other contents of ``out_dir`` are left alone. An image whose
    boxes were all filtered out keeps an empty label file: Ultralytics then trains on it
    as background. Rows of a trained class with ``conf`` 0 (uncertain pseudo-labels, boxes left
    *ignored* in CVAT) are masked out of their image (:func:`ignore_boxes`), so they train
    neither as a person nor as background.

    Args:
        sequences: Sequence table (``SEQUENCE_SCHEMA``): ``path``, ``length``, ``width``,
            ``height`` and ``frame_files`` are used.
        annotations: Annotation table (``ANNOTATION_SCHEMA``).
        train: Train sequence names (from :func:`split_sequences`).
        val: Val sequence names, disjoint from ``train``.
        out_dir: Destination folder; created if missing.
        clip_length: Consecutive frames per clip (``prepare.clip_length``).
        clip_stride: Frames between clip starts (``prepare.clip_stride``); raising it
            samples fewer frames.
        min_visibility: Smallest visible fraction of a box written (``prepare.min_visibility``).
        class_map: MOT class id -> YOLO class id; default: pedestrian -> 0 ``person``.
        progress: Show a tqdm bar over the images.

    Returns:
        The path of ``out_dir/data.yaml``. ``out_dir/split.json`` records, per side, the
        sequence names, image count and box count.

    Raises:
        ConfigError: a split name is not in ``sequences``, a sequence is on both sides,
            or a side is empty.
        DataFormatError: a frame image is missing, or a sequence has no scored box of a
            class in ``class_map`` (nothing to learn or score there; named by its gt file).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    known = set(sequences["sequence"].to_list())
    for side, names in (("train", train), ("val", val)):
        if not names:
            raise ConfigError(f"prepare: the {side} split is empty; both sides need at least one sequence")
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(
                f"prepare: {side} sequence(s) {', '.join(map(repr, unknown))} not in the sequence table "
                f"(known: {', '.join(sorted(known))})"
            )
    both = sorted(set(train) & set(val))
    if both:
        raise ConfigError(f"prepare: sequence(s) {', '.join(both)} are in both train and val")
    _refuse_sequences_without_targets(sequences, annotations, [*train, *val], class_map)
    names = _class_names(class_map)

    for sub in ("images", "labels"):
        if (out_dir / sub).exists():
            shutil.rmtree(out_dir / sub)
    by_name = {row["sequence"]: row for row in sequences.iter_rows(named=True)}
    jobs: list[tuple[str, dict, list[int]]] = []
    for side, side_names in (("train", train), ("val", val)):
        for name in sorted(side_names):
            row = by_name[name]
            jobs.append((side, row, clip_frames(int(row["length"]), clip_length, clip_stride)))

    counts = {side: {"images": 0, "boxes": 0, "masked": 0} for side in ("train", "val")}
    total = sum(len(frames) for _, _, frames in jobs)
    with tqdm(total=total, disable=not progress, unit="image", desc="prepare detector set") as bar:
        for side, row, frames in jobs:
            name, seq_dir = row["sequence"], Path(row["path"])
            width, height = int(row["width"]), int(row["height"])
            files = row["frame_files"]
            img_dir, lbl_dir = out_dir / "images" / side, out_dir / "labels" / side
            img_dir.mkdir(parents=True, exist_ok=True)
            lbl_dir.mkdir(parents=True, exist_ok=True)
            seq_rows = annotations.filter(pl.col("sequence") == name)
            by_frame = {int(k[0]): g for k, g in seq_rows.group_by("frame")} if seq_rows.height else {}
            for frame in frames:
                src = seq_dir / files[frame - 1]
                if not src.is_file():
                    raise DataFormatError(src, f"frame {frame} of sequence '{name}' is missing")
                stem = f"{name}_{frame:06d}"
                rows = by_frame.get(frame)
                masked = ignore_boxes(rows, class_map) if rows is not None else np.zeros((0, 4))
                if len(masked):
                    write_masked(src, img_dir / f"{stem}{src.suffix}", masked)
                    counts[side]["masked"] += len(masked)
                else:
                    link_or_copy(src, img_dir / f"{stem}{src.suffix}")
                labels = (
                    np.zeros((0, 5))
                    if rows is None
                    else yolo_labels(
                        rows, width=width, height=height, min_visibility=min_visibility, class_map=class_map
                    )
                )
                (lbl_dir / f"{stem}.txt").write_text(_format_labels(labels), encoding="ascii")
                counts[side]["images"] += 1
                counts[side]["boxes"] += len(labels)
                bar.update(1)

    data_yaml = out_dir / "data.yaml"
    spec = {
        "path": str(out_dir.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": names,
    }
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    split = {
        side: {"sequences": sorted(side_names), **counts[side]} for side, side_names in (("train", train), ("val", val))
    }
    split["settings"] = {
        "clip_length": clip_length,
        "clip_stride": clip_stride,
        "min_visibility": min_visibility,
        "class_map": {str(k): v for k, v in class_map.items()},
    }
    (out_dir / "split.json").write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")
    return data_yaml
