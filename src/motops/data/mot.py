"""MOTChallenge folders (MOT17, MOT20, DanceTrack layout): read and write.

A sequence folder looks like::

    SEQ/
    ├── seqinfo.ini        [Sequence] name, imDir, frameRate, seqLength, imWidth, imHeight, imExt
    ├── img1/000001.jpg    one image per frame, 1-based, zero padded to 6 digits
    └── gt/gt.txt          frame,id,left,top,width,height,conf,class,visibility

A dataset root holds sequence folders directly or under ``train/``, ``val/`` and
``test/``. Every reader returns tables in the normalized schemas of
:mod:`motops.data.schema`; every malformed input raises
:class:`~motops.errors.DataFormatError` naming the file and the line or key.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from motops.data.schema import ANNOTATION_SCHEMA, SEQUENCE_SCHEMA, conform, empty_annotations
from motops.data.seqinfo import SeqInfo, read_seqinfo, write_seqinfo
from motops.errors import DataFormatError

#: Column names of a MOTChallenge ``gt.txt`` / results file, in file order.
MOT_COLUMNS: tuple[str, ...] = (
    "frame",
    "id",
    "left",
    "top",
    "width",
    "height",
    "conf",
    "class",
    "visibility",
)

#: Sub-folders of a dataset root that may hold sequences.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Decimals kept for ``visibility`` when writing ``gt.txt``.
VISIBILITY_DECIMALS = 4


# --------------------------------------------------------------------------- numeric text tables


def read_numeric_rows(
    path: str | Path,
    *,
    names: Sequence[str],
    min_columns: int,
    allow_empty: bool = False,
) -> pl.DataFrame:
    """Read a header-less comma separated file of numbers, naming bad lines.

    The fast path is polars' CSV reader; on any failure (ragged rows, text, empty
    fields, NaN or inf) the file is scanned line by line so the error names the
    first offending line. Blank lines are skipped; line numbers stay those of the file.

    Args:
        path: The text file.
        names: Column names in file order; columns beyond ``len(names)`` are ignored.
        min_columns: Columns every non-blank line must have.
        allow_empty: Whether a file without rows is acceptable.

    Returns:
        ``(N, len(names) + 1)`` frame: one Float64 column per name (null where a
        line has fewer than ``len(names)`` columns) and ``line`` (Int64, 1-based).

    Raises:
        DataFormatError: missing file, too few columns, a non-numeric, NaN or
            infinite field (naming line and column), or no rows.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFormatError(path, f"cannot read annotation file: {exc}") from exc
    table = _fast_numeric_rows(data, names=names, min_columns=min_columns)
    if table is None:
        table = _scan_numeric_rows(path, data, names=names, min_columns=min_columns)
    if table.height == 0 and not allow_empty:
        raise DataFormatError(path, "no annotation rows; expected comma separated lines " + ",".join(names))
    return table


def _fast_numeric_rows(data: bytes, *, names: Sequence[str], min_columns: int) -> pl.DataFrame | None:
    """Polars fast path; None whenever the careful scan must decide."""
    if not data.strip():
        return None
    try:
        raw = pl.read_csv(data, has_header=False, infer_schema=False, quote_char=None)
    except Exception:  # noqa: BLE001 - any parser complaint sends us to the line scan
        return None
    if raw.width < min_columns:
        return None
    kept = min(raw.width, len(names))
    raw = raw.select(raw.columns[:kept]).with_row_index("line", offset=1)
    fields = [c for c in raw.columns if c != "line"]
    # polars reads a blank line as a row of nulls; a partly null row is an empty field
    raw = raw.filter(~pl.all_horizontal([pl.col(c).is_null() for c in fields]))
    if raw.select(pl.any_horizontal([pl.col(c).is_null().any() for c in fields])).item():
        return None
    try:
        table = raw.select(
            [pl.col(c).str.strip_chars().cast(pl.Float64, strict=True).alias(names[i]) for i, c in enumerate(fields)]
            + [pl.col("line").cast(pl.Int64)]
        )
    except Exception:  # noqa: BLE001 - a non-numeric field: let the scan name it
        return None
    finite = table.select(pl.all_horizontal([pl.col(n).is_finite().all() for n in names[:kept]])).item()
    if not finite:
        return None
    missing = [pl.lit(None, dtype=pl.Float64).alias(n) for n in names[kept:]]
    return table.with_columns(missing).select([*names, "line"])


