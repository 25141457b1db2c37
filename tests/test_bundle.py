"""The engine bundle (write, verify, load) and the TensorRT plan builder.

The models are tiny and real: a YOLOv8n built from its YAML (random weights, nothing
downloaded, head re-initialised so its scores spread over (0, 1) and it finds boxes) exported by
Ultralytics at 160 x 160, and a small CNN exported with ``torch.onnx`` as the ReID, plus its
INT8 QDQ version from ONNX Runtime's static quantizer.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from helpers import export_tiny_reid, scene, tiny_reid_net, tiny_yolo

from motops.export import bundle as bundle_mod
from motops.export.bundle import tracker_config, write_bundle
from motops.export.tensorrt import build_plans_or_skip
from motops.runtime import tensorrt as trt_mod
from motops.runtime.backends import BackendUnavailable, ModelFormatError, load_detector
from motops.runtime.bundle import (
    MANIFEST_FILE,
    TRACKER_FILE,
    BundleError,
    load_bundle,
    manifest_digest,
    sha256_file,
    verify_bundle,
)
from motops.runtime.tensorrt import (
    PlanRunner,
    build_plan,
    check_plan_target,
    cuda_devices,
    find_plan,
    onnx_is_qdq,
    parse_plan_name,
    plan_name,
    tensorrt_status,
)

IMGSZ = 160
CONF = 0.15
# What the runtime sees (cuda-python), not torch: TensorRT runs without torch.
CUDA_DEVICES, NO_CUDA_REASON = cuda_devices()
HAS_CUDA = bool(CUDA_DEVICES)


@dataclass(frozen=True)
class Models:
    detector: Path
    reid: Path
    reid_int8: Path


def _tiny_detector(folder: Path) -> Path:
    from ultralytics import YOLO

    assert os.environ.get("YOLO_OFFLINE") == "1"
    pt = tiny_yolo(folder, IMGSZ)
    return Path(YOLO(str(pt)).export(format="onnx", imgsz=IMGSZ, opset=17, simplify=False, verbose=False))


def _tiny_reid(folder: Path) -> tuple[Path, Path]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    path = export_tiny_reid(tiny_reid_net(), folder / "reid_fp32.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self._it = iter([{"crops": rng.normal(size=(2, 3, 128, 64)).astype(np.float32)} for _ in range(2)])

        def get_next(self) -> dict | None:
            return next(self._it, None)

    int8 = folder / "reid_qdq.onnx"
    quantize_static(str(path), str(int8), Reader(), quant_format=QuantFormat.QDQ)
    return path, int8


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    folder = tmp_path_factory.mktemp("models")
    reid, reid_int8 = _tiny_reid(folder)
    return Models(_tiny_detector(folder), reid, reid_int8)


TRACKER = {"tracker": "botsort", "conf": 0.1, "classes": None, "track_high_thresh": 0.4, "detect_every": 2}
CPU_BACKENDS = {"onnxruntime": {"built": True, "reason": None}}


def _write(models: Models, out: Path, *, version: str = "1", int8: bool = False, **overrides: object) -> Path:
    files = {"detector": models.detector, "reid": models.reid}
    if int8:
        files["reid_int8"] = models.reid_int8
    kwargs: dict = {
        "files": files,
        "tracker": TRACKER,
        "model_version": version,
        "input_shapes": {"detector": [1, 3, IMGSZ, IMGSZ], "reid": ["batch", 3, 128, 64]},
        "class_names": {i: f"class{i}" for i in range(80)},
        "metrics": {"idf1": np.float64(0.71), "fps": {"onnxruntime": 12.5}},
        "backends": CPU_BACKENDS,
        "extra": {"git_commit": "abc123"},
    }
    kwargs.update(overrides)
    return write_bundle(out, **kwargs)


@pytest.fixture
def bundle(models: Models, tmp_path: Path) -> Path:
    return _write(models, tmp_path / "engine")


# --------------------------------------------------------------------------- write + verify


def test_written_bundle_verifies_and_describes_itself(bundle: Path, models: Models) -> None:
    report = verify_bundle(bundle)
    assert report.ok, report.problems
    assert sorted(p.name for p in bundle.iterdir()) == ["detector.onnx", MANIFEST_FILE, "reid.onnx", TRACKER_FILE]
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert set(report.checked) == set(manifest["files"]) == {"detector.onnx", "reid.onnx", TRACKER_FILE}
    entry = manifest["files"]["reid.onnx"]
    assert entry == {"role": "reid", "sha256": sha256_file(models.reid), "size": models.reid.stat().st_size}
    assert manifest["files"][TRACKER_FILE]["role"] == "tracker"
    assert manifest["model_version"] == "1" and manifest["schema_version"] == 1
    assert manifest["created_at"].endswith("Z")
    assert manifest["class_names"]["0"] == "class0"
    assert manifest["metrics"] == {"idf1": 0.71, "fps": {"onnxruntime": 12.5}}
    libs = manifest["libraries"]
    assert {"python", "motops", "torch", "onnx", "onnxruntime", "ultralytics", "tensorrt"} <= set(libs)
    assert libs["torch"].startswith(torch.__version__.split("+")[0])
    assert manifest["input_shapes"]["reid"] == ["batch", 3, 128, 64]
    # tracker.yaml is complete: given values kept, defaults filled in.
    cfg = yaml.safe_load((bundle / TRACKER_FILE).read_text())
    assert cfg["tracker"] == "botsort" and cfg["track_high_thresh"] == 0.4 and cfg["detect_every"] == 2
    assert cfg["classes"] is None and cfg["track_buffer"] == 30 and cfg["flow"] == "dis"
    # The digest ignores formatting and a stored signature, and changes with any value.
    digest = manifest_digest(bundle)
    assert digest == manifest_digest(manifest) == manifest_digest({**manifest, "signature": "x"})
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert manifest_digest({**manifest, "model_version": "2"}) != digest


def test_one_altered_byte_fails_naming_the_file(bundle: Path) -> None:
    path = bundle / "reid.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_bundle(bundle)
    assert not report.ok and report.bad_files == ["reid.onnx"]
    assert "sha256 differs" in report.problems[0].message
    with pytest.raises(BundleError, match=r"reid\.onnx: sha256 differs: expected [0-9a-f]{12}…, found") as info:
        report.raise_if_bad()
    assert info.value.files == ["reid.onnx"]
    # load_bundle verifies first.
    with pytest.raises(BundleError, match="reid.onnx"):
        load_bundle(bundle, backend="onnxruntime")


def test_truncated_and_deleted_files_fail_naming_them(bundle: Path) -> None:
    (bundle / "detector.onnx").write_bytes((bundle / "detector.onnx").read_bytes()[:-10])
    (bundle / "reid.onnx").unlink()
    report = verify_bundle(bundle)
    assert report.bad_files == ["detector.onnx", "reid.onnx"]
    assert "size differs" in report.problems[0].message
    assert report.problems[1].message.startswith("missing")


def test_unlisted_model_file_fails(bundle: Path) -> None:
    (bundle / "signature.sig").write_bytes(b"detached signatures may sit next to the manifest")
    assert verify_bundle(bundle).ok
    (bundle / "plans").mkdir()
    (bundle / "plans" / "evil.onnx").write_bytes(b"not listed")
    report = verify_bundle(bundle)
    assert report.bad_files == ["plans/evil.onnx"]
    assert "unlisted model file" in report.problems[0].message


def test_a_linked_or_oversized_sig_file_is_refused(bundle: Path, tmp_path: Path) -> None:
    """The ``*.sig`` loophole: a link (to /etc/shadow, say) or a 20 MB "signature" no longer passes."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret\n")
    (bundle / "manifest.sig").symlink_to(secret)
    (bundle / "huge.sig").write_bytes(b"A" * (20 << 20))
    (bundle / "ok.sig").write_bytes(b"c2lnbmF0dXJl\n")
    report = verify_bundle(bundle)
    assert report.bad_files == ["huge.sig", "manifest.sig"]
    assert "is 20971520 bytes; expected at most 4096" in report.problems[0].message
    assert "a link or not a plain file" in report.problems[1].message


