"""Great Expectations suites for the normalized tables, as code.

Each suite runs on one pandas table built here with polars (GX validates pandas):

=====================  ==========================================  ==========================
suite                  table (one row per …)                       built by
=====================  ==========================================  ==========================
``annotations_schema`` annotation columns and dtypes (no rows)     :func:`schema_table`
``sequences_schema``   sequence columns and dtypes (no rows)       :func:`schema_table`
``annotations``        box, with ``length``, image size, derived   :func:`annotation_table`
                       ``outside_fraction`` and ``gap``
``tracks``             (sequence, id)                              :func:`track_table`
``frames``             (sequence, frame image)                     :func:`frame_table`
``sequences``          sequence                                    :func:`sequence_check_table`
=====================  ==========================================  ==========================

Every table carries ``sequence``, ``file`` and, where it means something, ``line``,
``frame`` and ``id``, so each offending row can be named as ``FILE:LINE``.

Importing this module does not import Great Expectations (its import takes seconds);
the suite functions do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl

from motops.data.schema import ANNOTATION_SCHEMA, SEQUENCE_SCHEMA

if TYPE_CHECKING:
    import great_expectations as gx

#: Columns naming an offending row in the summary, per table.
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "annotations_schema": (),
    "sequences_schema": (),
    "annotations": ("sequence", "file", "line", "frame", "id"),
    "tracks": ("sequence", "file", "line", "frame", "id"),
    "frames": ("sequence", "file", "frame", "error"),
    "sequences": ("sequence", "file"),
}

#: Sequence columns the checks use (the others are only required to exist).
_SEQUENCE_TYPED = ("sequence", "path", "length", "width", "height", "frame_files")

#: Last bytes of a whole PNG: the empty IEND chunk and its CRC.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: JPEG start-of-image marker (and the first byte of the next segment).
JPEG_START = b"\xff\xd8\xff"
#: PNG file signature.
PNG_START = b"\x89PNG\r\n\x1a\n"
#: JPEG end-of-image marker.
JPEG_END = b"\xff\xd9"
#: Bytes read from the end of an image to find its end marker.
_TAIL_BYTES = 64


class ValidationParamsLike(Protocol):
    """What the suites read from ``motops.config.ValidationParams``."""

    max_outside_fraction: float
    max_track_gap_s: float
    min_track_length: int
    classes: Sequence[int]
    check_images: bool
    max_examples: int


# --------------------------------------------------------------------------- tables


def _pandas_dtype_name(dtype: pl.DataType) -> str:
    """The pandas dtype name a polars column converts to (``str`` under pandas 3)."""
    if dtype == pl.Int64:
        return "int64"
    if dtype == pl.Float64:
        return "float64"
    if dtype == pl.Utf8:
        return "str"
    return "object"


def schema_table(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` without rows: its columns and dtypes only.

    Without rows a null cannot turn an integer column into ``float64`` on the way
    to pandas, so the dtype GX sees is the polars dtype's own.
    """
    return df.head(0)


#: Decimals kept of a computed fraction: far finer than any tolerance, coarser than float rounding.
FRACTION_DECIMALS = 9


def outside_fraction(image_width: pl.Expr, image_height: pl.Expr) -> pl.Expr:
    """Share of each box's area outside ``[0, W] x [0, H]``, null for an empty box.

    The one-pixel offset of MOTChallenge's 1-based corners is far below any
    sensible tolerance, so boxes are taken as they are written. The fraction is rounded
    to ``FRACTION_DECIMALS`` decimals: with fractional coordinates (CVAT exports, public MOT
    ground truth) ``1 - inside / area`` of a box wholly inside the image comes out as
    ``-6.7e-16``, which a ``[0, max]`` bound would refuse.
    """
    left, top = pl.col("left"), pl.col("top")
    right, bottom = left + pl.col("width"), top + pl.col("height")
    inside_w = (pl.min_horizontal(right, image_width) - pl.max_horizontal(left, pl.lit(0.0))).clip(lower_bound=0.0)
    inside_h = (pl.min_horizontal(bottom, image_height) - pl.max_horizontal(top, pl.lit(0.0))).clip(lower_bound=0.0)
    area = pl.col("width") * pl.col("height")
    fraction = (1.0 - inside_w * inside_h / area).round(FRACTION_DECIMALS)
    return pl.when((pl.col("width") > 0) & (pl.col("height") > 0)).then(fraction)


