"""The ReID crop set: person crops sampled in short clips along annotated tracks.

For each track (a ``(sequence, id)`` pair) the builder keeps the boxes that are scored
(``conf > 0``), visible enough and tall enough, cuts their runs of consecutive frames into
clips of ``clip_min..clip_max`` frames (with a random gap of up to ``clip_max`` frames
between clips, so clips are less alike), crops every box of a clip from its frame image,
resizes it and writes it as a JPEG. Identities are split into ``train`` and held-out ones;
each held-out identity's crops go to ``query`` or ``gallery`` so that its query and gallery
crops never share a frame (and come from different clips whenever it has two or more).

Output layout::

    out_dir/
    ├── index.parquet          one row per crop (see INDEX_SCHEMA)
    ├── train/PPPPPP_fFFFFFF.jpg
    ├── query/PPPPPP_fFFFFFF.jpg
    └── gallery/PPPPPP_fFFFFFF.jpg    (P: pid, F: frame)
"""

from __future__ import annotations

import math
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import polars as pl

from motops.errors import DataFormatError

#: Columns of ``index.parquet``. ``path`` is relative to the crop folder; ``pid`` is a
#: global identity number per ``(sequence, id)``; ``clip`` numbers the clips of one pid.
INDEX_SCHEMA: dict[str, pl.DataType] = {
    "path": pl.Utf8(),
    "pid": pl.Int64(),
    "sequence": pl.Utf8(),
    "id": pl.Int64(),
    "frame": pl.Int64(),
    "clip": pl.Int64(),
    "split": pl.Utf8(),
}

#: Values of the ``split`` column.
SPLITS: tuple[str, str, str] = ("train", "query", "gallery")

#: Fewest identities on each side of the train/held-out split: the triplet loss needs two
#: training identities, and a retrieval score needs a distractor next to the right answer.
MIN_TRAIN_IDS = 2
MIN_HELDOUT_IDS = 2

#: JPEG quality of the written crops (high: the crops are small and feed a network).
JPEG_QUALITY = 95


@dataclass(frozen=True)
class _Clip:
    pid: int
    sequence: str
    id: int
    index: int
    frames: np.ndarray  # (L,) int64 frames
    boxes: np.ndarray  # (L, 4) float64 x0, y0, x1, y1 (0-based, clipped to the image)


