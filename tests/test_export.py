"""ONNX export parity (detector and ReID), broken exports caught, calibrated INT8 QDQ ReID.

Models are built here, nothing is downloaded: a YOLOv8n from its YAML with the head
re-initialised (random weights give saturated, near-constant scores; see tests/test_backends.py)
and an untrained ReIDNet at 64 x 32 whose batch-norm statistics are set from real crops so its
activations have realistic ranges for calibration.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import polars as pl
import pytest
import torch
from helpers import scene, tiny_yolo
from onnx import numpy_helper

from motops.config import SyntheticParams
from motops.data.crops import build_reid_crops, load_crops, read_reid_index
from motops.data.mot import read_mot_dataset
from motops.data.synthetic import synthesize
from motops.export import (
    ParityError,
    check_parity,
    detector_parity,
    export_detector,
    export_reid,
    int8_report_reid,
    quantize_reid,
    read_onnx_metadata,
    reid_calibration_batches,
    reid_parity,
)
from motops.export.onnx_export import ort_embed
from motops.models.reid import ReIDNet, reid_meta, save_reid
from motops.runtime.backends import ort_session

IMGSZ = 160
CROP_H, CROP_W = 64, 32


def _perturb(src: Path, dst: Path, node_part: str, scale: float) -> Path:
    """Copy of an ONNX file with the weights of the first Conv whose node name contains ``node_part`` scaled."""
    model = onnx.load(str(src))
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and node_part in n.name)
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    arr = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((arr * scale).astype(np.float32), init.name))
    onnx.save(model, str(dst))
    return dst


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def detector_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``det.pt`` (YOLOv8n, head re-initialised) and its export through :func:`export_detector`."""

    assert os.environ.get("YOLO_OFFLINE") == "1"
    folder = tmp_path_factory.mktemp("det")
    pt = tiny_yolo(folder, IMGSZ)
    out = export_detector(
        pt, folder / "export" / "detector.onnx", imgsz=IMGSZ, opset=17, dynamic_batch=True, simplify=True
    )
    assert sorted(p.name for p in folder.iterdir()) == ["det.pt", "export"], "the exporter wrote beside the .pt"
    return pt, out


