"""Unit and behaviour tests of the tracking runtime: types, matching, trackers, frame skipping.

All scenes are synthetic and tiny (a few hundred pixels, tens of frames), CPU only, seeded.
Tracker behaviours are checked for both implementations of :func:`make_tracker`: ours
(``impl="motops"``, the runtime's) and the Ultralytics-backed peer (``impl="ultralytics"``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from motops.runtime import (
    SkippingTracker,
    as_detections,
    as_tracks,
    fuse_score,
    iou_distance,
    iou_matrix,
    linear_assignment,
    make_tracker,
)

TRACKERS = ("bytetrack", "botsort")
IMPLS = ("motops", "ultralytics")


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """Blurred colour noise: texture that optical flow and GMC can lock onto."""
    noise = np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5)


def _dets(boxes: np.ndarray, conf: float = 0.9) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.c_[boxes, np.full(len(boxes), conf), np.zeros(len(boxes))]


def _render(bg: np.ndarray, boxes: np.ndarray, patches: list[np.ndarray]) -> np.ndarray:
    img = bg.copy()
    for (x1, y1, x2, y2), patch in zip(boxes.astype(int), patches, strict=True):
        img[y1:y2, x1:x2] = patch[: y2 - y1, : x2 - x1]
    return img


def _ids_by_object(tracks: np.ndarray, truth: np.ndarray) -> list[int | None]:
    """For each true box, the id of the track overlapping it most (None when no track has IoU >= 0.5)."""
    if len(tracks) == 0:
        return [None] * len(truth)
    iou = iou_matrix(truth, tracks)
    return [int(tracks[j, 4]) if iou[i, j] >= 0.5 else None for i, j in enumerate(iou.argmax(axis=1))]


def _run(tracker, truths: list[np.ndarray], frames: list[np.ndarray | None] | None = None, drop=()) -> list[list]:
    """Feed per-frame true boxes (minus the (frame, object) pairs in ``drop``); return ids per object per frame."""
    ids = []
    for t, truth in enumerate(truths):
        keep = [i for i in range(len(truth)) if (t, i) not in drop]
        frame = frames[t] if frames is not None else None
        tracks = tracker.update(_dets(truth[keep]), frame)
        ids.append(_ids_by_object(tracks, truth))
    return ids


# --------------------------------------------------------------------------- types


def test_as_detections_accepts_the_layout_and_empty_input():
    dets = as_detections([[0, 0, 10, 20, 0.5, 2]])
    assert dets.shape == (1, 6) and dets.dtype == np.float32
    assert as_detections([]).shape == (0, 6)
    assert as_detections(np.zeros((0, 6))).shape == (0, 6)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((3, 4)), r"shape \(3, 4\).*\(N, 6\).*x1, y1, x2, y2, conf, cls"),
        (np.zeros(6), r"shape \(6,\).*\(N, 6\)"),
        ([[0, 0, 10, np.nan, 0.5, 0]], r"row 0 column 'y2' is nan"),
        ([[0, 0, 10, 10, 0.5, 0], [10, 0, 5, 10, 0.5, 0]], r"row 1 has x2=5 < x1=10"),
        ([[0, 0, 10, 10, 1.5, 0]], r"row 0 has conf=1.5; expected a detector score in \[0, 1\]"),
    ],
)
def test_as_detections_refuses_bad_input_with_the_expected_layout(bad, message):
    with pytest.raises(ValueError, match=message):
        as_detections(bad)


def test_as_tracks_refuses_bad_shape_and_ids():
    with pytest.raises(ValueError, match=r"\(N, 8\).*track_id.*det_index"):
        as_tracks(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="track_id=0"):
        as_tracks([[0, 0, 1, 1, 0, 0.9, 0, -1]])
    assert as_tracks([[0, 0, 1, 1, 3, 0.9, 0, -1]]).shape == (1, 8)


# --------------------------------------------------------------------------- matching


def test_iou_identical_disjoint_and_known_overlap():
    a = np.array([[0, 0, 10, 10]])
    assert iou_matrix(a, a)[0, 0] == 1.0
    assert iou_matrix(a, [[20, 20, 30, 30]])[0, 0] == 0.0
    assert iou_matrix(a, [[10, 0, 20, 10]])[0, 0] == 0.0  # touching edges do not overlap
    # [0,10]x[0,10] vs [5,15]x[0,10]: intersection 50, union 150
    assert iou_matrix(a, [[5, 0, 15, 10]])[0, 0] == pytest.approx(1 / 3, abs=1e-12)
    # Extra columns (detections, tracks) are ignored; shapes are (N, M).
    iou = iou_matrix(_dets([[0, 0, 10, 10], [0, 0, 5, 10]]), np.zeros((3, 8)) + [0, 0, 10, 10, 1, 1, 0, -1])
    assert iou.shape == (2, 3) and np.allclose(iou, [[1, 1, 1], [0.5, 0.5, 0.5]])
    assert np.allclose(iou_distance(a, [[5, 0, 15, 10]]), 2 / 3)
    assert iou_matrix(np.zeros((0, 4)), a).shape == (0, 1)


def test_fuse_score_scales_similarity_by_detection_score():
    assert np.allclose(fuse_score(np.array([[0.2, 0.5]]), np.array([0.5, 1.0])), [[0.6, 0.5]])


def test_linear_assignment_minimises_cost_and_respects_the_threshold():
    cost = np.array([[0.1, 0.9, 0.9], [0.9, 0.95, 0.2], [0.3, 0.9, 0.9]])
    matches, ua, ub = linear_assignment(cost, thresh=0.5)
    assert matches.tolist() == [[0, 0], [1, 2]]  # row 2 would prefer column 0 but row 0 is cheaper there
    assert ua.tolist() == [2] and ub.tolist() == [1]  # 0.9 for (2, 1) is above the threshold
    matches, ua, ub = linear_assignment(cost, thresh=1.0)
    assert len(matches) == 3 and len(ua) == 0 and len(ub) == 0
    matches, ua, ub = linear_assignment(cost, thresh=0.05)
    assert matches.shape == (0, 2) and ua.tolist() == [0, 1, 2] and ub.tolist() == [0, 1, 2]
    matches, ua, ub = linear_assignment(np.zeros((0, 2)), thresh=0.5)
    assert matches.shape == (0, 2) and ub.tolist() == [0, 1]


# --------------------------------------------------------------------------- trackers


def _two_movers(n: int = 30) -> list[np.ndarray]:
    return [
        np.array([[20 + 4 * t, 40, 60 + 4 * t, 120], [260 - 3 * t, 60 + t, 300 - 3 * t, 140 + t]], float)
        for t in range(n)
    ]


@pytest.mark.parametrize("name", TRACKERS)
@pytest.mark.parametrize("with_frame", [False, True], ids=["motion-only", "with-frame"])
@pytest.mark.parametrize("impl", IMPLS)
def test_constant_speed_objects_keep_their_ids(name, with_frame, impl):
    truths = _two_movers(30)
    frames = None
    if with_frame:  # textured background so BoT-SORT's default sparseOptFlow GMC runs on real features
        bg, patches = _texture(200, 340, 1), [_texture(80, 40, 2), _texture(80, 40, 3)]
        frames = [_render(bg, truth, patches) for truth in truths]
    ids = _run(make_tracker(name, impl=impl), truths, frames)
    assert all(frame_ids == [1, 2] for frame_ids in ids), ids


@pytest.mark.parametrize("name", TRACKERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_crossing_objects_at_different_speeds_keep_their_ids(name, impl):
    # A runs right at 6 px/frame, B left at 3 px/frame, 10 px lower; they overlap around frame 17.
    truths = [
        np.array([[10 + 6 * t, 50, 40 + 6 * t, 110], [160 - 3 * t, 60, 190 - 3 * t, 120]], float) for t in range(30)
    ]
    first_overlap = next(t for t, b in enumerate(truths) if iou_matrix(b[:1], b[1:])[0, 0] > 0.3)
    assert 5 < first_overlap < 25  # the objects really cross inside the clip
    ids = _run(make_tracker(name, impl=impl, gmc_method="none"), truths)
    assert all(frame_ids == [1, 2] for frame_ids in ids), ids


@pytest.mark.parametrize("name", TRACKERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_short_occlusion_keeps_the_id_within_track_buffer(name, impl):
    truths = _two_movers(30)
    gap = {(t, 0) for t in range(10, 15)}  # object 0 missed for 5 frames
    ids = _run(make_tracker(name, impl=impl), truths, drop=gap)
    assert [ids[t][0] for t in range(10, 15)] == [None] * 5  # lost tracks are not reported
    assert all(ids[t] == [1, 2] for t in [*range(10), *range(15, 30)]), ids
    # The buffer is what bridges it: at 10 fps a 12-frame buffer (stated at 30 fps) keeps a lost track for
    # 12 * 10 / 30 = 4 missed frames. Missed for 4 frames: same id; for 5: the object comes back as a new track.
    short_gap = {(t, 0) for t in range(10, 14)}
    ids = _run(make_tracker(name, impl=impl, frame_rate=10, track_buffer=12), truths, drop=short_gap)
    assert ids[14] == [1, 2] and ids[29] == [1, 2]
    ids = _run(make_tracker(name, impl=impl, frame_rate=10, track_buffer=12), truths, drop=gap)
    assert ids[15][0] is None and ids[16][0] == 3 and ids[29] == [3, 2]


@pytest.mark.parametrize("impl", IMPLS)
def test_two_trackers_in_one_process_own_their_ids(impl):
    truths = _two_movers(5)
    a, b = make_tracker("bytetrack", impl=impl), make_tracker("botsort", impl=impl)
    for truth in truths:  # interleaved, as two video streams in one process would be
        ta, tb = a.update(_dets(truth), None), b.update(_dets(truth[:1]), None)
    assert sorted(ta[:, 4]) == [1, 2] and tb[:, 4].tolist() == [1]
    c = make_tracker("bytetrack", impl=impl)
    assert sorted(c.update(_dets(truths[0]), None)[:, 4]) == [1, 2]
    a.reset()
    a.update(_dets(truths[0][1:]), None)
    assert a.update(_dets(truths[1][1:]), None)[:, 4].tolist() == [1]


@pytest.mark.parametrize("impl", IMPLS)
def test_tracker_output_layout_maps_back_to_detections(impl):
    tracker = make_tracker("bytetrack", impl=impl)
    for t in range(3):
        dets = np.array([[300 - 3 * t, 60, 340 - 3 * t, 140, 0.7, 5], [20 + 4 * t, 40, 60 + 4 * t, 120, 0.95, 2]])
        dets = np.vstack([[0, 0, 5, 5, 0.05, 0], dets])  # a box below track_low_thresh shifts the row numbers
        tracks = tracker.update(dets, None)
    assert tracks.shape == (2, 8) and tracks.dtype == np.float32
    for row in tracks:
        det = dets[int(row[7])]
        assert iou_matrix(row[None, :4], det[None, :4])[0, 0] > 0.9
        assert row[5] == pytest.approx(det[4]) and row[6] == det[5]
    assert tracker.update(np.zeros((0, 6)), None).shape == (0, 8)


def test_unknown_parameter_and_name_are_refused_with_a_suggestion():
    with pytest.raises(TypeError, match=r"'match_tresh' \(did you mean 'match_thresh'\?\).*track_buffer"):
        make_tracker("bytetrack", match_tresh=0.5)
    with pytest.raises(ValueError, match=r"'botsrot' \(did you mean 'botsort'\?\)"):
        make_tracker("botsrot")
    with pytest.raises(ValueError, match=r"match_thresh=1.5: expected a number in \[0, 1\]"):
        make_tracker("botsort", match_thresh=1.5)
    with pytest.raises(ValueError, match=r"gmc_method='sift'"):
        make_tracker("botsort", gmc_method="sift")
    with pytest.raises(ValueError, match="bytetrack uses no appearance"):
        make_tracker("bytetrack", reid=lambda frame, boxes: np.zeros((len(boxes), 2)))
    with pytest.raises(ValueError, match=r"embed='some': expected one of \['all', 'needed'\]"):
        make_tracker("botsort", embed="some")
    with pytest.raises(ValueError, match=r"unknown impl 'ultralitics' \(did you mean 'ultralytics'\?\)"):
        make_tracker("botsort", impl="ultralitics")
    bad_reid = make_tracker("botsort", reid=lambda frame, boxes: np.zeros((len(boxes) + 1, 4)), embed="all")
    with pytest.raises(ValueError, match=r"reid callable returned shape \(2, 4\) for 1 boxes"):
        bad_reid.update(_dets([[10, 10, 30, 60]]), np.zeros((100, 100, 3), np.uint8))


COLOURS = ((0, 0, 255), (0, 255, 0))  # BGR red, green


def _bounce_scene(n: int = 21, turn: int = 10):
    """Two 40x80 boxes run into each other at 10 px/frame and bounce back at frame ``turn``.

    At the turn they are 10 px apart, so a constant-velocity prediction of each one lands
    closer to the *other* object's next box (IoU 0.6) than to its own (IoU 0.33): motion
    alone swaps the ids. B is drawn over A, and A stays to the left, so the top-left corner
    of each box always shows that object's own colour.
    """
    frames, truths = [], []
    for t in range(n):
        s = t if t <= turn else 2 * turn - t
        xa, xb = 100 + 10 * s, 110 + 20 * turn - 10 * s
        boxes = np.array([[xa, 50, xa + 40, 130], [xb, 50, xb + 40, 130]], float)
        img = np.zeros((200, 480, 3), np.uint8)
        for (x1, y1, x2, y2), colour in zip(boxes.astype(int), COLOURS, strict=True):
            img[y1:y2, x1:x2] = colour
        frames.append(img)
        truths.append(boxes)
    return frames, truths


def _colour_reid(calls: list):
    def colour_reid(frame, boxes):
        """Embedding = the L2-normalised mean colour of a 3x3 patch at the box's top-left corner."""
        calls.append(boxes.copy())
        patches = [frame[y1 + 1 : y1 + 4, x1 + 1 : x1 + 4].reshape(-1, 3).mean(0) for x1, y1, *_ in boxes.astype(int)]
        emb = np.asarray(patches, dtype=np.float32) + 1.0  # + 1: no zero (= "no appearance") embedding
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)

    return colour_reid


