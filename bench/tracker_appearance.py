"""BoT-SORT with appearance on an engine bundle's footage: our tracker against the Ultralytics-backed one.

Each sequence's frames are read and detected once by the bundle's detector; then every variant
tracks the very same detections and frames with the bundle's ReID (appearance on) and tracker
settings, so the differences are the tracker's and its ReID calls':

* ``ultralytics``: ``make_tracker(impl="ultralytics")``, Ultralytics' BOTSORT (embeds every kept box);
* ``motops all``: ours, ``embed: all`` (every kept box, as BoT-SORT);
* ``motops needed``: ours, ``embed: needed`` (only boxes whose match appearance could change
  or that start a track);
* ``motops motion``: ours without appearance, for reference.

Reports IDF1, HOTA, MOTA, IDSW (TrackEval), the tracker's time per frame with its ReID calls
(``track+reid ms``), the ReID's share, ReID calls and crops per frame, and the detector's time
per frame (the same for all), with the CPU it ran on; writes JSON.

Usage:
    python bench/tracker_appearance.py --bundle models/release --sequences data/sequences/synth-04
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import polars as pl
from real_footage import cpu_info  # bench/ is on sys.path when this script runs

from motops.data.mot import read_mot_sequence, read_seqinfo
from motops.evaluation import score
from motops.runtime import make_tracker
from motops.runtime.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "ultralytics": {"impl": "ultralytics", "embed": "all"},
    "motops all": {"impl": "motops", "embed": "all"},
    "motops needed": {"impl": "motops", "embed": "needed"},
    "motops motion": {"impl": "motops", "with_reid": False},
}


class _Counted:
    """The ReID callable, counting calls, crops and seconds."""

    def __init__(self, reid) -> None:
        self.reid, self.calls, self.crops, self.seconds = reid, 0, 0, 0.0

    def __call__(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self.reid(frame, boxes)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.crops += len(boxes)
        return out


def _load(seq: Path, detector) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    info = read_seqinfo(seq / "seqinfo.ini")
    frames = [cv2.imread(str(seq / info.im_dir / f"{i:06d}{info.im_ext}")) for i in range(1, info.length + 1)]
    start = time.perf_counter()
    dets = [np.asarray(detector(f), dtype=np.float32).reshape(-1, 6) for f in frames]
    return frames, dets, (time.perf_counter() - start) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "release")
    parser.add_argument("--sequences", type=Path, nargs="+", required=True, help="MOT sequence folders with gt")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant; the fastest is reported")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tracker_appearance.json")
    args = parser.parse_args()

    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; "
          f"{' '.join(k for k, v in cpu['flags'].items() if v and k in ('avx2', 'avx512_vnni', 'amx_int8'))}")
    engine = load_bundle(args.bundle)
    kw = engine.track_kwargs()
    if kw["reid"] is None:
        raise SystemExit(f"{args.bundle}: the bundle runs no ReID (tracker.yaml with_reid false); nothing to compare")
    print(f"bundle {args.bundle}: tracker {kw['tracker']}, {kw['tracker_params']}")
    data = {}
    for seq in args.sequences:
        frames, dets, det_s = _load(seq, kw["detector"])
        _, gt = read_mot_sequence(seq)
        info = read_seqinfo(seq / "seqinfo.ini")
        data[info.name] = (frames, dets, det_s, gt, info)
        print(f"{info.name}: {info.length} frames at {info.fps} fps, {np.mean([len(d) for d in dets]):.1f} boxes "
              f"per frame, detector {1000 * det_s:.1f} ms/frame")

    rows = []
    for variant, opts in VARIANTS.items():
        params = {**kw["tracker_params"], **{k: v for k, v in opts.items() if k != "impl"}}
        best: dict | None = None
        for _ in range(args.repeats):
            tables, infos, gts, seconds, frames_n = {}, {}, {}, 0.0, 0
            reid = _Counted(kw["reid"])
            for name, (frames, dets, _, gt, info) in data.items():
                trk = make_tracker(kw["tracker"], frame_rate=float(info.fps), impl=opts["impl"],
                                   reid=reid if params.get("with_reid", True) else None, **params)
                out = []
                for t, (frame, d) in enumerate(zip(frames, dets, strict=True), start=1):
                    start = time.perf_counter()
                    tracks = trk.update(d, frame)
                    seconds += time.perf_counter() - start
                    out += [(t, int(r[4]), r[0], r[1], r[2] - r[0], r[3] - r[1], r[5]) for r in tracks]
                frames_n += len(frames)
                tables[name] = pl.DataFrame(out, schema=["frame", "id", "left", "top", "width", "height", "conf"],
                                            orient="row")
                gts[name], infos[name] = gt, info
            run = {"seconds": seconds, "frames": frames_n, "reid": reid, "tables": tables}
            if best is None or seconds < best["seconds"]:
                best = run
        m = score(gts, best["tables"], infos).combined
        reid, n = best["reid"], best["frames"]
        rows.append({
            "variant": variant, "idf1": m.idf1, "hota": m.hota, "mota": m.mota, "idsw": m.idsw,
            "track_reid_ms": 1000 * best["seconds"] / n, "reid_ms": 1000 * reid.seconds / n,
            "reid_calls_per_frame": reid.calls / n, "crops_per_frame": reid.crops / n,
        })  # fmt: skip
        r = rows[-1]
        print(f"{variant:15s} IDF1 {r['idf1']:.3f} HOTA {r['hota']:.3f} MOTA {r['mota']:.3f} IDSW {r['idsw']:4d} "
              f"track+reid {r['track_reid_ms']:.2f} ms/frame (reid {r['reid_ms']:.2f}), "
              f"{r['reid_calls_per_frame']:.2f} reid calls, {r['crops_per_frame']:.2f} crops per frame", flush=True)
    det_ms = 1000 * float(np.mean([v[2] for v in data.values()]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": cpu, "bundle": str(args.bundle), "sequences": list(data),
                                    "detector_ms_per_frame": det_ms, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
