"""The engine bundle: one self-describing folder that MLflow registers, ``motops track`` runs and the fleet ships.

This module reads, verifies and loads bundles (what a device needs);
:mod:`motops.export.bundle` writes them (the build side), in this format.

Layout::

    ENGINE/
      detector.onnx            role detector        (required)
      detector.int8.onnx       role detector_int8   (optional, QDQ)
      reid.onnx                role reid            (required by BoT-SORT with with_reid)
      reid.int8.onnx           role reid_int8       (optional, QDQ)
      plans/NAME.PRECISION.smXY.trtVERSION.plan     TensorRT plans (roles plan_*), see motops.runtime.tensorrt
      tracker.yaml             role tracker: tracker name, association settings, detector thresholds,
                               detect_every, flow
      manifest.json            everything above with sha256 and size, plus provenance

``manifest.json`` (schema :data:`SCHEMA_VERSION`)::

    format          "motops-engine-bundle"
    schema_version  1
    model_version   free text (the registry version, a git describe, ...)
    created_at      UTC ISO-8601, e.g. "2026-01-31T12:00:00Z"
    files           {relative path: {"role", "sha256", "size"}} -- every file but manifest.json
    input_shapes    {model: [dims]} e.g. {"detector": [1, 3, 640, 640], "reid": ["batch", 3, 128, 64]}
    class_names     {"0": "person", ...} (JSON keys are strings; read back as int)
    metrics         the metrics the bundle was gated on
    libraries       versions of python, motops, torch, onnx, onnxruntime, ultralytics, tensorrt (null if absent)
    backends        {name: {"built": bool, "reason": str | null, ...}} -- a skipped backend says why
    extra           free-form (lineage, params digest, ...)

:func:`manifest_digest` is the sha256 of the canonical JSON of the manifest (sorted keys, no
whitespace, UTF-8; a top-level ``signature`` key is left out) -- what the fleet signs. Files
ending in ``.sig`` are the only unlisted files a bundle may hold (detached signatures): plain
files (not links) of at most :data:`SIG_MAX_BYTES` bytes.

Which model :func:`load_bundle` runs:

* detector: with ``backend="auto"`` a TensorRT plan made for this GPU's compute capability and
  this TensorRT version (FP16 first, then INT8) when CUDA and TensorRT are present and the
  bundle has one; otherwise the ONNX with ONNX Runtime. ``backend="tensorrt"`` refuses to fall
  back; ``backend="onnxruntime"`` never looks at plans.
* ONNX precision (``int8="auto"``): the INT8 QDQ ONNX (``reid.int8.onnx``, ``detector.int8.onnx``)
  when ONNX Runtime runs on the CPU and the bundle has it -- INT8 kernels are 2-4x faster on
  CPUs and the export stage checked its parity; the FP32 ONNX on a GPU, where ONNX Runtime's
  CUDA provider runs QDQ models slower than FP32 (TensorRT plans are the GPU's INT8 path).
  ``int8=True`` takes every INT8 model the bundle has, on any device (an error when it has
  none); ``int8=False`` takes the FP32 ones.
* ReID: always ONNX Runtime (there is no TensorRT ReID backend); none for ByteTrack or
  ``with_reid: false``, which use no appearance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import platform
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Final

import numpy as np
import yaml

from motops.errors import MotopsError, did_you_mean
from motops.runtime import select
from motops.runtime.backends import BackendUnavailable, Detector, ReID, load_detector
from motops.runtime.skipping import FLOW_METHODS
from motops.runtime.trackers import TRACKER_NAMES, TRACKER_PARAM_NAMES, TrackerParams

logger = logging.getLogger(__name__)

FORMAT: Final = "motops-engine-bundle"
SCHEMA_VERSION: Final = 1
MANIFEST_FILE: Final = "manifest.json"
TRACKER_FILE: Final = "tracker.yaml"
#: Largest detached signature (``*.sig``) a bundle may hold: an Ed25519 or RSA-4096 signature in base64 fits.
SIG_MAX_BYTES: Final = 4096
PLANS_DIR: Final = "plans"
#: Canonical file name of each ONNX role.
ROLE_FILES: Final = {
    "detector": "detector.onnx",
    "detector_int8": "detector.int8.onnx",
    "reid": "reid.onnx",
    "reid_int8": "reid.int8.onnx",
}
#: Roles of TensorRT plans start with this (``plan_detector_fp16``); the file keeps its name under ``plans/``.
PLAN_ROLE_PREFIX: Final = "plan_"
PLAN_SUFFIXES: Final = (".plan", ".engine")
TRACKER_ROLE: Final = "tracker"
REQUIRED_KEYS: Final = (
    "format",
    "schema_version",
    "model_version",
    "created_at",
    "files",
    "input_shapes",
    "class_names",
    "metrics",
    "libraries",
    "backends",
)
FILE_KEYS: Final = ("role", "sha256", "size")
#: Libraries whose versions the manifest records (distribution names).
LIBRARIES: Final = ("torch", "onnx", "onnxruntime", "ultralytics", "tensorrt")
#: Distribution names TensorRT's Python package is published under.
_TENSORRT_DISTS: Final = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-libs")
#: Detector settings stored in ``tracker.yaml`` besides the tracker's own (load_detector's defaults).
DETECTOR_DEFAULTS: Final = {"conf": 0.1, "iou": 0.7, "classes": [0]}
TRACKER_KEYS: Final = ("tracker", "detect_every", "flow", *DETECTOR_DEFAULTS, *TRACKER_PARAM_NAMES)
_CHUNK: Final = 1 << 20
_HEX_PREFIX: Final = 12


class BundleError(MotopsError):
    """An engine bundle is missing, altered or malformed.

    Attributes:
        path: The bundle folder.
        problems: Every problem found, as :class:`BundleProblem`; the first is in the message's first line.
        files: The offending file names (bundle-relative), in order, without repeats.
    """

    def __init__(self, path: str | Path, problems: list[BundleProblem]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        self.files = list(dict.fromkeys(p.file for p in self.problems))
        lines = [f"{p.file}: {p.message}" for p in self.problems]
        super().__init__(f"engine bundle {self.path} is not intact: " + "\n  ".join(lines))


@dataclasses.dataclass(frozen=True)
class BundleProblem:
    """One thing wrong with a bundle: ``file`` (bundle-relative) and what differed."""

    file: str
    message: str


@dataclasses.dataclass
class BundleReport:
    """What :func:`verify_bundle` found.

    Attributes:
        path: The bundle folder.
        manifest: The parsed manifest (``{}`` when it could not be read).
        problems: Everything wrong, in the order found; empty for an intact bundle.
        checked: Files whose size and sha256 were checked and matched.
    """

    path: Path
    manifest: dict[str, Any]
    problems: list[BundleProblem]
    checked: list[str]

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    @property
    def bad_files(self) -> list[str]:
        """Offending file names, in order, without repeats."""
        return list(dict.fromkeys(p.file for p in self.problems))

    def raise_if_bad(self) -> BundleReport:
        """Raise :class:`BundleError` listing every problem, or return the report."""
        if self.problems:
            raise BundleError(self.path, self.problems)
        return self


# --------------------------------------------------------------------------- helpers


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def manifest_digest(manifest: Mapping[str, Any] | str | Path) -> str:
    """sha256 (hex) of the canonical JSON of a manifest: what a signature signs.

    Args:
        manifest: The manifest mapping, a ``manifest.json`` file, or a bundle folder.

    Returns:
        The hex digest of the manifest serialized with sorted keys, ``(",", ":")``
        separators and UTF-8, leaving out a top-level ``signature`` key, so the digest does
        not depend on formatting or on a signature stored in the manifest itself.
    """
    if not isinstance(manifest, Mapping):
        path = Path(manifest)
        path = path / MANIFEST_FILE if path.is_dir() else path
        manifest = json.loads(path.read_text(encoding="utf-8"))
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return hashlib.sha256(_canonical_json(body)).hexdigest()


def library_versions() -> dict[str, str | None]:
    """Versions of python, motops and :data:`LIBRARIES` (``None`` for one not installed), without importing them."""
    import motops

    versions: dict[str, str | None] = {"python": platform.python_version(), "motops": motops.__version__}
    for name in LIBRARIES:
        dists = _TENSORRT_DISTS if name == "tensorrt" else (name,)
        versions[name] = None
        for dist in dists:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions[name] = importlib.metadata.version(dist)
                break
    # Jetson images ship TensorRT's Python bindings from apt, often without distribution metadata.
    if versions["tensorrt"] is None and importlib.util.find_spec("tensorrt") is not None:
        with contextlib.suppress(Exception):
            import tensorrt

            versions["tensorrt"] = str(tensorrt.__version__)
    return versions



# --------------------------------------------------------------------------- tracker.yaml


def normalize_tracker_config(cfg: Mapping[str, Any], where: str = "tracker") -> dict[str, Any]:
    """Check a tracker configuration and fill in every default, so ``tracker.yaml`` is complete.

    Args:
        cfg: Keys of :data:`TRACKER_KEYS`; missing ones take their defaults (BoT-SORT,
            ``detect_every`` 1, ``dis`` flow, :data:`DETECTOR_DEFAULTS`,
            :class:`~motops.runtime.trackers.TrackerParams`).
        where: Named in error messages (``tracker`` or a ``tracker.yaml`` path).

    Returns:
        A new dict with all of :data:`TRACKER_KEYS`, in that order.

    Raises:
        ValueError: An unknown key (with the closest valid one) or a value out of range.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{where}: expected a mapping of tracker settings, got {type(cfg).__name__}")
    for key in cfg:
        if key == "backend":
            raise ValueError(
                f"{where}: 'backend' is not stored in a bundle; choose it when loading (load_bundle(backend=...))"
            )
        if key not in TRACKER_KEYS:
            raise ValueError(
                f"{where}: unknown key {key!r}{did_you_mean(str(key), TRACKER_KEYS)}; "
                f"valid keys: {', '.join(TRACKER_KEYS)}"
            )
    name = cfg.get("tracker", "botsort")
    if name not in TRACKER_NAMES:
        raise ValueError(f"{where}: tracker={name!r}; expected one of {list(TRACKER_NAMES)}")
    detect_every = cfg.get("detect_every", 1)
    if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
        raise ValueError(f"{where}: detect_every={detect_every!r}; expected an integer >= 1")
    flow = cfg.get("flow", "dis")
    if flow not in FLOW_METHODS:
        raise ValueError(f"{where}: flow={flow!r}; expected one of {list(FLOW_METHODS)}")
    det: dict[str, Any] = {}
    for key in ("conf", "iou"):
        value = cfg.get(key, DETECTOR_DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}: {key}={value!r}; expected a number in [0, 1]")
        det[key] = float(value)
    classes = cfg.get("classes", DETECTOR_DEFAULTS["classes"])
    if classes is not None:
        if isinstance(classes, str | bytes) or not all(
            isinstance(c, int | np.integer) and not isinstance(c, bool) and c >= 0 for c in classes
        ):
            raise ValueError(f"{where}: classes={classes!r}; expected a list of class indices >= 0, or null (all)")
        classes = [int(c) for c in classes]
    try:
        params = TrackerParams(**{k: cfg[k] for k in TRACKER_PARAM_NAMES if k in cfg})
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    assoc = dataclasses.asdict(params)
    assoc = {k: (float(v) if isinstance(v, float) else v) for k, v in assoc.items()}
    return {"tracker": name, "detect_every": detect_every, "flow": flow, **det, "classes": classes, **assoc}


