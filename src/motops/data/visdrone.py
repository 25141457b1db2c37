"""VisDrone-MOT, converted to MOTChallenge sequence folders.

VisDrone2019-MOT ships as::

    ROOT/
    ├── sequences/SEQ/0000001.jpg   one image per frame, 1-based, 7 digits
    └── annotations/SEQ.txt         frame,id,left,top,width,height,score,category,truncation,occlusion

How the columns map onto the normalized table:

* ``conf`` = ``score``: in the ground truth VisDrone's *considered* flag (1 = the
  box is scored, 0 = ignored), the same meaning as MOT's ``conf`` column.
* ``class`` = ``category``, kept as VisDrone numbers it: see :data:`VISDRONE_CLASSES`
  (0 is an ignored region, 1 pedestrian, 2 people, …, 11 others).
* ``visibility`` from ``occlusion`` (:data:`OCCLUSION_VISIBILITY`): 0 no occlusion
  → 1.0, 1 partial (1–50 % hidden) → 0.5, 2 heavy (50–100 % hidden) → 0.25; the
  values are the visible fraction at the edge of each band, a conservative guess.
* ``truncation`` is dropped.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polars as pl

from motops.data.mot import (
    SeqInfo,
    read_numeric_rows,
    require_integral,
    sequence_table,
    write_mot_sequence,
)
from motops.data.schema import ANNOTATION_SCHEMA, conform
from motops.errors import DataFormatError

#: Columns of a VisDrone-MOT annotation file, in file order.
VISDRONE_COLUMNS: tuple[str, ...] = (
    "frame",
    "id",
    "left",
    "top",
    "width",
    "height",
    "score",
    "category",
    "truncation",
    "occlusion",
)

#: VisDrone object categories (``class`` column after conversion).
VISDRONE_CLASSES: dict[int, str] = {
    0: "ignored_region",
    1: "pedestrian",
    2: "people",
    3: "bicycle",
    4: "car",
    5: "van",
    6: "truck",
    7: "tricycle",
    8: "awning_tricycle",
    9: "bus",
    10: "motor",
    11: "others",
}

#: VisDrone occlusion level → visible fraction written to ``visibility``.
OCCLUSION_VISIBILITY: dict[int, float] = {0: 1.0, 1: 0.5, 2: 0.25}

#: Image file extensions taken from ``sequences/SEQ/``.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})

_EXPECTED = "VisDrone-MOT layout: sequences/SEQ/0000001.jpg and annotations/SEQ.txt"


def read_visdrone_txt(path: str | Path, *, sequence: str) -> pl.DataFrame:
    """Read one VisDrone-MOT annotation file into the normalized table.

    Args:
        path: ``annotations/SEQ.txt``.
        sequence: Value of the ``sequence`` column.

    Returns:
        ``(N, 12)`` frame in ``ANNOTATION_SCHEMA`` (mapping in the module docstring).

    Raises:
        DataFormatError: fewer than 10 columns, a non-numeric/NaN/inf field, a
            fractional frame/id/category, an occlusion outside 0..2, or no rows.
    """
    path = Path(path)
    table = read_numeric_rows(path, names=VISDRONE_COLUMNS, min_columns=len(VISDRONE_COLUMNS))
    require_integral(path, table, ("frame", "id", "category", "occlusion"))
    bad = table.filter(~pl.col("occlusion").is_in([float(k) for k in OCCLUSION_VISIBILITY]))
    if bad.height:
        row = bad.row(0, named=True)
        raise DataFormatError(
            path, f"column 10 (occlusion) is {row['occlusion']:g}; expected 0, 1 or 2", line=row["line"]
        )
    out = table.with_columns(
        pl.lit(sequence, dtype=pl.Utf8).alias("sequence"),
        pl.col("score").alias("conf"),
        pl.col("category").alias("class"),
        pl.col("occlusion")
        .cast(pl.Int64)
        .replace_strict(OCCLUSION_VISIBILITY, return_dtype=pl.Float64)
        .alias("visibility"),
        pl.lit(str(path), dtype=pl.Utf8).alias("file"),
    )
    return conform(out, ANNOTATION_SCHEMA)


def _frame_images(seq_dir: Path) -> list[Path]:
    """The sequence's images, frame 1 first; refuses gaps in the numbering."""
    images = sorted(
        (p for p in seq_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)],
    )
    if not images:
        raise DataFormatError(seq_dir, f"no images in the sequence folder; expected {_EXPECTED}")
    extensions = {p.suffix.lower() for p in images}
    if len(extensions) > 1:
        raise DataFormatError(seq_dir, f"images mix file types {sorted(extensions)}; expected one")
    for frame, image in enumerate(images, start=1):
        if image.stem.isdigit() and int(image.stem) != frame:
            raise DataFormatError(
                image, f"expected frame {frame} here (images numbered 1..{len(images)} without gaps)"
            )
    return images


