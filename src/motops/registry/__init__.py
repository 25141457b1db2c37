"""The registry: gates, lineage, MLflow registration, aliases and promotion.

:mod:`~motops.registry.gates` and :mod:`~motops.registry.lineage` are pure and light;
the MLflow functions (:mod:`~motops.registry.mlflow_registry`) import MLflow, which takes
seconds, so they are loaded on first use (``from motops.registry import register``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from motops.registry.gates import METRIC_KEYS, evaluate_gate, format_gate_table
from motops.registry.lineage import lineage_tags

if TYPE_CHECKING:
    from motops.registry.mlflow_registry import (
        CHALLENGER,
        CHAMPION,
        PREVIOUS,
        EngineModel,
        PromotionRefused,
        RegistryAuthError,
        RegistryError,
        champion_metrics,
        download_bundle,
        promote,
        read_tracks,
        redact_uri,
        register,
        rollback,
        show,
        tracking_uri,
    )

__all__ = [
    "METRIC_KEYS",
    "evaluate_gate",
    "format_gate_table",
    "lineage_tags",
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "EngineModel",
    "PromotionRefused",
    "RegistryAuthError",
    "RegistryError",
    "champion_metrics",
    "download_bundle",
    "promote",
    "read_tracks",
    "redact_uri",
    "register",
    "rollback",
    "show",
    "tracking_uri",
]

_EAGER = {"METRIC_KEYS", "evaluate_gate", "format_gate_table", "lineage_tags"}
_LAZY = frozenset(__all__) - _EAGER


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("motops.registry.mlflow_registry"), name)
    raise AttributeError(f"module 'motops.registry' has no attribute {name!r}")
