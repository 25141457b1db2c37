"""Detector and ReID backends: torch / ONNX Runtime parity, errors, TensorRT availability.

The detector is a YOLOv8n built from its YAML (random weights, nothing downloaded). Random
weights give near-constant class scores, so the head's last layers are re-initialised and the
batch-norm statistics set from one image: the boxes then vary with the image and their
scores spread over (0, 1), which is what a parity test needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import export_tiny_reid, scene, tiny_reid_net, tiny_yolo

from motops.runtime.backends import (
    BackendUnavailable,
    ModelFormatError,
    OrtDetector,
    TorchDetector,
    letterbox,
    load_detector,
    load_reid,
    to_blob,
)
from motops.runtime.matching import iou_matrix, linear_assignment
from motops.runtime.tensorrt import cuda_devices

IMGSZ = 160
CONF = 0.15


def _match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches of two detection sets (IoU and score; a class change forbids a match) and their IoUs.

    Boxes clipped to the frame edges are often identical, so the score breaks the tie.
    """
    iou = iou_matrix(a[:, :4], b[:, :4])
    cost = 1.0 - iou + np.abs(a[:, None, 4] - b[None, :, 4]) + 10.0 * (a[:, None, 5] != b[None, :, 5])
    matches, _, _ = linear_assignment(cost, thresh=0.06)
    return matches, iou[matches[:, 0], matches[:, 1]]


@pytest.fixture(scope="module")
def yolo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``det.pt`` and its ONNX export (opset 17, 160 x 160), in a temporary folder."""
    from ultralytics import YOLO

    assert os.environ.get("YOLO_OFFLINE") == "1"
    folder = tmp_path_factory.mktemp("yolo")
    pt = tiny_yolo(folder, IMGSZ)
    onnx_path = YOLO(str(pt)).export(format="onnx", imgsz=IMGSZ, opset=17, simplify=False, verbose=False)
    assert Path(onnx_path) == folder / "det.onnx"
    return pt, Path(onnx_path)


def test_detector_torch_and_onnxruntime_agree(yolo_files: tuple[Path, Path]) -> None:
    pt, onnx_path = yolo_files
    torch_det = load_detector(pt, imgsz=IMGSZ, conf=CONF, classes=None, device="cpu")
    ort_det = load_detector(onnx_path, conf=CONF, classes=None, intra_op_num_threads=1)
    assert isinstance(torch_det, TorchDetector) and isinstance(ort_det, OrtDetector)
    assert ort_det.imgsz == (IMGSZ, IMGSZ)
    frame = scene(0)

    # Raw head: the same letterboxed blob through the fused torch net and through ONNX Runtime.
    img, _ = letterbox(frame, (IMGSZ, IMGSZ))
    with torch.no_grad():
        raw_torch = torch_det._model.model.float().eval()(torch.from_numpy(to_blob(img)))[0].numpy()
    raw_ort = ort_det.raw(frame)
    assert raw_ort.shape == raw_torch.shape == (1, 84, 525)
    # float32 rounding only: box rows are in input pixels (up to ~300), score rows in [0, 1].
    assert np.abs(raw_ort[:, :4] - raw_torch[:, :4]).max() < 0.05
    assert np.abs(raw_ort[:, 4:] - raw_torch[:, 4:]).max() < 1e-4

    a, b = torch_det(frame), ort_det(frame)
    assert a.dtype == b.dtype == np.float32 and a.shape[1] == b.shape[1] == 6
    assert len(a) >= 10, "the test model should give a few dozen boxes"
    assert abs(len(a) - len(b)) <= max(1, len(a) // 50)
    matches, ious = _match(a, b)
    assert len(matches) >= 0.95 * len(a)
    assert ious.min() >= 0.95
    assert np.abs(a[matches[:, 0], 4] - b[matches[:, 1], 4]).max() <= 0.01
    # Boxes are in frame pixels, inside the frame.
    h, w = frame.shape[:2]
    assert (b[:, [0, 2]] >= 0).all() and (b[:, [0, 2]] <= w).all() and (b[:, [1, 3]] <= h).all()


def test_detector_class_filter_and_empty_frame(yolo_files: tuple[Path, Path]) -> None:
    _, onnx_path = yolo_files
    everything = load_detector(onnx_path, conf=CONF, classes=None)(scene(0))
    cls = int(everything[0, 5])
    only = load_detector(onnx_path, conf=CONF, classes=(cls,))(scene(0))
    assert len(only) and (only[:, 5] == cls).all()
    none = load_detector(onnx_path, conf=1.0, classes=None)(scene(0))
    assert none.shape == (0, 6) and none.dtype == np.float32


def test_detect_each_iou_runs_the_network_once_and_matches_one_detector_per_iou(
        yolo_files: tuple[Path, Path]) -> None:
    """The evaluate sweep's NMS-IoU arms: one forward pass, the same boxes as a detector set to each IoU."""
    pt, onnx_path = yolo_files
    for det in (load_detector(onnx_path, conf=CONF, classes=None, intra_op_num_threads=1),
                load_detector(pt, imgsz=IMGSZ, conf=CONF, classes=None, device="cpu")):
        frame = scene(0)
        calls = []
        if det.backend == "onnxruntime":
            forward = det._forward
            det._forward = lambda blob, f=forward, seen=calls: seen.append(1) or f(blob)
        each = det.detect_each_iou(frame, [0.3, 0.5, 0.7])
        assert list(each) == [0.3, 0.5, 0.7]
        if det.backend == "onnxruntime":
            assert len(calls) == 1
        for iou, dets in each.items():
            np.testing.assert_array_equal(dets, det.with_iou(iou)(frame))
        assert det.with_iou(det.iou) is det and det.with_iou(0.3).iou == 0.3 and det.iou == 0.7
        assert len(each[0.3]) <= len(each[0.7])  # a stricter NMS keeps no more boxes