# --------------------------------------------------------------------------- manifest checks


def check_backends(backends: Any, where: str = "backends") -> list[str]:
    """Problems of a ``backends`` mapping (empty when well formed)."""
    if not isinstance(backends, Mapping):
        return [f"{where}: expected a mapping of backend name to {{'built', 'reason'}}, got {type(backends).__name__}"]
    problems = []
    for name, entry in backends.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("built"), bool) or "reason" not in entry:
            problems.append(f"{where}[{name!r}]: expected {{'built': bool, 'reason': str | None}}, got {entry!r}")
        elif not entry["built"] and not (isinstance(entry["reason"], str) and entry["reason"].strip()):
            problems.append(f"{where}[{name!r}]: not built, so it needs a reason saying why")
        elif entry["reason"] is not None and not isinstance(entry["reason"], str):
            problems.append(f"{where}[{name!r}]: reason must be a string or null, got {entry['reason']!r}")
    return problems



# --------------------------------------------------------------------------- verifying


def _safe_relpath(name: Any) -> bool:
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    parts = PurePosixPath(name).parts
    return not PurePosixPath(name).is_absolute() and ".." not in parts and "." not in parts


def _short(hexdigest: str) -> str:
    return hexdigest[:_HEX_PREFIX]


def verify_bundle(path: str | Path) -> BundleReport:
    """Check a bundle against its manifest: every listed file present, the right size and sha256, nothing more.

    Checks, in order: ``manifest.json`` is JSON with every key of :data:`REQUIRED_KEYS`, this
    format and a known schema version; every ``files`` entry has a safe relative path, a role
    and a 64-hex ``sha256`` and integer ``size``; each file exists as a plain file with that
    size and sha256; no other file is in the folder (detached ``*.sig`` signatures aside: plain
    files of at most :data:`SIG_MAX_BYTES`, never links); a
    ``detector`` is listed; ``tracker.yaml`` is listed, parses and holds valid settings;
    ``backends`` entries are well formed.

    Args:
        path: The bundle folder.

    Returns:
        A :class:`BundleReport`; call :meth:`BundleReport.raise_if_bad` to turn problems into a
        :class:`BundleError` naming each offending file and what differed (expected vs found
        size, sha256 prefix).
    """
    root = Path(path)
    problems: list[BundleProblem] = []
    checked: list[str] = []

    def bad(file: str, message: str) -> None:
        problems.append(BundleProblem(file, message))

    if not root.is_dir():
        bad(".", f"{root} is not a folder")
        return BundleReport(root, {}, problems, checked)
    manifest_path = root / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        bad(MANIFEST_FILE, "missing; this folder is not an engine bundle")
        return BundleReport(root, {}, problems, checked)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        bad(MANIFEST_FILE, f"not readable JSON ({exc})")
        return BundleReport(root, {}, problems, checked)
    if not isinstance(manifest, dict):
        bad(MANIFEST_FILE, f"expected a JSON object, got {type(manifest).__name__}")
        return BundleReport(root, {}, problems, checked)
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        bad(MANIFEST_FILE, f"missing key(s) {missing}; expected all of {list(REQUIRED_KEYS)}")
    if manifest.get("format", FORMAT) != FORMAT:
        bad(MANIFEST_FILE, f"format {manifest.get('format')!r}; expected {FORMAT!r}")
    version = manifest.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        bad(MANIFEST_FILE, f"schema_version {version!r}; this motops reads 1..{SCHEMA_VERSION} (upgrade motops?)")
    for problem in check_backends(manifest.get("backends", {})):
        bad(MANIFEST_FILE, problem)
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        bad(MANIFEST_FILE, f"'files' must be an object of path -> {{role, sha256, size}}, got {type(files).__name__}")
        files = {}

    roles: dict[str, str] = {}
    for name, entry in files.items():
        if not _safe_relpath(name) or name == MANIFEST_FILE:
            bad(str(name), "listed under an unsafe or reserved path; expected a relative path inside the bundle")
            continue
        if not isinstance(entry, dict):
            bad(name, f"manifest entry is {entry!r}; expected {{role, sha256, size}}")
            continue
        absent = [k for k in FILE_KEYS if k not in entry]
        if absent:
            bad(name, f"manifest entry lacks {absent}; expected keys {list(FILE_KEYS)}")
            continue
        sha, size, role = entry["sha256"], entry["size"], entry["role"]
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            bad(name, f"manifest sha256 {sha!r}; expected 64 lowercase hex digits")
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            bad(name, f"manifest size {size!r}; expected a byte count")
            continue
        if not isinstance(role, str) or not role:
            bad(name, f"manifest role {role!r}; expected a role name")
            continue
        roles[role] = name
        file = root / name
        if file.is_symlink() or (file.exists() and not file.is_file()):
            bad(name, "not a plain file (a link or a folder)")
            continue
        if not file.exists():
            bad(name, f"missing (expected {size} bytes, sha256 {_short(sha)}…)")
            continue
        found_size = file.stat().st_size
        found_sha = sha256_file(file)
        if found_size != size:
            bad(name, f"size differs: expected {size} bytes, found {found_size} (sha256 found {_short(found_sha)}…)")
        elif found_sha != sha:
            bad(name, f"sha256 differs: expected {_short(sha)}…, found {_short(found_sha)}…")
        else:
            checked.append(name)

    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if file.is_dir() and not file.is_symlink():
            continue
        if rel == MANIFEST_FILE or rel in files:
            continue
        if file.suffix == ".sig":
            if file.is_symlink() or not file.is_file():
                bad(rel, "detached signature is a link or not a plain file; expected a small regular file")
            elif file.stat().st_size > SIG_MAX_BYTES:
                bad(rel, f"detached signature is {file.stat().st_size} bytes; expected at most {SIG_MAX_BYTES}")
            continue
        kind = "model file" if file.suffix.lower() in (*PLAN_SUFFIXES, ".onnx", ".data", ".pt", ".ts") else "file"
        bad(rel, f"unlisted {kind}: not in the manifest, so it may have been added or altered after export")

    if files and "detector" not in roles:
        bad(MANIFEST_FILE, "no file has role 'detector'")
    if TRACKER_FILE not in files:
        bad(TRACKER_FILE, "not listed in the manifest")
    elif TRACKER_FILE in checked:
        try:
            normalize_tracker_config(read_tracker_yaml(root / TRACKER_FILE), where=TRACKER_FILE)
        except (ValueError, yaml.YAMLError) as exc:
            bad(TRACKER_FILE, str(exc).removeprefix(f"{TRACKER_FILE}: "))
    return BundleReport(root, manifest, problems, checked)


