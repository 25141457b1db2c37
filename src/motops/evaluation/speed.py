"""Frame rates of two engines measured in the same run, on the same frames, interleaved.

The FPS part of a gate compares a challenger with the champion. The champion's ``fps`` in the
registry was measured in another run, perhaps on another day or machine; on a shared machine
the same engine measures 20-30 % apart between runs, so that comparison refuses good engines
(and passes slow ones) on noise. :func:`paired_fps` times both engines in one process, on the
same frames, alternating which goes first in each round, and keeps each engine's median.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from motops.errors import ConfigError

logger = logging.getLogger(__name__)


def paired_fps(
    bundles: Mapping[str, str | Path],
    source: str | Path,
    *,
    backend: str = "auto",
    max_frames: int | None = 150,
    rounds: int = 3,
    warmup_frames: int = 5,
    progress: bool = False,
) -> dict[str, Any]:
    """End-to-end tracking FPS of each bundle, measured in turns on the same frames.

    Each round tracks ``source`` once with every bundle (as ``motops track --engine`` would,
    with the bundle's own ``tracker.yaml``); the order is reversed every other round so that
    neither engine always runs on a warmer or cooler machine.

    Args:
        bundles: Name (``challenger``, ``champion``) to bundle folder.
        source: A folder of frames or a video, the same for every bundle.
        backend: The detector backend of every bundle (``load_bundle(backend=)``).
        max_frames: Frames per run (``None``: all).
        rounds: Runs per bundle; the median is kept.
        warmup_frames: Frames each detector sees before the first timed run.
        progress: Show a progress bar per run.

    Returns:
        ``{"fps": {name: median fps}, "runs": {name: [fps per round]}, "frames": frames per run,
        "rounds": rounds}``.

    Raises:
        ConfigError: Fewer than two bundles, ``rounds < 1`` or ``max_frames < 1``.
        BundleError: A bundle is missing or altered (from ``load_bundle``).
    """
    from motops.runtime.bundle import load_bundle
    from motops.runtime.video import open_source

    if len(bundles) < 2:
        raise ConfigError(f"paired_fps: {len(bundles)} bundle(s) given; expected two or more to compare")
    if rounds < 1:
        raise ConfigError(f"paired_fps: rounds={rounds}; expected 1 or more")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"paired_fps: max_frames={max_frames}; expected 1 or more, or None for all")
    engines = {name: load_bundle(path, backend=backend) for name, path in bundles.items()}
    if warmup_frames:
        with open_source(source) as frames:
            warm = [frame for _, (_, frame) in zip(range(warmup_frames), frames, strict=False)]
        for engine in engines.values():
            for frame in warm:
                engine.detector(frame)
    names = list(engines)
    runs: dict[str, list[float]] = {name: [] for name in names}
    frames_run = 0
    with tempfile.TemporaryDirectory(prefix="motops-fps-") as tmp:
        for r in range(rounds):
            for name in names if r % 2 == 0 else reversed(names):
                summary = engines[name].track(source, out_dir=Path(tmp) / f"{name}-{r}", write_video=False,
                                              max_frames=max_frames, progress=progress)
                runs[name].append(float(summary["fps"]))
                frames_run = int(summary["frames"])
    fps = {name: round(statistics.median(values), 3) for name, values in runs.items()}
    logger.info("same-run FPS over %d frames, %d rounds: %s", frames_run, rounds,
                ", ".join(f"{n} {v:.2f}" for n, v in fps.items()))
    return {"fps": fps, "runs": {n: [round(v, 3) for v in vs] for n, vs in runs.items()}, "frames": frames_run,
            "rounds": rounds}