def annotation_table(annotations: pl.DataFrame, sequences: pl.DataFrame) -> pl.DataFrame:
    """Annotations with the columns the ``annotations`` suite checks.

    Args:
        annotations: ``(N, 12)`` table in ``ANNOTATION_SCHEMA``.
        sequences: Table in ``SEQUENCE_SCHEMA``.

    Returns:
        ``(N, 17)`` table, rows in input order: the annotation columns plus
        ``length``, ``image_width``, ``image_height`` (null for an unknown
        sequence), ``outside_fraction`` (share of the box outside the image) and
        ``gap`` (frames since the previous annotated frame of the same
        ``(sequence, id)``; null on a track's first row) and ``gap_s`` (the same in
        seconds, at the sequence's frame rate).
    """
    size = sequences.select(
        "sequence",
        "length",
        pl.col("width").cast(pl.Float64).alias("image_width"),
        pl.col("height").cast(pl.Float64).alias("image_height"),
        "fps",
    ).unique("sequence", keep="first")
    table = (
        annotations.with_row_index("_row")
        .join(size, on="sequence", how="left")
        .sort(["sequence", "id", "frame", "_row"])
        .with_columns(gap=(pl.col("frame") - pl.col("frame").shift(1)).over(["sequence", "id"]))
        .with_columns(gap_s=pl.col("gap") / pl.col("fps"))
        .sort("_row")
        .drop("_row", "fps")
    )
    return table.with_columns(outside_fraction=outside_fraction(pl.col("image_width"), pl.col("image_height")))


def track_table(annotations: pl.DataFrame, sequences: pl.DataFrame) -> pl.DataFrame:
    """One row per scored ``(sequence, id)`` inside the sequence: its length and where it starts.

    Only rows with ``conf > 0`` count: distractors that the evaluation ignores (MOT17's
    reflections, say, with consider flag 0) may be as short as they are. Tracks on the
    sequence's first or last frame are left out: the footage, not the annotation, cut them.

    Returns:
        Columns ``sequence``, ``id``, ``rows`` (annotation rows of the id),
        ``frame``, ``file`` and ``line`` of its first annotated frame.
    """
    lengths = sequences.select("sequence", "length").unique("sequence", keep="first")
    return (
        annotations.filter(pl.col("conf") > 0)
        .sort(["sequence", "id", "frame", "line"])
        .group_by(["sequence", "id"], maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("rows"),
            pl.col("frame").first(),
            pl.col("frame").last().alias("_last"),
            pl.col("file").first(),
            pl.col("line").first(),
        )
        .join(lengths, on="sequence", how="left")
        .filter((pl.col("frame") > 1) & (pl.col("_last") < pl.col("length").fill_null(pl.col("_last") + 1)))
        .drop("_last", "length")
    )


@dataclass(frozen=True)
class ImageProbe:
    """What a cheap look at one image file found.

    Attributes:
        exists: The path is a file.
        readable: Its header parses and its end marker is present; None when it
            does not exist.
        width: Width in the header, pixels; None when unreadable.
        height: Height in the header, pixels; None when unreadable.
        error: Why it is not readable, else None.
    """

    exists: bool
    readable: bool | None
    width: int | None
    height: int | None
    error: str | None


def probe_image(path: str | Path) -> ImageProbe:
    """Check an image without decoding its pixels.

    The format is sniffed from the first bytes and only JPEG and PNG are accepted (what
    MOTChallenge, CVAT and VisDrone frames are). The header is parsed by Pillow's JPEG/PNG
    plugin classes directly rather than ``PIL.Image.open``: Ultralytics, once imported,
    replaces ``Image.open`` with a version that tries to install a HEIF plugin at run time
    when a file is not identified. The file's last bytes must hold the format's end marker
    (JPEG ``FF D9``, PNG ``IEND``), which a truncated copy lacks.

    Args:
        path: The image file.

    Returns:
        The :class:`ImageProbe`.
    """
    from PIL import JpegImagePlugin, PngImagePlugin

    path = Path(path)
    if not path.is_file():
        return ImageProbe(False, None, None, None, "file not found")
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            tail = handle.read()
        if head.startswith(JPEG_START):
            fmt, plugin = "JPEG", JpegImagePlugin.JpegImageFile
        elif head.startswith(PNG_START):
            fmt, plugin = "PNG", PngImagePlugin.PngImageFile
        else:
            return ImageProbe(True, False, None, None, f"not a JPEG or PNG image (starts with {head[:4].hex()})")
        with plugin(str(path)) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports a bad header as SyntaxError
        return ImageProbe(True, False, None, None, f"cannot read header: {exc}")
    if fmt == "JPEG" and not tail.rstrip(b"\x00\r\n ").endswith(JPEG_END):
        return ImageProbe(True, False, width, height, "truncated: no JPEG end marker FF D9")
    if fmt == "PNG" and not tail.endswith(PNG_END):
        return ImageProbe(True, False, width, height, "truncated: no PNG IEND chunk")
    return ImageProbe(True, True, width, height, None)


