"""Which detector (and ReID) of a bundle runs on this device, on which runtime, and why.

Called by :func:`motops.runtime.bundle.load_bundle` for the ONNX models (TensorRT plans are
chosen before, in ``load_bundle``). Three decisions, each recorded in one reason:

1. **Precision** of the detector: :func:`motops.runtime.hardware.choose_precision` (INT8 where
   the CPU has VNNI/AMX and the manifest's recorded mAP50 cost is within
   ``max_map50_drop``; FP32 elsewhere). An INT8 model that is missing, altered (it failed
   verification) or does not load falls back to FP32 with a logged reason -- unless INT8 was
   demanded (``int8=True``) or the manifest requires it (``variants.detector.int8.required``),
   where it is a one-line error naming the file.
2. **Runtime**: ``onnxruntime``, ``openvino`` (an error naming the extra when it is not
   installed) or, for ``auto`` on a CPU with OpenVINO installed, whichever runs this
   bundle's detector faster *on this device*, timed at load: both runtimes compile the same
   file and run it interleaved (:data:`PROBE_ROUNDS` rounds of :data:`PROBE_SECONDS` each, the
   fastest round counts; about a second for the default 256 x 416 YOLOv8n on 2 cores).
   OpenVINO must be :data:`OPENVINO_MIN_GAIN` faster to be picked, so that noise on a shared CPU
   does not flip the choice. Where INT8 was chosen (and not demanded), the FP32 model on
   OpenVINO is timed too and runs instead when it is that much faster: on AMX CPUs OpenVINO
   runs FP32 models in bf16, which beat the INT8 QDQ model on both runtimes on a Xeon (3.9 ms
   against 7.3 and 10.4 ms for the 256 x 416 detector). A measurement at load rather than a table per CPU family:
   the ratio depends on the model, its input size, the thread count and the OpenVINO/ONNX
   Runtime versions as much as on the CPU (issue #14: ×2.8 on a Xeon with AMX, bf16), and a
   table goes stale with each of them.
3. **OpenVINO's precision**: its default hint (bf16 on AMX / AVX-512 BF16 CPUs) is kept only
   where the manifest records the ``openvino`` variant's accuracy at that precision within
   ``max_map50_drop``; otherwise the model is compiled with ``f32`` (the FP32 model's numbers).

The ReID follows the runtime asked for: ``openvino`` runs it on OpenVINO; ``auto`` and
``onnxruntime`` keep ONNX Runtime and its INT8 ReID on the CPU (measured ×1.47 FP32 on the
AVX2-only EPYC the release bundle was exported on, manifest ``extra.int8.reid``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from motops.errors import MotopsError
from motops.runtime import hardware
from motops.runtime.backends import BackendUnavailable, Detector, ModelFormatError, ReID, load_detector, load_reid

logger = logging.getLogger(__name__)

RUNTIMES: Final = ("auto", "onnxruntime", "openvino")
#: OpenVINO is picked by ``auto`` only when at least this much faster than ONNX Runtime at load.
OPENVINO_MIN_GAIN: Final = 1.10
PROBE_ROUNDS: Final = 3
#: Seconds each runtime runs per round of the load-time timing (at least two calls).
PROBE_SECONDS: Final = 0.08
#: Roles whose problems never make a bundle unusable on their own: the FP32 model runs instead.
OPTIONAL_ROLES: Final = ("detector_int8", "reid_int8")


class Int8Unavailable(BackendUnavailable):
    """INT8 was demanded (``int8=True`` or the manifest requires it) and its model is missing or broken."""


def optional_problems(report: Any, int8: bool | str, manifest: Mapping[str, Any]) -> dict[str, str]:
    """The verification problems of optional INT8 models, ``{role: "FILE: problem"}``, when they may be skipped.

    Args:
        report: A :class:`~motops.runtime.bundle.BundleReport`.
        int8: ``load_bundle``'s ``int8``.
        manifest: The bundle's manifest.

    Returns:
        ``{}`` when the report has a problem elsewhere (the bundle is refused as a whole), or
        when INT8 is demanded (then the INT8 model's problem refuses the bundle too).
    """
    files = manifest.get("files", {}) if isinstance(manifest, Mapping) else {}
    role_of = {name: e.get("role") for name, e in files.items() if isinstance(e, Mapping)}
    found: dict[str, str] = {}
    for problem in report.problems:
        role = role_of.get(problem.file)
        if role not in OPTIONAL_ROLES:
            return {}
        found.setdefault(role, f"{problem.file}: {problem.message}")
    if "detector_int8" in found and (int8 is True or hardware.int8_required(manifest)):
        return {}
    return found


def _detector_on(runtime: str, path: Path, det_kwargs: Mapping[str, Any], threads: int,
                 precision: str = "default") -> Detector:
    if runtime == "openvino":
        from motops.runtime.openvino import OpenVINODetector

        kwargs = {k: v for k, v in det_kwargs.items() if k != "device"}
        kwargs.setdefault("imgsz", (640, 640))
        return OpenVINODetector(path, threads=threads, precision=precision, device="cpu", **kwargs)
    return load_detector(path, backend="onnxruntime", intra_op_num_threads=threads, **det_kwargs)


def _openvino_detector(path: Path, det_kwargs: Mapping[str, Any], threads: int, manifest: Mapping[str, Any],
                       max_map50_drop: float) -> tuple[Detector, str]:
    """OpenVINO at its default precision where that is f32 or its recorded cost is within bounds, else f32."""
    det = _detector_on("openvino", path, det_kwargs, threads)
    precision = det.inference_precision  # type: ignore[attr-defined]
    if precision == "f32":
        return det, "f32"
    entry = hardware.detector_variants(manifest).get("openvino", {})
    drop = hardware.recorded_drop(manifest, "openvino")
    if entry.get("inference_precision") == precision and drop is not None and drop <= max_map50_drop:
        return det, f"{precision} (recorded cost {100 * drop:.1f} mAP50 points)"
    det = _detector_on("openvino", path, det_kwargs, threads, precision="f32")
    return det, f"f32 (its default here is {precision}, whose accuracy cost the manifest does not record within bounds)"


def _race(candidates: list[tuple[str, Detector]]) -> tuple[int, str]:
    """Time ``candidates`` (``(label, detector)``, the default first) on one frame, interleaved.

    Returns the index of the one to run and the timing line. Another candidate replaces the
    first only when at least :data:`OPENVINO_MIN_GAIN` faster (noise on a shared CPU must not
    flip the choice); among those, the fastest.
    """
    from motops.runtime.backends import letterbox, to_blob
    from motops.runtime.timing import compare_speed

    first = candidates[0][1]
    h, w = first.imgsz
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    blob = to_blob(letterbox(frame, first.imgsz)[0])
    runners = {label: (lambda d=det: d._forward(blob)) for label, det in candidates}  # type: ignore[attr-defined]
    ms = {label: 1000 * t for label, t in compare_speed(runners, rounds=PROBE_ROUNDS, seconds=PROBE_SECONDS).items()}
    shown = candidates[1:] + candidates[:1]  # "openvino ..., onnxruntime ..." for the usual pair
    timing = "timed at load: " + ", ".join(f"{label} {ms[label]:.1f} ms" for label, _ in shown) + " per detector run"
    best = min(range(len(candidates)), key=lambda i: ms[candidates[i][0]])
    if best == 0:
        return 0, timing
    gain = ms[candidates[0][0]] / ms[candidates[best][0]]
    if gain >= OPENVINO_MIN_GAIN:
        return best, f"{timing} (x{gain:.2f} >= x{OPENVINO_MIN_GAIN})"
    return 0, f"{timing} (x{gain:.2f} < x{OPENVINO_MIN_GAIN})"


def _load_runtime(runtime: str, path: Path, det_kwargs: Mapping[str, Any], threads: int,
                  manifest: Mapping[str, Any], max_map50_drop: float, hw: hardware.Hardware,
                  on_cpu: bool, fp32_path: Path | None = None) -> tuple[Detector, str]:
    """``path``'s detector on ``runtime``, and how it was chosen.

    ``auto`` on a CPU with OpenVINO installed times ``path`` on ONNX Runtime (the default) and on
    OpenVINO; with ``fp32_path`` (``path`` is the INT8 model) also the FP32 model on OpenVINO,
    which on AMX CPUs runs bf16 and can beat INT8 on either runtime (the returned detector's
    ``path`` says which model won).
    """
    if runtime == "onnxruntime":
        return _detector_on("onnxruntime", path, det_kwargs, threads), "onnxruntime (asked for)"
    if runtime == "openvino":
        det, precision = _openvino_detector(path, det_kwargs, threads, manifest, max_map50_drop)
        return det, f"openvino {precision} (asked for)"
    if not on_cpu:
        return _detector_on("onnxruntime", path, det_kwargs, threads), "onnxruntime (on the GPU)"
    if hw.openvino is None:
        return _detector_on("onnxruntime", path, det_kwargs, threads), (
            "onnxruntime (OpenVINO is not installed: pip install 'motops[openvino]' to let auto time it)"
        )

    def named(runtime_name: str, file: Path) -> str:  # name the files only when two models are timed
        return f"{runtime_name} ({file.name})" if fp32_path is not None else runtime_name

    ort = _detector_on("onnxruntime", path, det_kwargs, threads)
    candidates: list[tuple[str, Detector]] = [(named("onnxruntime", path), ort)]
    precisions: dict[str, str] = {}
    problems: list[str] = []
    for file in (path, fp32_path):
        if file is None:
            continue
        try:
            det, precision = _openvino_detector(file, det_kwargs, threads, manifest, max_map50_drop)
        except MotopsError as exc:
            problems.append(f"OpenVINO could not run {file.name}: {str(exc).splitlines()[0]}")
            continue
        precisions[named("openvino", file)] = precision
        candidates.append((named("openvino", file), det))
    if len(candidates) == 1:
        return ort, f"onnxruntime ({'; '.join(problems)})"
    index, timing = _race(candidates)
    label, det = candidates[index]
    if index == 0:
        return det, f"onnxruntime: {timing}"
    return det, f"openvino {precisions[label]}: {timing}"


def load_device_detector(
    root: Path,
    roles: Mapping[str, str],
    manifest: Mapping[str, Any],
    *,
    runtime: str,
    int8: bool | str,
    device: str,
    det_kwargs: Mapping[str, Any],
    threads: int,
    max_map50_drop: float,
    on_gpu: bool,
    skipped: Mapping[str, str] | None = None,
    hw: hardware.Hardware | None = None,
) -> tuple[Detector, str]:
    """The bundle's ONNX detector for this device and the one-line reason (``detector.variant`` is set to it).

    Args:
        root: The bundle folder.
        roles: ``{role: file}`` from the manifest.
        manifest: The manifest.
        runtime: ``auto``, ``onnxruntime`` or ``openvino``.
        int8: ``auto``, ``True`` or ``False`` (see :func:`~motops.runtime.hardware.choose_precision`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        det_kwargs: ``load_detector`` keyword arguments (``conf``, ``iou``, ``classes``, ``device``, ``imgsz``).
        threads: Threads per operator (ONNX Runtime ``intra_op_num_threads``, OpenVINO
            ``INFERENCE_NUM_THREADS``; ``0``: automatic).
        max_map50_drop: ``track.int8_max_map50_drop``.
        on_gpu: ONNX Runtime runs on a GPU.
        skipped: ``{role: reason}`` of INT8 models that failed verification (:func:`optional_problems`).
        hw: The device (:func:`~motops.runtime.hardware.probe` when ``None``).

    Returns:
        ``(detector, reason)``, e.g. ``"int8: CPU has avx512_vnni and the INT8 detector costs 0.4 mAP50
        points <= 1.0; detector.int8.onnx on onnxruntime: timed at load: ..."``.

    Raises:
        Int8Unavailable: INT8 was demanded and ``detector.int8.onnx`` is missing, altered or broken.
        BackendUnavailable: ``openvino`` asked for and not installed, or on a GPU device.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}; expected one of {list(RUNTIMES)}")
    hw = hw or hardware.probe()
    skipped = dict(skipped or {})
    if runtime == "openvino":
        if device not in ("auto", "cpu"):
            raise BackendUnavailable(f"{root}: backend='openvino' runs on the CPU here; got device={device!r}")
        from motops.runtime.openvino import require_openvino

        require_openvino(root)
        on_gpu = False
    listed = "detector_int8" in roles
    choice = hardware.choose_precision(hw, manifest, has_int8=listed, int8=int8, max_map50_drop=max_map50_drop,
                                       on_gpu=on_gpu)
    demanded = int8 is True or hardware.int8_required(manifest)
    int8_name = roles.get("detector_int8", hardware.INT8_DETECTOR_FILE)
    fallback = ""
    if choice.variant == "int8" and (not listed or "detector_int8" in skipped):
        why = skipped.get("detector_int8") or f"{int8_name}: not in the bundle's manifest"
        if demanded:
            raise Int8Unavailable(f"{root}: INT8 detector required ({choice.reason}), but {why}")
        logger.warning("%s: INT8 detector skipped (%s); running FP32", root, why)
        choice = hardware.Choice("fp32", f"{why}, fell back to FP32 (INT8 chosen: {choice.reason})")
    elif "detector_int8" in skipped:
        fallback = f"; {skipped['detector_int8']} (INT8 not used)"
    on_cpu = not on_gpu and device in ("auto", "cpu")
    if choice.variant == "int8":
        path = root / roles["detector_int8"]
        fp32_path = None if demanded or "detector" not in roles else root / roles["detector"]
        try:
            det, how = _load_runtime(runtime, path, det_kwargs, threads, manifest, max_map50_drop, hw, on_cpu,
                                     fp32_path=fp32_path)
        except (ModelFormatError, FileNotFoundError) as exc:
            first = str(exc).splitlines()[0]
            if demanded:
                raise Int8Unavailable(f"{root}: INT8 detector required ({choice.reason}), but {first}") from exc
            logger.warning("%s: the INT8 detector does not load (%s); running FP32", root, first)
            choice = hardware.Choice("fp32", f"{int8_name} does not load ({first}), fell back to FP32")
        else:
            if det.path == fp32_path:
                reason = f"fp32: INT8 allowed ({choice.reason}), but {fp32_path.name} on {how}"
                det.variant = reason  # type: ignore[attr-defined]
                return det, reason
            reason = f"int8: {choice.reason}; {path.name} on {how}"
            det.variant = reason  # type: ignore[attr-defined]
            return det, reason
    path = root / roles["detector"]
    det, how = _load_runtime(runtime, path, det_kwargs, threads, manifest, max_map50_drop, hw, on_cpu)
    reason = f"fp32: {choice.reason}{fallback}; {path.name} on {how}"
    det.variant = reason  # type: ignore[attr-defined]
    return det, reason


def load_device_reid(
    root: Path,
    roles: Mapping[str, str],
    *,
    runtime: str,
    int8: bool | str,
    device: str,
    threads: int,
    on_gpu: bool,
    skipped: Mapping[str, str] | None = None,
) -> tuple[ReID, str]:
    """The bundle's ReID for this device and why (INT8 on the CPU when present and intact; see the module docstring)."""
    skipped = dict(skipped or {})
    has_int8 = "reid_int8" in roles and "reid_int8" not in skipped
    if int8 is True and not has_int8 and "reid_int8" in skipped:
        raise Int8Unavailable(f"{root}: int8=True, but {skipped['reid_int8']}")
    use_int8 = has_int8 and (int8 is True or (int8 == "auto" and not on_gpu))
    if use_int8:
        why = "INT8 QDQ (int8=True)" if int8 is True else "INT8 QDQ: preferred on the CPU"
    elif int8 is False:
        why = "FP32 (int8=False)"
    elif "reid_int8" in skipped:
        why = f"FP32: {skipped['reid_int8']} (skipped)"
        logger.warning("%s: INT8 ReID skipped (%s)", root, skipped["reid_int8"])
    else:
        why = "FP32: on a GPU" if on_gpu else "FP32: no INT8 model of it in the bundle"
    path = root / roles["reid_int8" if use_int8 else "reid"]

    def load(file: Path) -> ReID:
        if runtime == "openvino":
            from motops.runtime.openvino import load_openvino_reid

            return load_openvino_reid(file, threads=threads)
        return load_reid(file, backend="onnxruntime", device=device, intra_op_num_threads=threads)

    name = "openvino" if runtime == "openvino" else "onnxruntime"
    try:
        return load(path), f"{path.name} ({name}): {why}"
    except (ModelFormatError, FileNotFoundError) as exc:
        if not use_int8 or int8 is True:
            raise
        first = str(exc).splitlines()[0]
        logger.warning("%s: the INT8 ReID does not load (%s); running FP32", root, first)
        path = root / roles["reid"]
        return load(path), f"{path.name} ({name}): FP32: the INT8 ReID does not load ({first})"


def describe_variant(bundle_dir: str | Path | None, *, max_map50_drop: float = hardware.DEFAULT_MAX_MAP50_DROP,
                     hw: hardware.Hardware | None = None) -> str:
    """One line for ``motops edge status``: the detector variant this device runs from ``bundle_dir``, and why.

    Reads only ``manifest.json`` (no hashing, no model loaded): the precision follows
    :func:`~motops.runtime.hardware.choose_precision`; the runtime (ONNX Runtime or OpenVINO) is
    timed when ``motops track`` loads the bundle, so the line says which candidates there are.
    """
    import json

    if bundle_dir is None:
        return "none: no engine installed"
    manifest_path = Path(bundle_dir) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest.get("files", {})
    except (OSError, ValueError, AttributeError) as exc:
        return f"unknown: {manifest_path} is not readable ({exc})"
    hw = hw or hardware.probe()
    roles = {e.get("role") for e in files.values() if isinstance(e, Mapping)}
    gpu = hw.gpu is not None and hw.gpu.startswith("onnxruntime")
    choice = hardware.choose_precision(hw, manifest, has_int8="detector_int8" in roles, max_map50_drop=max_map50_drop,
                                       on_gpu=gpu)
    if hw.openvino is None:
        runtime = "onnxruntime (OpenVINO not installed)"
    else:
        runtime = f"onnxruntime or openvino {hw.openvino}, whichever is faster when the bundle is loaded"
        if choice.variant == "int8" and not gpu:
            runtime += " (the FP32 model on openvino is timed too)"
    plans = sorted(n for n, e in files.items() if isinstance(e, Mapping) and str(e.get("role", "")).startswith("plan_"))
    gpu_note = f"; GPU: {hw.gpu}, a TensorRT plan for it first ({len(plans)} in the bundle)" if hw.gpu else ""
    return f"{choice.line()}; on {runtime}{gpu_note}; CPU: {hw.isa()}"
