"""Our trackers against Ultralytics' on the same simulated detections, scored with TrackEval.

Real human motion: the MOT17-09 ground truth in ``../shared/data`` (no images, so motion
only), with detections simulated from it (misses growing with occlusion, jitter, false
positives, confidence noise) for several seeds. Footage we did not tune on: the default
synthetic sequences (5-30 fps, static/panning/jittering cameras, crowds), with detections
simulated the same way. Every tracker sees the very same detections.

Ours: ``make_tracker`` with the ``track:`` settings of ``params.yaml`` (ByteTrack, and
BoT-SORT without appearance), in both implementations: ``motops`` (numpy/OpenCV, what the
runtime runs) and ``ultralytics`` (the wrapper around Ultralytics' trackers it replaced).
Peers: Ultralytics' BYTETracker, BOTSORT (no ReID, no camera-motion compensation) and
OCSORT, each with its own shipped YAML defaults.

Prints the CPU, a table (IDF1, HOTA, MOTA, IDSW, ms per frame), the MOT17-09 scores with the
seeds pooled (one TrackEval run over the seeds as sequences), the ratios of our best to the
best peer and to BYTETracker's time, and writes JSON.

Usage:
    python bench/tracker_realmotion.py --seeds 0 1 2 --out bench/results/tracker_realmotion.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
from real_footage import cpu_info  # bench/ is on sys.path when this script runs

from motops.config import load_params
from motops.data.mot import SeqInfo, read_mot_sequence, read_seqinfo
from motops.data.synthetic import render_sequence, sequence_name
from motops.evaluation import score
from motops.evaluation.simulate import simulate_detections
from motops.runtime import TRACKER_PARAM_NAMES, make_tracker
from motops.tracking.ultralytics import DetectionView

ROOT = Path(__file__).resolve().parents[1]
MOT17_09 = ROOT.parent / "shared" / "data" / "mot17" / "MOT17-09"


def _peer(kind: str, fps: float):
    from ultralytics.trackers import BOTSORT, OCSORT, BYTETracker
    from ultralytics.utils import ROOT as UL_ROOT
    from ultralytics.utils import YAML, IterableSimpleNamespace

    cfg = YAML.load(UL_ROOT / "cfg" / "trackers" / f"{kind}.yaml")
    if kind == "botsort":
        cfg.update(with_reid=False, gmc_method="none")
    args = IterableSimpleNamespace(**cfg)
    cls = {"bytetrack": BYTETracker, "botsort": BOTSORT, "ocsort": OCSORT}[kind]
    try:
        return cls(args, frame_rate=int(fps))
    except TypeError:  # newer releases take no frame_rate
        return cls(args)


def _run(tracker, dets: dict[int, np.ndarray], length: int, peer: bool) -> tuple[pl.DataFrame, float]:
    rows, seconds = [], 0.0
    empty = np.zeros((0, 6), dtype=np.float32)
    for frame in range(1, length + 1):
        d = dets.get(frame, empty).astype(np.float32)
        start = time.perf_counter()
        out = tracker.update(DetectionView(d), None) if peer else tracker.update(d, None)
        seconds += time.perf_counter() - start
        out = np.asarray(out, dtype=np.float64).reshape(-1, 8) if len(out) else np.zeros((0, 8))
        for t in out:
            rows.append((frame, int(t[4]), t[0], t[1], t[2] - t[0], t[3] - t[1], t[5]))
    table = pl.DataFrame(rows, schema=["frame", "id", "left", "top", "width", "height", "conf"], orient="row")
    return table, seconds / max(length, 1)


def _datasets(seeds: list[int], synth_frames: int) -> list[tuple[str, dict, dict, dict]]:
    """(name, gt per seq, seqinfo per seq, detections per seq) for each data set and seed."""
    out = []
    if MOT17_09.is_dir():
        _, gt = read_mot_sequence(MOT17_09)
        info = read_seqinfo(MOT17_09 / "seqinfo.ini")
        for seed in seeds:
            dets = simulate_detections(gt, seed=seed, image_size=(info.width, info.height), num_frames=info.length)
            out.append((f"MOT17-09 seed {seed}", {"MOT17-09": gt}, {"MOT17-09": info}, {"MOT17-09": dets}))
    synth = load_params(ROOT / "params.yaml").data.synthetic.model_copy(update={"frames": synth_frames})
    gts, infos, dets = {}, {}, {}
    for i in range(synth.sequences):
        name = sequence_name(i)
        rows = [r for _, frame_rows in render_sequence(i, synth) for r in frame_rows]
        gt = pl.DataFrame(np.asarray(rows), schema=["frame", "id", "left", "top", "width", "height", "conf",
                                                    "class", "visibility"], orient="row")
        gt = gt.with_columns(pl.col("frame", "id", "class").cast(pl.Int64))
        fps = synth.fps[i % len(synth.fps)]
        infos[name] = SeqInfo(name=name, im_dir="img1", fps=fps, length=synth.frames, width=synth.width,
                              height=synth.height, im_ext=".jpg")
        gts[name] = gt
        dets[name] = simulate_detections(gt, seed=seeds[0], image_size=(synth.width, synth.height),
                                         num_frames=synth.frames)
    out.append(("synthetic (default set)", gts, infos, dets))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--synth-frames", type=int, default=150)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tracker_realmotion.json")
    args = parser.parse_args()

    track = load_params(ROOT / "params.yaml").track
    ours_params = {k: getattr(track, k) for k in TRACKER_PARAM_NAMES}
    motion = {**ours_params, "with_reid": False}
    contenders = {
        "ours bytetrack": lambda fps: (make_tracker("bytetrack", frame_rate=fps, **ours_params), False),
        "ours botsort (motion)": lambda fps: (make_tracker("botsort", frame_rate=fps, **motion), False),
        "ours-ultralytics bytetrack": lambda fps: (make_tracker("bytetrack", frame_rate=fps, impl="ultralytics",
                                                                **ours_params), False),
        "ours-ultralytics botsort (motion)": lambda fps: (make_tracker("botsort", frame_rate=fps, impl="ultralytics",
                                                                       **motion), False),
        "ultralytics BYTETracker": lambda fps: (_peer("bytetrack", fps), True),
        "ultralytics BOTSORT (no ReID/GMC)": lambda fps: (_peer("botsort", fps), True),
        "ultralytics OCSORT": lambda fps: (_peer("ocsort", fps), True),
    }
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; "
          f"{' '.join(k for k, v in cpu['flags'].items() if v and k in ('avx2', 'avx512_vnni', 'amx_int8'))}")
    results, pooled_tables = [], {}
    for name, gt, infos, dets in _datasets(args.seeds, args.synth_frames):
        for contender, build in contenders.items():
            tables, per_frame = {}, []
            for seq, info in infos.items():
                tracker, peer = build(float(info.fps))
                tables[seq], ms = _run(tracker, dets[seq], info.length, peer)
                per_frame.append(ms)
            if name.startswith("MOT17-09"):
                pooled_tables.setdefault(contender, {})[name] = (gt["MOT17-09"], tables["MOT17-09"],
                                                                 infos["MOT17-09"], float(np.mean(per_frame)))
            m = score(gt, tables, infos).combined
            results.append({"dataset": name, "tracker": contender, "idf1": m.idf1, "hota": m.hota, "mota": m.mota,
                            "idsw": m.idsw, "ms_per_frame": 1000 * float(np.mean(per_frame))})
            print(f"{name:28s} {contender:34s} IDF1 {m.idf1:.3f} HOTA {m.hota:.3f} MOTA {m.mota:.3f} "
                  f"IDSW {m.idsw:4d} {results[-1]['ms_per_frame']:.2f} ms/frame", flush=True)

    table = pl.DataFrame(results)
    mean = table.group_by("tracker", maintain_order=True).agg(pl.col("idf1", "hota", "mota", "ms_per_frame").mean())
    ours = mean.filter(pl.col("tracker").str.starts_with("ours ")).sort("idf1", descending=True).row(0, named=True)
    peers = mean.filter(~pl.col("tracker").str.starts_with("ours")).sort("idf1", descending=True)
    best_peer = peers.row(0, named=True)
    byte_ms = mean.filter(pl.col("tracker") == "ultralytics BYTETracker")["ms_per_frame"][0]
    print("\nmean over data sets:")
    print(mean)
    summary = {
        "our_best": ours["tracker"],
        "best_peer": best_peer["tracker"],
        "idf1_ratio": ours["idf1"] / best_peer["idf1"],
        "hota_ratio": ours["hota"] / best_peer["hota"],
        "time_ratio_vs_bytetracker": ours["ms_per_frame"] / byte_ms,
    }
    print(f"\nour best ({ours['tracker']}) / best peer ({best_peer['tracker']}): IDF1 x{summary['idf1_ratio']:.3f}, "
          f"HOTA x{summary['hota_ratio']:.3f}; time per frame x{summary['time_ratio_vs_bytetracker']:.2f} "
          "of Ultralytics' BYTETracker")
    pooled = {}
    for contender, runs in pooled_tables.items():
        m = score({k: v[0] for k, v in runs.items()}, {k: v[1] for k, v in runs.items()},
                  {k: v[2] for k, v in runs.items()}).combined
        pooled[contender] = {"idf1": m.idf1, "hota": m.hota, "mota": m.mota, "idsw": m.idsw,
                             "ms_per_frame": 1000 * float(np.mean([v[3] for v in runs.values()]))}
    if pooled:
        print(f"\nMOT17-09, seeds {' '.join(map(str, args.seeds))} pooled:")
        for contender, m in pooled.items():
            print(f"  {contender:34s} IDF1 {100 * m['idf1']:.2f} HOTA {100 * m['hota']:.2f} MOTA {100 * m['mota']:.2f} "
                  f"IDSW {m['idsw']:4d} {m['ms_per_frame']:.3f} ms/frame")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": cpu, "runs": results, "mot17_09_pooled": pooled, "summary": summary},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
