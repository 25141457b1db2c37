"""Review of what the champion is unsure of: a CVAT task out, a corrected export back in.

:func:`write_review_task` writes ``BATCH/review/NAME-review.zip``, a CVAT "MOT 1.1" archive
(``gt/gt.txt``, ``gt/labels.txt``, ``img1/``) holding only the frames with an uncertain box,
every box of those frames included (certain ones with ``not_ignored`` 1, uncertain ones with 0,
which CVAT shows as *ignored*). Import it into a CVAT task (format "MOT 1.1"), correct the boxes,
clear *ignored* on the ones that are right, export as "MOT 1.1" with images, and drop the zip
into the inbox as ``NAME-review.zip``. ``BATCH/review/review.json`` maps its frames back.

:func:`apply_review` reads that export with the project's CVAT reader, checks that its images
are the frames sent for review (a review of another batch is refused, naming the zip), and
replaces the batch's rows of those frames with the corrected ones.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import polars as pl

from motops.data.mot import MOT_COLUMNS, read_mot_txt, write_mot_txt
from motops.errors import DataFormatError

REVIEW_DIR: Final = "review"
REVIEW_INDEX: Final = "review.json"
#: Suffix of a review archive's stem: ``NAME-review.zip`` belongs to batch ``NAME``.
REVIEW_SUFFIX: Final = "-review"
#: Largest mean absolute grey-level difference (0-255) between a returned image and the frame sent
#: (at 64x48): CVAT may re-encode JPEGs, which moves a few levels; another scene moves tens.
SAME_FRAME_MAX_DIFF: Final = 8.0


def review_zip_name(name: str) -> str:
    """``NAME-review.zip``: the file name of batch ``NAME``'s review task (and of its correction)."""
    return f"{name}{REVIEW_SUFFIX}.zip"


def batch_of_review(zip_path: str | Path) -> str | None:
    """The batch a ``NAME-review.zip`` is for, or None when the name does not say."""
    stem = Path(zip_path).stem
    return stem[: -len(REVIEW_SUFFIX)] if stem.endswith(REVIEW_SUFFIX) and len(stem) > len(REVIEW_SUFFIX) else None


def _gt(batch_dir: Path, name: str) -> pl.DataFrame:
    return read_mot_txt(batch_dir / name / "gt" / "gt.txt", sequence=name).select(MOT_COLUMNS)


def write_review_task(batch_dir: str | Path, name: str) -> dict[str, Any] | None:
    """Write the review task of the pseudo-labelled batch at ``batch_dir`` (sequence ``name``).

    Returns:
        ``{"zip", "frames", "boxes", "boxes_uncertain"}`` (the zip relative to ``batch_dir``), or
        None when no box is uncertain.
    """
    batch_dir = Path(batch_dir)
    gt = _gt(batch_dir, name)
    frames = sorted(gt.filter(pl.col("conf") == 0)["frame"].unique().to_list())
    if not frames:
        return None
    index = {f: k for k, f in enumerate(frames, start=1)}
    rows = gt.filter(pl.col("frame").is_in(frames)).with_columns(
        pl.col("frame").replace_strict(index, return_dtype=pl.Int64)
    )
    out = batch_dir / REVIEW_DIR
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / review_zip_name(name)
    with tempfile.TemporaryDirectory() as tmp:
        write_mot_txt(Path(tmp) / "gt.txt", rows)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(Path(tmp) / "gt.txt", "gt/gt.txt")
            zf.writestr("gt/labels.txt", "person\n")
            for f in frames:
                zf.write(batch_dir / name / "img1" / f"{f:06d}.jpg", f"img1/{f:06d}.jpg", zipfile.ZIP_STORED)
    task = {"zip": zip_path.relative_to(batch_dir).as_posix(), "sequence": name, "frames": frames,
            "ids": sorted(int(i) for i in rows["id"].unique()), "boxes": rows.height,
            "boxes_uncertain": int((rows["conf"] == 0).sum())}
    (out / REVIEW_INDEX).write_text(json.dumps(task, indent=1) + "\n", encoding="utf-8")
    return {k: task[k] for k in ("zip", "boxes", "boxes_uncertain")} | {"frames": len(frames)}


