"""Engines for the hardware (issue #14 item 4): the per-device rule, INT8 fallback, the OpenVINO backend.

The bundles are tiny and real (:func:`helpers.write_tiny_bundle`'s YOLOv8n at 160 x 160 and
ReID); the INT8 detector of these bundles is a byte copy of the FP32 one under the INT8 role,
since what is tested is which file runs and why, not INT8 accuracy (that is measured by
``bench/track_speed.py --int8`` and recorded in the manifest by the export stage).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import scene, write_tiny_bundle
from typer.testing import CliRunner

from motops.cli import app
from motops.errors import MotopsError
from motops.runtime import hardware
from motops.runtime.backends import BackendUnavailable
from motops.runtime.bundle import BundleError, load_bundle
from motops.runtime.select import describe_variant

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
AMD_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni vaes
"""
XEON_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ARM = """processor\t: 0
BogoMIPS\t: 48.00
Features\t: fp asimd evtstrm aes crc32 asimddp
"""


def _hw(cpuinfo: str, openvino: str | None = None) -> hardware.Hardware:
    model, flags = hardware.parse_cpuinfo(cpuinfo)
    return hardware.Hardware(model, 2, flags, gpu=None, openvino=openvino)


def _manifest(drop: float | None, required: bool = False) -> dict:
    int8: dict = {"file": "detector.int8.onnx", "map50": 0.8 - (drop or 0.0)}
    if drop is not None:
        int8["map50_drop"] = drop
    if required:
        int8["required"] = True
    return {"metrics": {"variants": {"detector": {"fp32": {"map50": 0.8, "map50_drop": 0.0}, "int8": int8}}}}


# --------------------------------------------------------------------------- the rule


def test_cpuinfo_flags_are_read() -> None:
    model, flags = hardware.parse_cpuinfo(XEON_AMX)
    assert model.startswith("Intel(R) Xeon") and {"avx512_vnni", "amx_int8", "amx_bf16"} <= flags
    amd = _hw(AMD_AVX2)
    assert amd.int8_flags == [] and "avx2" in amd.flags
    assert amd.isa() == "AMD EPYC 7B13, 2 cores: avx2 fma (no avx512_vnni/avx_vnni/amx_int8)"
    assert _hw(XEON_AMX).int8_flags == ["avx512_vnni", "amx_int8"] and _hw(XEON_AMX).bf16_flags
    assert "asimddp" in _hw(ARM).flags and _hw(ARM).int8_flags == []  # Arm dot product: not measured, FP32
    assert hardware.probe("").flags == frozenset()  # no /proc/cpuinfo: no flags, still a Hardware


@pytest.mark.parametrize(
    ("cpuinfo", "drop", "kwargs", "variant", "reason"),
    [
        (AMD_AVX2, 0.004, {}, "fp32", "CPU has no avx512_vnni/avx_vnni/amx_int8 (has avx2 fma)"),
        (XEON_AMX, 0.004, {}, "int8",
         "CPU has avx512_vnni and the INT8 detector costs 0.4 mAP50 points <= 1.0"),
        (XEON_AMX, 0.02, {}, "fp32", "costs 2.0 mAP50 points > 1.0"),
        (XEON_AMX, 0.02, {"max_map50_drop": 0.03}, "int8", "costs 2.0 mAP50 points <= 3.0"),
        (XEON_AMX, None, {}, "fp32", "records no mAP50 cost"),
        (XEON_AMX, 0.004, {"has_int8": False}, "fp32", "the bundle has no INT8 detector"),
        (XEON_AMX, 0.004, {"on_gpu": True}, "fp32", "on a GPU"),
        (XEON_AMX, 0.004, {"int8": False}, "fp32", "int8=False"),
        (AMD_AVX2, 0.004, {"int8": True}, "int8", "int8=True was asked for"),
        (AMD_AVX2, 0.05, {"required": True}, "int8", "the manifest requires the INT8 detector"),
    ],
)
def test_precision_rule(cpuinfo: str, drop: float | None, kwargs: dict, variant: str, reason: str) -> None:
    kwargs = {"has_int8": True, **kwargs}
    manifest = _manifest(drop, required=kwargs.pop("required", False))
    choice = hardware.choose_precision(_hw(cpuinfo), manifest, **kwargs)
    assert choice.variant == variant and reason in choice.reason, choice.line()


