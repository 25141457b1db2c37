"""``motops track SOURCE``: decode, detect, embed, associate, write; timed per component.

One frame goes through::

    decode ──► detect (detection frames only) ──► tracker.update ──► write
                                                  └─ reid (inside, BoT-SORT's appearance hook)

On the frames between detection frames (``detect_every > 1``) :class:`SkippingTracker`
propagates the tracks with optical flow instead; that time counts as ``associate``.

Outputs in ``out_dir``:

* ``tracks.txt``: MOTChallenge results, ``frame,id,left,top,width,height,conf,-1,-1,-1``,
  frames 1-based, boxes in pixels (``left, top = x1, y1``, as everywhere in motops), every
  track the tracker reports on a frame, propagated ones included;
* ``annotated.mp4`` (``write_video``): boxes, ids and trails;
* ``summary.json``: see :func:`track_source`.

Timing: every component is measured with ``time.perf_counter`` around its own call, per
frame. Frames are decoded ahead in a background thread (:func:`~motops.runtime.video.prefetch`),
so ``decode`` is the time the loop waits for the next frame, not the decoder's own time. That
thread also computes what depends on the frames only (:meth:`SkippingTracker.precompute`):
BoT-SORT's camera-motion warp on detection frames and, with ``detect_every > 1``, the optical
flow of the frames in between; ``associate`` excludes both.
``reid`` is measured by wrapping the ReID callable handed to the tracker and subtracted from
the tracker's time, so ``associate`` on detection frames is association alone.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from motops.errors import ConfigError
from motops.runtime.skipping import SkippingTracker
from motops.runtime.trackers import TRACKER_PARAM_NAMES, TrackerParams, make_tracker
from motops.runtime.types import TRACK_CONF, TRACK_ID
from motops.runtime.video import Trails, VideoWriter, draw_tracks, open_source, prefetch

COMPONENTS = ("decode", "detect", "reid", "associate", "write")
TRACKS_FILE = "tracks.txt"
VIDEO_FILE = "annotated.mp4"
SUMMARY_FILE = "summary.json"
#: The run's settings besides the tracker's association settings (``params.yaml`` ``track:`` keys).
RUN_SETTINGS: Final = ("tracker", "detect_every", "flow")
#: Every setting a run resolves (:func:`resolve_settings`) and ``summary.json`` records.
SETTINGS: Final = (*RUN_SETTINGS, *TRACKER_PARAM_NAMES)
#: BoT-SORT's own settings: ByteTrack has neither appearance nor camera-motion compensation.
_BOTSORT_ONLY: Final = ("with_reid", "proximity_thresh", "appearance_thresh", "gmc_method", "embed")
#: Settings BoT-SORT reads only when it computes appearance embeddings.
_APPEARANCE_ONLY: Final = ("proximity_thresh", "appearance_thresh", "embed")

if TYPE_CHECKING:
    from motops.runtime.bundle import Engine


def tracker_params_from(track: Any) -> dict[str, Any]:
    """The association settings of a ``params.track`` section (or a mapping), for ``tracker_params``.

    ``params.yaml``'s ``track:`` also holds ``tracker``, ``detect_every``, ``flow`` and ``backend``,
    which are arguments of :func:`track_source` / :func:`~motops.runtime.backends.load_detector`,
    not of the tracker; this picks the tracker's own keys.
    """
    get = track.get if isinstance(track, Mapping) else lambda k, d=None: getattr(track, k, d)
    return {k: get(k) for k in TRACKER_PARAM_NAMES if get(k) is not None}


def _shown(value: Any) -> str:
    """A setting's value as the user types it after ``-S KEY=`` (``true``, not ``True``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def resolve_settings(
    base: Mapping[str, Any],
    user: Mapping[str, Any],
    *,
    has_reid: bool,
    no_reid: str,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The settings a run uses: the user's explicit ones over ``base``; one that could not take effect is refused.

    ``base`` is what the run falls back on (an engine bundle's ``tracker.yaml``, or
    ``params.yaml``'s ``track:``), ``user`` what the user asked for by name (``-S track.KEY``
    or a command-line option). An explicit choice always beats ``base``; a setting the run
    would ignore (BoT-SORT's on ByteTrack, the appearance thresholds without appearance,
    ``flow`` when every frame is detected) or cannot honour (``with_reid`` without a ReID
    model) is refused instead of being dropped silently.

    Args:
        base: Every key of :data:`SETTINGS` (extra keys, e.g. the detector's ``conf``, are kept).
        user: The explicitly given settings, keys of :data:`SETTINGS`.
        has_reid: Whether this run has a ReID model to compute appearance with.
        no_reid: Why there is none and what to do, said when ``with_reid: true`` is asked for.
        labels: How the user gave each key of ``user``, for messages (``--tracker bytetrack``);
            default ``track.KEY=VALUE``.

    Returns:
        ``base`` with ``user`` applied (a new dict).

    Raises:
        ConfigError: One line naming the key (as the user spelt it), its value and why it
            cannot take effect; or association settings that contradict each other.
    """
    unknown = [k for k in user if k not in SETTINGS]
    if unknown:
        raise ConfigError(f"track.{unknown[0]}: not a setting of a tracking run; expected one of {', '.join(SETTINGS)}")
    missing = [k for k in SETTINGS if k not in base]
    if missing:
        raise ValueError(f"resolve_settings: base lacks {', '.join(missing)}")
    cfg = {**base, **user}
    appearance = cfg["tracker"] == "botsort" and bool(cfg["with_reid"]) and has_reid

    def given(key: str) -> str:
        return (labels or {}).get(key) or f"track.{key}={_shown(user[key])}"

    def refuse(key: str, why: str) -> ConfigError:
        return ConfigError(f"{given(key)}: {why}")

    for key in user:
        if key in _BOTSORT_ONLY and cfg["tracker"] == "bytetrack":
            raise refuse(key, "has no effect: tracker bytetrack uses no appearance and no camera-motion "
                              "compensation (BoT-SORT's settings); choose tracker botsort for it")
    if user.get("with_reid") is True and not has_reid:
        raise refuse("with_reid", no_reid)
    for key in _APPEARANCE_ONLY:
        if key in user and not appearance:
            why = "with_reid is false" if not cfg["with_reid"] else "there is no ReID model"
            raise refuse(key, f"has no effect: this run computes no appearance ({why})")
    if "flow" in user and cfg["detect_every"] == 1:
        raise refuse("flow", "has no effect: detect_every is 1, so no frame is propagated by optical flow")
    try:
        TrackerParams(**{k: cfg[k] for k in TRACKER_PARAM_NAMES})
    except ValueError as exc:
        raise ConfigError(f"{exc} (given: {', '.join(given(k) for k in user)})") from None
    return cfg


def model_roles(engine: Engine) -> dict[str, str]:
    """``{role: file name}`` of the models a bundle's manifest lists (``detector``, ``reid``, ...)."""
    return {e["role"]: name for name, e in engine.manifest.get("files", {}).items() if isinstance(e, dict)}


def engine_with_settings(engine: Engine, user: Mapping[str, Any], *, labels: Mapping[str, str] | None = None) -> Engine:
    """``engine`` with the user's explicit settings over its ``tracker.yaml`` (see :func:`resolve_settings`).

    Turning appearance on (``with_reid: true``, or ``tracker: botsort`` over a bundle whose
    ``tracker.yaml`` has ``with_reid: true``) loads the bundle's ReID model as
    :func:`~motops.runtime.bundle.load_bundle` would have (its INT8 ONNX on the CPU); turning it
    off drops the model. ``engine.config`` and ``engine.chosen`` say what runs.

    Raises:
        ConfigError: A setting that cannot take effect with this bundle (one line naming it).
    """
    if not user:
        return engine
    from motops.runtime import bundle
    from motops.runtime.backends import load_reid

    roles = model_roles(engine)
    has_reid = "reid" in roles
    cfg = resolve_settings(
        engine.config, user, has_reid=has_reid, labels=labels,
        no_reid=f"the bundle {engine.path} has no ReID model, and a bundle's models are fixed when it is exported; "
                f"re-run export with a ReID model",
    )
    chosen = dict(engine.chosen)
    reid = engine.reid
    if cfg["tracker"] == "botsort" and cfg["with_reid"] and has_reid:
        if reid is None:
            # the bundle's tracker.yaml left it unloaded; the same choice of file as load_bundle's
            path, why = bundle.pick_onnx(engine.path, roles, "reid", "auto", bundle.ort_uses_gpu("auto"))
            reid = load_reid(path, backend="onnxruntime")
            chosen["reid"] = f"{path.name} (onnxruntime): {why}"
    elif reid is not None:
        reid = None
        chosen["reid"] = "none: the tracker uses no appearance"
    chosen["user_settings"] = ", ".join(f"{k}={_shown(v)}" for k, v in user.items())
    return dataclasses.replace(
        engine,
        reid=reid,
        tracker=cfg["tracker"],
        tracker_params={k: cfg[k] for k in TRACKER_PARAM_NAMES},
        detect_every=cfg["detect_every"],
        flow=cfg["flow"],
        config=cfg,
        chosen=chosen,
    )


def _timed(fn: Callable[..., np.ndarray], sink: list[float]) -> Callable[..., np.ndarray]:
    """``fn`` appending the duration of each call (seconds) to ``sink``."""

    def wrapper(*args: Any) -> np.ndarray:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            sink.append(time.perf_counter() - start)

    return wrapper


def _stats_ms(samples: list[float]) -> dict[str, float | int]:
    """p50/p95/mean in milliseconds and the count of the samples (zeros when there are none)."""
    if not samples:
        return {"p50": 0.0, "p95": 0.0, "mean": 0.0, "count": 0, "total_s": 0.0}
    arr = np.asarray(samples, dtype=np.float64) * 1000.0
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "mean": round(float(arr.mean()), 3),
        "count": len(samples),
        "total_s": round(float(arr.sum()) / 1000.0, 4),
    }


