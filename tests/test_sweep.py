"""The confidence-threshold sweep: PR counting, the choice of thresholds, and its plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from motops.data.mot import read_mot_sequence, read_seqinfo
from motops.evaluation.plots import plot_sweep
from motops.evaluation.simulate import simulate_detections
from motops.evaluation.sweep import NEW_TRACK_MARGIN, choose_threshold, detection_pr, sweep_thresholds

MOT17_09 = Path(__file__).resolve().parents[2] / "shared" / "data" / "mot17" / "MOT17-09"
if not MOT17_09.is_dir():
    MOT17_09 = Path("/work/shared/data/mot17/MOT17-09")


def _gt(rows):
    return pl.DataFrame(rows, schema=["frame", "id", "left", "top", "width", "height", "conf", "class"], orient="row")


def test_detection_pr_counts_greedy_matches_per_threshold():
    gt = {"s": _gt([(1, 1, 0, 0, 10, 20, 1, 1), (1, 2, 50, 0, 10, 20, 1, 1), (1, 3, 100, 0, 10, 20, 0, 12)])}
    dets = {"s": {1: np.array([
        [0, 0, 10, 20, 0.9, 0],      # matches id 1
        [200, 0, 210, 20, 0.8, 0],   # nothing there: false positive
        [1, 0, 11, 20, 0.7, 0],      # duplicate of id 1: false positive
        [100, 0, 110, 20, 0.6, 0],   # on a distractor (reflection, consider 0): ignored
    ])}}
    table = detection_pr(dets, gt, [0.85, 0.75, 0.65, 0.5])
    rows = {r["threshold"]: r for r in table.iter_rows(named=True)}
    assert (rows[0.85]["tp"], rows[0.85]["fp"], rows[0.85]["fn"]) == (1, 0, 1)
    assert rows[0.85]["precision"] == 1.0 and rows[0.85]["recall"] == 0.5
    assert (rows[0.75]["tp"], rows[0.75]["fp"]) == (1, 1)
    assert (rows[0.65]["tp"], rows[0.65]["fp"]) == (1, 2)
    assert (rows[0.5]["tp"], rows[0.5]["fp"]) == (1, 2)  # the distractor hit is not a false positive


@pytest.mark.slow
def test_sweep_on_simulated_real_motion_picks_the_best_threshold_and_plots(tmp_path):
    _, gt = read_mot_sequence(MOT17_09)
    info = read_seqinfo(MOT17_09 / "seqinfo.ini")
    dets = simulate_detections(gt, seed=1, image_size=(info.width, info.height), num_frames=info.length)
    thresholds = [0.2, 0.4, 0.6, 0.8]
    result = sweep_thresholds({"MOT17-09": dets}, {"MOT17-09": gt}, {"MOT17-09": info},
                              thresholds=thresholds, tracker="bytetrack", metric="idf1", progress=False)
    table = result.table
    print(table)
    assert table["threshold"].to_list() == thresholds
    # recall can only fall and precision (here) only rise as the threshold rises
    assert all(np.diff(table["recall"].to_numpy()) <= 1e-12)
    assert table["precision"][-1] >= table["precision"][0]
    assert result.best_threshold == table.sort("idf1", descending=True)["threshold"][0]
    assert result.best.combined.idf1 == pytest.approx(table["idf1"].max())
    assert result.tracker_params["track_high_thresh"] == result.best_threshold
    assert result.tracker_params["new_track_thresh"] == pytest.approx(min(1.0, result.best_threshold
                                                                          + NEW_TRACK_MARGIN))
    # the scores really depend on the threshold: 0.8 drops most occluded people
    assert table["idf1"].max() - table["idf1"].min() > 0.02

    png = plot_sweep(table, tmp_path / "sweep.png", metric="idf1", best_threshold=result.best_threshold)
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_near_ties_go_to_the_higher_threshold():
    # synth-04 with the issue-17 base: 0.3 scored 0.009 IDF1 above 0.4; the extra low-confidence
    # boxes cost a new sequence its MOTA, so within the tolerance the higher threshold wins
    table = pl.DataFrame({"threshold": [0.2, 0.3, 0.4, 0.5], "idf1": [0.659, 0.672, 0.663, 0.620]})
    assert choose_threshold(table, "idf1") == 0.3
    assert choose_threshold(table, "idf1", 0.01) == 0.4
    assert choose_threshold(table, "idf1", 0.06) == 0.5
    with pytest.raises(ValueError, match="evaluate.sweep_tolerance"):
        choose_threshold(table, "idf1", -0.1)


def test_sweep_refuses_no_thresholds():
    with pytest.raises(ValueError, match="no thresholds"):
        sweep_thresholds({}, {}, {}, thresholds=[])