def _frames_to_clips(
    frames: np.ndarray, clip_min: int, clip_max: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """``[start, stop)`` positions into the sorted ``frames`` of clips of consecutive frames."""
    clips = []
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    for run in np.split(np.arange(len(frames)), breaks):
        pos, end = int(run[0]), int(run[-1]) + 1
        while end - pos >= clip_min:
            length = min(int(rng.integers(clip_min, clip_max + 1)), end - pos)
            clips.append((pos, pos + length))
            pos += length + int(rng.integers(0, clip_max + 1))
    return clips


def build_reid_crops(
    sequences: pl.DataFrame,
    annotations: pl.DataFrame,
    out_dir: str | Path,
    *,
    height: int,
    width: int,
    clip_min: int,
    clip_max: int,
    heldout_fraction: float,
    min_visibility: float,
    seed: int,
    min_box_height: float = 8.0,
    progress: bool = True,
) -> pl.DataFrame:
    """Sample clips along the annotated tracks, write their crops and ``out_dir/index.parquet``.

    Old ``train/``, ``query/``, ``gallery/`` folders and ``index.parquet`` in ``out_dir`` are
    replaced; anything else there is left alone.

    Args:
        sequences: Sequence table (:data:`motops.data.schema.SEQUENCE_SCHEMA`): ``sequence``,
            ``path``, ``width``, ``height``, ``frame_files`` are used.
        annotations: Annotation table (:data:`motops.data.schema.ANNOTATION_SCHEMA`); boxes in
            1-based pixel coordinates.
        out_dir: Destination folder (created).
        height: Crop height, pixels.
        width: Crop width, pixels.
        clip_min: Fewest consecutive frames of a clip; shorter runs are skipped. Raising it
            keeps only steadier tracks.
        clip_max: Most frames of a clip, and the largest gap between two clips of a track.
        heldout_fraction: Share of identities held out for query/gallery evaluation, in (0, 1).
        min_visibility: Boxes less visible than this (``visibility`` column) are skipped.
        seed: Seed of the clip sampling and the identity split (same seed, same crops).
        min_box_height: Boxes shorter than this after clipping to the image, pixels, are
            skipped: they hold too few pixels to tell people apart.
        progress: Show a tqdm bar over the frames read.

    Returns:
        The index: one row per crop with :data:`INDEX_SCHEMA` columns, sorted by split, pid, frame.

    Raises:
        ValueError: a size, clip length or fraction is out of range.
        DataFormatError: a column is missing, an annotated sequence is not in ``sequences``,
            a frame image is missing or unreadable, no track yields a clip, or there are
            fewer identities than :data:`MIN_TRAIN_IDS` + :data:`MIN_HELDOUT_IDS`.
    """
    from tqdm import tqdm

    if height < 1 or width < 1:
        raise ValueError(f"crop size must be positive, got height={height}, width={width}")
    if not 1 <= clip_min <= clip_max:
        raise ValueError(f"need 1 <= clip_min <= clip_max, got clip_min={clip_min}, clip_max={clip_max}")
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    out_dir = Path(out_dir)
    _require_columns(sequences, ("sequence", "path", "width", "height", "frame_files"), "sequence table")
    _require_columns(
        annotations,
        ("sequence", "frame", "id", "left", "top", "width", "height", "conf", "visibility"),
        "annotation table",
    )
    seq_info = {row["sequence"]: row for row in sequences.iter_rows(named=True)}
    unknown = sorted(set(annotations["sequence"].unique().to_list()) - set(seq_info))
    if unknown:
        raise DataFormatError(out_dir, f"annotations name sequences missing from the sequence table: {unknown[:5]}")

    boxes = _usable_boxes(sequences, annotations, min_visibility, min_box_height)
    rng = np.random.default_rng(seed)
    clips_by_pid: list[list[_Clip]] = []
    for (sequence, track_id), group in boxes.group_by(["sequence", "id"], maintain_order=True):
        frames = group["frame"].to_numpy()
        xyxy = group.select("x0", "y0", "x1", "y1").to_numpy()
        spans = _frames_to_clips(frames, clip_min, clip_max, rng)
        if not spans:
            continue
        pid = len(clips_by_pid)
        clips = [
            _Clip(pid, str(sequence), int(track_id), i, frames[a:b], xyxy[a:b]) for i, (a, b) in enumerate(spans)
        ]
        clips_by_pid.append(clips)
    n_ids = len(clips_by_pid)
    what = (
        f"tracks with >= {clip_min} consecutive frames of boxes with visibility >= {min_visibility}, "
        f"conf > 0 and height >= {min_box_height} px"
    )
    if n_ids == 0:
        raise DataFormatError(out_dir, f"no ReID crops: the annotations hold no {what}")
    if n_ids < MIN_TRAIN_IDS + MIN_HELDOUT_IDS:
        raise DataFormatError(
            out_dir,
            f"only {n_ids} identities have {what}; the ReID set needs at least "
            f"{MIN_TRAIN_IDS + MIN_HELDOUT_IDS} ({MIN_TRAIN_IDS} to train, {MIN_HELDOUT_IDS} held out)",
        )

    # held-out ids need two distinct frames to fill both query and gallery
    eligible = [pid for pid, clips in enumerate(clips_by_pid) if sum(len(c.frames) for c in clips) >= 2]
    n_heldout = min(max(MIN_HELDOUT_IDS, round(heldout_fraction * n_ids)), n_ids - MIN_TRAIN_IDS)
    if len(eligible) < MIN_HELDOUT_IDS:
        raise DataFormatError(
            out_dir, f"only {len(eligible)} identities have two or more frames; {MIN_HELDOUT_IDS} are needed"
        )
    heldout = set(int(p) for p in rng.permutation(eligible)[: min(n_heldout, len(eligible))])

    # (sequence, frame) -> [(clip, position in clip, split)]
    wanted: dict[str, dict[int, list[tuple[_Clip, int, str]]]] = defaultdict(lambda: defaultdict(list))
    for pid, clips in enumerate(clips_by_pid):
        if pid not in heldout:
            assign = [["train"] * len(c.frames) for c in clips]
        elif len(clips) >= 2:
            q = int(rng.integers(len(clips)))
            assign = [["query" if i == q else "gallery"] * len(c.frames) for i, c in enumerate(clips)]
        else:
            n = len(clips[0].frames)
            assign = [["query"] * (n // 2) + ["gallery"] * (n - n // 2)]
        for clip, splits in zip(clips, assign, strict=True):
            for j, split in enumerate(splits):
                wanted[clip.sequence][int(clip.frames[j])].append((clip, j, split))

    for split in SPLITS:
        shutil.rmtree(out_dir / split, ignore_errors=True)
        (out_dir / split).mkdir(parents=True)
    (out_dir / "index.parquet").unlink(missing_ok=True)
    rows: dict[str, list] = {name: [] for name in INDEX_SCHEMA}
    jpeg = [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY]
    total = sum(len(frames) for frames in wanted.values())
    with tqdm(total=total, disable=not progress, unit="frame", desc="reid crops") as bar:
        for sequence in sorted(wanted):
            info = seq_info[sequence]
            files = info["frame_files"]
            for frame in sorted(wanted[sequence]):
                if not 1 <= frame <= len(files):
                    raise DataFormatError(
                        Path(info["path"]), f"annotated frame {frame} is beyond the {len(files)} frame images"
                    )
                image_path = Path(info["path"]) / files[frame - 1]
                image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
                if image is None:
                    raise DataFormatError(image_path, "frame image is missing or not readable by OpenCV")
                for clip, j, split in wanted[sequence][frame]:
                    x0, y0, x1, y1 = clip.boxes[j]
                    crop = image[int(math.floor(y0)) : int(math.ceil(y1)), int(math.floor(x0)) : int(math.ceil(x1))]
                    crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
                    rel = f"{split}/{clip.pid:06d}_f{frame:06d}.jpg"
                    if not cv2.imwrite(str(out_dir / rel), crop, jpeg):
                        raise OSError(f"{out_dir / rel}: could not write the crop")
                    for name, value in zip(
                        INDEX_SCHEMA, (rel, clip.pid, sequence, clip.id, frame, clip.index, split), strict=True
                    ):
                        rows[name].append(value)
                bar.update(1)
    index = pl.DataFrame(rows, schema=INDEX_SCHEMA)
    split_order = pl.col("split").replace_strict({s: i for i, s in enumerate(SPLITS)}, return_dtype=pl.Int64)
    index = index.sort(split_order, "pid", "frame")
    index.write_parquet(out_dir / "index.parquet")
    return index


def read_reid_index(crops_dir: str | Path) -> pl.DataFrame:
    """Read ``crops_dir/index.parquet`` written by :func:`build_reid_crops`.

    Returns:
        The index with ``path`` made absolute (under ``crops_dir``).

    Raises:
        DataFormatError: the index is missing, lacks a column, or has no rows.
    """
    crops_dir = Path(crops_dir)
    path = crops_dir / "index.parquet"
    if not path.is_file():
        raise DataFormatError(path, "ReID crop index not found; run the prepare stage (build_reid_crops) first")
    index = pl.read_parquet(path)
    missing = [c for c in INDEX_SCHEMA if c not in index.columns]
    if missing:
        raise DataFormatError(path, f"missing columns {missing}; expected {list(INDEX_SCHEMA)}")
    if index.height == 0:
        raise DataFormatError(path, "the ReID crop index has no rows")
    root = str(crops_dir.resolve())
    return index.with_columns((pl.lit(root + "/") + pl.col("path")).alias("path"))


def _require_columns(df: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataFormatError(Path("."), f"{what} lacks columns {missing}")


def _usable_boxes(
    sequences: pl.DataFrame, annotations: pl.DataFrame, min_visibility: float, min_box_height: float
) -> pl.DataFrame:
    """Scored, visible boxes clipped to the image, as 0-based ``x0, y0, x1, y1``; one per (sequence, id, frame)."""
    size = sequences.select("sequence", pl.col("width").alias("im_w"), pl.col("height").alias("im_h"))
    boxes = (
        annotations.filter((pl.col("conf") > 0) & (pl.col("visibility") >= min_visibility))
        .join(size, on="sequence", how="inner")
        .with_columns(
            x0=(pl.col("left") - 1).clip(0, pl.col("im_w")),
            y0=(pl.col("top") - 1).clip(0, pl.col("im_h")),
            x1=(pl.col("left") - 1 + pl.col("width")).clip(0, pl.col("im_w")),
            y1=(pl.col("top") - 1 + pl.col("height")).clip(0, pl.col("im_h")),
        )
        .filter(((pl.col("y1") - pl.col("y0")) >= max(min_box_height, 1.0)) & ((pl.col("x1") - pl.col("x0")) >= 1))
        .unique(["sequence", "id", "frame"], keep="first", maintain_order=True)
        .sort("sequence", "id", "frame")
    )
    return boxes.select("sequence", "id", "frame", "x0", "y0", "x1", "y1")

# --------------------------------------------------------------------------- reading crops, scoring retrieval
# Shared by training (evaluate_reid) and export (the INT8 ReID's cost), which must not import each other.


def load_crops(paths: Sequence[str], height: int | None = None, width: int | None = None) -> np.ndarray:
    """Read crop images into one array.

    Args:
        paths: Image files.
        height: Resize to this height (``None``: keep; then all images must share one size).
        width: Resize to this width.

    Returns:
        ``(N, 3, H, W)`` uint8, BGR.

    Raises:
        DataFormatError: an image is missing or unreadable, or sizes differ and no size is given.
    """
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataFormatError(path, "ReID crop is missing or not readable by OpenCV")
        if height is not None and width is not None and image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        if images and image.shape != images[0].shape:
            raise DataFormatError(path, f"crop is {image.shape[:2]}, the others {images[0].shape[:2]}; give a size")
        images.append(image)
    if not images:
        return np.empty((0, 3, height or 0, width or 0), dtype=np.uint8)
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))


def frame_keys(query_df: pl.DataFrame, gallery_df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Shared int64 codes of (sequence, frame) for the query and gallery rows (``retrieval_metrics``' keys)."""
    both = pl.concat([query_df.select("sequence", "frame"), gallery_df.select("sequence", "frame")])
    codes = both.select(pl.struct("sequence", "frame").rank("dense").cast(pl.Int64)).to_series().to_numpy()
    return codes[: query_df.height], codes[query_df.height :]


def retrieval_metrics(
    query: Any,
    gallery: Any,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    query_keys: np.ndarray,
    gallery_keys: np.ndarray,
) -> dict[str, float]:
    """Rank-1 and mAP of cosine-distance retrieval.

    Gallery items with the same key as the query (same sequence and frame) are left out of
    its ranking: a tracker compares detections across frames, never two boxes of one frame.
    Queries without a true match left in the gallery are skipped.

    Args:
        query: ``(Q, D)`` L2-normalized embeddings (a numpy array, or anything ``np.asarray`` takes,
            such as a CPU torch tensor).
        gallery: ``(G, D)`` L2-normalized embeddings.
        query_pids: ``(Q,)`` identities.
        gallery_pids: ``(G,)`` identities.
        query_keys: ``(Q,)`` int64 sequence-and-frame keys.
        gallery_keys: ``(G,)`` int64 keys.

    Returns:
        ``{"rank1", "map"}`` as fractions and ``"queries"``, the number of queries scored.

    Raises:
        ValueError: no query has a true match in the gallery.
    """
    dist = 1.0 - np.asarray(query, dtype=np.float64) @ np.asarray(gallery, dtype=np.float64).T
    rank1, aps = [], []
    for i in range(len(query)):
        keep = gallery_keys != query_keys[i]
        order = np.argsort(dist[i, keep], kind="stable")
        hits = gallery_pids[keep][order] == query_pids[i]
        if not hits.any():
            continue
        rank1.append(float(hits[0]))
        positions = np.flatnonzero(hits) + 1  # 1-based ranks of the true matches
        aps.append(float(np.mean(np.arange(1, len(positions) + 1) / positions)))
    if not aps:
        raise ValueError("no query has a true match in the gallery; cannot score retrieval")
    return {"rank1": float(np.mean(rank1)), "map": float(np.mean(aps)), "queries": len(aps)}


def _keys(query_df: pl.DataFrame, gallery_df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Shared int64 codes of (sequence, frame) for the query and gallery rows."""
    both = pl.concat([query_df.select("sequence", "frame"), gallery_df.select("sequence", "frame")])
    codes = both.select(pl.struct("sequence", "frame").rank("dense").cast(pl.Int64)).to_series().to_numpy()
    return codes[: query_df.height], codes[query_df.height :]
