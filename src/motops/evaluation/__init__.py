"""Scoring tracker output: TrackEval metrics, a diagnosis, and a simulated detector."""

from __future__ import annotations

from motops.evaluation.simulate import simulate_detections
from motops.evaluation.trackeval_adapter import (
    METRIC_FIELDS,
    EvalResult,
    EvaluationError,
    SequenceMetrics,
    diagnose,
    needs_preprocessing,
    score,
)

__all__ = [
    "METRIC_FIELDS",
    "EvalResult",
    "EvaluationError",
    "SequenceMetrics",
    "diagnose",
    "needs_preprocessing",
    "score",
    "simulate_detections",
]
