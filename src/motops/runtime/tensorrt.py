"""TensorRT plans: build them from the bundle's ONNX, find the one for this GPU, run them -- with no torch.

A TensorRT plan only runs on the GPU architecture (compute capability) and the TensorRT
version that built it, so every plan is named after both::

    NAME.PRECISION.smMAJORMINOR.trtVERSION.plan      e.g. detector.fp16.sm90.trt10.8.0.43.plan

and lives in the bundle's ``plans/`` folder next to the ONNX it was built from. A device
without a matching plan runs the ONNX (or builds its own plan with :func:`build_plan`); a plan
whose name says another GPU or TensorRT version is refused before TensorRT reads it
(:func:`check_plan_target`), never run.

Precisions:

* ``fp16``: FP16 kernels where TensorRT finds them faster (FP32 elsewhere).
* ``int8``: *explicit* quantization when the ONNX holds ``QuantizeLinear``/``DequantizeLinear``
  nodes (the calibrated ``*.int8.onnx`` of the bundle; TensorRT takes the scales from the
  model), otherwise *implicit* quantization with an ``IInt8EntropyCalibrator2`` fed numpy
  calibration batches, whose scales are kept in a calibration cache file so a rebuild needs
  no data. FP16 is enabled too, for the layers left unquantized.

CUDA memory, copies and streams come from ``cuda-python``'s runtime bindings (``cudart``:
``cudaMalloc``, ``cudaMallocHost``, ``cudaMemcpyAsync``, ``cudaStreamCreate``), so an NVIDIA
device needs ``tensorrt`` and ``cuda-bindings`` (cuda-python's bindings; the ``tensorrt``
extra), not torch. Nothing here imports either at import time; where one is missing, or there
is no CUDA device, :func:`tensorrt_status` says which, and :func:`build_plan` and :class:`PlanRunner` raise
:class:`~motops.runtime.backends.BackendUnavailable` with that reason.
"""

from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from motops.errors import MotopsError
from motops.fsutil import atomic_write
from motops.runtime.backends import BackendUnavailable, ModelFormatError

logger = logging.getLogger(__name__)

PRECISIONS: Final = ("fp16", "int8")
PLANS_DIR: Final = "plans"
PLAN_SUFFIX: Final = ".plan"
#: ``NAME.PRECISION.smXY.trtVERSION.plan``; NAME has no dot.
PLAN_PATTERN: Final = re.compile(
    r"^(?P<name>[A-Za-z0-9_-]+)\.(?P<precision>fp16|int8)\.sm(?P<sm>\d+)\.trt(?P<trt>\d+(?:\.\d+)*)\.plan$"
)
#: ONNX operators that mark an explicitly quantized (QDQ) model.
QDQ_OPS: Final = frozenset({"QuantizeLinear", "DequantizeLinear"})
_GIB: Final = 1 << 30


class TensorRTBuildError(MotopsError):
    """TensorRT is present but could not build a plan (the message carries TensorRT's own errors)."""


@dataclass(frozen=True)
class PlanInfo:
    """What a plan file name says about the plan.

    Attributes:
        name: Model name (``detector``, ``reid``).
        precision: ``fp16`` or ``int8``.
        compute_capability: ``(major, minor)`` of the GPU it was built on.
        tensorrt: TensorRT version that built it.
    """

    name: str
    precision: str
    compute_capability: tuple[int, int]
    tensorrt: str


# --------------------------------------------------------------------------- CUDA through cuda-python


def _cudart() -> Any:
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise ImportError(f"the 'cuda-bindings' package (cuda-python) is not installed ({exc})") from None
    return cudart


