"""End-to-end tracking speed and accuracy: ``motops track`` (ONNX Runtime) against Ultralytics' ``YOLO.track()``.

Same weights, same footage, same run. The footage is a 640x360 synthetic sequence rendered
here with a seed the pipeline never trains on (30 fps, static camera, a crowd), so it has
ground truth and IDF1/HOTA are scored with TrackEval for every run:

* ``ultralytics``: ``YOLO(weights).track(frames, imgsz, stream=True)`` with its default
  tracker configuration, PyTorch on the CPU. In ultralytics 8.4.190 the default is TrackTrack
  (``tracktrack.yaml``: high/new-track thresholds 0.6/0.7, sparse-flow camera-motion
  compensation), not BoT-SORT;
* ``ultralytics botsort`` (``--ultralytics-trackers botsort.yaml``): the same with its
  ``botsort.yaml``, the tracker family motops runs;
* ``ultralytics openvino`` (``--ultralytics-openvino``): Ultralytics' fastest CPU route,
  ``YOLO(weights).export(format="openvino", imgsz=<the engine's detector input>)`` then
  ``YOLO(that folder).track()`` with its default tracker. The weights are copied to the work
  folder first (the export writes beside them); the export runs offline (the openvino package
  must be installed; OpenVINO's converter telemetry is declined with ``CI=true`` around the call);
* ``motops``: the engine bundle as ``load_bundle(backend="auto")`` loads it on this machine
  (:mod:`motops.runtime.select`: TensorRT / ONNX Runtime / OpenVINO, FP32 / INT8), through
  :func:`motops.runtime.runner.track_source`, detector every frame;
* ``motops ort-fp32``, ``motops ort-int8``, ``motops openvino`` (``--motops-variants``): the same
  bundle with the detector forced onto ONNX Runtime FP32 or INT8 QDQ, or run as
  ``--backend openvino`` runs it (detector and ReID on OpenVINO, the precision by the rule of
  :mod:`motops.runtime.hardware`: INT8 on VNNI/AMX CPUs, FP32 elsewhere).
  ``--int8`` first adds a calibrated INT8 detector to a copy of the bundle
  (:func:`motops.export.variants.add_int8_detector`, calibration frames from ``--yolo-dir``'s
  training images) and prints its mAP50 cost on val;
* ``motops detect_every=N``: ``motops``, detector every N-th frame, optical flow in between.

Every figure is printed beside the CPU's instruction sets (:func:`motops.runtime.hardware.probe`):
the ratios depend on them (VNNI/AMX or AVX2 only). ``--score-seq`` also scores every motops
variant on a val sequence (IDF1/HOTA, TrackEval), once each, untimed.

Each configuration is run ``--repeats`` times interleaved; the median FPS is reported.
Prints a table and the ratios the targets speak of, writes JSON and a plot of FPS against IDF1.

Usage:
    python bench/track_speed.py --engine models/release --weights models/detector/best.pt
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def _footage(out: Path, frames: int, seed: int, people: int) -> Path:
    from motops.config import SyntheticParams
    from motops.data.synthetic import synthesize

    spec = SyntheticParams(sequences=1, frames=frames, seed=seed, fps=(30.0,), camera=("static",), people=(people,))
    return synthesize(out, spec)[0]


def _ultralytics(
    weights: Path, img_dir: Path, imgsz: int | list[int], tracker: str | None = None
) -> tuple[pl.DataFrame, float, int]:
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    extra = {"tracker": tracker} if tracker else {}  # None: Ultralytics' default tracker
    files = sorted(img_dir.iterdir())
    rows = []
    start = time.perf_counter()
    for frame, result in enumerate(
        model.track(source=str(img_dir), imgsz=imgsz, stream=True, verbose=False, persist=True, device="cpu",
                    classes=[0], **extra),
        start=1,
    ):
        boxes = result.boxes
        if boxes is None or boxes.id is None:
            continue
        xyxy = boxes.xyxy.numpy()
        for (x1, y1, x2, y2), tid, conf in zip(xyxy, boxes.id.numpy(), boxes.conf.numpy(), strict=True):
            rows.append((frame, int(tid), float(x1), float(y1), float(x2 - x1), float(y2 - y1), float(conf)))
    seconds = time.perf_counter() - start
    table = pl.DataFrame(rows, schema=["frame", "id", "left", "top", "width", "height", "conf"], orient="row")
    return table, len(files) / seconds, len(files)


def _default_tracker() -> str:
    """The tracker configuration ``YOLO.track()`` uses when given none (it changes between releases)."""
    import inspect

    from ultralytics.engine.model import Model

    default = inspect.signature(Model.track).parameters.get("tracker")
    if default is not None and default.default is not inspect.Parameter.empty:
        return str(default.default)
    from ultralytics.cfg import get_cfg

    return str(getattr(get_cfg(), "tracker", "unknown"))


#: ``--motops-variants``: name -> load_bundle arguments.
MOTOPS_VARIANTS = {
    "ort-fp32": {"backend": "onnxruntime", "int8": False},  # FP32 on every CPU, whatever the precision rule says
    "ort-int8": {"backend": "onnxruntime", "int8": True},
    "openvino": {"backend": "openvino", "int8": "auto"},  # as `--backend openvino`: the precision rule applies
}
_ENGINES: dict[tuple, object] = {}


def _engine(engine_dir: Path, backend: str = "auto", int8: bool | str = "auto") -> object:
    """The bundle loaded once per configuration (the load-time timing of backend auto is not in the FPS)."""
    from motops.runtime.bundle import load_bundle

    key = (str(engine_dir), backend, int8)
    if key not in _ENGINES:
        _ENGINES[key] = load_bundle(engine_dir, backend=backend, int8=int8)
    return _ENGINES[key]


def _ultralytics_openvino(weights: Path, work: Path, imgsz: tuple[int, int]) -> Path:
    """``YOLO(weights).export(format="openvino")`` on a copy of the weights, offline; the model folder."""
    import os
    import shutil
    from importlib.util import find_spec

    from ultralytics import YOLO

    if find_spec("openvino") is None:
        raise SystemExit("--ultralytics-openvino needs the openvino package installed (pip install 'motops[openvino]')")
    copy = work / "ul-openvino" / weights.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(weights, copy)
    before = os.environ.get("CI")
    os.environ["CI"] = "true"  # openvino-telemetry sends usage data from ov.convert_model unless in CI or opted out
    try:
        out = YOLO(str(copy), task="detect").export(format="openvino", imgsz=list(imgsz), dynamic=False, half=False,
                                                    int8=False, device="cpu", verbose=False)
    finally:
        if before is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = before
    return Path(out)


def _motops(engine_dir: Path, img_dir: Path, detect_every: int, work: Path,
            tracker: str | None = None, variant: str | None = None) -> tuple[pl.DataFrame, float, dict]:
    from motops.data.mot import read_mot_txt
    from motops.runtime.runner import track_source

    engine = _engine(engine_dir, **MOTOPS_VARIANTS.get(variant or "", {}))
    kwargs = engine.track_kwargs()
    kwargs["detect_every"] = detect_every
    if tracker == "bytetrack":  # motion only
        kwargs.update(tracker="bytetrack", reid=None)
    elif tracker == "botsort-noreid":
        kwargs.update(reid=None)
    out = work / f"motops-de{detect_every}-{tracker or 'engine'}-{variant or 'auto'}"
    summary = track_source(img_dir, out_dir=out, write_video=False, progress=False, **kwargs)
    tracks = read_mot_txt(out / "tracks.txt", sequence=img_dir.parent.name, min_columns=6, allow_empty=True)
    return tracks, summary["fps"], summary


def _score(gt_dir: Path, table: pl.DataFrame) -> dict:
    from motops.data.mot import read_mot_sequence, read_seqinfo
    from motops.evaluation import score

    _, gt = read_mot_sequence(gt_dir)
    info = read_seqinfo(gt_dir / "seqinfo.ini")
    gt_table = gt.select("frame", "id", "left", "top", "width", "height", "conf", "class", "visibility")
    m = score({info.name: gt_table}, {info.name: table}, {info.name: info}).combined
    return {"idf1": m.idf1, "hota": m.hota, "mota": m.mota, "idsw": m.idsw}


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for row in rows:
        ax.scatter(row["fps"], row["idf1"], s=60)
        ax.annotate(row["name"], (row["fps"], row["idf1"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.axvline(15, color="grey", linestyle=":", linewidth=1, label="15 FPS target")
    ax.set(xlabel="frames per second (end to end, this CPU)", ylabel="IDF1", title="Tracking: speed against accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _int8_bundle(engine: Path, yolo_dir: Path, work: Path) -> tuple[Path, dict]:
    """A copy of ``engine`` with a calibrated INT8 detector (unless it has one) and its variants' mAP50 on val."""
    import json as _json

    from motops.export.variants import add_int8_detector

    manifest = _json.loads((engine / "manifest.json").read_text())
    if any(e.get("role") == "detector_int8" for e in manifest["files"].values()):
        return engine, manifest["metrics"].get("variants", {}).get("detector", {})
    out = work / "engine-int8"
    report = add_int8_detector(engine, out, yolo_dir)
    print(f"INT8 detector added in {report['quantize_seconds']:.0f} s (calibration + quantization), variants "
          f"measured in {report['measure_seconds']:.0f} s")
    return out, report["variants"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", type=Path, default=ROOT / "models" / "release")
    parser.add_argument("--weights", type=Path, default=ROOT / "models" / "detector" / "best.pt")
    parser.add_argument("--imgsz", type=int, default=None,
                        help="Ultralytics' input size; default: the longer side of the engine's detector input")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--detect-every", type=int, nargs="+", default=[3])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ultralytics-trackers", nargs="*", default=["botsort.yaml"],
                        help="also run YOLO.track() with these tracker configurations besides its default")
    parser.add_argument("--ultralytics-openvino", action="store_true",
                        help="also run Ultralytics' OpenVINO export with YOLO.track() (needs openvino installed)")
    parser.add_argument("--motops-variants", nargs="*", default=[], choices=list(MOTOPS_VARIANTS),
                        help="also run the engine with its detector forced onto these variants")
    parser.add_argument("--int8", action="store_true",
                        help="add a calibrated INT8 detector to a copy of the engine first (if it has none)")
    parser.add_argument("--yolo-dir", type=Path, default=ROOT / "data" / "prepared" / "yolo",
                        help="prepared YOLO set: training images calibrate --int8, val images score it")
    parser.add_argument("--score-seq", type=Path, default=None,
                        help="a val sequence (MOTChallenge folder) on which every motops variant is scored once")
    parser.add_argument("--variants", nargs="*", default=[], choices=["bytetrack", "botsort-noreid"],
                        help="also run the engine with these trackers instead of its own (detector every frame)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "track_speed.json")
    args = parser.parse_args()

    from motops.runtime.hardware import probe

    hw = probe()
    isa = hw.isa()
    print(f"CPU: {isa}")
    with tempfile.TemporaryDirectory(prefix="motops-bench-") as tmp:
        work = Path(tmp)
        variants_map50: dict = {}
        if args.int8:
            args.engine, variants_map50 = _int8_bundle(args.engine, args.yolo_dir, work)
            for name, v in variants_map50.items():
                print(f"detector {name:9s} mAP50 {v['map50']:.4f} (drop {100 * v['map50_drop']:+.2f} points) "
                      f"{v['ms']:.1f} ms/forward x{v['speedup']:.2f}  [{isa}]")
        det = _engine(args.engine).detector
        if args.imgsz is None:
            args.imgsz = int(max(det.imgsz))
        chosen = _engine(args.engine).chosen["variant"]
        print(f"motops (auto) runs: {chosen}")
        seq = _footage(work / "footage", args.frames, args.seed, args.people)
        img_dir = seq / "img1"
        ov_dir = _ultralytics_openvino(args.weights, work, tuple(det.imgsz)) if args.ultralytics_openvino else None
        runs: dict[str, list[tuple[pl.DataFrame, float]]] = {}
        ul_extra = [f"ultralytics {Path(t).stem}" for t in args.ultralytics_trackers]
        names = ["ultralytics", *ul_extra, *(["ultralytics openvino"] if ov_dir else []), "motops",
                 *[f"motops {v}" for v in args.motops_variants],
                 *[f"motops detect_every={n}" for n in args.detect_every], *[f"motops {v}" for v in args.variants]]
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits every configuration alike
            table, fps, _ = _ultralytics(args.weights, img_dir, args.imgsz)
            runs.setdefault("ultralytics", []).append((table, fps))
            for tracker, name in zip(args.ultralytics_trackers, ul_extra, strict=True):
                table, fps, _ = _ultralytics(args.weights, img_dir, args.imgsz, tracker)
                runs.setdefault(name, []).append((table, fps))
            if ov_dir is not None:
                table, fps, _ = _ultralytics(ov_dir, img_dir, list(det.imgsz))
                runs.setdefault("ultralytics openvino", []).append((table, fps))
            table, fps, _ = _motops(args.engine, img_dir, 1, work)
            runs.setdefault("motops", []).append((table, fps))
            for variant in args.motops_variants:
                table, fps, _ = _motops(args.engine, img_dir, 1, work, variant=variant)
                runs.setdefault(f"motops {variant}", []).append((table, fps))
            for n in args.detect_every:
                table, fps, _ = _motops(args.engine, img_dir, n, work)
                runs.setdefault(f"motops detect_every={n}", []).append((table, fps))
            for variant in args.variants:
                table, fps, _ = _motops(args.engine, img_dir, 1, work, tracker=variant)
                runs.setdefault(f"motops {variant}", []).append((table, fps))
        rows = []
        for name in names:
            fps = statistics.median(f for _, f in runs[name])
            rows.append({"name": name, "fps": fps, "fps_runs": [f for _, f in runs[name]],
                         **_score(seq, runs[name][-1][0]), "cpu": isa})
        val_scores = {}
        if args.score_seq is not None:
            for variant in ["auto", *args.motops_variants]:
                table, _, _ = _motops(args.engine, args.score_seq / "img1", 1, work,
                                      variant=None if variant == "auto" else variant)
                val_scores[variant] = _score(args.score_seq, table)

    by = {r["name"]: r for r in rows}
    print(f"{'configuration':28s} {'FPS':>7s} {'IDF1':>6s} {'HOTA':>6s} {'MOTA':>6s} {'IDSW':>5s}  CPU")
    for r in rows:
        print(f"{r['name']:28s} {r['fps']:7.1f} {r['idf1']:6.3f} {r['hota']:6.3f} {r['mota']:6.3f} {r['idsw']:5d}  "
              f"[{isa}]")
    ratios = {"motops_vs_ultralytics_fps": by["motops"]["fps"] / by["ultralytics"]["fps"]}
    for name in ul_extra + (["ultralytics openvino"] if ov_dir else []):
        ratios[f"motops_vs_{name.replace(' ', '_')}_fps"] = by["motops"]["fps"] / by[name]["fps"]
    for variant in args.motops_variants:
        ratios[f"motops_{variant}_vs_ultralytics_fps"] = by[f"motops {variant}"]["fps"] / by["ultralytics"]["fps"]
        if ov_dir:
            ratios[f"motops_{variant}_vs_ultralytics_openvino_fps"] = (
                by[f"motops {variant}"]["fps"] / by["ultralytics openvino"]["fps"])
    for n in args.detect_every:
        key = f"motops detect_every={n}"
        ratios[f"detect_every_{n}_speedup"] = by[key]["fps"] / by["motops"]["fps"]
        ratios[f"detect_every_{n}_idf1_drop_points"] = 100 * (by["motops"]["idf1"] - by[key]["idf1"])
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}  [{isa}]")
    for variant, m in val_scores.items():
        print(f"val {args.score_seq.name} motops {variant:9s} IDF1 {m['idf1']:.3f} HOTA {m['hota']:.3f} "
              f"MOTA {m['mota']:.3f} IDSW {m['idsw']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"frames": args.frames, "people": args.people, "seed": args.seed, "size": [640, 360],
            "engine": str(args.engine), "weights": str(args.weights), "ultralytics_imgsz": args.imgsz,
            "repeats": args.repeats, "ultralytics_default_tracker": _default_tracker(), "hardware": hw.as_dict(),
            "motops_auto_variant": chosen}
    result = {"settings": meta, "runs": rows, "ratios": ratios, "detector_variants": variants_map50,
              "val_scores": {"sequence": str(args.score_seq), **val_scores} if val_scores else {}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
