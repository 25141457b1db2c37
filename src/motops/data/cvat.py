"""CVAT "MOT 1.1" zip exports, converted to MOTChallenge sequence folders.

CVAT (through Datumaro) exports a task as::

    taskname.zip/
    ├── img1/<frame images>     only when exported with "Save images"
    └── gt/
        ├── gt.txt              frame,id,left,top,width,height,not_ignored,class_id,visibility
        └── labels.txt          one label name a line; class_id is its 1-based index

There is no ``seqinfo.ini``: it is written here, the length from the images, the
size from the first image and the frame rate from the caller. ``class`` keeps the
``labels.txt`` index; :func:`read_cvat_labels` gives the names.
"""

from __future__ import annotations

import re
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import polars as pl

from motops.data.mot import (
    SeqInfo,
    read_mot_txt,
    sequence_table,
    write_seqinfo,
)
from motops.errors import DataFormatError

#: Image file extensions taken from ``img1/``.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp"})

_EXPECTED = "a CVAT 'MOT 1.1' export: gt/gt.txt, gt/labels.txt and img1/<images>"


def _natural_key(name: str) -> list[object]:
    """Sort key so ``frame_2`` comes before ``frame_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    if not zip_path.is_file():
        raise DataFormatError(zip_path, f"file not found; expected {_EXPECTED}")
    if not zipfile.is_zipfile(zip_path):
        raise DataFormatError(zip_path, f"not a zip archive (or a corrupt one); expected {_EXPECTED}")
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataFormatError(zip_path, f"corrupt zip archive ({exc}); expected {_EXPECTED}") from exc


def _find_prefix(zf: zipfile.ZipFile, zip_path: Path) -> str:
    """Folder inside the zip that holds ``gt/gt.txt`` ('' at the top level)."""
    candidates = sorted(
        name[: -len("gt/gt.txt")] for name in zf.namelist() if name == "gt/gt.txt" or name.endswith("/gt/gt.txt")
    )
    if not candidates:
        raise DataFormatError(zip_path, f"no gt/gt.txt in the archive; expected {_EXPECTED}")
    if len(candidates) > 1:
        raise DataFormatError(zip_path, f"several gt/gt.txt in the archive ({candidates}); expected one sequence")
    return candidates[0]


def _read_member(zf: zipfile.ZipFile, zip_path: Path, name: str) -> bytes:
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise DataFormatError(zip_path, f"corrupt member {name!r}: {exc}") from exc


def _parse_labels(text: str) -> dict[int, str]:
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return {index: name for index, name in enumerate(names, start=1)}


def read_cvat_labels(zip_path: str | Path) -> dict[int, str]:
    """Label names of a CVAT MOT export.

    Args:
        zip_path: The exported zip.

    Returns:
        ``{class_id: name}`` with 1-based ids, in ``gt/labels.txt`` order; empty
        when the export has no ``labels.txt``.

    Raises:
        DataFormatError: not a readable zip, or no ``gt/gt.txt``.
    """
    zip_path = Path(zip_path)
    with _open_zip(zip_path) as zf:
        prefix = _find_prefix(zf, zip_path)
        member = f"{prefix}gt/labels.txt"
        if member not in zf.namelist():
            return {}
        return _parse_labels(_read_member(zf, zip_path, member).decode("utf-8", errors="replace"))


def read_cvat_mot_zip(
    zip_path: str | Path,
    *,
    out_dir: str | Path,
    fps: float = 30.0,
    name: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Convert a CVAT "MOT 1.1" export into a MOTChallenge sequence folder.

    Writes ``out_dir/NAME/`` with ``img1/000001.<ext>`` … (the archive's images in
    natural name order), ``gt/gt.txt`` and ``gt/labels.txt`` as exported, and a
    ``seqinfo.ini``. Only the members named above are extracted, under names
    chosen here, so a crafted archive cannot write outside ``out_dir``.

    Args:
        zip_path: The exported zip (exported with images).
        out_dir: Folder that receives the sequence folder (created).
        fps: Frame rate in frames per second; CVAT does not record it.
        name: Sequence name; defaults to the zip's stem.

    Returns:
        ``(sequences, annotations)``: ``(1, 10)`` in ``SEQUENCE_SCHEMA`` and
        ``(N, 12)`` in ``ANNOTATION_SCHEMA``; ``class`` is the 1-based index into
        ``labels.txt``; ``file`` is ``"<zip>!/gt/gt.txt"`` and ``line`` the line
        in that member, so validation names the file the user can re-export.

    Raises:
        DataFormatError: the zip is missing, corrupt or not a zip; it lacks
            ``gt/gt.txt`` or images; a line of ``gt.txt`` is malformed; a class id
            is not a line of ``labels.txt``; a frame has no image; or images mix
            file types.
    """
    from PIL import Image, UnidentifiedImageError  # heavy-ish; only needed here

    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    zip_path = Path(zip_path)
    name = name or zip_path.stem
    seq_dir = Path(out_dir) / name
    with _open_zip(zip_path) as zf:
        prefix = _find_prefix(zf, zip_path)
        members = zf.namelist()
        images = sorted(
            (
                m
                for m in members
                if m.startswith(f"{prefix}img1/")
                and not m.endswith("/")
                and PurePosixPath(m).suffix.lower() in IMAGE_EXTENSIONS
            ),
            key=_natural_key,
        )
        if not images:
            raise DataFormatError(
                zip_path, f"no images under {prefix}img1/; export the task with 'Save images' ({_EXPECTED})"
            )
        extensions = {PurePosixPath(m).suffix.lower() for m in images}
        if len(extensions) > 1:
            raise DataFormatError(zip_path, f"img1/ mixes image types {sorted(extensions)}; expected one")
        im_ext = ".jpg" if extensions == {".jpeg"} else extensions.pop()

        if seq_dir.exists():
            shutil.rmtree(seq_dir)
        (seq_dir / "gt").mkdir(parents=True)
        (seq_dir / "img1").mkdir()
        gt_path = seq_dir / "gt" / "gt.txt"
        gt_path.write_bytes(_read_member(zf, zip_path, f"{prefix}gt/gt.txt"))
        labels: dict[int, str] = {}
        if f"{prefix}gt/labels.txt" in members:
            raw = _read_member(zf, zip_path, f"{prefix}gt/labels.txt")
            (seq_dir / "gt" / "labels.txt").write_bytes(raw)
            labels = _parse_labels(raw.decode("utf-8", errors="replace"))
        for frame, member in enumerate(images, start=1):
            (seq_dir / "img1" / f"{frame:06d}{im_ext}").write_bytes(_read_member(zf, zip_path, member))

    first = seq_dir / "img1" / f"{1:06d}{im_ext}"
    try:
        with Image.open(first) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataFormatError(zip_path, f"image {images[0]!r} cannot be decoded: {exc}") from exc

    try:
        annotations = read_mot_txt(gt_path, sequence=name)
    except DataFormatError as exc:
        # name the archive the user has, not our extracted copy
        raise DataFormatError(zip_path, f"{prefix}gt/gt.txt: {exc.message}", line=exc.line) from exc
    _check_against(zip_path, prefix, annotations, labels, n_images=len(images))
    annotations = annotations.with_columns(pl.lit(f"{zip_path}!/{prefix}gt/gt.txt").alias("file"))

    info = SeqInfo(name=name, im_dir="img1", fps=float(fps), length=len(images), width=width, height=height,
                   im_ext=im_ext)
    write_seqinfo(seq_dir / "seqinfo.ini", info)
    return sequence_table(info, source="cvat", path=seq_dir), annotations


def _check_against(
    zip_path: Path, prefix: str, annotations: pl.DataFrame, labels: dict[int, str], *, n_images: int
) -> None:
    """Refuse class ids outside labels.txt and frames beyond the images."""
    if labels:
        bad = annotations.filter(~pl.col("class").is_between(1, len(labels)))
        if bad.height:
            row = bad.row(0, named=True)
            raise DataFormatError(
                zip_path,
                f"{prefix}gt/gt.txt: class id {row['class']} is not a line of gt/labels.txt "
                f"(expected 1..{len(labels)})",
                line=row["line"],
            )
    late = annotations.filter(pl.col("frame") > n_images)
    if late.height:
        row = late.row(0, named=True)
        raise DataFormatError(
            zip_path,
            f"{prefix}gt/gt.txt: frame {row['frame']} has no image; the archive holds {n_images} images",
            line=row["line"],
        )
