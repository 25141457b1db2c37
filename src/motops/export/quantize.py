"""Calibrated INT8 (QDQ) quantization with ONNX Runtime, and reports of what it costs and gains.

:func:`quantize_reid` and :func:`quantize_detector` run ONNX Runtime's static quantization:
``quant_pre_process`` (symbolic shape inference and graph optimization) first, then
``quantize_static`` with a calibration set sampled (seeded) from the training footage, in
the QDQ format (``QuantizeLinear``/``DequantizeLinear`` pairs around float ops), which both
ONNX Runtime (it fuses the pairs into integer kernels) and TensorRT (it builds INT8 layers
from the explicit scales) read.

Data types (``target``):

* ``cpu`` (default): weights signed INT8 per output channel, symmetric; activations
  **unsigned** UINT8, asymmetric (U8S8). On x86 without VNNI (AVX2 only, like the machine
  this was measured on) ONNX Runtime's U8S8 kernels (``VPMADDUBSW``) are its fastest integer
  path; S8S8 QDQ is converted back and forth around kernels without an S8 variant and
  measured 0.76x FP32 for the ReID net here, against ~1.0-1.1x for U8S8. ``VPMADDUBSW`` sums
  pairs of u8 x s8 products in *saturating* int16, which 8-bit weights overflow: without
  ``reduce_range`` the ReID embeddings fell to mean cosine 0.968 (min 0.69) against FP32,
  with 7-bit weights (``reduce_range=True``, the default for ``cpu``) to 0.997 (min 0.994).
  Conv/Gemm, the residual Add, Relu, MaxPool and GlobalAveragePool are all quantized, so
  the graph runs integer end to end (one Quantize at the input, one Dequantize before the
  BNNeck); quantizing only Conv left Q/DQ pairs around every Add and was slower.
* ``tensorrt``: INT8 activations and weights, both symmetric (zero point 0), full 8-bit
  range: the only QDQ flavour TensorRT builds INT8 layers from. Run it on a GPU, not on a CPU.

On the AVX2-only machine this was measured on, ONNX Runtime's raw U8S8 GEMM is only ~1.3x its
FP32 GEMM (an 8192 x 576 x 64 product, one thread) and QLinearConv ~1.1x its FP32 (NCHWc)
Conv, so INT8 ReID runs at about FP32 speed there; CPUs with VNNI (AVX512-VNNI, AVX-VNNI)
have a 4x denser integer dot product and should gain more (not measured here).

Calibration methods (``export.calibration_method``): ``minmax`` (the observed range: no
clipping, coarser steps), ``entropy`` (the range minimizing KL divergence of the activation
histogram) and ``percentile`` (99.999th percentile of ``|x|``); the last two clip outliers.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from motops.errors import MotopsError
from motops.runtime.timing import compare_speed

CalibrationName = Literal["minmax", "entropy", "percentile"]

#: Crops per ORT call when calibrating and when timing the ReID model.
REID_BATCH = 16
#: Threads of the timing sessions (the same for FP32 and INT8, so the ratio is fair).
BENCH_THREADS = 0
#: Ops quantized in the ReID net: with all of them quantized it runs integer end to end.
QUANT_OPS_REID = ("Conv", "Gemm", "Add", "Relu", "MaxPool", "GlobalAveragePool")
#: Ops quantized in the detector (the box-decoding tail is excluded by node name).
QUANT_OPS_DETECTOR = ("Conv", "Mul", "Add", "Sigmoid", "Concat", "MaxPool", "Resize")

Target = Literal["cpu", "tensorrt"]


class CalibrationReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over prepared input batches.

    Args:
        input_name: The model's input tensor name.
        batches: ``(B, 3, H, W)`` float32 arrays, each fed once per pass.
    """

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.batches = list(batches)
        self._it = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name not in table:
        raise ValueError(f"calibration method {name!r}; expected one of {list(table)}")
    return table[name]


def _sample(n: int, samples: int, seed: int) -> np.ndarray:
    """``min(n, samples)`` sorted indices out of ``n``, drawn without replacement by ``seed``."""
    if n == 0:
        raise ValueError("no calibration data given")
    if samples < 1:
        raise ValueError(f"samples={samples}; expected >= 1")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, samples), replace=False))


