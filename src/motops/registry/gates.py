"""Registration gates: pure rules deciding whether an evaluated engine may enter the registry.

A gate reads the ``evaluate`` stage's ``eval.json`` (combined scores ``hota``, ``mota``,
``idf1`` as fractions in ``[0, 1]``, counts ``idsw``, ``frag``, end-to-end ``fps``, and
``sequences``) and checks, in order:

* ``idf1_min``: ``idf1 >= gates.idf1_min``;
* ``fps_min``: ``fps >= gates.fps_min[backend]`` -- skipped, with a note, for a backend
  ``fps_min`` does not list; failed when ``fps`` is a per-backend mapping without this
  backend (an unmeasured speed never passes);
* ``hota_min``: ``hota >= gates.hota_min``, only when ``hota_min`` is set;
* ``idf1_regression`` (champion only): ``idf1 >= champion_idf1 - max_regression``, absolute points;
* ``fps_regression`` (champion only): ``fps >= champion_fps * (1 - max_regression)``, relative.
  When both engines were timed in the same run (``same_run_fps``, see
  :func:`motops.evaluation.speed.paired_fps`) those two figures are compared instead of FPS
  measured in different runs, which differ by more than ``max_regression`` on noise alone.

Comparisons tolerate :data:`TOLERANCE` of floating-point rounding, so a challenger exactly
``max_regression`` below the champion passes. Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from motops.config import GatesParams
from motops.errors import MotopsError

#: Slack on every comparison, so ``0.70 - 0.02`` accepts ``0.68`` despite binary rounding.
TOLERANCE: Final = 1e-9
#: Combined metrics recorded with a gate and on registered versions (``eval.json`` keys).
METRIC_KEYS: Final = ("hota", "mota", "idf1", "idsw", "frag", "fps")


def _number(metrics: Mapping[str, Any], key: str, where: str) -> float:
    """``metrics[key]`` as a finite float, or a :class:`MotopsError` naming the key."""
    if key not in metrics:
        raise MotopsError(f"{where}: no '{key}'; expected a number (keys present: {', '.join(map(str, metrics))})")
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MotopsError(f"{where}['{key}'] = {value!r}; expected a number")
    value = float(value)
    if not math.isfinite(value):
        raise MotopsError(f"{where}['{key}'] = {value}; expected a finite number")
    return value


def metric_fps(metrics: Mapping[str, Any], backend: str, where: str = "metrics") -> float | None:
    """The FPS of ``backend`` in ``metrics``.

    ``fps`` is a number (measured with the backend the evaluation ran) or a mapping
    ``{backend: fps}``.

    Returns:
        The FPS, or ``None`` when a per-backend mapping has no entry for ``backend``.

    Raises:
        MotopsError: ``fps`` is missing or not a finite number.
    """
    fps = metrics.get("fps")
    if isinstance(fps, Mapping):
        return _number(fps, backend, f"{where}['fps']") if backend in fps else None
    return _number(metrics, "fps", where)


def _rule(
    name: str, value: float | None, threshold: float | None, champion: float | None = None, note: str | None = None
) -> dict[str, Any]:
    skipped = value is None or threshold is None
    passed = True if skipped else value >= threshold - TOLERANCE  # type: ignore[operator]
    rule: dict[str, Any] = {"rule": name, "value": value, "threshold": threshold, "champion": champion,
                            "passed": passed}
    if skipped:
        rule["skipped"] = True
    if note:
        rule["note"] = note
    return rule


def _reason(rule: Mapping[str, Any]) -> str:
    name, value, threshold, champion = rule["rule"], rule["value"], rule["threshold"], rule.get("champion")
    if value is None:
        return f"{name}: {rule.get('note') or 'no value measured'}"
    if name == "idf1_min":
        return f"IDF1 {value:.4f} < minimum {threshold:.4f}"
    if name == "fps_min":
        return f"FPS {value:.2f} < minimum {threshold:.2f}"
    if name == "hota_min":
        return f"HOTA {value:.4f} < minimum {threshold:.4f}"
    if name == "idf1_regression":
        return (f"IDF1 {value:.4f} regresses against the champion's {champion:.4f} by more than allowed "
                f"(threshold {threshold:.4f})")
    if name == "fps_regression":
        return (f"FPS {value:.2f} regresses against the champion's {champion:.2f} by more than allowed "
                f"(threshold {threshold:.2f})")
    return f"{name}: {value} < {threshold}"


def evaluate_gate(
    metrics: Mapping[str, Any],
    params: GatesParams,
    *,
    backend: str,
    champion: Mapping[str, Any] | None = None,
    same_run_fps: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check an engine's evaluation against the gates (and against the current champion).

    Args:
        metrics: The evaluation (``eval.json``): combined ``idf1``, ``hota`` (fractions) and
            ``fps`` (a number, or ``{backend: fps}``); other keys are ignored.
        params: The gates. Raising ``idf1_min``/``hota_min``/``fps_min`` refuses more engines;
            raising ``max_regression`` lets a challenger be further below the champion.
        backend: The runtime the FPS was measured with (``onnxruntime``, ``openvino``,
            ``tensorrt``, ``torch``: ``eval.json``'s ``backend``); picks ``fps_min[backend]``.
        champion: The champion's metrics (same keys), or ``None`` when there is no champion:
            the regression rules are then left out.
        same_run_fps: Challenger and champion timed in one run on the same frames
            (:func:`motops.evaluation.speed.paired_fps`): ``{"fps": {"challenger": x,
            "champion": y}, "frames": n, "rounds": r}``. When given (with a champion),
            ``fps_regression`` compares ``x`` with ``y``; ``fps_min`` still reads ``metrics``.

    Returns:
        A JSON-able dict: ``passed`` (bool), ``backend``, ``rules`` (one
        ``{"rule", "value", "threshold", "champion", "passed"}`` per rule checked, plus
        ``skipped``/``note`` for a rule that could not apply), ``failed`` (a human readable
        reason per failed rule) and ``notes`` (why a rule was skipped).

    Raises:
        MotopsError: ``idf1`` or ``fps`` (or ``hota`` when ``hota_min`` is set) is missing or
            not a finite number, in ``metrics`` or ``champion``; or ``backend`` is empty.
    """
    if not isinstance(backend, str) or not backend:
        raise MotopsError(f"backend={backend!r}; expected a backend name such as 'onnxruntime'")
    if not isinstance(metrics, Mapping):
        raise MotopsError(f"metrics: expected a mapping (eval.json), got {type(metrics).__name__}")
    idf1 = _number(metrics, "idf1", "metrics")
    fps = metric_fps(metrics, backend)
    rules = [_rule("idf1_min", idf1, float(params.idf1_min))]
    if fps is None:
        # Measured, but not with this backend: an unmeasured speed never passes a gate.
        rule = _rule("fps_min", None, params.fps_min.get(backend), note=(  # type: ignore[call-overload]
            f"metrics['fps'] has no entry for backend '{backend}' (it has {', '.join(metrics['fps']) or 'none'})"))
        rule.pop("skipped", None)
        rule["passed"] = False
        rules.append(rule)
    elif backend in params.fps_min:
        rules.append(_rule("fps_min", fps, float(params.fps_min[backend])))  # type: ignore[index]
    else:
        rules.append(_rule("fps_min", fps, None, note=f"gates.fps_min has no minimum for backend '{backend}' "
                           f"(it lists {', '.join(params.fps_min) or 'none'}); rule skipped"))
    if params.hota_min is not None:
        rules.append(_rule("hota_min", _number(metrics, "hota", "metrics"), float(params.hota_min)))
    if champion is not None:
        if not isinstance(champion, Mapping):
            raise MotopsError(f"champion: expected a mapping of metrics or None, got {type(champion).__name__}")
        reg = float(params.max_regression)
        c_idf1 = _number(champion, "idf1", "champion")
        rules.append(_rule("idf1_regression", idf1, c_idf1 - reg, c_idf1))
        c_fps = metric_fps(champion, backend, "champion") if "fps" in champion else None
        if same_run_fps is not None:
            paired = _paired(same_run_fps)
            rules.append(_rule("fps_regression", paired["challenger"], paired["champion"] * (1.0 - reg),
                               paired["champion"], note=(
                f"fps_regression: both engines timed in the same run ({same_run_fps.get('frames', '?')} frames, "
                f"median of {same_run_fps.get('rounds', '?')} rounds): challenger {paired['challenger']:.2f}, "
                f"champion {paired['champion']:.2f} FPS"
                + (f" (registered: {c_fps:.2f})" if c_fps is not None else ""))))
        elif fps is None or c_fps is None:
            missing = "the challenger" if fps is None else "the champion"
            rules.append(_rule("fps_regression", fps, None, c_fps,
                               note=f"{missing} has no FPS for backend '{backend}'; rule skipped"))
        else:
            rules.append(_rule("fps_regression", fps, c_fps * (1.0 - reg), c_fps))
    failed = [_reason(r) for r in rules if not r["passed"]]
    return {
        "passed": not failed,
        "backend": backend,
        "rules": rules,
        "failed": failed,
        "notes": [r["note"] for r in rules if r.get("note")],
    }


