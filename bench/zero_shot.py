"""Zero-shot on real footage: the base detector and the default run's engine on PETS09-S2L1, no training on it.

The footage is PETS09-S2L1 (static camera over a campus crossing, 768x576, 7 fps, all 530
frames, MOTChallenge ground truth), built once with ``../shared/data/pets09/build.py``.
Nothing here trains: the models are used as committed / as ``dvc repro`` built them.

Rows, measured in the same run:

* ``base`` (``--base``, default ``models/base/detector.pt``): the frozen pretrain stage's
  checkpoint. Detector AP50 two ways: our own (below) with the project's torch backend at
  ``--base-imgsz`` (square letterbox, as every backend of the runtime feeds it), and
  Ultralytics' ``val`` (rect batches, same imgsz) on a YOLO-format view of the 530 frames
  (labels: rows with consider flag 1 and class 1), as a cross-check of our number.
  No tracking: a ``.pt`` has no tracker settings of its own.
* ``engine`` (``--engine``, default ``models/release``): the default run's bundle, loaded
  as ``motops track --engine`` loads it (ONNX Runtime, its INT8/FP32 choice, its
  ``tracker.yaml``). Detector AP50 with our own computation on its detector with the score
  floor lowered to 0.001; then the whole engine tracks the 530 frames and the tracks are
  scored with the project's TrackEval adapter (HOTA, MOTA, IDF1, IDSW, Frag) and timed.

Our AP50: every detection (score > 0.001, NMS as the backend does it) is matched greedily
by score to an unmatched ground-truth box at IoU >= 0.5 (:func:`motops.evaluation.sweep._match_frame`;
detections on distractor rows are ignored); AP is the area under the precision envelope
sampled at 101 recall points (COCO's and Ultralytics' interpolation).

Prints the CPU and its vector instruction sets and a table; writes JSON.

Usage:
    python bench/zero_shot.py --pets /tmp/pets09/PETS09-S2L1-DEV \
        --base models/base/detector.pt --engine models/release --out bench/results/zero_shot_before.json
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_footage import DEFAULT_PETS, BenchError, cpu_info, find_pets, score_sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 530
AP_IOU = 0.5
LOW_CONF = 0.001


def git_commit(path: Path) -> str | None:
    """The commit of the git checkout holding ``path`` (``+dirty`` when it has changes), or None."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def ap50(detections: dict[int, np.ndarray], gt: pl.DataFrame) -> dict[str, float]:
    """AP at IoU 0.5 of per-frame ``(N, 6)`` detections against MOT ground truth (101-point interpolation).

    Returns:
        ``ap50``, ``gt_boxes`` and the precision/recall at the best-F1 score threshold.
    """
    from motops.evaluation.sweep import _match_frame, _scored_gt, _xyxy

    scored, ignored = _scored_gt(gt)
    by_frame = {f: _xyxy(g) for (f,), g in scored.group_by("frame")}
    ign_by_frame = {f: _xyxy(g) for (f,), g in ignored.group_by("frame")}
    confs, labels = [], []
    empty = np.zeros((0, 4))
    for frame, dets in detections.items():
        dets = np.asarray(dets, np.float64).reshape(-1, 6)
        confs.append(dets[:, 4])
        labels.append(_match_frame(dets, by_frame.get(frame, empty), ign_by_frame.get(frame, empty), AP_IOU))
    conf = np.concatenate(confs) if confs else np.zeros(0)
    lab = np.concatenate(labels) if labels else np.zeros(0, np.int8)
    keep = lab >= 0
    conf, lab = conf[keep], lab[keep]
    order = np.argsort(-conf, kind="stable")
    tp = np.cumsum(lab[order] == 1)
    fp = np.cumsum(lab[order] == 0)
    positives = len(scored)
    recall = tp / max(positives, 1)
    precision = tp / np.maximum(tp + fp, 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    ap = float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in idx]))
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-9)
    best = int(np.argmax(f1)) if len(f1) else 0
    return {
        "ap50": ap,
        "gt_boxes": positives,
        "best_f1": float(f1[best]) if len(f1) else 0.0,
        "precision_at_best_f1": float(precision[best]) if len(f1) else 0.0,
        "recall_at_best_f1": float(recall[best]) if len(f1) else 0.0,
        "conf_at_best_f1": float(conf[order][best]) if len(f1) else 0.0,
    }