def reid_calibration_batches(crops: Any, size: tuple[int, int], *, samples: int, seed: int) -> list[np.ndarray]:
    """Seeded sample of ``samples`` crops as ``(<=16, 3, H, W)`` float32 BGR 0..255 batches.

    Args:
        crops: Anything :func:`motops.export.onnx_export.as_crop_batch` takes, or a sequence of image paths.
        size: ``(H, W)`` of the network.
        samples: Crops used at most.
        seed: Sampling seed (same seed, same calibration set).
    """
    from motops.export.onnx_export import as_crop_batch

    items = list(crops) if not hasattr(crops, "shape") else crops
    idx = _sample(len(items), samples, seed)
    if len(items) and isinstance(items[0], str | Path):
        from motops.data.crops import load_crops

        picked: Any = load_crops([str(items[i]) for i in idx], size[0], size[1])
    else:
        picked = items[idx] if hasattr(items, "shape") else [items[i] for i in idx]
    batch = as_crop_batch(picked, size)
    return [batch[i : i + REID_BATCH] for i in range(0, len(batch), REID_BATCH)]


def detector_calibration_batches(
    frames: Sequence[np.ndarray], imgsz: tuple[int, int], *, samples: int, seed: int
) -> list[np.ndarray]:
    """Seeded sample of ``samples`` frames, letterboxed as the runtime does, each a ``(1, 3, H, W)`` blob."""
    from motops.runtime.backends import letterbox, to_blob

    idx = _sample(len(frames), samples, seed)
    return [to_blob(letterbox(frames[i], imgsz)[0]) for i in idx]


