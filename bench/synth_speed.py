"""How fast the synthetic footage renders, next to how fast OpenCV decodes the same frames.

Runs on one core (``cv2.setNumThreads(1)``) at the default settings (640x360, the default
``people``/``fps``/``camera`` cycle) and measures, in the same run:

* render only (``render_sequence``, no disk) for every sequence of the default cycle;
* render + JPEG encode (``cv2.imencode`` at the configured quality) for the crowd sequence;
* the peer: ``cv2.imread`` of those JPEG frames from disk (the page cache is warm: they
  were just written), i.e. what any reader of the footage pays per frame anyway.

Prints a table with the ratios to the decode peer and writes JSON.

Usage:
    python bench/synth_speed.py --frames 150 --out bench/results/synth_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from motops.config import SyntheticParams
from motops.data.synthetic import SceneSpec, render_sequence
from motops.runtime.hardware import probe


def _fps(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def run(frames: int) -> dict:
    """Measure and return the results as a JSON-able dict."""
    cv2.setNumThreads(1)
    params = SyntheticParams(frames=frames)
    n_seq = len(params.people)
    rows = []
    total_frames, total_s = 0, 0.0
    for i in range(n_seq):
        spec = SceneSpec.from_params(i, params)
        t0 = time.perf_counter()
        n = sum(1 for _ in render_sequence(i, params))
        dt = time.perf_counter() - t0
        total_frames, total_s = total_frames + n, total_s + dt
        rows.append(
            {
                "name": f"render {spec.name} ({spec.people} people, {spec.fps:g} fps, {spec.camera})",
                "fps": _fps(n, dt),
                "frames": n,
            }
        )
    rows.append(
        {"name": f"render, all {n_seq} default sequences", "fps": _fps(total_frames, total_s), "frames": total_frames}
    )

    crowd = int(np.argmax(params.people))
    spec = SceneSpec.from_params(crowd, params)
    quality = [int(cv2.IMWRITE_JPEG_QUALITY), int(params.jpeg_quality)]
    encoded: list[bytes] = []
    t0 = time.perf_counter()
    for img, _ in render_sequence(crowd, params):
        ok, buf = cv2.imencode(".jpg", img, quality)
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        encoded.append(buf.tobytes())
    dt = time.perf_counter() - t0
    rows.append(
        {"name": f"render + JPEG encode {spec.name} (crowd)", "fps": _fps(len(encoded), dt), "frames": len(encoded)}
    )

    with tempfile.TemporaryDirectory(prefix="synth_speed_") as tmp:
        files = []
        for k, data in enumerate(encoded, start=1):
            path = Path(tmp) / f"{k:06d}.jpg"
            path.write_bytes(data)
            files.append(str(path))
        cv2.imread(files[0])  # warm-up: codec init is not per-frame cost
        t0 = time.perf_counter()
        for path in files:
            if cv2.imread(path) is None:
                raise RuntimeError(f"{path}: cv2.imread failed")
        dt = time.perf_counter() - t0
    decode = {"name": f"peer: cv2.imread of the {spec.name} JPEGs", "fps": _fps(len(files), dt), "frames": len(files)}
    rows.append(decode)
    for r in rows:
        r["ratio_to_decode"] = r["fps"] / decode["fps"]
    return {
        "benchmark": "synth_speed",
        "width": params.width,
        "height": params.height,
        "frames_per_sequence": frames,
        "threads": 1,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu": probe().isa(),
        "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per sequence (default 150)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/synth_speed.json"), help="JSON output path")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames: expected at least 2")
    result = run(args.frames)
    width = max(len(r["name"]) for r in result["results"])
    print(f"CPU: {result['cpu']}")
    print(f"{result['width']}x{result['height']}, {args.frames} frames/sequence, 1 thread, OpenCV {result['opencv']}")
    print(f"{'measurement':<{width}}  {'frames/s':>9}  {'x decode':>8}")
    for r in result["results"]:
        print(f"{r['name']:<{width}}  {r['fps']:>9.1f}  {r['ratio_to_decode']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