@pytest.fixture(scope="module")
def crop_index(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """Crop index (absolute paths) of two tiny synthetic sequences at 64 x 32."""
    root = tmp_path_factory.mktemp("footage")
    synthesize(
        root,
        SyntheticParams(sequences=2, frames=40, width=320, height=192, people=(10,), fps=(10.0,)),
        progress=False,
    )
    sequences, annotations = read_mot_dataset(root)
    out = tmp_path_factory.mktemp("crops")
    build_reid_crops(
        sequences,
        annotations,
        out,
        height=CROP_H,
        width=CROP_W,
        clip_min=4,
        clip_max=10,
        heldout_fraction=0.4,
        min_visibility=0.3,
        seed=0,
        progress=False,
    )
    return read_reid_index(out)


@pytest.fixture(scope="module")
def reid_files(crop_index: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained ReIDNet checkpoint (BN statistics from the train crops) and its dynamic-batch export."""
    folder = tmp_path_factory.mktemp("reid")
    torch.manual_seed(0)
    net = ReIDNet(embedding_dim=64, num_classes=5)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            torch.nn.init.ones_(module.weight)  # undo the zero-init of the residual branches
            module.momentum = 1.0
    train = crop_index.filter(pl.col("split") == "train")["path"].to_list()
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(load_crops(train[:128])).float())
    net.eval()
    pt = save_reid(folder / "reid.pt", net, reid_meta(net, height=CROP_H, width=CROP_W))
    return pt, export_reid(pt, folder / "reid.onnx", opset=17, dynamic_batch=True, simplify=True)


# --------------------------------------------------------------------------- ReID export


def test_reid_export_parity_dynamic_batch_and_metadata(
    reid_files: tuple[Path, Path], crop_index: pl.DataFrame, tmp_path: Path
) -> None:
    pt, onnx_path = reid_files
    crops = load_crops(crop_index["path"].to_list()[:40])
    report = check_parity(reid_parity(pt, onnx_path, crops, cos_min=0.999))
    assert report["passed"] and report["min_cosine"] >= 0.999 and report["crops"] == 40

    session = ort_session(onnx_path, device="cpu", intra_op_num_threads=1)
    assert session.get_inputs()[0].shape[1:] == [3, CROP_H, CROP_W]
    assert not isinstance(session.get_inputs()[0].shape[0], int), "batch axis should be symbolic"
    x = crops.astype(np.float32)
    one = session.run(None, {"images": x[:1]})[0]
    seven = session.run(None, {"images": x[:7]})[0]
    assert one.shape == (1, 64) and seven.shape == (7, 64)
    np.testing.assert_allclose(seven[0], one[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(seven, axis=1), 1.0, atol=1e-5)

    meta = read_onnx_metadata(onnx_path)
    assert meta["input_size"] == [CROP_H, CROP_W] and meta["channel_order"] == "BGR"
    assert meta["embedding_dim"] == 64 and meta["normalized_inside"] is True and len(meta["mean"]) == 3

    fixed = export_reid(pt, tmp_path / "fixed.onnx", opset=17, dynamic_batch=False, simplify=False)
    assert ort_session(fixed, device="cpu").get_inputs()[0].shape == [1, 3, CROP_H, CROP_W]
    # The tracker's sessions do not busy-wait between runs (their idle workers would take the
    # cores the decoding/flow thread runs on); a benchmark may ask for ONNX Runtime's spinning.
    spin = "session.intra_op.allow_spinning"
    assert ort_session(fixed, device="cpu").get_session_options().get_session_config_entry(spin) == "0"
    assert ort_session(fixed, device="cpu", spin=True).get_session_options().get_session_config_entry(spin) == "1"
    assert reid_parity(pt, fixed, crops[:5])["passed"]


def test_broken_reid_export_fails_parity_naming_file_and_crop(
    reid_files: tuple[Path, Path], crop_index: pl.DataFrame, tmp_path: Path
) -> None:
    pt, onnx_path = reid_files
    broken = _perturb(onnx_path, tmp_path / "broken_reid.onnx", "stages.2", 1.3)
    report = reid_parity(pt, broken, load_crops(crop_index["path"].to_list()[:16]))
    assert not report["passed"] and report["min_cosine"] < 0.999
    with pytest.raises(ParityError, match=r"broken_reid\.onnx.*crop \d+: cosine"):
        check_parity(report)


# --------------------------------------------------------------------------- detector export


def test_detector_export_parity(detector_files: tuple[Path, Path]) -> None:
    pt, onnx_path = detector_files
    session = ort_session(onnx_path, device="cpu")
    shape = session.get_inputs()[0].shape
    assert shape[1:] == [3, IMGSZ, IMGSZ] and not isinstance(shape[0], int)
    out = session.run(None, {"images": np.zeros((2, 3, IMGSZ, IMGSZ), np.float32)})[0]
    assert out.shape == (2, 84, 525)
    onnx.checker.check_model(str(onnx_path))
    assert "names" in read_onnx_metadata(onnx_path), "Ultralytics' metadata should survive the export"

    report = check_parity(detector_parity(pt, onnx_path, [scene(0), scene(1)], imgsz=IMGSZ))
    assert report["boxes_reference"] >= 10, "the test model should give a few dozen boxes"
    assert report["matched_fraction"] >= 0.95
    assert report["min_iou"] >= 0.95 and report["max_score_diff"] <= 0.01
    assert report["max_raw_score_diff"] <= 0.01


def test_broken_detector_export_fails_parity(detector_files: tuple[Path, Path], tmp_path: Path) -> None:
    pt, onnx_path = detector_files
    broken = _perturb(onnx_path, tmp_path / "broken_det.onnx", "model.22/cv3.0/cv3.0.2", 1.5)
    report = detector_parity(pt, broken, [scene(0), scene(1)], imgsz=IMGSZ)
    assert not report["passed"] and report["max_raw_score_diff"] > 0.01
    with pytest.raises(ParityError, match=r"broken_det\.onnx.*det\.pt.*frame [01]"):
        check_parity(report)


# --------------------------------------------------------------------------- INT8


def test_int8_reid_keeps_ranking_and_is_qdq(
    reid_files: tuple[Path, Path], crop_index: pl.DataFrame, tmp_path: Path
) -> None:
    _, fp32 = reid_files
    train = crop_index.filter(pl.col("split") == "train")["path"].to_list()
    int8 = quantize_reid(fp32, tmp_path / "reid_int8.onnx", train, method="minmax", samples=64, seed=0)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert read_onnx_metadata(int8)["quantization"]["format"] == "QDQ"

    query = crop_index.filter(pl.col("split") == "query")
    gallery = crop_index.filter(pl.col("split") == "gallery")
    q = load_crops(query["path"].to_list()).astype(np.float32)
    g = load_crops(gallery["path"].to_list()).astype(np.float32)
    s32, s8 = ort_session(fp32, device="cpu"), ort_session(int8, device="cpu")
    q32, g32, q8, g8 = ort_embed(s32, q), ort_embed(s32, g), ort_embed(s8, q), ort_embed(s8, g)
    cos = np.sum(np.concatenate([q32, g32]) * np.concatenate([q8, g8]), axis=1)
    assert cos.mean() >= 0.95, f"INT8 embeddings drift from FP32: mean cosine {cos.mean():.3f}"
    same_top1 = np.mean(np.argmax(q32 @ g32.T, axis=1) == np.argmax(q8 @ g8.T, axis=1))
    assert same_top1 >= 0.8, f"INT8 changed the top-1 gallery match of {1 - same_top1:.0%} of the queries"

    report = int8_report_reid(fp32, int8, query, gallery, threads=1, rounds=1)
    assert set(report["fp32"]) >= {"rank1", "map", "crops_per_s"} and report["speedup"] > 0
    assert abs(report["mean_cosine"] - cos.mean()) < 1e-4
    assert report["rank1_drop"] <= 0.2


def test_int8_from_a_relative_path_writes_nothing_beside_the_project(
    reid_files: tuple[Path, Path], crop_index: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export stage passes paths relative to the project; the quantizer's scratch files stay in its temp folder."""
    import shutil

    _, fp32 = reid_files
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    shutil.copy(fp32, project / "models" / "reid.onnx")
    monkeypatch.chdir(project)
    train = crop_index.filter(pl.col("split") == "train")["path"].to_list()
    int8 = quantize_reid(Path("models/reid.onnx"), Path("models/reid.int8.onnx"), train, method="minmax", samples=16,
                         seed=0)
    assert (project / int8).is_file()
    assert sorted(p.name for p in project.iterdir()) == ["models"]
    assert sorted(p.name for p in (project / "models").iterdir()) == ["reid.int8.onnx", "reid.onnx"]


def test_calibration_is_deterministic_for_a_seed(
    reid_files: tuple[Path, Path], crop_index: pl.DataFrame, tmp_path: Path
) -> None:
    _, fp32 = reid_files
    train = crop_index.filter(pl.col("split") == "train")["path"].to_list()
    a = reid_calibration_batches(train, (CROP_H, CROP_W), samples=40, seed=3)
    b = reid_calibration_batches(train, (CROP_H, CROP_W), samples=40, seed=3)
    c = reid_calibration_batches(train, (CROP_H, CROP_W), samples=40, seed=4)
    assert sum(len(x) for x in a) == 40 and len(a[0]) == 16
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))

    def scales(path: Path) -> dict[str, np.ndarray]:
        model = onnx.load(str(path))
        return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if "scale" in i.name}

    m1 = quantize_reid(fp32, tmp_path / "a.onnx", train, method="minmax", samples=32, seed=1)
    m2 = quantize_reid(fp32, tmp_path / "b.onnx", train, method="minmax", samples=32, seed=1)
    m3 = quantize_reid(fp32, tmp_path / "c.onnx", train, method="minmax", samples=32, seed=2)
    s1, s2, s3 = scales(m1), scales(m2), scales(m3)
    assert s1 and s1.keys() == s2.keys()
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert any(not np.array_equal(s1[k], s3[k]) for k in s1 if k in s3), "another seed should calibrate differently"