def detect_all(detector: Any, images: list[Path]) -> tuple[dict[int, np.ndarray], float]:
    """Run ``detector`` over every image: ``({frame: (N, 6)}, seconds)``."""
    out = {}
    start = time.perf_counter()
    for frame, path in enumerate(images, start=1):
        img = cv2.imread(str(path))
        if img is None:
            raise BenchError(f"{path}: unreadable image")
        out[frame] = detector(img)
    return out, time.perf_counter() - start


def ultralytics_val(weights: Path, pets: Path, imgsz: int, work: Path) -> dict[str, float]:
    """Ultralytics ``val`` mAP50 / mAP50-95 of ``weights`` on a YOLO-format view of the whole sequence."""
    from ultralytics import YOLO

    from motops.data.mot import read_mot_sequence, read_seqinfo
    from motops.evaluation.sweep import _scored_gt
    from motops.training.detector import _local_fonts_only

    info = read_seqinfo(pets / "seqinfo.ini")
    _, gt = read_mot_sequence(pets)
    scored, _ = _scored_gt(gt)
    img_dir, lab_dir = work / "yolo" / "images" / "val", work / "yolo" / "labels" / "val"
    img_dir.mkdir(parents=True)
    lab_dir.mkdir(parents=True)
    W, H = info.width, info.height
    by_frame = {f: g for (f,), g in scored.group_by("frame")}
    for frame, rel in enumerate(info.frame_files()[:FRAMES], start=1):
        (img_dir / Path(rel).name).symlink_to((pets / rel).resolve())
        lines = []
        if frame in by_frame:
            for x, y, w, h in by_frame[frame].select("left", "top", "width", "height").iter_rows():
                x1, y1 = max(x - 1, 0.0), max(y - 1, 0.0)  # MOT pixels are 1-based
                x2, y2 = min(x - 1 + w, W), min(y - 1 + h, H)
                if x2 - x1 >= 1 and y2 - y1 >= 1:
                    lines.append(f"0 {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} "
                                 f"{(y2 - y1) / H:.6f}\n")
        (lab_dir / (Path(rel).stem + ".txt")).write_text("".join(lines))
    data_yaml = work / "yolo" / "data.yaml"
    data_yaml.write_text(f"path: {work / 'yolo'}\ntrain: images/val\nval: images/val\nnames:\n  0: person\n")
    with _local_fonts_only():
        metrics = YOLO(str(weights), task="detect").val(data=str(data_yaml), imgsz=imgsz, batch=8, device="cpu",
                                                        plots=False, verbose=False, project=str(work / "val"),
                                                        name="val", exist_ok=True, workers=0)
    return {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map)}


def measure_base(weights: Path, pets: Path, gt: pl.DataFrame, images: list[Path], imgsz: int,
                 work: Path) -> dict[str, Any]:
    """Detector scores of a ``.pt`` checkpoint."""
    from motops.runtime.backends import load_detector

    det = load_detector(weights, backend="torch", imgsz=imgsz, conf=LOW_CONF, device="cpu")
    dets, seconds = detect_all(det, images)
    row: dict[str, Any] = {"name": "base", "path": str(weights), "imgsz": [imgsz, imgsz], **ap50(dets, gt),
                           "detect_ms": 1000 * seconds / len(images)}
    row["ultralytics_val"] = ultralytics_val(weights, pets, imgsz, work)
    return row