def _paired(same_run_fps: Mapping[str, Any]) -> dict[str, float]:
    """The challenger's and champion's FPS of a same-run measurement, checked."""
    fps = same_run_fps.get("fps") if isinstance(same_run_fps, Mapping) else None
    if not isinstance(fps, Mapping):
        raise MotopsError(f"same_run_fps: expected {{'fps': {{'challenger': ..., 'champion': ...}}, ...}}, "
                          f"got {same_run_fps!r}")
    return {name: _number(fps, name, "same_run_fps['fps']") for name in ("challenger", "champion")}


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_gate_table(gate: Mapping[str, Any]) -> str:
    """A plain-text table of a gate (what :func:`evaluate_gate` returns), for messages and descriptions.

    Example::

        gate PASSED (backend onnxruntime)
        rule             value   threshold  champion  result
        idf1_min         0.7100  0.5000     -         pass
        fps_min          12.50   5.00       -         pass
    """
    rows = [("rule", "value", "threshold", "champion", "result")]
    for rule in gate.get("rules", []):
        digits = 2 if str(rule["rule"]).startswith("fps") else 4
        result = "skip" if rule.get("skipped") else ("pass" if rule["passed"] else "FAIL")
        rows.append((str(rule["rule"]), _cell(rule["value"], digits), _cell(rule["threshold"], digits),
                     _cell(rule.get("champion"), digits), result))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"gate {'PASSED' if gate.get('passed') else 'FAILED'} (backend {gate.get('backend', '?')})"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"failed: {reason}" for reason in gate.get("failed", [])]
    lines += [f"note: {note}" for note in gate.get("notes", [])]
    return "\n".join(lines)
