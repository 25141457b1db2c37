"""Writing engine bundles (the build side); reading, verifying and loading them is :mod:`motops.runtime.bundle`.

:func:`write_bundle` copies the model files, writes ``tracker.yaml`` and ``manifest.json`` in the
format :mod:`motops.runtime.bundle` documents and checks, and swaps the folder in atomically;
:func:`rewrite_bundle` copies a verified bundle with new settings or metrics;
:func:`tracker_config` turns a ``params.track`` section into the ``tracker.yaml`` mapping.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from motops.errors import did_you_mean
from motops.fsutil import fsync_dir
from motops.runtime.bundle import (
    DETECTOR_DEFAULTS,
    FORMAT,
    MANIFEST_FILE,
    PLAN_ROLE_PREFIX,
    PLAN_SUFFIXES,
    PLANS_DIR,
    ROLE_FILES,
    SCHEMA_VERSION,
    TRACKER_FILE,
    TRACKER_ROLE,
    BundleError,
    BundleProblem,
    check_backends,
    library_versions,
    normalize_tracker_config,
    read_tracker_yaml,
    verify_bundle,
)
from motops.runtime.trackers import TRACKER_PARAM_NAMES, TrackerParams

#: Things that may sit in a folder ``write_bundle`` replaces without a manifest (an interrupted export).
_REPLACEABLE_SUFFIXES: Final = (".onnx", ".data", ".plan", ".engine", ".cache", ".yaml", ".json", ".pt", ".ts")
_CHUNK: Final = 1 << 20


def _copy_hashed(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` (fsynced) and return the sha256 and size of what was written."""
    digest = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest(), size


