"""What the ONNX export and INT8 quantization buy on this CPU, measured in one run.

* ReID (``ReIDNet``, 128 x 64 crops, batch 16): PyTorch FP32 vs ONNX Runtime FP32 vs ONNX
  Runtime INT8 QDQ (U8S8, calibrated on training crops), plus the INT8 model's Rank-1/mAP
  and embedding cosine against FP32 on held-out identities. The net is trained briefly
  (``--reid-steps``) on synthetic footage so the retrieval and cosine numbers mean something.
* Detector (YOLOv8n from its YAML, random weights: speed does not depend on them), batch 1
  at 640 and 320: PyTorch forward vs ONNX Runtime forward of the same blob, and the full
  backend call (letterbox, forward, decode/NMS) of ``load_detector``'s ``torch`` and
  ``onnxruntime`` backends on a synthetic frame.

Every pair is timed in interleaved rounds (:func:`motops.export.quantize.compare_speed`) with
the same thread count for PyTorch and ONNX Runtime, so load from other processes hits both.
Targets: INT8 ReID >= 1.5x FP32 ORT throughput with mean cosine >= 0.98; FP32 ORT detector
>= 1.3x PyTorch.

Usage:
    YOLO_OFFLINE=1 python bench/export_speed.py --threads 1 --out bench/results/export_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_INT8_SPEEDUP = 1.5
TARGET_INT8_COSINE = 0.98
TARGET_ORT_DETECTOR_SPEEDUP = 1.3


def _reid_section(work: Path, threads: int, steps: int, rounds: int) -> dict:
    import polars as pl
    import torch

    from motops.config import ReidParams, SyntheticParams
    from motops.data.crops import build_reid_crops, load_crops, read_reid_index
    from motops.data.mot import read_mot_dataset
    from motops.data.synthetic import synthesize
    from motops.export import export_reid, int8_report_reid, quantize_reid, reid_parity
    from motops.export.quantize import REID_BATCH, _ort_runner, _session, compare_speed
    from motops.models.reid import ReIDNet, load_reid, reid_meta, save_reid
    from motops.training.reid import train_reid

    footage = work / "footage"
    synthesize(
        footage,
        SyntheticParams(sequences=3, frames=80, width=480, height=288, people=(12,), fps=(10.0,)),
        progress=False,
    )
    sequences, annotations = read_mot_dataset(footage)
    crops_dir = work / "crops"
    build_reid_crops(
        sequences, annotations, crops_dir, height=128, width=64, clip_min=5, clip_max=15,
        heldout_fraction=0.3, min_visibility=0.3, seed=0, progress=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    if steps > 0:
        metrics = train_reid(
            crops_dir, ReidParams(p_ids=8, k_instances=4, device="cpu"), out_dir=work / "reid",
            metrics_path=work / "reid" / "metrics.json", plot_path=work / "reid" / "curves.png",
            max_steps=steps, progress=False,
        )  # fmt: skip
        pt = work / "reid" / "reid.pt"
        trained = f"trained {metrics['steps']} steps ({time.perf_counter() - t0:.0f} s)"
    else:
        net = ReIDNet(256)
        pt = save_reid(work / "reid" / "reid.pt", net, reid_meta(net, height=128, width=64))
        trained = "untrained"
    index = read_reid_index(crops_dir)
    train = index.filter(pl.col("split") == "train")["path"].to_list()
    query, gallery = index.filter(pl.col("split") == "query"), index.filter(pl.col("split") == "gallery")
    fp32 = export_reid(pt, work / "reid.onnx", opset=17, dynamic_batch=True, simplify=True)
    parity = reid_parity(pt, fp32, load_crops(query["path"].to_list()[:64]))
    t0 = time.perf_counter()
    int8 = quantize_reid(fp32, work / "reid_int8.onnx", train, method="minmax", samples=256, seed=0)
    quant_s = time.perf_counter() - t0
    accuracy = int8_report_reid(fp32, int8, query, gallery, threads=threads, rounds=1)

    batch = torch.from_numpy(load_crops(query["path"].to_list()[:REID_BATCH])).float()
    model, _ = load_reid(pt)
    torch.set_num_threads(threads)

    def torch_run() -> None:
        with torch.inference_mode():
            model(batch)

    x = np.ascontiguousarray(batch.numpy())
    seconds = compare_speed(
        {
            "torch_fp32": torch_run,
            "ort_fp32": _ort_runner(_session(fp32, threads), x),
            "ort_int8": _ort_runner(_session(int8, threads), x),
        },
        rounds=rounds,
    )
    cps = {k: REID_BATCH / v for k, v in seconds.items()}
    return {
        "model": f"ReIDNet 128x64 D=256, {trained}",
        "batch": REID_BATCH,
        "crops_per_s": cps,
        "ort_fp32_vs_torch": cps["ort_fp32"] / cps["torch_fp32"],
        "int8_vs_ort_fp32": cps["ort_int8"] / cps["ort_fp32"],
        "int8_vs_torch": cps["ort_int8"] / cps["torch_fp32"],
        "fp32_parity_min_cosine": parity["min_cosine"],
        "int8_mean_cosine": accuracy["mean_cosine"],
        "int8_min_cosine": accuracy["min_cosine"],
        "rank1": {"fp32": accuracy["fp32"]["rank1"], "int8": accuracy["int8"]["rank1"]},
        "map": {"fp32": accuracy["fp32"]["map"], "int8": accuracy["int8"]["map"]},
        "queries": accuracy["fp32"]["queries"],
        "quantize_seconds": quant_s,
        "frame_for_detector": str(sorted(footage.glob("*/img1/*.jpg"))[0]),
    }


def _cpu_int8_features() -> dict[str, bool]:
    """Which x86 dot-product instructions for int8 the CPU has (ONNX Runtime's fast int8 GEMMs need them)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    return {name: name in flags for name in ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")}


def _int8_reference_section(work: Path, threads: int, rounds: int) -> dict:
    """INT8 against FP32 ONNX Runtime for a torchvision ResNet-18 (random weights) at the ReID's input size.

    A reference that is not ours: it tells whether a missed INT8 speed-up is the ReID's design
    or this CPU. Same quantizer settings (:func:`motops.export.quantize.quantize_qdq`).
    """
    import torch
    import torchvision

    from motops.export.quantize import REID_BATCH, _ort_runner, _session, compare_speed, quantize_qdq

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=256).eval()
    x = torch.rand(REID_BATCH, 3, 128, 64)
    fp32 = work / "resnet18.onnx"
    torch.onnx.export(net, x, str(fp32), opset_version=17, input_names=["images"],
                      dynamic_axes={"images": {0: "batch"}}, dynamo=False)  # fmt: skip
    rng = np.random.default_rng(0)
    calib = [rng.random((REID_BATCH, 3, 128, 64), dtype=np.float32) for _ in range(4)]
    int8 = quantize_qdq(fp32, work / "resnet18.int8.onnx", calib)
    blob = np.ascontiguousarray(x.numpy())
    seconds = compare_speed(
        {"ort_fp32": _ort_runner(_session(fp32, threads), blob),
         "ort_int8": _ort_runner(_session(int8, threads), blob)},  # fmt: skip
        rounds=rounds,
    )
    cps = {k: REID_BATCH / v for k, v in seconds.items()}
    return {"model": "torchvision resnet18, 128x64, random weights", "batch": REID_BATCH, "crops_per_s": cps,
            "int8_vs_ort_fp32": cps["ort_int8"] / cps["ort_fp32"]}  # fmt: skip