def read_tracker_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping of tracker settings, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- loading


@dataclasses.dataclass
class Engine:
    """A loaded engine bundle, ready for :func:`motops.runtime.runner.track_source`.

    Attributes:
        path: The bundle folder.
        detector: ``frame_bgr (H, W, 3) -> (N, 6)`` detections ``[x1, y1, x2, y2, conf, cls]``.
        reid: ``(frame_bgr, boxes (N, 4)) -> (N, D)`` embeddings, or ``None`` (ByteTrack,
            ``with_reid: false``, or no ReID in the bundle).
        tracker: ``botsort`` or ``bytetrack``.
        tracker_params: Association settings for ``make_tracker`` / ``track_source(tracker_params=)``.
        detect_every: Run the detector every N-th frame.
        flow: Optical flow between detection frames (``dis``, ``farneback``).
        imgsz: Detector input ``(H, W)``.
        manifest: The parsed ``manifest.json``.
        config: The whole ``tracker.yaml`` (detector thresholds included).
        chosen: Per model (``detector``, ``reid``), the file that runs, on which backend, and why;
            ``trt_skipped`` says why no TensorRT plan was used when ``backend="auto"`` fell back.
    """

    path: Path
    detector: Detector
    reid: ReID | None
    tracker: str
    tracker_params: dict[str, Any]
    detect_every: int
    flow: str
    imgsz: tuple[int, int]
    manifest: dict[str, Any]
    config: dict[str, Any]
    chosen: dict[str, str]

    @property
    def class_names(self) -> dict[int, str]:
        """Class index to name, from the manifest."""
        return {int(k): v for k, v in self.manifest.get("class_names", {}).items()}

    def track_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~motops.runtime.runner.track_source` this engine fixes."""
        return {
            "detector": self.detector,
            "reid": self.reid,
            "tracker": self.tracker,
            "tracker_params": dict(self.tracker_params),
            "detect_every": self.detect_every,
            "flow": self.flow,
        }

    def track(self, source: str | Path | int, *, out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
        """Run :func:`~motops.runtime.runner.track_source` with this engine; ``kwargs`` go to it."""
        from motops.runtime.runner import track_source

        return track_source(source, out_dir=out_dir, **self.track_kwargs(), **kwargs)


def ort_uses_gpu(device: str) -> bool:
    if device == "cpu":
        return False
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def pick_onnx(root: Path, roles: Mapping[str, str], base: str, int8: bool | str, on_gpu: bool) -> tuple[Path, str]:
    """The ONNX of ``base`` (``detector``/``reid``) to run and why; see the module docstring."""
    has_int8 = f"{base}_int8" in roles
    if int8 is True and has_int8:
        return root / roles[f"{base}_int8"], "INT8 QDQ (int8=True)"
    if int8 == "auto" and has_int8 and not on_gpu:
        return root / roles[f"{base}_int8"], "INT8 QDQ: preferred on the CPU"
    if int8 is False:
        why = "FP32 (int8=False)"
    else:
        why = "FP32: on a GPU" if on_gpu and int8 == "auto" else "FP32: no INT8 model of it in the bundle"
    return root / roles[base], why


def load_bundle(
    path: str | Path,
    *,
    backend: str = "auto",
    verify: bool = True,
    device: str = "auto",
    int8: bool | str = "auto",
    intra_op_num_threads: int = 0,
    max_map50_drop: float = 0.01,
) -> Engine:
    """Verify a bundle and build its detector, ReID and tracker settings (what ``motops track --engine`` runs).

    Args:
        path: The bundle folder.
        backend: Detector backend: ``auto`` (a TensorRT plan for this GPU and TensorRT when
            there is one, else the ONNX on ONNX Runtime or OpenVINO, whichever is faster here:
            :mod:`motops.runtime.select`), ``tensorrt`` (a plan or an error, never a silent
            fallback), ``onnxruntime`` or ``openvino`` (the ONNX, plans ignored).
        verify: Check sizes and sha256 first (:func:`verify_bundle`). Turning it off saves a
            hash of every file at start-up and runs whatever is on disk.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for both models.
        int8: Which ONNX of each model runs: ``auto`` (the detector's INT8 QDQ ONNX where the CPU
            has VNNI/AMX and its recorded mAP50 cost is within ``max_map50_drop``, see
            :mod:`motops.runtime.hardware`; the ReID's on any CPU; FP32 on a GPU), ``True`` (every
            INT8 model the bundle has, also on a GPU; an error when it has none, or when one it
            lists is missing or broken) or ``False`` (FP32 only). Plans are not affected.
        intra_op_num_threads: ONNX Runtime (and OpenVINO) threads per operator (``0``: automatic).
        max_map50_drop: Largest recorded mAP50 cost (fraction) of an INT8 or bf16 detector that
            ``auto`` runs (``track.int8_max_map50_drop``).

    Returns:
        An :class:`Engine`.

    Raises:
        BundleError: The bundle is not intact (names every offending file).
        BackendUnavailable: ``backend="tensorrt"`` without CUDA/TensorRT or without a matching
            plan (the reason says which), or ``int8=True`` without an INT8 model.
        ValueError: An unknown backend or ``int8`` value.
    """
    from motops.runtime import tensorrt as trt_plans

    if backend not in ("auto", "onnxruntime", "tensorrt", "openvino"):
        hint = " (a bundle holds no torch weights)" if backend == "torch" else did_you_mean(str(backend), ["auto"])
        raise ValueError(f"backend={backend!r}{hint}; expected one of ['auto', 'onnxruntime', 'tensorrt', 'openvino']")
    if int8 not in (True, False, "auto"):
        raise ValueError(f"int8={int8!r}; expected 'auto', True or False")
    root = Path(path)
    skipped: dict[str, str] = {}
    if verify:
        report = verify_bundle(root)
        skipped = select.optional_problems(report, int8, report.manifest)  # INT8 models FP32 can stand in for
        if not skipped:
            report.raise_if_bad()
        manifest = report.manifest
    else:
        manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    files = manifest.get("files") if isinstance(manifest, dict) else None
    roles = {e["role"]: n for n, e in files.items() if isinstance(e, dict) and "role" in e} if files else {}
    if "detector" not in roles:
        raise BundleError(root, [BundleProblem(MANIFEST_FILE, "no file has role 'detector'")])
    if int8 is True and not any(role.endswith("_int8") and role not in skipped for role in roles):
        raise BackendUnavailable(f"{root}: int8=True, but the bundle has no INT8 model ({', '.join(sorted(roles))})")
    cfg = normalize_tracker_config(read_tracker_yaml(root / TRACKER_FILE), where=str(root / TRACKER_FILE))
    chosen: dict[str, str] = {}
    det_kwargs: dict[str, Any] = {"conf": cfg["conf"], "iou": cfg["iou"], "classes": cfg["classes"], "device": device}
    shape = manifest.get("input_shapes", {}).get("detector")
    if isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
        det_kwargs["imgsz"] = (shape[2], shape[3])

    detector = None
    if backend in ("auto", "tensorrt"):
        ok, reason = trt_plans.tensorrt_status()
        if ok and device == "cpu":
            ok, reason = False, "TensorRT: device='cpu' was asked for"
        plan = None
        if ok:
            for precision in trt_plans.PRECISIONS:  # fp16 first: the closest to the FP32 model that was gated
                plan = trt_plans.find_plan(root, "detector", precision)
                if plan is not None:
                    break
            if plan is None:
                cc, version = trt_plans.current_target()
                reason = (
                    f"TensorRT: no detector plan for sm{cc[0]}{cc[1]} and TensorRT {version} in {root / PLANS_DIR}"
                )
        if plan is not None:  # verified above when verify=True: an unlisted plan fails verification
            detector = load_detector(plan, backend="tensorrt", **det_kwargs)
            chosen["detector"] = f"{plan.relative_to(root).as_posix()} (tensorrt): {reason}"
        elif backend == "tensorrt":
            raise BackendUnavailable(f"{root}: backend='tensorrt' requested, but {reason}")
        else:
            logger.info("%s: running the detector's ONNX; %s", root, reason)
            chosen["trt_skipped"] = reason
    on_gpu = ort_uses_gpu(device)
    runtime = backend if backend in select.RUNTIMES else "auto"
    if detector is None:
        detector, chosen["variant"] = select.load_device_detector(
            root, roles, manifest, runtime=runtime, int8=int8, device=device, det_kwargs=det_kwargs,
            threads=intra_op_num_threads, max_map50_drop=max_map50_drop, on_gpu=on_gpu, skipped=skipped,
        )
        chosen["detector"] = f"{detector.path.name} ({detector.backend}): {chosen['variant']}"
    else:
        chosen["variant"] = f"tensorrt: {chosen['detector']}"
        detector.variant = chosen["variant"]  # type: ignore[attr-defined]

    reid = None
    wants_reid = cfg["tracker"] == "botsort" and cfg["with_reid"]
    if wants_reid and "reid" in roles:
        reid, chosen["reid"] = select.load_device_reid(
            root, roles, runtime=runtime if runtime == "openvino" else "onnxruntime", int8=int8, device=device,
            threads=intra_op_num_threads, on_gpu=on_gpu, skipped=skipped,
        )
    else:
        chosen["reid"] = "none: " + ("no reid model in the bundle" if wants_reid else "the tracker uses no appearance")
    logger.info("engine %s: %s", root, "; ".join(f"{k}: {v}" for k, v in chosen.items()))
    return Engine(
        path=root,
        detector=detector,
        reid=reid,
        tracker=cfg["tracker"],
        tracker_params={k: cfg[k] for k in TRACKER_PARAM_NAMES},
        detect_every=cfg["detect_every"],
        flow=cfg["flow"],
        imgsz=tuple(detector.imgsz),  # type: ignore[arg-type]
        manifest=manifest,
        config=cfg,
        chosen=chosen,
    )
