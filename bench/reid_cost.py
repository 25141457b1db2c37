"""What appearance costs as crowds grow: share of the frame time spent in the ReID, motops against Ultralytics.

For each crowd size (``--people``, default 8, 20 and 35 people in view) a synthetic 640x360
sequence is rendered here (static camera, ``--fps``, a seed the pipeline never trains on) and
tracked, in the same run, by:

* ``motops motion``: the engine bundle with BoT-SORT and no appearance (ONNX Runtime);
* ``motops appearance``: the same with the bundle's ReID (the shipped net and input size);
* ``motops appearance, old net``: the same with the net motops shipped before the compact
  default (``128x64`` input, channels 32/64/128/256), untrained: time depends only on the
  architecture, so it shows what the change of net saved;
* ``ultralytics botsort`` and ``ultralytics botsort+reid``: ``YOLO(weights).track()`` with its
  ``botsort.yaml``, and with ``with_reid: True`` (``model: auto``: appearance from the
  detector's own feature maps, Ultralytics' cheapest appearance), the peer.

Reported per run: FPS, the mean per-frame time and the ReID's share of it (motops: the ReID
calls timed inside the tracker; Ultralytics: the frame time above its motion-only run), and
IDF1/HOTA from TrackEval. Configurations run interleaved ``--repeats`` times; medians kept.
The target of the real-footage issue: appearance on costs at most 25 % of the frame time at
35 people.

Usage:
    python bench/reid_cost.py --engine models/release --weights models/detector/best.pt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_footage import cpu_info  # noqa: E402
from track_speed import _score, _ultralytics  # noqa: E402

#: The net motops shipped before the compact default (input H x W, stem + stage channels).
OLD_NET = {"input_size": (128, 64), "stem_channels": 32, "stage_channels": (64, 128, 256), "embedding_dim": 256}
TARGET_SHARE = 0.25


def _footage(out: Path, frames: int, seed: int, people: int, fps: float) -> Path:
    from motops.config import SyntheticParams
    from motops.data.synthetic import synthesize

    spec = SyntheticParams(sequences=1, frames=frames, seed=seed, fps=(fps,), camera=("static",), people=(people,))
    return synthesize(out, spec)[0]


def _old_reid(work: Path) -> Any:
    """The previous default net, untrained (same graph, so the same time), exported and loaded like the bundle's."""
    from motops.export.onnx_export import export_reid
    from motops.models.reid import ReIDNet, reid_meta, save_reid
    from motops.runtime.backends import load_reid

    net = ReIDNet(OLD_NET["embedding_dim"], stem_channels=OLD_NET["stem_channels"],
                  stage_channels=OLD_NET["stage_channels"])
    checkpoint = save_reid(work / "old_reid.pt", net, reid_meta(net, height=OLD_NET["input_size"][0],
                                                                 width=OLD_NET["input_size"][1]))
    path = export_reid(checkpoint, work / "old_reid.onnx", opset=17, dynamic_batch=True, simplify=False)
    return load_reid(path, backend="onnxruntime")


def _motops(engine: Any, img_dir: Path, out: Path, reid: Any | str) -> tuple[Any, dict[str, Any]]:
    """Track with the loaded bundle; ``reid`` ``"bundle"`` (its ReID), ``None`` (motion only) or a loaded ReID."""
    from motops.data.mot import read_mot_txt
    from motops.runtime.runner import track_source

    kwargs = engine.track_kwargs()
    kwargs["tracker"] = "botsort"
    params = dict(kwargs.get("tracker_params") or {})
    if reid == "bundle":
        if engine.reid is None:
            raise SystemExit(f"{engine.path}: the bundle has no ReID model; export one first")
        kwargs["reid"] = engine.reid
        params["with_reid"] = True
    elif reid is None:
        kwargs["reid"] = None
        params["with_reid"] = False
    else:
        kwargs["reid"] = reid
        params["with_reid"] = True
    kwargs["tracker_params"] = params
    summary = track_source(img_dir, out_dir=out, write_video=False, progress=False, **kwargs)
    tracks = read_mot_txt(out / "tracks.txt", sequence=img_dir.parent.name, min_columns=6, allow_empty=True)
    return tracks, summary