def _detector_section(work: Path, threads: int, rounds: int, frame: np.ndarray) -> list[dict]:
    import torch
    from ultralytics import YOLO

    from motops.export import export_detector
    from motops.export.quantize import _ort_runner, _session, compare_speed
    from motops.runtime.backends import letterbox, load_detector, to_blob

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    pt = work / "yolov8n_random.pt"
    model.save(pt)
    torch.set_num_threads(threads)
    rows = []
    for imgsz in (640, 320):
        onnx_path = export_detector(pt, work / f"det{imgsz}.onnx", imgsz=imgsz, opset=17, dynamic_batch=True,
                                    simplify=True)  # fmt: skip
        net = YOLO(str(pt)).model.fuse().float().eval()
        blob = to_blob(letterbox(frame, (imgsz, imgsz))[0])
        tensor = torch.from_numpy(blob)

        def torch_forward(net: object = net, tensor: torch.Tensor = tensor) -> None:
            with torch.inference_mode():
                net(tensor)

        forward = compare_speed(
            {"torch": torch_forward, "ort": _ort_runner(_session(onnx_path, threads), blob)}, rounds=rounds
        )
        torch_det = load_detector(pt, backend="torch", imgsz=imgsz, classes=None, device="cpu")
        ort_det = load_detector(
            onnx_path, backend="onnxruntime", imgsz=imgsz, classes=None, device="cpu", intra_op_num_threads=threads
        )
        full = compare_speed({"torch": lambda d=torch_det: d(frame), "ort": lambda d=ort_det: d(frame)}, rounds=rounds)
        rows.append(
            {
                "imgsz": imgsz,
                "forward_ms": {k: 1000 * v for k, v in forward.items()},
                "backend_call_ms": {k: 1000 * v for k, v in full.items()},
                "ort_vs_torch_forward": forward["torch"] / forward["ort"],
                "ort_vs_torch_backend_call": full["torch"] / full["ort"],
            }
        )
    return rows


