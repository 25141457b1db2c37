"""ONNX export of the detector and the ReID network, and parity checks against PyTorch.

Exports:

* :func:`export_detector`: an Ultralytics ``.pt`` through Ultralytics' own exporter (it
  writes next to its input, so the checkpoint is exported from a temporary copy and the
  result moved to ``out_path``). With ``dynamic_batch`` only the batch axis is symbolic: the
  input height and width are pinned to ``imgsz`` (Ultralytics' ``dynamic=True`` would leave
  them symbolic too, which TensorRT profiles and the runtime's static-size detection do not want).
* :func:`export_reid`: a :func:`motops.models.reid.save_reid` checkpoint through
  ``torch.onnx.export`` (TorchScript-based exporter, ``dynamo=False``). The checkpoint meta
  (input size, channel order, pixel range, mean/std, embedding size) is stored in the model's
  ``metadata_props`` (see :func:`read_onnx_metadata`). Input: ``images`` ``(B, 3, H, W)``
  float32 BGR 0..255 (the net normalizes inside); output: ``embeddings`` ``(B, D)`` unit-norm.

Parity (run both before a model is published; :func:`check_parity` turns a bad report into
a :class:`ParityError`):

* :func:`detector_parity`: the ``torch`` and ``onnxruntime`` backends of
  :func:`motops.runtime.backends.load_detector` on real frames; boxes are matched greedily
  per frame; the raw head outputs (all anchors, before the score threshold) are compared too,
  so a frame without detections still tests the model.
* :func:`reid_parity`: cosine similarity between the PyTorch and ONNX Runtime embeddings of
  the same crops.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from motops.errors import MotopsError
from motops.runtime.backends import ONNX_META_PREFIX

#: Input and output names of the exported ReID graph.
REID_INPUT = "images"
REID_OUTPUT = "embeddings"
#: Prefix of the metadata keys written by :func:`export_reid`.
META_PREFIX = ONNX_META_PREFIX
#: Two boxes are paired by the greedy matching only above this IoU; a pair below ``iou_min``
#: then fails the check (as opposed to being counted unmatched).
PAIR_IOU = 0.5
#: ORT threads used by the parity checks (deterministic and polite on a shared CPU).
PARITY_THREADS = 1


class ParityError(MotopsError):
    """An exported model does not reproduce its PyTorch original within the tolerances.

    Args:
        report: The report of :func:`detector_parity` or :func:`reid_parity`.
    """

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.report = dict(report)
        failures = "; ".join(report.get("failures", [])) or "failed"
        super().__init__(
            f"{report.get('model')}: {report.get('kind', 'model')} export does not match "
            f"{report.get('reference')}: {failures}"
        )


# --------------------------------------------------------------------------- helpers


def _check(model_path: Path) -> None:
    """``onnx.checker`` with the file path (works above the 2 GB protobuf limit and names the file)."""
    import onnx

    try:
        onnx.checker.check_model(str(model_path), full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise MotopsError(f"{model_path}: exported ONNX model fails onnx.checker: {exc}") from exc


def _save_checked(model: Any, tmp_out: Path, out_path: Path) -> None:
    """Save ``model`` to ``tmp_out``, run :func:`_check` on it, then move it to ``out_path``.

    Nothing lands at ``out_path`` unless the checker accepts the file.
    """
    import onnx

    onnx.save(model, str(tmp_out))
    _check(tmp_out)
    shutil.move(str(tmp_out), out_path)


def _slim(model: Any) -> Any:
    """``onnxslim.slim`` keeping the metadata (constant folding, dead-node removal, fusions)."""
    import onnxslim

    props = [(p.key, p.value) for p in model.metadata_props]
    slim = onnxslim.slim(model)
    have = {p.key for p in slim.metadata_props}
    for key, value in props:
        if key not in have:
            entry = slim.metadata_props.add()
            entry.key, entry.value = key, value
    return slim


def _set_metadata(model: Any, meta: Mapping[str, Any]) -> None:
    """Write ``meta`` into ``model.metadata_props`` (JSON values, keys prefixed ``motops.``)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in meta.items():
        name = f"{META_PREFIX}{key}"
        entry = existing.get(name) or model.metadata_props.add()
        entry.key, entry.value = name, json.dumps(value)


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``motops.*`` metadata of an ONNX file written by :func:`export_reid` (prefix stripped, JSON decoded).

    Other keys (e.g. Ultralytics' ``names``, ``imgsz``) are returned as plain strings under their own names.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        if prop.key.startswith(META_PREFIX):
            out[prop.key[len(META_PREFIX) :]] = json.loads(prop.value)
        else:
            out[prop.key] = prop.value
    return out


def _pin_spatial_dims(model: Any, imgsz: tuple[int, int]) -> None:
    """Fix the input's H, W (dims 2, 3) to ``imgsz`` and the output's anchor axis, keeping the batch symbolic."""
    from onnx import shape_inference

    inp = model.graph.input[0].type.tensor_type.shape.dim
    inp[0].ClearField("dim_value")
    inp[0].dim_param = "batch"
    for axis, size in zip((2, 3), imgsz, strict=True):
        inp[axis].ClearField("dim_param")
        inp[axis].dim_value = int(size)
    # YOLOv8 strides 8, 16, 32: one anchor per cell of each level
    anchors = sum((imgsz[0] // s) * (imgsz[1] // s) for s in (8, 16, 32))
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims) == 3 and dims[2].dim_param:
            dims[2].ClearField("dim_param")
            dims[2].dim_value = anchors
    inferred = shape_inference.infer_shapes(model)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)


def _imgsz(imgsz: int | Sequence[int]) -> tuple[int, int]:
    size = (int(imgsz), int(imgsz)) if isinstance(imgsz, int | np.integer) else tuple(int(v) for v in imgsz)
    if len(size) != 2 or min(size) < 32 or size[0] % 32 or size[1] % 32:
        raise ValueError(f"imgsz={imgsz!r}; expected an int or (H, W), multiples of 32 (YOLO's largest stride)")
    return size  # type: ignore[return-value]


# --------------------------------------------------------------------------- export


def export_detector(
    pt_path: str | Path,
    out_path: str | Path,
    *,
    imgsz: int | Sequence[int],
    opset: int,
    dynamic_batch: bool,
    simplify: bool,
) -> Path:
    """Export an Ultralytics detector checkpoint to ONNX.

    Args:
        pt_path: The ``.pt`` checkpoint (Ultralytics format).
        out_path: Destination ``.onnx`` (parent folders are created; an old file is replaced).
        imgsz: Network input size, an int (square) or ``(H, W)``, multiples of 32. Raising it
            finds smaller objects and costs time quadratically.
        opset: ONNX opset (11..21).
        dynamic_batch: Make the batch axis symbolic (H, W stay fixed at ``imgsz``).
        simplify: Run onnxslim (constant folding, fusions) on the graph.

    Returns:
        ``out_path``: input ``images`` ``(B or 1, 3, H, W)`` float32 RGB in ``[0, 1]``, output
        ``output0`` ``(B or 1, 4 + nc, A)``; Ultralytics' metadata (``names``, ``imgsz``, ...) kept.

    Raises:
        FileNotFoundError: ``pt_path`` does not exist.
        MotopsError: the exporter failed or the result fails ``onnx.checker``.
    """
    import onnx
    from ultralytics import YOLO

    pt_path, out_path = Path(pt_path), Path(out_path)
    if not pt_path.is_file():
        raise FileNotFoundError(f"{pt_path}: detector checkpoint not found")
    size = _imgsz(imgsz)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="motops-export-") as tmp:
        # Ultralytics writes the .onnx next to its input: export a copy so nothing lands beside the source.
        src = Path(tmp) / "model.pt"
        shutil.copyfile(pt_path, src)
        try:
            written = YOLO(str(src), task="detect").export(
                format="onnx",
                imgsz=list(size),
                opset=opset,
                dynamic=dynamic_batch,
                simplify=False,
                device="cpu",
                verbose=False,
            )
        except Exception as exc:  # Ultralytics raises many types (AssertionError, RuntimeError, ...)
            raise MotopsError(f"{pt_path}: ONNX export failed: {exc}") from exc
        model = onnx.load(str(written))
        if dynamic_batch:
            _pin_spatial_dims(model, size)
        if simplify:
            model = _slim(model)
        model.ir_version = min(model.ir_version, 10)  # onnxruntime reads IR <= 10 everywhere
        tmp_out = Path(tmp) / "out.onnx"
        _save_checked(model, tmp_out, out_path)
    return out_path