def _scan_numeric_rows(path: Path, data: bytes, *, names: Sequence[str], min_columns: int) -> pl.DataFrame:
    """Line by line parse; raises on the first bad line."""
    columns: dict[str, list[float | None]] = {n: [] for n in names}
    lines: list[int] = []
    for number, raw_line in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw_line.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataFormatError(path, f"not UTF-8 text: {exc}", line=number) from exc
        if not text:
            continue
        fields = [f.strip() for f in text.split(",")]
        if len(fields) < min_columns:
            raise DataFormatError(
                path,
                f"found {len(fields)} columns, expected at least {min_columns} "
                f"({','.join(names[:min_columns])})",
                line=number,
            )
        for index, name in enumerate(names):
            if index >= len(fields):
                columns[name].append(None)
                continue
            field = fields[index]
            try:
                value = float(field)
            except ValueError:
                raise DataFormatError(
                    path, f"column {index + 1} ({name}) is not a number: {field!r}", line=number
                ) from None
            if not math.isfinite(value):
                raise DataFormatError(
                    path, f"column {index + 1} ({name}) is {field!r}; expected a finite number", line=number
                )
            columns[name].append(value)
        lines.append(number)
    frame = {n: pl.Series(n, v, dtype=pl.Float64) for n, v in columns.items()}
    frame["line"] = pl.Series("line", lines, dtype=pl.Int64)
    return pl.DataFrame(frame)


def require_integral(path: Path, table: pl.DataFrame, columns: Iterable[str]) -> None:
    """Refuse a fractional value in columns that hold integers (frame, id, class).

    Args:
        path: File named in the error.
        table: Output of :func:`read_numeric_rows`.
        columns: Columns that must be integral where not null.

    Raises:
        DataFormatError: naming the first line with a fractional value.
    """
    for name in columns:
        bad = table.filter(pl.col(name).is_not_null() & (pl.col(name) != pl.col(name).floor()))
        if bad.height:
            row = bad.row(0, named=True)
            raise DataFormatError(path, f"column '{name}' must be an integer, got {row[name]}", line=row["line"])


# --------------------------------------------------------------------------- gt.txt


def read_mot_txt(
    path: str | Path,
    *,
    sequence: str,
    min_columns: int = 9,
    allow_empty: bool = False,
) -> pl.DataFrame:
    """Read a MOTChallenge ``gt.txt`` (or a tracker results / det file).

    Columns: ``frame,id,left,top,width,height,conf,class,visibility``; more columns
    are ignored. A results file (10 columns, ``-1`` placeholders) reads with
    ``min_columns=6``: ``conf`` defaults to 1.0 when absent, ``class`` to 1 and
    ``visibility`` to 1.0 when absent or ``-1``.

    Args:
        path: The text file.
        sequence: Sequence name written into the ``sequence`` column.
        min_columns: Columns every line must have (9 for ground truth).
        allow_empty: Accept a file without rows (a tracker may output nothing).

    Returns:
        ``(N, 12)`` frame in :data:`~motops.data.schema.ANNOTATION_SCHEMA`: boxes in
        pixels, ``file`` = ``path`` and ``line`` = 1-based line of the row.

    Raises:
        DataFormatError: missing file, too few columns, a non-numeric/NaN/inf
            field, a fractional frame/id/class, or (unless ``allow_empty``) no rows.
    """
    path = Path(path)
    table = read_numeric_rows(path, names=MOT_COLUMNS, min_columns=min_columns, allow_empty=allow_empty)
    require_integral(path, table, ("frame", "id", "class"))
    placeholder = pl.col("class").is_null() | (pl.col("class") == -1)
    out = table.with_columns(
        pl.lit(sequence, dtype=pl.Utf8).alias("sequence"),
        pl.col("conf").fill_null(1.0),
        pl.when(placeholder).then(pl.lit(1.0)).otherwise(pl.col("class")).alias("class"),
        pl.when(pl.col("visibility").is_null() | (pl.col("visibility") == -1))
        .then(pl.lit(1.0))
        .otherwise(pl.col("visibility"))
        .alias("visibility"),
        pl.lit(str(path), dtype=pl.Utf8).alias("file"),
    )
    return conform(out, ANNOTATION_SCHEMA)


