"""What this device can run fast, and which variant of a bundle's detector it therefore runs.

:func:`probe` reads the CPU's instruction sets (``/proc/cpuinfo``), whether a GPU runtime is
present (ONNX Runtime's CUDA/TensorRT providers, the ``tensorrt`` package) and whether the
OpenVINO runtime is installed -- cheaply: no model is loaded and neither torch nor openvino
is imported. :func:`choose_precision` is the rule for the detector's precision:

* **INT8** (the bundle's calibrated QDQ ``detector.int8.onnx``) where the CPU has an 8-bit dot
  product instruction (:data:`INT8_FLAGS`: AVX-512 VNNI, AVX-VNNI, AMX-INT8) *and* the bundle's
  manifest records the INT8 detector's mAP50 cost on val at most ``max_map50_drop`` and, where
  the evaluate stage recorded it, its IDF1 cost (``idf1_drop``, same tracker and settings, only
  the detector differs) at most :data:`MAX_IDF1_DROP` -- the INT8 detector measured -0.7 mAP50
  points but -2.4 IDF1 points on the synthetic val sequence, so mAP50 alone does not bound what
  a user loses;
* **FP32** elsewhere. Without VNNI (AVX2 only) ONNX Runtime's integer kernels go through
  ``VPMADDUBSW`` (saturating int16 pairs) and gain little over FP32: the INT8 detector measured
  ×1.66 on a Xeon with VNNI/AMX (issue #14) but about FP32 speed on the AVX2-only AMD EPYC
  here (``bench/track_speed.py``'s results), at an accuracy cost for nothing;
* a GPU runs a TensorRT plan when there is one (:func:`motops.runtime.bundle.load_bundle`).

Where the manifest records the variants' accuracy (``metrics.variants``, written by the export
stage)::

    "metrics": {"variants": {"detector": {
        "fp32":     {"file": "detector.onnx", "runtime": "onnxruntime", "map50": 0.871, ...},
        "int8":     {"file": "detector.int8.onnx", "runtime": "onnxruntime", "map50": 0.866,
                     "map50_drop": 0.005, "required": false, ...},
        "openvino": {"file": "detector.onnx", "runtime": "openvino", "inference_precision": "f32",
                     "map50": 0.871, "map50_drop": 0.0, ...}}}}

``map50_drop`` is FP32's mAP50 minus the variant's (a fraction: 0.01 is one point);
``required: true`` makes every device run INT8 and refuse the bundle when that model is
missing or broken.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

#: CPU flags (``/proc/cpuinfo`` names) of an 8-bit integer dot product: what makes INT8 worth it on x86.
INT8_FLAGS: Final = ("avx512_vnni", "avx_vnni", "amx_int8")
#: Flags OpenVINO's default precision hint turns into bf16 inference (AMX; AVX-512 BF16).
BF16_FLAGS: Final = ("amx_bf16", "avx512_bf16")
#: Flags shown beside benchmark figures and in the reason lines (those that decide speed here).
SHOWN_FLAGS: Final = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
#: Default largest mAP50 cost (fraction; 0.01 = one point) of a variant that ``auto`` may pick.
DEFAULT_MAX_MAP50_DROP: Final = 0.01
#: Largest recorded IDF1 cost (fraction) of the INT8 detector that ``auto`` accepts (one point).
MAX_IDF1_DROP: Final = 0.01
CPUINFO: Final = Path("/proc/cpuinfo")
#: The INT8 detector's canonical file name in a bundle (role ``detector_int8``).
INT8_DETECTOR_FILE: Final = "detector.int8.onnx"


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What :func:`probe` found.

    Attributes:
        cpu: The CPU's model name (``platform.processor()`` where ``/proc/cpuinfo`` is absent).
        cores: Logical CPUs this process may use.
        flags: The CPU's instruction-set flags (lower case, ``/proc/cpuinfo`` names).
        gpu: What runs on a GPU here (``"onnxruntime CUDAExecutionProvider"``, ``"tensorrt"``),
            or ``None``.
        openvino: The installed OpenVINO runtime's version, or ``None``.
    """

    cpu: str
    cores: int
    flags: frozenset[str]
    gpu: str | None = None
    openvino: str | None = None

    @property
    def int8_flags(self) -> list[str]:
        """The :data:`INT8_FLAGS` this CPU has."""
        return [f for f in INT8_FLAGS if f in self.flags]

    @property
    def bf16_flags(self) -> list[str]:
        """The :data:`BF16_FLAGS` this CPU has."""
        return [f for f in BF16_FLAGS if f in self.flags]

    def isa(self) -> str:
        """One line for benchmark tables and logs: CPU, cores and the flags that matter (present and absent)."""
        have = [f for f in SHOWN_FLAGS if f in self.flags]
        lacks = [f for f in INT8_FLAGS if f not in self.flags]
        line = f"{self.cpu}, {self.cores} cores: {' '.join(have) or 'no AVX2'}"
        if lacks:
            line += f" (no {'/'.join(lacks)})"
        return line

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``cpu``, ``cores``, ``flags`` (:data:`SHOWN_FLAGS` present), ``gpu``, ``openvino``, ``isa``."""
        return {"cpu": self.cpu, "cores": self.cores, "flags": [f for f in SHOWN_FLAGS if f in self.flags],
                "gpu": self.gpu, "openvino": self.openvino, "isa": self.isa()}


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of the first processor in ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.lower().split())
        if model and flags:
            break
    return model, flags


def _gpu() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        providers: list[str] = []
    else:
        providers = ort.get_available_providers()
    for name in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        if name in providers:
            return f"onnxruntime {name}"
    # the package alone does not mean a GPU, but nothing else runs it; load_bundle checks CUDA itself
    return "tensorrt" if importlib.util.find_spec("tensorrt") is not None else None


def _openvino_version() -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        return importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def probe(cpuinfo: str | None = None) -> Hardware:
    """This machine's :class:`Hardware` (cheap: reads ``/proc/cpuinfo``, imports onnxruntime only).

    Args:
        cpuinfo: ``/proc/cpuinfo`` text to use instead of the file (tests).
    """
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags = parse_cpuinfo(cpuinfo)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Hardware(cpu=model or platform.processor() or platform.machine(), cores=cores, flags=flags,
                    gpu=_gpu(), openvino=_openvino_version())


def detector_variants(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``manifest["metrics"]["variants"]["detector"]`` (``{}`` when the bundle records none, or it is malformed)."""
    metrics = manifest.get("metrics") if isinstance(manifest, Mapping) else None
    variants = metrics.get("variants") if isinstance(metrics, Mapping) else None
    detector = variants.get("detector") if isinstance(variants, Mapping) else None
    if not isinstance(detector, Mapping):
        return {}
    return {str(k): dict(v) for k, v in detector.items() if isinstance(v, Mapping)}