def _write_hashed(dst: Path, data: bytes) -> tuple[str, int]:
    with open(dst, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return hashlib.sha256(data).hexdigest(), len(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def _jsonable(value: Any, what: str) -> Any:
    """``value`` round-tripped through JSON (numpy scalars and tuples converted); NaN and inf refused."""
    try:
        return json.loads(json.dumps(value, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: not representable in JSON ({exc}); NaN/inf and non-JSON types are refused") from None


# --------------------------------------------------------------------------- tracker.yaml


def tracker_config(
    track: Any,
    *,
    conf: float | None = None,
    iou: float = DETECTOR_DEFAULTS["iou"],
    classes: list[int] | tuple[int, ...] | None = tuple(DETECTOR_DEFAULTS["classes"]),
) -> dict[str, Any]:
    """The ``tracker`` mapping of :func:`write_bundle` from a ``params.track`` section (or a mapping).

    ``track.backend`` is not taken: which backend runs a bundle is decided where it is loaded
    (:func:`load_bundle`), not when it is written.

    Args:
        track: A :class:`motops.config.TrackParams` or a mapping with its keys (the thresholds
            chosen by the confidence sweep already applied).
        conf: Detector score threshold; ``None``: ``track_low_thresh`` -- the tracker discards
            boxes at or below it anyway, so this drops nothing the tracker would use.
        iou: Detector NMS IoU threshold.
        classes: Class indices the detector keeps (``None``: all).

    Returns:
        ``{"tracker", "detect_every", "flow", "conf", "iou", "classes", <association settings>}``.
    """
    get = track.get if isinstance(track, Mapping) else lambda k, d=None: getattr(track, k, d)
    cfg: dict[str, Any] = {k: get(k) for k in ("tracker", "detect_every", "flow", *TRACKER_PARAM_NAMES)}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    low = cfg.get("track_low_thresh", TrackerParams().track_low_thresh)
    cfg.update(conf=low if conf is None else conf, iou=iou, classes=None if classes is None else list(classes))
    return normalize_tracker_config(cfg)


# --------------------------------------------------------------------------- writing


def _destination(role: str, src: Path) -> str:
    """Bundle-relative POSIX path of a file with ``role``."""
    if role in ROLE_FILES:
        if src.suffix.lower() != ".onnx":
            raise ValueError(f"files[{role!r}] = {src}: expected an .onnx file")
        return ROLE_FILES[role]
    if role.startswith(PLAN_ROLE_PREFIX):
        if src.suffix.lower() not in PLAN_SUFFIXES:
            raise ValueError(f"files[{role!r}] = {src}: expected a TensorRT plan ({' or '.join(PLAN_SUFFIXES)})")
        return f"{PLANS_DIR}/{src.name}"
    valid = [*ROLE_FILES, f"{PLAN_ROLE_PREFIX}<name>"]
    raise ValueError(f"files: unknown role {role!r}{did_you_mean(role, list(ROLE_FILES))}; expected one of {valid}")


def _replaceable(folder: Path) -> bool:
    """Whether ``write_bundle`` may replace ``folder``: a bundle, empty, or only leftovers of an export."""
    if (folder / MANIFEST_FILE).is_file():
        return True
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name == PLANS_DIR:
            continue
        if not entry.is_file() or entry.suffix.lower() not in _REPLACEABLE_SUFFIXES:
            return False
    return True


def write_bundle(
    out_dir: str | Path,
    *,
    files: Mapping[str, str | Path],
    tracker: Mapping[str, Any],
    model_version: str,
    input_shapes: Mapping[str, Any],
    class_names: Mapping[int, str],
    metrics: Mapping[str, Any],
    backends: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write an engine bundle, replacing any bundle already at ``out_dir`` atomically.

    The bundle is built in a temporary sibling folder (``.NAME.tmp-*``): files copied and
    hashed as they are written, ``tracker.yaml``, then ``manifest.json``. Only when all of it
    is on disk is the old folder moved aside and the new one renamed into place; any failure
    before that removes the temporary folder and leaves the old bundle untouched. Sources may
    live inside ``out_dir`` (they are read before the swap).

    Args:
        out_dir: The bundle folder. An existing folder is replaced only if it is a bundle,
            empty, or holds nothing but model/config files (an earlier export's output).
        files: Role to source file: ``detector`` (required), ``detector_int8``, ``reid``,
            ``reid_int8`` (ONNX, stored under their canonical names :data:`ROLE_FILES`) and
            ``plan_*`` roles for TensorRT plans (stored as ``plans/<file name>``).
        tracker: Tracker settings (see :func:`tracker_config` and :func:`normalize_tracker_config`);
            missing keys take their defaults and the complete set is written.
        model_version: Version label recorded in the manifest.
        input_shapes: Model name to input dims, e.g. ``{"detector": [1, 3, 640, 640]}``.
        class_names: Class index to name.
        metrics: Metrics the bundle was gated on (JSON numbers; NaN refused).
        backends: Backend name to ``{"built": bool, "reason": str | None}``; a backend not built
            must say why (e.g. :func:`motops.export.tensorrt.build_plans_or_skip`'s entry).
        extra: Free-form JSON recorded under ``extra``.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: A source file does not exist (the old bundle is untouched).
        ValueError: An unknown role, a bad tracker setting, a backend without a reason, or a
            value that is not JSON.
        BundleError: ``out_dir`` exists and holds things that are not a bundle.
    """
    out_dir = Path(out_dir)
    if "detector" not in files:
        raise ValueError(f"files: the 'detector' role is required; got roles {sorted(files)}")
    dests: dict[str, tuple[str, Path]] = {}
    for role, src in files.items():
        src = Path(src)
        dest = _destination(role, src)
        if dest in {d for d, _ in dests.values()}:
            raise ValueError(f"files[{role!r}]: {dest} is already given by another role")
        if not src.is_file():
            raise FileNotFoundError(f"files[{role!r}]: {src} does not exist (bundle {out_dir} left as it was)")
        dests[role] = (dest, src)
    cfg = normalize_tracker_config(tracker)
    if cfg["tracker"] == "botsort" and cfg["with_reid"] and "reid" not in files:
        raise ValueError(
            "files: tracker botsort with with_reid: true needs a 'reid' model; add one, or set with_reid false"
        )
    if not isinstance(model_version, str) or not model_version.strip():
        raise ValueError(f"model_version={model_version!r}; expected a non-empty string")
    problems = check_backends(backends)
    if problems:
        raise ValueError("; ".join(problems))
    shapes = _jsonable(dict(input_shapes), "input_shapes")
    for name, dims in shapes.items():
        if not isinstance(dims, list) or not all(isinstance(d, int | str) or d is None for d in dims):
            raise ValueError(f"input_shapes[{name!r}] = {dims!r}; expected a list of ints (or names of dynamic dims)")
    try:
        names = {str(int(k)): str(v) for k, v in class_names.items()}
    except (TypeError, ValueError):
        raise ValueError(f"class_names: expected {{int: str}}, got {dict(class_names)!r}") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise BundleError(out_dir, [BundleProblem(out_dir.name, "exists and is not a folder")])
    if out_dir.is_dir() and not _replaceable(out_dir):
        raise BundleError(
            out_dir,
            [BundleProblem(".", "holds files that are not a bundle's; refusing to replace it (remove them first)")],
        )
    manifest_base = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "model_version": model_version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "input_shapes": shapes,
        "class_names": names,
        "metrics": _jsonable(dict(metrics), "metrics"),
        "libraries": library_versions(),
        "backends": _jsonable({k: dict(v) for k, v in backends.items()}, "backends"),
        "extra": _jsonable(dict(extra or {}), "extra"),
    }

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = out_dir.parent / f".{out_dir.name}.tmp-{tag}"
    old = out_dir.parent / f".{out_dir.name}.old-{tag}"
    staging.mkdir()
    try:
        entries: dict[str, dict[str, Any]] = {}
        for role, (dest, src) in dests.items():
            sha, size = _copy_hashed(src, staging / dest)
            entries[dest] = {"role": role, "sha256": sha, "size": size}
        text = yaml.safe_dump(cfg, sort_keys=False).encode()
        sha, size = _write_hashed(staging / TRACKER_FILE, b"# written by motops.export.bundle\n" + text)
        entries[TRACKER_FILE] = {"role": TRACKER_ROLE, "sha256": sha, "size": size}
        manifest = {**manifest_base, "files": dict(sorted(entries.items()))}
        _write_hashed(staging / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n")
        # The swap: the old bundle is moved aside (not deleted) until the new one is in place.
        if out_dir.exists():
            os.rename(out_dir, old)
        try:
            os.rename(staging, out_dir)
        except BaseException:
            if old.exists() and not out_dir.exists():
                os.rename(old, out_dir)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out_dir.parent)
    return out_dir


def rewrite_bundle(
    src: str | Path,
    out_dir: str | Path,
    *,
    tracker: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    model_version: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a copy of the verified bundle ``src`` to ``out_dir`` with new settings or metrics.

    What is not given is kept from ``src``'s manifest (``extra`` is merged into it). The
    copy gets a fresh manifest (hashes recomputed) and replaces ``out_dir`` atomically.

    Raises:
        BundleError: ``src`` is not an intact bundle.
    """
    src = Path(src)
    manifest = verify_bundle(src).raise_if_bad().manifest
    files = {e["role"]: src / name for name, e in manifest["files"].items() if e["role"] != TRACKER_ROLE}
    cfg = read_tracker_yaml(src / TRACKER_FILE) if tracker is None else tracker
    return write_bundle(
        out_dir,
        files=files,
        tracker=cfg,
        model_version=model_version or manifest["model_version"],
        input_shapes=manifest["input_shapes"],
        class_names={int(k): v for k, v in manifest["class_names"].items()},
        metrics=manifest["metrics"] if metrics is None else metrics,
        backends=manifest["backends"],
        extra={**manifest.get("extra", {}), **(extra or {})},
    )