def _number_text(column: str, decimals: int | None = None) -> pl.Expr:
    """Format a float column as text: integers without a decimal point."""
    value = pl.col(column).cast(pl.Float64)
    if decimals is not None:
        value = value.round(decimals)
    return (
        pl.when(value == value.floor())
        .then(value.cast(pl.Int64).cast(pl.Utf8))
        .otherwise(value.cast(pl.Utf8))
    )


def write_mot_txt(path: str | Path, df: pl.DataFrame) -> None:
    """Write annotations as a MOTChallenge ``gt.txt`` (9 columns).

    Rows are sorted by frame then id; integral values are written without a decimal
    point and ``visibility`` is rounded to :data:`VISIBILITY_DECIMALS` decimals.

    Args:
        path: Destination file (parent folders are created).
        df: ``(N, >=9)`` frame with at least the :data:`MOT_COLUMNS` columns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text_columns = [
        pl.col("frame").cast(pl.Int64).cast(pl.Utf8),
        pl.col("id").cast(pl.Int64).cast(pl.Utf8),
        *(_number_text(c) for c in ("left", "top", "width", "height", "conf")),
        pl.col("class").cast(pl.Int64).cast(pl.Utf8),
        _number_text("visibility", VISIBILITY_DECIMALS),
    ]
    lines = df.sort(["frame", "id"], maintain_order=True).select(
        pl.concat_str(text_columns, separator=",").alias("row")
    )["row"]
    body = "\n".join(lines.to_list())
    path.write_text(body + "\n" if body else "", encoding="utf-8")


# --------------------------------------------------------------------------- sequences


def sequence_table(info: SeqInfo, *, source: str, path: str | Path) -> pl.DataFrame:
    """The one-row sequence table of a sequence.

    Args:
        info: Parsed ``seqinfo.ini``.
        source: ``synthetic``, ``mot``, ``cvat`` or ``visdrone``.
        path: The sequence folder.

    Returns:
        ``(1, 10)`` frame in :data:`~motops.data.schema.SEQUENCE_SCHEMA`.
    """
    row = {
        "sequence": [info.name],
        "source": [source],
        "path": [str(path)],
        "length": [info.length],
        "width": [info.width],
        "height": [info.height],
        "fps": [float(info.fps)],
        "im_dir": [info.im_dir],
        "im_ext": [info.im_ext],
        "frame_files": [info.frame_files()],
    }
    return pl.DataFrame(row, schema=SEQUENCE_SCHEMA)


def empty_sequences() -> pl.DataFrame:
    """A sequence table with no rows and the normalized schema."""
    return pl.DataFrame(schema=SEQUENCE_SCHEMA)


def read_mot_sequence(
    seq_dir: str | Path, *, source: str = "mot", require_gt: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read one MOTChallenge sequence folder.

    Images are not opened: ``frame_files`` lists the paths ``seqinfo.ini`` implies
    (``img1/000001.jpg`` …) whether or not they exist; validation checks them.

    Args:
        seq_dir: Folder holding ``seqinfo.ini`` and ``gt/gt.txt``.
        source: Value of the ``source`` column.
        require_gt: Refuse a sequence without ``gt/gt.txt`` (else no annotations).

    Returns:
        ``(sequences, annotations)``: a ``(1, 10)`` frame in ``SEQUENCE_SCHEMA`` and
        an ``(N, 12)`` frame in ``ANNOTATION_SCHEMA``.

    Raises:
        DataFormatError: missing or malformed ``seqinfo.ini`` or ``gt/gt.txt``.
    """
    seq_dir = Path(seq_dir)
    info = read_seqinfo(seq_dir / "seqinfo.ini")
    gt = seq_dir / "gt" / "gt.txt"
    if gt.is_file():
        annotations = read_mot_txt(gt, sequence=info.name)
    elif require_gt:
        raise DataFormatError(gt, "ground truth file not found; expected SEQ/gt/gt.txt next to SEQ/seqinfo.ini")
    else:
        annotations = empty_annotations()
    return sequence_table(info, source=source, path=seq_dir), annotations