def run(threads: int, reid_steps: int, rounds: int) -> dict:
    """Measure and return the results as a JSON-able dict."""
    import cv2
    import onnxruntime
    import torch

    cv2.setNumThreads(threads)
    with tempfile.TemporaryDirectory(prefix="motops-bench-export-") as tmp:
        work = Path(tmp)
        reid = _reid_section(work, threads, reid_steps, rounds)
        reference = _int8_reference_section(work, threads, rounds)
        frame = cv2.imread(reid.pop("frame_for_detector"))
        detector = _detector_section(work, threads, rounds, frame)
    return {
        "bench": "export_speed",
        "threads": threads,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "int8_instructions": _cpu_int8_features(),
        },
        "reid": reid,
        "int8_reference": reference,
        "detector": detector,
        "targets": {
            "int8_vs_ort_fp32": TARGET_INT8_SPEEDUP,
            "int8_mean_cosine": TARGET_INT8_COSINE,
            "ort_vs_torch_detector": TARGET_ORT_DETECTOR_SPEEDUP,
        },
        "met": {
            "int8_speed": reid["int8_vs_ort_fp32"] >= TARGET_INT8_SPEEDUP,
            "int8_cosine": reid["int8_mean_cosine"] >= TARGET_INT8_COSINE,
            "ort_detector": {
                str(r["imgsz"]): r["ort_vs_torch_forward"] >= TARGET_ORT_DETECTOR_SPEEDUP for r in detector
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for PyTorch, ONNX Runtime and OpenCV")
    parser.add_argument("--reid-steps", type=int, default=60, help="ReID training steps before export (0: untrained)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--out", type=Path, default=Path("bench/results/export_speed.json"), help="JSON output path")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    result = run(args.threads, args.reid_steps, args.rounds)
    r = result["reid"]
    print(f"\n{r['model']}, batch {r['batch']}, {args.threads} thread(s)")
    print(f"{'ReID':<22}{'crops/s':>10}{'vs torch':>10}{'vs ORT FP32':>13}")
    for name in ("torch_fp32", "ort_fp32", "ort_int8"):
        cps = r["crops_per_s"][name]
        print(f"{name:<22}{cps:>10.0f}{cps / r['crops_per_s']['torch_fp32']:>9.2f}x"
              f"{cps / r['crops_per_s']['ort_fp32']:>12.2f}x")  # fmt: skip
    print(
        f"INT8 vs FP32: mean cosine {r['int8_mean_cosine']:.4f} (min {r['int8_min_cosine']:.4f}); "
        f"rank-1 {r['rank1']['fp32']:.3f} -> {r['rank1']['int8']:.3f}; mAP {r['map']['fp32']:.3f} -> "
        f"{r['map']['int8']:.3f} ({r['queries']} queries)"
    )
    ref = result["int8_reference"]
    print(f"reference {ref['model']}: INT8 {ref['int8_vs_ort_fp32']:.2f}x FP32 ORT; "
          f"CPU int8 instructions: {result['machine']['int8_instructions']}")  # fmt: skip
    print(f"\n{'YOLOv8n, batch 1':<22}{'torch ms':>10}{'ORT ms':>10}{'ORT speedup':>13}")
    for row in result["detector"]:
        for kind, key in (("forward", "forward_ms"), ("backend call", "backend_call_ms")):
            ms, label = row[key], f"{row['imgsz']} {kind}"
            print(f"{label:<22}{ms['torch']:>10.1f}{ms['ort']:>10.1f}"
                  f"{ms['torch'] / ms['ort']:>12.2f}x")  # fmt: skip
    print(f"\ntargets met: {json.dumps(result['met'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