@pytest.mark.parametrize(("impl", "embed"), [("ultralytics", "all"), ("motops", "all"), ("motops", "needed")])
def test_botsort_appearance_keeps_ids_where_motion_alone_swaps_them(impl, embed):
    frames, truths = _bounce_scene()
    calls = []
    colour_reid = _colour_reid(calls)

    # proximity_thresh 0.3: appearance may decide for pairs overlapping by IoU >= 0.3 (the true pairs have 0.33).
    settings = {"gmc_method": "none", "proximity_thresh": 0.3, "impl": impl, "embed": embed}
    motion = _run(make_tracker("botsort", **settings), truths, frames)
    assert motion[9] == [1, 2] and motion[12] == [2, 1]  # the scene does fool motion alone

    tracker = make_tracker("botsort", reid=colour_reid, **settings)
    assert tracker.uses_appearance
    appearance = _run(tracker, truths, frames)
    assert all(frame_ids == [1, 2] for frame_ids in appearance), appearance
    assert np.array_equal(calls[0], truths[0])  # both start a track: both embedded
    if embed == "all":
        assert len(calls) == len(frames) and np.array_equal(calls[-1], truths[-1])
    else:  # every frame while the two boxes are close enough for appearance to decide, else every other one
        assert tracker.reid_calls == len(calls) < len(frames)
        assert tracker.reid_boxes == sum(len(c) for c in calls) < 0.75 * 2 * len(frames)

    # with_reid=False or no frame: the callable is never called (motion only).
    calls.clear()
    assert _run(make_tracker("botsort", reid=colour_reid, with_reid=False, **settings), truths, frames) == motion
    assert _run(make_tracker("botsort", reid=colour_reid, **settings), truths) == motion
    assert calls == []