def frame_table(
    sequences: pl.DataFrame,
    *,
    workers: int | None = None,
    progress: bool | None = None,
    probe: Callable[[Path], ImageProbe] = probe_image,
) -> pl.DataFrame:
    """One row per frame image of every sequence, with what :func:`probe_image` found.

    Images are probed in a thread pool (the work is file I/O, which releases the GIL).

    Args:
        sequences: Table in ``SEQUENCE_SCHEMA``; ``frame_files`` are relative to ``path``.
        workers: Threads; default ``min(32, 4 * cpu_count)``.
        progress: Show a tqdm bar; None shows it on a terminal only.
        probe: The per-file check (for tests).

    Returns:
        Columns ``sequence``, ``frame`` (1-based), ``file`` (the image path),
        ``width``/``height`` (``seqinfo.ini``), ``exists``, ``readable``,
        ``image_width``, ``image_height`` and ``error``.
    """
    from tqdm.auto import tqdm

    frames = (
        sequences.select("sequence", "path", "width", "height", "frame_files")
        .explode("frame_files")
        .drop_nulls("frame_files")
        .with_columns(frame=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("sequence"))
        .with_columns(
            file=pl.concat_str([pl.col("path"), pl.col("frame_files")], separator=os.sep),
        )
        .select("sequence", "frame", "file", "width", "height")
    )
    paths = [Path(p) for p in frames["file"].to_list()]
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    # tqdm's disable=None means "only on a terminal"
    disable = None if progress is None else not progress
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(pool.map(probe, paths), total=len(paths), desc="checking images", unit="img", disable=disable)
        )
    return frames.with_columns(
        exists=pl.Series([r.exists for r in results], dtype=pl.Boolean),
        readable=pl.Series([r.readable for r in results], dtype=pl.Boolean),
        image_width=pl.Series([r.width for r in results], dtype=pl.Int64),
        image_height=pl.Series([r.height for r in results], dtype=pl.Int64),
        error=pl.Series([r.error for r in results], dtype=pl.Utf8),
    )


def sequence_check_table(sequences: pl.DataFrame, annotations: pl.DataFrame) -> pl.DataFrame:
    """One row per sequence with its annotation count and frame file count.

    Returns:
        Columns ``sequence``, ``file`` (the sequence folder), ``length``,
        ``annotations`` (rows of the sequence) and ``frame_files`` (their count).
    """
    counts = annotations.group_by("sequence").agg(pl.len().cast(pl.Int64).alias("annotations"))
    return (
        sequences.select(
            "sequence",
            pl.col("path").alias("file"),
            "length",
            pl.col("frame_files").list.len().cast(pl.Int64).alias("frame_files"),
        )
        .join(counts, on="sequence", how="left")
        .with_columns(pl.col("annotations").fill_null(0))
    )


# --------------------------------------------------------------------------- suites


def _expectations() -> Any:
    import great_expectations as gx

    return gx.expectations


def _suite(name: str, expectations: Iterable[Any]) -> gx.ExpectationSuite:
    import great_expectations as gx

    return gx.ExpectationSuite(name=name, expectations=list(expectations))


def _schema_expectations(schema: dict[str, pl.DataType], typed: Iterable[str]) -> list[Any]:
    E = _expectations()
    out: list[Any] = [E.ExpectColumnToExist(column=c, description=f"column `{c}` is present") for c in schema]
    for column in typed:
        dtype = _pandas_dtype_name(schema[column])
        out.append(
            E.ExpectColumnValuesToBeOfType(
                column=column, type_=dtype, description=f"column `{column}` is {schema[column]} ({dtype} in pandas)"
            )
        )
    return out


def annotations_schema_suite() -> gx.ExpectationSuite:
    """Every ``ANNOTATION_SCHEMA`` column is present with its dtype."""
    return _suite("annotations_schema", _schema_expectations(ANNOTATION_SCHEMA, ANNOTATION_SCHEMA))


def sequences_schema_suite() -> gx.ExpectationSuite:
    """Every ``SEQUENCE_SCHEMA`` column is present; those the checks use have their dtype."""
    return _suite("sequences_schema", _schema_expectations(SEQUENCE_SCHEMA, _SEQUENCE_TYPED))