def _backend_name(model: Any) -> str | None:
    if model is None:
        return None
    return str(getattr(model, "backend", None) or type(model).__name__)


def _mot_lines(frame_index: int, tracks: np.ndarray) -> str:
    rows = []
    for t in tracks:
        x1, y1, x2, y2 = (float(v) for v in t[:4])
        rows.append(
            f"{frame_index},{int(t[TRACK_ID])},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
            f"{float(t[TRACK_CONF]):.4f},-1,-1,-1\n"
        )
    return "".join(rows)


def track_source(
    source: str | Path | int,
    *,
    detector: Callable[[np.ndarray], np.ndarray],
    reid: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    tracker: str = "botsort",
    tracker_params: Mapping[str, Any] | None = None,
    detect_every: int = 1,
    flow: str = "dis",
    out_dir: str | Path,
    write_video: bool = True,
    max_frames: int | None = None,
    progress: bool = True,
    user_settings: Collection[str] = (),
    settings_base: str = "arguments",
) -> dict[str, Any]:
    """Track every object of a video, folder of frames or stream and write the results.

    Args:
        source: Video file, folder of frames, stream URL or webcam index (see
            :func:`motops.runtime.video.open_source`).
        detector: ``frame_bgr -> (N, 6)`` detections (a :class:`~motops.runtime.backends.Detector`
            or any callable); called on detection frames only.
        reid: ``(frame_bgr, boxes (N, 4)) -> (N, D)`` L2-normalized embeddings for BoT-SORT's
            appearance cue (a :class:`~motops.runtime.backends.ReID`), or ``None`` (motion only).
        tracker: ``botsort`` or ``bytetrack``.
        tracker_params: Association settings (:data:`~motops.runtime.TRACKER_PARAM_NAMES`;
            see :func:`tracker_params_from`); unknown keys are refused.
        detect_every: Run the detector every N-th frame and propagate by optical flow in
            between. Raising it saves detector time and loses accuracy on fast objects.
        flow: ``dis`` or ``farneback`` (the propagation's optical flow).
        out_dir: Folder for ``tracks.txt``, ``annotated.mp4`` and ``summary.json`` (created).
        write_video: Write ``annotated.mp4``. Turning it off saves the drawing and encoding time.
        max_frames: Stop after this many frames (``None``: the whole source; needed to bound
            a stream, which also stops on Ctrl-C).
        progress: Show a tqdm progress bar.
        user_settings: Which of :data:`SETTINGS` the user gave explicitly; recorded.
        settings_base: Where the others came from (``bundle DIR``, ``params.yaml``); recorded.

    Returns:
        The summary, also written to ``summary.json``: ``source``, ``frames``,
        ``wall_seconds``, ``fps`` (frames / wall seconds, everything included), ``source_fps``,
        ``size`` ``[width, height]``, ``latency_ms`` (per component of :data:`COMPONENTS` and
        ``frame`` for the whole per-frame loop: ``p50``, ``p95``, ``mean`` over the frames where the
        component ran, ``count`` and ``total_s``), ``tracks`` (distinct ids), ``detect_every``,
        ``detector_calls``, ``reid_calls``, ``tracker``, ``flow``, ``appearance`` (whether
        embeddings were used), ``settings`` (every one of :data:`SETTINGS` the run used),
        ``settings_from`` (per setting: ``user`` or ``settings_base``), ``backends``
        (``detector``, ``reid``), ``imgsz`` (the detector's input ``[H, W]``, when it has one),
        ``interrupted`` and ``outputs`` (file names in ``out_dir``).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        motops.runtime.video.SourceError: ``source`` cannot be decoded.
        ValueError / TypeError: A bad tracker name, parameter, ``detect_every`` or ``flow``.
    """
    from tqdm import tqdm

    if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
        raise ValueError(f"detect_every={detect_every!r}; expected an integer >= 1")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames={max_frames!r}; expected a positive integer or None")
    out_dir = Path(out_dir)
    times: dict[str, list[float]] = {c: [] for c in (*COMPONENTS, "frame")}
    reid_fn = _timed(reid, times["reid"]) if reid is not None else None
    detect_fn = _timed(detector, times["detect"])

    unknown = [k for k in user_settings if k not in SETTINGS]
    if unknown:
        raise ValueError(f"user_settings: {unknown[0]!r} is not one of {', '.join(SETTINGS)}")
    src = open_source(source)
    try:
        # The tracker sees one frame in ``detect_every``; its lost-track buffer counts its own
        # updates, so its frame rate is the detection rate (the buffer stays the same in seconds).
        trk = make_tracker(tracker, frame_rate=src.fps / detect_every, reid=reid_fn, **dict(tracker_params or {}))
        runner = SkippingTracker(trk, detect_every=detect_every, flow=flow)
        params = getattr(trk, "params", None)
        assoc = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(tracker_params or {})
        settings = {"tracker": tracker, "detect_every": detect_every, "flow": flow, **assoc}
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = VideoWriter(out_dir / VIDEO_FILE, src.fps, src.size) if write_video else None
        trails = Trails()
        ids: set[int] = set()
        frames = 0
        interrupted = False
        total = min(src.length, max_frames) if src.length and max_frames else (src.length or max_frames)
        # Decoding, the camera motion and, when frames are skipped, their optical flow run ahead
        # in a background thread (a generator: the thread starts at the first frame).
        frames_iter = prefetch(runner.precompute(src))
        wall_start = time.perf_counter()
        try:
            with open(out_dir / TRACKS_FILE, "w", encoding="ascii", newline="\n") as results, tqdm(
                total=total, disable=not progress, unit="frame", desc="track", dynamic_ncols=True
            ) as bar:
                while max_frames is None or frames < max_frames:
                    t0 = time.perf_counter()
                    item = next(frames_iter, None)
                    t1 = time.perf_counter()
                    if item is None:
                        break
                    index, frame, ahead = item
                    times["decode"].append(t1 - t0)
                    n_detect, n_reid = len(times["detect"]), len(times["reid"])
                    tracks = runner.step(frame, detect_fn, ahead)
                    t2 = time.perf_counter()
                    inner = sum(times["detect"][n_detect:]) + sum(times["reid"][n_reid:])
                    times["associate"].append(max(t2 - t1 - inner, 0.0))
                    results.write(_mot_lines(index, tracks))
                    ids.update(int(i) for i in tracks[:, TRACK_ID])
                    if writer is not None:
                        trails.update(tracks)
                        writer.write(draw_tracks(frame, tracks, trails))
                    t3 = time.perf_counter()
                    times["write"].append(t3 - t2)
                    times["frame"].append(t3 - t0)
                    frames += 1
                    bar.update(1)
        except KeyboardInterrupt:  # a stream has no end: Ctrl-C finishes the outputs cleanly
            interrupted = True
        finally:
            frames_iter.close()  # stops the decoding thread before the source is released
            if writer is not None:
                writer.close()
        wall = time.perf_counter() - wall_start
    finally:
        src.close()

    summary: dict[str, Any] = {
        "source": src.name,
        "frames": frames,
        "wall_seconds": round(wall, 4),
        "fps": round(frames / wall, 3) if wall > 0 else 0.0,
        "source_fps": src.fps,
        "size": list(src.size),
        "latency_ms": {name: _stats_ms(samples) for name, samples in times.items()},
        "tracks": len(ids),
        "detect_every": detect_every,
        "detector_calls": len(times["detect"]),
        "reid_calls": len(times["reid"]),
        "tracker": tracker,
        "flow": flow,
        "appearance": bool(getattr(trk, "uses_appearance", False)),
        "settings": settings,
        "settings_from": {k: "user" if k in user_settings else settings_base for k in settings},
        "backends": {"detector": _backend_name(detector), "reid": _backend_name(reid)},
        "variant": getattr(detector, "variant", None),  # which of a bundle's detectors runs, and why (runtime.select)
        "imgsz": [int(v) for v in detector.imgsz] if hasattr(detector, "imgsz") else None,
        "interrupted": interrupted,
        "outputs": {"tracks": TRACKS_FILE, "video": VIDEO_FILE if write_video else None, "summary": SUMMARY_FILE},
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
