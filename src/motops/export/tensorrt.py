"""TensorRT plans at export: build every requested plan into the bundle, or record why none was built.

Plan naming, building and finding live in :mod:`motops.runtime.tensorrt` (a device builds its
own plan when the bundle has none for its GPU); this is the export stage's use of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from motops.runtime.tensorrt import build_plan, tensorrt_status

logger = logging.getLogger(__name__)


def build_plans_or_skip(
    models: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    fp16: bool = True,
    int8: bool = True,
    workspace_gb: float = 2.0,
    timing_cache: str | Path | None = None,
    calibration: Mapping[str, Iterable[np.ndarray]] | None = None,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 1,
) -> tuple[dict[str, Any], list[Path]]:
    """Build every requested plan where TensorRT can run, or say exactly why none was built.

    Args:
        models: Bundle roles to ONNX files: ``detector``, ``reid`` (FP32, built as ``fp16``) and
            optionally ``detector_int8``, ``reid_int8`` (QDQ models, built as ``int8`` by explicit
            quantization). A model without a QDQ file is built as ``int8`` only when
            ``calibration`` has batches for it.
        out_dir: Where plans go (``BUNDLE_STAGING/plans``).
        fp16, int8: Which precisions to build (``params.export.tensorrt``).
        workspace_gb, timing_cache, min_batch, opt_batch, max_batch: As for :func:`build_plan`.
        calibration: Per model name (``detector``), calibration batches for implicit INT8.

    Returns:
        ``(entry, plans)``: ``entry`` is the manifest's ``backends["tensorrt"]`` value,
        ``{"built": bool, "reason": str | None, "plans": [file names], "skipped": {what: why}}``
        -- ``built`` is False with the reason when nothing was built (no CUDA, no TensorRT,
        both precisions off, nothing to build); ``plans`` are the files written.

    Raises:
        TensorRTBuildError, ModelFormatError: TensorRT is present but a build failed; an
            export that asked for plans fails loudly rather than ship without them.
    """
    if not fp16 and not int8:
        return {"built": False, "reason": "TensorRT: disabled (export.tensorrt.fp16 and int8 are both false)"}, []
    ok, reason = tensorrt_status()
    if not ok:
        logger.warning("skipping TensorRT plans: %s", reason)
        return {"built": False, "reason": reason}, []
    calibration = calibration or {}
    jobs: list[tuple[str, Path, str]] = []
    skipped: dict[str, str] = {}
    for base in sorted({role.removesuffix("_int8") for role in models}):
        if fp16 and base in models:
            jobs.append((base, Path(models[base]), "fp16"))
        if int8:
            if f"{base}_int8" in models:
                jobs.append((base, Path(models[f"{base}_int8"]), "int8"))
            elif base in calibration and base in models:
                jobs.append((base, Path(models[base]), "int8"))
            else:
                skipped[f"{base}.int8"] = f"no QDQ model (role '{base}_int8') and no calibration batches"
    plans: list[Path] = []
    for base, path, precision in jobs:
        plans.append(
            build_plan(
                path,
                out_dir,
                name=base,
                precision=precision,
                workspace_gb=workspace_gb,
                timing_cache=timing_cache,
                calibration=calibration.get(base) if precision == "int8" else None,
                min_batch=min_batch,
                opt_batch=opt_batch,
                max_batch=max_batch,
            )
        )
    why = "; ".join(f"{what}: {reason}" for what, reason in skipped.items()) or "no model given"
    entry: dict[str, Any] = {"built": bool(plans), "reason": None if plans else f"TensorRT: nothing built ({why})"}
    entry["plans"] = [p.name for p in plans]
    if skipped:
        entry["skipped"] = skipped
    return entry, plans