def quantize_qdq(
    fp32_onnx: str | Path,
    out_path: str | Path,
    batches: Sequence[np.ndarray],
    *,
    method: CalibrationName = "minmax",
    target: Target = "cpu",
    op_types: Sequence[str] | None = None,
    reduce_range: bool | None = None,
    nodes_to_exclude: Sequence[str] = (),
) -> Path:
    """Static INT8 QDQ quantization of ``fp32_onnx`` calibrated on ``batches``.

    Args:
        fp32_onnx: The float model.
        out_path: Destination ``.onnx`` (parent folders are created).
        batches: Calibration inputs for the model's single input.
        method: ``minmax``, ``entropy`` or ``percentile``.
        target: ``cpu`` (U8S8 for ONNX Runtime on x86) or ``tensorrt`` (S8S8 symmetric); see the module docstring.
        op_types: Op types to quantize (``None``: all ORT supports).
        reduce_range: 7-bit weights (avoids ``VPMADDUBSW`` saturation on CPUs without VNNI);
            ``None``: on for ``cpu``, off for ``tensorrt``.
        nodes_to_exclude: Node names left in float.

    Returns:
        ``out_path``; its ``metadata_props`` are those of ``fp32_onnx`` plus
        ``motops.quantization`` (JSON: format, types, method, calibration batches).

    Raises:
        FileNotFoundError: ``fp32_onnx`` does not exist.
        ValueError: an unknown method or target, or no calibration batch.
        MotopsError: quantization failed or its result fails ``onnx.checker``.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from motops.export.onnx_export import _save_checked, _set_metadata

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    if not fp32_onnx.is_file():
        raise FileNotFoundError(f"{fp32_onnx}: FP32 ONNX model not found")
    if target not in ("cpu", "tensorrt"):
        raise ValueError(f"target={target!r}; expected 'cpu' or 'tensorrt'")
    if not batches:
        raise ValueError(f"{fp32_onnx}: no calibration batches")
    calib = _method(method)
    cpu = target == "cpu"
    reduce = cpu if reduce_range is None else bool(reduce_range)
    source = onnx.load(str(fp32_onnx))
    input_name = source.graph.input[0].name
    props = [(p.key, p.value) for p in source.metadata_props]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="motops-quant-") as tmp:
        pre = Path(tmp).resolve() / "pre.onnx"
        source_path = str(Path(fp32_onnx).resolve())  # before the chdir below: it may be relative
        # ONNX Runtime's symbolic shape inference, when it gives up, saves its partial model to
        # ./sym_shape_infer_temp.onnx (+ .data): run it inside the temporary folder, not the project.
        with contextlib.chdir(tmp):
            try:
                quant_pre_process(source_path, str(pre))
            except Exception:  # noqa: BLE001 - symbolic shape inference is best effort; ONNX's own is enough
                quant_pre_process(source_path, str(pre), skip_symbolic_shape=True)
        tmp_out = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                str(pre),
                str(tmp_out),
                CalibrationReader(input_name, batches),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(op_types) if op_types else None,
                per_channel=True,
                reduce_range=reduce,
                activation_type=QuantType.QUInt8 if cpu else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(nodes_to_exclude),
                calibrate_method=calib,
                extra_options={"ActivationSymmetric": not cpu, "WeightSymmetric": True},
            )
        except Exception as exc:
            raise MotopsError(f"{fp32_onnx}: INT8 quantization failed: {exc}") from exc
        model = onnx.load(str(tmp_out))
        have = {p.key for p in model.metadata_props}
        for key, value in props:
            if key not in have:
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
        _set_metadata(
            model,
            {
                "quantization": {
                    "format": "QDQ",
                    "target": target,
                    "weights": "int8 per-channel symmetric" + (" (7-bit range)" if reduce else ""),
                    "activations": "uint8 asymmetric" if cpu else "int8 symmetric",
                    "method": method,
                    "calibration_batches": len(batches),
                    "calibration_inputs": int(sum(len(b) for b in batches)),
                }
            },
        )
        _save_checked(model, tmp_out, out_path)
    return out_path


def quantize_reid(
    fp32_onnx: str | Path,
    out_path: str | Path,
    crops: Any,
    *,
    method: CalibrationName,
    samples: int,
    seed: int,
    target: Target = "cpu",
) -> Path:
    """INT8 QDQ ReID model calibrated on a seeded sample of training crops.

    Args:
        fp32_onnx: The export of :func:`motops.export.onnx_export.export_reid`.
        out_path: Destination ``.onnx``.
        crops: Training crops: image paths, ``(N, 3, H, W)``/``(N, H, W, 3)`` BGR arrays or a list of images.
        method: ``minmax``, ``entropy`` or ``percentile`` (``export.calibration_method``).
        samples: Crops drawn for calibration (``export.calibration_samples``). Raising it
            gives steadier ranges and a slower calibration.
        seed: Sampling seed.
        target: ``cpu`` (ONNX Runtime on x86) or ``tensorrt`` (see the module docstring).

    Returns:
        ``out_path``.
    """
    from motops.export.onnx_export import read_onnx_metadata

    meta = read_onnx_metadata(fp32_onnx)
    size = tuple(int(v) for v in meta.get("input_size", (128, 64)))
    batches = reid_calibration_batches(crops, size, samples=samples, seed=seed)  # type: ignore[arg-type]
    return quantize_qdq(fp32_onnx, out_path, batches, method=method, target=target, op_types=QUANT_OPS_REID)


def quantize_detector(
    fp32_onnx: str | Path,
    out_path: str | Path,
    frames: Sequence[np.ndarray],
    *,
    imgsz: int | Sequence[int],
    method: CalibrationName,
    samples: int,
    seed: int,
    target: Target = "cpu",
) -> Path:
    """INT8 QDQ detector calibrated on a seeded sample of letterboxed training frames.

    The DFL/box-decoding tail of the YOLOv8 head (everything after the last convolutions)
    stays in float: it turns distributions into pixel coordinates, where 8-bit steps would
    move boxes by pixels.

    Args:
        fp32_onnx: The export of :func:`motops.export.onnx_export.export_detector`.
        out_path: Destination ``.onnx``.
        frames: BGR frames ``(h, w, 3)`` uint8 from the training footage.
        imgsz: The export's input size.
        method: ``minmax``, ``entropy`` or ``percentile``.
        samples: Frames drawn for calibration.
        seed: Sampling seed.
        target: ``cpu`` or ``tensorrt``.

    Returns:
        ``out_path``.
    """
    import onnx

    from motops.export.onnx_export import _imgsz

    size = _imgsz(imgsz)
    batches = detector_calibration_batches(frames, size, samples=samples, seed=seed)
    graph = onnx.load(str(fp32_onnx), load_external_data=False).graph
    exclude = _detector_tail(graph)
    return quantize_qdq(
        fp32_onnx,
        out_path,
        batches,
        method=method,
        target=target,
        op_types=QUANT_OPS_DETECTOR,
        nodes_to_exclude=exclude,
    )


def _detector_tail(graph: Any) -> list[str]:
    """Names of the nodes of the YOLOv8 head's decoding tail (the ``/model.22/`` nodes outside ``cv2``/``cv3``)."""
    names = [n.name for n in graph.node]
    head = sorted({n.split("/")[1] for n in names if n.startswith("/model.") and n.count("/") > 1})
    last = max(head, key=lambda s: int(s.split(".")[1]) if s.split(".")[1].isdigit() else -1) if head else None
    if last is None:
        return []
    prefix = f"/{last}/"
    return [n for n in names if n.startswith(prefix) and not n.startswith((f"{prefix}cv2", f"{prefix}cv3"))]


