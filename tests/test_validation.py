"""Data tests: the Great Expectations suites of motops.validation.

A tiny MOTChallenge-like sequence (6 frames of 64x48 JPEGs, 2 ids) is built in
``tmp_path``; each bad case breaks it in one way and must be named by file:line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest

from motops.data.schema import ANNOTATION_SCHEMA, SEQUENCE_SCHEMA
from motops.errors import ValidationFailed
from motops.validation import ValidationReport, check_or_raise, validate_dataset
from motops.validation.suites import probe_image

SEQ = "TINY-01"
LENGTH = 6
WIDTH, HEIGHT = 64, 48
MOT17_09 = Path("/work/shared/data/mot17/MOT17-09")
PETS09 = Path("/work/shared/data/pets09/PETS09-S2L1-DEV")


@dataclass(frozen=True)
class Params:
    """Same attributes as motops.config.ValidationParams."""

    max_outside_fraction: float = 0.5
    max_track_gap_s: float = 10.0
    min_track_length: int = 2
    classes: tuple[int, ...] = tuple(range(1, 14))
    check_images: bool = True
    max_examples: int = 5


@dataclass
class Tiny:
    root: Path
    gt: Path
    sequences: pl.DataFrame
    annotations: pl.DataFrame

    def image(self, frame: int) -> Path:
        return self.root / "img1" / f"{frame:06d}.jpg"


def _write_jpeg(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # noise keeps the entropy-coded data long, so half a file still has a whole header
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)


@pytest.fixture
def tiny(tmp_path: Path) -> Tiny:
    root = tmp_path / SEQ
    gt = root / "gt" / "gt.txt"
    frame_files = [f"img1/{i:06d}.jpg" for i in range(1, LENGTH + 1)]
    for i, name in enumerate(frame_files):
        _write_jpeg(root / name, WIDTH, HEIGHT, seed=i)
    rows = [
        (frame, ident, 5.0 + frame + 20 * (ident - 1), 10.0, 15.0, 30.0, 1.0, 1, 1.0)
        for frame in range(1, LENGTH + 1)
        for ident in (1, 2)
    ]
    gt.parent.mkdir(parents=True)
    gt.write_text("".join(",".join(str(v) for v in r) + "\n" for r in rows))
    columns = ["frame", "id", "left", "top", "width", "height", "conf", "class", "visibility"]
    annotations = (
        pl.DataFrame(rows, schema=columns, orient="row")
        .with_columns(
            sequence=pl.lit(SEQ),
            file=pl.lit(str(gt)),
            line=pl.int_range(1, pl.len() + 1),
        )
        .select([pl.col(c).cast(t) for c, t in ANNOTATION_SCHEMA.items()])
    )
    sequences = pl.DataFrame(
        {
            "sequence": [SEQ],
            "source": ["synthetic"],
            "path": [str(root)],
            "length": [LENGTH],
            "width": [WIDTH],
            "height": [HEIGHT],
            "fps": [30.0],
            "im_dir": ["img1"],
            "im_ext": [".jpg"],
            "frame_files": [frame_files],
        },
        schema=SEQUENCE_SCHEMA,
    )
    return Tiny(root, gt, sequences, annotations)


def _validate(tiny: Tiny, tmp_path: Path, params: Params | None = None, **changes) -> ValidationReport:
    tables = {"sequences": tiny.sequences, "annotations": tiny.annotations, **changes}
    return validate_dataset(
        tables["sequences"], tables["annotations"], params or Params(), report_dir=tmp_path / "report", progress=False
    )


def _edit(df: pl.DataFrame, line: int, **values) -> pl.DataFrame:
    """Set columns of the row read from ``line``."""
    at = pl.col("line") == line
    return df.with_columns(
        [pl.when(at).then(pl.lit(v)).otherwise(pl.col(c)).cast(df[c].dtype).alias(c) for c, v in values.items()]
    )


def _failed(report: ValidationReport) -> set[tuple[str, str]]:
    """(suite, column or expectation type) of each failed expectation."""
    out = set()
    for f in report.failures():
        kw = f["kwargs"]
        key = kw.get("column") or (kw.get("column_A") and f"{kw['column_A']}~{kw['column_B']}") or f["expectation"]
        out.add((f["suite"], key))
    return out


def _line_of(tiny: Tiny, frame: int, ident: int) -> int:
    row = tiny.annotations.filter((pl.col("frame") == frame) & (pl.col("id") == ident))
    return int(row["line"][0])


# --------------------------------------------------------------------------- clean


def test_clean_tiny_dataset_passes_and_writes_reports(tiny: Tiny, tmp_path: Path) -> None:
    report = _validate(tiny, tmp_path)

    assert report.success, report.summary_text()
    assert report.data_docs_index == tmp_path / "report" / "data_docs" / "index.html"
    index = report.data_docs_index.read_text()
    for suite in ("annotations", "tracks", "frames", "sequences"):
        assert f"validations/{suite}/" in index
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["success"] is True
    assert summary["statistics"]["failed"] == 0 and summary["statistics"]["evaluated"] > 30
    ran = {s["suite"]: s for s in summary["suites"]}
    assert ran["frames"]["rows"] == LENGTH and not ran["frames"]["skipped"]
    assert ran["annotations"]["rows"] == 2 * LENGTH
    assert "passed" in report.summary_text()
    check_or_raise(report)  # does not raise


def test_real_config_model_is_accepted(tiny: Tiny, tmp_path: Path) -> None:
    config = pytest.importorskip("motops.config")
    report = _validate(tiny, tmp_path, config.ValidationParams())
    assert report.success, report.summary_text()


def test_check_images_false_skips_frames_with_reason(tiny: Tiny, tmp_path: Path) -> None:
    tiny.image(3).unlink()
    report = _validate(tiny, tmp_path, Params(check_images=False))

    assert report.success, report.summary_text()
    frames = next(s for s in report.summary["suites"] if s["suite"] == "frames")
    assert frames["skipped"] and frames["reason"] == "check_images is false"
    assert "skipped frames: check_images is false" in report.summary_text()


# --------------------------------------------------------------------------- bad annotations


@pytest.mark.parametrize("width", [-4.0, 0.0])
def test_non_positive_width_fails(tiny: Tiny, tmp_path: Path, width: float) -> None:
    line = _line_of(tiny, 2, 1)
    report = _validate(tiny, tmp_path, annotations=_edit(tiny.annotations, line, width=width))

    assert not report.success
    assert _failed(report) == {("annotations", "width")}
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame 2, id 1)" in report.summary_text()


def test_duplicate_id_in_one_frame_fails(tiny: Tiny, tmp_path: Path) -> None:
    # line 4 is (frame 2, id 2); make it a second box of id 1 in frame 2
    line = _line_of(tiny, 2, 2)
    annotations = _edit(tiny.annotations, line, id=1)
    report = _validate(tiny, tmp_path, annotations=annotations)

    assert _failed(report) == {("annotations", "expect_compound_columns_to_be_unique")}
    text = report.summary_text()
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame 2, id 1)" in text
    assert f"{tiny.gt}:{_line_of(tiny, 2, 1)} (sequence {SEQ}, frame 2, id 1)" in text


def test_frame_beyond_seq_length_fails(tiny: Tiny, tmp_path: Path) -> None:
    line = _line_of(tiny, LENGTH, 2)
    report = _validate(tiny, tmp_path, annotations=_edit(tiny.annotations, line, frame=LENGTH + 3))

    assert _failed(report) == {("annotations", "length~frame")}
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame {LENGTH + 3}, id 2)" in report.summary_text()


def test_frame_zero_fails(tiny: Tiny, tmp_path: Path) -> None:
    line = _line_of(tiny, 1, 1)
    report = _validate(tiny, tmp_path, annotations=_edit(tiny.annotations, line, frame=0))

    assert ("annotations", "frame") in _failed(report)
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame 0, id 1)" in report.summary_text()


def test_visibility_above_one_fails(tiny: Tiny, tmp_path: Path) -> None:
    line = _line_of(tiny, 3, 2)
    report = _validate(tiny, tmp_path, annotations=_edit(tiny.annotations, line, visibility=1.5))

    assert _failed(report) == {("annotations", "visibility")}
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame 3, id 2): visibility=1.5" in report.summary_text()


def test_nan_fails_not_null(tiny: Tiny, tmp_path: Path) -> None:
    line = _line_of(tiny, 3, 1)
    report = _validate(tiny, tmp_path, annotations=_edit(tiny.annotations, line, conf=float("nan")))

    assert _failed(report) == {("annotations", "conf")}
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame 3, id 1)" in report.summary_text()


def test_unknown_class_fails(tiny: Tiny, tmp_path: Path) -> None:
    line = _line_of(tiny, 4, 1)
    report = _validate(tiny, tmp_path, annotations=_edit(tiny.annotations, line, **{"class": 42}))

    assert _failed(report) == {("annotations", "class")}
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame 4, id 1): class=42" in report.summary_text()


def test_box_far_outside_image_fails(tiny: Tiny, tmp_path: Path) -> None:
    line = _line_of(tiny, 5, 2)
    # 15 px wide box starting 3 px left of the right edge: 80 % outside
    report = _validate(tiny, tmp_path, annotations=_edit(tiny.annotations, line, left=WIDTH - 3.0))

    assert _failed(report) == {("annotations", "outside_fraction")}
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame 5, id 2): outside_fraction=0.8" in report.summary_text()


def test_box_a_little_outside_image_passes(tiny: Tiny, tmp_path: Path) -> None:
    line = _line_of(tiny, 5, 2)
    # 6 of 15 px outside: 40 %, below the 50 % tolerance
    report = _validate(tiny, tmp_path, annotations=_edit(tiny.annotations, line, left=-6.0))
    assert report.success, report.summary_text()


def test_fractional_box_wholly_inside_the_image_passes(tiny: Tiny, tmp_path: Path) -> None:
    """CVAT and public MOT ground truth have fractional corners; 1 - inside/area must not dip below 0."""
    # these values give 1 - inside/area = -6.7e-16 in float64 without the rounding
    boxes = tiny.annotations.with_columns(
        left=pl.col("left") + 0.1, top=pl.col("top") + 0.7, width=pl.lit(10.3), height=pl.lit(20.9)
    )
    report = _validate(tiny, tmp_path, annotations=boxes)
    assert report.success, report.summary_text()


def test_track_gap_too_long_fails(tiny: Tiny, tmp_path: Path) -> None:
    # id 2 annotated on frames 1 and 6 only: a gap of 5 frames
    annotations = tiny.annotations.filter((pl.col("id") != 2) | pl.col("frame").is_in([1, LENGTH]))
    report = _validate(tiny, tmp_path, Params(max_track_gap_s=3 / 30), annotations=annotations)

    assert _failed(report) == {("annotations", "gap_s")}
    line = _line_of(tiny, LENGTH, 2)
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame {LENGTH}, id 2): gap_s=0.1667" in report.summary_text()
    assert _validate(tiny, tmp_path, Params(max_track_gap_s=5 / 30), annotations=annotations).success


def test_too_short_track_fails(tiny: Tiny, tmp_path: Path) -> None:
    annotations = tiny.annotations.filter((pl.col("id") != 2) | (pl.col("frame") == 3))
    report = _validate(tiny, tmp_path, annotations=annotations)

    assert _failed(report) == {("tracks", "rows")}
    line = _line_of(tiny, 3, 2)
    assert f"{tiny.gt}:{line} (sequence {SEQ}, frame 3, id 2): rows=1" in report.summary_text()


def test_short_track_cut_by_the_last_frame_passes(tiny: Tiny, tmp_path: Path) -> None:
    # a person who walks in on the last frame has one row: the footage ended, not the annotation
    annotations = tiny.annotations.filter((pl.col("id") != 2) | (pl.col("frame") == LENGTH))
    report = _validate(tiny, tmp_path, annotations=annotations)
    assert report.success, report.summary_text()


def test_sequence_without_annotations_fails(tiny: Tiny, tmp_path: Path) -> None:
    report = _validate(tiny, tmp_path, annotations=tiny.annotations.head(0))

    assert _failed(report) == {("sequences", "annotations")}
    assert f"{tiny.root} (sequence {SEQ}): annotations=0" in report.summary_text()


def test_annotation_of_unknown_sequence_fails(tiny: Tiny, tmp_path: Path) -> None:
    line = _line_of(tiny, 2, 2)
    report = _validate(tiny, tmp_path, annotations=_edit(tiny.annotations, line, sequence="NOPE"))

    assert ("annotations", "sequence") in _failed(report)
    assert f"{tiny.gt}:{line} (sequence NOPE, frame 2, id 2)" in report.summary_text()


def test_missing_column_skips_the_row_suites(tiny: Tiny, tmp_path: Path) -> None:
    report = _validate(tiny, tmp_path, annotations=tiny.annotations.drop("visibility"))

    assert not report.success
    assert ("annotations_schema", "visibility") in _failed(report)
    text = report.summary_text()
    assert "column `visibility` is present" in text and f"in {tiny.gt}" in text
    assert "error:" not in text  # the dtype check of the missing column is not repeated
    skipped = {s["suite"]: s["reason"] for s in report.summary["suites"] if s["skipped"]}
    assert set(skipped) == {"annotations", "tracks", "sequences", "frames"}


def test_wrong_dtype_fails_schema(tiny: Tiny, tmp_path: Path) -> None:
    report = _validate(tiny, tmp_path, annotations=tiny.annotations.with_columns(pl.col("frame").cast(pl.Float64)))
    assert _failed(report) == {("annotations_schema", "frame")}


# --------------------------------------------------------------------------- bad images


def test_missing_image_fails(tiny: Tiny, tmp_path: Path) -> None:
    tiny.image(3).unlink()
    report = _validate(tiny, tmp_path)

    assert _failed(report) == {("frames", "exists")}
    assert f"{tiny.image(3)} (sequence {SEQ}, frame 3)" in report.summary_text()


def test_truncated_jpeg_fails(tiny: Tiny, tmp_path: Path) -> None:
    data = tiny.image(4).read_bytes()
    tiny.image(4).write_bytes(data[: len(data) // 2])
    report = _validate(tiny, tmp_path)

    assert _failed(report) == {("frames", "readable")}
    text = report.summary_text()
    assert f"{tiny.image(4)} (sequence {SEQ}, frame 4)" in text
    assert "no JPEG end marker" in text


def test_image_of_wrong_size_fails(tiny: Tiny, tmp_path: Path) -> None:
    _write_jpeg(tiny.image(5), WIDTH + 8, HEIGHT)
    report = _validate(tiny, tmp_path)

    assert _failed(report) == {("frames", "image_width~width")}
    assert f"{tiny.image(5)} (sequence {SEQ}, frame 5): image_width={WIDTH + 8}, width={WIDTH}" in (
        report.summary_text()
    )
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    frames = next(s for s in summary["suites"] if s["suite"] == "frames")
    failed = [e for e in frames["expectations"] if not e["success"]]
    assert failed[0]["unexpected_count"] == 1
    assert failed[0]["examples"][0]["file"] == str(tiny.image(5))


def test_probe_image_png_whole_and_truncated(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    assert cv2.imwrite(str(path), np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    probe = probe_image(path)
    assert (probe.exists, probe.readable, probe.width, probe.height) == (True, True, 30, 40)
    path.write_bytes(path.read_bytes()[:-20])
    assert probe_image(path).readable is False
    assert probe_image(tmp_path / "none.png").exists is False
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert probe_image(tmp_path / "junk.jpg").readable is False


# --------------------------------------------------------------------------- report and raise


def test_summary_json_and_check_or_raise(tiny: Tiny, tmp_path: Path) -> None:
    lines = [_line_of(tiny, f, 1) for f in range(1, LENGTH + 1)]
    annotations = tiny.annotations.with_columns(
        visibility=pl.when(pl.col("id") == 1).then(2.0).otherwise(pl.col("visibility"))
    )
    report = _validate(tiny, tmp_path, Params(max_examples=2), annotations=annotations)

    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(report.summary))
    (failure,) = report.failures()
    assert failure["unexpected_count"] == LENGTH
    assert [e["line"] for e in failure["examples"]] == lines[:2]
    assert {"sequence", "file", "line", "frame", "id"} <= set(failure["examples"][0])
    assert f"… and {LENGTH - 2} more" in report.summary_text()
    with pytest.raises(ValidationFailed) as raised:
        check_or_raise(report)
    assert f"{tiny.gt}:{lines[0]}" in str(raised.value)
    assert raised.value.report_dir == tmp_path / "report"


# --------------------------------------------------------------------------- real data


def _mot17_09() -> tuple[pl.DataFrame, pl.DataFrame]:
    if not (MOT17_09 / "gt" / "gt.txt").is_file():
        pytest.skip(f"{MOT17_09} is not on this machine")
    from motops.data.mot import read_mot_sequence

    return read_mot_sequence(MOT17_09)


def test_real_mot17_09_passes_with_the_default_params(tmp_path: Path) -> None:
    from motops.config import ValidationParams

    sequences, annotations = _mot17_09()
    # real MOT17-09 boxes reach 79 % outside the image, and id 63 (a reflection, consider 0)
    # has one row: the defaults accept both
    report = validate_dataset(
        sequences, annotations, ValidationParams(check_images=False), report_dir=tmp_path / "report"
    )

    assert report.success, report.summary_text()
    assert report.summary["rows"]["annotations"] == 10411
    assert report.data_docs_index.is_file()


def test_real_mot17_09_with_a_stricter_outside_bound_names_the_boxes(tmp_path: Path) -> None:
    sequences, annotations = _mot17_09()
    report = validate_dataset(sequences, annotations, Params(check_images=False), report_dir=tmp_path / "report")

    assert _failed(report) == {("annotations", "outside_fraction")}
    text = report.summary_text()
    gt = MOT17_09 / "gt" / "gt.txt"
    assert f"{gt}:736 (sequence MOT17-09, frame 467, id 2)" in text


def test_real_pets09_fractional_ground_truth_passes(tmp_path: Path) -> None:
    """The dev sequence's own gt.txt (fractional coordinates as published) passes the default suite."""
    from motops.config import ValidationParams
    from motops.data.mot import read_mot_sequence

    if not (PETS09 / "gt" / "gt.txt").is_file():
        pytest.skip(f"{PETS09} is not on this machine")
    sequences, annotations = read_mot_sequence(PETS09)
    assert (annotations["width"] % 1 != 0).any(), "the fixture is meant to hold fractional coordinates"
    report = validate_dataset(
        sequences, annotations, ValidationParams(check_images=False), report_dir=tmp_path / "report"
    )
    assert report.success, report.summary_text()
    assert report.summary["rows"]["annotations"] == 2873


def test_probe_image_never_goes_through_ultralytics_image_open(tmp_path: Path) -> None:
    """Ultralytics patches PIL.Image.open to install a HEIF plugin on unknown files; the probe must not use it."""
    import ultralytics  # noqa: F401  (applies the patch)

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    probe = probe_image(junk)
    assert probe.readable is False and "not a JPEG or PNG" in probe.error