def test_needed_embeds_only_boxes_whose_match_appearance_could_change():
    """Two far-apart movers (one reported at a low score) and a pair that meets: who is embedded when."""
    from motops.runtime.bytetrack import FEATURE_REFRESH_FRAMES

    assert FEATURE_REFRESH_FRAMES == 2  # the pattern below: alone, a track is re-embedded every other frame
    calls = []
    tracker = make_tracker("botsort", reid=_colour_reid(calls), gmc_method="none", embed="needed")
    frame = np.full((200, 640, 3), 90, np.uint8)
    embedded = []  # per frame, which objects' boxes went to the ReID
    for t in range(12):
        boxes = np.array([[20 + 2 * t, 20, 60 + 2 * t, 100], [560, 100 - t, 600, 180 - t],
                          [200 + 6 * t, 60, 240 + 6 * t, 140], [330 - 6 * t, 60, 370 - 6 * t, 140]], float)  # fmt: skip
        dets = _dets(boxes)
        if t >= 3:
            dets[1, 4] = 0.2  # low score from frame 3 on: continued by the IoU-only second stage
        before = len(calls)
        tracks = tracker.update(dets, frame)
        assert sorted(tracks[:, 4]) == [1, 2, 3, 4]
        assert len(calls) - before <= 1  # one batched call per frame at most
        got = calls[-1] if len(calls) > before else np.zeros((0, 4))
        embedded.append({k for k in range(4) if any(np.allclose(box, boxes[k]) for box in got)})
    assert embedded[0] == {0, 1, 2, 3}  # four new tracks
    assert all(1 not in embedded[t] for t in range(3, 12))  # a low-score box never
    assert [0 in e for e in embedded] == [t % 2 == 0 for t in range(12)]  # alone: every other frame (EMA refresh)
    assert [bool({2, 3} & e) for e in embedded[:6]] == [t % 2 == 0 for t in range(6)]
    assert all({2, 3} <= embedded[t] for t in range(8, 12))  # close enough for appearance to decide: every frame
    assert tracker.reid_boxes == sum(len(e) for e in embedded) < 0.75 * 4 * 12


