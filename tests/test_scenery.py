"""Domain randomization of the synthetic footage (issue 17): texture bank, clutter, views, speed."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from motops.config import SyntheticParams
from motops.data import scenery
from motops.data.scenery import BackgroundError, load_backgrounds
from motops.data.synthetic import SequenceRenderer, render_sequence, synthesize

SMALL = {"sequences": 2, "frames": 10, "width": 192, "height": 108, "occluders": 0}


def _params(**overrides: object) -> SyntheticParams:
    return SyntheticParams(**{**SMALL, **overrides})


def _render(index: int, params: SyntheticParams) -> tuple[list[np.ndarray], np.ndarray]:
    frames, rows = zip(*render_sequence(index, params), strict=True)
    return list(frames), np.concatenate(rows)


def test_builtin_bank_is_shipped_and_named() -> None:
    bank = load_backgrounds("builtin")
    assert bank is not None and {k for k, _ in bank.textures} == {"grass", "gravel", "brick"}
    for _, tex in bank.textures:
        assert tex.dtype == np.float32 and abs(float(tex.mean()) - 1.0) < 0.02
    assert load_backgrounds(None) is None


def test_textured_footage_is_deterministic_and_seeded() -> None:
    params = _params(view=("elevated",), clutter=6)
    a, ra = _render(0, params)
    b, rb = _render(0, params)
    c, _ = _render(0, params.model_copy(update={"seed": 7}))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(ra, rb)
    assert not np.array_equal(a[0], c[0])


def test_clutter_is_drawn_but_never_labelled() -> None:
    base = _params(sequences=1, frames=8, people=(25,), clutter=0, noise_sigma=0.0, shadows=False)
    busy = base.model_copy(update={"clutter": 60})
    f0, r0 = _render(0, base)
    f1, r1 = _render(0, busy)
    # People and their boxes do not depend on the clutter (its own random stream): the same
    # rows, only visibility can drop where clutter stands in front of someone.
    np.testing.assert_array_equal(r0[:, :8], r1[:, :8])
    assert (r1[:, 8] <= r0[:, 8] + 1e-9).all()
    assert (r1[:, 8] < r0[:, 8]).any(), "60 clutter objects hid nobody"
    # The clutter is there: pixels outside every person's box changed.
    outside = np.ones(f0[0].shape[:2], bool)
    for _, _, left, top, w, h, *_ in r0[r0[:, 0] == 1]:
        outside[int(top) - 1 : int(top + h) - 1, int(left) - 1 : int(left + w) - 1] = False
    changed = np.abs(f0[0].astype(int) - f1[0].astype(int)).max(axis=2) > 0
    assert (changed & outside).sum() > 200


@pytest.mark.parametrize("kind", scenery.CLUTTER_KINDS)
def test_each_clutter_kind_draws_a_standing_object(kind: str) -> None:
    rng = np.random.default_rng(0)
    canvas, (ax, ay) = scenery.draw_clutter(kind, 60.0, rng, load_backgrounds("builtin"))
    drawn = cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY) > 0
    assert drawn.sum() > 20
    ys, xs = np.nonzero(drawn)
    assert ys.max() >= ay - 2, "the object does not reach the ground at its anchor"
    assert xs.min() <= ax <= xs.max()


def test_missing_backgrounds_stop_the_stage_naming_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-textures"
    with pytest.raises(BackgroundError, match="no-such-textures"):
        synthesize(tmp_path / "out", _params(backgrounds=str(missing)), progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "something was written"


def test_unreadable_background_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "tex"
    folder.mkdir()
    cv2.imwrite(str(folder / "grass.png"), np.full((32, 32), 128, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BackgroundError, match="broken.jpg"):
        load_backgrounds(str(folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackgroundError, match="no images"):
        load_backgrounds(str(empty))


def test_procedural_fallback_is_logged_and_renders(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    params = _params(sequences=1, backgrounds=str(tmp_path / "gone"), missing_backgrounds="procedural")
    with caplog.at_level(logging.WARNING, logger="motops.data.scenery"):
        frames, rows = _render(0, params)
    assert "gone" in caplog.text and "procedural" in caplog.text
    plain, plain_rows = _render(0, params.model_copy(update={"backgrounds": None}))
    np.testing.assert_array_equal(frames[0], plain[0])
    np.testing.assert_array_equal(rows, plain_rows)


def test_a_user_texture_folder_is_used(tmp_path: Path) -> None:
    folder = tmp_path / "tex"
    folder.mkdir()
    rng = np.random.default_rng(1)
    cv2.imwrite(str(folder / "stones.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    own, _ = _render(0, _params(sequences=1, backgrounds=str(folder)))
    builtin, _ = _render(0, _params(sequences=1))
    assert not np.array_equal(own[0], builtin[0])


def test_elevated_view_has_small_people_and_little_size_change() -> None:
    params = SyntheticParams(sequences=1, frames=30, width=320, height=180, view=("elevated",), people=(20,))
    _, gt = _render(0, params)
    top, h = gt[:, 3], gt[:, 5]
    inside = (top > 1) & (top + h - 1 < params.height) & (gt[:, 8] > 0.9)
    assert h[inside].max() < 0.4 * params.height
    assert h[inside].min() > 0.03 * params.height


def test_people_walking_in_depth_are_seen_from_the_front() -> None:
    renderer = SequenceRenderer(0, _params(sequences=1, frames=40, people=(20,)))
    facings = set()
    for _ in renderer.frames():
        facings.update(p.facing for p in renderer._people)
    assert {-1, 0, 1} <= facings


def test_default_set_renders_at_150_fps_on_one_core() -> None:
    """The issue's floor: the default set at 640x360 on one core (40 frames of each sequence)."""
    params = SyntheticParams(frames=40)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        start, n = time.perf_counter(), 0
        for i in range(params.sequences):
            for _ in render_sequence(i, params):
                n += 1
        fps = n / (time.perf_counter() - start)
    finally:
        cv2.setNumThreads(threads)
    assert fps >= 150, f"{fps:.0f} frames/s"
