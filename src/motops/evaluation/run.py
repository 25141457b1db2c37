"""The ``evaluate`` stage's work: score the exported engine on the val sequences.

1. Load the bundle of ``export.engine_dir`` (the backend ``track.backend`` asks for; ``auto``:
   ONNX Runtime or OpenVINO on a CPU, whichever is faster there, a TensorRT plan where there is
   one). ``metrics/eval.json``'s ``backend`` is the runtime that ran (:func:`detector_runtime`).
2. Detect once per val frame at the bundle's low threshold and cache the boxes; sweep the
   confidence threshold (``evaluate.sweep_thresholds``) by tracking the cached boxes (ReID and
   camera-motion compensation included) and scoring each run with TrackEval; keep the best
   by ``evaluate.sweep_metric``.
3. Track every val sequence end to end with the chosen thresholds (decode, detect, ReID,
   associate; the video is not written), timed: that is the FPS benchmark.
4. Score those results with TrackEval (HOTA, DetA, AssA, MOTA, IDF1, IDSW, Frag per
   sequence and combined; MOT17 distractor preprocessing when the ground truth has it),
   diagnose each sequence, plot.
5. Write the release bundle (``evaluate.release_dir``): the exported bundle with the chosen
   ``tracker.yaml`` and the measured metrics in its manifest -- the engine that was scored is
   the engine that is gated and registered.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motops.config import Params
from motops.data.mot import SeqInfo, read_mot_txt
from motops.errors import ConfigError, DataFormatError

#: Keys of ``metrics/eval.json`` (combined and per sequence).
EVAL_KEYS = ("hota", "deta", "assa", "mota", "idf1", "idsw", "frag", "fps")
#: What the stage reads of the params: a ``-S`` override elsewhere has no effect on it.
READS = (
    "evaluate", "track", "export.engine_dir", "prepare.out_dir", "data.sequences_table", "data.annotations",
)
#: ``track:`` settings the confidence sweep chooses, and how to pin them instead.
SWEPT = {
    "track_high_thresh": "is chosen by the confidence sweep; to pin it, sweep one value: "
                         "-S evaluate.sweep_thresholds=[{value}]",
    "new_track_thresh": "is set by the confidence sweep (the chosen track_high_thresh + 0.1); "
                        "choose the threshold with -S evaluate.sweep_thresholds=[...]",
}


def _val_sequences(params: Params, root: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    split_file = root / params.prepare.out_dir / "split.json"
    if not split_file.is_file():
        raise DataFormatError(split_file, "not found; run the prepare stage first")
    val = json.loads(split_file.read_text())["val"]
    sequences = pl.read_parquet(root / params.data.sequences_table).filter(pl.col("sequence").is_in(val))
    annotations = pl.read_parquet(root / params.data.annotations).filter(pl.col("sequence").is_in(val))
    if sequences.height == 0:
        raise DataFormatError(split_file, f"val sequences {val} are not in {params.data.sequences_table}")
    return sequences, annotations


def _gt_table(annotations: pl.DataFrame, sequence: str) -> pl.DataFrame:
    rows = annotations.filter(pl.col("sequence") == sequence)
    return rows.select(
        "frame", "id", "left", "top", "width", "height",
        pl.col("conf").cast(pl.Float64), pl.col("class").cast(pl.Int64), pl.col("visibility").cast(pl.Float64),
    )


class _Frames:
    """Frame images of the val sequences by (sequence, 1-based frame), with a small cache."""

    def __init__(self, sequences: pl.DataFrame, root: Path) -> None:
        self.rows = {r["sequence"]: r for r in sequences.iter_rows(named=True)}
        self.root = root
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def path(self, seq: str, frame: int) -> Path:
        row = self.rows[seq]
        base = Path(row["path"])
        return (base if base.is_absolute() else self.root / base) / row["frame_files"][frame - 1]

    def __call__(self, seq: str, frame: int) -> np.ndarray:
        import cv2

        key = (seq, frame)
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            image = cv2.imread(str(self.path(seq, frame)), cv2.IMREAD_COLOR)
            if image is None:
                raise DataFormatError(self.path(seq, frame), "unreadable frame")
            self._cache[key] = image
        return self._cache[key]

    def folder(self, seq: str) -> Path:
        return self.path(seq, 1).parent


def val_sequence_folder(params: Params, root: Path = Path(".")) -> Path:
    """The frame folder of the first val sequence (by name): where the gate times engines side by side."""
    sequences, _ = _val_sequences(params, root)
    return _Frames(sequences, root).folder(sorted(sequences["sequence"].to_list())[0])


def _engine_backend(params: Params, user_track: Mapping[str, Any]) -> str:
    """The detector backend the bundle is loaded with: ``track.backend``, ``torch`` refused only when asked for."""
    if "backend" in user_track and user_track["backend"] == "torch":
        raise ConfigError("track.backend=torch: an engine bundle holds no torch weights; "
                          "use auto, onnxruntime or tensorrt")
    # params.yaml's default may name torch for `motops track --detector x.pt`; a bundle then runs on its default
    return params.track.backend if params.track.backend != "torch" else "auto"


def detector_runtime(engine: Any) -> str:
    """The runtime that ran ``engine``'s detector: ``onnxruntime``, ``openvino`` or ``tensorrt`` (``torch``).

    What ``metrics/eval.json`` records as ``backend``, so ``gates.fps_min[backend]`` and the gate's
    same-run timing apply to the runtime that was timed. It is read from the loaded detector itself
    (``Detector.backend``), not from the backend that was asked for: ``auto`` runs ONNX Runtime,
    OpenVINO or a TensorRT plan depending on the device (:mod:`motops.runtime.select`).

    Raises:
        ValueError: The detector does not say which runtime it is.
    """
    name = getattr(engine.detector, "backend", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{engine.detector!r} does not say which runtime runs it (no 'backend' attribute)")
    return name


def evaluate_engine(
    params: Params,
    root: Path = Path("."),
    *,
    progress: bool = True,
    user_track: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Sweep, track, score and time the exported engine on the val sequences.

    Writes ``evaluate.out_dir`` (``sweep.png``, ``sweep.csv``, ``fps.png``, ``tracker.yaml``,
    ``tracks/SEQ.txt``, ``sequences.csv``, plots data for DVC), the release bundle
    ``evaluate.release_dir`` and returns the content of ``metrics/eval.json``.

    The bundle's ``tracker.yaml`` decides how it tracks; ``params.track`` (written into it by the
    export stage) does not override it, except for ``track.backend`` and what ``user_track`` names.

    Args:
        params: The params.
        root: The project folder the params' paths are relative to.
        progress: Show progress bars.
        user_track: ``track:`` settings the user gave explicitly (``motops evaluate -S track.KEY=...``),
            by key: they take effect over the bundle's ``tracker.yaml`` and are kept in the
            release bundle, which is what was scored. ``track_high_thresh`` and
            ``new_track_thresh`` are the sweep's to choose; a setting that cannot take effect
            (``with_reid: true`` on a bundle without a ReID model, ...) is refused.

    Raises:
        ConfigError: A ``user_track`` setting that cannot take effect, before anything is written.
    """
    from tqdm import tqdm

    from motops.evaluation.plots import plot_fps, plot_sweep
    from motops.evaluation.sweep import sweep_thresholds
    from motops.evaluation.trackeval_adapter import diagnose, score
    from motops.export.bundle import rewrite_bundle
    from motops.runtime.bundle import load_bundle
    from motops.runtime.runner import engine_with_settings, track_source

    user_track = dict(user_track or {})
    for key, why in SWEPT.items():
        if key in user_track:
            value = user_track[key]
            raise ConfigError(f"track.{key}={value}: {why.format(value=value)}")
    cfg = params.evaluate
    out = root / cfg.out_dir
    engine_dir = root / params.export.engine_dir
    engine = load_bundle(engine_dir, backend=_engine_backend(params, user_track),
                         max_map50_drop=params.track.int8_max_map50_drop)
    settings = {k: v for k, v in user_track.items() if k != "backend"}
    engine = engine_with_settings(engine, settings)
    sequences, annotations = _val_sequences(params, root)
    (out / "tracks").mkdir(parents=True, exist_ok=True)
    frames = _Frames(sequences, root)
    names = sorted(sequences["sequence"].to_list())
    info = {r["sequence"]: r for r in sequences.iter_rows(named=True)}
    limit = cfg.max_frames

    def length(seq: str) -> int:
        n = int(info[seq]["length"])
        return min(n, limit) if limit else n

    gt = {}
    for seq in names:
        table = _gt_table(annotations, seq)
        gt[seq] = table.filter(pl.col("frame") <= length(seq))
    seqinfo = {
        seq: SeqInfo(name=seq, im_dir="img1", fps=float(info[seq]["fps"]), length=length(seq),
                     width=int(info[seq]["width"]), height=int(info[seq]["height"]), im_ext=".jpg")
        for seq in names
    }

    # 1. detections at the bundle's low threshold, once per NMS IoU the sweep tries
    nms_ious = sorted({float(i) for i in cfg.sweep_nms_iou})
    detections: dict[float, dict[str, dict[int, np.ndarray]]] = {iou: {s: {} for s in names} for iou in nms_ious}
    total = sum(length(s) for s in names)
    with tqdm(total=total, desc="detect val frames", unit="frame", disable=not progress) as bar:
        for seq in names:
            for f in range(1, length(seq) + 1):
                for iou, dets in engine.detector.detect_each_iou(frames(seq, f), nms_ious).items():
                    detections[iou][seq][f] = np.asarray(dets, dtype=np.float64)
                bar.update(1)

    # 2. the sweep: confidence thresholds x NMS IoU x matching threshold x with and without
    # appearance (where the bundle can do both)
    arms = _appearance_arms(engine, params, settings, user_track)
    bundle_iou = float(engine.config["iou"])
    bundle_match = float(engine.tracker_params["match_thresh"])
    matches = [bundle_match] if "match_thresh" in user_track else sorted({*cfg.sweep_match_thresh, bundle_match})
    sweeps: dict[str, dict[tuple[float, float], Any]] = {arm: {} for arm in arms}
    for iou in nms_ious:
        for match in matches:
            for arm, candidate in arms.items():
                sweeps[arm][iou, match] = sweep_thresholds(
                    detections[iou], gt, seqinfo, thresholds=cfg.sweep_thresholds, tracker=candidate.tracker,
                    tracker_params={**candidate.tracker_params, "match_thresh": match}, metric=cfg.sweep_metric,
                    frames=frames, reid=candidate.reid, progress=progress, tolerance=cfg.sweep_tolerance,
                )

    def rank(arm: str, key: tuple[float, float]) -> tuple:
        # ties go to the bundle's settings, then to the looser NMS (crowds keep their overlapping people)
        iou, match = key
        return (sweeps[arm][key].table[cfg.sweep_metric].max(), iou == bundle_iou, match == bundle_match, iou)

    best = {arm: max(by_key, key=lambda k, a=arm: rank(a, k)) for arm, by_key in sweeps.items()}
    appearance = _choose_appearance({arm: sweeps[arm][best[arm]] for arm in arms}, cfg.sweep_metric,
                                    cfg.appearance_min_gain)  # fmt: skip
    arm = appearance["chosen_arm"]
    nms_iou, match_thresh = best[arm]
    engine, sweep = arms[arm], sweeps[arm][nms_iou, match_thresh]
    if nms_iou != bundle_iou:
        engine = dataclasses.replace(engine, detector=engine.detector.with_iou(nms_iou),
                                     config={**engine.config, "iou": nms_iou})
    chosen = sweep.tracker_params
    sweep.table.write_csv(out / "sweep.csv")
    pl.concat([
        result.table.with_columns(nms_iou=pl.lit(iou), match_thresh=pl.lit(match),
                                  appearance=pl.lit(a == "appearance"))
        for a, by_key in sweeps.items() for (iou, match), result in by_key.items()
    ]).write_csv(out / "sweep_all.csv")  # fmt: skip
    if cfg.plots:
        plot_sweep(sweep.table, out / "sweep.png", metric=cfg.sweep_metric, best_threshold=sweep.best_threshold)

    # 3. end-to-end tracking of every val sequence with the chosen settings, timed
    if cfg.fps_warmup_frames:
        for f in range(1, min(cfg.fps_warmup_frames, length(names[0])) + 1):
            engine.detector(frames(names[0], f))
    summaries, results = {}, {}
    for seq in names:
        run_dir = out / "runs" / seq
        summary = track_source(
            frames.folder(seq), detector=engine.detector, reid=engine.reid, tracker=engine.tracker,
            tracker_params=chosen, detect_every=engine.detect_every, flow=engine.flow, out_dir=run_dir,
            write_video=False, max_frames=length(seq), progress=progress,
            user_settings=list(settings), settings_base=f"bundle {params.export.engine_dir}",
        )
        summaries[seq] = summary
        tracks = run_dir / "tracks.txt"
        (out / "tracks" / f"{seq}.txt").write_bytes(tracks.read_bytes())
        results[seq] = read_mot_txt(tracks, sequence=seq, min_columns=6, allow_empty=True)

    # 4. TrackEval
    result = score(gt, results, seqinfo)
    frames_total = sum(s["frames"] for s in summaries.values())
    wall_total = sum(s["wall_seconds"] for s in summaries.values())

    def pack(m: Any, fps: float) -> dict[str, Any]:
        d = m.as_dict()
        return {**{k: d[k] for k in EVAL_KEYS if k in d}, "fps": round(fps, 3)}

    per_seq = {
        seq: {**pack(result.sequences[seq], summaries[seq]["fps"]), "diagnosis": diagnose(result.sequences[seq])}
        for seq in names
    }
    metrics: dict[str, Any] = {
        **pack(result.combined, frames_total / wall_total if wall_total else 0.0),
        "backend": detector_runtime(engine),
        "threshold": sweep.best_threshold,
        "nms_iou": nms_iou,
        "match_thresh": match_thresh,
        "sweep_metric": cfg.sweep_metric,
        "frames": frames_total,
        "latency_ms": _latency(summaries),
        "engine": {k: v for k, v in engine.chosen.items()},
        "appearance": appearance,
        "sequences": per_seq,
    }
    pl.DataFrame([{"sequence": s, **{k: v for k, v in m.items() if k != "diagnosis"}} for s, m in per_seq.items()]
                 ).write_csv(out / "sequences.csv")
    if cfg.plots:
        plot_fps(summaries, out / "fps.png")

    # 4b. the val tracking again with each detector variant the manifest records (accuracy only, untimed)
    from motops.evaluation.variants import score_variants, with_scores

    metrics["variants"] = score_variants(
        engine, tracker_params=chosen, folders={s: frames.folder(s) for s in names},
        lengths={s: length(s) for s in names}, gt=gt, seqinfo=seqinfo, out_dir=out / "variants", nms_iou=nms_iou,
    )

    # 5. the release bundle: the engine as scored
    tracker_cfg = {**engine.config, **chosen}
    import yaml

    (out / "tracker.yaml").write_text(yaml.safe_dump(tracker_cfg, sort_keys=False), encoding="utf-8")
    gated = {k: metrics[k] for k in (*EVAL_KEYS, "backend", "threshold", "nms_iou", "match_thresh")}
    rewrite_bundle(engine_dir, root / cfg.release_dir, tracker=tracker_cfg,
                   metrics=with_scores({**engine.manifest.get("metrics", {}), "tracking": gated}, metrics["variants"]))
    return metrics


