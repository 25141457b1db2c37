"""GPU end to end at 640: ``motops track`` on a TensorRT FP16 plan against Ultralytics' own TensorRT export.

Same weights (``models/base/detector.pt`` unless ``--weights``), same footage, same run, same GPU:

* ``ultralytics trt-fp16 <tracker>``: ``YOLO(weights).export(format="engine", half=True, imgsz=640)``,
  then ``YOLO(engine).track(frames, imgsz=640, stream=True)`` with ``bytetrack.yaml`` and
  ``botsort.yaml`` (motion only, its default);
* ``motops trt-fp16 <tracker>``: the same weights exported by motops (ONNX, 640x640), a TensorRT
  FP16 plan built by :func:`motops.runtime.tensorrt.build_plan` (tensorrt + cuda-python, no
  torch), run by :func:`motops.runtime.runner.track_source` -- the path of ``motops track --engine``;
* ``motops trt-int8 bytetrack``: the same with an INT8 plan calibrated from numpy frames
  (implicit quantization, ``IInt8EntropyCalibrator2``), to show that path runs.

The footage is a 640x360 synthetic sequence (30 fps, static camera, ``--people`` people) with
ground truth, so IDF1/HOTA are scored beside FPS. FPS is end to end: reading and decoding the
JPEG frames, the detector, decoding and NMS, the tracker. Each configuration runs ``--repeats``
times interleaved (after one warm-up pass); the median is reported. Prints one table, writes JSON.

Usage (what ``bench/gpu.sh`` runs):
    python bench/gpu_speed.py --out bench/results/gpu_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
IMGSZ = 640


def _footage(out: Path, frames: int, seed: int, people: int) -> Path:
    from motops.config import SyntheticParams
    from motops.data.synthetic import synthesize

    spec = SyntheticParams(sequences=1, frames=frames, seed=seed, fps=(30.0,), camera=("static",), people=(people,))
    return synthesize(out, spec)[0]


def _bundle(weights: Path, img_dir: Path, work: Path) -> tuple[Path, dict[str, float]]:
    """A bundle at 640x640 with FP16 and INT8 TensorRT plans for this GPU; build times in seconds."""
    import cv2

    from motops.export.bundle import write_bundle
    from motops.export.onnx_export import export_detector
    from motops.runtime.backends import letterbox, to_blob
    from motops.runtime.tensorrt import build_plan, tensorrt_status

    ok, reason = tensorrt_status()
    if not ok:
        raise SystemExit(f"gpu_speed: {reason}")
    onnx_path = export_detector(weights, work / "detector.onnx", imgsz=IMGSZ, opset=17, dynamic_batch=False,
                                simplify=True)
    times = {}
    start = time.perf_counter()
    fp16 = build_plan(onnx_path, work / "plans", name="detector", precision="fp16", workspace_gb=4,
                      timing_cache=work / "timing.cache")
    times["build_fp16_s"] = time.perf_counter() - start
    frames = sorted(img_dir.iterdir())[:: max(1, len(list(img_dir.iterdir())) // 16)][:16]
    batches = [to_blob(letterbox(cv2.imread(str(f)), (IMGSZ, IMGSZ))[0]) for f in frames]
    start = time.perf_counter()
    int8 = build_plan(onnx_path, work / "plans", name="detector", precision="int8", workspace_gb=4,
                      calibration=batches, calibration_cache=work / "detector.calib.cache",
                      timing_cache=work / "timing.cache")
    times["build_int8_s"] = time.perf_counter() - start
    bundle = write_bundle(
        work / "engine",
        files={"detector": onnx_path, "plan_detector_fp16": fp16, "plan_detector_int8": int8},
        tracker={"tracker": "bytetrack", "with_reid": False, "classes": [0]},
        model_version="gpu-bench",
        input_shapes={"detector": [1, 3, IMGSZ, IMGSZ]},
        class_names={0: "person"},
        metrics={},
        backends={"onnxruntime": {"built": True, "reason": None},
                  "tensorrt": {"built": True, "reason": tensorrt_status()[1]}},
    )
    return bundle, times


def _motops(bundle: Path, img_dir: Path, out: Path, tracker: str, precision: str) -> tuple[pl.DataFrame, float]:
    from motops.data.mot import read_mot_txt
    from motops.runtime.backends import load_detector
    from motops.runtime.bundle import load_bundle
    from motops.runtime.runner import track_source
    from motops.runtime.tensorrt import find_plan

    engine = load_bundle(bundle, backend="tensorrt")
    kwargs = engine.track_kwargs()
    if precision != "fp16":  # load_bundle prefers FP16; the INT8 plan is loaded by hand
        plan = find_plan(bundle, "detector", precision)
        kwargs["detector"] = load_detector(plan, backend="tensorrt", conf=engine.config["conf"],
                                           iou=engine.config["iou"], classes=engine.config["classes"])
    kwargs.update(tracker=tracker, reid=None, detect_every=1)
    if tracker == "botsort":
        kwargs["tracker_params"] = {**kwargs["tracker_params"], "with_reid": False}
    summary = track_source(img_dir, out_dir=out, write_video=False, progress=False, **kwargs)
    tracks = read_mot_txt(out / "tracks.txt", sequence=img_dir.parent.name, min_columns=6, allow_empty=True)
    return tracks, float(summary["fps"])


def _ultralytics_engine(weights: Path, work: Path) -> tuple[Path, float]:
    from ultralytics import YOLO

    src = work / "ul" / "detector.pt"  # Ultralytics writes the engine next to its input
    src.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, src)
    start = time.perf_counter()
    engine = Path(YOLO(str(src)).export(format="engine", half=True, imgsz=IMGSZ, device=0, verbose=False))
    return engine, time.perf_counter() - start


def _ultralytics(engine: Path, img_dir: Path, tracker: str) -> tuple[pl.DataFrame, float]:
    from ultralytics import YOLO

    model = YOLO(str(engine), task="detect")
    rows = []
    files = sorted(img_dir.iterdir())
    start = time.perf_counter()
    for frame, result in enumerate(
        model.track(source=str(img_dir), imgsz=IMGSZ, stream=True, verbose=False, persist=True, device=0,
                    classes=[0], tracker=tracker, half=True),
        start=1,
    ):
        boxes = result.boxes
        if boxes is None or boxes.id is None:
            continue
        xyxy = boxes.xyxy.cpu().numpy()
        for (x1, y1, x2, y2), tid, conf in zip(xyxy, boxes.id.cpu().numpy(), boxes.conf.cpu().numpy(), strict=True):
            rows.append((frame, int(tid), float(x1), float(y1), float(x2 - x1), float(y2 - y1), float(conf)))
    seconds = time.perf_counter() - start
    table = pl.DataFrame(rows, schema=["frame", "id", "left", "top", "width", "height", "conf"], orient="row")
    return table, len(files) / seconds


def _score(seq: Path, table: pl.DataFrame) -> dict:
    from motops.data.mot import read_mot_sequence, read_seqinfo
    from motops.evaluation import score

    _, gt = read_mot_sequence(seq)
    info = read_seqinfo(seq / "seqinfo.ini")
    gt_table = gt.select("frame", "id", "left", "top", "width", "height", "conf", "class", "visibility")
    m = score({info.name: gt_table}, {info.name: table}, {info.name: info}).combined
    return {"idf1": m.idf1, "hota": m.hota, "mota": m.mota}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=ROOT / "models" / "base" / "detector.pt")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_speed.json")
    args = parser.parse_args()

    from motops.runtime.tensorrt import cuda_devices, tensorrt_status

    with tempfile.TemporaryDirectory(prefix="motops-gpu-bench-") as tmp:
        work = Path(tmp)
        seq = _footage(work / "footage", args.frames, args.seed, args.people)
        img_dir = seq / "img1"
        bundle, build_times = _bundle(args.weights, img_dir, work)
        ul_engine, ul_build_s = _ultralytics_engine(args.weights, work)
        build_times["ultralytics_export_engine_s"] = ul_build_s
        configs = {
            "ultralytics trt-fp16 bytetrack": lambda i: _ultralytics(ul_engine, img_dir, "bytetrack.yaml"),
            "ultralytics trt-fp16 botsort": lambda i: _ultralytics(ul_engine, img_dir, "botsort.yaml"),
            "motops trt-fp16 bytetrack": lambda i: _motops(bundle, img_dir, work / f"m-bt-{i}", "bytetrack", "fp16"),
            "motops trt-fp16 botsort": lambda i: _motops(bundle, img_dir, work / f"m-bs-{i}", "botsort", "fp16"),
            "motops trt-int8 bytetrack": lambda i: _motops(bundle, img_dir, work / f"m-i8-{i}", "bytetrack", "int8"),
        }
        for name, run in configs.items():  # warm-up: CUDA contexts, kernels, file cache
            run(-1)
            print(f"warmed up {name}", flush=True)
        runs: dict[str, list[tuple[pl.DataFrame, float]]] = {name: [] for name in configs}
        for i in range(args.repeats):
            for name, run in configs.items():
                runs[name].append(run(i))
        rows = []
        for name in configs:
            fps = [f for _, f in runs[name]]
            rows.append({"name": name, "fps": statistics.median(fps), "fps_runs": fps,
                         **_score(seq, runs[name][-1][0])})

    devices, _ = cuda_devices()
    gpu = devices[0][0] if devices else "?"
    print(f"\nGPU: {gpu}; {tensorrt_status()[1]}; {args.frames} frames 640x360, detector input {IMGSZ}x{IMGSZ}, "
          f"{args.people} people, median of {args.repeats}")
    print(f"{'configuration':32s} {'FPS':>8s} {'IDF1':>6s} {'HOTA':>6s} {'MOTA':>6s}")
    for r in rows:
        print(f"{r['name']:32s} {r['fps']:8.1f} {r['idf1']:6.3f} {r['hota']:6.3f} {r['mota']:6.3f}")
    by = {r["name"]: r for r in rows}
    ratios = {
        "motops_vs_ultralytics_bytetrack_fps": by["motops trt-fp16 bytetrack"]["fps"]
        / by["ultralytics trt-fp16 bytetrack"]["fps"],
        "motops_vs_ultralytics_botsort_fps": by["motops trt-fp16 botsort"]["fps"]
        / by["ultralytics trt-fp16 botsort"]["fps"],
    }
    for key, value in {**ratios, **build_times}.items():
        print(f"{key}: {value:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"gpu": gpu, "tensorrt": tensorrt_status()[1], "frames": args.frames, "people": args.people,
            "seed": args.seed, "size": [640, 360], "imgsz": IMGSZ, "repeats": args.repeats,
            "weights": str(args.weights), "cpu": platform.processor() or platform.machine(),
            "numpy": np.__version__}
    args.out.write_text(json.dumps({"settings": meta, "runs": rows, "ratios": ratios, "build": build_times},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
