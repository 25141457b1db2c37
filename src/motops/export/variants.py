"""The detector's variants in a bundle (FP32, INT8 QDQ, the OpenVINO runtime) and what each costs on val.

The runtime picks a variant per device (:mod:`motops.runtime.hardware`, :mod:`motops.runtime.select`)
from what is recorded here, under the manifest's ``metrics.variants.detector``:

* ``fp32``: ``detector.onnx`` on ONNX Runtime -- the reference;
* ``int8``: ``detector.int8.onnx`` (calibrated QDQ, :func:`motops.export.quantize.quantize_detector`)
  on ONNX Runtime;
* ``openvino``: ``detector.onnx`` on the OpenVINO runtime at its default precision on the
  exporting machine (``inference_precision``: f32 on AVX2/AVX-512, bf16 on AMX), where
  OpenVINO is installed.

Each entry holds ``map50`` on the val frames (all of them, up to :data:`MAP_FRAMES`, against
their labels, at :data:`MAP_CONF`), ``map50_drop`` (FP32's minus the variant's: a fraction, 0.01 is
one point), ``ms`` (one detector forward pass, batch 1, timed interleaved on the exporting
machine) and the CPU it was timed on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

#: Val frames scored at most (spread evenly over the val set).
MAP_FRAMES: Final = 400
#: Score threshold of the mAP50 measurement (Ultralytics' validator uses 0.001: the whole PR curve).
MAP_CONF: Final = 0.001


def val_set(yolo_dir: Path, n: int = MAP_FRAMES) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Up to ``n`` val frames of the prepared YOLO set and their ``(G, 5)`` ``[x1, y1, x2, y2, cls]`` labels."""
    from motops.export.run import _val_frames, _yolo_gt

    frames, files = _val_frames(yolo_dir, n)
    labels = yolo_dir / "labels" / "val"
    gt = [_yolo_gt(labels / f"{p.stem}.txt", f.shape[:2]) for p, f in zip(files, frames, strict=True)]
    return frames, gt


def measure_variants(
    fp32: Path,
    int8: Path | None,
    frames: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    *,
    threads: int = 0,
    rounds: int = 5,
) -> dict[str, dict[str, Any]]:
    """mAP50 on ``frames`` and forward-pass time of each detector variant that can run here.

    Args:
        fp32: The FP32 ONNX detector.
        int8: Its INT8 QDQ model, or ``None``.
        frames: Val frames, BGR ``(h, w, 3)`` uint8.
        ground_truth: Per frame ``(G, 5)`` ``[x1, y1, x2, y2, cls]`` boxes in frame pixels.
        threads: Threads per operator of both runtimes (``0``: automatic).
        rounds: Interleaved timing rounds.

    Returns:
        ``{"fp32": {...}, "int8": {...}, "openvino": {...}}`` (``int8`` with an INT8 model,
        ``openvino`` where OpenVINO is installed), each ``{"file", "runtime", "map50",
        "map50_drop", "ms", "frames"}`` (+ ``inference_precision`` for OpenVINO), plus ``cpu``.
    """
    from motops.export.quantize import compare_speed, map50
    from motops.runtime import hardware
    from motops.runtime.backends import letterbox, load_detector, to_blob

    hw = hardware.probe()
    models: dict[str, Any] = {}
    common = {"conf": MAP_CONF, "classes": None, "device": "cpu", "intra_op_num_threads": threads}
    models["fp32"] = load_detector(fp32, backend="onnxruntime", **common)
    if int8 is not None:
        models["int8"] = load_detector(int8, backend="onnxruntime", **common)
    if hw.openvino is not None:
        models["openvino"] = load_detector(fp32, backend="openvino", **common)
    out: dict[str, dict[str, Any]] = {}
    for name, det in models.items():
        start = time.perf_counter()
        dets = [det(f) for f in frames]
        entry: dict[str, Any] = {
            "file": "detector.int8.onnx" if name == "int8" else "detector.onnx",  # names inside the bundle
            "runtime": det.backend,
            "map50": map50(dets, ground_truth),
            "frames": len(frames),
            "score_seconds": round(time.perf_counter() - start, 2),
        }
        if name == "openvino":
            entry["inference_precision"] = det.inference_precision
        out[name] = entry
    blob = to_blob(letterbox(frames[0], models["fp32"].imgsz)[0])
    runners = {name: (lambda d=det: d._forward(blob)) for name, det in models.items()}
    for name, seconds in compare_speed(runners, rounds=rounds).items():
        out[name]["ms"] = round(1000 * seconds, 3)
    for entry in out.values():
        entry["map50_drop"] = out["fp32"]["map50"] - entry["map50"]
        entry["speedup"] = round(out["fp32"]["ms"] / entry["ms"], 3)
        entry["cpu"] = hw.isa()
    return out


def add_int8_detector(
    bundle_dir: Path,
    out_dir: Path,
    yolo_dir: Path,
    *,
    method: str = "minmax",
    samples: int = 256,
    seed: int = 0,
    threads: int = 0,
    required: bool = False,
) -> dict[str, Any]:
    """Copy a verified bundle to ``out_dir`` with an INT8 QDQ detector and the variants' measured costs.

    The export stage does the same for a new bundle (``export.int8_detector``); this adds it to
    a bundle that was exported without one (``bench/track_speed.py --int8``).

    Returns:
        ``{"variants": ..., "quantize_seconds", "measure_seconds"}``.
    """
    import tempfile

    from motops.export.bundle import write_bundle
    from motops.export.quantize import quantize_detector
    from motops.export.run import _train_frames
    from motops.runtime.bundle import TRACKER_FILE, read_tracker_yaml, verify_bundle

    manifest = verify_bundle(bundle_dir).raise_if_bad().manifest
    files = {e["role"]: bundle_dir / name for name, e in manifest["files"].items() if e["role"] != "tracker"}
    shape = manifest["input_shapes"]["detector"]
    with tempfile.TemporaryDirectory(prefix="motops-int8-") as tmp:
        t0 = time.perf_counter()
        calib = _train_frames(yolo_dir, samples, seed)
        int8 = quantize_detector(files["detector"], Path(tmp) / "detector.int8.onnx", calib, imgsz=tuple(shape[2:]),
                                 method=method, samples=samples, seed=seed)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        frames, gt = val_set(yolo_dir)
        variants = measure_variants(files["detector"], int8, frames, gt, threads=threads)
        t2 = time.perf_counter()
        if required:
            variants["int8"]["required"] = True
        files["detector_int8"] = int8
        write_bundle(
            out_dir, files=files, tracker=read_tracker_yaml(bundle_dir / TRACKER_FILE),
            model_version=manifest["model_version"], input_shapes=manifest["input_shapes"],
            class_names={int(k): v for k, v in manifest["class_names"].items()},
            metrics={**manifest["metrics"], "variants": {"detector": variants}},
            backends={**manifest["backends"], "onnxruntime_int8": {"built": True, "reason": None}},
            extra={**manifest.get("extra", {}), "int8_detector": {"method": method, "samples": samples,
                                                                  "seconds": round(t1 - t0, 1)}},
        )
    return {"variants": variants, "quantize_seconds": t1 - t0, "measure_seconds": t2 - t1}
