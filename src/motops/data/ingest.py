"""The ``ingest`` stage: every configured source → one MOTChallenge folder + two tables.

Each source is read by its reader (:mod:`~motops.data.mot`, :mod:`~motops.data.cvat`,
:mod:`~motops.data.visdrone`), every sequence is rewritten under ``out_dir/SEQ/``
in MOTChallenge layout (images hard-linked or copied, ``seqinfo.ini`` and
``gt/gt.txt`` written from the normalized table) and the normalized tables are
written to ``annotations.parquet`` and ``sequences.parquet``.

The annotation table keeps ``file``/``line`` pointing at the *original* source
lines (the file a user would fix), while ``sequences.path`` points at
``out_dir/SEQ``, the folder every later stage reads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from motops.data.cvat import read_cvat_mot_zip
from motops.data.mot import SeqInfo, read_mot_dataset, write_mot_sequence
from motops.data.schema import ANNOTATION_SCHEMA, SEQUENCE_SCHEMA, conform, empty_annotations
from motops.data.visdrone import read_visdrone
from motops.errors import ConfigError, DataFormatError

#: ``source`` of the sequences of a pseudo-labelled source (``labels: pseudo``) in the sequence table.
PSEUDO_SOURCE = "pseudo"

#: Source formats ``ingest`` understands, besides the plain string ``"synthetic"``.
FORMATS: tuple[str, ...] = ("synthetic", "mot", "cvat", "visdrone")


@dataclass(frozen=True)
class _Source:
    format: str
    path: Path
    fps: float
    name: str | None
    labels: str = "gt"

    def label(self) -> str:
        return f"{self.format} source {self.path}"


def _field(item: Any, key: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(key)
    return getattr(item, key, None)


def _parse_source(item: Any, index: int, *, synthetic_dir: Path, default_fps: float) -> _Source:
    """Normalize one entry of ``sources`` (a string or a dict / typed model)."""
    where = f"ingest source #{index + 1}"
    if isinstance(item, str):
        if item != "synthetic":
            raise ConfigError(f"{where}: {item!r} is not a source; expected 'synthetic' or a mapping "
                              f"with 'format' in {list(FORMATS)} and 'path'")
        return _Source("synthetic", Path(synthetic_dir), default_fps, None)
    fmt = _field(item, "format")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: format {fmt!r} is not supported; expected one of {list(FORMATS)}")
    path = _field(item, "path")
    if path is None:
        if fmt != "synthetic":
            raise ConfigError(f"{where}: 'path' is missing; expected the {fmt} dataset location")
        path = synthetic_dir
    fps = _field(item, "fps")
    fps = default_fps if fps is None else float(fps)
    if not fps > 0:
        raise ConfigError(f"{where}: fps must be positive, got {fps}")
    labels = _field(item, "labels") or "gt"
    if labels not in ("gt", "pseudo"):
        raise ConfigError(f"{where}: labels {labels!r}; expected 'gt' (people's) or 'pseudo' (the champion's)")
    return _Source(str(fmt), Path(path), fps, _field(item, "name"), labels)


def _is_within(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def _write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    """Write then rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.write_parquet(tmp)
    os.replace(tmp, path)


