"""Plots people would rather look at than read: the sweep's PR curve and scores per threshold.

Matplotlib with the Agg backend and its bundled DejaVu font: nothing is fetched.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl


def plot_sweep(table: pl.DataFrame, path: str | Path, *, metric: str, best_threshold: float) -> Path:
    """Write a two-panel PNG: detection precision-recall, and HOTA/IDF1/MOTA against the threshold.

    Args:
        table: :attr:`motops.evaluation.sweep.SweepResult.table`.
        path: The PNG to write (folders are created).
        metric: The column the sweep maximised (marked on the right panel).
        best_threshold: The chosen threshold (marked on both panels).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = table.sort("threshold")
    fig, (ax_pr, ax_score) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)

    ax_pr.plot(t["recall"], t["precision"], marker="o", color="tab:blue")
    for thr, rec, prec in zip(t["threshold"], t["recall"], t["precision"], strict=True):
        ax_pr.annotate(f"{thr:.2f}", (rec, prec), textcoords="offset points", xytext=(4, 4), fontsize=7)
    best = t.filter(pl.col("threshold") == best_threshold)
    if len(best):
        ax_pr.scatter(best["recall"], best["precision"], s=120, facecolors="none", edgecolors="tab:red",
                      label=f"chosen {best_threshold:.2f}", zorder=3)
        ax_pr.legend(loc="lower left")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Detections (IoU 0.5)", xlim=(0, 1.02), ylim=(0, 1.02))
    ax_pr.grid(alpha=0.3)

    for column, colour in (("hota", "tab:purple"), ("idf1", "tab:green"), ("mota", "tab:orange")):
        ax_score.plot(t["threshold"], t[column], marker="o", color=colour, label=column.upper(),
                      linewidth=2.5 if column == metric else 1.2)
    ax_score.axvline(best_threshold, color="tab:red", linestyle="--", linewidth=1, label="chosen")
    ax_score.set(xlabel="track_high_thresh (detection confidence)", ylabel="score",
                 title=f"Tracking scores (chosen by {metric.upper()})", ylim=(min(0.0, float(t["mota"].min())), 1.0))
    ax_score.grid(alpha=0.3)
    ax_score.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_fps(summaries: dict, path: str | Path) -> Path:
    """Write a PNG: per val sequence, end-to-end FPS (left) and mean milliseconds per frame by component (right).

    Args:
        summaries: Sequence name to the summary of :func:`motops.runtime.runner.track_source`.
        path: The PNG to write (folders are created).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(summaries)
    fig, (ax_fps, ax_ms) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    ax_fps.barh(names, [summaries[n]["fps"] for n in names], color="tab:blue")
    ax_fps.set(xlabel="frames per second (end to end)", title="Tracking speed on the val sequences")
    ax_fps.grid(alpha=0.3, axis="x")
    left = [0.0] * len(names)
    for comp, colour in (("decode", "tab:gray"), ("detect", "tab:blue"), ("reid", "tab:green"),
                         ("associate", "tab:orange")):
        ms = [1000.0 * summaries[n]["latency_ms"].get(comp, {}).get("total_s", 0.0) / max(summaries[n]["frames"], 1)
              for n in names]
        ax_ms.barh(names, ms, left=left, color=colour, label=comp)
        left = [a + b for a, b in zip(left, ms, strict=True)]
    ax_ms.set(xlabel="ms per frame (mean)", title="Where the time goes")
    ax_ms.legend(loc="lower right", fontsize=8)
    ax_ms.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