def annotations_suite(params: ValidationParamsLike, known_sequences: Sequence[str]) -> gx.ExpectationSuite:
    """Row rules on :func:`annotation_table`.

    Args:
        params: ``max_outside_fraction`` (raising it accepts boxes further outside
            the image), ``max_track_gap_s`` (raising it accepts longer gaps inside a
            track) and ``classes`` (the known class ids).
        known_sequences: Names in the sequence table; an annotation of another
            sequence has no image size or length to be checked against.
    """
    E = _expectations()
    not_null = [
        E.ExpectColumnValuesToNotBeNull(column=c, description=f"`{c}` is not null or NaN") for c in ANNOTATION_SCHEMA
    ]
    return _suite(
        "annotations",
        [
            *not_null,
            E.ExpectColumnValuesToBeInSet(
                column="sequence",
                value_set=sorted(known_sequences),
                description="`sequence` is listed in the sequence table",
            ),
            E.ExpectColumnValuesToBeBetween(column="frame", min_value=1, description="`frame` >= 1"),
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="length",
                column_B="frame",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
                description="`frame` <= the sequence's seqLength",
            ),
            E.ExpectColumnValuesToBeBetween(
                column="width", min_value=0, strict_min=True, description="box `width` > 0"
            ),
            E.ExpectColumnValuesToBeBetween(
                column="height", min_value=0, strict_min=True, description="box `height` > 0"
            ),
            E.ExpectColumnValuesToBeBetween(
                column="visibility", min_value=0, max_value=1, description="`visibility` in [0, 1]"
            ),
            E.ExpectColumnValuesToBeBetween(column="conf", min_value=0, max_value=1, description="`conf` in [0, 1]"),
            E.ExpectCompoundColumnsToBeUnique(
                column_list=["sequence", "frame", "id"], description="one box per (sequence, frame, id)"
            ),
            E.ExpectColumnValuesToBeInSet(
                column="class",
                value_set=sorted(int(c) for c in params.classes),
                description=f"`class` is a known class id {sorted(int(c) for c in params.classes)}",
            ),
            E.ExpectColumnValuesToBeBetween(
                column="outside_fraction",
                min_value=0,
                max_value=float(params.max_outside_fraction),
                description=f"at most {params.max_outside_fraction:g} of the box area lies outside the image",
            ),
            E.ExpectColumnValuesToBeBetween(
                column="gap_s",
                max_value=float(params.max_track_gap_s),
                description=f"at most {params.max_track_gap_s:g} s since the id's previous annotated frame",
            ),
        ],
    )


def tracks_suite(params: ValidationParamsLike) -> gx.ExpectationSuite:
    """Rules on :func:`track_table`.

    Args:
        params: ``min_track_length``: raising it refuses more short tracks.
    """
    E = _expectations()
    return _suite(
        "tracks",
        [
            E.ExpectColumnValuesToBeBetween(
                column="rows",
                min_value=int(params.min_track_length),
                description=f"every id has at least {params.min_track_length} rows",
            )
        ],
    )


def frames_suite() -> gx.ExpectationSuite:
    """Rules on :func:`frame_table`: each image exists, is whole and has the seqinfo size."""
    E = _expectations()
    return _suite(
        "frames",
        [
            E.ExpectColumnValuesToBeInSet(column="exists", value_set=[True], description="the image file exists"),
            E.ExpectColumnValuesToBeInSet(
                column="readable",
                value_set=[True],
                description="the image header reads and the file ends with its end marker (not truncated)",
            ),
            E.ExpectColumnPairValuesToBeEqual(
                column_A="image_width",
                column_B="width",
                ignore_row_if="either_value_is_missing",
                description="image width equals seqinfo imWidth",
            ),
            E.ExpectColumnPairValuesToBeEqual(
                column_A="image_height",
                column_B="height",
                ignore_row_if="either_value_is_missing",
                description="image height equals seqinfo imHeight",
            ),
        ],
    )


def sequences_suite() -> gx.ExpectationSuite:
    """Rules on :func:`sequence_check_table`."""
    E = _expectations()
    return _suite(
        "sequences",
        [
            E.ExpectTableRowCountToBeBetween(min_value=1, description="at least one sequence"),
            E.ExpectColumnValuesToBeUnique(column="sequence", description="sequence names are unique"),
            E.ExpectColumnValuesToBeBetween(
                column="annotations", min_value=1, description="every sequence has at least one annotation row"
            ),
            E.ExpectColumnPairValuesToBeEqual(
                column_A="frame_files",
                column_B="length",
                description="one frame file per frame (len(frame_files) == seqLength)",
            ),
        ],
    )