@pytest.fixture(scope="module")
def reid_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    folder = tmp_path_factory.mktemp("reid")
    net = tiny_reid_net()
    path = export_tiny_reid(net, folder / "reid.onnx")
    return net, path


BOXES = np.array([[10, 20, 60, 150], [100, 5, 140, 90], [-5, -5, 30, 40], [300, 150, 330, 200]], dtype=np.float32)


def test_reid_torch_and_onnxruntime_agree(reid_files: tuple[torch.nn.Module, Path]) -> None:
    net, path = reid_files
    frame = scene(2)
    ort_reid = load_reid(path, intra_op_num_threads=1)
    torch_reid = load_reid(net, device="cpu")
    assert ort_reid.backend == "onnxruntime" and torch_reid.backend == "torch"
    assert ort_reid.input_size == torch_reid.input_size == (128, 64)
    a, b = torch_reid(frame, BOXES), ort_reid(frame, BOXES)
    assert a.shape == b.shape == (4, 32) and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() >= 0.999
    # Crops of different boxes give different embeddings.
    assert (b[0] @ b[1]) < 0.9999


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_reid_empty_boxes_and_torchscript(reid_files: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    net, path = reid_files
    frame = scene(2)
    ort_reid = load_reid(path)
    empty = ort_reid(frame, np.zeros((0, 4), np.float32))
    assert empty.shape == (0, 32) and empty.dtype == np.float32
    assert ort_reid(frame, []).shape == (0, 32)
    ts = tmp_path / "reid.ts"
    torch.jit.trace(net, torch.zeros(1, 3, 128, 64)).save(str(ts))
    scripted = load_reid(ts, device="cpu")
    assert (scripted(frame, BOXES) * ort_reid(frame, BOXES)).sum(axis=1).min() >= 0.999
    # A state dict needs its network: refused without one, loaded with the module= hook.
    sd = tmp_path / "reid_state.pt"
    torch.save(net.state_dict(), sd)
    with pytest.raises(ModelFormatError, match=r"reid_state\.pt.*module="):
        load_reid(sd)
    fresh = type(net)()
    loaded = load_reid(sd, module=fresh, device="cpu")
    assert (loaded(frame, BOXES) * ort_reid(frame, BOXES)).sum(axis=1).min() >= 0.999


def test_reid_int8_qdq_runs(reid_files: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    _, path = reid_files
    fp32 = load_reid(path)
    frame = scene(3)
    crops = fp32.preprocess(frame, BOXES)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"crops": crops[i : i + 1]} for i in range(len(crops))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    q = tmp_path / "reid.int8.onnx"
    quantize_static(str(path), str(q), Reader(), quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8)
    int8 = load_reid(q)
    assert int8.dim == 32
    assert (int8(frame, BOXES) * fp32(frame, BOXES)).sum(axis=1).min() >= 0.9


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        load_detector(tmp_path / "nope.onnx")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_reid(tmp_path / "nope.pt")
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    with pytest.raises(ModelFormatError, match="junk.onnx.*not a valid ONNX model"):
        load_detector(junk)
    with pytest.raises(ModelFormatError, match="junk.onnx"):
        load_reid(junk)
    bad_pt = tmp_path / "junk.pt"
    bad_pt.write_text("not a model")
    with pytest.raises(ModelFormatError, match="junk.pt"):
        load_detector(bad_pt, device="cpu")
    with pytest.raises(ModelFormatError, match="junk.pt"):
        load_reid(bad_pt)
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"\0")
    with pytest.raises(ModelFormatError, match="model.bin.*suffix"):
        load_detector(weird)
    with pytest.raises(ValueError, match="did you mean 'onnxruntime'"):
        load_detector(junk, backend="onnxruntim")
    with pytest.raises(ModelFormatError, match="needs a .onnx file"):
        load_detector(bad_pt, backend="onnxruntime")


def test_reid_refuses_a_detector_model(yolo_files: tuple[Path, Path]) -> None:
    _, onnx_path = yolo_files
    with pytest.raises((ModelFormatError, ValueError), match="det.onnx"):
        load_reid(onnx_path)


