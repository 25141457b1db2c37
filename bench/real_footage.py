"""Real footage: motops' whole pipeline against the Ultralytics-only workflow on PETS09-S2L1.

The footage is PETS09-S2L1 (a static camera over a campus crossing, 768x576, 7 fps,
frames 1-530, MOTChallenge ground truth with fractional coordinates), built once with
``../shared/data/pets09/build.py``. It is split by time into two sequences in the work
folder: ``PETS09-S2L1-train`` (``--train-frames``, default 1-400) and ``PETS09-S2L1-val``
(``--val-frames``, default 401-530, renumbered from 1). Rows, measured in the same run:

* ``motops``: the repository's ``params.yaml`` with the footage as its only source
  (``data.sources``, ``prepare.val_sequences``; every path under the work folder) and any
  ``-S key=value`` overrides, run stage by stage in DAG order (ingest, validate, prepare,
  train_detector, train_reid, export, evaluate), each stage timed; the scores are the
  evaluate stage's ``metrics/eval.json`` (ONNX Runtime engine, end-to-end FPS). Note that
  evaluate picks its confidence threshold by a sweep scored on the val sequence itself;
* ``ultralytics <tracker>``: what a user would run instead. A YOLO data set of every train
  frame (labels: rows with consider flag 1 and class 1), the val frames as its val split;
  ``YOLO(models/base/detector.pt).train()`` (the same starting weights as motops) with
  Ultralytics' defaults except ``time`` (the wall-clock budget of motops' two training
  stages in this run, or ``--budget-min``), ``amp=False``, ``plots=False``, CPU, no
  workers and no logging integrations; then ``YOLO(best.pt).track()`` over the val frames
  with its default tracker and with ``botsort.yaml``, scored with the project's TrackEval
  scoring against the same val ground truth. FPS is the ``track()`` loop's, PyTorch.

Boxes of both rows follow motops' convention (``left, top = x1, y1`` in pixels). Prints the
CPU and its vector instruction sets, a table, the differences of motops to the best
Ultralytics row, and writes JSON.

Usage:
    python bench/real_footage.py --pets /tmp/pets09/PETS09-S2L1-DEV
    python bench/real_footage.py -S detector.freeze=0 -S detector.epochs=15 \
        --out bench/results/real_footage_unfrozen.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from motops.config import Params

ROOT = Path(__file__).resolve().parents[1]
BASE_WEIGHTS = ROOT / "models" / "base" / "detector.pt"
TRAIN_SEQ = "PETS09-S2L1-train"
VAL_SEQ = "PETS09-S2L1-val"
DEFAULT_PETS = Path("/tmp/pets09/PETS09-S2L1-DEV")
DEFAULT_WORK = Path("/tmp/motops-real-footage")
BUILD_HINT = (
    "build it with: python ../shared/data/pets09/build.py "
    "--video /tmp/opencv-doc/usr/share/doc/opencv-doc/examples/data/vtest.avi --out /tmp/pets09 "
    "(see ../shared/data/README.md)"
)
#: File that marks a work folder as this script's, so that only such a folder is ever deleted.
WORK_MARKER = ".real_footage_work"
#: The motops stages run, in DAG order (synthesize: no synthetic source; gate/register: no MLflow).
STAGES = ("ingest", "validate", "prepare", "train_detector", "train_reid", "export", "evaluate")
#: x86 instruction sets that decide CPU inference speed (PyTorch, ONNX Runtime INT8).
CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_bf16", "amx_int8")
METRICS = ("hota", "mota", "idf1", "idsw", "frag")


class BenchError(Exception):
    """A problem with the bench's input, reported as one line."""


# --------------------------------------------------------------------------- machine


def cpu_info() -> dict[str, Any]:
    """The CPU model, core count, which of :data:`CPU_FLAGS` it has, and the runtime's one-line ``isa``.

    The same reading as the runtime's engine choice (:func:`motops.runtime.hardware.probe`), so a
    bench's figures and the engine it would pick name the same instruction sets.
    """
    from motops.runtime.hardware import probe

    found = probe()
    return {"model": found.cpu, "cores": found.cores, "flags": {name: name in found.flags for name in CPU_FLAGS},
            "isa": found.isa()}


# --------------------------------------------------------------------------- footage


