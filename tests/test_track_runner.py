"""The track runner on tiny synthetic footage, with a fake detector that returns the ground truth."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from motops.config import SyntheticParams
from motops.data.synthetic import synthesize
from motops.errors import ConfigError
from motops.runtime.matching import iou_matrix
from motops.runtime.runner import COMPONENTS, SETTINGS, resolve_settings, track_source, tracker_params_from
from motops.runtime.video import SourceError, Trails, draw_tracks, id_colour, open_source

FRAMES = 30
# the tests' ReID is the mean colour of a box: a weak embedding, so appearance may only decide
# for boxes that already overlap well (proximity 0.5; the default 0.05 is for a trained ReID)
PARAMS = {"gmc_method": "none", "track_high_thresh": 0.5, "new_track_thresh": 0.6, "proximity_thresh": 0.5}


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 30-frame 320 x 192 sequence at 25 fps, with ``synth-01.mp4`` next to it."""
    root = tmp_path_factory.mktemp("synth")
    params = SyntheticParams(
        sequences=1, frames=FRAMES, width=320, height=192, fps=(25.0,), camera=("static",), people=(4,),
        occluders=0, write_video=True, seed=3,
    )
    synthesize(root, params, progress=False)
    return root


def _gt(footage: Path) -> np.ndarray:
    return np.loadtxt(footage / "synth-01" / "gt" / "gt.txt", delimiter=",", ndmin=2)


class GroundTruthDetector:
    """Returns the visible ground-truth boxes of the frame it is called on (xyxy, conf 0.9, class 0).

    It is called only on detection frames, so it counts its calls to know the frame.
    """

    backend = "fake"

    def __init__(self, gt: np.ndarray, detect_every: int = 1) -> None:
        self.gt = gt[gt[:, 8] > 0.3]
        self.detect_every = detect_every
        self.calls = 0
        self.frame_shapes: list[tuple[int, ...]] = []

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        index = 1 + self.calls * self.detect_every
        self.calls += 1
        self.frame_shapes.append(frame.shape)
        rows = self.gt[self.gt[:, 0] == index]
        xyxy = np.column_stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]])
        return np.column_stack([xyxy, np.full(len(rows), 0.9), np.zeros(len(rows))]).astype(np.float32)


