"""Unit tests of the synthetic footage generator (small frames, few sequences: fast)."""

from __future__ import annotations

import configparser
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from motops.config import SyntheticParams
from motops.data.synthetic import SceneSpec, SequenceRenderer, render_sequence, synthesize
from motops.errors import ConfigError

SMALL = {"sequences": 2, "frames": 12, "width": 192, "height": 108, "occluders": 2}


def _params(**overrides: object) -> SyntheticParams:
    return SyntheticParams(**{**SMALL, **overrides})


def _gt(seq: Path) -> np.ndarray:
    return np.loadtxt(seq / "gt" / "gt.txt", delimiter=",", ndmin=2)


def _rows(index: int, params: SyntheticParams) -> np.ndarray:
    return np.concatenate([rows for _, rows in render_sequence(index, params)])


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    params = _params()
    a = synthesize(tmp_path / "a", params, progress=False)
    b = synthesize(tmp_path / "b", params, progress=False)
    c = synthesize(tmp_path / "c", _params(seed=1), progress=False)
    for sa, sb, sc in zip(a, b, c, strict=True):
        assert (sa / "gt" / "gt.txt").read_bytes() == (sb / "gt" / "gt.txt").read_bytes()
        assert (sa / "gt" / "gt.txt").read_bytes() != (sc / "gt" / "gt.txt").read_bytes()
        frames = sorted((sa / "img1").iterdir())
        for fa in frames:
            assert fa.read_bytes() == (sb / "img1" / fa.name).read_bytes()
        assert not np.array_equal(cv2.imread(str(frames[0])), cv2.imread(str(sc / "img1" / frames[0].name)))


def test_in_memory_frames_are_deterministic_and_match_disk(tmp_path: Path) -> None:
    params = _params(sequences=1)
    first = list(render_sequence(0, params))
    again = list(render_sequence(0, params))
    assert len(first) == params.frames
    for (img_a, rows_a), (img_b, rows_b) in zip(first, again, strict=True):
        assert img_a.shape == (params.height, params.width, 3) and img_a.dtype == np.uint8
        assert rows_a.shape[1] == 9
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(rows_a, rows_b)
    (seq,) = synthesize(tmp_path, params, progress=False)
    np.testing.assert_allclose(_gt(seq), np.concatenate([r for _, r in first]), atol=5e-5)


def test_layout_and_seqinfo(tmp_path: Path) -> None:
    params = _params(sequences=3, fps=(30.0, 7.5), camera=("static", "pan"))
    seqs = synthesize(tmp_path, params, progress=False)
    assert [s.name for s in seqs] == ["synth-01", "synth-02", "synth-03"]
    expected_fps = ["30", "7.5", "30"]
    for seq, fps in zip(seqs, expected_fps, strict=True):
        ini = configparser.ConfigParser()
        ini.optionxform = str  # keep MOTChallenge's camelCase keys
        ini.read(seq / "seqinfo.ini")
        info = ini["Sequence"]
        assert info["name"] == seq.name
        assert info["imDir"] == "img1" and info["imExt"] == ".jpg"
        assert info["frameRate"] == fps
        assert int(info["seqLength"]) == params.frames
        assert (int(info["imWidth"]), int(info["imHeight"])) == (params.width, params.height)
        frames = sorted(p.name for p in (seq / "img1").iterdir())
        assert frames == [f"{i:06d}.jpg" for i in range(1, params.frames + 1)]
        assert cv2.imread(str(seq / "img1" / frames[0])).shape == (params.height, params.width, 3)
        gt = _gt(seq)
        assert set(np.unique(gt[:, 6])) == {1.0} and set(np.unique(gt[:, 7])) == {1.0}
        line = (seq / "gt" / "gt.txt").read_text().splitlines()[0].split(",")
        assert len(line) == 9 and len(line[8].split(".")[1]) == 4
    assert not any(p.suffix == ".mp4" for p in tmp_path.iterdir())


def test_cycles_follow_the_params() -> None:
    params = _params(sequences=5, fps=(30.0, 10.0), camera=("static", "pan", "jitter"), people=(3, 9))
    specs = [SceneSpec.from_params(i, params) for i in range(5)]
    assert [s.fps for s in specs] == [30.0, 10.0, 30.0, 10.0, 30.0]
    assert [s.camera for s in specs] == ["static", "pan", "jitter", "static", "pan"]
    assert [s.people for s in specs] == [3, 9, 3, 9, 3]


def test_unknown_camera_is_refused_with_the_key() -> None:
    bad = SimpleNamespace(**{**SyntheticParams().model_dump(), "camera": ("static", "orbit")})
    with pytest.raises(ConfigError, match=r"camera\[1\].*orbit"):
        SceneSpec.from_params(1, bad)