def ingest(
    sources: list,
    *,
    synthetic_dir: Path,
    out_dir: Path,
    annotations_path: Path,
    sequences_path: Path,
    default_fps: float = 30.0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read every source, normalize it and lay it out under ``out_dir``.

    Args:
        sources: Entries are ``"synthetic"`` (the MOTChallenge folder
            ``synthetic_dir``) or a mapping / object with ``format`` in
            ``{"mot", "cvat", "visdrone"}`` and ``path`` (a dataset root, a CVAT zip
            or a VisDrone root); optional ``fps`` (frames per second, for formats that
            do not record it; default ``default_fps``), ``name`` (CVAT sequence
            name, default the zip's stem) and ``labels`` (``gt``, or ``pseudo`` for
            footage labelled by the champion: its sequences get ``source = "pseudo"``).
        synthetic_dir: The synthetic footage, in MOTChallenge layout.
        out_dir: Output folder, deleted and recreated on each run (a DVC output).
        annotations_path: Where ``annotations.parquet`` is written.
        sequences_path: Where ``sequences.parquet`` is written.
        default_fps: Frame rate for CVAT and VisDrone sources without ``fps``.

    Returns:
        ``(sequences, annotations)``: ``(S, 10)`` in ``SEQUENCE_SCHEMA`` with
        ``path = out_dir/SEQ`` and ``(N, 12)`` in ``ANNOTATION_SCHEMA``; the same
        tables written to the two parquet files.

    Raises:
        ConfigError: ``sources`` is empty, an entry is malformed, or ``out_dir``
            would contain (and so delete) a source.
        DataFormatError: a source is malformed, a sequence name is not a plain
            folder name, or two sources share a sequence name.
    """
    out_dir, synthetic_dir = Path(out_dir), Path(synthetic_dir)
    annotations_path, sequences_path = Path(annotations_path), Path(sequences_path)
    if not sources:
        raise ConfigError("ingest: no sources given; expected 'synthetic' and/or {format, path} entries")
    parsed = [
        _parse_source(item, i, synthetic_dir=synthetic_dir, default_fps=default_fps)
        for i, item in enumerate(sources)
    ]
    for source in parsed:
        if _is_within(source.path, out_dir):
            raise ConfigError(f"{source.label()} lies inside the ingest output {out_dir}, which is deleted each run")

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-staging-", dir=out_dir.parent))
    try:
        pending = _collect(parsed, staging)
        sequences, annotations = _materialize(pending, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    _write_parquet_atomic(annotations, annotations_path)
    _write_parquet_atomic(sequences, sequences_path)
    return sequences, annotations


def read_source(
    fmt: str, path: Path, *, staging: Path, fps: float = 30.0, name: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read one source of format ``fmt`` (``synthetic``, ``mot``, ``cvat``, ``visdrone``) with its reader.

    CVAT and VisDrone sources are converted into ``staging`` (MOTChallenge layout) first, with
    frame rate ``fps`` (their formats do not record it).

    Returns:
        ``(sequences, annotations)`` as the readers return them.
    """
    if fmt in ("synthetic", "mot"):
        return read_mot_dataset(path, source=fmt)
    if fmt == "cvat":
        return read_cvat_mot_zip(path, out_dir=staging, fps=fps, name=name)
    return read_visdrone(path, out_dir=staging, fps=fps)


def _collect(parsed: list[_Source], staging: Path) -> list[tuple[dict, pl.DataFrame]]:
    """Read every source; refuse names shared by two sources."""
    owners: dict[str, _Source] = {}
    pending: list[tuple[dict, pl.DataFrame]] = []
    for index, source in enumerate(parsed):
        seqs, anns = read_source(source.format, source.path, staging=staging / str(index), fps=source.fps,
                                 name=source.name)
        if source.labels == "pseudo":  # prepare keeps these out of val: the gate scores people's labels only
            seqs = seqs.with_columns(pl.lit(PSEUDO_SOURCE).alias("source"))
        by_name = anns.partition_by("sequence", as_dict=True) if anns.height else {}
        for row in seqs.iter_rows(named=True):
            name = row["sequence"]
            if not name or name in (".", "..") or "/" in name or "\\" in name:
                raise DataFormatError(source.path, f"sequence name {name!r} is not a plain folder name")
            if name in owners:
                raise DataFormatError(
                    source.path,
                    f"sequence name '{name}' comes from both {owners[name].label()} and {source.label()}; "
                    "sequence names must be unique across sources",
                )
            owners[name] = source
            ann = by_name.get((name,), empty_annotations())
            pending.append((row, ann))
    return pending


def _materialize(pending: list[tuple[dict, pl.DataFrame]], out_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lay every sequence out under ``out_dir`` and build the final tables."""
    rows: list[dict] = []
    annotations: list[pl.DataFrame] = []
    for row, ann in tqdm(pending, desc="ingest", unit="seq"):
        src = Path(row["path"])
        dst = out_dir / row["sequence"]
        info = SeqInfo(
            name=row["sequence"],
            im_dir=row["im_dir"],
            fps=row["fps"],
            length=row["length"],
            width=row["width"],
            height=row["height"],
            im_ext=row["im_ext"],
        )
        write_mot_sequence(dst, info, ann, images=[src / f for f in row["frame_files"]])
        labels = src / "gt" / "labels.txt"
        if labels.is_file():
            shutil.copyfile(labels, dst / "gt" / "labels.txt")
        rows.append({**row, "path": str(dst)})
        annotations.append(ann)
    sequences = pl.DataFrame(rows, schema=SEQUENCE_SCHEMA) if rows else pl.DataFrame(schema=SEQUENCE_SCHEMA)
    merged = pl.concat(annotations) if annotations else empty_annotations()
    return conform(sequences, SEQUENCE_SCHEMA), conform(merged, ANNOTATION_SCHEMA)
