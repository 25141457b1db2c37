"""Unit tests of the data layer: MOTChallenge, CVAT and VisDrone readers, and ingest."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest

from motops.data.cvat import read_cvat_labels, read_cvat_mot_zip
from motops.data.ingest import ingest
from motops.data.mot import (
    SeqInfo,
    find_mot_sequences,
    read_mot_dataset,
    read_mot_sequence,
    read_mot_txt,
    read_seqinfo,
    write_mot_sequence,
    write_mot_txt,
    write_seqinfo,
)
from motops.data.schema import ANNOTATION_SCHEMA, SEQUENCE_SCHEMA
from motops.data.visdrone import read_visdrone
from motops.errors import ConfigError, DataFormatError

MOT17_09 = Path("/work/shared/data/mot17/MOT17-09")

GT_LINES = [
    "1,1,10,20,30,40,1,1,1",
    "1,2,50.5,60,70,80,0,7,0.25",
    "2,1,11,21,30,40,1,1,0.8",
]


def _image(path: Path, width: int = 32, height: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))


def _mot_sequence(root: Path, name: str, *, length: int = 2, images: bool = True) -> Path:
    seq = root / name
    info = SeqInfo(name=name, im_dir="img1", fps=25.0, length=length, width=32, height=24, im_ext=".jpg")
    write_seqinfo(seq / "seqinfo.ini", info)
    (seq / "gt").mkdir(parents=True)
    (seq / "gt" / "gt.txt").write_text("\n".join(GT_LINES) + "\n")
    if images:
        for rel in info.frame_files():
            _image(seq / rel)
    return seq


def _write(tmp_path: Path, text: str, name: str = "gt.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- seqinfo


def test_seqinfo_round_trip(tmp_path: Path) -> None:
    info = SeqInfo(name="S", im_dir="img1", fps=29.97, length=3, width=640, height=480, im_ext=".png")
    write_seqinfo(tmp_path / "seqinfo.ini", info)
    assert read_seqinfo(tmp_path / "seqinfo.ini") == info
    assert info.frame_files() == ["img1/000001.png", "img1/000002.png", "img1/000003.png"]


def test_missing_seqinfo_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="seqinfo.ini not found") as err:
        read_seqinfo(tmp_path / "seqinfo.ini")
    assert err.value.path == tmp_path / "seqinfo.ini"


def test_seqinfo_non_integer_length_names_key_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[Sequence]\nname=S\nimDir=img1\nframeRate=30\nseqLength=12.5\nimWidth=10\nimHeight=10\nimExt=.jpg\n",
        "seqinfo.ini",
    )
    with pytest.raises(DataFormatError, match="seqLength") as err:
        read_seqinfo(path)
    assert err.value.path == path and err.value.line == 5
    assert "12.5" in str(err.value)


def test_seqinfo_missing_key_and_section(tmp_path: Path) -> None:
    path = _write(tmp_path, "[Sequence]\nname=S\nimDir=img1\nframeRate=30\nseqLength=3\nimWidth=10\nimExt=.jpg\n",
                  "seqinfo.ini")
    with pytest.raises(DataFormatError, match="imHeight"):
        read_seqinfo(path)
    path.write_text("[Other]\nname=S\n")
    with pytest.raises(DataFormatError, match=r"\[Sequence\]"):
        read_seqinfo(path)


# --------------------------------------------------------------------------- gt.txt


def test_gt_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n".join(reversed(GT_LINES)) + "\n")
    df = read_mot_txt(path, sequence="S")
    assert df.schema == pl.Schema(ANNOTATION_SCHEMA)
    assert df["line"].to_list() == [1, 2, 3]
    assert df.filter(pl.col("line") == 2)["left"].item() == 50.5
    out = tmp_path / "out" / "gt.txt"
    write_mot_txt(out, df)
    # sorted by frame then id; integers written without a decimal point
    assert out.read_text().splitlines() == GT_LINES
    again = read_mot_txt(out, sequence="S")
    cols = ["frame", "id", "left", "top", "width", "height", "conf", "class", "visibility"]
    assert again.select(cols).equals(df.sort(["frame", "id"]).select(cols))


def test_write_rounds_visibility_to_four_decimals(tmp_path: Path) -> None:
    df = read_mot_txt(_write(tmp_path, "1,1,1,1,1,1,1,1,0.86014\n"), sequence="S")
    write_mot_txt(tmp_path / "o.txt", df)
    assert (tmp_path / "o.txt").read_text() == "1,1,1,1,1,1,1,1,0.8601\n"


def test_blank_lines_keep_true_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n" + GT_LINES[0] + "\n\n" + GT_LINES[1] + "\n")
    assert read_mot_txt(path, sequence="S")["line"].to_list() == [2, 4]
    path = _write(tmp_path, GT_LINES[0] + "\n   \n" + GT_LINES[1] + "\n")  # whitespace-only: slow path
    assert read_mot_txt(path, sequence="S")["line"].to_list() == [1, 3]


@pytest.mark.parametrize(
    ("bad_line", "pattern"),
    [
        ("3,1,10,20,30", r"found 5 columns, expected at least 9"),
        ("3,1,10,20,abc,40,1,1,1", r"column 5 \(width\) is not a number: 'abc'"),
        ("3,1,10,20,30,40,1,1,nan", r"column 9 \(visibility\) is 'nan'; expected a finite number"),
        ("3,1,inf,20,30,40,1,1,1", r"column 3 \(left\) is 'inf'"),
        ("3,1,10,20,30,,1,1,1", r"column 6 \(height\) is not a number: ''"),
        ("3.5,1,10,20,30,40,1,1,1", r"column 'frame' must be an integer"),
    ],
)
def test_bad_gt_line_is_named(tmp_path: Path, bad_line: str, pattern: str) -> None:
    path = _write(tmp_path, "\n".join([*GT_LINES, "", bad_line, GT_LINES[0]]) + "\n")
    with pytest.raises(DataFormatError, match=pattern) as err:
        read_mot_txt(path, sequence="S")
    assert err.value.path == path
    assert err.value.line == 5
    assert str(err.value).startswith(f"{path}:5: ")


def test_empty_gt_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n\n")
    with pytest.raises(DataFormatError, match="no annotation rows") as err:
        read_mot_txt(path, sequence="S")
    assert err.value.path == path
    assert read_mot_txt(path, sequence="S", allow_empty=True).height == 0


def test_results_file_with_placeholders(tmp_path: Path) -> None:
    path = _write(tmp_path, "1,3,10,20,30,40,0.9,-1,-1,-1\n2,3,11,21,30,40,0.8,-1,-1,-1\n3,4,1,2,3,4\n")
    df = read_mot_txt(path, sequence="S", min_columns=6)
    assert df["conf"].to_list() == [0.9, 0.8, 1.0]
    assert df["class"].to_list() == [1, 1, 1]
    assert df["visibility"].to_list() == [1.0, 1.0, 1.0]


# --------------------------------------------------------------------------- sequences and datasets


def test_read_mot_sequence_and_dataset(tmp_path: Path) -> None:
    _mot_sequence(tmp_path / "train", "A", length=3, images=False)
    _mot_sequence(tmp_path / "test", "B")
    assert [p.name for p in find_mot_sequences(tmp_path)] == ["A", "B"]
    assert find_mot_sequences(tmp_path / "test" / "B") == [tmp_path / "test" / "B"]
    seqs, anns = read_mot_dataset(tmp_path, source="mot")
    assert seqs.schema == pl.Schema(SEQUENCE_SCHEMA)
    assert seqs["sequence"].to_list() == ["A", "B"]
    # frame_files lists the expected images whether or not they exist
    assert seqs["frame_files"][0].to_list() == ["img1/000001.jpg", "img1/000002.jpg", "img1/000003.jpg"]
    assert seqs["fps"].to_list() == [25.0, 25.0]
    assert anns.height == 2 * len(GT_LINES)
    one, _ = read_mot_sequence(tmp_path / "test" / "B")
    assert one["path"].item() == str(tmp_path / "test" / "B")


def test_dataset_without_sequences_and_without_seqinfo(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no MOTChallenge sequences found.*train/"):
        read_mot_dataset(tmp_path)
    seq = _mot_sequence(tmp_path, "A")
    (seq / "seqinfo.ini").unlink()
    with pytest.raises(DataFormatError, match="seqinfo.ini not found") as err:
        read_mot_dataset(tmp_path)
    assert err.value.path == seq / "seqinfo.ini"


def test_missing_gt_is_refused_unless_allowed(tmp_path: Path) -> None:
    seq = _mot_sequence(tmp_path, "A")
    (seq / "gt" / "gt.txt").unlink()
    with pytest.raises(DataFormatError, match="ground truth file not found"):
        read_mot_sequence(seq)
    _, anns = read_mot_sequence(seq, require_gt=False)
    assert anns.height == 0 and anns.schema == pl.Schema(ANNOTATION_SCHEMA)


@pytest.mark.skipif(not MOT17_09.is_dir(), reason="MOT17-09 ground truth not present")
def test_real_mot17_09() -> None:
    seqs, anns = read_mot_sequence(MOT17_09)
    assert seqs.row(0, named=True) | {"frame_files": None, "path": None} == {
        "sequence": "MOT17-09", "source": "mot", "path": None, "length": 525, "width": 1920, "height": 1080,
        "fps": 30.0, "im_dir": "img1", "im_ext": ".jpg", "frame_files": None,
    }
    assert len(seqs["frame_files"][0]) == 525
    assert anns.height == 10411
    assert anns["line"].to_list() == list(range(1, 10412))
    assert anns["frame"].min() == 1 and anns["frame"].max() == 525
    assert anns["id"].n_unique() == 64
    assert sorted(anns["class"].unique().to_list()) == [1, 7, 8, 9, 12]
    assert anns["class"].is_between(1, 12).all()
    counts = dict(anns.group_by("conf").len().iter_rows())
    assert counts == {1.0: 5325, 0.0: 5086}
    # the consider flag is set exactly on the pedestrians
    assert anns.filter(pl.col("conf") == 1)["class"].unique().to_list() == [1]
    assert anns["visibility"].is_between(0, 1).all()
    assert anns.row(0, named=True)["left"] == 260.0 and anns.row(0, named=True)["height"] == 262.0


# --------------------------------------------------------------------------- CVAT


def _cvat_zip(path: Path, *, images: int = 3, gt: str | None = None, labels: str = "car\nperson\n") -> Path:
    tmp = path.parent / "_imgs"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(images):
            img = tmp / f"frame_{i:06d}.png"
            _image(img, 40, 30)
            zf.write(img, f"img1/frame_{i:06d}.png")
        if gt is not None:
            zf.writestr("gt/gt.txt", gt)
            zf.writestr("gt/labels.txt", labels)
    return path


def test_cvat_zip_conversion(tmp_path: Path) -> None:
    gt = "1,1,1,2,3,4,1,2,0.5\n3,1,2,3,4,5,1,2,1\n2,2,5,5,5,5,0,1,1\n"
    zpath = _cvat_zip(tmp_path / "task_7.zip", gt=gt)
    out = tmp_path / "out"
    seqs, anns = read_cvat_mot_zip(zpath, out_dir=out, fps=12.5)
    seq_dir = out / "task_7"
    assert seqs.schema == pl.Schema(SEQUENCE_SCHEMA)
    row = seqs.row(0, named=True)
    assert (row["sequence"], row["source"], row["length"], row["width"], row["height"], row["fps"]) == (
        "task_7", "cvat", 3, 40, 30, 12.5)
    assert row["path"] == str(seq_dir) and row["im_ext"] == ".png"
    for rel in row["frame_files"]:
        assert (seq_dir / rel).is_file()
    assert read_seqinfo(seq_dir / "seqinfo.ini").length == 3
    assert (seq_dir / "gt" / "gt.txt").is_file()
    assert anns["class"].to_list() == [2, 2, 1]
    assert anns["visibility"].to_list() == [0.5, 1.0, 1.0]
    assert anns["file"][0] == f"{zpath}!/gt/gt.txt"
    assert read_cvat_labels(zpath) == {1: "car", 2: "person"}
    # the converted folder is a valid MOTChallenge sequence
    again, _ = read_mot_sequence(seq_dir, source="cvat")
    assert again.drop("path").equals(seqs.drop("path"))


def test_cvat_class_outside_labels(tmp_path: Path) -> None:
    zpath = _cvat_zip(tmp_path / "t.zip", gt="1,1,1,2,3,4,1,1,1\n1,2,1,2,3,4,1,3,1\n")
    with pytest.raises(DataFormatError, match=r"class id 3 is not a line of gt/labels.txt") as err:
        read_cvat_mot_zip(zpath, out_dir=tmp_path / "out")
    assert err.value.path == zpath and err.value.line == 2


def test_cvat_bad_gt_line_names_zip_and_line(tmp_path: Path) -> None:
    zpath = _cvat_zip(tmp_path / "t.zip", gt="1,1,1,2,3,4,1,1,1\n1,2,1,2\n")
    with pytest.raises(DataFormatError, match=r"gt/gt.txt: found 4 columns") as err:
        read_cvat_mot_zip(zpath, out_dir=tmp_path / "out")
    assert err.value.path == zpath and err.value.line == 2


def test_cvat_corrupt_zip(tmp_path: Path) -> None:
    zpath = tmp_path / "broken.zip"
    zpath.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(DataFormatError, match="not a zip archive") as err:
        read_cvat_mot_zip(zpath, out_dir=tmp_path / "out")
    assert err.value.path == zpath
    good = _cvat_zip(tmp_path / "good.zip", gt="1,1,1,2,3,4,1,1,1\n")
    data = good.read_bytes()
    (tmp_path / "trunc.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="not a zip archive") as err:
        read_cvat_mot_zip(tmp_path / "trunc.zip", out_dir=tmp_path / "out")
    assert err.value.path == tmp_path / "trunc.zip"


def test_cvat_zip_with_corrupt_member(tmp_path: Path) -> None:
    gt = b"1,1,1,2,3,4,1,1,1\n"
    zpath = _cvat_zip(tmp_path / "crc.zip", gt=gt.decode())  # stored, not deflated
    data = zpath.read_bytes()
    assert data.count(gt) == 1
    zpath.write_bytes(data.replace(gt, b"9" + gt[1:], 1))  # same size, wrong CRC
    with pytest.raises(DataFormatError, match="corrupt member 'gt/gt.txt'") as err:
        read_cvat_mot_zip(zpath, out_dir=tmp_path / "out")
    assert err.value.path == zpath


def test_cvat_zip_without_gt(tmp_path: Path) -> None:
    zpath = _cvat_zip(tmp_path / "nogt.zip", gt=None)
    with pytest.raises(DataFormatError, match=r"no gt/gt.txt in the archive; expected a CVAT") as err:
        read_cvat_mot_zip(zpath, out_dir=tmp_path / "out")
    assert err.value.path == zpath


def test_cvat_zip_without_images(tmp_path: Path) -> None:
    zpath = _cvat_zip(tmp_path / "noimg.zip", images=0, gt="1,1,1,2,3,4,1,1,1\n")
    with pytest.raises(DataFormatError, match="Save images"):
        read_cvat_mot_zip(zpath, out_dir=tmp_path / "out")


# --------------------------------------------------------------------------- VisDrone


def _visdrone(root: Path) -> Path:
    for i in range(1, 4):
        _image(root / "sequences" / "uav01" / f"{i:07d}.jpg", 48, 36)
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "uav01.txt").write_text(
        "1,1,10,10,5,5,1,1,0,0\n2,1,11,10,5,5,1,1,0,1\n3,2,1,1,9,9,0,0,0,2\n"
    )
    return root


def test_visdrone_conversion(tmp_path: Path) -> None:
    root = _visdrone(tmp_path / "vd")
    out = tmp_path / "out"
    seqs, anns = read_visdrone(root, out_dir=out, fps=10)
    row = seqs.row(0, named=True)
    assert (row["sequence"], row["source"], row["length"], row["width"], row["height"], row["fps"]) == (
        "uav01", "visdrone", 3, 48, 36, 10.0)
    seq_dir = out / "uav01"
    assert [p.name for p in sorted((seq_dir / "img1").iterdir())] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert (seq_dir / "img1" / "000002.jpg").read_bytes() == (root / "sequences/uav01/0000002.jpg").read_bytes()
    assert anns["conf"].to_list() == [1.0, 1.0, 0.0]
    assert anns["class"].to_list() == [1, 1, 0]
    assert anns["visibility"].to_list() == [1.0, 0.5, 0.25]
    assert anns["file"][0] == str(root / "annotations" / "uav01.txt")
    again, gt = read_mot_sequence(seq_dir, source="visdrone")
    assert again.drop("path").equals(seqs.drop("path"))
    assert gt["visibility"].to_list() == [1.0, 0.5, 0.25]


def test_visdrone_bad_occlusion_and_missing_annotations(tmp_path: Path) -> None:
    root = _visdrone(tmp_path / "vd")
    ann = root / "annotations" / "uav01.txt"
    ann.write_text("1,1,10,10,5,5,1,1,0,0\n2,1,11,10,5,5,1,1,0,3\n")
    with pytest.raises(DataFormatError, match="occlusion") as err:
        read_visdrone(root, out_dir=tmp_path / "out")
    assert err.value.path == ann and err.value.line == 2
    ann.unlink()
    with pytest.raises(DataFormatError, match="annotation file for sequence uav01 not found"):
        read_visdrone(root, out_dir=tmp_path / "out")
    with pytest.raises(DataFormatError, match="VisDrone-MOT layout"):
        read_visdrone(tmp_path / "nowhere", out_dir=tmp_path / "out")


# --------------------------------------------------------------------------- ingest


def test_ingest_two_sources(tmp_path: Path) -> None:
    synthetic = tmp_path / "synthetic"
    _mot_sequence(synthetic, "synth-01")
    zpath = _cvat_zip(tmp_path / "cvat.zip", gt="1,1,1,2,3,4,1,2,0.5\n")
    out = tmp_path / "data" / "sequences"
    (out / "stale").mkdir(parents=True)  # a previous run's leftovers must go
    ann_path, seq_path = tmp_path / "data" / "annotations.parquet", tmp_path / "data" / "sequences.parquet"
    seqs, anns = ingest(
        ["synthetic", {"format": "cvat", "path": str(zpath), "name": "clip"}],
        synthetic_dir=synthetic,
        out_dir=out,
        annotations_path=ann_path,
        sequences_path=seq_path,
        default_fps=15.0,
    )
    on_disk_seqs, on_disk_anns = pl.read_parquet(seq_path), pl.read_parquet(ann_path)
    assert on_disk_seqs.schema == pl.Schema(SEQUENCE_SCHEMA)
    assert on_disk_anns.schema == pl.Schema(ANNOTATION_SCHEMA)
    assert on_disk_seqs.equals(seqs) and on_disk_anns.equals(anns)
    assert seqs["sequence"].to_list() == ["synth-01", "clip"]
    assert seqs["source"].to_list() == ["synthetic", "cvat"]
    assert seqs["fps"].to_list() == [25.0, 15.0]
    assert seqs["path"].to_list() == [str(out / "synth-01"), str(out / "clip")]
    assert sorted(p.name for p in out.iterdir()) == ["clip", "synth-01"]
    assert anns.group_by("sequence").len().sort("sequence").rows() == [("clip", 1), ("synth-01", 3)]
    for row in seqs.iter_rows(named=True):
        back, gt = read_mot_sequence(row["path"], source=row["source"])
        assert back["length"].item() == row["length"]
        assert gt.height == anns.filter(pl.col("sequence") == row["sequence"]).height
        assert all((Path(row["path"]) / f).is_file() for f in row["frame_files"])
    assert (out / "clip" / "gt" / "labels.txt").read_text() == "car\nperson\n"
    # file/line keep pointing at the original source
    assert anns.filter(pl.col("sequence") == "synth-01")["file"][0] == str(synthetic / "synth-01" / "gt" / "gt.txt")
    assert not list(tmp_path.glob("data/.*"))  # no staging or tmp files left behind


def test_ingest_refuses_name_collision(tmp_path: Path) -> None:
    synthetic = tmp_path / "synthetic"
    _mot_sequence(synthetic, "clip")
    zpath = _cvat_zip(tmp_path / "clip.zip", gt="1,1,1,2,3,4,1,2,0.5\n")
    ann_path = tmp_path / "annotations.parquet"
    with pytest.raises(DataFormatError, match=r"'clip' comes from both synthetic source .* and cvat source") as err:
        ingest(
            ["synthetic", {"format": "cvat", "path": zpath}],
            synthetic_dir=synthetic,
            out_dir=tmp_path / "out",
            annotations_path=ann_path,
            sequences_path=tmp_path / "sequences.parquet",
        )
    assert err.value.path == zpath
    assert not ann_path.exists()


def test_ingest_refuses_bad_config(tmp_path: Path) -> None:
    kwargs = dict(synthetic_dir=tmp_path / "s", out_dir=tmp_path / "out",
                  annotations_path=tmp_path / "a.parquet", sequences_path=tmp_path / "s.parquet")
    with pytest.raises(ConfigError, match="no sources"):
        ingest([], **kwargs)
    with pytest.raises(ConfigError, match="format 'kitti' is not supported"):
        ingest([{"format": "kitti", "path": "x"}], **kwargs)
    with pytest.raises(ConfigError, match="inside the ingest output"):
        ingest([{"format": "mot", "path": tmp_path / "out" / "mine"}], **kwargs)


def test_write_mot_sequence_skips_missing_images(tmp_path: Path) -> None:
    info = SeqInfo(name="S", im_dir="img1", fps=30.0, length=2, width=32, height=24, im_ext=".jpg")
    _image(tmp_path / "a.jpg")
    df = read_mot_txt(_write(tmp_path, GT_LINES[0] + "\n"), sequence="S")
    write_mot_sequence(tmp_path / "S", info, df, images=[tmp_path / "a.jpg", tmp_path / "missing.jpg"])
    assert (tmp_path / "S" / "img1" / "000001.jpg").is_file()
    assert not (tmp_path / "S" / "img1" / "000002.jpg").exists()
    assert read_seqinfo(tmp_path / "S" / "seqinfo.ini") == info