def _thumb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataFormatError(path, "cannot decode the image")
    return cv2.resize(image, (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32)


def apply_review(batch_dir: str | Path, zip_path: str | Path) -> dict[str, Any]:
    """Replace the rows of the reviewed frames of a pseudo-labelled batch by a corrected CVAT export.

    Ids the reviewer kept stay; ids CVAT made up for new boxes get fresh ids of the batch. Rows the
    reviewer left *ignored* stay uncertain (consider flag 0). ``pseudo.json`` records the review
    (the zip's sha256, so the same zip is not applied twice) and the statistics after it.

    Args:
        batch_dir: The batch folder (``data/raw/NAME``) with ``review/review.json``.
        zip_path: The corrected "MOT 1.1" export, with images.

    Returns:
        ``{"zip", "sha256", "frames", "rows_before", "rows_after", "uncertain_after"}``.

    Raises:
        DataFormatError: the zip is unreadable (the CVAT reader's message), or it is not the review
            of this batch (image count or images differ from the frames sent), naming the zip.
    """
    from motops.data.cvat import read_cvat_mot_zip
    from motops.pseudo.labeller import PSEUDO_FILE

    batch_dir, zip_path = Path(batch_dir), Path(zip_path)
    index_file = batch_dir / REVIEW_DIR / REVIEW_INDEX
    if not index_file.is_file():
        raise DataFormatError(zip_path, f"batch {batch_dir.name} has no review task ({index_file} missing): "
                                        "nothing was sent for review")
    task = json.loads(index_file.read_text(encoding="utf-8"))
    name, frames = task["sequence"], task["frames"]
    with tempfile.TemporaryDirectory(prefix="motops-review-") as tmp:
        seqs, anns = read_cvat_mot_zip(zip_path, out_dir=Path(tmp), name=name)
        count = int(seqs["length"][0])
        if count != len(frames):
            raise DataFormatError(zip_path, f"holds {count} frames, the review task of batch {batch_dir.name} "
                                            f"{len(frames)}: is it the review of another batch?")
        seq_dir = Path(seqs["path"][0])
        files = seqs["frame_files"][0]
        for k in sorted({0, len(frames) // 2, len(frames) - 1}):
            diff = float(np.abs(_thumb(seq_dir / files[k]) - _thumb(batch_dir / name / "img1" /
                                                                     f"{frames[k]:06d}.jpg")).mean())
            if diff > SAME_FRAME_MAX_DIFF:
                raise DataFormatError(zip_path, f"image {k + 1} is not frame {frames[k]} of batch {batch_dir.name} "
                                                f"(mean difference {diff:.0f} grey levels): is it the review of "
                                                "another batch?")
    gt = _gt(batch_dir, name)
    corrected = anns.select(MOT_COLUMNS).with_columns(
        pl.col("frame").replace_strict(dict(enumerate(frames, start=1)), return_dtype=pl.Int64)
    )
    known = set(task["ids"])
    next_id = int(gt["id"].max() or 0) + 1
    fresh = {i: next_id + n for n, i in enumerate(sorted(set(corrected["id"].to_list()) - known))}
    corrected = corrected.with_columns(pl.col("id").replace(fresh))
    kept = gt.filter(~pl.col("frame").is_in(frames))
    merged = pl.concat([kept, corrected.cast(kept.schema)]).sort(["frame", "id"])
    write_mot_txt(batch_dir / name / "gt" / "gt.txt", merged)
    sha = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    result = {"zip": zip_path.name, "sha256": sha, "frames": len(frames), "rows_before": gt.height,
              "rows_after": merged.height, "uncertain_after": int((merged["conf"] == 0).sum())}
    record_file = batch_dir / PSEUDO_FILE
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    record.setdefault("reviews_applied", []).append(result)
    record_file.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return result


def reviewed(batch_dir: str | Path, zip_path: str | Path) -> bool:
    """Whether this exact zip was applied to the batch already (by sha256)."""
    from motops.pseudo.labeller import PSEUDO_FILE

    record_file = Path(batch_dir) / PSEUDO_FILE
    if not record_file.is_file():
        return False
    sha = hashlib.sha256(Path(zip_path).read_bytes()).hexdigest()
    return any(r.get("sha256") == sha for r in json.loads(record_file.read_text()).get("reviews_applied", []))
