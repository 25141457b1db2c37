"""TensorRT plans: build them from the bundle's ONNX where CUDA and TensorRT exist, find the one for this GPU.

A TensorRT plan only runs on the GPU architecture (compute capability) and the TensorRT
version that built it, so every plan is named after both::

    NAME.PRECISION.smMAJORMINOR.trtVERSION.plan      e.g. detector.fp16.sm89.trt10.3.0.plan

and lives in the bundle's ``plans/`` folder next to the ONNX it was built from. A device
without a matching plan runs the ONNX (or builds its own plan with :func:`build_plan`).

Precisions:

* ``fp16``: FP16 kernels where TensorRT finds them faster (FP32 elsewhere).
* ``int8``: *explicit* quantization when the ONNX holds ``QuantizeLinear``/``DequantizeLinear``
  nodes (the calibrated ``*.int8.onnx`` of the bundle; TensorRT takes the scales from the
  model), otherwise *implicit* quantization with an ``IInt8EntropyCalibrator2`` fed by
  calibration batches, whose scales are kept in a calibration cache file so a rebuild needs
  no data. FP16 is enabled too, for the layers left unquantized.

Nothing here imports ``tensorrt`` (or ``torch``) at import time; where either is missing,
:func:`tensorrt_status` says which, :func:`build_plan` raises
:class:`~motops.runtime.backends.BackendUnavailable` with that reason, and
:func:`build_plans_or_skip` records it as the bundle's ``backends["tensorrt"]`` entry.
"""

from __future__ import annotations

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


# --------------------------------------------------------------------------- environment


def tensorrt_status() -> tuple[bool, str]:
    """Whether TensorRT plans can be built and run here, and why (not).

    Returns:
        ``(True, "TensorRT 10.3.0 on NVIDIA ... (sm89)")`` or ``(False, reason)`` where the reason
        names what is missing: torch, a CUDA device, or the ``tensorrt`` Python package. The
        reason is meant to be recorded verbatim (manifest ``backends``, logs).
    """
    try:
        import torch
    except ImportError as exc:
        return False, f"TensorRT: torch is not installed, so CUDA cannot be used ({exc})"
    if not torch.cuda.is_available():
        return False, (
            "TensorRT: CUDA not available on this machine (torch.cuda.is_available() is False: "
            "no NVIDIA GPU, driver or CUDA build of torch)"
        )
    try:
        import tensorrt as trt
    except ImportError as exc:
        return False, f"TensorRT: the 'tensorrt' Python package is not installed ({exc})"
    major, minor = torch.cuda.get_device_capability(0)
    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(0)} (sm{major}{minor})"


def _require() -> tuple[Any, Any]:
    """``(torch, tensorrt)`` or :class:`BackendUnavailable` with :func:`tensorrt_status`'s reason."""
    ok, reason = tensorrt_status()
    if not ok:
        raise BackendUnavailable(reason)
    import tensorrt as trt
    import torch

    return torch, trt


def current_target(device: int = 0) -> tuple[tuple[int, int], str]:
    """``((major, minor), tensorrt_version)`` of this machine's GPU ``device`` and TensorRT.

    Raises:
        BackendUnavailable: No CUDA device or no TensorRT (the reason says which).
    """
    torch, trt = _require()
    major, minor = torch.cuda.get_device_capability(device)
    return (int(major), int(minor)), str(trt.__version__)


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
    """Whether the ONNX graph (subgraphs included) holds ``QuantizeLinear``/``DequantizeLinear`` nodes."""
    import onnx

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
    trt: Any, torch: Any, batches: Iterable[np.ndarray] | None, cache: Path, batch_size: int, device: int
) -> Any:
    """An ``IInt8EntropyCalibrator2`` reading ``(B, C, H, W)`` float32 batches, scales cached in ``cache``."""

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches: Iterator[np.ndarray] = iter(batches or ())
            self._buffer: Any = None
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
            self._buffer = torch.from_numpy(batch).to(f"cuda:{device}")
            self.count += 1
            return [int(self._buffer.data_ptr())] * len(names)

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
        calibration: For ``int8`` of an ONNX without QDQ nodes: an iterable of ``(B, C, H, W)``
            float32 batches, preprocessed exactly as at inference (``B`` = ``opt_batch``).
            Ignored for a QDQ model.
        calibration_cache: Where the calibrator keeps its scales; ``None``:
            ``out_dir/NAME.calib.cache``. When the file exists no calibration batches are needed.
        min_batch, opt_batch, max_batch: Optimization profile for a model with a dynamic batch
            dimension (TensorRT picks kernels for ``opt_batch`` and accepts ``[min, max]``). A model
            with a static batch takes only its own size.
        device: CUDA device index to build on (its compute capability names the plan).

    Returns:
        The plan's path, ``out_dir/NAME.PRECISION.smXY.trtVERSION.plan``.

    Raises:
        BackendUnavailable: No CUDA device or no TensorRT here (the reason says which).
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

    torch, trt = _require()
    major, minor = (int(v) for v in torch.cuda.get_device_capability(device))
    filename = plan_name(name, precision, compute_capability=(major, minor), tensorrt_version=trt.__version__)
    trt_logger = _make_logger(trt)

    with torch.cuda.device(device):
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
            calibrator = _make_calibrator(trt, torch, calibration, cache_path, opt_batch, device)
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