def test_runtime_feeds_an_exported_reidnet_bgr_pixels(tmp_path):
    """The runtime backend reads the export's metadata: same embeddings as the PyTorch net on the same crops."""
    import torch

    from motops.export.onnx_export import export_reid
    from motops.models.reid import ReIDNet, reid_meta, save_reid
    from motops.runtime.backends import load_reid as runtime_reid

    torch.manual_seed(0)
    net = ReIDNet(embedding_dim=64).eval()
    ckpt = tmp_path / "reid.pt"
    save_reid(ckpt, net, reid_meta(net, height=128, width=64))
    onnx_path = export_reid(ckpt, tmp_path / "reid.onnx", opset=17, dynamic_batch=True, simplify=False)
    frame = np.random.default_rng(0).integers(0, 256, (192, 320, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 50, 120], [100, 30, 140, 150]], dtype=np.float64)

    ort = runtime_reid(onnx_path)
    torch_side = runtime_reid(net)
    assert ort.raw_bgr and torch_side.raw_bgr
    crops = torch_side.preprocess(frame, boxes)
    with torch.no_grad():
        expected = net(torch.from_numpy(crops)).numpy()
    np.testing.assert_allclose(ort(frame, boxes), expected, atol=1e-4)


@pytest.mark.parametrize(("size", "expected"), [((360, 640), (256, 416)), ((576, 768), (320, 416)),
                                                ((1080, 1080), (416, 416))])
def test_export_shape_auto_follows_the_footage_aspect(tmp_path: Path, size: tuple[int, int],
                                                       expected: tuple[int, int]) -> None:
    """16:9 footage exports at 256x416, 4:3 at 320x416: a fixed 16:9 shape would shrink 4:3 people to 256x341."""
    from motops.export.run import export_shape

    val = tmp_path / "yolo" / "images" / "val"
    val.mkdir(parents=True)
    cv2.imwrite(str(val / "000001.jpg"), np.zeros((*size, 3), np.uint8))
    assert export_shape("auto", 416, tmp_path / "yolo") == expected
    assert export_shape((128, 256), 416, tmp_path / "yolo") == (128, 256)
    assert export_shape(None, 416, tmp_path / "yolo") == (416, 416)