def test_int8_is_refused_where_its_recorded_tracking_cost_is_too_high() -> None:
    """A small mAP50 cost can hide a large IDF1 cost (measured: -0.7 mAP50, -2.4 IDF1 points)."""
    manifest = _manifest(0.007)
    manifest["metrics"]["variants"]["detector"]["int8"]["idf1_drop"] = 0.024
    choice = hardware.choose_precision(_hw(XEON_AMX), manifest, has_int8=True)
    assert choice.variant == "fp32" and "but 2.4 IDF1 points on val > 1.0" in choice.reason, choice.line()
    manifest["metrics"]["variants"]["detector"]["int8"]["idf1_drop"] = 0.004
    assert hardware.choose_precision(_hw(XEON_AMX), manifest, has_int8=True).variant == "int8"


def test_malformed_variants_count_as_unmeasured() -> None:
    for metrics in ({}, {"variants": []}, {"variants": {"detector": {"int8": {"map50_drop": "0.1"}}}}):
        assert hardware.recorded_drop({"metrics": metrics}, "int8") is None
    choice = hardware.choose_precision(_hw(XEON_AMX), {"metrics": {"variants": "x"}}, has_int8=True)
    assert choice.variant == "fp32"


# --------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hw")
    write_tiny_bundle(folder / "plain", "1", models_dir=folder / "tiny-models")
    return folder / "tiny-models"


def _int8_bundle(models: Path, out: Path, drop: float | None = 0.004, required: bool = False) -> Path:
    from motops.export.bundle import write_bundle

    return write_bundle(
        out,
        files={"detector": models / "det.onnx", "detector_int8": models / "det.onnx", "reid": models / "reid.onnx"},
        tracker={"tracker": "botsort", "conf": 0.1, "classes": None, "with_reid": True},
        model_version="1",
        input_shapes={"detector": [1, 3, 160, 160], "reid": ["batch", 3, 128, 64]},
        class_names={i: f"class{i}" for i in range(80)},
        metrics=_manifest(drop, required)["metrics"],
        backends={"onnxruntime": {"built": True, "reason": None}},
    )


@pytest.fixture()
def fake_cpu(monkeypatch: pytest.MonkeyPatch):
    def use(cpuinfo: str) -> None:
        monkeypatch.setattr(hardware, "probe", lambda cpuinfo_=None: _hw(cpuinfo))

    return use