def test_manifest_without_sha256_fails(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    del manifest["files"]["reid.onnx"]["sha256"]
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    report = verify_bundle(bundle)
    assert report.bad_files == ["reid.onnx"] and "sha256" in report.problems[0].message
    # A missing top-level key is named too.
    del manifest["metrics"]
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert any("metrics" in p.message for p in verify_bundle(bundle).problems)
    (bundle / MANIFEST_FILE).write_text("{not json")
    assert verify_bundle(bundle).bad_files == [MANIFEST_FILE]


def test_write_bundle_refuses_bad_input(models: Models, tmp_path: Path) -> None:
    out = tmp_path / "engine"
    with pytest.raises(ValueError, match="did you mean 'track_buffer'"):
        _write(models, out, tracker={"trak_buffer": 3})
    with pytest.raises(ValueError, match="not stored in a bundle"):
        _write(models, out, tracker={"backend": "tensorrt"})
    with pytest.raises(ValueError, match="needs a reason"):
        _write(models, out, backends={"tensorrt": {"built": False, "reason": None}})
    with pytest.raises(ValueError, match="unknown role 'reid_int9'.*did you mean 'reid_int8'"):
        _write(models, out, files={"detector": models.detector, "reid_int9": models.reid})
    with pytest.raises(ValueError, match="needs a 'reid' model"):
        _write(models, out, files={"detector": models.detector})
    with pytest.raises(ValueError, match="NaN"):
        _write(models, out, metrics={"idf1": float("nan")})
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # A folder that is not a bundle is never replaced.
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="refusing to replace"):
        _write(models, out)
    assert (out / "notes.txt").read_text() == "mine"


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_write_bundle_replaces_atomically(models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _write(models, tmp_path / "engine", version="1", int8=True)
    before = (out / MANIFEST_FILE).read_bytes()

    # A missing source: refused before anything is written.
    with pytest.raises(FileNotFoundError, match="gone.onnx"):
        _write(models, out, version="2", files={"detector": models.detector, "reid": tmp_path / "gone.onnx"})
    assert (out / MANIFEST_FILE).read_bytes() == before and verify_bundle(out).ok
    assert _siblings(out) == []

    # A copy failing midway (disk full): the half-written staging folder goes, the old bundle stays.
    real_copy = bundle_mod._copy_hashed
    calls = []

    def failing_copy(src: Path, dst: Path) -> tuple[str, int]:
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_copy(src, dst)

    monkeypatch.setattr(bundle_mod, "_copy_hashed", failing_copy)
    with pytest.raises(OSError, match="No space left"):
        _write(models, out, version="2")
    monkeypatch.undo()
    assert len(calls) == 2
    assert (out / MANIFEST_FILE).read_bytes() == before and verify_bundle(out).ok
    assert _siblings(out) == []

    # A successful rewrite replaces the whole folder: files of the old bundle do not linger.
    _write(models, out, version="2", int8=False)
    manifest = verify_bundle(out).raise_if_bad().manifest
    assert manifest["model_version"] == "2"
    assert not (out / "reid.int8.onnx").exists() and "reid.int8.onnx" not in manifest["files"]
    assert _siblings(out) == []


def test_sources_inside_the_bundle_and_plans(models: Models, tmp_path: Path) -> None:
    """An export that writes its ONNX into the bundle folder first, plus a (fake) plan for some GPU."""
    out = tmp_path / "engine"
    out.mkdir()
    det = out / "detector.onnx"
    det.write_bytes(models.detector.read_bytes())
    plan = tmp_path / plan_name("detector", "fp16", compute_capability=(8, 7), tensorrt_version="10.3.0")
    plan.write_bytes(b"a plan for a Jetson Orin")
    _write(models, out, files={"detector": det, "reid": models.reid, "plan_detector_fp16": plan})
    manifest = verify_bundle(out).raise_if_bad().manifest
    assert manifest["files"]["plans/detector.fp16.sm87.trt10.3.0.plan"]["role"] == "plan_detector_fp16"
    assert find_plan(out, "detector", "fp16", compute_capability=(8, 7), tensorrt_version="10.3.0") == (
        out / "plans" / plan.name
    )
    assert find_plan(out, "detector", "fp16", compute_capability=(8, 9), tensorrt_version="10.3.0") is None
    assert find_plan(out, "detector", "int8", compute_capability=(8, 7), tensorrt_version="10.3.0") is None
    if not HAS_CUDA:
        # No GPU here: the plan cannot run, the ONNX does, and the engine says why.
        engine = load_bundle(out, backend="auto")
        # the ONNX on ONNX Runtime, or on OpenVINO where it is installed and timed faster at load
        assert engine.detector.backend in ("onnxruntime", "openvino") and engine.detector.path.name == "detector.onnx"
        assert "CUDA not available" in engine.chosen["trt_skipped"]


# --------------------------------------------------------------------------- load


def test_load_bundle_onnxruntime_runs_a_frame(bundle: Path, tmp_path: Path) -> None:
    engine = load_bundle(bundle, backend="onnxruntime", intra_op_num_threads=1)
    assert engine.tracker == "botsort" and engine.detect_every == 2 and engine.flow == "dis"
    assert engine.imgsz == (IMGSZ, IMGSZ) and engine.tracker_params["track_high_thresh"] == 0.4
    assert engine.detector.conf == 0.1 and engine.detector.classes is None
    assert engine.class_names[3] == "class3"
    frame = scene(1)
    dets = engine.detector(frame)
    assert dets.dtype == np.float32 and dets.ndim == 2 and dets.shape[1] == 6 and len(dets) >= 3
    emb = engine.reid(frame, dets[:, :4])
    assert emb.shape == (len(dets), 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # The engine plugs into the tracking runner as is.
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"{i + 1:06d}.jpg"), scene(1))
    summary = engine.track(frames, out_dir=tmp_path / "out", write_video=False, progress=False)
    assert summary["frames"] == 4 and summary["detector_calls"] == 2 and summary["tracker"] == "botsort"


