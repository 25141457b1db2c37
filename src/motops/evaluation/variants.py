"""Tracking scores of each detector variant a bundle records (FP32, INT8, OpenVINO), for its manifest.

The export stage records each variant's mAP50 (``metrics.variants.detector``,
:mod:`motops.export.variants`); detection accuracy does not tell the whole tracking cost (the
default run's INT8 detector: -0.67 mAP50 points, -2.4 IDF1 points on the val sequence). The
evaluate stage therefore tracks the val sequences once more per variant -- same tracker,
settings chosen by the sweep, ReID and NMS IoU; only the detector differs -- and adds
``idf1``, ``hota``, ``mota`` and ``idf1_drop`` (FP32's IDF1 minus the variant's) to each entry.
Untimed: the engine's FPS is measured once, on the variant the evaluation runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: How each recorded variant is loaded: (bundle file role, backend).
VARIANT_LOADS = {"fp32": ("detector", "onnxruntime"), "int8": ("detector_int8", "onnxruntime"),
                 "openvino": ("detector", "openvino")}


def score_variants(
    engine: Any,
    *,
    tracker_params: Mapping[str, Any],
    folders: Mapping[str, Path],
    lengths: Mapping[str, int],
    gt: Mapping[str, Any],
    seqinfo: Mapping[str, Any],
    out_dir: Path,
    nms_iou: float,
    skip: Callable[[str], str | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Track and score the val sequences with each detector variant recorded in ``engine.manifest``.

    Args:
        engine: The loaded :class:`~motops.runtime.bundle.Engine` (its ReID, tracker, flow and
            ``detect_every`` are used as they are).
        tracker_params: The association settings chosen by the sweep.
        folders: Sequence name -> frame folder.
        lengths: Sequence name -> frames to track.
        gt: Sequence name -> ground-truth table (:func:`motops.evaluation.score`'s input).
        seqinfo: Sequence name -> :class:`~motops.data.mot.SeqInfo`.
        out_dir: Where the per-variant runs go (``out_dir/VARIANT/SEQ``).
        nms_iou: The detector NMS IoU the sweep chose.
        skip: Optional ``variant -> reason`` for variants not to run here (``None``: run it).

    Returns:
        ``{variant: {"idf1", "hota", "mota", "idsw", "idf1_drop"}}`` or ``{variant: {"skipped": reason}}``;
        ``{}`` when the manifest records no variants.
    """
    from motops.data.mot import read_mot_txt
    from motops.evaluation.trackeval_adapter import score
    from motops.runtime import hardware
    from motops.runtime.backends import BackendUnavailable, load_detector
    from motops.runtime.runner import model_roles, track_source

    recorded = hardware.detector_variants(engine.manifest)
    roles = model_roles(engine)
    cfg = engine.config
    out: dict[str, dict[str, Any]] = {}
    for variant in recorded:
        if variant not in VARIANT_LOADS:
            continue
        role, backend = VARIANT_LOADS[variant]
        reason = (skip(variant) if skip else None) or (None if role in roles else f"no {role} in the bundle")
        if reason is None:
            try:
                detector = load_detector(engine.path / roles[role], backend=backend, imgsz=tuple(engine.imgsz),
                                         conf=cfg["conf"], iou=nms_iou, classes=cfg["classes"], device="cpu")
            except BackendUnavailable as exc:
                reason = str(exc).splitlines()[0]
        if reason is not None:
            out[variant] = {"skipped": reason}
            continue
        results = {}
        for seq, folder in folders.items():
            run = out_dir / variant / seq
            track_source(folder, detector=detector, reid=engine.reid, tracker=engine.tracker,
                         tracker_params=dict(tracker_params), detect_every=engine.detect_every, flow=engine.flow,
                         out_dir=run, write_video=False, max_frames=lengths[seq], progress=False)
            results[seq] = read_mot_txt(run / "tracks.txt", sequence=seq, min_columns=6, allow_empty=True)
        m = score(dict(gt), results, dict(seqinfo)).combined
        out[variant] = {"idf1": float(m.idf1), "hota": float(m.hota), "mota": float(m.mota), "idsw": int(m.idsw)}
    base = out.get("fp32", {}).get("idf1")
    for entry in out.values():
        if base is not None and "idf1" in entry:
            entry["idf1_drop"] = float(np.round(base - entry["idf1"], 6))
    return out


def with_scores(manifest_metrics: Mapping[str, Any], scores: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``manifest["metrics"]`` with ``scores`` merged into ``variants.detector.<variant>`` (a new dict)."""
    metrics = {k: v for k, v in manifest_metrics.items()}
    variants = dict(metrics.get("variants", {}) or {})
    detector = {k: dict(v) for k, v in (variants.get("detector", {}) or {}).items()}
    for name, entry in scores.items():
        detector.setdefault(name, {}).update({f"tracking_{k}" if k == "skipped" else k: v for k, v in entry.items()})
    variants["detector"] = detector
    metrics["variants"] = variants
    return metrics
