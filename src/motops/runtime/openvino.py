"""The OpenVINO backend: a bundle's ONNX detector and ReID run by the OpenVINO runtime on the CPU.

OpenVINO reads the ONNX files directly (FP32, and the INT8 QDQ models, which it runs with
integer kernels), so a bundle needs no extra file for it. Pre- and post-processing are the
ONNX Runtime backend's (:class:`motops.runtime.backends._YoloPostprocessing`: letterbox,
decode, NMS; :class:`motops.runtime.backends.ReID`: crops), so both runtimes give the same
boxes up to floating-point rounding.

Compilation settings (``openvino.Core().compile_model(model, "CPU", config)``):

* ``PERFORMANCE_HINT: LATENCY`` -- one frame at a time, as the tracker calls it;
* ``INFERENCE_NUM_THREADS`` -- ``threads`` (``0``: OpenVINO's own choice, one per core);
* ``INFERENCE_PRECISION_HINT`` -- OpenVINO's default unless ``precision`` is given. The default
  is f32 on AVX2/AVX-512 CPUs and **bf16** on CPUs with AMX or AVX-512 BF16, which changes the
  numbers: :func:`motops.runtime.select` keeps bf16 only where the bundle records its accuracy
  cost, and compiles with ``f32`` otherwise.

The detector's batch dimension is fixed to 1 before compiling (a static shape lets OpenVINO
plan its memory once; the bundle's ONNX has a dynamic batch). The ReID keeps its dynamic batch.

``openvino`` is an optional dependency (``pip install 'motops[openvino]'``); it is imported
inside the functions here, and a missing one is a one-line :class:`BackendUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from motops.runtime.backends import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ONNX_META_PREFIX,
    REID_MAX_BATCH,
    BackendUnavailable,
    ModelFormatError,
    ReID,
    _existing_file,
    _reid_size,
    _static_dim,
    _YoloPostprocessing,
)

#: The extra that installs the OpenVINO runtime (pyproject.toml's ``[project.optional-dependencies]``).
EXTRA: Final = "openvino"
#: Files the OpenVINO runtime reads: ONNX, and its own IR (``.xml`` with a ``.bin`` beside it).
SUFFIXES: Final = (".onnx", ".xml")
PRECISIONS: Final = ("default", "f32", "bf16", "f16")


def require_openvino(what: str | Path) -> Any:
    """``import openvino``, or :class:`BackendUnavailable` in one line naming ``what`` and the extra to install."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable(
            f"{what}: backend 'openvino' needs the OpenVINO runtime, which is not installed ({exc}); "
            f"install it with: pip install 'motops[{EXTRA}]'"
        ) from exc
    return openvino


def _config(threads: int, precision: str) -> dict[str, Any]:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads={threads!r}; expected an integer >= 0 (0 = automatic)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {list(PRECISIONS)}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    return config


def _read(ov: Any, path: Path) -> tuple[Any, Any]:
    core = ov.Core()
    try:
        return core, core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long C++ traces
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(path, f"OpenVINO cannot read it as a model: {first}") from exc


def _compile(core: Any, model: Any, path: Path, config: Mapping[str, Any]) -> tuple[Any, str]:
    try:
        compiled = core.compile_model(model, "CPU", dict(config))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(path, f"OpenVINO could not compile it for the CPU: {first}") from exc
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    name = value.to_string() if hasattr(value, "to_string") else str(value)  # an openvino.Type: "f32", "bf16"
    return compiled, name.lower()