def test_int8_reid_preferred_on_cpu(models: Models, tmp_path: Path) -> None:
    assert onnx_is_qdq(models.reid_int8) and not onnx_is_qdq(models.reid)
    out = _write(models, tmp_path / "engine", int8=True)
    cpu = load_bundle(out, backend="onnxruntime", device="cpu", intra_op_num_threads=1)
    assert Path(cpu.reid.source).name == "reid.int8.onnx" and "INT8" in cpu.chosen["reid"]
    assert Path(cpu.detector.path).name == "detector.onnx"  # no INT8 detector in this bundle
    fp32 = load_bundle(out, backend="onnxruntime", device="cpu", int8=False, intra_op_num_threads=1)
    assert Path(fp32.reid.source).name == "reid.onnx"
    forced = load_bundle(out, backend="onnxruntime", device="cpu", int8=True, intra_op_num_threads=1)
    assert Path(forced.reid.source).name == "reid.int8.onnx" and Path(forced.detector.path).name == "detector.onnx"
    with pytest.raises(BackendUnavailable, match="no INT8 model"):
        load_bundle(_write(models, tmp_path / "plain"), backend="onnxruntime", device="cpu", int8=True)
    with pytest.raises(ValueError, match="holds no torch weights"):
        load_bundle(out, backend="torch")