def _ultralytics_reid_yaml(work: Path) -> Path:
    """Ultralytics' own botsort.yaml with ``with_reid: True`` (its ``model: auto`` appearance)."""
    import ultralytics

    text = (Path(ultralytics.__file__).parent / "cfg" / "trackers" / "botsort.yaml").read_text()
    if "with_reid: False" not in text:
        raise SystemExit("ultralytics' botsort.yaml has no 'with_reid: False' line; this bench needs updating")
    path = work / "botsort_reid.yaml"
    path.write_text(text.replace("with_reid: False", "with_reid: True"))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", type=Path, default=ROOT / "models" / "release")
    parser.add_argument("--weights", type=Path, default=ROOT / "models" / "detector" / "best.pt")
    parser.add_argument("--people", type=int, nargs="+", default=[8, 20, 35])
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=5151)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-ultralytics", action="store_true", help="skip the Ultralytics peer rows")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reid_cost.json")
    args = parser.parse_args(argv)

    from motops.runtime.bundle import load_bundle

    engine = load_bundle(args.engine, backend="onnxruntime")
    imgsz = int(max(engine.track_kwargs()["detector"].imgsz))
    reid_size = list(engine.reid.input_size) if engine.reid is not None else None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="motops-reid-cost-") as tmp:
        work = Path(tmp)
        old = _old_reid(work)
        ul_yaml = _ultralytics_reid_yaml(work)
        for people in args.people:
            seq = _footage(work / f"footage{people}", args.frames, args.seed + people, people, args.fps)
            img_dir = seq / "img1"
            runs: dict[str, list[dict[str, Any]]] = {}
            for rep in range(args.repeats):
                for name, reid in (("motops motion", None), ("motops appearance", "bundle"),
                                   ("motops appearance, old net", old)):
                    tracks, s = _motops(engine, img_dir, work / f"out{people}-{rep}-{len(runs)}", reid)
                    lat = s["latency_ms"]
                    runs.setdefault(name, []).append({
                        "fps": s["fps"], "frame_ms": lat["frame"]["mean"], "detect_ms": lat["detect"]["mean"],
                        "reid_ms": lat["reid"]["total_s"] * 1000 / max(1, s["frames"]), "tracks": tracks,
                    })
                if not args.no_ultralytics:
                    for name, tracker in (("ultralytics botsort", "botsort.yaml"),
                                          ("ultralytics botsort+reid", str(ul_yaml))):
                        tracks, fps, frames = _ultralytics(args.weights, img_dir, imgsz, tracker)
                        runs.setdefault(name, []).append({"fps": fps, "frame_ms": 1000 / fps, "tracks": tracks})
            for name, reps in runs.items():
                row: dict[str, Any] = {"people": people, "name": name,
                                       "fps": statistics.median(r["fps"] for r in reps),
                                       "frame_ms": statistics.median(r["frame_ms"] for r in reps)}
                if "reid_ms" in reps[0]:
                    row["reid_ms"] = statistics.median(r["reid_ms"] for r in reps)
                    row["detect_ms"] = statistics.median(r["detect_ms"] for r in reps)
                if name != "motops appearance, old net":  # untrained: its tracks say nothing, only its time counts
                    row.update(_score(seq, reps[-1]["tracks"]))
                rows.append(row)
            by = {r["name"]: r for r in rows if r["people"] == people}
            for r in by.values():
                if "reid_ms" in r:
                    r["reid_share"] = r["reid_ms"] / r["frame_ms"] if r["frame_ms"] else 0.0
            if "ultralytics botsort+reid" in by:
                base = by["ultralytics botsort"]["frame_ms"]
                r = by["ultralytics botsort+reid"]
                r["reid_ms"] = max(0.0, r["frame_ms"] - base)
                r["reid_share"] = r["reid_ms"] / r["frame_ms"]

    cpu = cpu_info()
    flags = [name for name, present in cpu["flags"].items() if present]
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; {', '.join(flags) or 'none of ' + '/'.join(cpu['flags'])}")
    print(f"engine {args.engine}: ReID input {reid_size}; detector {imgsz}; {args.frames} frames at {args.fps:g} fps")
    print(f"{'people':>6s} {'configuration':28s} {'FPS':>6s} {'frame ms':>9s} {'ReID ms':>8s} {'share':>6s} "
          f"{'IDF1':>6s} {'HOTA':>6s} {'IDSW':>5s}")
    for r in rows:
        reid_ms = f"{r['reid_ms']:8.1f}" if "reid_ms" in r else f"{'-':>8s}"
        share = f"{100 * r['reid_share']:5.1f}%" if "reid_share" in r else f"{'-':>6s}"
        scores = (f"{r['idf1']:6.3f} {r['hota']:6.3f} {r['idsw']:5d}" if "idf1" in r
                  else f"{'-':>6s} {'-':>6s} {'-':>5s}  (untrained: timing only)")
        print(f"{r['people']:6d} {r['name']:28s} {r['fps']:6.1f} {r['frame_ms']:9.1f} {reid_ms} {share} {scores}")
    ratios: dict[str, float] = {}
    for people in args.people:
        by = {r["name"]: r for r in rows if r["people"] == people}
        new, old_row = by["motops appearance"], by["motops appearance, old net"]
        ratios[f"{people}_reid_ms_old_over_new"] = old_row["reid_ms"] / max(new["reid_ms"], 1e-9)
        ratios[f"{people}_fps_appearance_over_motion"] = new["fps"] / by["motops motion"]["fps"]
        if "ultralytics botsort+reid" in by:
            ratios[f"{people}_fps_motops_appearance_over_ultralytics_reid"] = (
                new["fps"] / by["ultralytics botsort+reid"]["fps"])
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}")
    crowd = max(args.people)
    share = next(r["reid_share"] for r in rows if r["people"] == crowd and r["name"] == "motops appearance")
    verdict = "met" if share <= TARGET_SHARE else "NOT met"
    print(f"target (ReID <= {TARGET_SHARE:.0%} of the frame time at {crowd} people): {share:.1%}, {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"engine": str(args.engine), "weights": str(args.weights), "frames": args.frames, "fps": args.fps,
                "seed": args.seed, "repeats": args.repeats, "reid_input": reid_size, "detector_imgsz": imgsz,
                "old_net": {k: list(v) if isinstance(v, tuple) else v for k, v in OLD_NET.items()}}
    args.out.write_text(json.dumps({"cpu": cpu, "settings": settings, "runs": rows, "ratios": ratios,
                                    "target_share": TARGET_SHARE, "crowd_share": share}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