def _appearance_arms(engine: Any, params: Params, settings: Mapping[str, Any],
                     user_track: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The engines the sweep compares: ``{"motion": ..., "appearance": ...}``, or the one engine as it is.

    Both arms exist only where the choice is open: BoT-SORT, a bundle with a ReID model,
    ``evaluate.choose_appearance`` on, and no explicit ``track.with_reid`` from the user.
    """
    from motops.runtime.runner import engine_with_settings, model_roles

    has_reid = "reid" in model_roles(engine)
    if not (params.evaluate.choose_appearance and has_reid and engine.tracker == "botsort"
            and "with_reid" not in user_track):  # fmt: skip
        return {"appearance" if engine.reid is not None else "motion": engine}
    arms = {}
    for arm, on in (("motion", False), ("appearance", True)):
        candidate = engine_with_settings(engine, {**settings, "with_reid": on})
        candidate.chosen["user_settings"] = ", ".join(f"{k}={v}" for k, v in settings.items())
        arms[arm] = candidate
    return arms


def _choose_appearance(sweeps: Mapping[str, Any], metric: str, min_gain: float) -> dict[str, Any]:
    """Appearance on only when its best sweep score beats motion alone by ``min_gain``: it costs frame time."""
    best = {arm: float(s.table[metric].max()) for arm, s in sweeps.items()}
    if set(best) != {"motion", "appearance"}:
        (arm,) = best
        return {"measured": False, "chosen_arm": arm, "with_reid": arm == "appearance",
                "reason": "not compared: fixed by the user or the bundle (no ReID model, or ByteTrack)"}
    gain = best["appearance"] - best["motion"]
    on = gain >= min_gain
    return {
        "measured": True, "metric": metric, "motion": round(best["motion"], 4),
        "appearance": round(best["appearance"], 4), "gain": round(gain, 4), "min_gain": min_gain,
        "chosen_arm": "appearance" if on else "motion", "with_reid": on,
        "reason": f"{metric} {best['appearance']:.3f} with appearance, {best['motion']:.3f} without: "
                  + ("the gain pays for the ReID time" if on else f"a gain under {min_gain:g} does not pay for it"),
    }


def _latency(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Mean per-frame milliseconds of each component over all val sequences (weighted by frames)."""
    out: dict[str, float] = {}
    frames = sum(s["frames"] for s in summaries.values()) or 1
    for comp in ("decode", "detect", "reid", "associate", "frame"):
        total = sum(s["latency_ms"].get(comp, {}).get("total_s", 0.0) for s in summaries.values())
        out[comp] = round(1000.0 * total / frames, 3)
    return out