def test_int8_detector_on_vnni_fp32_on_avx2(models: Path, tmp_path: Path, fake_cpu) -> None:
    bundle = _int8_bundle(models, tmp_path / "b")
    fake_cpu(XEON_AMX)
    engine = load_bundle(bundle, backend="onnxruntime", intra_op_num_threads=1)
    assert engine.detector.path.name == "detector.int8.onnx"
    assert engine.chosen["variant"].startswith(
        "int8: CPU has avx512_vnni and the INT8 detector costs 0.4 mAP50 points <= 1.0; detector.int8.onnx")
    assert engine.detector(scene(1)).shape[1] == 6
    fake_cpu(AMD_AVX2)
    engine = load_bundle(bundle, backend="onnxruntime", intra_op_num_threads=1)
    assert engine.detector.path.name == "detector.onnx" and engine.chosen["variant"].startswith("fp32: CPU has no")
    # A stricter setting turns INT8 off on the VNNI CPU too.
    fake_cpu(XEON_AMX)
    engine = load_bundle(bundle, backend="onnxruntime", max_map50_drop=0.001)
    assert engine.detector.path.name == "detector.onnx" and "> 0.1" in engine.chosen["variant"]


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_broken_int8_detector_falls_back_to_fp32(models: Path, tmp_path: Path, fake_cpu, damage: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    bundle = _int8_bundle(models, tmp_path / "b")
    target = bundle / "detector.int8.onnx"
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(b"not an onnx model" * 10)
    fake_cpu(XEON_AMX)
    with caplog.at_level("WARNING"):
        engine = load_bundle(bundle, backend="onnxruntime", intra_op_num_threads=1)
    assert engine.detector.path.name == "detector.onnx"
    assert engine.chosen["variant"].startswith("fp32: detector.int8.onnx: ")
    assert "fell back to FP32" in engine.chosen["variant"]
    assert any("detector.int8.onnx" in r.getMessage() for r in caplog.records)
    # int8=True demands it: refused, naming the file.
    with pytest.raises(BundleError, match="detector.int8.onnx"):
        load_bundle(bundle, backend="onnxruntime", int8=True)
    # Without verification a corrupt file is found when it is loaded: the same fallback, or refusal.
    if damage == "corrupt":
        engine = load_bundle(bundle, backend="onnxruntime", verify=False)
        assert engine.detector.path.name == "detector.onnx" and "does not load" in engine.chosen["variant"]
        with pytest.raises(MotopsError, match=r"detector\.int8\.onnx") as err:
            load_bundle(bundle, backend="onnxruntime", verify=False, int8=True)
        assert "\n" not in str(err.value)
    # A broken FP32 model is never skipped.
    (bundle / "detector.onnx").write_bytes(b"broken")
    with pytest.raises(BundleError, match="detector.onnx"):
        load_bundle(bundle, backend="onnxruntime")


def test_manifest_requiring_int8_refuses_without_it(models: Path, tmp_path: Path, fake_cpu) -> None:
    bundle = _int8_bundle(models, tmp_path / "b", drop=0.05, required=True)
    fake_cpu(AMD_AVX2)
    engine = load_bundle(bundle, backend="onnxruntime", intra_op_num_threads=1)  # required: INT8 even on AVX2
    assert engine.detector.path.name == "detector.int8.onnx" and "requires" in engine.chosen["variant"]
    (bundle / "detector.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"detector\.int8\.onnx: missing"):
        load_bundle(bundle, backend="onnxruntime")


# --------------------------------------------------------------------------- OpenVINO


def test_backend_openvino_without_openvino_is_one_line(models: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", "1", models_dir=models)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install 'motops\[openvino\]'") as err:
        load_bundle(bundle, backend="openvino")
    assert "\n" not in str(err.value)
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "000001.jpg"), scene(1))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["track", str(frames), "--engine", str(bundle), "--backend", "openvino",
                                      "--out", str(tmp_path / "out"), "--no-video"])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "motops[openvino]" in message and len(message.splitlines()) == 1
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'motops[openvino]')")
def test_openvino_matches_onnxruntime(models: Path, tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", "1", models_dir=models)
    ort = load_bundle(bundle, backend="onnxruntime", int8=False, intra_op_num_threads=1)
    ov = load_bundle(bundle, backend="openvino", int8=False, intra_op_num_threads=1)
    assert ov.detector.backend == "openvino" and ov.reid.backend == "openvino"
    assert ov.detector.imgsz == ort.detector.imgsz == (160, 160)
    assert ov.detector.inference_precision in ("f32", "bf16")
    found = 0
    for seed in range(3):
        frame = scene(seed)
        a, b = ort.detector(frame), ov.detector(frame)
        if ov.detector.inference_precision == "f32":
            np.testing.assert_allclose(ov.detector.raw(frame), ort.detector.raw(frame), atol=1e-3, rtol=1e-3)
            assert a.shape == b.shape
            # rows are ordered by score: boxes whose scores tie (one box, two classes) may swap places
            by_box = [d[np.lexsort((d[:, 1], d[:, 0], d[:, 5]))] for d in (a, b)]
            np.testing.assert_allclose(by_box[1], by_box[0], atol=0.05)  # boxes in pixels, scores: f32 rounding only
        found += len(a)
        if len(a):
            ea, eb = ort.reid(frame, a[:, :4]), ov.reid(frame, a[:, :4])
            assert (ea * eb).sum(axis=1).min() > 0.999
    assert found > 0


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'motops[openvino]')")
def test_auto_times_openvino_against_onnxruntime(models: Path, tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "b", "1", models_dir=models)
    engine = load_bundle(bundle, backend="auto", intra_op_num_threads=1)
    line = engine.chosen["variant"]
    assert "timed at load: openvino" in line and " ms, onnxruntime " in line
    assert engine.detector.backend == ("openvino" if "detector.onnx on openvino" in line else "onnxruntime")


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'motops[openvino]')")
@pytest.mark.parametrize(("ms", "runs"), [
    # a Xeon with AMX: OpenVINO runs the FP32 model in bf16, faster than INT8 on either runtime
    ({"onnxruntime (detector.int8.onnx)": 10.4, "openvino (detector.int8.onnx)": 7.3,
      "openvino (detector.onnx)": 3.9}, ("detector.onnx", "openvino")),
    ({"onnxruntime (detector.int8.onnx)": 10.4, "openvino (detector.int8.onnx)": 7.3,
      "openvino (detector.onnx)": 8.0}, ("detector.int8.onnx", "openvino")),
    # within OPENVINO_MIN_GAIN of the default: noise does not flip it
    ({"onnxruntime (detector.int8.onnx)": 10.4, "openvino (detector.int8.onnx)": 10.0,
      "openvino (detector.onnx)": 9.8}, ("detector.int8.onnx", "onnxruntime")),
])
def test_auto_times_the_fp32_model_on_openvino_against_int8(models: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, ms: dict,
                                                           runs: tuple[str, str]) -> None:
    """Where INT8 is allowed, auto still runs FP32 on OpenVINO when that is faster on this device."""
    from motops.runtime import timing

    bundle = _int8_bundle(models, tmp_path / "b")
    monkeypatch.setattr(hardware, "probe", lambda cpuinfo_=None: _hw(XEON_AMX, openvino="2026.4.1"))
    timed: list[set] = []

    def fake_compare(runners: dict, **_: object) -> dict:
        timed.append(set(runners))
        for fn in runners.values():
            fn()  # every candidate really runs
        return {name: ms.get(name, 1.0) / 1000 for name in runners}

    monkeypatch.setattr(timing, "compare_speed", fake_compare)
    engine = load_bundle(bundle, backend="auto", intra_op_num_threads=1)
    assert timed == [set(ms)]
    assert (engine.detector.path.name, engine.detector.backend) == runs
    line = engine.chosen["variant"]
    assert line.startswith("fp32: INT8 allowed (CPU has" if runs[0] == "detector.onnx" else "int8: CPU has")
    assert "timed at load: openvino" in line and "onnxruntime (detector.int8.onnx) 10.4 ms" in line
    # demanded INT8 is never swapped for FP32
    timed.clear()
    engine = load_bundle(bundle, backend="auto", int8=True, intra_op_num_threads=1)
    assert engine.detector.path.name == "detector.int8.onnx" and timed == [{"onnxruntime", "openvino"}]


