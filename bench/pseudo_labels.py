"""Retraining on unlabelled footage: what the champion's pseudo-labels are worth, on PETS09-S2L1.

The footage (``../shared/data/pets09/``, built by its ``build.py``) is split by time:

* frames ``--labelled`` (1-200): labelled by people, ``PETS09-S2L1-train``;
* frames ``--unlabelled`` (201-400): new footage that arrives unlabelled, as a folder of frames
  with ``fps.txt`` (what a user drops into the inbox);
* frames ``--val`` (401-530): ``PETS09-S2L1-val``, the labelled val span of every row.

Rows, one run, each the motops stages (ingest ... evaluate, ``bench/real_footage.py``'s
``run_motops``) with ``params.yaml`` as it is:

* ``labelled only``: trains on 1-200. Its release bundle and ``detector.pt`` are the champion;
* ``labelled + pseudo-labelled``: the champion labels 201-400 (``motops.pseudo`` with
  ``pseudo_labels`` as in ``params.yaml``: forward and backward tracking, interpolation,
  consistency filter; uncertain boxes flag 0), and the pipeline trains on 1-200 plus those
  (validated on 401-530 only). The same frames are also labelled at ``--larger-imgsz`` from the
  champion's ``detector.pt``, measured only (speed and quality). The gate (``gates``) decides
  against the champion as the ``gate`` stage would: scores from each row's evaluation, FPS of
  both release bundles timed in turns in this run (``gates.same_run_fps``);
* ``labelled + full gt`` (the ceiling): 201-400 with their real ground truth.

Also measured: the labelling speed and the pseudo-labels against the real ground truth of
201-400 (TrackEval on the certain boxes; precision and recall of the boxes at IoU 0.5).
Prints the CPU and its instruction sets, the table, the share of the IDF1 gap closed, and
writes JSON.

Usage:
    python bench/pseudo_labels.py --pets /tmp/pets09/PETS09-S2L1-DEV     # ~40 min here
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
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_footage import (  # noqa: E402  (the bench next to this file)
    METRICS,
    ROOT,
    TRAIN_SEQ,
    VAL_SEQ,
    BenchError,
    cpu_info,
    find_pets,
    frame_range,
    prepare_work,
    run_motops,
    score_sequence,
    split_sequence,
)

NEW_SEQ = "PETS09-S2L1-new"
DEFAULT_WORK = Path("/tmp/motops-pseudo-labels")
DEFAULT_PETS = Path("/tmp/pets09/PETS09-S2L1-DEV")


def unlabelled_folder(seq: Path, out: Path) -> Path:
    """The frames of the sequence ``seq`` as a folder of images with ``fps.txt`` and no labels."""
    from motops.data.mot import read_seqinfo

    info = read_seqinfo(seq / "seqinfo.ini")
    out.mkdir(parents=True)
    for rel in info.frame_files():
        os.link(seq / rel, out / Path(rel).name)
    (out / "fps.txt").write_text(f"{info.fps:g}\n")
    return out


def box_precision_recall(gt: pl.DataFrame, pred: pl.DataFrame, iou: float = 0.5) -> dict[str, float]:
    """Precision and recall of ``pred`` boxes against ``gt`` boxes, per frame, greedy matching at ``iou``."""
    import numpy as np

    from motops.runtime.matching import iou_matrix

    tp = n_pred = n_gt = 0
    by_frame = {int(k[0]): g for k, g in gt.group_by("frame")}
    for (frame,), rows in pred.group_by("frame"):
        truth = by_frame.get(int(frame))
        n_pred += rows.height
        if truth is None:
            continue

        def xyxy(df: pl.DataFrame) -> np.ndarray:
            a = df.select("left", "top", "width", "height").to_numpy()
            return np.column_stack([a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]])

        m = iou_matrix(xyxy(rows), xyxy(truth))
        while m.size and m.max() >= iou:
            i, j = np.unravel_index(m.argmax(), m.shape)
            tp += 1
            m[i, :] = -1
            m[:, j] = -1
    n_gt = gt.height
    return {"precision": tp / n_pred if n_pred else 0.0, "recall": tp / n_gt if n_gt else 0.0}


def pseudo_label(new_frames: Path, truth_seq: Path, out: Path, champion: Path, overrides: list[str]) -> dict[str, Any]:
    """Label the unlabelled frames with the champion (work folder of the labelled-only row); score them."""
    from motops.config import load_params
    from motops.data.mot import read_mot_sequence
    from motops.pseudo.labeller import load_labeller, pseudo_label_batch

    cfg = load_params(ROOT / "params.yaml", overrides).pseudo_labels
    import cv2

    first = cv2.imread(str(sorted(new_frames.glob("*.jpg"))[0]))
    labeller = load_labeller(champion / "models" / "release", detector_pt=champion / "models" / "detector" / "best.pt",
                             imgsz=cfg.imgsz, conf=cfg.conf, frame_size=(first.shape[1], first.shape[0]))
    record = pseudo_label_batch(new_frames, out, name=NEW_SEQ, labeller=labeller, cfg=cfg,
                                champion="the labelled-only row's engine")
    _, truth = read_mot_sequence(truth_seq)
    _, pseudo = read_mot_sequence(out / NEW_SEQ)
    cols = ["frame", "id", "left", "top", "width", "height"]
    certain = pseudo.filter(pl.col("conf") > 0).select(cols).with_columns(pl.lit(1.0).alias("conf"))
    quality = {"certain_vs_truth": score_sequence(truth_seq, certain),
               "certain_boxes": box_precision_recall(truth, certain),
               "all_boxes": box_precision_recall(truth, pseudo)}
    return {"stats": record["stats"], "review": record["review"], "quality": quality}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2: bad input, named in one line)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pets", type=Path, default=DEFAULT_PETS)
    parser.add_argument("--labelled", type=frame_range, default=(1, 200), metavar="FIRST-LAST")
    parser.add_argument("--unlabelled", type=frame_range, default=(201, 400), metavar="FIRST-LAST")
    parser.add_argument("--val", type=frame_range, default=(401, 530), metavar="FIRST-LAST")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--larger-imgsz", type=int, default=640,
                        help="input width of the second labelling, measured only (speed, quality)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pseudo_labels.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from motops.config import load_params
    from motops.errors import MotopsError
    from motops.evaluation.speed import paired_fps
    from motops.registry.gates import evaluate_gate

    try:
        pets = find_pets(args.pets, args.val[1])
    except (BenchError, MotopsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cpu = cpu_info()
    flags = " ".join(name for name in ("avx2", "avx512_vnni", "amx_int8") if cpu["flags"][name]) or "no avx2"
    print(f"CPU: {cpu['isa']}")
    work = args.work.resolve()
    prepare_work(work)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        labelled = work / "labelled"
        split_sequence(pets, labelled, TRAIN_SEQ, args.labelled)
        val_seq = split_sequence(pets, labelled, VAL_SEQ, args.val)
        truth_root = work / "new-gt"
        truth_seq = split_sequence(pets, truth_root, NEW_SEQ, args.unlabelled)
        new_frames = unlabelled_folder(truth_seq, work / "inbox" / NEW_SEQ)
        base = [{"format": "mot", "path": str(labelled)}]

        def row(name: str, folder: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
            print(f"\n== {name} ==", flush=True)
            result = run_motops(labelled, work / folder, args.overrides, False, sources=sources)
            result["name"] = name
            result["eval"] = json.loads((work / folder / "metrics" / "eval.json").read_text())
            return result

        rows.append(row("labelled only", "A", base))
        print("\n== pseudo-labelling frames "
              f"{args.unlabelled[0]}-{args.unlabelled[1]} with the labelled-only engine ==", flush=True)
        labellings = {}
        for key, sets in (("default", []), ("larger input", [f"pseudo_labels.imgsz={args.larger_imgsz}"])):
            labellings[key] = done = pseudo_label(new_frames, truth_seq, work / f"pseudo-{len(labellings)}",
                                                  work / "A", sets)
            q, st = done["quality"], done["stats"]
            print(f"pseudo-labels ({key}): {st['frames_per_s']} frames/s at {st['imgsz']}; {st['tracks']} tracks "
                  f"({st['stitched']} joins stitched), "
                  f"{st['boxes']} boxes, {st['uncertain_share']:.1%} uncertain; certain boxes vs truth: precision "
                  f"{q['certain_boxes']['precision']:.3f}, recall {q['certain_boxes']['recall']:.3f}, IDF1 "
                  f"{q['certain_vs_truth']['idf1']:.3f}", flush=True)
        rows.append(row("labelled + pseudo-labelled", "B",
                        [*base, {"format": "mot", "path": str(work / "pseudo-0"), "labels": "pseudo"}]))
        rows.append(row("labelled + full gt (ceiling)", "C", [*base, {"format": "mot", "path": str(truth_root)}]))
        # the gate stage's same-run timing: the champion's bundle beside the challenger's, on the val frames
        gates = load_params(ROOT / "params.yaml").gates
        print(f"\n== gate: timing the challenger and the champion in turns ({gates.fps_frames} frames, "
              f"{gates.fps_rounds} rounds each) ==", flush=True)
        same_run = paired_fps({"challenger": work / "B" / "models" / "release",
                               "champion": work / "A" / "models" / "release"}, val_seq,
                              backend=rows[1]["eval"]["backend"], max_frames=gates.fps_frames,
                              rounds=gates.fps_rounds)
        print(f"same run: challenger {same_run['fps']['challenger']:.1f} FPS, champion "
              f"{same_run['fps']['champion']:.1f} FPS (rounds {same_run['runs']})", flush=True)
    except MotopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    total_min = (time.perf_counter() - started) / 60

    champion, challenger = rows[0]["eval"], rows[1]["eval"]
    gate = evaluate_gate(challenger, gates, backend=challenger["backend"], champion=champion, same_run_fps=same_run)
    a, b, c = (r["idf1"] for r in rows)
    closed = (b - a) / (c - a) if c != a else None
    print(f"\n{'row':30s} {'train min':>9s} {'HOTA':>6s} {'MOTA':>6s} {'IDF1':>6s} {'IDSW':>5s} {'FPS':>6s}")
    for r in rows:
        print(f"{r['name']:30s} {r['train_minutes']:9.2f} {r['hota']:6.3f} {r['mota']:6.3f} {r['idf1']:6.3f} "
              f"{r['idsw']:5d} {r['fps']:6.1f}")
    verdict = "PASSED (would ship)" if gate["passed"] else "FAILED (nothing ships): " + "; ".join(gate["failed"])
    print(f"IDF1 gap closed by the pseudo-labels: {'n/a' if closed is None else f'{closed:.0%}'}; "
          f"gate against the champion: {verdict}")
    for r in rows:
        r.pop("eval")
    result = {
        "bench": "pseudo_labels",
        "settings": {"pets": str(pets), "labelled": list(args.labelled), "unlabelled": list(args.unlabelled),
                     "val": list(args.val), "overrides": args.overrides, "total_minutes": total_min,
                     "val_sequence": str(val_seq.name)},
        "machine": {"cpu": cpu, "lscpu_flags": flags, "platform": platform.platform(),
                    "python": sys.version.split()[0]},
        "pseudo_labels": labellings,
        "runs": rows,
        "idf1_gap_closed": closed,
        "gate_vs_champion": gate,
        "gate_same_run_fps": same_run,
        "metrics": list(METRICS),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out} ({total_min:.1f} min in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
