"""The ``export`` stage's work: trained checkpoints -> a verified engine bundle.

Steps, each of which fails the stage when broken (nothing is written to the bundle folder
unless every step passed, see :func:`motops.export.bundle.write_bundle`):

1. detector ``best.pt`` -> ONNX (onnxslim, ``onnx.checker``), parity against PyTorch on
   frames of the val sequences;
2. ReID ``reid.pt`` -> ONNX, parity (cosine) on held-out crops;
3. INT8: the ReID always (when ``export.int8_reid``), the detector when
   ``export.int8_detector``; calibrated on training footage; what INT8 costs (Rank-1, mAP,
   cosine, detector mAP50) and gains (throughput) is measured and recorded; every detector
   variant (FP32, INT8, OpenVINO where installed) is scored on all val frames and recorded in
   the manifest's ``metrics.variants`` (:mod:`motops.export.variants`), which the runtime
   reads to choose per device;
4. TensorRT plans where CUDA and TensorRT are present, else an explicit skip with the reason;
5. the bundle: files, ``tracker.yaml`` from ``params.track``, ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motops.config import Params
from motops.errors import DataFormatError, MotopsError

#: Frames of the val footage used by the detector parity check and INT8 detector report.
PARITY_FRAMES = 8
#: Held-out crops used by the ReID parity check.
PARITY_CROPS = 64


class ParityError(MotopsError):
    """An exported model does not reproduce its PyTorch original."""


def _val_frames(yolo_dir: Path, n: int) -> tuple[list[np.ndarray], list[Path]]:
    import cv2

    files = sorted((yolo_dir / "images" / "val").iterdir())
    if not files:
        raise DataFormatError(yolo_dir / "images" / "val", "no val images; run the prepare stage first")
    pick = [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)]
    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in pick]
    return frames, pick


def export_shape(imgsz: tuple[int, int] | str | None, train_size: int, yolo_dir: Path) -> tuple[int, int]:
    """``(H, W)`` of the exported detector from ``export.imgsz``.

    ``auto``: width ``train_size``, height for the aspect ratio of the first val frame, rounded
    up to the stride 32 so the footage fills the input (nothing is shrunk to fit).
    """
    if imgsz == "auto":
        (frame,), files = _val_frames(yolo_dir, 1)
        if frame is None:
            raise DataFormatError(files[0], "cannot be decoded as an image")
        h, w = frame.shape[:2]
        return min(int(np.ceil(train_size * h / w / 32) * 32), 4096), train_size
    return tuple(imgsz) if imgsz else (train_size, train_size)


def _train_frames(yolo_dir: Path, n: int, seed: int) -> list[np.ndarray]:
    import cv2

    files = sorted((yolo_dir / "images" / "train").iterdir())
    idx = np.random.default_rng(seed).permutation(len(files))[:n]
    return [cv2.imread(str(files[i]), cv2.IMREAD_COLOR) for i in sorted(idx)]


def _yolo_gt(label_file: Path, shape: tuple[int, int]) -> np.ndarray:
    """YOLO label file -> ``(N, 5)`` ``[x1, y1, x2, y2, cls]`` in pixels of an ``(h, w)`` image."""
    h, w = shape
    rows = [line.split() for line in label_file.read_text().splitlines() if line.strip()]
    if not rows:
        return np.zeros((0, 5))
    a = np.asarray(rows, dtype=np.float64)
    cx, cy, bw, bh = a[:, 1] * w, a[:, 2] * h, a[:, 3] * w, a[:, 4] * h
    return np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, a[:, 0]])


def _checked(report: dict[str, Any], what: str) -> dict[str, Any]:
    if not report.get("passed", False):
        raise ParityError(f"export: {what} parity failed: " + "; ".join(report.get("failures", [])))
    return report


def model_version(paths: Sequence[Path]) -> str:
    """A content-derived version label: ``sha-`` and 12 hex digits of the checkpoints' sha256."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha-{digest.hexdigest()[:12]}"