def export_reid(
    reid_pt: str | Path,
    out_path: str | Path,
    *,
    opset: int,
    dynamic_batch: bool,
    simplify: bool,
) -> Path:
    """Export a ReID checkpoint (:func:`motops.models.reid.save_reid`) to ONNX.

    Args:
        reid_pt: The checkpoint.
        out_path: Destination ``.onnx`` (parent folders are created).
        opset: ONNX opset (11..21).
        dynamic_batch: Make the batch axis symbolic (else the model takes one crop at a time).
        simplify: Run onnxslim on the graph.

    Returns:
        ``out_path``: input ``images`` ``(B, 3, H, W)`` float32 BGR 0..255 (``H, W`` from the
        checkpoint meta), output ``embeddings`` ``(B, D)`` L2-normalized; ``metadata_props``
        ``motops.input_size``, ``motops.channel_order``, ``motops.pixel_range``,
        ``motops.mean``, ``motops.std``, ``motops.embedding_dim``, ``motops.normalized_inside``
        (JSON values, read them with :func:`read_onnx_metadata`).

    Raises:
        FileNotFoundError: ``reid_pt`` does not exist.
        ValueError: it is not a ReID checkpoint.
        MotopsError: the result fails ``onnx.checker``.
    """
    import onnx
    import torch

    from motops.models.reid import load_reid

    out_path = Path(out_path)
    model, meta = load_reid(reid_pt)
    height, width = (int(v) for v in meta["input_size"])
    model.classifier = None  # training-only; not part of the inference graph
    dummy = torch.zeros((2 if dynamic_batch else 1, 3, height, width), dtype=torch.float32)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="motops-export-") as tmp:
        tmp_out = Path(tmp) / "reid.onnx"
        with torch.no_grad():
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp_out),
                opset_version=opset,
                input_names=[REID_INPUT],
                output_names=[REID_OUTPUT],
                dynamic_axes={REID_INPUT: {0: "batch"}, REID_OUTPUT: {0: "batch"}} if dynamic_batch else None,
                do_constant_folding=True,
                dynamo=False,
            )
        graph = onnx.load(str(tmp_out))
        if simplify:
            graph = _slim(graph)
        _set_metadata(
            graph,
            {
                "kind": "reid",
                "input_size": [height, width],
                "channel_order": meta.get("channel_order", "BGR"),
                "pixel_range": meta.get("pixel_range", [0, 255]),
                "mean": meta.get("mean"),
                "std": meta.get("std"),
                "normalized_inside": True,
                "embedding_dim": int(meta["embedding_dim"]),
                "source": Path(reid_pt).name,
            },
        )
        graph.ir_version = min(graph.ir_version, 10)
        _save_checked(graph, tmp_out, out_path)
    return out_path