def test_ours_gives_the_tracks_of_the_ultralytics_peer():
    """Our numpy tracker reproduces Ultralytics' ByteTrack and BoT-SORT (GMC, appearance for all) track by track."""
    rng = np.random.default_rng(0)
    world = _texture(320, 560, 5)
    start, vel = rng.uniform([20, 20], [380, 150], (6, 2)), rng.uniform(-4, 4, (6, 2))
    colours = rng.integers(0, 256, (6, 3))
    frames, dets = [], []
    for t in range(40):
        img = world[t // 2 : t // 2 + 240, 2 * t : 2 * t + 420].copy()  # panning camera
        boxes = []
        for k in range(6):
            x, y = np.clip(start[k] + vel[k] * t, 0, [380, 160])
            img[int(y) : int(y) + 80, int(x) : int(x) + 40] = colours[k]
            if rng.random() > 0.1:  # misses, jitter and scores across both stages
                j = rng.normal(0, 1.5, 4)
                boxes.append([x + j[0], y + j[1], x + 40 + j[2], y + 80 + j[3], rng.uniform(0.15, 1.0), 0])
        frames.append(img)
        dets.append(np.array(boxes).reshape(-1, 6))
    cases = [("bytetrack", {}, False), ("botsort", {"with_reid": False}, True), ("botsort", {"embed": "all"}, True)]
    for name, settings, with_frame in cases:
        reid = _colour_reid([]) if settings.get("with_reid", name == "botsort") else None
        out = {}
        for impl in IMPLS:
            trk = make_tracker(name, impl=impl, reid=reid, frame_rate=15, **settings)
            out[impl] = [trk.update(d, f if with_frame else None) for d, f in zip(dets, frames, strict=True)]
        assert sum(len(o) for o in out["motops"]) > 150
        for t, (a, b) in enumerate(zip(out["motops"], out["ultralytics"], strict=True)):
            np.testing.assert_allclose(a, b, atol=1e-3, err_msg=f"{name} {settings} frame {t}")


def test_runtime_tracker_imports_neither_torch_nor_ultralytics():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from motops.runtime import SkippingTracker, make_tracker

        reid = lambda frame, boxes: np.ones((len(boxes), 8), np.float32)
        frame = np.random.default_rng(0).integers(0, 255, (120, 200, 3)).astype(np.uint8)
        for name, kw in (("bytetrack", {}), ("botsort", {"reid": reid}), ("botsort", {"gmc_method": "ecc"})):
            trk = SkippingTracker(make_tracker(name, **kw), detect_every=2)
            for t in range(4):
                trk.step(frame, lambda f: np.array([[10 + t, 10, 50 + t, 90, 0.9, 0]]))
        print(sorted(m for m in ("torch", "ultralytics", "torchvision") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# --------------------------------------------------------------------------- frame skipping


class _Scene:
    """A 40x48 textured box moving at (3, 2) px/frame over a textured 320x240 background."""

    def __init__(self) -> None:
        self.bg, self.patch = _texture(240, 320, 1), _texture(48, 40, 2)
        self.calls: list[int] = []

    @staticmethod
    def truth(t: int) -> np.ndarray:
        return np.array([40 + 3 * t, 60 + 2 * t, 80 + 3 * t, 108 + 2 * t], float)

    def frame(self, t: int) -> np.ndarray:
        return _render(self.bg, self.truth(t)[None], [self.patch])

    def detector(self, t: int, miss: bool = False):
        def detect(frame: np.ndarray) -> np.ndarray:
            self.calls.append(t)
            return np.zeros((0, 6)) if miss else _dets(self.truth(t))

        return detect


# The bound on propagated boxes: every corner within 2 px of the truth on in-between frames
# (the box moves 3.6 px/frame, so holding the last box still would break it on the first one).
PROPAGATION_BOUND_PX = 2.0


@pytest.mark.parametrize("flow", ["dis", "farneback"])
def test_skipping_propagates_boxes_within_bound(flow):
    scene = _Scene()
    skipper = SkippingTracker(make_tracker("bytetrack"), detect_every=3, flow=flow)
    for t in range(24):
        tracks = skipper.step(scene.frame(t), scene.detector(t))
        assert tracks.shape == (1, 8) and tracks[0, 4] == 1
        if t % 3:
            assert tracks[0, 7] == -1
            error = np.abs(tracks[0, :4] - scene.truth(t)).max()
            assert error < PROPAGATION_BOUND_PX, (t, error)
        else:
            assert tracks[0, 7] == 0
    assert scene.calls == list(range(0, 24, 3))


def test_skipping_history_bridges_a_missed_detection():
    scene = _Scene()
    skipper = SkippingTracker(make_tracker("bytetrack"), detect_every=3)
    for t in range(18):
        tracks = skipper.step(scene.frame(t), scene.detector(t, miss=t == 6))
        if t in (6, 7, 8):  # the detector missed the box: nothing to report or propagate
            assert len(tracks) == 0
        else:
            assert tracks[:, 4].tolist() == [1], t
            if t % 3:
                assert np.abs(tracks[0, :4] - scene.truth(t)).max() < PROPAGATION_BOUND_PX


def test_skipping_every_frame_equals_the_plain_tracker():
    scene = _Scene()
    skipper = SkippingTracker(make_tracker("botsort"), detect_every=1)
    plain = make_tracker("botsort")
    for t in range(10):
        frame = scene.frame(t)
        assert np.array_equal(skipper.step(frame, scene.detector(t)), plain.update(_dets(scene.truth(t)), frame))
    assert scene.calls == list(range(10))


def test_skipping_refuses_bad_arguments_and_resets():
    with pytest.raises(ValueError, match=r"flow='dsi' \(did you mean 'dis'\?\)"):
        SkippingTracker(make_tracker("bytetrack"), flow="dsi")
    with pytest.raises(ValueError, match="detect_every=0"):
        SkippingTracker(make_tracker("bytetrack"), detect_every=0)
    scene = _Scene()
    skipper = SkippingTracker(make_tracker("bytetrack"), detect_every=2)
    with pytest.raises(ValueError, match=r"detect_fn output for frame 0: got shape \(4,\)"):
        skipper.step(scene.frame(0), lambda frame: np.zeros(4))
    skipper.reset()
    for t in range(3):
        skipper.step(scene.frame(t), scene.detector(t))
    skipper.reset()
    assert skipper.frame_index == 0
    assert skipper.step(scene.frame(0), scene.detector(0))[:, 4].tolist() == [1]


def _gmc_setup(trk) -> tuple[int, int, object]:
    """(downscale, corners, the GMC object) of either implementation."""
    if hasattr(trk, "_impl"):  # the Ultralytics wrapper
        gmc = trk._impl.gmc
        return gmc.downscale, gmc.feature_params["maxCorners"], gmc
    return trk.gmc.downscale, trk.gmc.max_corners, trk.gmc


@pytest.mark.parametrize("impl", IMPLS)
def test_botsort_camera_motion_compensation_is_sized_for_the_frame_and_still_measures_a_pan(impl):
    """The GMC runs on a ~160-px wide image; a known camera pan is still recovered to a pixel."""
    from motops.runtime.gmc import GMC_MAX_CORNERS, GMC_WIDTH

    rng = np.random.default_rng(0)
    world = cv2.GaussianBlur(rng.integers(0, 255, (420, 760), dtype=np.uint8), (5, 5), 0)
    world = cv2.cvtColor(world, cv2.COLOR_GRAY2BGR)
    frames = [np.ascontiguousarray(world[20 + 2 * k : 380 + 2 * k, 40 + 4 * k : 680 + 4 * k]) for k in range(3)]
    trk = make_tracker("botsort", impl=impl, with_reid=False, gmc_method="sparseOptFlow")
    empty = np.zeros((0, 6), np.float32)
    trk.update(empty, frames[0])
    downscale, corners, gmc = _gmc_setup(trk)
    assert downscale == 640 // GMC_WIDTH and corners == GMC_MAX_CORNERS
    warp = gmc.apply(frames[1])  # the camera moved right 4 px and down 2 px: the scene moves by (-4, -2)
    assert np.allclose(warp[:, :2], np.eye(2), atol=0.02)
    assert abs(warp[0, 2] + 4) < 1.0 and abs(warp[1, 2] + 2) < 1.0
    trk.reset()
    trk.update(empty, cv2.resize(frames[0], (1280, 720)))
    assert _gmc_setup(trk)[0] == 1280 // GMC_WIDTH  # re-sized for the new footage after a reset


@pytest.mark.parametrize("method", ["ecc", "orb"])
def test_other_camera_motion_methods_measure_a_pan(method):
    from motops.runtime.gmc import CameraMotion

    noise = np.random.default_rng(7).integers(0, 256, (420, 760, 3)).astype(np.uint8)
    world = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 5), None, 0, 255, cv2.NORM_MINMAX)  # ECC needs smooth
    frames = [np.ascontiguousarray(world[20 + 2 * k : 380 + 2 * k, 40 + 4 * k : 680 + 4 * k]) for k in range(2)]
    gmc = CameraMotion(method)
    assert np.array_equal(gmc.apply(frames[0], np.zeros((0, 4))), np.eye(2, 3))  # first frame: no motion yet
    warp = gmc.apply(frames[1], np.array([[100, 100, 140, 180]]))
    assert abs(warp[0, 2] + 4) < 0.5 and abs(warp[1, 2] + 2) < 0.5, warp


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("detect_every", [1, 3])
def test_skipping_with_flow_and_camera_motion_computed_ahead_equals_computed_inline(detect_every: int, impl: str):
    """The runner computes flow and BoT-SORT's camera motion in its decoding thread; same tracks as inline."""
    scene = _Scene()
    world = _texture(240 + 20, 320 + 60, 3)  # the camera pans across it by (3, 1) px per frame
    frames = [(t + 1, _render(world[t : t + 240, 3 * t : 3 * t + 320], scene.truth(t)[None], [scene.patch]))
              for t in range(14)]  # fmt: skip

    def tracker() -> SkippingTracker:
        return SkippingTracker(make_tracker("botsort", impl=impl, with_reid=False, gmc_method="sparseOptFlow"),
                               detect_every=detect_every)  # fmt: skip

    inline, ahead = tracker(), tracker()
    computed = list(ahead.precompute(iter(frames)))
    propagated = [t % detect_every != 0 for t in range(14)]
    assert [a.flow is not None for _, _, a in computed] == propagated
    assert [a.warp is not None for _, _, a in computed] == [not p for p in propagated]
    assert any(abs(a.warp[0, 2]) > 1 for _, _, a in computed if a.warp is not None)  # the pan was measured
    for t, ((_, frame), (_, _, pre)) in enumerate(zip(frames, computed, strict=True)):
        a = inline.step(frame, scene.detector(t))
        b = ahead.step(frame, scene.detector(t), pre)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("impl", IMPLS)
def test_camera_motion_warp_is_checked_and_only_botsort_takes_one(impl):
    dets = np.array([[10, 10, 30, 60, 0.9, 0]], np.float32)
    frame = np.zeros((120, 160, 3), np.uint8)
    assert make_tracker("bytetrack", impl=impl).motion_estimator() is None
    assert make_tracker("botsort", impl=impl, gmc_method="none").motion_estimator() is None
    with pytest.raises(ValueError, match="only botsort"):
        make_tracker("bytetrack", impl=impl).update(dets, frame, warp=np.eye(2, 3))
    with pytest.raises(ValueError, match=r"finite \(2, 3\)"):
        make_tracker("botsort", impl=impl, with_reid=False).update(dets, frame, warp=np.eye(3))