class OpenVINODetector(_YoloPostprocessing):
    """A YOLO detector (ONNX or OpenVINO IR) run by the OpenVINO runtime on the CPU.

    Attributes:
        inference_precision: What OpenVINO computes in (``f32``, ``bf16``, ...), read back from
            the compiled model.
        threads: ``INFERENCE_NUM_THREADS`` asked for (``0``: automatic).
    """

    backend = "openvino"

    def __init__(self, path: Path, *, threads: int = 0, precision: str = "default", **kwargs: Any) -> None:
        ov = require_openvino(path)
        config = _config(threads, precision)
        core, model = _read(ov, path)
        if len(model.inputs) != 1:
            raise ModelFormatError(path, f"{len(model.inputs)} inputs; expected one image (1, 3, H, W)")
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise ModelFormatError(path, f"input shape {shape}; expected (1, 3, H, W)")
        h, w = (shape[i].get_length() if shape[i].is_static else None for i in (2, 3))
        if h and w:
            kwargs["imgsz"] = (h, w)  # a static model only accepts its own size
        size = kwargs["imgsz"]
        try:
            model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([1, 3, *size])})
        except Exception as exc:
            raise ModelFormatError(path, f"cannot fix its input to (1, 3, {size[0]}, {size[1]}): {exc}") from exc
        self._compiled, self.inference_precision = _compile(core, model, path, config)
        self._request = self._compiled.create_infer_request()
        self.threads = threads
        kwargs["device"] = "cpu"
        super().__init__(path, **kwargs)

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        self._request.infer({0: blob})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused


class OpenVINOReID(ReID):
    """A ReID network (ONNX FP32 or INT8 QDQ) run by the OpenVINO runtime on the CPU."""

    backend = "openvino"

    def __init__(self, compiled: Any, source: str, **kwargs: Any) -> None:
        self._request = compiled.create_infer_request()
        super().__init__(source, **kwargs)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)


def load_openvino_reid(
    path: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    threads: int = 0,
    precision: str = "default",
    raw_bgr: bool | None = None,
    max_batch: int = REID_MAX_BATCH,
) -> OpenVINOReID:
    """Load a ReID ONNX (``(B, 3, H, W)`` crops -> ``(B, D)``) on the OpenVINO runtime.

    Args:
        path: The ``.onnx`` (or ``.xml``).
        input_size: Crop ``(H, W)``; ``None``: the model's fixed size, else 128 x 64.
        threads: ``INFERENCE_NUM_THREADS`` (``0``: automatic).
        precision: ``INFERENCE_PRECISION_HINT`` (``default``: OpenVINO's choice for this CPU).
        raw_bgr: Feed BGR pixels as they are; ``None``: from the model's ``motops.normalized_inside`` metadata.
        max_batch: Crops per forward pass at most.

    Raises:
        BackendUnavailable: openvino is not installed.
        FileNotFoundError / ModelFormatError: no such file, or not a ReID model OpenVINO can run.
    """
    path = _existing_file(path, "ReID model")
    ov = require_openvino(path)
    config = _config(threads, precision)
    core, model = _read(ov, path)
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4:
        raise ModelFormatError(path, f"input shape {shape}; expected crops (B, 3, H, W)")
    fixed = tuple(shape[i].get_length() if shape[i].is_static else None for i in (2, 3))
    size = _reid_size(input_size, fixed, path)  # type: ignore[arg-type]
    if raw_bgr is None:
        meta = onnx_metadata(path) if path.suffix.lower() == ".onnx" else {}
        raw_bgr = meta.get(f"{ONNX_META_PREFIX}normalized_inside", "false").lower() == "true"
    compiled, _ = _compile(core, model, path, config)
    batch = shape[0].get_length() if shape[0].is_static else None
    return OpenVINOReID(
        compiled, str(path), input_size=size, device="cpu", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        max_batch=1 if _static_dim(batch) == 1 else max_batch, raw_bgr=raw_bgr,
    )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, bytes]]:
    """The length-delimited fields ``(number, bytes)`` of one protobuf message (others skipped)."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            out.append((number, data[pos : pos + size]))
            pos += size
        else:
            raise ValueError(f"protobuf wire type {wire}")
    return out


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (``ModelProto`` field 14), read without onnx or onnxruntime.

    The OpenVINO runtime drops them when it reads the model, and the edge install has no
    ``onnx`` package; ``{}`` for a file that is not a readable ONNX protobuf.
    """
    try:
        props = {}
        for number, entry in _fields(Path(path).read_bytes()):
            if number == 14:
                kv = dict(_fields(entry))
                props[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
        return props
    except (OSError, IndexError, ValueError, UnicodeDecodeError):
        return {}