def frame_range(text: str) -> tuple[int, int]:
    """``"401-530"`` -> ``(401, 530)``; an argparse type.

    Raises:
        argparse.ArgumentTypeError: not ``FIRST-LAST`` with ``1 <= FIRST <= LAST``.
    """
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last)
    except ValueError:
        lo, hi = 0, -1
    if not sep or not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST frames such as 401-530, got {text!r}")
    return lo, hi


def find_pets(path: Path, last_frame: int) -> Path:
    """The built PETS09-S2L1 sequence folder (``path`` itself or ``path/PETS09-S2L1-DEV``).

    Raises:
        BenchError: no ``seqinfo.ini``/``gt/gt.txt`` there, or images up to ``last_frame`` missing.
    """
    from motops.data.mot import read_seqinfo

    for folder in (path, path / "PETS09-S2L1-DEV"):
        if (folder / "seqinfo.ini").is_file() and (folder / "gt" / "gt.txt").is_file():
            break
    else:
        raise BenchError(f"{path}: no PETS09-S2L1 sequence (seqinfo.ini, gt/gt.txt, img1/); {BUILD_HINT}")
    info = read_seqinfo(folder / "seqinfo.ini")
    if last_frame > info.length:
        raise BenchError(f"{folder}: has {info.length} frames, frame {last_frame} was asked for")
    missing = [f for f in (1, last_frame) if not (folder / info.frame_files()[f - 1]).is_file()]
    if missing:
        raise BenchError(f"{folder}: images missing ({info.frame_files()[missing[0] - 1]}); {BUILD_HINT}")
    return folder


def split_sequence(src: Path, dst: Path, name: str, frames: tuple[int, int]) -> Path:
    """Write frames ``first..last`` of the sequence ``src`` as the sequence ``dst/name``, renumbered from 1.

    Args:
        src: MOTChallenge sequence folder (``seqinfo.ini``, ``gt/gt.txt``, images).
        dst: Folder the new sequence folder is written into.
        name: The new sequence's name (``seqinfo.ini`` ``name`` and folder name).
        frames: ``(first, last)``, 1-based and inclusive.

    Returns:
        The new sequence folder; images are hard-linked where possible.
    """
    from dataclasses import replace

    from motops.data.mot import MOT_COLUMNS, read_mot_sequence, read_seqinfo, write_mot_sequence

    first, last = frames
    info = read_seqinfo(src / "seqinfo.ini")
    _, gt = read_mot_sequence(src)
    gt = gt.filter(pl.col("frame").is_between(first, last)).with_columns(pl.col("frame") - (first - 1))
    out = replace(info, name=name, length=last - first + 1)
    images = [src / rel for rel in info.frame_files()[first - 1 : last]]
    write_mot_sequence(dst / name, out, gt.select(MOT_COLUMNS), images=images)
    return dst / name


def prepare_work(work: Path) -> None:
    """Empty ``work`` for a run; refuses to delete a non-empty folder this script did not make.

    Raises:
        BenchError: ``work`` holds files and no :data:`WORK_MARKER`.
    """
    if work.exists():
        if any(work.iterdir()) and not (work / WORK_MARKER).is_file():
            raise BenchError(f"--work {work}: not empty and not a folder of this bench; give another folder")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / WORK_MARKER).write_text("made by bench/real_footage.py; deleted by its next run\n")


# --------------------------------------------------------------------------- motops


def motops_params(raw: Path, overrides: list[str], sources: list[dict[str, Any]] | None = None) -> Params:
    """``params.yaml`` with the footage as its only source, the val sequence named, and ``overrides`` on top.

    ``sources``: the ``data.sources`` entries instead of ``raw`` alone. A relative
    ``detector.weights`` or ``reid.weights`` is made absolute against the repository (the stages
    resolve them against their ``root``, which is the work folder here).
    """
    from motops.config import load_params

    source = json.dumps(sources or [{"format": "mot", "path": str(raw)}])
    sets = [f"data.sources={source}", f"prepare.val_sequences=[{VAL_SEQ}]", *overrides]
    params = load_params(ROOT / "params.yaml", sets)
    absolute = [
        f"{key}={json.dumps(str(ROOT / weights))}"
        for key, weights in (("detector.weights", params.detector.weights), ("reid.weights", params.reid.weights))
        if weights and not Path(weights).is_absolute()
    ]
    return load_params(ROOT / "params.yaml", [*sets, *absolute]) if absolute else params