# --------------------------------------------------------------------------- reports


def _session(path: str | Path, threads: int = BENCH_THREADS) -> Any:
    from motops.runtime.backends import ort_session

    return ort_session(Path(path), device="cpu", intra_op_num_threads=threads, spin=True)


def _ort_runner(session: Any, batch: np.ndarray) -> Any:
    feeds = {session.get_inputs()[0].name: batch}
    return lambda: session.run(None, feeds)


def int8_report_reid(
    fp32: str | Path,
    int8: str | Path,
    query_df: Any,
    gallery_df: Any,
    *,
    threads: int = BENCH_THREADS,
    rounds: int = 5,
) -> dict[str, Any]:
    """Retrieval accuracy, embedding agreement and CPU throughput of an INT8 ReID model against its FP32 original.

    Args:
        fp32: The FP32 ONNX model.
        int8: Its INT8 QDQ model.
        query_df: Index rows (``path`` absolute, ``pid``, ``sequence``, ``frame``) of the queries
            (:func:`motops.data.crops.read_reid_index` filtered on ``split == "query"``).
        gallery_df: Index rows of the gallery.
        threads: ORT intra-op threads of both timing sessions (``0``: automatic).
        rounds: Interleaved timing rounds (see :func:`compare_speed`).

    Returns:
        ``{"fp32": {"rank1", "map", "queries", "crops_per_s"}, "int8": {...}, "mean_cosine",
        "min_cosine", "speedup", "rank1_drop", "map_drop", "batch"}``: throughput on batches of
        :data:`REID_BATCH` crops, ONNX Runtime CPU.
    """
    from motops.data.crops import frame_keys, load_crops, retrieval_metrics
    from motops.export.onnx_export import ort_embed, read_onnx_metadata

    size = tuple(int(v) for v in read_onnx_metadata(fp32).get("input_size", (128, 64)))
    q_img = load_crops(query_df["path"].to_list(), size[0], size[1]).astype(np.float32)
    g_img = load_crops(gallery_df["path"].to_list(), size[0], size[1]).astype(np.float32)
    qk, gk = frame_keys(query_df, gallery_df)
    q_pids, g_pids = query_df["pid"].to_numpy(), gallery_df["pid"].to_numpy()
    out: dict[str, Any] = {"batch": REID_BATCH, "threads": threads}
    embeddings, runners = {}, {}
    bench = np.concatenate([q_img, g_img])[:REID_BATCH]
    bench = np.ascontiguousarray(np.resize(bench, (REID_BATCH, *bench.shape[1:])), dtype=np.float32)
    for name, path in (("fp32", fp32), ("int8", int8)):
        session = _session(path, threads)
        q = ort_embed(session, q_img, batch_size=REID_BATCH)
        g = ort_embed(session, g_img, batch_size=REID_BATCH)
        embeddings[name] = np.concatenate([q, g])
        out[name] = retrieval_metrics(q, g, q_pids, g_pids, qk, gk)
        runners[name] = _ort_runner(session, bench)
    for name, seconds in compare_speed(runners, rounds=rounds).items():
        out[name]["crops_per_s"] = REID_BATCH / seconds
    from motops.export.onnx_export import _row_cosine

    cos = _row_cosine(embeddings["fp32"], embeddings["int8"])
    out.update(
        mean_cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
        speedup=out["int8"]["crops_per_s"] / out["fp32"]["crops_per_s"],
        rank1_drop=out["fp32"]["rank1"] - out["int8"]["rank1"],
        map_drop=out["fp32"]["map"] - out["int8"]["map"],
    )
    return out