def test_bytetrack_engine_has_no_reid(models: Models, tmp_path: Path) -> None:
    out = _write(models, tmp_path / "engine", tracker={"tracker": "bytetrack"})
    engine = load_bundle(out, backend="onnxruntime")
    assert engine.tracker == "bytetrack" and engine.reid is None and "no appearance" in engine.chosen["reid"]


def test_tracker_config_from_params() -> None:
    from motops.config import TrackParams

    cfg = tracker_config(TrackParams(track_low_thresh=0.2, backend="tensorrt"))
    assert cfg["conf"] == 0.2 and cfg["classes"] == [0] and "backend" not in cfg
    assert cfg["tracker"] == "botsort" and cfg["gmc_method"] == "sparseOptFlow"


# --------------------------------------------------------------------------- TensorRT without CUDA


def test_plan_names_round_trip() -> None:
    name = plan_name("detector", "int8", compute_capability=(10, 0), tensorrt_version="10.3.0.26")
    assert name == "detector.int8.sm100.trt10.3.0.26.plan"
    info = parse_plan_name(name)
    assert info is not None and info.compute_capability == (10, 0) and info.tensorrt == "10.3.0.26"
    assert parse_plan_name("detector.fp16.sm89.trt8.6.1.plan").compute_capability == (8, 9)
    assert parse_plan_name("detector.onnx") is None
    with pytest.raises(ValueError, match="no dots"):
        plan_name("det.v2", "fp16", compute_capability=(8, 9), tensorrt_version="10.0")
    with pytest.raises(ValueError, match="precision"):
        plan_name("detector", "fp8", compute_capability=(8, 9), tensorrt_version="10.0")


