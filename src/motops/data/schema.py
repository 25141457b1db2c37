"""The one normalized annotation table and the sequence table, as polars schemas.

``annotations.parquet`` has one row per box:

=============  =========  ==========================================================
column         dtype      meaning
=============  =========  ==========================================================
sequence       Utf8       sequence name, unique across all sources
frame          Int64      1-based frame index
id             Int64      track identity, unique within a sequence
left, top      Float64    top-left corner of the box, pixels
width, height  Float64    box size, pixels
conf           Float64    ground truth: the *consider* flag (1 = scored, 0 = ignore);
                          tracker results: the detection confidence
class          Int64      class id (MOT17: 1 pedestrian, 2 person on vehicle, …)
visibility     Float64    visible fraction of the object in [0, 1]
file           Utf8       source annotation file the row came from
line           Int64      1-based line number of the row in ``file``
=============  =========  ==========================================================

``sequences.parquet`` has one row per sequence:

============  ==============  ===============================================
column        dtype           meaning
============  ==============  ===============================================
sequence      Utf8            sequence name (matches ``annotations.sequence``)
source        Utf8            where it came from: ``synthetic``, ``mot``, ``cvat``, ``visdrone``; ``pseudo``: champion
path          Utf8            the sequence folder (MOTChallenge layout)
length        Int64           number of frames (``seqLength``)
width         Int64           image width, pixels (``imWidth``)
height        Int64           image height, pixels (``imHeight``)
fps           Float64         frame rate (``frameRate``)
im_dir        Utf8            image folder inside ``path`` (``imDir``)
im_ext        Utf8            image file extension (``imExt``), with the dot
frame_files   List(Utf8)      image files relative to ``path``, frame 1 first
============  ==============  ===============================================
"""

from __future__ import annotations

import polars as pl

ANNOTATION_SCHEMA: dict[str, pl.DataType] = {
    "sequence": pl.Utf8(),
    "frame": pl.Int64(),
    "id": pl.Int64(),
    "left": pl.Float64(),
    "top": pl.Float64(),
    "width": pl.Float64(),
    "height": pl.Float64(),
    "conf": pl.Float64(),
    "class": pl.Int64(),
    "visibility": pl.Float64(),
    "file": pl.Utf8(),
    "line": pl.Int64(),
}

SEQUENCE_SCHEMA: dict[str, pl.DataType] = {
    "sequence": pl.Utf8(),
    "source": pl.Utf8(),
    "path": pl.Utf8(),
    "length": pl.Int64(),
    "width": pl.Int64(),
    "height": pl.Int64(),
    "fps": pl.Float64(),
    "im_dir": pl.Utf8(),
    "im_ext": pl.Utf8(),
    "frame_files": pl.List(pl.Utf8()),
}

#: MOT17 class ids (``class`` column of ``gt.txt``).
MOT_CLASSES: dict[int, str] = {
    1: "pedestrian",
    2: "person_on_vehicle",
    3: "car",
    4: "bicycle",
    5: "motorbike",
    6: "non_motorized_vehicle",
    7: "static_person",
    8: "distractor",
    9: "occluder",
    10: "occluder_on_ground",
    11: "occluder_full",
    12: "reflection",
    13: "crowd",
}

PEDESTRIAN = 1


def empty_annotations() -> pl.DataFrame:
    """An annotation table with no rows and the normalized schema."""
    return pl.DataFrame(schema=ANNOTATION_SCHEMA)


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast ``df`` to ``schema`` (column order and dtypes).

    Raises:
        KeyError: a column of the schema is missing from ``df``.
    """
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise KeyError(f"missing columns {missing}; expected {list(schema)}")
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])