def export_engine(params: Params, root: Path = Path("."), *, progress: bool = True) -> dict[str, Any]:
    """Export the trained detector and ReID to ``export.engine_dir`` and return the export report.

    Reads ``models/detector/best.pt``, ``models/reid/reid.pt`` and the prepared data sets
    (``prepare.out_dir``). Intermediate files go to ``models/export_work`` (replaced each run).

    Returns:
        ``{"detector_parity", "reid_parity", "int8_reid", "int8_detector", "tensorrt",
        "model_version", "bundle"}`` -- also written to ``metrics/export.json`` by the stage.

    Raises:
        ParityError: An export does not match PyTorch within ``export.parity_*``.
        DataFormatError: The checkpoints or the prepared data are missing.
    """
    from motops.data.crops import read_reid_index
    from motops.export import quantize, variants
    from motops.export.bundle import tracker_config, write_bundle
    from motops.export.onnx_export import detector_parity, export_detector, export_reid, reid_parity
    from motops.export.tensorrt import build_plans_or_skip
    from motops.models.reid import load_reid

    cfg = params.export
    det_pt = root / "models" / "detector" / "best.pt"
    reid_pt = root / "models" / "reid" / "reid.pt"
    for path, stage in ((det_pt, "train_detector"), (reid_pt, "train_reid")):
        if not path.is_file():
            raise DataFormatError(path, f"checkpoint not found; run the {stage} stage first")
    prepared = root / params.prepare.out_dir
    yolo_dir, crops_dir = prepared / "yolo", prepared / "reid"
    work = root / "models" / "export_work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    imgsz = export_shape(cfg.imgsz, params.detector.imgsz, yolo_dir)
    files: dict[str, Path] = {}
    report: dict[str, Any] = {}

    print("export: detector -> ONNX")
    files["detector"] = export_detector(
        det_pt, work / "detector.onnx", imgsz=imgsz, opset=cfg.opset, dynamic_batch=cfg.dynamic_batch,
        simplify=cfg.simplify,
    )
    frames, frame_files = _val_frames(yolo_dir, PARITY_FRAMES)
    report["detector_parity"] = _checked(
        detector_parity(det_pt, files["detector"], frames, imgsz=imgsz, iou_min=cfg.parity_iou,
                        score_tol=cfg.parity_score_tol),
        "detector",
    )

    print("export: ReID -> ONNX")
    files["reid"] = export_reid(reid_pt, work / "reid.onnx", opset=cfg.opset, dynamic_batch=cfg.dynamic_batch,
                                simplify=cfg.simplify)
    index = read_reid_index(crops_dir)
    resolved = index.with_columns(
        pl.col("path").map_elements(lambda p: str(crops_dir / p) if not Path(p).is_absolute() else p,
                                    return_dtype=pl.Utf8)
    )
    query = resolved.filter(pl.col("split") == "query")
    gallery = resolved.filter(pl.col("split") == "gallery")
    train = resolved.filter(pl.col("split") == "train")
    held = pl.concat([query, gallery])["path"].to_list()
    step = max(1, len(held) // PARITY_CROPS)
    import cv2

    crops = [cv2.imread(p, cv2.IMREAD_COLOR) for p in held[::step][:PARITY_CROPS]]
    report["reid_parity"] = _checked(reid_parity(reid_pt, files["reid"], crops, cfg.parity_cosine), "ReID")

    if cfg.int8_reid:
        print(f"export: ReID -> INT8 QDQ ({cfg.calibration_method}, {cfg.calibration_samples} training crops)")
        files["reid_int8"] = quantize.quantize_reid(
            files["reid"], work / "reid.int8.onnx", train["path"].to_list(), method=cfg.calibration_method,
            samples=cfg.calibration_samples, seed=params.prepare.seed,
        )
        report["int8_reid"] = quantize.int8_report_reid(files["reid"], files["reid_int8"], query, gallery)
    else:
        report["int8_reid"] = {"skipped": "export.int8_reid is false"}
    if cfg.int8_detector:
        print("export: detector -> INT8 QDQ")
        calib = _train_frames(yolo_dir, cfg.calibration_samples, params.prepare.seed)
        files["detector_int8"] = quantize.quantize_detector(
            files["detector"], work / "detector.int8.onnx", calib, imgsz=imgsz, method=cfg.calibration_method,
            samples=cfg.calibration_samples, seed=params.prepare.seed,
        )
        label_dir = yolo_dir / "labels" / "val"
        gt = [_yolo_gt(label_dir / f"{p.stem}.txt", f.shape[:2]) for p, f in zip(frame_files, frames, strict=True)]
        report["int8_detector"] = quantize.int8_report_detector(files["detector"], files["detector_int8"], frames,
                                                                ground_truth=gt)
    else:
        report["int8_detector"] = {"skipped": "export.int8_detector is false"}
    print("export: detector variants -> mAP50 on val")
    val, val_gt = variants.val_set(yolo_dir)
    report["variants"] = variants.measure_variants(files["detector"], files.get("detector_int8"), val, val_gt)

    trt_entry, plans = build_plans_or_skip(
        dict(files), work / "plans", fp16=cfg.tensorrt.fp16, int8=cfg.tensorrt.int8,
        workspace_gb=cfg.tensorrt.workspace_gb, timing_cache=root / "models" / "tensorrt.cache",
    )
    report["tensorrt"] = trt_entry
    for plan in plans:
        files[f"plan_{plan.stem}"] = plan

    _, reid_meta = load_reid(reid_pt)
    version = model_version([det_pt, reid_pt])
    det_metrics, reid_metrics = (_read_json(root / "metrics" / f"{name}.json") for name in ("detector", "reid"))
    h, w = imgsz
    has_int8 = "reid_int8" in files or "detector_int8" in files
    write_bundle(
        root / cfg.engine_dir,
        files=files,
        tracker=tracker_config(params.track),
        model_version=version,
        input_shapes={"detector": [1, 3, h, w], "reid": [1, 3, *reid_meta["input_size"]]},
        class_names={0: "person"},
        metrics={
            "detector": {k: det_metrics[k] for k in ("map50", "map50_95", "precision", "recall") if k in det_metrics},
            "reid": {k: reid_metrics[k] for k in ("rank1", "map") if k in reid_metrics},
            "variants": {"detector": report["variants"]},
        },
        backends={
            "onnxruntime": {"built": True, "reason": None},
            "onnxruntime_int8": {"built": has_int8,
                                 "reason": None if has_int8 else "export.int8_reid and export.int8_detector are false"},
            "tensorrt": trt_entry,
        },
        extra={
            "parity": {"detector": _brief(report["detector_parity"]), "reid": _brief(report["reid_parity"])},
            "int8": {"reid": report["int8_reid"], "detector": report["int8_detector"]},
        },
    )
    report["model_version"] = version
    report["bundle"] = str(cfg.engine_dir)
    shutil.rmtree(work, ignore_errors=True)
    return report


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _brief(parity: dict[str, Any]) -> dict[str, Any]:
    keep = ("passed", "frames", "crops", "matched_fraction", "min_iou", "max_score_diff", "min_cosine", "mean_cosine")
    return {k: parity[k] for k in keep if k in parity}
