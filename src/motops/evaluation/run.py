"""The ``evaluate`` stage's work: score the exported engine on the val sequences.

1. Load the bundle of ``export.engine_dir`` (the backend ``track.backend`` asks for: ONNX
   Runtime on this CPU, a TensorRT plan where there is one).
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

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motops.config import Params
from motops.data.mot import SeqInfo, read_mot_txt
from motops.errors import DataFormatError

#: Keys of ``metrics/eval.json`` (combined and per sequence).
EVAL_KEYS = ("hota", "deta", "assa", "mota", "idf1", "idsw", "frag", "fps")


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


def evaluate_engine(params: Params, root: Path = Path("."), *, progress: bool = True) -> dict[str, Any]:
    """Sweep, track, score and time the exported engine on the val sequences.

    Writes ``evaluate.out_dir`` (``sweep.png``, ``sweep.csv``, ``fps.png``, ``tracker.yaml``,
    ``tracks/SEQ.txt``, ``sequences.csv``, plots data for DVC), the release bundle
    ``evaluate.release_dir`` and returns the content of ``metrics/eval.json``.
    """
    from tqdm import tqdm

    from motops.evaluation.plots import plot_fps, plot_sweep
    from motops.evaluation.sweep import sweep_thresholds
    from motops.evaluation.trackeval_adapter import diagnose, score
    from motops.export.bundle import load_bundle, rewrite_bundle
    from motops.tracking.runner import track_source

    cfg = params.evaluate
    out = root / cfg.out_dir
    (out / "tracks").mkdir(parents=True, exist_ok=True)
    engine_dir = root / params.export.engine_dir
    backend = params.track.backend if params.track.backend != "torch" else "auto"
    engine = load_bundle(engine_dir, backend=backend)
    sequences, annotations = _val_sequences(params, root)
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

    # 1. detections at the bundle's low threshold, once
    detections: dict[str, dict[int, np.ndarray]] = {}
    total = sum(length(s) for s in names)
    with tqdm(total=total, desc="detect val frames", unit="frame", disable=not progress) as bar:
        for seq in names:
            detections[seq] = {}
            for f in range(1, length(seq) + 1):
                detections[seq][f] = np.asarray(engine.detector(frames(seq, f)), dtype=np.float64)
                bar.update(1)

    # 2. the confidence sweep
    tracker_params = dict(engine.tracker_params)
    sweep = sweep_thresholds(
        detections, gt, seqinfo, thresholds=cfg.sweep_thresholds, tracker=engine.tracker,
        tracker_params=tracker_params, metric=cfg.sweep_metric, frames=frames, reid=engine.reid, progress=progress,
    )
    chosen = sweep.tracker_params
    sweep.table.write_csv(out / "sweep.csv")
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
    detector_backend = engine.chosen.get("detector", "")
    backend_name = "tensorrt" if "(tensorrt)" in detector_backend else "onnxruntime"
    metrics: dict[str, Any] = {
        **pack(result.combined, frames_total / wall_total if wall_total else 0.0),
        "backend": backend_name,
        "threshold": sweep.best_threshold,
        "sweep_metric": cfg.sweep_metric,
        "frames": frames_total,
        "latency_ms": _latency(summaries),
        "engine": {k: v for k, v in engine.chosen.items()},
        "sequences": per_seq,
    }
    pl.DataFrame([{"sequence": s, **{k: v for k, v in m.items() if k != "diagnosis"}} for s, m in per_seq.items()]
                 ).write_csv(out / "sequences.csv")
    if cfg.plots:
        plot_fps(summaries, out / "fps.png")

    # 5. the release bundle: the engine as scored
    tracker_cfg = {**engine.config, **chosen}
    import yaml

    (out / "tracker.yaml").write_text(yaml.safe_dump(tracker_cfg, sort_keys=False), encoding="utf-8")
    gated = {k: metrics[k] for k in (*EVAL_KEYS, "backend", "threshold")}
    rewrite_bundle(engine_dir, root / cfg.release_dir, tracker=tracker_cfg,
                   metrics={**engine.manifest.get("metrics", {}), "tracking": gated})
    return metrics


def _latency(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Mean per-frame milliseconds of each component over all val sequences (weighted by frames)."""
    out: dict[str, float] = {}
    frames = sum(s["frames"] for s in summaries.values()) or 1
    for comp in ("decode", "detect", "reid", "associate", "frame"):
        total = sum(s["latency_ms"].get(comp, {}).get("total_s", 0.0) for s in summaries.values())
        out[comp] = round(1000.0 * total / frames, 3)
    return out