def mean_colour_reid(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A stand-in appearance model: the L2-normalized mean colour of each box."""
    out = []
    for x1, y1, x2, y2 in boxes.astype(int):
        patch = frame[max(y1, 0) : max(y2, y1 + 1), max(x1, 0) : max(x2, x1 + 1)].reshape(-1, 3)
        out.append(patch.mean(axis=0) + 1.0)
    emb = np.asarray(out, dtype=np.float32).reshape(-1, 3)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _read_tracks(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    assert lines, f"{path} is empty"
    assert all(len(line.split(",")) == 10 for line in lines)
    arr = np.loadtxt(path, delimiter=",", ndmin=2)
    assert (arr[:, 7:] == -1).all()
    return arr


def _id_purity(tracks: np.ndarray, gt: np.ndarray) -> tuple[float, dict[int, int]]:
    """Share of matched (IoU > 0.5) boxes whose track id is the majority id of their gt id."""
    votes: dict[int, Counter[int]] = {}
    for f in np.unique(gt[:, 0]):
        g, t = gt[gt[:, 0] == f], tracks[tracks[:, 0] == f]
        if not len(t):
            continue
        gx = np.column_stack([g[:, 2], g[:, 3], g[:, 2] + g[:, 4], g[:, 3] + g[:, 5]])
        tx = np.column_stack([t[:, 2], t[:, 3], t[:, 2] + t[:, 4], t[:, 3] + t[:, 5]])
        iou = iou_matrix(gx, tx)
        for gi, ti in zip(*np.nonzero(iou > 0.5), strict=True):
            if iou[gi].argmax() == ti:
                votes.setdefault(int(g[gi, 1]), Counter())[int(t[ti, 1])] += 1
    total = sum(sum(c.values()) for c in votes.values())
    majority = sum(c.most_common(1)[0][1] for c in votes.values())
    return majority / max(total, 1), {g: c.most_common(1)[0][0] for g, c in votes.items()}


def _check_outputs(out: Path, summary: dict, frames: int) -> np.ndarray:
    assert json.loads((out / "summary.json").read_text()) == summary
    for key in ("source", "frames", "wall_seconds", "fps", "latency_ms", "tracks", "detect_every", "backends",
                "detector_calls", "reid_calls", "source_fps", "size", "outputs", "interrupted"):
        assert key in summary, key
    assert summary["frames"] == frames and not summary["interrupted"]
    assert summary["wall_seconds"] > 0 and summary["fps"] > 0
    for comp in (*COMPONENTS, "frame"):
        stats = summary["latency_ms"][comp]
        assert set(stats) == {"p50", "p95", "mean", "count", "total_s"}
        assert 0 <= stats["p50"] <= stats["p95"]
    for comp in ("decode", "associate", "write", "frame"):
        assert summary["latency_ms"][comp]["count"] == frames
    assert summary["latency_ms"]["frame"]["p95"] < 10_000
    tracks = _read_tracks(out / "tracks.txt")
    assert tracks[:, 0].min() >= 1 and tracks[:, 0].max() <= frames
    assert (tracks[:, 4] > 0).all() and (tracks[:, 5] > 0).all()
    assert summary["tracks"] == len(np.unique(tracks[:, 1]))
    if summary["outputs"]["video"]:
        cap = cv2.VideoCapture(str(out / "annotated.mp4"))
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
        count = 0
        while cap.read()[0]:
            count += 1
        cap.release()
        assert count == frames
    return tracks


def test_folder_source_keeps_ids(footage: Path, tmp_path: Path) -> None:
    gt = _gt(footage)
    det = GroundTruthDetector(gt)
    summary = track_source(
        footage / "synth-01", detector=det, reid=mean_colour_reid, tracker="botsort", tracker_params=PARAMS,
        out_dir=tmp_path / "out", progress=False,
    )
    tracks = _check_outputs(tmp_path / "out", summary, FRAMES)
    assert summary["source_fps"] == 25.0 and summary["size"] == [320, 192]
    assert summary["detector_calls"] == det.calls == FRAMES
    assert summary["appearance"] and summary["reid_calls"] > 0
    assert summary["latency_ms"]["reid"]["count"] == summary["reid_calls"]
    assert summary["backends"] == {"detector": "fake", "reid": "function"}
    purity, mapping = _id_purity(tracks, det.gt)
    assert purity >= 0.9  # two people cross behind each other here: at most a brief swap
    assert len(set(mapping.values())) == len(mapping), "two people share a track id"
    assert summary["tracks"] <= len(np.unique(det.gt[:, 1])) + 1


def test_video_source_and_img1_folder(footage: Path, tmp_path: Path) -> None:
    gt = _gt(footage)
    det = GroundTruthDetector(gt)
    summary = track_source(
        footage / "synth-01.mp4", detector=det, tracker="bytetrack", tracker_params=PARAMS,
        out_dir=tmp_path / "video", progress=False,
    )
    tracks = _check_outputs(tmp_path / "video", summary, FRAMES)
    assert det.frame_shapes[0] == (192, 320, 3)
    assert summary["source_fps"] == pytest.approx(25.0) and summary["backends"]["reid"] is None
    assert _id_purity(tracks, det.gt)[0] >= 0.9
    # img1/ takes the frame rate from the seqinfo.ini one level up; max_frames stops early.
    with open_source(footage / "synth-01" / "img1") as src:
        assert (src.fps, src.size, src.length) == (25.0, (320, 192), FRAMES)
    summary = track_source(
        footage / "synth-01" / "img1", detector=GroundTruthDetector(gt), tracker="bytetrack",
        tracker_params=PARAMS, out_dir=tmp_path / "img1", write_video=False, max_frames=12, progress=False,
    )
    assert summary["frames"] == 12 and not (tmp_path / "img1" / "annotated.mp4").exists()
    _check_outputs(tmp_path / "img1", summary, 12)


def test_detect_every_three_calls_detector_on_a_third(footage: Path, tmp_path: Path) -> None:
    gt = _gt(footage)
    det = GroundTruthDetector(gt, detect_every=3)
    summary = track_source(
        footage / "synth-01", detector=det, tracker="bytetrack", tracker_params=PARAMS, detect_every=3,
        out_dir=tmp_path / "skip", progress=False,
    )
    assert det.calls == summary["detector_calls"] == FRAMES // 3
    assert summary["latency_ms"]["detect"]["count"] == FRAMES // 3 and summary["detect_every"] == 3
    tracks = _check_outputs(tmp_path / "skip", summary, FRAMES)
    assert _id_purity(tracks, det.gt)[0] >= 0.9


def test_bad_sources_are_refused(tmp_path: Path) -> None:
    det = GroundTruthDetector(np.zeros((0, 9)))
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        track_source(tmp_path / "missing.mp4", detector=det, out_dir=tmp_path / "o", progress=False)
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    with pytest.raises(SourceError, match="notes.mp4"):
        track_source(fake, detector=det, out_dir=tmp_path / "o", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no image files"):
        open_source(empty)
    with pytest.raises(TypeError, match="track_bufer"):
        track_source(
            _one_frame_folder(tmp_path), detector=det, tracker_params={"track_bufer": 3}, out_dir=tmp_path / "o",
            progress=False,
        )
    assert not (tmp_path / "o").exists(), "nothing is written for a refused run"


def _one_frame_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "000001.png"), np.zeros((64, 96, 3), np.uint8))
    return folder


def test_stream_url_errors_hide_the_password() -> None:
    with pytest.raises(SourceError) as info:
        open_source("rtsp://user:secret@127.0.0.1:1/none")
    assert "secret" not in str(info.value) and "rtsp://user:***@127.0.0.1:1/none" in str(info.value)


def test_draw_tracks_and_trails() -> None:
    frame = np.zeros((100, 160, 3), np.uint8)
    trails = Trails(length=5)
    for step in range(8):
        tracks = np.array([[10 + step, 10, 40 + step, 60, 1, 0.9, 0, 0], [100, 20, 130, 80, 2, 0.8, 0, -1]], np.float32)
        trails.update(tracks)
        out = draw_tracks(frame, tracks, trails)
    assert out.shape == frame.shape and out.any() and not frame.any()
    assert len(trails.points[1]) == 5
    assert id_colour(7) == id_colour(7) and id_colour(1) != id_colour(2)


def test_tracker_params_from_picks_tracker_keys() -> None:
    from motops.config import TrackParams

    picked = tracker_params_from(TrackParams())
    assert "detect_every" not in picked and "tracker" not in picked and picked["track_buffer"] == 30


def test_summary_records_the_settings_used_and_where_each_came_from(footage: Path, tmp_path: Path) -> None:
    det = GroundTruthDetector(_gt(footage), detect_every=2)
    summary = track_source(
        footage / "synth-01", detector=det, tracker="bytetrack", tracker_params={"track_buffer": 45},
        detect_every=2, flow="farneback", out_dir=tmp_path / "out", write_video=False, max_frames=4, progress=False,
        user_settings=["tracker", "track_buffer"], settings_base="bundle models/release",
    )
    assert set(summary["settings"]) == set(SETTINGS)
    assert summary["settings"]["tracker"] == "bytetrack" and summary["settings"]["track_buffer"] == 45
    assert summary["settings"]["detect_every"] == 2 and summary["settings"]["flow"] == "farneback"
    assert summary["settings"]["match_thresh"] == 0.8  # the tracker's own default, as run
    assert summary["settings_from"]["tracker"] == summary["settings_from"]["track_buffer"] == "user"
    assert summary["settings_from"]["flow"] == "bundle models/release"
    with pytest.raises(ValueError, match="user_settings"):
        track_source(footage / "synth-01", detector=det, out_dir=tmp_path / "bad", user_settings=["backend"])
    assert not (tmp_path / "bad").exists()


def test_resolve_settings_applies_explicit_settings_or_refuses_them() -> None:
    from motops.config import TrackParams

    base = TrackParams(with_reid=False).model_dump()
    cfg = resolve_settings(base, {"tracker": "bytetrack", "track_buffer": 60}, has_reid=False, no_reid="-")
    assert cfg["tracker"] == "bytetrack" and cfg["track_buffer"] == 60 and cfg["match_thresh"] == base["match_thresh"]
    on = resolve_settings(base, {"with_reid": True, "appearance_thresh": 0.4}, has_reid=True, no_reid="-")
    assert on["with_reid"] is True and on["appearance_thresh"] == 0.4
    refusals = [
        ({"with_reid": True}, False, "track.with_reid=true: give a ReID model"),
        ({"tracker": "bytetrack", "gmc_method": "none"}, True, "track.gmc_method=none: has no effect: tracker byte"),
        ({"proximity_thresh": 0.6}, True, "track.proximity_thresh=0.6: has no effect: this run computes no appearance"),
        ({"flow": "farneback"}, True, "track.flow=farneback: has no effect: detect_every is 1"),
        ({"track_low_thresh": 0.5, "track_high_thresh": 0.3}, True, "track_low_thresh=0.5 > track_high_thresh=0.3"),
    ]
    for user, has_reid, message in refusals:
        with pytest.raises(ConfigError) as err:
            resolve_settings(base, user, has_reid=has_reid, no_reid="give a ReID model")
        assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="--reid r.onnx: has no effect"):
        resolve_settings(base, {"tracker": "bytetrack", "with_reid": True}, has_reid=True, no_reid="-",
                         labels={"with_reid": "--reid r.onnx"})


def test_prefetch_keeps_order_raises_at_the_failing_frame_and_stops_its_thread() -> None:
    import threading

    from motops.runtime.video import prefetch

    def alive() -> int:
        return sum(t.name == "motops-prefetch" and t.is_alive() for t in threading.enumerate())

    frames = [(i, np.full((4, 4, 3), i, np.uint8)) for i in range(1, 21)]
    got = list(prefetch(iter(frames), depth=3))
    assert [i for i, _ in got] == list(range(1, 21))
    assert all(int(f[0, 0, 0]) == i for i, f in got)

    def broken():
        yield from frames[:5]
        raise SourceError("clip.mp4", "cannot decode frame 6")

    seen = []
    with pytest.raises(SourceError, match="frame 6"):
        for i, _ in prefetch(broken(), depth=2):
            seen.append(i)
    assert seen == [1, 2, 3, 4, 5]

    endless = ((i, frames[0][1]) for i in range(1, 10**9))  # a stream: the reader would never end
    for i, _ in prefetch(endless, depth=2):
        if i == 3:
            break
    assert alive() == 0  # leaving the loop stopped the decoding thread
    with pytest.raises(ValueError, match="depth"):
        next(prefetch(iter(frames), depth=0))