def read_visdrone(
    root: str | Path, *, out_dir: str | Path, fps: float = 30.0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Convert every VisDrone-MOT sequence under ``root`` into MOTChallenge layout.

    Each sequence becomes ``out_dir/SEQ/`` with ``img1/000001.jpg`` … (hard links
    to the originals, copies where linking fails), ``gt/gt.txt`` and
    ``seqinfo.ini`` (size from the first image, ``fps`` as given).

    Args:
        root: Folder holding ``sequences/`` and ``annotations/``.
        out_dir: Folder that receives the sequence folders (created).
        fps: Frame rate in frames per second; VisDrone does not record it.

    Returns:
        ``(sequences, annotations)`` in ``SEQUENCE_SCHEMA`` / ``ANNOTATION_SCHEMA``;
        ``file``/``line`` name the original VisDrone annotation lines.

    Raises:
        DataFormatError: the layout is not VisDrone's, a sequence has no images or
            no annotation file, or an annotation line is malformed.
    """
    from PIL import Image, UnidentifiedImageError  # only needed to size the frames

    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    root, out_dir = Path(root), Path(out_dir)
    seq_root, ann_root = root / "sequences", root / "annotations"
    for folder in (seq_root, ann_root):
        if not folder.is_dir():
            raise DataFormatError(folder, f"folder not found; expected {_EXPECTED}")
    seq_dirs = sorted(p for p in seq_root.iterdir() if p.is_dir())
    if not seq_dirs:
        raise DataFormatError(seq_root, f"no sequence folders; expected {_EXPECTED}")

    sequences: list[pl.DataFrame] = []
    annotations: list[pl.DataFrame] = []
    for seq_dir in seq_dirs:
        name = seq_dir.name
        ann_path = ann_root / f"{name}.txt"
        if not ann_path.is_file():
            raise DataFormatError(ann_path, f"annotation file for sequence {name} not found; expected {_EXPECTED}")
        images = _frame_images(seq_dir)
        ann = read_visdrone_txt(ann_path, sequence=name)
        late = ann.filter(pl.col("frame") > len(images))
        if late.height:
            row = late.row(0, named=True)
            raise DataFormatError(
                ann_path, f"frame {row['frame']} has no image; {seq_dir} holds {len(images)}", line=row["line"]
            )
        try:
            with Image.open(images[0]) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError) as exc:
            raise DataFormatError(images[0], f"image cannot be decoded: {exc}") from exc
        im_ext = ".jpg" if images[0].suffix.lower() == ".jpeg" else images[0].suffix.lower()
        info = SeqInfo(name=name, im_dir="img1", fps=float(fps), length=len(images), width=width,
                       height=height, im_ext=im_ext)
        target = out_dir / name
        if target.exists():
            shutil.rmtree(target)
        write_mot_sequence(target, info, ann, images=images)
        sequences.append(sequence_table(info, source="visdrone", path=target))
        annotations.append(ann)
    return pl.concat(sequences), pl.concat(annotations)