def test_tensorrt_status_names_missing_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_mod, "cuda_devices", lambda: ([], "no CUDA device (cudaGetDeviceCount is 0)"))
    ok, reason = tensorrt_status()
    assert ok is False and "CUDA not available on this machine" in reason
    entry, plans = build_plans_or_skip({"detector": Path("detector.onnx")}, "plans")
    assert entry == {"built": False, "reason": reason} and plans == []
    entry, _ = build_plans_or_skip({"detector": Path("detector.onnx")}, "plans", fp16=False, int8=False)
    assert entry["built"] is False and "disabled" in entry["reason"]


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA; the no-CUDA path is checked where there is none")
def test_no_cuda_here_is_recorded_as_a_skip(models: Models, tmp_path: Path) -> None:
    ok, reason = tensorrt_status()
    assert ok is False and "CUDA" in reason
    entry, plans = build_plans_or_skip({"detector": models.detector, "reid_int8": models.reid_int8}, tmp_path / "p")
    assert entry["built"] is False and plans == [] and not (tmp_path / "p").exists()
    out = _write(models, tmp_path / "engine", backends={**CPU_BACKENDS, "tensorrt": entry})
    recorded = json.loads((out / MANIFEST_FILE).read_text())["backends"]["tensorrt"]
    assert recorded["built"] is False and "CUDA not available on this machine" in recorded["reason"]
    with pytest.raises(BackendUnavailable, match="CUDA not available"):
        build_plan(models.detector, tmp_path / "p", precision="fp16")
    with pytest.raises(BackendUnavailable, match="backend='tensorrt' requested, but TensorRT: CUDA not available"):
        load_bundle(out, backend="tensorrt")