@pytest.mark.skipif(bool(cuda_devices()[0]), reason="checks the error raised where there is no CUDA")
def test_tensorrt_unavailable_without_cuda(tmp_path: Path) -> None:
    plan = tmp_path / "det.engine"
    plan.write_bytes(b"\0" * 64)
    with pytest.raises(BackendUnavailable, match="CUDA"):
        load_detector(plan)
    with pytest.raises(BackendUnavailable, match="det.engine.*CUDA"):
        load_detector(plan, backend="tensorrt")


def test_auto_falls_back_from_engine_to_onnx_without_tensorrt(yolo_files: tuple[Path, Path], tmp_path: Path) -> None:
    from motops.runtime.backends import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is available here, so auto keeps the engine")
    _, onnx_path = yolo_files
    engine = onnx_path.with_suffix(".engine")
    engine.write_bytes(b"\0" * 64)
    try:
        det = load_detector(engine)
    finally:
        engine.unlink()
    assert det.backend == "onnxruntime" and det.path == onnx_path


@pytest.mark.gpu
def test_tensorrt_matches_onnxruntime(yolo_files: tuple[Path, Path], tmp_path: Path) -> None:
    devices, why = cuda_devices()
    if not devices:
        pytest.skip(f"needs CUDA: {why}")
    trt = pytest.importorskip("tensorrt", reason="TensorRT Python package not installed")
    _, onnx_path = yolo_files
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    assert parser.parse(onnx_path.read_bytes()), parser.get_error(0)
    config = builder.create_builder_config()
    plan = builder.build_serialized_network(network, config)
    engine_path = tmp_path / "det.engine"
    engine_path.write_bytes(bytes(plan))
    trt_det = load_detector(engine_path, conf=CONF, classes=None)
    ort_det = load_detector(onnx_path, conf=CONF, classes=None)
    assert trt_det.backend == "tensorrt"
    frame = scene(0)
    assert np.abs(trt_det.raw(frame) - ort_det.raw(frame)).max() < 1e-2
    a, b = trt_det(frame), ort_det(frame)
    matches, ious = _match(a, b)
    assert len(matches) >= 0.95 * max(len(a), len(b)) and ious.min() >= 0.95


def test_real_backends_drive_the_runner(
    yolo_files: tuple[Path, Path], reid_files: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    """The ONNX detector and ReID plug into ``track_source`` and are timed and named in the summary."""
    from motops.config import SyntheticParams
    from motops.data.synthetic import synthesize
    from motops.runtime.runner import track_source

    params = SyntheticParams(sequences=1, frames=6, width=256, height=160, fps=(10.0,), people=(3,))
    (seq,) = synthesize(tmp_path / "synth", params, progress=False)
    detector = load_detector(yolo_files[1], conf=CONF, classes=None, intra_op_num_threads=1)
    reid = load_reid(reid_files[1], intra_op_num_threads=1)
    summary = track_source(
        seq, detector=detector, reid=reid, tracker="botsort",
        tracker_params={"gmc_method": "none", "track_low_thresh": 0.1},
        out_dir=tmp_path / "out", write_video=False, progress=False,
    )
    assert summary["frames"] == 6 and summary["detector_calls"] == 6
    assert summary["backends"] == {"detector": "onnxruntime", "reid": "onnxruntime"}
    assert summary["reid_calls"] > 0 and summary["latency_ms"]["reid"]["p50"] > 0
    assert summary["latency_ms"]["detect"]["p50"] > 0


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_det: int) -> list[int]:
    """Textbook greedy NMS, one pair at a time: the specification ``nms`` must meet."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # sorted() is stable
    keep: list[int] = []
    for i in order:
        if len(keep) == max_det:
            break
        suppressed = False
        for k in keep:
            x1, y1 = max(boxes[i, 0], boxes[k, 0]), max(boxes[i, 1], boxes[k, 1])
            x2, y2 = min(boxes[i, 2], boxes[k, 2]), min(boxes[i, 3], boxes[k, 3])
            inter = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
            area = lambda j: max(boxes[j, 2] - boxes[j, 0], 0.0) * max(boxes[j, 3] - boxes[j, 1], 0.0)  # noqa: E731
            union = area(i) + area(k) - inter
            if union > 0 and inter / union > iou:
                suppressed = True
                break
        if not suppressed:
            keep.append(i)
    return keep


def test_nms_matches_greedy_reference_with_ties_and_max_det() -> None:
    from motops.runtime.backends import nms

    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(0, 120))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0, 60, (n, 2))], axis=1).astype(np.float32)
        scores = rng.uniform(0.05, 1, n).astype(np.float32)
        if trial % 2:
            scores = np.round(scores, 1)  # many equal scores: the input order must break the tie
        iou, max_det = float(rng.uniform(0.3, 0.8)), int(rng.integers(1, 80))
        got = nms(boxes, scores, iou, max_det)
        assert got.tolist() == _reference_nms(boxes.astype(np.float64), scores, iou, max_det), trial
    # two identical boxes: the first (higher score, or earlier on a tie) survives
    same = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    assert nms(same, np.array([0.5, 0.5], np.float32), 0.5).tolist() == [0]
    assert nms(same, np.array([0.4, 0.5], np.float32), 0.5).tolist() == [1]