# --------------------------------------------------------------------------- parity


def _greedy_match(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, iou)``: same class, ``a`` by descending score, each to its best free ``b`` above PAIR_IOU."""
    from motops.runtime.matching import iou_matrix

    if len(a) == 0 or len(b) == 0:
        return []
    iou = iou_matrix(a[:, :4], b[:, :4])
    iou[a[:, None, 5] != b[None, :, 5]] = 0.0
    free = np.ones(len(b), dtype=bool)
    pairs = []
    for i in np.argsort(-a[:, 4], kind="stable"):
        cand = np.where(free, iou[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] > PAIR_IOU:
            free[j] = False
            pairs.append((int(i), j, float(iou[i, j])))
    return pairs


def detector_parity(
    pt_path: str | Path,
    onnx_path: str | Path,
    frames: Sequence[np.ndarray],
    *,
    imgsz: int | Sequence[int],
    iou_min: float = 0.95,
    score_tol: float = 0.01,
    min_matched: float = 0.95,
    conf: float = 0.1,
    iou: float = 0.7,
) -> dict[str, Any]:
    """Compare the PyTorch and ONNX Runtime backends of one detector on real frames.

    Per frame, both backends' detections (``conf``, ``iou``, all classes) are matched greedily
    (same class, IoU above 0.5, highest score first). A box left unmatched whose score is within
    ``score_tol`` of ``conf`` is *borderline* (float rounding can move it across the
    threshold) and is not held against the export. The raw head outputs of the letterboxed
    frame (every anchor's class scores) are also compared.

    Args:
        pt_path: The Ultralytics ``.pt`` (run by Ultralytics' predictor).
        onnx_path: Its ONNX export (run by our letterbox/decode/NMS on ONNX Runtime, CPU).
        frames: BGR frames ``(h, w, 3)`` uint8, e.g. from the training footage.
        imgsz: Network input size the export was made at.
        iou_min: Smallest IoU a matched pair may have. Raising it demands closer boxes.
        score_tol: Largest score difference of a matched pair, and of any raw class score.
        min_matched: Smallest share of non-borderline boxes that must find a partner.
        conf: Detection threshold used for the comparison (low, so many boxes are compared).
        iou: NMS IoU threshold.

    Returns:
        ``{"kind": "detector", "model", "reference", "frames", "boxes_reference", "boxes_onnx",
        "matched", "borderline", "matched_fraction", "min_iou", "max_score_diff",
        "max_raw_score_diff", "worst_frame", "thresholds", "passed", "failures"}``; ``min_iou`` is
        1.0 and ``max_score_diff`` 0.0 when nothing was matched; ``worst_frame`` is the index into
        ``frames`` of the frame that fails (or comes closest to failing).

    Raises:
        ValueError: ``frames`` is empty.
    """
    import torch

    from motops.runtime.backends import letterbox, load_detector, to_blob

    if len(frames) == 0:
        raise ValueError("detector_parity needs at least one frame")
    size = _imgsz(imgsz)
    pt_path, onnx_path = Path(pt_path), Path(onnx_path)
    ref = load_detector(pt_path, backend="torch", imgsz=size, conf=conf, iou=iou, classes=None, device="cpu")
    ort = load_detector(
        onnx_path,
        backend="onnxruntime",
        imgsz=size,
        conf=conf,
        iou=iou,
        classes=None,
        device="cpu",
        intra_op_num_threads=PARITY_THREADS,
    )
    from ultralytics import YOLO

    net = YOLO(str(pt_path), task="detect").model.float().eval()
    per_frame = []
    totals = {"ref": 0, "onnx": 0, "matched": 0, "borderline": 0}
    all_ious: list[float] = []
    all_diffs: list[float] = []
    raw_worst = 0.0
    failures: list[str] = []
    for k, frame in enumerate(frames):
        a, b = ref(frame), ort(frame)
        pairs = _greedy_match(a, b)
        ia = {p[0] for p in pairs}
        ib = {p[1] for p in pairs}
        lone = [a[i, 4] for i in range(len(a)) if i not in ia] + [b[j, 4] for j in range(len(b)) if j not in ib]
        borderline = sum(1 for s in lone if s <= conf + score_tol)
        counted = max(len(a), len(b)) - borderline
        frac = 1.0 if counted <= 0 else min(1.0, len(pairs) / counted)
        ious = [p[2] for p in pairs]
        diffs = [abs(float(a[i, 4]) - float(b[j, 4])) for i, j, _ in pairs]
        with torch.no_grad():
            blob = to_blob(letterbox(frame, size)[0])
            raw_ref = net(torch.from_numpy(blob))
            raw_ref = (raw_ref[0] if isinstance(raw_ref, tuple | list) else raw_ref).numpy()
        raw_ort = ort.raw(frame)
        if raw_ref.shape != raw_ort.shape:
            failures.append(f"frame {k}: head output {raw_ort.shape} != PyTorch {raw_ref.shape} (wrong imgsz?)")
            raw_diff = float("inf")
        else:
            raw_diff = float(np.abs(raw_ref[:, 4:] - raw_ort[:, 4:]).max()) if raw_ref.shape[1] > 4 else 0.0
        raw_worst = max(raw_worst, raw_diff)
        per_frame.append(
            {
                "frac": frac,
                "min_iou": min(ious, default=1.0),
                "max_diff": max(diffs, default=0.0),
                "raw": raw_diff,
            }
        )
        totals["ref"] += len(a)
        totals["onnx"] += len(b)
        totals["matched"] += len(pairs)
        totals["borderline"] += borderline
        all_ious += ious
        all_diffs += diffs

    def badness(f: dict[str, float]) -> float:
        """How far a frame is from failing, as the worst ratio of measure to tolerance (> 1: fails)."""
        return max(
            (1.0 - f["frac"]) / max(1e-9, 1.0 - min_matched),
            (1.0 - f["min_iou"]) / max(1e-9, 1.0 - iou_min),
            f["max_diff"] / max(1e-9, score_tol),
            f["raw"] / max(1e-9, score_tol),
        )

    worst = int(np.argmax([badness(f) for f in per_frame]))
    wf = per_frame[worst]
    counted = max(totals["ref"], totals["onnx"]) - totals["borderline"]
    matched_fraction = 1.0 if counted <= 0 else min(1.0, totals["matched"] / counted)
    min_iou = min(all_ious, default=1.0)
    max_diff = max(all_diffs, default=0.0)
    if min(f["frac"] for f in per_frame) < min_matched:
        failures.append(
            f"frame {worst}: only {wf['frac']:.1%} of boxes matched (need {min_matched:.0%}); "
            f"{totals['ref']} PyTorch vs {totals['onnx']} ONNX boxes over {len(frames)} frames"
        )
    if min_iou < iou_min:
        failures.append(f"frame {worst}: matched boxes overlap with IoU {wf['min_iou']:.3f} < {iou_min}")
    if max_diff > score_tol:
        failures.append(f"frame {worst}: box scores differ by {wf['max_diff']:.4f} > {score_tol}")
    if raw_worst > score_tol and np.isfinite(raw_worst):
        failures.append(f"frame {worst}: raw class scores differ by up to {wf['raw']:.4f} > {score_tol}")
    return {
        "kind": "detector",
        "model": str(onnx_path),
        "reference": str(pt_path),
        "frames": len(frames),
        "boxes_reference": totals["ref"],
        "boxes_onnx": totals["onnx"],
        "matched": totals["matched"],
        "borderline": totals["borderline"],
        "matched_fraction": matched_fraction,
        "min_iou": min_iou,
        "max_score_diff": max_diff,
        "max_raw_score_diff": raw_worst,
        "worst_frame": worst,
        "thresholds": {"iou_min": iou_min, "score_tol": score_tol, "min_matched": min_matched, "conf": conf},
        "passed": not failures,
        "failures": failures,
    }


def as_crop_batch(crops: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """Crops as one ``(N, 3, H, W)`` float32 BGR 0..255 batch (the ReID network's input).

    Args:
        crops: ``(N, 3, H, W)`` (numpy or torch, e.g. from :func:`motops.data.crops.load_crops`),
            ``(N, H, W, 3)`` BGR uint8 images, or a sequence of ``(h, w, 3)`` BGR images.
        size: ``(H, W)`` to resize to (bilinear); ``None`` keeps the size (then all must match).
    """
    import cv2

    if hasattr(crops, "detach"):
        crops = crops.detach().cpu().numpy()
    if isinstance(crops, np.ndarray) and crops.ndim == 4 and crops.shape[1] == 3 and crops.shape[-1] != 3:
        arr = crops.astype(np.float32, copy=False)
        if size is not None and tuple(arr.shape[2:]) != tuple(size):
            imgs = [cv2.resize(c.transpose(1, 2, 0), (size[1], size[0])) for c in arr]
            arr = np.stack(imgs).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(arr, dtype=np.float32)
    images = list(crops)
    if not images:
        raise ValueError("no crops given")
    if size is not None:
        images = [
            im if im.shape[:2] == tuple(size) else cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            for im in images
        ]
    shapes = {im.shape for im in images}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise ValueError(f"crops must be BGR (h, w, 3) images of one size or given a size, got shapes {shapes}")
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)


def ort_embed(session: Any, batch: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """Run a ReID ONNX session over ``batch`` ``(N, 3, H, W)`` in chunks -> ``(N, D)`` float32.

    A model with a fixed batch of 1 is run crop by crop.
    """
    inp = session.get_inputs()[0]
    step = 1 if inp.shape[0] == 1 else batch_size
    parts = [session.run(None, {inp.name: batch[i : i + step]})[0] for i in range(0, len(batch), step)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def reid_parity(
    reid_pt: str | Path,
    onnx_path: str | Path,
    crops: Any,
    cos_min: float = 0.999,
    *,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Compare the PyTorch and ONNX Runtime embeddings of the same crops.

    Args:
        reid_pt: The checkpoint (:func:`motops.models.reid.save_reid`).
        onnx_path: Its export.
        crops: Crops in any form :func:`as_crop_batch` takes (resized to the checkpoint's input size).
        cos_min: Smallest cosine similarity any crop may have between the two. Raising it
            demands closer embeddings.
        batch_size: Crops per ONNX Runtime call.

    Returns:
        ``{"kind": "reid", "model", "reference", "crops", "min_cosine", "mean_cosine",
        "worst_crop", "thresholds", "passed", "failures"}``.
    """
    import torch

    from motops.models.reid import load_reid
    from motops.runtime.backends import ort_session

    reid_pt, onnx_path = Path(reid_pt), Path(onnx_path)
    model, meta = load_reid(reid_pt)
    batch = as_crop_batch(crops, tuple(meta["input_size"]))
    with torch.no_grad():
        ref = torch.cat([model(torch.from_numpy(batch[i : i + 64])) for i in range(0, len(batch), 64)]).numpy()
    session = ort_session(onnx_path, device="cpu", intra_op_num_threads=PARITY_THREADS)
    got = ort_embed(session, batch, batch_size=batch_size)
    failures: list[str] = []
    if got.shape != ref.shape:
        failures.append(f"embeddings {got.shape} != PyTorch {ref.shape}")
        cos = np.full(len(batch), -1.0)
    else:
        cos = _row_cosine(ref, got)
    worst = int(np.argmin(cos))
    if cos[worst] < cos_min:
        failures.append(f"crop {worst}: cosine {cos[worst]:.5f} < {cos_min} (mean {cos.mean():.5f})")
    return {
        "kind": "reid",
        "model": str(onnx_path),
        "reference": str(reid_pt),
        "crops": len(batch),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "worst_crop": worst,
        "thresholds": {"cos_min": cos_min},
        "passed": not failures,
        "failures": failures,
    }


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of ``a`` and ``b`` ``(N, D)`` -> ``(N,)`` (0 for a zero row)."""
    num = (a.astype(np.float64) * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def check_parity(report: Mapping[str, Any]) -> Mapping[str, Any]:
    """Raise :class:`ParityError` when a parity report failed, else return it.

    The message names the exported file, its reference and the worst frame/crop.
    """
    if not report.get("passed", False):
        raise ParityError(report)
    return report