def _looks_like_sequence(folder: Path) -> bool:
    return (folder / "seqinfo.ini").is_file() or (folder / "gt" / "gt.txt").is_file()


def find_mot_sequences(root: str | Path) -> list[Path]:
    """Sequence folders of a MOTChallenge dataset root.

    A folder counts as a sequence when it holds ``seqinfo.ini`` or ``gt/gt.txt``
    (so a sequence missing its ``seqinfo.ini`` is reported, not skipped). Looked
    for: ``root`` itself, ``root/*`` and ``root/{train,val,test}/*``.

    Args:
        root: Dataset root or a single sequence folder.

    Returns:
        Sequence folders, sorted by split then name; empty when there are none.
    """
    root = Path(root)
    if _looks_like_sequence(root):
        return [root]
    found: list[Path] = []
    for parent in (root, *(root / s for s in SPLITS)):
        if not parent.is_dir():
            continue
        found.extend(sorted(p for p in parent.iterdir() if p.is_dir() and _looks_like_sequence(p)))
    return found


def read_mot_dataset(
    root: str | Path, *, source: str = "mot", require_gt: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read every sequence of a MOTChallenge dataset root.

    Args:
        root: Dataset root (see :func:`find_mot_sequences`).
        source: Value of the ``source`` column.
        require_gt: Refuse sequences without ``gt/gt.txt``.

    Returns:
        ``(sequences, annotations)`` concatenated over the sequences.

    Raises:
        DataFormatError: no sequence found, two sequences with the same name, or a
            malformed sequence.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(root, "dataset folder not found")
    folders = find_mot_sequences(root)
    if not folders:
        raise DataFormatError(
            root,
            "no MOTChallenge sequences found; expected SEQ/seqinfo.ini and SEQ/gt/gt.txt "
            "directly under the folder or under train/, val/ or test/",
        )
    sequences: list[pl.DataFrame] = []
    annotations: list[pl.DataFrame] = []
    seen: dict[str, Path] = {}
    for folder in folders:
        seq, ann = read_mot_sequence(folder, source=source, require_gt=require_gt)
        name = seq["sequence"][0]
        if name in seen:
            raise DataFormatError(folder, f"sequence name '{name}' is also used by {seen[name]}")
        seen[name] = folder
        sequences.append(seq)
        annotations.append(ann)
    return pl.concat(sequences), pl.concat(annotations)


# --------------------------------------------------------------------------- writing folders


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link ``src`` to ``dst``, copying when a link is impossible.

    Links save disk space and time; they fail across file systems or where the
    file system has none, hence the copy.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_mot_sequence(
    seq_dir: str | Path,
    info: SeqInfo,
    annotations: pl.DataFrame,
    *,
    images: Sequence[str | Path | None] | None = None,
) -> None:
    """Write one sequence in MOTChallenge layout.

    Args:
        seq_dir: Destination sequence folder (created).
        info: Written to ``seqinfo.ini``.
        annotations: Rows of this sequence, written to ``gt/gt.txt``.
        images: Optional source image of each frame, frame 1 first (``None`` or a
            missing file skips that frame); linked or copied to
            ``info.frame_files()``.
    """
    seq_dir = Path(seq_dir)
    seq_dir.mkdir(parents=True, exist_ok=True)
    write_seqinfo(seq_dir / "seqinfo.ini", info)
    write_mot_txt(seq_dir / "gt" / "gt.txt", annotations)
    (seq_dir / info.im_dir).mkdir(parents=True, exist_ok=True)
    if images is None:
        return
    for src, rel in zip(images, info.frame_files(), strict=False):
        if src is None or not Path(src).is_file():
            continue
        link_or_copy(src, seq_dir / rel)