def test_int8_without_qdq_or_calibration_is_refused(models: Models, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs calibration batches"):
        build_plan(models.reid, tmp_path, precision="int8")


# --------------------------------------------------------------------------- TensorRT on a GPU


def _match_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a`` with its best box of the same class in ``b``."""
    from motops.runtime.matching import iou_matrix

    iou = iou_matrix(a[:, :4], b[:, :4]) * (a[:, None, 5] == b[None, :, 5])
    return iou.max(axis=1) if len(b) else np.zeros(len(a))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason=f"needs CUDA: {NO_CUDA_REASON}")
def test_tensorrt_fp16_plan_matches_onnxruntime(models: Models, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="needs the TensorRT Python package")
    ok, reason = tensorrt_status()
    assert ok, reason
    plans = tmp_path / "plans"
    timing = tmp_path / "timing.cache"
    plan = build_plan(models.detector, plans, name="detector", precision="fp16", workspace_gb=1, timing_cache=timing)
    major, minor = CUDA_DEVICES[0][1]
    assert re.fullmatch(rf"detector\.fp16\.sm{major}{minor}\.trt\d+(\.\d+)*\.plan", plan.name)
    assert timing.stat().st_size > 0
    assert find_plan(plans.parent, "detector", "fp16") == plan

    frame = scene(1)
    ort = load_detector(models.detector, backend="onnxruntime", conf=CONF, classes=None, device="cpu")(frame)
    trt = load_detector(plan, backend="tensorrt", conf=CONF, classes=None)(frame)
    assert len(ort) >= 3 and abs(len(trt) - len(ort)) <= max(2, len(ort) // 10)
    ious = _match_ious(ort, trt)
    assert np.mean(ious >= 0.9) >= 0.9, ious

    # The bundle path: plans built into the bundle, picked by load_bundle for this GPU.
    entry, built = build_plans_or_skip({"detector": models.detector}, tmp_path / "built", int8=False)
    assert entry["built"] is True and [p.name for p in built] == [plan.name]
    files = {"detector": models.detector, "reid": models.reid, "plan_detector_fp16": plan}
    out = _write(models, tmp_path / "engine", files=files, backends={**CPU_BACKENDS, "tensorrt": entry})
    engine = load_bundle(out, backend="tensorrt")
    assert engine.detector.backend == "tensorrt" and engine.detector(frame).shape[1] == 6


def test_cli_bundle_verify_and_track_with_engine(bundle: Path, tmp_path: Path) -> None:
    """`motops bundle verify` names an altered file; `motops track --engine` runs the bundle on footage."""
    from typer.testing import CliRunner

    from motops.cli import app
    from motops.config import SyntheticParams
    from motops.data.synthetic import synthesize

    runner = CliRunner()
    ok = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert ok.exit_code == 0, ok.output

    seq = synthesize(tmp_path / "s", SyntheticParams(sequences=1, frames=6, width=320, height=192), progress=False)[0]
    out = tmp_path / "run"
    tracked = runner.invoke(app, ["track", str(seq), "--engine", str(bundle), "--out", str(out), "--no-video",
                                  "-p", str(tmp_path / "missing-params.yaml")])
    assert tracked.exit_code == 2 and "missing-params.yaml" in tracked.output  # a bad params path is named
    tracked = runner.invoke(app, ["track", str(seq), "--engine", str(bundle), "--out", str(out), "--no-video"])
    assert tracked.exit_code == 0, tracked.output
    assert (out / "summary.json").is_file() and (out / "tracks.txt").is_file()

    target = bundle / "reid.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    bad = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert bad.exit_code == 1
    assert "reid.onnx" in bad.output
    refused = runner.invoke(app, ["track", str(seq), "--engine", str(bundle), "--out", str(tmp_path / "r2")])
    assert refused.exit_code == 2 and "reid.onnx" in refused.output


# --------------------------------------------------------------------------- TensorRT without torch


def test_a_plan_named_for_another_gpu_or_tensorrt_is_refused_in_one_line(tmp_path: Path) -> None:
    plan = tmp_path / plan_name("detector", "fp16", compute_capability=(8, 9), tensorrt_version="10.3.0")
    plan.write_bytes(b"not read")
    check_plan_target(plan, (8, 9), "10.3.0")  # its own target: accepted
    for target, version in (((9, 0), "10.3.0"), ((8, 9), "10.8.0.43")):
        with pytest.raises(ModelFormatError) as err:
            check_plan_target(plan, target, version)
        message = str(err.value)
        assert "\n" not in message and plan.name in message and "sm89 and TensorRT 10.3.0" in message
        assert f"sm{target[0]}{target[1]} with TensorRT {version}" in message and "not run" in message
    check_plan_target(tmp_path / "yolov8n.engine", (9, 0), "10.8.0")  # not our naming: left to TensorRT


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA; the no-CUDA errors are checked where there is none")
def test_without_cuda_the_plan_runner_and_the_cli_name_what_is_missing(bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from motops.cli import app

    with pytest.raises(BackendUnavailable, match="CUDA not available on this machine"):
        PlanRunner(tmp_path / "detector.plan", b"\0" * 64)
    frames = tmp_path / "clip"
    frames.mkdir()
    cv2.imwrite(str(frames / "000001.jpg"), scene(0))
    out = CliRunner().invoke(app, ["track", str(frames), "--engine", str(bundle), "--backend", "tensorrt",
                                   "--out", str(tmp_path / "run"), "--no-video"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --backend tensorrt: ") and "CUDA" in lines[0], lines
    assert not (tmp_path / "run" / "tracks.txt").exists()
    plan = tmp_path / "det.plan"
    plan.write_bytes(b"\0" * 64)
    out = CliRunner().invoke(app, ["track", str(frames), "--detector", str(plan), "--backend", "tensorrt",
                                   "--out", str(tmp_path / "run2"), "--no-video"])
    assert out.exit_code == 2 and out.output.startswith("error: --backend tensorrt: ") and "det.plan" in out.output


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason=f"needs CUDA: {NO_CUDA_REASON}")
def test_fp16_and_numpy_calibrated_int8_plans_run_without_torch(models: Models, tmp_path: Path) -> None:
    """Both precisions built and run through tensorrt + cuda-python; boxes agree with ONNX Runtime."""
    pytest.importorskip("tensorrt", reason="needs the TensorRT Python package")
    from motops.runtime.backends import letterbox, to_blob

    frames = [scene(i) for i in range(8)]
    batches = [to_blob(letterbox(f, (IMGSZ, IMGSZ))[0]) for f in frames]
    plans = tmp_path / "plans"
    fp16 = build_plan(models.detector, plans, name="detector", precision="fp16", workspace_gb=1)
    int8 = build_plan(models.detector, plans, name="detector", precision="int8", workspace_gb=1,
                      calibration=iter(batches))
    assert (plans / "detector.calib.cache").stat().st_size > 0  # a rebuild needs no data
    ort = load_detector(models.detector, backend="onnxruntime", conf=CONF, classes=None, device="cpu")
    for plan, min_match in ((fp16, 0.9), (int8, 0.7)):
        det = load_detector(plan, backend="tensorrt", conf=CONF, classes=None)
        assert det.backend == "tensorrt" and det.device == "cuda:0"
        for frame in frames[:3]:
            a, b = ort(frame), det(frame)
            assert len(a) >= 3 and len(b) >= 1
            assert np.mean(_match_ious(a, b) >= 0.8) >= min_match, (plan.name, _match_ious(a, b))
    runner = PlanRunner(fp16, fp16.read_bytes())
    with pytest.raises(ValueError, match="the plan takes"):
        runner(np.zeros((1, 3, IMGSZ + 32, IMGSZ), np.float32))
    runner.close()
    # The same bytes under a name for another GPU: refused before TensorRT reads them.
    info = parse_plan_name(fp16)
    other = tmp_path / plan_name("detector", "fp16", compute_capability=(info.compute_capability[0] + 1, 0),
                                 tensorrt_version=info.tensorrt)
    other.write_bytes(fp16.read_bytes())
    with pytest.raises(ModelFormatError, match="this plan was built for"):
        load_detector(other, backend="tensorrt")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason=f"needs CUDA: {NO_CUDA_REASON}")
def test_the_bundle_tracks_on_its_tensorrt_plan(models: Models, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="needs the TensorRT Python package")
    plan = build_plan(models.detector, tmp_path / "plans", name="detector", precision="fp16", workspace_gb=1)
    files = {"detector": models.detector, "reid": models.reid, "plan_detector_fp16": plan}
    out = _write(models, tmp_path / "engine", files=files,
                 backends={**CPU_BACKENDS, "tensorrt": {"built": True, "reason": None}})
    engine = load_bundle(out)  # auto: the plan made for this GPU
    assert engine.detector.backend == "tensorrt" and "plans/" in engine.chosen["detector"]
    frames = tmp_path / "clip"
    frames.mkdir()
    for i in range(6):
        cv2.imwrite(str(frames / f"{i + 1:06d}.jpg"), scene(i))
    summary = engine.track(frames, out_dir=tmp_path / "run", write_video=False, progress=False)
    assert summary["frames"] == 6 and (tmp_path / "run" / "tracks.txt").stat().st_size > 0