def _call(cudart: Any, result: Any, what: str) -> Any:
    """The value(s) of a cuda-python call (``(err, *values)``), or :class:`BackendUnavailable` naming the error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        detail = text.decode() if isinstance(text, bytes) else str(text)
        raise BackendUnavailable(f"{what} failed: {getattr(err, 'name', err)}: {detail}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def cuda_devices() -> tuple[list[tuple[str, tuple[int, int]]], str]:
    """The CUDA devices cuda-python sees, ``[(name, (major, minor)), ...]``, and why none when empty.

    Returns:
        ``(devices, reason)``: ``reason`` is ``""`` when there is at least one device, else a
        sentence naming what is missing (cuda-python, the driver, a GPU).
    """
    try:
        cudart = _cudart()
    except ImportError as exc:
        return [], f"{exc}, so CUDA cannot be used"
    try:
        count = _call(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except BackendUnavailable as exc:
        return [], f"no usable CUDA device: no NVIDIA GPU or driver ({exc})"
    devices = []
    for index in range(int(count)):
        props = _call(cudart, cudart.cudaGetDeviceProperties(index), f"cudaGetDeviceProperties({index})")
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        devices.append((name.rstrip("\0"), (int(props.major), int(props.minor))))
    return devices, "" if devices else "no CUDA device (cudaGetDeviceCount is 0)"


def tensorrt_status(device: int = 0) -> tuple[bool, str]:
    """Whether TensorRT plans can be built and run here, and why (not).

    Returns:
        ``(True, "TensorRT 10.8.0.43 on NVIDIA H100 80GB HBM3 (sm90)")`` or ``(False, reason)``
        where the reason names what is missing: a CUDA device (or its driver), ``cuda-python``,
        or the ``tensorrt`` Python package. It is meant to be recorded verbatim (manifest
        ``backends``, logs, ``motops edge status``).
    """
    devices, why = cuda_devices()
    if not devices:
        return False, f"TensorRT: CUDA not available on this machine ({why})"
    if not 0 <= device < len(devices):
        return False, f"TensorRT: CUDA device {device} asked for; this machine has {len(devices)}"
    try:
        import tensorrt as trt
    except ImportError as exc:
        return False, f"TensorRT: the 'tensorrt' Python package is not installed ({exc})"
    name, (major, minor) = devices[device]
    return True, f"TensorRT {trt.__version__} on {name} (sm{major}{minor})"


def _require(device: int = 0) -> tuple[Any, Any]:
    """``(tensorrt, cudart)`` or :class:`BackendUnavailable` with :func:`tensorrt_status`'s reason."""
    ok, reason = tensorrt_status(device)
    if not ok:
        raise BackendUnavailable(reason)
    import tensorrt as trt

    return trt, _cudart()


def current_target(device: int = 0) -> tuple[tuple[int, int], str]:
    """``((major, minor), tensorrt_version)`` of this machine's GPU ``device`` and TensorRT.

    Raises:
        BackendUnavailable: No CUDA device, cuda-python or TensorRT (the reason says which).
    """
    trt, _ = _require(device)
    devices, _ = cuda_devices()
    return devices[device][1], str(trt.__version__)


class _DeviceMemory:
    """``nbytes`` of CUDA device memory (``cudaMalloc``), freed by :meth:`free` or when collected."""

    def __init__(self, cudart: Any, nbytes: int) -> None:
        self._cudart = cudart
        self.nbytes = int(nbytes)
        self.ptr = int(_call(cudart, cudart.cudaMalloc(max(1, self.nbytes)), f"cudaMalloc({self.nbytes})"))

    def free(self) -> None:
        if self.ptr:
            self._cudart.cudaFree(self.ptr)
            self.ptr = 0

    def __del__(self) -> None:
        self.free()


class _HostMemory:
    """A page-locked host array (``cudaMallocHost``) of ``shape`` and ``dtype``: fast, truly async copies."""

    def __init__(self, cudart: Any, shape: tuple[int, ...], dtype: Any) -> None:
        self._cudart = cudart
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self.ptr = int(_call(cudart, cudart.cudaMallocHost(max(1, nbytes)), f"cudaMallocHost({nbytes})"))
        raw = (ctypes.c_byte * max(1, nbytes)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8, count=nbytes).view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            self._cudart.cudaFreeHost(self.ptr)
            self.ptr = 0

    def __del__(self) -> None:
        self.free()


# --------------------------------------------------------------------------- names