def measure_engine(folder: Path, pets: Path, gt: pl.DataFrame, images: list[Path], work: Path) -> dict[str, Any]:
    """Detector AP50 and TrackEval scores of an engine bundle on the whole sequence."""
    from motops.runtime.bundle import load_bundle

    engine = load_bundle(folder, backend="onnxruntime", device="cpu")
    low = copy.copy(engine.detector)
    low.conf = LOW_CONF
    dets, seconds = detect_all(low, images)
    row: dict[str, Any] = {"name": "engine", "path": str(folder), "imgsz": list(engine.imgsz),
                           "model_version": engine.manifest.get("model_version"),
                           "chosen": engine.chosen, **ap50(dets, gt), "detect_ms": 1000 * seconds / len(images)}
    out = work / "track"
    summary = engine.track(str(pets / "img1"), out_dir=out, write_video=False, progress=False)
    tracks = pl.read_csv(out / "tracks.txt", has_header=False, new_columns=[
        "frame", "id", "left", "top", "width", "height", "conf", "x", "y", "z"]).select(
        "frame", "id", "left", "top", "width", "height", "conf")
    row.update(score_sequence(pets, tracks))
    row["fps"] = summary["fps"]
    row["tracks"] = summary["tracks"]
    row["tracker"] = engine.tracker
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pets", type=Path, default=DEFAULT_PETS, help="the built PETS09-S2L1 sequence folder")
    ap.add_argument("--base", type=Path, default=ROOT / "models" / "base" / "detector.pt")
    ap.add_argument("--base-imgsz", type=int, default=416, help="the default run's detector.imgsz")
    ap.add_argument("--engine", type=Path, default=ROOT / "models" / "release")
    ap.add_argument("--rows", default="base,engine", help="comma-separated: base, engine (default both)")
    ap.add_argument("--label", default="", help="a name for this measurement (before, after, ...)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "zero_shot.json")
    args = ap.parse_args(argv)
    which = [r.strip() for r in args.rows.split(",") if r.strip()]
    try:
        if not which or set(which) - {"base", "engine"}:
            raise BenchError(f"--rows {args.rows!r}: expected base, engine or both")
        pets = find_pets(args.pets, FRAMES)
        for path, what in ((args.base, "base"), (args.engine / "manifest.json", "engine")):
            if what in which and not path.is_file():
                raise BenchError(f"--{what} {path}: not found")
    except BenchError as exc:
        print(f"zero_shot: {exc}", file=sys.stderr)
        return 2
    from motops.data.mot import read_mot_sequence, read_seqinfo

    info = read_seqinfo(pets / "seqinfo.ini")
    images = [pets / rel for rel in info.frame_files()[:FRAMES]]
    _, gt = read_mot_sequence(pets)
    cpu = cpu_info()
    flags = ", ".join(k for k, v in cpu["flags"].items() if v)
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; {flags}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="motops-zero-shot-") as tmp:
        work = Path(tmp)
        if "base" in which:
            rows.append(measure_base(args.base.resolve(), pets, gt, images, args.base_imgsz, work / "base"))
            rows[-1]["commit"] = git_commit(args.base.resolve().parent)
            print(f"[base] AP50 {rows[-1]['ap50']:.3f} (ultralytics val {rows[-1]['ultralytics_val']['map50']:.3f})",
                  flush=True)
        if "engine" in which:
            rows.append(measure_engine(args.engine.resolve(), pets, gt, images, work / "engine"))
            rows[-1]["commit"] = git_commit(args.engine.resolve().parent)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'row':8s} {'imgsz':>9s} {'AP50':>6s} {'UL mAP50':>8s} {'HOTA':>6s} {'MOTA':>6s} {'IDF1':>6s} "
          f"{'IDSW':>5s} {'FPS':>6s}")
    for r in rows:
        ul = r.get("ultralytics_val", {}).get("map50")
        fps = f"{r['fps']:.1f}" if "fps" in r else "-"
        cells = [f"{r[k]:6.3f}" if k in r else f"{'-':>6s}" for k in ("hota", "mota", "idf1")]
        print(f"{r['name']:8s} {'x'.join(map(str, r['imgsz'])):>9s} {r['ap50']:6.3f} "
              f"{(f'{ul:.3f}' if ul is not None else '-'):>8s} {' '.join(cells)} "
              f"{r.get('idsw', '-'):>5} {fps:>6s}")
    result = {"label": args.label, "sequence": str(pets), "frames": FRAMES, "cpu": cpu, "rows": rows,
              "ap_definition": "IoU 0.5, greedy by score, distractor rows ignored, 101-point interpolation",
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