def run_motops(raw: Path, root: Path, overrides: list[str], skip_validate: bool,
               sources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the motops stages on ``raw`` (or ``sources``: :func:`motops_params`), outputs under ``root``; time each.

    Returns:
        ``stage_minutes``, ``train_minutes`` (train_detector + train_reid), ``validation``
        (``passed``, ``skipped`` or the failure's first line), the eval metrics and the
        detector/ReID training metrics.
    """
    from motops import stages
    from motops.errors import ValidationFailed

    params = motops_params(raw, overrides, sources)
    root.mkdir(parents=True, exist_ok=True)
    minutes: dict[str, float] = {}
    validation = "skipped"
    for name in STAGES:
        if name == "validate" and skip_validate:
            print("[motops] validate: skipped (--skip-validate)", flush=True)
            continue
        print(f"[motops] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            getattr(stages, name)(params, root=root)
            if name == "validate":
                validation = "passed"
        except ValidationFailed as exc:
            validation = "failed: " + str(exc).strip().splitlines()[0]
            print(f"[motops] validate FAILED, continuing anyway (use --skip-validate to skip it):\n{exc}",
                  file=sys.stderr, flush=True)
        minutes[name] = (time.perf_counter() - start) / 60
        print(f"[motops] {name}: {minutes[name]:.2f} min", flush=True)
    metrics = json.loads((root / "metrics" / "eval.json").read_text())
    detector = json.loads((root / "metrics" / "detector.json").read_text())
    reid = json.loads((root / "metrics" / "reid.json").read_text())
    return {
        "name": "motops",
        "train_minutes": minutes["train_detector"] + minutes["train_reid"],
        **{k: metrics[k] for k in METRICS},
        "fps": metrics["fps"],
        "fps_backend": metrics["backend"],
        "threshold": metrics["threshold"],
        "stage_minutes": minutes,
        "validation": validation,
        "detector": {k: detector.get(k) for k in ("map50", "map50_95", "selected", "epochs", "images_train")},
        "reid": {k: reid.get(k) for k in ("rank1", "map")},
        "overrides": overrides,
    }


# --------------------------------------------------------------------------- Ultralytics


def yolo_dataset(raw: Path, out: Path) -> Path:
    """A YOLO detection set of every frame of the train sequence (train) and of the val sequence (val).

    The project's own writer (:func:`motops.data.prepare.build_yolo_dataset`) with one-frame clips
    every frame and no visibility floor: labels are the ground-truth rows with consider flag 1 of
    class 1 (pedestrian), YOLO class 0, clipped to the image.

    Returns:
        The ``data.yaml`` written.
    """
    from motops.data.mot import read_mot_dataset
    from motops.data.prepare import build_yolo_dataset

    sequences, annotations = read_mot_dataset(raw)
    return build_yolo_dataset(sequences, annotations, train=[TRAIN_SEQ], val=[VAL_SEQ], out_dir=out, clip_length=1,
                              clip_stride=1, min_visibility=0.0, progress=False)  # fmt: skip


def train_ultralytics(data_yaml: Path, project: Path, budget_min: float) -> tuple[Path, dict[str, Any]]:
    """``YOLO(models/base/detector.pt).train()`` with Ultralytics' defaults and a wall-clock budget.

    Returns:
        ``(best.pt, facts)``: facts holds ``train_minutes``, ``epochs`` run, ``imgsz`` and
        the final val ``map50``/``map50_95``.
    """
    from ultralytics import YOLO

    from motops.training.detector import _local_fonts_only, _make_trainer_class

    start = time.perf_counter()
    with _local_fonts_only():
        model = YOLO(str(BASE_WEIGHTS), task="detect")
        # Ultralytics' own training: its augmentations only, not motops' tracking ones
        model.train(trainer=_make_trainer_class(None), data=str(data_yaml), time=budget_min / 60, amp=False,
                    plots=False, device="cpu", workers=0, project=str(project), name="train", exist_ok=True)
    minutes = (time.perf_counter() - start) / 60
    trainer = model.trainer
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    box = getattr(trainer.validator, "metrics", None)
    box = getattr(box, "box", None)
    facts = {
        "train_minutes": minutes,
        "epochs": int(trainer.epoch) + 1,
        "imgsz": trainer.args.imgsz,
        "map50": float(box.map50) if box is not None else None,
        "map50_95": float(box.map) if box is not None else None,
    }
    return best, facts


def track_ultralytics(weights: Path, img_dir: Path, tracker: str | None) -> tuple[pl.DataFrame, float, str]:
    """``YOLO(weights).track()`` over the frames of ``img_dir`` (sorted, frame 1 first), on the CPU.

    Args:
        weights: The trained ``.pt``.
        img_dir: Folder of the val frames.
        tracker: A tracker YAML such as ``botsort.yaml``; None: Ultralytics' default.

    Returns:
        ``(tracks, fps, tracker)``: tracks as ``frame, id, left, top, width, height, conf``
        (pixels, ``left, top = x1, y1``), frames per second of the loop, the tracker used.
    """
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    extra = {"tracker": tracker} if tracker else {}
    rows, frames = [], 0
    start = time.perf_counter()
    for frame, result in enumerate(model.track(source=str(img_dir), stream=True, persist=True, verbose=False,
                                               device="cpu", **extra), start=1):
        frames = frame
        boxes = result.boxes
        if boxes is None or boxes.id is None:
            continue
        for (x1, y1, x2, y2), tid, conf in zip(boxes.xyxy.numpy(), boxes.id.numpy(), boxes.conf.numpy(),
                                               strict=True):
            rows.append((frame, int(tid), float(x1), float(y1), float(x2 - x1), float(y2 - y1), float(conf)))
    fps = frames / (time.perf_counter() - start)
    used = tracker or str(getattr(model.predictor.args, "tracker", "default"))
    schema = {"frame": pl.Int64, "id": pl.Int64, "left": pl.Float64, "top": pl.Float64, "width": pl.Float64,
              "height": pl.Float64, "conf": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row"), fps, used


def score_sequence(seq_dir: Path, tracks: pl.DataFrame) -> dict[str, Any]:
    """TrackEval scores (:func:`motops.evaluation.score`) of ``tracks`` on the sequence ``seq_dir``."""
    from motops.data.mot import read_mot_sequence, read_seqinfo
    from motops.evaluation import score

    _, gt = read_mot_sequence(seq_dir)
    info = read_seqinfo(seq_dir / "seqinfo.ini")
    gt = gt.select("frame", "id", "left", "top", "width", "height", "conf", "class", "visibility")
    m = score({info.name: gt}, {info.name: tracks}, {info.name: info}).combined
    return {k: getattr(m, k) for k in METRICS}


def run_ultralytics(raw: Path, val_seq: Path, work: Path, budget_min: float) -> list[dict[str, Any]]:
    """Train with Ultralytics on every train frame, track the val frames with two trackers, score both."""
    print(f"[ultralytics] data set of every train frame; training for {budget_min:.2f} min ...", flush=True)
    data_yaml = yolo_dataset(raw, work / "yolo")
    best, facts = train_ultralytics(data_yaml, work / "runs", budget_min)
    print(f"[ultralytics] trained {facts['epochs']} epochs at imgsz {facts['imgsz']} in "
          f"{facts['train_minutes']:.2f} min", flush=True)
    rows = []
    for tracker in (None, "botsort.yaml"):
        tracks, fps, used = track_ultralytics(best, val_seq / "img1", tracker)
        scores = score_sequence(val_seq, tracks)
        name = f"ultralytics {Path(used).stem}"
        print(f"[ultralytics] {name}: IDF1 {scores['idf1']:.3f}, {fps:.1f} FPS", flush=True)
        rows.append({"name": name, "train_minutes": facts["train_minutes"], **scores, "fps": fps,
                     "fps_backend": "torch", "tracker": used, "detector": facts})
    return rows


# --------------------------------------------------------------------------- report


def print_table(rows: list[dict[str, Any]]) -> None:
    """The result table: one line per row."""
    print(f"\n{'row':28s} {'train min':>9s} {'HOTA':>6s} {'MOTA':>6s} {'IDF1':>6s} {'IDSW':>5s} {'Frag':>5s} "
          f"{'FPS':>6s}")
    for r in rows:
        print(f"{r['name']:28s} {r['train_minutes']:9.2f} {r['hota']:6.3f} {r['mota']:6.3f} {r['idf1']:6.3f} "
              f"{r['idsw']:5d} {r['frag']:5d} {r['fps']:6.1f}")


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """motops against the best Ultralytics row (by IDF1): points of difference and ratios; empty without both."""
    ours = next((r for r in rows if r["name"] == "motops"), None)
    peers = [r for r in rows if r["name"].startswith("ultralytics")]
    if ours is None or not peers:
        return {}
    best = max(peers, key=lambda r: r["idf1"])

    def ratio(key: str) -> float | None:
        return ours[key] / best[key] if best[key] else None

    return {
        "best_ultralytics": best["name"],
        "idf1_points": 100 * (ours["idf1"] - best["idf1"]),
        "mota_points": 100 * (ours["mota"] - best["mota"]),
        "hota_points": 100 * (ours["hota"] - best["hota"]),
        "idf1_ratio": ratio("idf1"),
        "hota_ratio": ratio("hota"),
        "fps_ratio": ratio("fps"),
        "train_minutes_ratio": ratio("train_minutes"),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2: bad input, named in one line)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pets", type=Path, default=DEFAULT_PETS,
                        help=f"the built PETS09-S2L1-DEV sequence folder (default {DEFAULT_PETS})")
    parser.add_argument("--train-frames", type=frame_range, default=(1, 400), metavar="FIRST-LAST")
    parser.add_argument("--val-frames", type=frame_range, default=(401, 530), metavar="FIRST-LAST")
    parser.add_argument("--rows", default="motops,ultralytics", help="comma-separated: motops, ultralytics")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="Ultralytics' training budget, minutes (default: motops' two training stages' time)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a motops param (repeatable), e.g. -S detector.epochs=15")
    parser.add_argument("--skip-validate", action="store_true", help="do not run motops' validate stage")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder (default {DEFAULT_WORK})")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "real_footage.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")

    rows_asked = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows_asked) - {"motops", "ultralytics"})
    if unknown or not rows_asked:
        parser.error(f"--rows: expected motops and/or ultralytics, got {args.rows!r}")
    if "motops" not in rows_asked and args.budget_min is None:
        parser.error("--budget-min is needed when the motops row (which measures the budget) is not run")
    if args.train_frames[1] >= args.val_frames[0]:
        parser.error("--train-frames must end before --val-frames starts")
    from motops.errors import MotopsError

    try:
        pets = find_pets(args.pets, max(args.train_frames[1], args.val_frames[1]))
    except (BenchError, MotopsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import torch
    import ultralytics

    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; "
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items()))
    work = args.work.resolve()
    try:
        prepare_work(work)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        raw = work / "raw"
        split_sequence(pets, raw, TRAIN_SEQ, args.train_frames)
        val_seq = split_sequence(pets, raw, VAL_SEQ, args.val_frames)
        print(f"footage: {TRAIN_SEQ} = frames {args.train_frames[0]}-{args.train_frames[1]}, {VAL_SEQ} = "
              f"frames {args.val_frames[0]}-{args.val_frames[1]} (renumbered), in {raw}", flush=True)
        rows: list[dict[str, Any]] = []
        if "motops" in rows_asked:
            try:
                rows.append(run_motops(raw, work / "motops", args.overrides, args.skip_validate))
            except MotopsError as exc:
                print(f"error: motops: {exc}", file=sys.stderr)
                return 2
        budget = args.budget_min if args.budget_min is not None else rows[0]["train_minutes"]
        if "ultralytics" in rows_asked:
            rows.extend(run_ultralytics(raw, val_seq, work / "ultralytics", budget))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    total_min = (time.perf_counter() - started) / 60

    print_table(rows)
    comparison = compare(rows)
    if comparison:
        c = {k: float("nan") if v is None else v for k, v in comparison.items()}
        print(f"motops - {c['best_ultralytics']}: IDF1 {c['idf1_points']:+.1f} points, "
              f"MOTA {c['mota_points']:+.1f} points, HOTA {c['hota_points']:+.1f} points; "
              f"IDF1 x{c['idf1_ratio']:.2f}, FPS x{c['fps_ratio']:.2f}, training time x{c['train_minutes_ratio']:.2f}")
    settings = {
        "pets": str(pets), "train_frames": list(args.train_frames), "val_frames": list(args.val_frames),
        "rows": rows_asked, "overrides": args.overrides, "budget_minutes": budget,
        "budget_from": "--budget-min" if args.budget_min is not None else "motops train_detector + train_reid",
        "skip_validate": args.skip_validate, "start_weights": str(BASE_WEIGHTS), "total_minutes": total_min,
    }
    machine = {"cpu": cpu, "platform": platform.platform(), "python": sys.version.split()[0],
               "torch": torch.__version__, "ultralytics": ultralytics.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bench": "real_footage", "settings": settings, "machine": machine,
                                    "runs": rows, "comparison": comparison}, indent=2, default=str) + "\n")
    print(f"wrote {args.out} ({total_min:.1f} min in all{'; work folder kept: ' + str(work) if args.keep else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