@pytest.fixture(scope="module")
def crowd() -> tuple[SyntheticParams, np.ndarray]:
    """A small crowd at a low frame rate: many occlusions, entries and exits."""
    params = SyntheticParams(
        sequences=1, frames=60, width=320, height=180, fps=(5.0,), camera=("static",), people=(25,), occluders=3
    )
    return params, _rows(0, params)


def test_visibility_is_counted_with_occlusion(crowd: tuple[SyntheticParams, np.ndarray]) -> None:
    _, gt = crowd
    vis = gt[:, 8]
    assert vis.min() >= 0.0 and vis.max() <= 1.0
    assert (vis < 0.5).mean() > 0.05, "too few occluded rows"
    assert (vis == 1.0).mean() > 0.1, "too few fully visible rows"
    assert (vis == 0.0).any(), "fully occluded people must keep their rows"


def test_boxes_inside_the_image(crowd: tuple[SyntheticParams, np.ndarray]) -> None:
    params, gt = crowd
    left, top, w, h = gt[:, 2], gt[:, 3], gt[:, 4], gt[:, 5]
    assert (left >= 1).all() and (top >= 1).all()
    assert (left + w - 1 <= params.width).all() and (top + h - 1 <= params.height).all()
    assert (w >= 2).all() and (h >= 2).all()
    assert np.array_equal(gt[:, 2:6], np.round(gt[:, 2:6]))


def test_unique_frame_id_rows(crowd: tuple[SyntheticParams, np.ndarray]) -> None:
    _, gt = crowd
    keys = gt[:, 0].astype(np.int64) * 100_000 + gt[:, 1].astype(np.int64)
    assert len(np.unique(keys)) == len(keys)


def test_entries_and_exits(crowd: tuple[SyntheticParams, np.ndarray]) -> None:
    params, gt = crowd
    ids = np.unique(gt[:, 1])
    first = np.array([gt[gt[:, 1] == i, 0].min() for i in ids])
    last = np.array([gt[gt[:, 1] == i, 0].max() for i in ids])
    assert (first > 1).sum() >= 3, "nobody entered after the first frame"
    assert (last < params.frames).sum() >= 3, "nobody left before the last frame"


def test_wide_size_range(crowd: tuple[SyntheticParams, np.ndarray]) -> None:
    params, gt = crowd
    top, h = gt[:, 3], gt[:, 5]
    inside = (top > 1) & (top + h - 1 < params.height)  # not cut by the image border
    assert (h[inside] < 30).any(), "no small far-away people"
    assert (h[inside] > 0.3 * params.height).any(), "no large near people"


def test_lookalike_pairs_exist_and_are_seen() -> None:
    params = SyntheticParams(frames=20, width=320, height=180, people=(20,), lookalike_fraction=0.4)
    renderer = SequenceRenderer(0, params)
    gt = np.concatenate([rows for _, rows in renderer.frames()])
    seen = set(gt[:, 1].astype(int))
    pairs = [(i, a.lookalike_of) for i, a in renderer.identities.items() if a.lookalike_of is not None]
    assert any(i in seen and src in seen for i, src in pairs)
    for i, src in pairs:
        a, b = renderer.identities[i], renderer.identities[src]
        assert a.pattern == b.pattern
        assert np.abs(np.subtract(a.shirt, b.shirt)).max() <= 14
    none = SequenceRenderer(0, params.model_copy(update={"lookalike_fraction": 0.0}))
    for _ in none.frames():
        pass
    assert all(a.lookalike_of is None for a in none.identities.values())


def _shift(a: np.ndarray, b: np.ndarray) -> float:
    ga, gb = (np.float32(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)) for x in (a, b))
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb)
    return float(np.hypot(dx, dy))


@pytest.mark.parametrize(("camera", "moves"), [("pan", True), ("static", False)])
def test_camera_pan_moves_the_background(camera: str, moves: bool) -> None:
    params = SyntheticParams(
        sequences=1, frames=8, width=320, height=180, fps=(10.0,), camera=(camera,), people=(1,), noise_sigma=0.0
    )
    frames = [img for img, _ in render_sequence(0, params)]
    shift = _shift(frames[0], frames[6])
    if moves:
        assert shift > 3.0
    else:
        assert shift < 0.5


def test_mp4_is_written_and_readable(tmp_path: Path) -> None:
    params = _params(sequences=1, write_video=True)
    (seq,) = synthesize(tmp_path, params, progress=False)
    video = tmp_path / f"{seq.name}.mp4"
    assert video.is_file() and video.stat().st_size > 0
    cap = cv2.VideoCapture(str(video))
    try:
        assert cap.isOpened()
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (params.height, params.width, 3)
            n += 1
    finally:
        cap.release()
    assert n == params.frames