def plan_name(
    name: str,
    precision: str,
    *,
    compute_capability: tuple[int, int] | None = None,
    tensorrt_version: str | None = None,
) -> str:
    """File name of a plan: ``NAME.PRECISION.smXY.trtVERSION.plan``.

    Args:
        name: Model name, letters, digits, ``_`` and ``-`` only (``detector``, ``reid``).
        precision: ``fp16`` or ``int8``.
        compute_capability: ``(major, minor)``; ``None``: this machine's GPU 0.
        tensorrt_version: ``None``: the installed TensorRT's version.

    Raises:
        ValueError: A bad name or precision.
        BackendUnavailable: A target was left ``None`` and CUDA or TensorRT is missing.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
        raise ValueError(f"plan name {name!r}: expected letters, digits, '_' or '-' (no dots)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {list(PRECISIONS)}")
    if compute_capability is None or tensorrt_version is None:
        cc, version = current_target()
        compute_capability = compute_capability or cc
        tensorrt_version = tensorrt_version or version
    major, minor = (int(v) for v in compute_capability)
    if not re.fullmatch(r"\d+(?:\.\d+)*", str(tensorrt_version)):
        raise ValueError(f"tensorrt_version={tensorrt_version!r}; expected dotted digits like '10.3.0'")
    return f"{name}.{precision}.sm{major}{minor}.trt{tensorrt_version}{PLAN_SUFFIX}"


def parse_plan_name(filename: str | Path) -> PlanInfo | None:
    """The :class:`PlanInfo` of a plan file name, or ``None`` when it does not follow :func:`plan_name`.

    The last ``sm`` digit is the minor version, the rest the major one (``sm89`` is 8.9,
    ``sm100`` 10.0), which is how NVIDIA numbers architectures.
    """
    match = PLAN_PATTERN.match(Path(filename).name)
    if match is None:
        return None
    sm = match["sm"]
    major, minor = (int(sm[:-1]), int(sm[-1])) if len(sm) >= 2 else (int(sm), 0)
    return PlanInfo(match["name"], match["precision"], (major, minor), match["trt"])


def check_plan_target(path: str | Path, compute_capability: tuple[int, int], tensorrt_version: str) -> None:
    """Refuse a plan whose name says it was built for another GPU or another TensorRT version.

    TensorRT may deserialize such a plan and then fail, or run it wrongly; it is never tried.
    A plan not named by :func:`plan_name` (an Ultralytics ``.engine``) is left to TensorRT's
    own check.

    Raises:
        ModelFormatError: The name's compute capability or TensorRT version differs from the
            target (one line: the file, what it was built for, what this machine is, what to do).
    """
    info = parse_plan_name(path)
    if info is None:
        return
    major, minor = compute_capability
    if info.compute_capability != (major, minor) or info.tensorrt != str(tensorrt_version):
        built = f"sm{info.compute_capability[0]}{info.compute_capability[1]} and TensorRT {info.tensorrt}"
        raise ModelFormatError(
            path,
            f"this plan was built for {built}; this machine is sm{major}{minor} with TensorRT {tensorrt_version}: "
            "not run; build one here (motops.runtime.tensorrt.build_plan, or let the edge agent build it) "
            "or run the .onnx with backend='onnxruntime'",
        )


def find_plan(
    bundle_dir: str | Path,
    name: str,
    precision: str,
    *,
    compute_capability: tuple[int, int] | None = None,
    tensorrt_version: str | None = None,
) -> Path | None:
    """The plan in ``bundle_dir/plans/`` built for this GPU and TensorRT, if there is one.

    Args:
        bundle_dir: The engine bundle (or any folder with a ``plans/`` subfolder).
        name: Model name (``detector``).
        precision: ``fp16`` or ``int8``.
        compute_capability, tensorrt_version: The target; ``None`` (default): this machine's.

    Returns:
        The plan's path, or ``None`` when there is no matching plan, or when the target was
        left to this machine and it has no CUDA or TensorRT (no plan could run here).
    """
    try:
        filename = plan_name(
            name, precision, compute_capability=compute_capability, tensorrt_version=tensorrt_version
        )
    except BackendUnavailable:
        return None
    path = Path(bundle_dir) / PLANS_DIR / filename
    return path if path.is_file() else None


def onnx_is_qdq(onnx_path: str | Path) -> bool:
    """Whether the ONNX graph holds ``QuantizeLinear``/``DequantizeLinear`` nodes.

    With the ``onnx`` package (a workstation) the graph and its subgraphs are walked. On a
    device, which does not install ``onnx``, the serialized model is searched for the two
    operator names (protobuf stores ``op_type`` as plain strings); :func:`build_plan` then
    confirms from the network TensorRT parsed.
    """
    try:
        import onnx
    except ImportError:
        data = Path(onnx_path).read_bytes()
        return any(op.encode() in data for op in QDQ_OPS)
    model = onnx.load(str(onnx_path), load_external_data=False)

    def walk(graph: Any) -> bool:
        for node in graph.node:
            if node.op_type in QDQ_OPS:
                return True
            for attr in node.attribute:
                subgraphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
                if any(walk(g) for g in subgraphs):
                    return True
        return False

    return walk(model.graph)


def _network_is_qdq(trt: Any, network: Any) -> bool:
    """Whether a parsed TensorRT network has quantize/dequantize layers (explicit quantization)."""
    kinds = {getattr(trt.LayerType, n) for n in ("QUANTIZE", "DEQUANTIZE") if hasattr(trt.LayerType, n)}
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


# --------------------------------------------------------------------------- building


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to :mod:`logging` and keeps the errors for the exception message."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                logger.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                logger.warning("TensorRT: %s", msg)
            else:
                logger.debug("TensorRT: %s", msg)

    return _Logger()


def _make_calibrator(
    trt: Any, cudart: Any, batches: Iterable[np.ndarray] | None, cache: Path, batch_size: int
) -> Any:
    """An ``IInt8EntropyCalibrator2`` reading numpy ``(B, C, H, W)`` float32 batches, scales cached in ``cache``.

    Each batch is copied into one device buffer (``cudaMemcpy``), allocated for the first
    batch and reused; TensorRT reads it through the pointer :meth:`get_batch` returns.
    """

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches: Iterator[np.ndarray] = iter(batches or ())
            self._device: _DeviceMemory | None = None
            self.count = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            if batch.ndim != 4 or batch.shape[0] != batch_size:
                raise ValueError(
                    f"calibration batch of shape {batch.shape}; expected ({batch_size}, C, H, W) float32"
                )
            if self._device is None or self._device.nbytes != batch.nbytes:
                self._device = _DeviceMemory(cudart, batch.nbytes)
            _call(
                cudart,
                cudart.cudaMemcpy(self._device.ptr, batch.ctypes.data, batch.nbytes,
                                  cudart.cudaMemcpyKind.cudaMemcpyHostToDevice),
                "cudaMemcpy (calibration batch)",
            )
            self.count += 1
            return [self._device.ptr] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            atomic_write(cache, bytes(data))

    return _Calibrator()


def _check_batches(min_batch: int, opt_batch: int, max_batch: int) -> None:
    values = (min_batch, opt_batch, max_batch)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values) or not (
        min_batch <= opt_batch <= max_batch
    ):
        raise ValueError(
            f"min_batch={min_batch}, opt_batch={opt_batch}, max_batch={max_batch}; expected integers "
            "1 <= min_batch <= opt_batch <= max_batch"
        )


def build_plan(
    onnx_path: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    precision: str = "fp16",
    workspace_gb: float = 2.0,
    timing_cache: str | Path | None = None,
    calibration: Iterable[np.ndarray] | None = None,
    calibration_cache: str | Path | None = None,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 1,
    device: int = 0,
) -> Path:
    """Compile an ONNX model into a TensorRT plan for this GPU.

    Args:
        onnx_path: The model (``detector.onnx``, or a QDQ ``*.int8.onnx`` for explicit INT8).
        out_dir: Folder the plan is written to (created), usually ``BUNDLE/plans``.
        name: Model name in the plan's file name; ``None``: the ONNX name up to its first dot.
        precision: ``fp16`` or ``int8`` (see the module docstring for how INT8 is quantized).
        workspace_gb: Largest scratch memory, GiB, a layer implementation may use. Raising it
            lets TensorRT consider more (often faster) tactics and needs more GPU memory.
        timing_cache: File holding measured kernel timings; loaded when it exists and saved
            after the build, so rebuilding on the same GPU skips most timing (minutes to seconds).
        calibration: For ``int8`` of an ONNX without QDQ nodes: an iterable of numpy
            ``(B, C, H, W)`` float32 batches, preprocessed exactly as at inference
            (``B`` = ``opt_batch``). Ignored for a QDQ model.
        calibration_cache: Where the calibrator keeps its scales; ``None``:
            ``out_dir/NAME.calib.cache``. When the file exists no calibration batches are needed.
        min_batch, opt_batch, max_batch: Optimization profile for a model with a dynamic batch
            dimension (TensorRT picks kernels for ``opt_batch`` and accepts ``[min, max]``). A model
            with a static batch takes only its own size.
        device: CUDA device index to build on (its compute capability names the plan).

    Returns:
        The plan's path, ``out_dir/NAME.PRECISION.smXY.trtVERSION.plan``.

    Raises:
        BackendUnavailable: No CUDA device, cuda-python or TensorRT here (the reason says which).
        FileNotFoundError: ``onnx_path`` does not exist.
        ModelFormatError: TensorRT's ONNX parser refused the model (its errors are listed), or
            the input shape cannot be given an optimization profile.
        ValueError: A bad precision, batch range, or INT8 without QDQ nodes, calibration
            batches or a calibration cache.
        TensorRTBuildError: The builder failed (its error messages are included).
    """
    onnx_path = Path(onnx_path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {list(PRECISIONS)}")
    if not isinstance(workspace_gb, int | float) or isinstance(workspace_gb, bool) or workspace_gb <= 0:
        raise ValueError(f"workspace_gb={workspace_gb!r}; expected a positive number of GiB")
    _check_batches(min_batch, opt_batch, max_batch)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX model not found")
    name = name or onnx_path.name.split(".", 1)[0]
    plan_name(name, precision, compute_capability=(0, 0), tensorrt_version="0")  # checks the name before CUDA
    out_dir = Path(out_dir)
    qdq = precision == "int8" and onnx_is_qdq(onnx_path)
    cache_path = Path(calibration_cache) if calibration_cache else out_dir / f"{name}.calib.cache"
    if precision == "int8" and not qdq and calibration is None and not cache_path.is_file():
        raise ValueError(
            f"{onnx_path}: precision='int8' of a model without QuantizeLinear/DequantizeLinear nodes needs "
            f"calibration batches or an existing calibration cache ({cache_path}); or pass the calibrated "
            "QDQ model (*.int8.onnx)"
        )

    trt, cudart = _require(device)
    (major, minor), version = current_target(device)
    filename = plan_name(name, precision, compute_capability=(major, minor), tensorrt_version=version)
    trt_logger = _make_logger(trt)
    _call(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})")

    builder = trt.Builder(trt_logger)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and int(str(trt.__version__).split(".")[0]) < 10:
        flags |= 1 << int(explicit)  # TensorRT < 10 needs it for ONNX; 10 makes it the only mode
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelFormatError(
            onnx_path, "TensorRT's ONNX parser refused the model: " + ("; ".join(errors) or "no details")
        )
    if precision == "int8":
        qdq = _network_is_qdq(trt, network)  # what TensorRT parsed is the authority
        if not qdq and calibration is None and not cache_path.is_file():
            raise ValueError(
                f"{onnx_path}: TensorRT found no quantize/dequantize layers, and there are no calibration "
                f"batches or cache ({cache_path}) for an INT8 plan"
            )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * _GIB))
    config.set_flag(trt.BuilderFlag.FP16)  # int8 too: the layers left unquantized run in FP16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)

    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ModelFormatError(
                onnx_path,
                f"input '{tensor.name}' has shape {shape}: only the batch dimension may be dynamic; "
                "export with a fixed image size",
            )
        if shape and shape[0] < 0:
            profile = profile or builder.create_optimization_profile()
            rest = shape[1:]
            profile.set_shape(tensor.name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
        elif shape and (min_batch, opt_batch, max_batch) != (1, 1, 1) and max_batch != shape[0]:
            raise ValueError(
                f"{onnx_path}: input '{tensor.name}' has a static batch of {shape[0]}; "
                f"min/opt/max_batch={min_batch}/{opt_batch}/{max_batch} need a dynamic-batch export"
            )
    if profile is not None:
        config.add_optimization_profile(profile)

    calibrator = None
    if precision == "int8" and not qdq:
        calibrator = _make_calibrator(trt, cudart, calibration, cache_path, opt_batch)
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)

    cache_file = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file and cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    had_cache = cache_path.is_file()
    logger.info("building %s (%s) from %s", filename, "QDQ int8" if qdq else precision, onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(trt_logger.errors[-5:]) or "no error reported; run with logging at DEBUG"
        raise TensorRTBuildError(f"{onnx_path}: TensorRT could not build a {precision} plan: {detail}")
    if calibrator is not None and calibrator.count == 0 and not had_cache:
        raise TensorRTBuildError(f"{onnx_path}: INT8 calibration got no batches; the plan would be uncalibrated")

    if cache_file is not None:
        atomic_write(cache_file, memoryview(config.get_timing_cache().serialize()))
    plan = out_dir / filename
    atomic_write(plan, memoryview(serialized))
    return plan


# --------------------------------------------------------------------------- running


class PlanRunner:
    """A deserialized plan with its CUDA buffers: ``runner(x) -> outputs`` for one fixed-shape input.

    Device buffers come from ``cudaMalloc``, the input and output staging arrays are page-locked
    host memory (``cudaMallocHost``), and one ``cudaStream`` carries copy-in, inference and
    copy-out; :meth:`__call__` waits for the stream and returns copies of the outputs.

    Attributes:
        path: The plan file.
        input_name: The engine's one input tensor.
        input_shape: Its shape, batch included (a dynamic batch is fixed to 1).
        input_dtype: ``np.float32`` or ``np.float16``.
        output_names: The output tensors, in engine order.
        device: CUDA device index.
    """

    def __init__(self, path: str | Path, plan: bytes, *, device: int = 0) -> None:
        """Deserialize ``plan`` (the bytes of ``path``) on CUDA device ``device``.

        Raises:
            BackendUnavailable: No CUDA device, cuda-python or TensorRT.
            ModelFormatError: The name says another GPU/TensorRT (:func:`check_plan_target`),
                TensorRT cannot deserialize it, or it has not exactly one float image input.
        """
        self.path = Path(path)
        self.device = int(device)
        self._buffers: list[Any] = []
        self._stream: Any = None
        trt, cudart = _require(self.device)
        self._cudart = cudart
        target, version = current_target(self.device)
        check_plan_target(self.path, target, version)
        _call(cudart, cudart.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ModelFormatError(
                self.path,
                "TensorRT could not deserialize the plan (not a plan, or built by another TensorRT version or for "
                f"another GPU; this is TensorRT {version} on sm{target[0]}{target[1]}); rebuild it from the .onnx",
            )
        self._engine = engine
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not self.output_names:
            raise ModelFormatError(self.path, f"engine tensors {names}; expected one input and at least one output")
        self.input_name = inputs[0]
        shape = tuple(int(d) for d in engine.get_tensor_shape(self.input_name))
        if any(d < 0 for d in shape[1:]):
            raise ModelFormatError(self.path, f"input '{self.input_name}' has shape {shape}; expected a fixed size")
        self.input_shape = (1, *shape[1:]) if shape and shape[0] < 0 else shape
        self._context.set_input_shape(self.input_name, self.input_shape)
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        if self.input_dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ModelFormatError(self.path, f"input is {self.input_dtype}; expected float32 or float16")
        self._stream = _call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._host: dict[str, _HostMemory] = {}
        self._device_mem: dict[str, _DeviceMemory] = {}
        for name in names:
            dims = tuple(int(d) for d in self._context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = _HostMemory(cudart, dims, dtype)
            dev = _DeviceMemory(cudart, host.array.nbytes)
            self._host[name], self._device_mem[name] = host, dev
            self._buffers += [host, dev]
            if not self._context.set_tensor_address(name, dev.ptr):
                raise ModelFormatError(self.path, f"TensorRT refused the buffer of tensor '{name}'")

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run the plan on ``x`` (:attr:`input_shape`, any float dtype; cast to :attr:`input_dtype`).

        Returns:
            Output name to a new float32 array of its shape.

        Raises:
            ValueError: ``x`` has another shape.
            BackendUnavailable: A CUDA call or the execution failed (the message says which).
        """
        cudart = self._cudart
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"{self.path}: input of shape {tuple(x.shape)}; the plan takes {self.input_shape}")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        host_in, dev_in = self._host[self.input_name], self._device_mem[self.input_name]
        np.copyto(host_in.array, x, casting="unsafe")
        _call(cudart, cudart.cudaMemcpyAsync(dev_in.ptr, host_in.ptr, dev_in.nbytes, h2d, self._stream),
              "cudaMemcpyAsync (input)")
        if not self._context.execute_async_v3(int(self._stream)):
            raise BackendUnavailable(f"{self.path}: TensorRT execution failed")
        for name in self.output_names:
            dev, host = self._device_mem[name], self._host[name]
            _call(cudart, cudart.cudaMemcpyAsync(host.ptr, dev.ptr, dev.nbytes, d2h, self._stream),
                  f"cudaMemcpyAsync (output {name})")
        _call(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: self._host[name].array.astype(np.float32) for name in self.output_names}

    def close(self) -> None:
        """Free the CUDA buffers and the stream (also done when the runner is collected)."""
        for buf in getattr(self, "_buffers", ()):
            buf.free()
        self._buffers = []
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        self.close()