def int8_report_detector(
    fp32: str | Path,
    int8: str | Path,
    frames: Sequence[np.ndarray],
    *,
    ground_truth: Sequence[np.ndarray] | None = None,
    conf: float = 0.25,
    threads: int = BENCH_THREADS,
    rounds: int = 5,
) -> dict[str, Any]:
    """Box agreement and CPU speed of an INT8 detector against its FP32 original.

    Args:
        fp32: FP32 ONNX detector.
        int8: Its INT8 QDQ model.
        frames: BGR frames ``(h, w, 3)`` uint8.
        ground_truth: Optional per-frame ``(G, 5)`` ``[x1, y1, x2, y2, cls]`` boxes in frame
            pixels; when given, mAP50 of both models is reported.
        conf: Detection threshold of both.
        threads: ORT intra-op threads of both (``0``: automatic).
        rounds: Interleaved timing rounds (see :func:`compare_speed`).

    Returns:
        ``{"frames", "boxes_fp32", "boxes_int8", "matched_fraction", "mean_iou", "max_score_diff",
        "fp32_ms", "int8_ms", "speedup"}`` (+ ``"map50_fp32"``, ``"map50_int8"`` with ``ground_truth``);
        ``matched_fraction`` is the share of FP32 boxes with an INT8 box of the same class at IoU > 0.5.
    """
    from motops.export.onnx_export import _greedy_match
    from motops.runtime.backends import letterbox, load_detector, to_blob

    if len(frames) == 0:
        raise ValueError("int8_report_detector needs at least one frame")
    dets, runners = {}, {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        det = load_detector(
            path, backend="onnxruntime", conf=conf, classes=None, device="cpu", intra_op_num_threads=threads
        )
        dets[name] = [det(f) for f in frames]
        runners[name] = _ort_runner(_session(path, threads), to_blob(letterbox(frames[0], det.imgsz)[0]))
    ms = {name: 1000 * sec for name, sec in compare_speed(runners, rounds=rounds).items()}
    pairs = [_greedy_match(a, b) for a, b in zip(dets["fp32"], dets["int8"], strict=True)]
    n32 = sum(len(d) for d in dets["fp32"])
    ious = [p[2] for ps in pairs for p in ps]
    diffs = [
        abs(float(a[i, 4]) - float(b[j, 4]))
        for ps, a, b in zip(pairs, dets["fp32"], dets["int8"], strict=True)
        for i, j, _ in ps
    ]
    out: dict[str, Any] = {
        "frames": len(frames),
        "boxes_fp32": n32,
        "boxes_int8": sum(len(d) for d in dets["int8"]),
        "matched_fraction": 1.0 if n32 == 0 else len(ious) / n32,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "max_score_diff": max(diffs, default=0.0),
        "fp32_ms": ms["fp32"],
        "int8_ms": ms["int8"],
        "speedup": ms["fp32"] / ms["int8"],
    }
    if ground_truth is not None:
        out["map50_fp32"] = map50(dets["fp32"], ground_truth)
        out["map50_int8"] = map50(dets["int8"], ground_truth)
    return out


def map50(detections: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray]) -> float:
    """mAP at IoU 0.5 (all-point interpolation, mean over the classes present in the ground truth).

    Uses Ultralytics' ``ap_per_class`` (the metric its validator reports), so this is not a re-implementation.

    Args:
        detections: Per frame ``(N, 6)`` ``[x1, y1, x2, y2, conf, cls]``.
        ground_truth: Per frame ``(G, 5)`` ``[x1, y1, x2, y2, cls]``.
    """
    from ultralytics.utils.metrics import ap_per_class

    from motops.runtime.matching import iou_matrix

    tp, conf, pred_cls, target_cls = [], [], [], []
    for det, gt in zip(detections, ground_truth, strict=True):
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 5)
        target_cls.append(gt[:, 4])
        if len(det) == 0:
            continue
        hit = np.zeros(len(det), dtype=bool)
        if len(gt):
            iou = iou_matrix(det[:, :4], gt[:, :4])
            iou[det[:, None, 5] != gt[None, :, 4]] = 0.0
            taken = np.zeros(len(gt), dtype=bool)
            for i in np.argsort(-det[:, 4], kind="stable"):
                cand = np.where(taken, -1.0, iou[i])
                j = int(np.argmax(cand))
                if cand[j] >= 0.5:
                    taken[j] = hit[i] = True
        tp.append(hit[:, None])
        conf.append(det[:, 4])
        pred_cls.append(det[:, 5])
    targets = np.concatenate(target_cls) if target_cls else np.zeros(0)
    if not tp or len(targets) == 0:
        return 0.0
    result = ap_per_class(np.concatenate(tp), np.concatenate(conf), np.concatenate(pred_cls), targets)
    ap = result[5]  # (nc, 10) AP at IoU 0.5:0.95; column 0 is IoU 0.5
    return float(ap[:, 0].mean()) if len(ap) else 0.0


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as indented JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
