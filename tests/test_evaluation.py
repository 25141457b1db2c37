"""TrackEval scoring, the diagnosis and the simulated detector."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from motops.data.mot import read_mot_sequence, read_seqinfo, write_mot_txt
from motops.evaluation import (
    EvalResult,
    EvaluationError,
    SequenceMetrics,
    diagnose,
    needs_preprocessing,
    score,
    simulate_detections,
)
from motops.evaluation import trackeval_adapter as ta
from motops.runtime import make_tracker

MOT17_09 = Path("/work/shared/data/mot17/MOT17-09")
needs_mot17 = pytest.mark.skipif(not MOT17_09.is_dir(), reason=f"real MOT17 ground truth not at {MOT17_09}")

#: Classes a tracker never outputs and MOT preprocessing does not forgive (occluders).
OCCLUDER_CLASSES = (9, 10, 11, 13)


def _tiny_gt(frames: int = 20) -> pl.DataFrame:
    """Three pedestrians walking in parallel lanes, never overlapping."""
    rows = []
    for track in (1, 2, 3):
        for f in range(1, frames + 1):
            rows.append((f, track, 10.0 + 4.5 * f, 150.0 * track, 40.0, 100.0, 1.0, 1, 1.0))
    return pl.DataFrame(
        rows, schema=["frame", "id", "left", "top", "width", "height", "conf", "class", "visibility"], orient="row"
    )


def _assert_perfect(m: SequenceMetrics) -> None:
    for name in ("hota", "deta", "assa", "mota", "motp", "idf1"):
        assert getattr(m, name) == pytest.approx(1.0, abs=1e-6), name
    assert m.idsw == 0
    assert m.frag == 0
    assert m.fp == 0 and m.fn == 0


# ----------------------------------------------------------------- ground truth against itself


@needs_mot17
def test_mot17_gt_scored_against_itself_is_perfect_with_preprocessing():
    _, gt = read_mot_sequence(MOT17_09)
    # distractors (static people, reflections, ...) stay in: preprocessing must forgive them
    results = gt.filter(~pl.col("class").is_in(OCCLUDER_CLASSES))
    assert needs_preprocessing({"MOT17-09": gt})

    result = score(MOT17_09, {"MOT17-09": results})

    assert isinstance(result, EvalResult)
    assert result.preprocessed
    _assert_perfect(result.sequences["MOT17-09"])
    _assert_perfect(result.combined)
    pedestrians = gt.filter((pl.col("class") == 1) & (pl.col("conf") == 1))
    assert result.combined.gt_ids == pedestrians["id"].n_unique() == result.combined.pred_ids
    assert result.combined.gt_dets == pedestrians.height
    assert result.combined.mt == result.combined.gt_ids and result.combined.ml == 0

    # without preprocessing the distractor boxes are false positives
    forced = score(MOT17_09, {"MOT17-09": results}, preprocess=False)
    assert not forced.preprocessed
    assert forced.combined.fp > 0
    assert forced.combined.mota < 1.0 - 1e-3


def test_tiny_gt_scored_against_itself_is_perfect():
    gt = _tiny_gt()
    result = score({"tiny": gt}, {"tiny": gt.drop("class", "visibility")}, {"tiny": 20})

    assert not result.preprocessed
    _assert_perfect(result.sequences["tiny"])
    assert (result.combined.gt_ids, result.combined.pred_ids) == (3, 3)
    assert result.to_frame().height == 2
    assert "no dominant failure" in diagnose(result.sequences["tiny"])


# ----------------------------------------------------------------- identity switches


def _with_id_switches(gt: pl.DataFrame, k: int, from_frame: int = 10) -> pl.DataFrame:
    """Results with exactly ``k`` CLEAR identity switches.

    Swapping the ids of two tracks from a frame on switches *both* GT
    trajectories (2 IDSW); giving one track a fresh id from a frame on switches
    one (1 IDSW). ``k`` = 2 * swaps + relabels.
    """
    swaps, relabels = divmod(k, 2)
    assert swaps <= 1, "the tiny table has three tracks: at most one swap plus one relabel"
    later = pl.col("frame") >= from_frame
    new_id = pl.col("id")
    if swaps:
        new_id = (
            pl.when(later & (pl.col("id") == 1)).then(2).when(later & (pl.col("id") == 2)).then(1).otherwise(new_id)
        )
    if relabels:
        new_id = pl.when(later & (pl.col("id") == 3)).then(99).otherwise(new_id)
    return gt.with_columns(new_id.alias("id"))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_constructed_id_switches_are_counted_exactly(k):
    gt = _tiny_gt()
    result = score({"tiny": gt}, {"tiny": _with_id_switches(gt, k)}, {"tiny": 20})

    m = result.sequences["tiny"]
    assert m.idsw == k
    assert m.idf1 < 1.0 - 1e-3
    assert m.assa < 1.0 - 1e-3
    assert m.deta == pytest.approx(1.0, abs=1e-6)  # boxes are untouched: only association suffers


# ----------------------------------------------------------------- refused input


def test_missing_sequence_in_results_is_named():
    gt = _tiny_gt()
    with pytest.raises(EvaluationError, match="no results for sequence.*tiny-b"):
        score({"tiny-a": gt, "tiny-b": gt}, {"tiny-a": gt}, {"tiny-a": 20, "tiny-b": 20})


def test_missing_results_file_is_named(tmp_path):
    gt_root = tmp_path / "gt"
    for name in ("SEQ-A", "SEQ-B"):
        write_mot_txt(gt_root / name / "gt" / "gt.txt", _tiny_gt())
        (gt_root / name / "seqinfo.ini").write_text(
            f"[Sequence]\nname={name}\nimDir=img1\nframeRate=30\nseqLength=20\nimWidth=640\nimHeight=640\nimExt=.jpg\n"
        )
    results = tmp_path / "results"
    write_mot_txt(results / "SEQ-A.txt", _tiny_gt())
    with pytest.raises(EvaluationError, match=r"SEQ-B\.txt"):
        score(gt_root, results)

    write_mot_txt(results / "SEQ-B.txt", _tiny_gt())
    assert score(gt_root, results).combined.idf1 == pytest.approx(1.0)


def test_frames_beyond_seq_length_are_refused_naming_sequence_and_file(tmp_path):
    gt = _tiny_gt()
    with pytest.raises(EvaluationError, match=r"frame 20 is outside 1\.\.19.*'tiny'"):
        score({"tiny": gt.filter(pl.col("frame") < 20)}, {"tiny": gt}, {"tiny": 19})

    path = tmp_path / "tiny.txt"
    write_mot_txt(path, gt)
    from motops.data.mot import read_mot_txt

    results = read_mot_txt(path, sequence="tiny", min_columns=6)
    with pytest.raises(EvaluationError, match=rf"{path}:\d+: frame 20"):
        score({"tiny": gt.filter(pl.col("frame") < 20)}, {"tiny": results}, {"tiny": 19})


def test_duplicate_ids_in_a_frame_and_unknown_sequences_are_refused():
    gt = _tiny_gt()
    doubled = pl.concat([gt, gt.filter(pl.col("frame") == 5)])
    with pytest.raises(EvaluationError, match="id 1 appears more than once in frame 5"):
        score({"tiny": gt}, {"tiny": doubled}, {"tiny": 20})
    with pytest.raises(EvaluationError, match="other.*no ground truth"):
        score({"tiny": gt}, {"tiny": gt, "other": gt}, {"tiny": 20})
    with pytest.raises(EvaluationError, match="no sequence length for sequence 'tiny'"):
        score({"tiny": gt}, {"tiny": gt})


# ----------------------------------------------------------------- diagnosis


def _metrics(**overrides) -> SequenceMetrics:
    base = dict(
        sequence="S",
        hota=0.7,
        deta=0.7,
        assa=0.7,
        mota=0.75,
        motp=0.8,
        idf1=0.74,
        idsw=2,
        frag=3,
        mt=8,
        ml=0,
        gt_ids=10,
        pred_ids=11,
        fp=5,
        fn=5,
        gt_dets=1000,
        pred_dets=1000,
    )
    base.update(overrides)
    return SequenceMetrics(**base)


def test_diagnose_rules():
    assert diagnose(_metrics()).endswith("no dominant failure")
    assert "-> association" in diagnose(_metrics(idf1=0.75 - ta.ASSOCIATION_GAP - 0.05))
    assert "-> detector" in diagnose(_metrics(deta=ta.LOW_DETA - 0.01, idf1=0.2))
    assert "-> detector" in diagnose(_metrics(fn=int(1000 * ta.HIGH_MISS_FRACTION) + 10))
    assert "-> fragmentation" in diagnose(_metrics(frag=int(10 * ta.FRAG_PER_TRACK) + 5))
    assert "id switches per GT track" in diagnose(_metrics(idsw=int(10 * ta.IDSW_PER_TRACK) + 5))
    assert "-> no tracks" in diagnose(_metrics(pred_ids=0))
    assert diagnose(_metrics()).startswith("S: HOTA 0.700")


# ----------------------------------------------------------------- simulated detector


def test_simulate_detections_is_deterministic_per_seed():
    gt = _tiny_gt()
    a = simulate_detections(gt, seed=7)
    b = simulate_detections(gt, seed=7)
    c = simulate_detections(gt, seed=8)
    assert sorted(a) == list(range(1, 21))
    assert all(np.array_equal(a[f], b[f]) for f in a)
    assert not all(a[f].shape == c[f].shape and np.array_equal(a[f], c[f]) for f in a)
    assert all(d.shape[1] == 6 and d.dtype == np.float64 for d in a.values())


def test_simulate_detections_misses_more_at_low_visibility_and_ignores_non_pedestrians():
    frames = 400
    rows = []
    for f in range(1, frames + 1):
        rows.append((f, 1, 100.0, 100.0, 50.0, 120.0, 1.0, 1, 1.0))  # visible pedestrian
        rows.append((f, 2, 400.0, 100.0, 50.0, 120.0, 1.0, 1, 0.15))  # occluded pedestrian
        rows.append((f, 3, 700.0, 100.0, 150.0, 80.0, 0.0, 3, 1.0))  # a car: never a person detection
    gt = pl.DataFrame(
        rows, schema=["frame", "id", "left", "top", "width", "height", "conf", "class", "visibility"], orient="row"
    )
    dets = simulate_detections(gt, seed=0, jitter=0.0, fp_rate=0.0, distractor_rate=0.0, image_size=(1000, 400))
    stacked = np.concatenate(list(dets.values()))
    visible = int(np.sum(stacked[:, 0] == 100.0))
    occluded = int(np.sum(stacked[:, 0] == 400.0))
    assert stacked.shape[0] == visible + occluded  # nothing on the car, no false positives
    assert visible > 0.9 * frames
    assert occluded < 0.6 * frames
    assert occluded < visible - 0.3 * frames
    # occluded people also get lower confidence
    assert stacked[stacked[:, 0] == 400.0, 4].mean() < stacked[stacked[:, 0] == 100.0, 4].mean() - 0.2


# ----------------------------------------------------------------- trackers on real motion


def _tracks_table(per_frame: dict[int, np.ndarray]) -> pl.DataFrame:
    """(M, >=6) [x1, y1, x2, y2, id, conf, ...] arrays per frame -> a results table."""
    parts = [
        np.column_stack([np.full(len(t), f), t[:, 4], t[:, 0], t[:, 1], t[:, 2] - t[:, 0], t[:, 3] - t[:, 1], t[:, 5]])
        for f, t in per_frame.items()
        if len(t)
    ]
    data = np.concatenate(parts) if parts else np.zeros((0, 7))
    table = pl.DataFrame(data, schema=["frame", "id", "left", "top", "width", "height", "conf"], orient="row")
    return table.with_columns(pl.col("frame").cast(pl.Int64), pl.col("id").cast(pl.Int64))


@needs_mot17
@pytest.mark.slow
def test_bytetrack_on_simulated_mot17_09_matches_ultralytics():
    byte_tracker = pytest.importorskip("ultralytics.trackers.byte_tracker", reason="Ultralytics is the peer")

    _, gt = read_mot_sequence(MOT17_09)
    info = read_seqinfo(MOT17_09 / "seqinfo.ini")
    dets = simulate_detections(gt, seed=0, image_size=(info.width, info.height), num_frames=info.length)

    ours = make_tracker("bytetrack", frame_rate=info.fps)
    # The peer gets our default association settings (ByteTrack's published ones; Ultralytics'
    # bytetrack.yaml uses 0.25/0.25 thresholds), so the comparison measures the tracker, not the
    # thresholds. At 30 fps our track_buffer scaling is the identity.
    from motops.runtime import TrackerParams
    from motops.tracking.ultralytics import DetectionView

    defaults = TrackerParams()
    peer = byte_tracker.BYTETracker(
        SimpleNamespace(
            track_high_thresh=defaults.track_high_thresh,
            track_low_thresh=defaults.track_low_thresh,
            new_track_thresh=defaults.new_track_thresh,
            track_buffer=defaults.track_buffer,
            match_thresh=defaults.match_thresh,
            fuse_score=defaults.fuse_score,
        )
    )
    ours_out = {f: np.asarray(ours.update(d, None), dtype=np.float64).reshape(-1, 8) for f, d in dets.items()}
    peer_out = {
        f: np.asarray(peer.update(DetectionView(d)), dtype=np.float64).reshape(-1, 8) for f, d in dets.items()
    }

    ours_score = score({"MOT17-09": gt}, {"MOT17-09": _tracks_table(ours_out)}, {"MOT17-09": info}).combined
    peer_score = score({"MOT17-09": gt}, {"MOT17-09": _tracks_table(peer_out)}, {"MOT17-09": info}).combined
    for name, m in (("ours", ours_score), ("Ultralytics", peer_score)):
        print(f"\nMOT17-09 simulated, {name}: IDF1 {m.idf1:.3f} HOTA {m.hota:.3f} MOTA {m.mota:.3f} IDSW {m.idsw}")
    print(diagnose(ours_score))
    assert ours_score.idf1 >= 0.6
    assert ours_score.idf1 >= peer_score.idf1 - 0.02