def recorded_drop(manifest: Mapping[str, Any], variant: str) -> float | None:
    """The recorded mAP50 cost (fraction) of a detector variant against FP32, or ``None`` when not measured."""
    entry = detector_variants(manifest).get(variant, {})
    drop = entry.get("map50_drop")
    return float(drop) if isinstance(drop, int | float) and not isinstance(drop, bool) else None


def int8_required(manifest: Mapping[str, Any]) -> bool:
    """Whether the manifest says every device must run the INT8 detector (``variants.detector.int8.required``)."""
    return detector_variants(manifest).get("int8", {}).get("required") is True


@dataclasses.dataclass(frozen=True)
class Choice:
    """A detector variant and the one-line reason, e.g. ``int8: CPU has avx512_vnni and ...``."""

    variant: str
    reason: str

    def line(self) -> str:
        return f"{self.variant}: {self.reason}"


def _points(fraction: float) -> str:
    return f"{100 * fraction:.1f}"


def choose_precision(
    hw: Hardware,
    manifest: Mapping[str, Any],
    *,
    has_int8: bool,
    int8: bool | str = "auto",
    max_map50_drop: float = DEFAULT_MAX_MAP50_DROP,
    on_gpu: bool = False,
) -> Choice:
    """The detector precision this device runs (``int8`` or ``fp32``) and why.

    Args:
        hw: From :func:`probe`.
        manifest: The bundle's manifest (its ``metrics.variants`` give the recorded costs).
        has_int8: Whether the bundle lists an INT8 detector.
        int8: ``auto`` (the rule in the module docstring), ``True`` (INT8, the caller's demand)
            or ``False`` (FP32).
        max_map50_drop: Largest recorded mAP50 cost (fraction) at which ``auto`` takes INT8.
            Raising it trades detection accuracy for speed on VNNI/AMX CPUs.
        on_gpu: ONNX Runtime runs on a GPU (its CUDA provider runs QDQ models slower than FP32).

    Returns:
        A :class:`Choice`; ``variant`` is ``int8`` only when ``has_int8``.
    """
    drop = recorded_drop(manifest, "int8")
    if int8 is False:
        return Choice("fp32", "int8=False was asked for")
    if int8_required(manifest):
        return Choice("int8", "the manifest requires the INT8 detector (variants.detector.int8.required)")
    if int8 is True:
        return Choice("int8", "int8=True was asked for") if has_int8 else Choice(
            "fp32", "int8=True, but the bundle has no INT8 detector (its other INT8 models run)")
    if not has_int8:
        return Choice("fp32", "the bundle has no INT8 detector")
    if on_gpu:
        return Choice("fp32", f"ONNX Runtime runs on a GPU ({hw.gpu}), where QDQ models run slower than FP32")
    if not hw.int8_flags:
        have = " ".join(f for f in SHOWN_FLAGS if f in hw.flags) or "no AVX2"
        return Choice("fp32", f"CPU has no {'/'.join(INT8_FLAGS)} (has {have}), so INT8 kernels gain little over FP32")
    if drop is None:
        return Choice("fp32", f"CPU has {hw.int8_flags[0]}, but the manifest records no mAP50 cost of the INT8 "
                              "detector (variants.detector.int8.map50_drop)")
    if drop > max_map50_drop:
        return Choice("fp32", f"CPU has {hw.int8_flags[0]}, but the INT8 detector costs {_points(drop)} mAP50 points "
                              f"> {_points(max_map50_drop)}")
    idf1_drop = detector_variants(manifest).get("int8", {}).get("idf1_drop")
    if isinstance(idf1_drop, int | float) and not isinstance(idf1_drop, bool) and idf1_drop > MAX_IDF1_DROP:
        return Choice("fp32", f"CPU has {hw.int8_flags[0]} and the INT8 detector costs {_points(drop)} mAP50 points, "
                              f"but {_points(float(idf1_drop))} IDF1 points on val > {_points(MAX_IDF1_DROP)}")
    return Choice("int8", f"CPU has {hw.int8_flags[0]} and the INT8 detector costs {_points(drop)} mAP50 points "
                          f"<= {_points(max_map50_drop)}")
