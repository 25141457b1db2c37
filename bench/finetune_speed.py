"""Finetuning speed on real footage: val mAP50 after each epoch, one run per base checkpoint.

Does a better base make finetuning on a user's real footage faster? Every ``--base`` is
finetuned the same way on PETS09-S2L1 (built once with ``../shared/data/pets09/build.py``),
split by time as ``bench/real_footage.py`` splits it: frames 1-400 train (every frame),
401-530 val. Training is the project's own :func:`motops.training.detector.train_detector`
with the repository's ``detector`` params except what makes the runs comparable: a fixed
number of epochs (``--epochs``, no time budget, no early stop), every layer trained
(``freeze: 0``: on PETS09 the frozen backbone stalls), and ``keep_better_start`` on so the
starting weights are scored on val too (epoch 0). Same imgsz, lr0, seed and augmentations
for every base, measured in the same run.

Prints the CPU and its vector instruction sets and a table (val mAP50 per epoch, one row per
base); writes JSON.

Usage:
    python bench/finetune_speed.py --pets /tmp/pets09/PETS09-S2L1-DEV \
        --base models/base/detector_v1.pt --base models/base/detector.pt --epochs 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_footage import (  # noqa: E402
    DEFAULT_PETS,
    TRAIN_SEQ,
    VAL_SEQ,
    BenchError,
    cpu_info,
    find_pets,
    split_sequence,
)

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FRAMES = (1, 400)
VAL_FRAMES = (401, 530)


def pets_dataset(pets: Path, work: Path) -> Path:
    """The YOLO set of PETS09-S2L1: every frame of 1-400 as train, 401-530 as val; returns ``data.yaml``."""
    from motops.data.mot import read_mot_dataset
    from motops.data.prepare import build_yolo_dataset

    raw = work / "raw"
    split_sequence(pets, raw, TRAIN_SEQ, TRAIN_FRAMES)
    split_sequence(pets, raw, VAL_SEQ, VAL_FRAMES)
    sequences, annotations = read_mot_dataset(raw)
    return build_yolo_dataset(sequences, annotations, train=[TRAIN_SEQ], val=[VAL_SEQ], out_dir=work / "yolo",
                              clip_length=1, clip_stride=1, min_visibility=0.0, progress=False)  # fmt: skip


def finetune(base: Path, data_yaml: Path, epochs: int, work: Path) -> dict[str, Any]:
    """Finetune ``base`` for exactly ``epochs`` epochs; val mAP50 of the start and after each epoch."""
    from motops.config import load_params
    from motops.training.detector import train_detector

    params = load_params(ROOT / "params.yaml")
    det = params.detector.model_copy(update={"weights": str(base), "epochs": epochs, "time_budget_min": None,
                                             "patience": epochs + 1, "freeze": 0, "keep_better_start": True,
                                             "device": "cpu"})  # fmt: skip
    t0 = time.perf_counter()
    metrics = train_detector(data_yaml, det, params.prepare.augment, out_dir=work / "out",
                             metrics_path=work / "metrics.json", progress=False)  # fmt: skip
    curve = [metrics["start_scores"]["map50"]] + [h["metrics/mAP50(B)"] for h in metrics["history"]]
    return {"base": str(base.relative_to(ROOT) if base.is_relative_to(ROOT) else base), "imgsz": det.imgsz,
            "lr0": det.lr0, "epochs": epochs, "map50_per_epoch": curve,
            "map50_95_per_epoch": [metrics["start_scores"]["map50_95"]]
            + [h["metrics/mAP50-95(B)"] for h in metrics["history"]],
            "minutes": round((time.perf_counter() - t0) / 60, 2), "images_train": metrics["images_train"],
            "images_val": metrics["images_val"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pets", type=Path, default=DEFAULT_PETS, help="the built PETS09-S2L1 sequence folder")
    ap.add_argument("--base", type=Path, action="append", required=True, help="a base checkpoint (repeat)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per base, fixed (no budget, no early stop)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "finetune_speed.json")
    args = ap.parse_args(argv)
    try:
        pets = find_pets(args.pets, VAL_FRAMES[1])
        for base in args.base:
            if not base.is_file():
                raise BenchError(f"--base {base}: not found")
    except BenchError as exc:
        print(f"finetune_speed: {exc}", file=sys.stderr)
        return 2
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; {', '.join(k for k, v in cpu['flags'].items() if v)}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="motops-finetune-speed-") as tmp:
        work = Path(tmp)
        data_yaml = pets_dataset(pets, work)
        for i, base in enumerate(args.base):
            rows.append(finetune(base.resolve(), data_yaml, args.epochs, work / f"run{i}"))
            print(f"[{rows[-1]['base']}] val mAP50 per epoch: "
                  f"{' '.join(f'{v:.3f}' for v in rows[-1]['map50_per_epoch'])}", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'base':32s} " + " ".join(f"{f'ep{e}':>6s}" for e in range(args.epochs + 1)) + f" {'min':>5s}")
    for r in rows:
        print(f"{r['base']:32s} " + " ".join(f"{v:6.3f}" for v in r["map50_per_epoch"]) + f" {r['minutes']:5.1f}")
    result = {"sequence": str(pets), "train_frames": TRAIN_FRAMES, "val_frames": VAL_FRAMES, "cpu": cpu,
              "rows": rows, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