# --------------------------------------------------------------------------- tracking scores per variant


def test_evaluate_scores_each_recorded_variant(models: Path, tmp_path: Path) -> None:
    """The evaluate stage's per-variant tracking (only the detector differs) and its merge into the manifest."""
    from motops.config import SyntheticParams
    from motops.data.mot import read_mot_sequence
    from motops.data.seqinfo import read_seqinfo
    from motops.data.synthetic import synthesize
    from motops.evaluation.variants import score_variants, with_scores

    seq = synthesize(tmp_path / "footage", SyntheticParams(sequences=1, frames=4, width=320, height=192,
                                                           people=(4,), fps=(10.0,)), progress=False)[0]
    _, gt = read_mot_sequence(seq)
    info = read_seqinfo(seq / "seqinfo.ini")
    bundle = _int8_bundle(models, tmp_path / "b")
    engine = load_bundle(bundle, backend="onnxruntime", intra_op_num_threads=1)
    args = {"tracker_params": engine.tracker_params, "folders": {info.name: seq / "img1"}, "lengths": {info.name: 4},
            "gt": {info.name: gt.select("frame", "id", "left", "top", "width", "height", "conf", "class",
                                        "visibility")},
            "seqinfo": {info.name: info}, "out_dir": tmp_path / "variants", "nms_iou": 0.7}
    scores = score_variants(engine, **args)
    assert set(scores) == {"fp32", "int8"}  # what the manifest records
    assert all(0.0 <= v["idf1"] <= 1.0 and "hota" in v for v in scores.values())
    assert scores["fp32"]["idf1_drop"] == 0.0 and scores["int8"]["idf1_drop"] == 0.0  # the same bytes: same tracks
    merged = with_scores(engine.manifest["metrics"], scores)["variants"]["detector"]
    assert merged["int8"]["map50_drop"] == 0.004 and merged["int8"]["idf1"] == scores["int8"]["idf1"]
    # a variant recorded without its file, or that cannot run here, is skipped with the reason
    skipped = score_variants(engine, **args, skip=lambda v: "not here" if v == "int8" else None)
    assert skipped["int8"] == {"skipped": "not here"} and "idf1" in skipped["fp32"]
    assert with_scores({}, skipped)["variants"]["detector"]["int8"] == {"tracking_skipped": "not here"}


# --------------------------------------------------------------------------- what the user sees


def test_summary_and_edge_status_say_which_variant_and_why(models: Path, tmp_path: Path, fake_cpu,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _int8_bundle(models, tmp_path / "b")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i + 1:06d}.jpg"), scene(i))
    monkeypatch.chdir(tmp_path)
    for cpuinfo, expected in ((XEON_AMX, "int8: CPU has avx512_vnni and the INT8 detector costs 0.4 mAP50 points"),
                              (AMD_AVX2, "fp32: CPU has no avx512_vnni/avx_vnni/amx_int8")):
        fake_cpu(cpuinfo)
        out = tmp_path / f"out-{expected[:4]}"
        result = CliRunner().invoke(app, ["track", str(frames), "--engine", str(bundle), "--backend", "onnxruntime",
                                          "--out", str(out), "--no-video"])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["variant"].startswith(expected), summary["variant"]
        assert describe_variant(bundle).startswith(expected)
    assert describe_variant(None).startswith("none")
    shutil.rmtree(bundle)
    assert describe_variant(bundle).startswith("unknown")
