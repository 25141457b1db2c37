"""Detector and ReID backends: PyTorch, ONNX Runtime and TensorRT behind one call interface.

A detector is a callable ``frame_bgr (H, W, 3) uint8 -> (N, 6) float32`` detections
``[x1, y1, x2, y2, conf, cls]`` in pixels of the original frame (see
:mod:`motops.runtime.types`); a ReID model is a callable ``(frame_bgr, boxes_xyxy (N, 4)) ->
(N, D) float32`` of L2-normalized embeddings, the ``reid`` hook of
:func:`motops.runtime.make_tracker`. Build them with :func:`load_detector` and
:func:`load_reid`.

Backends and what each one does:

=============  ==============================  =================================================
backend        files                           pre/post-processing
=============  ==============================  =================================================
torch          detector ``.pt`` (Ultralytics)  Ultralytics' own predictor (``YOLO.predict``)
               ReID ``.ts``/``.torchscript``,  ours (crop, resize, normalize)
               ``.pt``/``.pth`` or a Module
onnxruntime    ``.onnx`` (FP32, FP16, INT8     ours, see below
               QDQ alike)
tensorrt       detector ``.engine``/``.plan``  ours, as for onnxruntime; inference on CUDA through
                                               ``tensorrt`` + ``cuda-python`` (no torch)
=============  ==============================  =================================================

The ONNX/TensorRT detector path reproduces Ultralytics' predictor, so every backend of one
model gives the same boxes:

1. *Letterbox* to the network's input size (its static ``H, W`` or ``imgsz``): scale by
   ``r = min(H / h, W / w)`` (also up), resize with bilinear interpolation to
   ``(round(w r), round(h r))``, pad to ``(H, W)`` with grey 114, the padding split between
   both sides (``round(d/2 - 0.1)`` before, ``round(d/2 + 0.1)`` after); then BGR to RGB,
   ``/ 255``, ``NCHW`` float32 (float16 for a half-precision model).
2. *Decode* the YOLOv8 head output ``(1, 4 + nc, A)``: rows ``cx, cy, w, h`` in input
   pixels, then one sigmoid score per class for each of the ``A`` anchors. A box keeps its
   best class and that class's score; boxes scoring ``<= conf`` are dropped, then those
   whose best class is not in ``classes``. An end-to-end head ``(1, K, 6)`` (``x1, y1, x2,
   y2, score, cls``, NMS inside the model) is also read: only the ``conf``/``classes`` filter
   applies to it.
3. *Class-wise NMS* in numpy: greedy by score, a box is suppressed when its IoU with a kept
   box of the same class exceeds ``iou`` (classes are kept apart by offsetting the boxes of
   class ``c`` by ``c * 7680`` px, as Ultralytics does); at most ``max_det`` boxes are kept.
4. *Scale back*: subtract the padding, divide by the per-axis resize gain, clip to the frame.

Heavy and optional imports (``ultralytics``, ``onnxruntime``, ``tensorrt``, ``torch``) happen
inside the functions that need them, so importing this module is cheap and works on an edge
device with only one runtime installed.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np

from motops.errors import DataFormatError, MotopsError
from motops.runtime.types import DTYPE, empty_detections

logger = logging.getLogger(__name__)

DETECTOR_BACKENDS: Final = ("torch", "onnxruntime", "tensorrt", "openvino")
REID_BACKENDS: Final = ("torch", "onnxruntime", "openvino")
BACKEND_CHOICES: Final = ("auto", *DETECTOR_BACKENDS)

DETECTOR_SUFFIXES: Final = {".pt": "torch", ".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}
REID_SUFFIXES: Final = {
    ".ts": "torch",
    ".torchscript": "torch",
    ".pt": "torch",
    ".pth": "torch",
    ".onnx": "onnxruntime",
}

#: Grey value of the letterbox padding (Ultralytics' value; the detector was trained with it).
PAD_VALUE: Final = 114
#: Per-class box offset (pixels) that keeps classes apart in one NMS pass (Ultralytics' ``max_wh``).
CLASS_OFFSET_PX: Final = 7680.0
#: Most detections kept per frame (Ultralytics' predictor default).
MAX_DET: Final = 300
#: Candidates entering NMS at most (by score); more only happens with a broken model or ``conf=0``.
MAX_NMS: Final = 30000
#: ImageNet channel statistics (RGB); what torchvision-style backbones, and so most ReID nets, expect.
IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)
#: Crops per ReID forward pass at most, so a crowded frame cannot exhaust (GPU) memory.
REID_MAX_BATCH: Final = 64
#: ``(H, W)`` of a ReID crop when neither the caller nor the model fixes it (the usual person ReID size).
DEFAULT_REID_SIZE: Final = (128, 64)

Array = np.ndarray


class BackendUnavailable(MotopsError, RuntimeError):
    """The requested backend cannot run here (no CUDA, TensorRT or ONNX Runtime provider missing)."""


class ModelFormatError(DataFormatError):
    """A file exists but is not a model the backend can load, or has unexpected inputs/outputs."""


# --------------------------------------------------------------------------- shared helpers



#: Prefix of motops' own ONNX metadata keys (see :mod:`motops.export.onnx_export`).
ONNX_META_PREFIX = "motops."

def _check_choice(value: str, valid: Sequence[str], what: str) -> None:
    if value not in valid:
        close = difflib.get_close_matches(str(value), list(valid), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"{what}={value!r}{hint}; expected one of {list(valid)}")


def _existing_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} file not found")
    if not path.is_file():
        raise ModelFormatError(path, f"{what} must be a model file, got a folder")
    return path


def _cuda_device_index(device: str) -> int:
    if device == "cuda":
        return 0
    try:
        return int(device.split(":", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"device={device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None


def _check_device(device: str) -> None:
    if device not in ("auto", "cpu"):
        _cuda_device_index(device)


def _torch_device(device: str) -> str:
    """Resolve ``auto`` to ``cuda:0`` when torch sees a GPU, else ``cpu``; refuse an absent GPU."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    index = _cuda_device_index(device)
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"device={device!r}: torch sees no CUDA device (torch.cuda.is_available() is False)")
    if index >= torch.cuda.device_count():
        raise BackendUnavailable(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return f"cuda:{index}"


def ort_session(path: Path, *, device: str = "auto", intra_op_num_threads: int = 0, spin: bool = False) -> Any:
    """Open an ONNX Runtime session on the CUDA provider when available, else on the CPU.

    Args:
        path: The ``.onnx`` file.
        device: ``auto`` (CUDA provider if installed, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        intra_op_num_threads: Threads one operator may use; ``0`` lets ONNX Runtime choose (one
            per physical core). Lower it when other processes share the CPU.
        spin: Let ONNX Runtime's worker threads busy-wait for the next run (its own default).
            Off here: between two detector runs the tracker decodes frames and computes optical
            flow on the other cores, and spinning workers take those cores from it. Measured on
            2 cores (``bench/track_speed.py``'s footage): every-frame tracking the same FPS,
            ``detect_every 3`` 57 -> 61 FPS (the detector's runs 42 -> 38 ms, as the flow thread
            no longer fights the spinning workers).

    Returns:
        An ``onnxruntime.InferenceSession``.

    Raises:
        BackendUnavailable: ``onnxruntime`` is not installed, or ``cuda`` was asked for and the
            CUDA provider is missing.
        ModelFormatError: The file is not a loadable ONNX model.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"{path}: the onnxruntime backend needs the 'onnxruntime' package ({exc})") from exc
    if isinstance(intra_op_num_threads, bool) or not isinstance(intra_op_num_threads, int) or intra_op_num_threads < 0:
        raise ValueError(f"intra_op_num_threads={intra_op_num_threads!r}; expected an integer >= 0 (0 = automatic)")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    providers: list[Any]
    if device == "cpu" or (device == "auto" and not has_cuda):
        providers = ["CPUExecutionProvider"]
    else:
        if not has_cuda:
            raise BackendUnavailable(
                f"{path}: device={device!r} needs ONNX Runtime's CUDAExecutionProvider, which is not available "
                f"here (providers: {available}); install onnxruntime-gpu or use device='cpu'"
            )
        index = 0 if device == "auto" else _cuda_device_index(device)
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        raise ModelFormatError(path, f"not a valid ONNX model: {str(exc).strip()[:300]}") from exc


def _static_dim(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


# --------------------------------------------------------------------------- detector pre/post-processing


def letterbox(frame: Array, shape: tuple[int, int]) -> tuple[Array, tuple[float, float, int, int]]:
    """Resize keeping the aspect ratio and pad to ``shape``, as Ultralytics' ``LetterBox`` does.

    Args:
        frame: BGR image ``(h, w, 3)`` uint8.
        shape: Network input ``(H, W)``.

    Returns:
        ``(image (H, W, 3) uint8, (gain_x, gain_y, pad_x, pad_y))``: input pixel
        ``= frame pixel * gain + pad``.
    """
    h, w = frame.shape[:2]
    new_h, new_w = shape
    r = min(new_h / h, new_w / w)
    unpad_w, unpad_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    img = frame
    if (w, h) != (unpad_w, unpad_h):
        img = cv2.resize(frame, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return img, (unpad_w / w, unpad_h / h, left, top)


def to_blob(img: Array, dtype: Any = np.float32) -> Array:
    """``(H, W, 3)`` BGR uint8 -> ``(1, 3, H, W)`` RGB in ``[0, 1]``, contiguous."""
    rgb = img[..., ::-1].transpose(2, 0, 1)[None]
    return np.ascontiguousarray(rgb, dtype=dtype) / np.asarray(255, dtype=dtype)


def nms(boxes: Array, scores: Array, iou: float, max_det: int = MAX_DET) -> Array:
    """Greedy non-maximum suppression (OpenCV's ``cv2.dnn.NMSBoxes`` underneath).

    Args:
        boxes: ``(N, 4)`` xyxy.
        scores: ``(N,)``.
        iou: A box is dropped when its IoU with a kept, higher-scoring box exceeds this.
        max_det: Stop after keeping this many boxes.

    Returns:
        Indices of the kept boxes, highest score first; equal scores keep their input order.
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # OpenCV breaks score ties in its own order; ranking first (stable) makes the result
    # depend on the input order only, and the ranks (all > 0) pass its score threshold.
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranked = boxes[order].astype(np.float64)
    xywh = np.concatenate([ranked[:, :2], np.clip(ranked[:, 2:] - ranked[:, :2], 0, None)], axis=1)
    rank_scores = np.arange(n, 0, -1, dtype=np.float32)
    kept = np.asarray(cv2.dnn.NMSBoxes(xywh, rank_scores, 0.0, float(iou)), dtype=np.int64).reshape(-1)
    return order[np.sort(kept)[:max_det]]


def decode_yolo(
    output: Array,
    *,
    conf: float,
    iou: float,
    classes: Sequence[int] | None,
    max_det: int = MAX_DET,
) -> Array:
    """Detections of one image from a raw YOLO head output, in network-input pixels.

    Args:
        output: ``(4 + nc, A)`` (YOLOv8 head: ``cx, cy, w, h``, class scores) or ``(K, 6)``
            (end-to-end head: ``x1, y1, x2, y2, score, cls``).
        conf: Keep boxes scoring above this.
        iou: NMS IoU threshold.
        classes: Keep only these class indices (``None``: all).
        max_det: Most boxes kept.

    Returns:
        ``(N, 6)`` float32 ``[x1, y1, x2, y2, conf, cls]``.
    """
    output = np.asarray(output, dtype=np.float32)
    wanted = None if classes is None else np.asarray(list(classes), dtype=np.float32)
    if output.ndim == 2 and output.shape[1] == 6 and output.shape[0] != 6:  # end-to-end head
        keep = output[:, 4] > conf
        if wanted is not None:
            keep &= np.isin(output[:, 5], wanted)
        return np.ascontiguousarray(output[keep][:max_det], dtype=DTYPE)
    scores_all = output[4:]
    best = scores_all.argmax(axis=0)
    score = scores_all[best, np.arange(output.shape[1])]
    keep = score > conf
    if wanted is not None:
        keep &= np.isin(best, wanted)
    if not keep.any():
        return empty_detections()
    cx, cy, w, h = output[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    score, cls = score[keep], best[keep].astype(np.float32)
    if len(score) > MAX_NMS:
        top = np.argsort(-score, kind="stable")[:MAX_NMS]
        boxes, score, cls = boxes[top], score[top], cls[top]
    kept = nms(boxes + cls[:, None] * CLASS_OFFSET_PX, score, iou, max_det)
    return np.concatenate([boxes[kept], score[kept, None], cls[kept, None]], axis=1).astype(DTYPE)


def scale_back(dets: Array, ratio_pad: tuple[float, float, int, int], frame_shape: tuple[int, ...]) -> Array:
    """Map ``(N, 6)`` detections from network-input pixels to frame pixels (clipped to the frame)."""
    gain_x, gain_y, pad_x, pad_y = ratio_pad
    out = dets.copy()
    out[:, [0, 2]] = np.clip((out[:, [0, 2]] - pad_x) / gain_x, 0, frame_shape[1])
    out[:, [1, 3]] = np.clip((out[:, [1, 3]] - pad_y) / gain_y, 0, frame_shape[0])
    return out


# --------------------------------------------------------------------------- detectors


class Detector:
    """A detector: ``detector(frame_bgr) -> (N, 6)`` float32 ``[x1, y1, x2, y2, conf, cls]``.

    Build one with :func:`load_detector`. Boxes are in pixels of the frame passed in.

    Attributes:
        backend: ``torch``, ``onnxruntime`` or ``tensorrt``.
        path: The model file.
        imgsz: Network input ``(H, W)``.
        device: Where inference runs (``cpu``, ``cuda:0``, ...).
        conf: Score threshold: boxes at or below it are dropped.
        iou: NMS IoU threshold.
        classes: Class indices kept (``None``: all).
    """

    backend: str = ""

    def __init__(
        self,
        path: Path,
        *,
        imgsz: tuple[int, int],
        conf: float,
        iou: float,
        classes: tuple[int, ...] | None,
        device: str,
    ) -> None:
        self.path = path
        self.imgsz = imgsz
        self.conf = conf
        self.iou = iou
        self.classes = classes
        self.device = device

    def __call__(self, frame: Array) -> Array:
        self._check_frame(frame)
        return self._detect(frame)

    def with_iou(self, iou: float) -> Detector:
        """This detector (the same loaded model) suppressing overlaps above ``iou`` instead."""
        if iou == self.iou:
            return self
        other = copy.copy(self)
        other.iou = iou
        return other

    def detect_each_iou(self, frame: Array, ious: Sequence[float]) -> dict[float, Array]:
        """``{iou: (N, 6) detections}`` of one frame for each NMS IoU threshold in ``ious``.

        For sweeps: backends whose NMS is ours run the network once and suppress at each IoU.
        """
        self._check_frame(frame)
        return {float(iou): self.with_iou(float(iou))._detect(frame) for iou in ious}

    def _check_frame(self, frame: Array) -> None:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", type(frame).__name__)
            raise ValueError(f"{self!r}: expected a BGR frame (H, W, 3) uint8, got {shape}")

    def _detect(self, frame: Array) -> Array:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, backend={self.backend!r}, device={self.device!r})"


class TorchDetector(Detector):
    """An Ultralytics ``.pt`` detector run by Ultralytics' own predictor.

    The square letterbox (``rect=False``) is used, the same input the exported ONNX/TensorRT
    models see, so every backend of one model gives the same boxes and comparable timings.
    """

    backend = "torch"

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        from ultralytics import YOLO

        try:
            self._model = YOLO(str(path), task="detect")
        except Exception as exc:  # torch.load / Ultralytics raise many types for a bad file
            raise ModelFormatError(path, f"not an Ultralytics detector checkpoint: {exc}") from exc

    def _detect(self, frame: Array) -> Array:
        result = self._model.predict(
            frame,
            imgsz=list(self.imgsz),
            conf=self.conf,
            iou=self.iou,
            classes=None if self.classes is None else list(self.classes),
            max_det=MAX_DET,
            device=self.device,
            rect=False,
            verbose=False,
        )[0]
        data = result.boxes.data
        if len(data) == 0:
            return empty_detections()
        return np.ascontiguousarray(data[:, :6].float().cpu().numpy(), dtype=DTYPE)


class _YoloPostprocessing(Detector):
    """Our letterbox + decode + NMS around a backend that maps a ``(1, 3, H, W)`` blob to the raw head."""

    _input_dtype: Any = np.float32

    def _detect(self, frame: Array) -> Array:
        return self._decoded(frame, (self.iou,))[self.iou]

    def detect_each_iou(self, frame: Array, ious: Sequence[float]) -> dict[float, Array]:
        self._check_frame(frame)
        return self._decoded(frame, [float(i) for i in ious])

    def _decoded(self, frame: Array, ious: Sequence[float]) -> dict[float, Array]:
        """One forward pass, then decode + NMS at each IoU in ``ious``, boxes in frame pixels."""
        img, ratio_pad = letterbox(frame, self.imgsz)
        raw = self._forward(to_blob(img, self._input_dtype))
        if raw.ndim != 3 or raw.shape[0] != 1 or (raw.shape[2] != 6 and raw.shape[1] < 5):
            raise ModelFormatError(
                self.path, f"output shape {raw.shape}; expected a YOLO head (1, 4 + nc, anchors) or (1, K, 6)"
            )
        out = {}
        for iou in ious:
            dets = decode_yolo(raw[0], conf=self.conf, iou=iou, classes=self.classes)
            out[iou] = scale_back(dets, ratio_pad, frame.shape) if len(dets) else dets
        return out

    def raw(self, frame: Array) -> Array:
        """The letterboxed model output ``(1, 4 + nc, A)`` for ``frame`` (before decoding; for parity checks)."""
        img, _ = letterbox(frame, self.imgsz)
        return self._forward(to_blob(img, self._input_dtype))

    def _forward(self, blob: Array) -> Array:
        raise NotImplementedError


class OrtDetector(_YoloPostprocessing):
    """A YOLO detector exported to ONNX, run by ONNX Runtime (letterbox, decode and NMS are ours)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, *, intra_op_num_threads: int = 0, **kwargs: Any) -> None:
        self._session = ort_session(path, device=kwargs["device"], intra_op_num_threads=intra_op_num_threads)
        inp = self._session.get_inputs()[0]
        if len(inp.shape) != 4:
            raise ModelFormatError(path, f"input '{inp.name}' has shape {inp.shape}; expected (1, 3, H, W)")
        h, w = _static_dim(inp.shape[2]), _static_dim(inp.shape[3])
        if h and w:
            kwargs["imgsz"] = (h, w)  # a static model only accepts its own size
        kwargs["device"] = "cuda" if "CUDAExecutionProvider" in self._session.get_providers() else "cpu"
        super().__init__(path, **kwargs)
        self._input_name = inp.name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32

    def _forward(self, blob: Array) -> Array:
        return np.asarray(self._session.run(None, {self._input_name: blob})[0])


class TensorRTDetector(_YoloPostprocessing):
    """A YOLO detector compiled to a TensorRT plan, run on CUDA through cuda-python (no torch).

    Reads plain plans and Ultralytics ``.engine`` files (which prefix the plan with a 4-byte
    length and a JSON metadata block). A plan named by :func:`motops.runtime.tensorrt.plan_name`
    for another GPU or TensorRT version is refused before TensorRT reads it. Needs TensorRT >= 10
    (the named-tensor API) and ``cuda-python`` (:class:`motops.runtime.tensorrt.PlanRunner`).
    """

    backend = "tensorrt"

    def __init__(self, path: Path, **kwargs: Any) -> None:
        from motops.runtime.tensorrt import PlanRunner

        device = kwargs["device"]
        if device == "cpu":
            raise BackendUnavailable(f"{path}: the tensorrt backend runs on CUDA only; got device='cpu'")
        index = 0 if device in ("auto", "cuda") else _cuda_device_index(device)
        blob, metadata = _read_engine_file(path)
        try:
            self._runner = PlanRunner(path, blob, device=index)
        except BackendUnavailable as exc:
            raise BackendUnavailable(
                f"{path}: the tensorrt backend cannot run here: {exc}; run the .onnx with backend='onnxruntime'"
            ) from None
        shape = self._runner.input_shape
        if len(shape) != 4:
            raise ModelFormatError(path, f"input '{self._runner.input_name}' has shape {shape}; expected (1, 3, H, W)")
        h, w = _static_dim(shape[2]), _static_dim(shape[3])
        if h and w:
            kwargs["imgsz"] = (h, w)
        elif isinstance(metadata.get("imgsz"), list) and len(metadata["imgsz"]) == 2:
            kwargs["imgsz"] = tuple(int(v) for v in metadata["imgsz"])
        kwargs["device"] = f"cuda:{index}"
        super().__init__(path, **kwargs)
        self._input_dtype = self._runner.input_dtype.type
        self._output_name = self._runner.output_names[0]

    def _forward(self, blob: Array) -> Array:
        return self._runner(blob)[self._output_name]


def _read_engine_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The plan bytes and, for an Ultralytics ``.engine``, its metadata (little-endian length + JSON prefix)."""
    data = path.read_bytes()
    if len(data) > 4:
        size = int.from_bytes(data[:4], byteorder="little")
        if 0 < size <= len(data) - 4:
            try:
                metadata = json.loads(data[4 : 4 + size].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                pass
            else:
                if isinstance(metadata, dict):
                    return data[4 + size :], metadata
    return data, {}


def tensorrt_available() -> bool:
    """Whether a CUDA device, cuda-python and the TensorRT Python package are all present (without raising)."""
    from motops.runtime.tensorrt import tensorrt_status

    return tensorrt_status()[0]


def _imgsz(imgsz: int | Sequence[int]) -> tuple[int, int]:
    size = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError(f"imgsz={imgsz!r}; expected a positive integer or (height, width)")
    return size  # type: ignore[return-value]


def _resolve_detector_backend(path: Path, backend: str) -> tuple[Path, str]:
    suffix = path.suffix.lower()
    expected = DETECTOR_SUFFIXES.get(suffix)
    if backend == "auto":
        if expected is None:
            raise ModelFormatError(
                path, f"cannot tell the backend from the suffix '{suffix}'; expected one of {list(DETECTOR_SUFFIXES)}"
            )
        if expected == "tensorrt" and not tensorrt_available():
            fallback = path.with_suffix(".onnx")
            if fallback.is_file():
                logger.warning("%s: no CUDA/TensorRT here; running %s with onnxruntime instead", path, fallback)
                return fallback, "onnxruntime"
        return path, expected
    wanted = [s for s, b in DETECTOR_SUFFIXES.items() if b == backend] if backend != "openvino" else [".onnx", ".xml"]
    if suffix not in wanted:
        raise ModelFormatError(path, f"backend={backend!r} needs a {' or '.join(wanted)} file, got '{suffix}'")
    return path, backend


def load_detector(
    path: str | Path,
    *,
    backend: str = "auto",
    imgsz: int | Sequence[int] = 640,
    conf: float = 0.1,
    iou: float = 0.7,
    classes: Sequence[int] | None = (0,),
    device: str = "auto",
    intra_op_num_threads: int = 0,
) -> Detector:
    """Load a YOLO detector on one of the backends.

    Args:
        path: ``.pt`` (Ultralytics checkpoint), ``.onnx`` (Ultralytics ONNX export, head
            ``(1, 4 + nc, A)``) or ``.engine``/``.plan`` (TensorRT plan).
        backend: ``auto`` (by suffix: ``.pt`` torch, ``.onnx`` onnxruntime, ``.engine`` tensorrt
            where CUDA and TensorRT are present, else the ``.onnx`` next to it when there is one),
            ``torch``, ``onnxruntime`` or ``tensorrt``.
        imgsz: Network input size, an int (square) or ``(H, W)``. A model with a static input
            size (every ONNX/TensorRT export by default) uses its own. Raising it finds smaller
            objects and costs time quadratically.
        conf: Boxes scoring at or below this are dropped. Raising it gives fewer false boxes and
            misses more weak ones; keep it at or below the tracker's ``track_low_thresh``.
        iou: NMS IoU threshold: a box overlapping a higher-scoring one of its class by more is
            dropped. Raising it keeps more boxes of people standing close together (and more duplicates).
        classes: Class indices to keep (a box keeps its best-scoring class); ``None`` keeps all.
        device: ``auto`` (the GPU when available), ``cpu``, ``cuda`` or ``cuda:N``.
        intra_op_num_threads: ONNX Runtime threads per operator (``0``: automatic).

    Returns:
        A :class:`Detector`: ``detector(frame_bgr) -> (N, 6)`` float32 in frame pixels.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ModelFormatError: The file is not a model of the backend (or has the wrong suffix).
        BackendUnavailable: The backend cannot run here (no CUDA, TensorRT or provider).
        ValueError: An argument is out of range or an unknown backend/device.
    """
    _check_choice(backend, BACKEND_CHOICES, "backend")
    _check_device(device)
    for name, value in (("conf", conf), ("iou", iou)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value!r}; expected a number in [0, 1]")
    cls = None if classes is None else tuple(int(c) for c in classes)
    size = _imgsz(imgsz)
    path = _existing_file(path, "detector model")
    path, chosen = _resolve_detector_backend(path, backend)
    kwargs = {"imgsz": size, "conf": float(conf), "iou": float(iou), "classes": cls}
    if chosen == "torch":
        return TorchDetector(path, device=_torch_device(device), **kwargs)
    if chosen == "onnxruntime":
        return OrtDetector(path, device=device, intra_op_num_threads=intra_op_num_threads, **kwargs)
    if chosen == "openvino":  # motops.runtime.openvino: the OpenVINO runtime, our pre/post-processing
        from motops.runtime.openvino import OpenVINODetector

        return OpenVINODetector(path, threads=intra_op_num_threads, device="cpu", **kwargs)
    return TensorRTDetector(path, device=device, **kwargs)


# --------------------------------------------------------------------------- ReID


class ReID:
    """An appearance model: ``reid(frame_bgr, boxes_xyxy (N, 4)) -> (N, D)`` float32, L2-normalized.

    Each box is clipped to the frame (at least one pixel), cropped, resized to ``input_size``
    with bilinear interpolation, converted to RGB in ``[0, 1]`` and normalized with
    ``mean``/``std``; crops go through the network in batches of at most
    :data:`REID_MAX_BATCH` (one by one for a model with a fixed batch of 1). Build one with
    :func:`load_reid`.

    Attributes:
        backend: ``torch`` or ``onnxruntime``.
        source: The model file, or ``"<module>"`` for an in-memory network.
        input_size: Crop size ``(H, W)``.
        dim: Embedding size ``D``.
        device: Where inference runs.
    """

    backend: str = ""

    def __init__(
        self,
        source: str,
        *,
        input_size: tuple[int, int],
        device: str,
        mean: Sequence[float],
        std: Sequence[float],
        max_batch: int,
        raw_bgr: bool = False,
    ) -> None:
        self.source = source
        self.input_size = input_size
        self.device = device
        self.max_batch = max_batch
        self.raw_bgr = raw_bgr
        self._mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.dim = self._probe()

    def preprocess(self, frame: Array, boxes: Array) -> Array:
        """Crops of ``boxes`` as a normalized ``(N, 3, H, W)`` float32 batch."""
        h, w = frame.shape[:2]
        out_h, out_w = self.input_size
        crops = np.empty((len(boxes), out_h, out_w, 3), dtype=np.uint8)
        xyxy = np.asarray(boxes, dtype=np.float64)
        x1 = np.clip(np.floor(xyxy[:, 0]), 0, w - 1).astype(int)
        y1 = np.clip(np.floor(xyxy[:, 1]), 0, h - 1).astype(int)
        x2 = np.maximum(np.clip(np.ceil(xyxy[:, 2]), 0, w).astype(int), x1 + 1)
        y2 = np.maximum(np.clip(np.ceil(xyxy[:, 3]), 0, h).astype(int), y1 + 1)
        for i in range(len(boxes)):
            crops[i] = cv2.resize(frame[y1[i] : y2[i], x1[i] : x2[i]], (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        if self.raw_bgr:  # the network normalises inside (our ReIDNet): BGR pixels 0..255 as they are
            return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        batch = crops[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        return np.ascontiguousarray((batch - self._mean) / self._std, dtype=np.float32)

    def __call__(self, frame: Array, boxes: Array) -> Array:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{self!r}: expected a BGR frame (H, W, 3), got {getattr(frame, 'shape', type(frame))}")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
        if len(boxes) == 0:
            return np.zeros((0, self.dim), dtype=DTYPE)
        batch = self.preprocess(frame, boxes)
        parts = [self._embed(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        emb = np.concatenate(parts).astype(np.float32, copy=False)
        return normalize_rows(emb)

    def _probe(self) -> int:
        """Run a zero crop once: checks the model maps ``(B, 3, H, W)`` to ``(B, D)`` and finds ``D``."""
        dummy = np.zeros((1, 3, *self.input_size), dtype=np.float32)
        try:
            out = np.asarray(self._embed(dummy))
        except MotopsError:
            raise
        except Exception as exc:
            raise ModelFormatError(
                Path(self.source), f"running a (1, 3, {self.input_size[0]}, {self.input_size[1]}) crop failed: {exc}"
            ) from exc
        if out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 1:
            raise ModelFormatError(
                Path(self.source), f"output shape {out.shape} for one crop; expected a ReID embedding (B, D)"
            )
        return int(out.shape[1])

    def _embed(self, batch: Array) -> Array:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, backend={self.backend!r}, dim={getattr(self, 'dim', '?')})"


def normalize_rows(emb: Array) -> Array:
    """Rows divided by their L2 norm (an all-zero row stays zero)."""
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return np.divide(emb, norm, out=np.zeros_like(emb), where=norm > 0).astype(DTYPE, copy=False)


class TorchReID(ReID):
    """A ReID network run by PyTorch (TorchScript file, state dict loaded into a given module, or a module)."""

    backend = "torch"

    def __init__(self, module: Any, source: str, **kwargs: Any) -> None:
        import torch

        self._torch = torch
        self._module = module.to(kwargs["device"]).eval()
        super().__init__(source, **kwargs)

    def _embed(self, batch: Array) -> Array:
        torch = self._torch
        with torch.inference_mode():
            out = self._module(torch.from_numpy(batch).to(self.device))
        if isinstance(out, tuple | list):  # some nets return (embedding, logits)
            out = out[0]
        return out.float().cpu().numpy()


class OrtReID(ReID):
    """A ReID network exported to ONNX (FP32 or INT8 QDQ), run by ONNX Runtime."""

    backend = "onnxruntime"

    def __init__(self, session: Any, source: str, **kwargs: Any) -> None:
        self._session = session
        inp = session.get_inputs()[0]
        self._input_name = inp.name
        self._fixed_batch = _static_dim(inp.shape[0]) if len(inp.shape) == 4 else None
        self._dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        if self._fixed_batch == 1:
            kwargs["max_batch"] = 1
        super().__init__(source, **kwargs)

    def _embed(self, batch: Array) -> Array:
        out = self._session.run(None, {self._input_name: batch.astype(self._dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float32)


def _reid_size(
    input_size: Sequence[int] | None, model_hw: tuple[int | None, int | None], source: Path
) -> tuple[int, int]:
    fixed = tuple(model_hw) if all(model_hw) else None
    if input_size is None:
        return fixed or DEFAULT_REID_SIZE  # type: ignore[return-value]
    size = tuple(int(v) for v in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size={input_size!r}; expected (height, width) in pixels")
    if fixed is not None and size != fixed:
        raise ValueError(f"input_size={size} but {source} takes fixed {fixed[0]}x{fixed[1]} (H x W) crops")
    return size  # type: ignore[return-value]


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding ``<name>/constants.pkl`` (plain checkpoints do not)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _torch_reid_module(path: Path, module: Any) -> Any:
    """The ``nn.Module`` of a TorchScript file, or of a state dict loaded into ``module``."""
    import warnings

    import torch

    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; it still loads
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelFormatError(path, f"not a loadable TorchScript model: {exc}") from exc
    if path.suffix.lower() in (".ts", ".torchscript"):
        raise ModelFormatError(path, "not a TorchScript archive (no constants.pkl inside)")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFormatError(path, f"neither TorchScript nor a torch state dict: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelFormatError(path, f"holds a {type(state).__name__}; expected TorchScript or a state dict")
    if module is None:
        raise ModelFormatError(
            path,
            "holds a state dict, which needs its network: pass it as load_reid(path, module=MyReIDNet()), "
            "or export TorchScript (.ts) / ONNX",
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFormatError(path, f"state dict does not fit {type(module).__name__}: {exc}") from exc
    return module


def load_reid(
    model: str | Path | Any,
    *,
    backend: str = "auto",
    input_size: Sequence[int] | None = None,
    device: str = "auto",
    module: Any = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    intra_op_num_threads: int = 0,
    max_batch: int = REID_MAX_BATCH,
    raw_bgr: bool | None = None,
) -> ReID:
    """Load an appearance (ReID) model mapping ``(B, 3, H, W)`` crops to ``(B, D)`` embeddings.

    Args:
        model: ``.onnx`` (FP32 or INT8 QDQ), ``.ts``/``.torchscript`` (TorchScript), ``.pt``/``.pth``
            (TorchScript, or a state dict with ``module``), or an already built ``torch.nn.Module``.
        backend: ``auto`` (by suffix; a module is torch), ``torch`` or ``onnxruntime``.
        input_size: Crop ``(H, W)``. ``None``: the model's fixed size, else 128 x 64. A size that
            contradicts the model's fixed one is refused.
        device: ``auto`` (the GPU when available), ``cpu``, ``cuda`` or ``cuda:N``.
        module: The network a state-dict ``.pt`` is loaded into (the hook for checkpoints that
            are not TorchScript).
        mean: Per-channel RGB mean subtracted from the ``[0, 1]`` crop (ImageNet by default).
        std: Per-channel RGB std the crop is divided by.
        intra_op_num_threads: ONNX Runtime threads per operator (``0``: automatic).
        max_batch: Crops per forward pass at most. Raising it is faster on a GPU in crowds and
            needs more memory.
        raw_bgr: Feed BGR pixels 0..255 as they are (``mean``/``std`` unused), for networks that
            normalise inside. ``None``: from the model — an ONNX file's ``motops.normalized_inside``
            metadata (written by :func:`motops.export.onnx_export.export_reid`), a module's
            ``takes_bgr_pixels`` attribute — else False.

    Returns:
        A :class:`ReID`: ``reid(frame_bgr, boxes (N, 4)) -> (N, D)`` float32, rows of norm 1
        (``(0, D)`` for no box).

    Raises:
        FileNotFoundError: The file does not exist.
        ModelFormatError: The file is not a ReID model (or its output is not ``(B, D)``).
        BackendUnavailable: The backend cannot run here.
        ValueError: An unknown backend/device or a bad argument.
    """
    _check_choice(backend, ("auto", *REID_BACKENDS), "backend")
    _check_device(device)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch={max_batch!r}; expected an integer >= 1")
    if len(tuple(mean)) != 3 or len(tuple(std)) != 3 or min(std) <= 0:
        raise ValueError(f"mean={mean!r}, std={std!r}; expected three values each, std > 0")
    common = {"mean": tuple(mean), "std": tuple(std), "max_batch": max_batch}
    if not isinstance(model, str | Path):
        if backend not in ("auto", "torch") or not callable(getattr(model, "eval", None)):
            raise ValueError(f"load_reid: got a {type(model).__name__}; expected a model path or a torch.nn.Module")
        size = _reid_size(input_size, (None, None), Path("<module>"))
        raw = bool(getattr(model, "takes_bgr_pixels", False)) if raw_bgr is None else raw_bgr
        return TorchReID(model, "<module>", input_size=size, device=_torch_device(device), raw_bgr=raw, **common)
    path = _existing_file(model, "ReID model")
    suffix = path.suffix.lower()
    chosen = REID_SUFFIXES.get(suffix) if backend == "auto" else backend
    if chosen == "openvino" and suffix in (".onnx", ".xml"):
        from motops.runtime.openvino import load_openvino_reid

        return load_openvino_reid(path, input_size=input_size, threads=intra_op_num_threads, raw_bgr=raw_bgr,
                                  max_batch=max_batch)
    if chosen is None:
        raise ModelFormatError(
            path, f"cannot tell the backend from the suffix '{suffix}'; expected one of {list(REID_SUFFIXES)}"
        )
    if REID_SUFFIXES.get(suffix) != chosen:
        wanted = [s for s, b in REID_SUFFIXES.items() if b == chosen]
        raise ModelFormatError(path, f"backend={chosen!r} needs a {' or '.join(wanted)} file, got '{suffix}'")
    if chosen == "onnxruntime":
        session = ort_session(path, device=device, intra_op_num_threads=intra_op_num_threads)
        shape = session.get_inputs()[0].shape
        if len(shape) != 4:
            raise ModelFormatError(path, f"input shape {shape}; expected crops (B, 3, H, W)")
        size = _reid_size(input_size, (_static_dim(shape[2]), _static_dim(shape[3])), path)
        where = "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"
        if raw_bgr is None:
            meta = session.get_modelmeta().custom_metadata_map
            raw_bgr = meta.get(f"{ONNX_META_PREFIX}normalized_inside", "false").lower() == "true"
        return OrtReID(session, str(path), input_size=size, device=where, raw_bgr=raw_bgr, **common)
    net = _torch_reid_module(path, module)
    size = _reid_size(input_size, (None, None), path)
    raw = bool(getattr(net, "takes_bgr_pixels", False)) if raw_bgr is None else raw_bgr
    return TorchReID(net, str(path), input_size=size, device=_torch_device(device), raw_bgr=raw, **common)

