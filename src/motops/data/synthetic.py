"""Built-in synthetic pedestrian footage in MOTChallenge layout (the default data set).

Every sequence is a street scene seen by a fixed, panning or shaking camera: a textured
ground plane in perspective below the horizon, buildings above it, a slow illumination
change (two lighting variants cross-faded over the sequence) and a global brightness
drift. People are drawn with OpenCV primitives (head, hair, torso with a pattern, arms,
walking legs, an optional bag); their look is fixed per identity and a share of the
identities copy another identity's look with small differences, so appearance alone does
not separate them. People enter at the borders and the far side, walk to waypoints,
pause, turn, cross each other and leave; static occluders (poles, pillars, bins) hide
them. Everything is drawn back to front by foot position (painter's algorithm), and the
same order paints a label map from which the ground-truth visibility is *counted*.

Output, for ``synthesize(out_dir, params)``::

    out_dir/synth-01/img1/000001.jpg ...
    out_dir/synth-01/gt/gt.txt        frame,id,left,top,width,height,1,1,visibility
    out_dir/synth-01/seqinfo.ini
    out_dir/synth-01.mp4              only with ``params.write_video``

Ground-truth boxes follow the MOTChallenge convention: pixel coordinates are 1-based
(the top-left pixel of the image is ``(1, 1)``), boxes are integers, clipped to the image.
A person fully hidden behind others or an occluder keeps a row with visibility 0 (as in
MOT17); a row is dropped only when the clipped box is under 2 px wide or high.

The output is a pure function of ``params``: each sequence draws from its own
``numpy.random.Generator`` seeded from ``(params.seed, index)``, so the same seed gives
byte-identical ``gt.txt`` and identical image pixels.
"""

from __future__ import annotations

import functools
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from motops.data import scenery
from motops.errors import ConfigError

if TYPE_CHECKING:
    from motops.config import SyntheticParams

__all__ = [
    "CAMERA_MODES",
    "VIEWS",
    "Appearance",
    "SceneSpec",
    "SequenceRenderer",
    "render_sequence",
    "sequence_name",
    "synthesize",
    "write_seqinfo",
]

#: Camera motions a sequence can have.
CAMERA_MODES = ("static", "pan", "jitter")
#: Camera placements: eye level, or high up looking down (CCTV).
VIEWS = ("street", "elevated")

#: Columns of one ground-truth row (``gt.txt`` and the arrays ``render_sequence`` yields).
GT_COLUMNS = ("frame", "id", "left", "top", "width", "height", "consider", "class", "visibility")

# --- the world, in units a reader can check (metres, seconds) ---------------------------
_PERSON_METRES = 1.75  # nominal body height: pixels per metre = person height px / 1.75
_DEPTH_FORESHORTENING = 0.35  # image px moved per metre walked in depth, relative to sideways
_WALK_SPEED = (1.3, 0.25, 0.6, 2.0)  # mean, std, min, max of walking speed, m/s
_RUNNER_SHARE, _RUN_SPEED = 0.06, 3.2  # a few people run, m/s
_STRIDE_HZ = 0.9  # full gait cycles per second at 1.3 m/s; scales with speed
_TURN_RATE = 0.08  # spontaneous new waypoints per second
_PAUSE_RATE = 0.04  # pauses started per second of walking
_PAUSE_SECONDS = (1.0, 5.0)
_SIDEWAYS_SHARE = 0.7  # share of new waypoints near the current row: people walk along the street
_EXIT_SHARE = 0.35  # share of reached waypoints after which a person heads out of the scene
_SPAWN_GAIN = 0.6  # spawns per second per missing person (keeps the count near the target)
_EXPOSURE_S = 1 / 40  # shutter time (at most the frame interval): blur = image speed x exposure
_MIN_BLUR_PX, _MAX_BLUR_PX = 3.0, 15.0
_PAN_PERIOD_S = 20.0  # at least this long for one pan out and back, so the pan stays smooth
_PAN_RANGE = 0.3  # the camera pans +-30 % of the image width
_JITTER_PX = 0.006  # shake amplitude as a share of the image width
_NOISE_BANK = 2  # precomputed noise images; one random crop of one of them per frame
_NOISE_MARGIN = 16
_MIN_BOX_PX = 2  # a clipped box narrower or lower than this is off-screen: no row
_POSE_BUCKETS = 8  # walking poses per gait cycle (sprites are cached per pose)
_UPPER = -2  # cache key "pose" of the non-swinging upper body
_SPRITES_PER_PERSON = 24  # LRU cache size: three facings x 8 poses x a few heights
_FRONTAL_BELOW = 0.45  # walking with |sideways share of the direction| below this: seen from front/back
# Elevated view (a camera on a building): horizon near the top, people 6-10 % of the image
# height far away and 20-32 % near; PETS09-like CCTV (people 7-19 % of 576 px).
_ELEVATED_HORIZON = (0.02, 0.2)
_ELEVATED_H_MIN, _ELEVATED_H_MAX = (0.06, 0.1), (0.2, 0.32)
_STREET_TILT = 0.06  # the street view's horizon moves by up to this share of the height


class _ParamsLike(Protocol):
    """The fields of :class:`motops.config.SyntheticParams` this module reads."""

    sequences: int
    frames: int
    width: int
    height: int
    seed: int
    fps: tuple[float, ...]
    camera: tuple[str, ...]
    people: tuple[int, ...]
    min_person_height: float
    max_person_height: float
    horizon: float
    lookalike_fraction: float
    occluders: int
    motion_blur: bool
    noise_sigma: float
    brightness_drift: float
    jpeg_quality: int
    write_video: bool
    view: tuple[str, ...]
    backgrounds: str | None
    missing_backgrounds: str
    clutter: int
    shadows: bool
    defocus: float


def sequence_name(index: int, prefix: str = "synth") -> str:
    """Name of the 0-based ``index``-th synthetic sequence: ``synth-01``, ``synth-02``, ... (``prefix-NN``)."""
    return f"{prefix}-{index + 1:02d}"


@dataclass(frozen=True)
class SceneSpec:
    """What one sequence looks like, derived from the params and the sequence index.

    Attributes:
        index: 0-based sequence index.
        name: Sequence name (``synth-01`` for index 0).
        frames: Number of frames.
        width: Image width, pixels.
        height: Image height, pixels.
        fps: Frame rate; per-frame displacement is walking speed / fps.
        camera: ``static``, ``pan`` or ``jitter``.
        view: ``street`` or ``elevated`` (see :data:`VIEWS`).
        people: Target number of people in view.
        seed: The params seed; the sequence generator is seeded from ``(seed, index)``.
    """

    index: int
    name: str
    frames: int
    width: int
    height: int
    fps: float
    camera: str
    people: int
    seed: int
    view: str = "street"

    @classmethod
    def from_params(cls, index: int, params: SyntheticParams | _ParamsLike) -> SceneSpec:
        """Pick the ``index``-th entry of each cycled list of ``params``.

        Raises:
            ConfigError: a camera mode is not one of :data:`CAMERA_MODES`, or a cycled
                list is empty.
        """
        views = tuple(getattr(params, "view", ("street",)))
        for key in ("fps", "camera", "people"):
            if len(getattr(params, key)) == 0:
                raise ConfigError(f"data.synthetic.{key}: expected at least one value, got an empty list")
        camera = params.camera[index % len(params.camera)]
        if camera not in CAMERA_MODES:
            raise ConfigError(
                f"data.synthetic.camera[{index % len(params.camera)}]: {camera!r} is not one of {CAMERA_MODES}"
            )
        if not views:
            raise ConfigError("data.synthetic.view: expected at least one value, got an empty list")
        view = views[index % len(views)]
        if view not in VIEWS:
            raise ConfigError(f"data.synthetic.view[{index % len(views)}]: {view!r} is not one of {VIEWS}")
        return cls(
            index=index,
            view=view,
            name=sequence_name(index, params.name_prefix),
            frames=int(params.frames),
            width=int(params.width),
            height=int(params.height),
            fps=float(params.fps[index % len(params.fps)]),
            camera=camera,
            people=int(params.people[index % len(params.people)]),
            seed=int(params.seed),
        )


BGR = tuple[int, int, int]


@dataclass(frozen=True)
class Appearance:
    """The fixed look of one identity.

    Attributes:
        skin, hair, shirt, pants, accent, bag_color: BGR colours (every channel >= 8, so
            0 can mark "no person" in a sprite).
        pattern: ``plain``, ``stripes`` (accent-coloured bands), ``two_tone`` or ``check``.
        hair_style: ``short``, ``long`` or ``hat`` (a hat in the accent colour).
        long_sleeves: Arms in the shirt colour rather than skin.
        bag: ``none``, ``backpack`` or ``shoulder``.
        height_factor: Body height relative to the nominal person at that depth.
        width_factor: Body width relative to nominal.
        lookalike_of: Identity whose look this one copies with small differences, if any.
        lower: ``pants``, ``shorts`` (skin below the knee), ``skirt`` or ``coat`` (shirt colour to the knee).
        carry: ``none``, ``hand_bag`` (in the near hand) or ``case`` (a suitcase pulled along).
    """

    skin: BGR
    hair: BGR
    shirt: BGR
    pants: BGR
    accent: BGR
    bag_color: BGR
    pattern: str
    hair_style: str
    long_sleeves: bool
    bag: str
    height_factor: float
    width_factor: float
    lookalike_of: int | None = None
    lower: str = "pants"
    carry: str = "none"


_SKIN = ((60, 90, 150), (90, 130, 200), (120, 160, 220), (40, 60, 100), (150, 185, 230))
_HAIR = ((20, 20, 20), (25, 40, 70), (40, 70, 120), (120, 160, 200), (150, 150, 150))


def _colour(rng: np.random.Generator) -> BGR:
    # Muted colours dominate real clothing; a few saturated ones make it harder, not easier.
    hue = int(rng.integers(0, 180))
    sat = int(rng.choice([30, 80, 160, 230]))
    # Dark coats and jeans are the most common clothes outdoors.
    val = int(rng.integers(15, 70)) if rng.random() < 0.35 else int(rng.integers(40, 240))
    hsv = np.array([[[hue, sat, val]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return (max(int(b), 8), max(int(g), 8), max(int(r), 8))


def _perturb(rng: np.random.Generator, c: BGR, amount: int = 12) -> BGR:
    d = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(v + dv, 8, 255)) for v, dv in zip(c, d, strict=True))  # type: ignore[return-value]


def _random_look(rng: np.random.Generator) -> Appearance:
    return Appearance(
        skin=_perturb(rng, _SKIN[int(rng.integers(len(_SKIN)))], 10),
        hair=_perturb(rng, _HAIR[int(rng.integers(len(_HAIR)))], 8),
        shirt=_colour(rng),
        pants=_colour(rng) if rng.random() < 0.5 else _perturb(rng, (60, 45, 40), 25),
        accent=_colour(rng),
        bag_color=_colour(rng),
        pattern=str(rng.choice(["plain", "plain", "stripes", "two_tone", "check"])),
        hair_style=str(rng.choice(["short", "short", "long", "hat"])),
        long_sleeves=bool(rng.random() < 0.6),
        bag=str(rng.choice(["none", "none", "backpack", "shoulder"])),
        # Children to tall adults, thin to broad (coats): the detector must not learn one shape.
        height_factor=float(np.clip(rng.normal(1.0, 0.1), 0.65, 1.2)),
        width_factor=float(np.clip(rng.normal(1.0, 0.15), 0.75, 1.45)),
        lower=str(rng.choice(["pants", "pants", "pants", "shorts", "skirt", "coat"])),
        carry=str(rng.choice(["none", "none", "none", "hand_bag", "case"])),
    )


def _lookalike(rng: np.random.Generator, src: Appearance, src_id: int) -> Appearance:
    # Same clothes, slightly different shades and build; now and then one item differs,
    # which is what makes re-identification of look-alikes hard but possible.
    bag = src.bag
    if rng.random() < 0.3:
        bag = str(rng.choice([b for b in ("none", "backpack", "shoulder") if b != src.bag]))
    return Appearance(
        skin=_perturb(rng, src.skin, 8),
        hair=_perturb(rng, src.hair, 8),
        shirt=_perturb(rng, src.shirt, 14),
        pants=_perturb(rng, src.pants, 14),
        accent=_perturb(rng, src.accent, 14),
        bag_color=_perturb(rng, src.bag_color, 14),
        pattern=src.pattern,
        hair_style=src.hair_style if rng.random() < 0.8 else "short",
        long_sleeves=src.long_sleeves,
        bag=bag,
        height_factor=float(np.clip(src.height_factor + rng.normal(0, 0.03), 0.65, 1.2)),
        width_factor=float(np.clip(src.width_factor + rng.normal(0, 0.04), 0.75, 1.45)),
        lookalike_of=src_id,
        lower=src.lower,
        carry=src.carry if rng.random() < 0.8 else "none",
    )


@dataclass
class _Sprite:
    """A drawn object: premultiplied BGR patch (0 outside), its binary mask and box."""

    patch: np.ndarray  # (h, w, 3) uint8
    mask: np.ndarray  # (h, w) uint8, 255 on the object, 0 elsewhere
    area: int  # mask pixels: the visibility denominator (unclipped)
    anchor: tuple[int, int]  # (x, y) of the foot point inside the patch
    box: tuple[int, int, int, int]  # x, y, w, h of the mask inside the patch


def _finish_sprite(canvas: np.ndarray, anchor: tuple[int, int]) -> _Sprite:
    # Every drawing colour has all channels >= 8, so grey > 0 exactly on the object.
    _, mask = cv2.threshold(cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY), 0, 255, cv2.THRESH_BINARY)
    return _Sprite(canvas, mask, int(cv2.countNonZero(mask)), anchor, cv2.boundingRect(mask))


@functools.lru_cache(maxsize=4096)
def _shade(c: BGR, f: float) -> BGR:
    return (max(int(c[0] * f), 8), max(int(c[1] * f), 8), max(int(c[2] * f), 8))


class _Frame:
    """Local canvas geometry of a person ``h`` px tall facing ``facing`` (+1 right, -1 left)."""

    __slots__ = ("h", "facing", "cw", "ch", "cx", "top", "sx")

    def __init__(self, h: int, facing: int) -> None:
        self.h, self.facing = h, facing
        self.cw, self.ch = int(0.9 * h) + 4, h + 4  # 2 px padding each side
        self.cx, self.top = self.cw // 2 + 0.5, 2.5  # + 0.5: int() below rounds
        self.sx = facing * h

    def pt(self, fx: float, fy: float) -> tuple[int, int]:
        """Canvas pixel of the point ``fx, fy`` given in body heights (x forward, y down)."""
        return (int(self.cx + self.sx * fx), int(self.top + self.h * fy))

    def th(self, f: float) -> int:
        """Line thickness of ``f`` body heights, at least 1 px."""
        return max(1, int(f * self.h + 0.5))


_HIP_Y, _LEG_LEN, _SHOULDER_Y, _ARM_LEN = 0.52, 0.46, 0.19, 0.31


def _draw_upper(look: Appearance, h: int, facing: int) -> _Sprite:
    """Everything of a person that does not swing while walking: torso, head, hair, bag.

    ``facing`` +1/-1 is a side view (walking right/left), 0 a front or back view (walking
    towards or away from the camera).
    """
    g = _Frame(h, facing if facing else 1)
    pt, wf = g.pt, look.width_factor
    front = facing == 0
    canvas = np.zeros((g.ch, g.cw, 3), np.uint8)
    sw = 0.14 if front else 0.1  # half shoulder width, body heights: a front view is wider
    hw = 0.11 if front else 0.085
    if look.hair_style == "long":
        if front:
            cv2.rectangle(canvas, pt(-0.07, 0.06), pt(0.07, 0.2), look.hair, -1)
        else:
            cv2.rectangle(canvas, pt(-0.075, 0.06), pt(0.03, 0.22), look.hair, -1)
    if look.bag == "backpack" and not front:
        cv2.rectangle(canvas, pt(-0.19 * wf, 0.19), pt(-0.08 * wf, 0.43), look.bag_color, -1)
    hip = _HIP_Y + 0.02
    torso = [pt(-sw * wf, 0.165), pt(sw * wf, 0.165), pt(hw * wf, hip), pt(-hw * wf, hip)]
    cv2.fillConvexPoly(canvas, np.array(torso, np.int32), look.shirt)
    if look.pattern == "stripes":
        step, y, t = max(0.06, 2.5 / h), 0.22, g.th(0.022)
        while y < _HIP_Y:
            cv2.line(canvas, pt(-(sw - 0.01) * wf, y), pt((sw - 0.01) * wf, y), look.accent, t)
            y += step
    elif look.pattern == "two_tone":
        lower = [pt(-(hw + 0.01) * wf, 0.36), pt((hw + 0.01) * wf, 0.36), pt(hw * wf, hip), pt(-hw * wf, hip)]
        cv2.fillConvexPoly(canvas, np.array(lower, np.int32), look.accent)
    elif look.pattern == "check":
        step, t = max(0.05, 3.0 / h), g.th(0.012)
        y = 0.2
        while y < _HIP_Y:
            cv2.line(canvas, pt(-(sw - 0.01) * wf, y), pt((sw - 0.01) * wf, y), look.accent, t)
            y += step
        x = -sw + 0.02
        while x < sw:
            cv2.line(canvas, pt(x * wf, 0.18), pt(x * wf, hip - 0.01), look.accent, t)
            x += step
    if front and look.bag == "backpack":  # only the straps show
        t = g.th(0.018)
        cv2.line(canvas, pt(-0.07 * wf, 0.17), pt(-0.08 * wf, 0.4), _shade(look.bag_color, 0.8), t)
        cv2.line(canvas, pt(0.07 * wf, 0.17), pt(0.08 * wf, 0.4), _shade(look.bag_color, 0.8), t)
    if look.bag == "shoulder":
        side = 0.17 if front else -0.06
        cv2.line(canvas, pt(0.06, 0.17), pt(side - 0.02, 0.45), _shade(look.bag_color, 0.7), g.th(0.015))
        cv2.rectangle(canvas, pt(side - 0.1 + (0.08 if front else 0), 0.40), pt(side + (0.06 if front else 0), 0.52),
                      look.bag_color, -1)
    head_c, head_r = pt(0.0 if front else 0.015, 0.075), g.th(0.065)
    cv2.circle(canvas, head_c, head_r, look.skin, -1)
    if look.hair_style == "hat":
        cv2.rectangle(canvas, pt(-0.07, 0.0), pt(0.07, 0.055), look.accent, -1)
        brim = (-0.09, 0.09) if front else (-0.07, 0.12)
        cv2.line(canvas, pt(brim[0], 0.055), pt(brim[1], 0.055), _shade(look.accent, 0.7), g.th(0.015))
    else:
        cv2.ellipse(canvas, head_c, (head_r, head_r), 0, 180, 360, look.hair, -1)
    return _finish_sprite(canvas, (g.cw // 2, 2 + h))


def _overlay(canvas: np.ndarray, spr: _Sprite, dx: int, dy: int) -> None:
    """Copy ``spr`` onto ``canvas`` shifted by ``dx, dy`` pixels, clipped to the canvas."""
    ch, cw = canvas.shape[:2]
    sh, sw = spr.mask.shape
    x0, y0, x1, y1 = max(dx, 0), max(dy, 0), min(dx + sw, cw), min(dy + sh, ch)
    src = (slice(y0 - dy, y1 - dy), slice(x0 - dx, x1 - dx))
    cv2.copyTo(spr.patch[src], spr.mask[src], canvas[y0:y1, x0:x1])


@functools.lru_cache(maxsize=2048)
def _body_light(ch: int, cw: int, facing: int) -> np.ndarray:
    """Light from above and one side: a ``(ch, cw, 3)`` uint8 multiplier (128 = unchanged) for a person's patch."""
    v = np.linspace(1.12, 0.8, ch, dtype=np.float32)[:, None]
    u = np.linspace(0.88, 1.08, cw, dtype=np.float32)[None, :]
    if facing < 0:
        u = u[:, ::-1]
    return cv2.cvtColor(np.round(128 * v * u).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def _draw_lower(canvas: np.ndarray, g: _Frame, look: Appearance, hip: tuple[int, int], foot: tuple[int, int],
                colour: BGR, t: int) -> None:
    """One leg from ``hip`` to ``foot``: trousers, or shorts with skin below the knee."""
    if look.lower == "shorts":
        knee = (int(hip[0] + 0.45 * (foot[0] - hip[0])), int(hip[1] + 0.45 * (foot[1] - hip[1])))
        cv2.line(canvas, knee, foot, _shade(look.skin, colour[0] / max(look.pants[0], 8)), max(1, t - 1))
        cv2.line(canvas, hip, knee, colour, t)
    else:
        cv2.line(canvas, hip, foot, colour, t)


def _draw_person(look: Appearance, upper: _Sprite, h: int, pose: int, facing: int) -> _Sprite:
    """Draw a person ``h`` px tall in a local canvas, feet at the anchor.

    Args:
        look: The identity's appearance.
        upper: :func:`_draw_upper` of the same look, height and facing.
        h: Body height, pixels.
        pose: Gait bucket in ``[0, _POSE_BUCKETS)``, or ``-1`` standing.
        facing: +1 walking right, -1 walking left, 0 towards or away from the camera.
    """
    g = _Frame(h, facing if facing else 1)
    wf = look.width_factor
    swing = math.sin(2.0 * math.pi * pose / _POSE_BUCKETS) if pose >= 0 else 0.0
    sleeve = look.shirt if look.long_sleeves else look.skin
    leg_t, arm_t = g.th(0.085 * wf), g.th(0.055 * wf)
    cx, hh = g.cx, h
    sh_y, hip_y = int(g.top + hh * _SHOULDER_Y), int(g.top + hh * _HIP_Y)
    canvas = np.zeros((g.ch, g.cw, 3), np.uint8)
    if facing == 0:
        # Front/back view: legs side by side, the stepping foot a little higher (further away).
        lx, ax = 0.05 * wf * hh, 0.15 * wf * hh
        for side, lift in ((-1, max(swing, 0.0)), (1, max(-swing, 0.0))):
            foot_y = int(g.top + hh * (_HIP_Y + _LEG_LEN * (1.0 - 0.07 * lift)))
            _draw_lower(canvas, g, look, (int(cx + side * lx), hip_y), (int(cx + side * 1.15 * lx), foot_y),
                        look.pants, leg_t)
        _overlay(canvas, upper, g.cw // 2 - upper.anchor[0], 2 + h - upper.anchor[1])
        for side, s in ((-1, swing), (1, -swing)):
            hand = (int(cx + side * (ax + 0.02 * hh)), int(g.top + hh * (_SHOULDER_Y + _ARM_LEN * (1 - 0.05 * s))))
            cv2.line(canvas, (int(cx + side * ax), sh_y), hand, sleeve, arm_t)
        hand_x, hand_y = int(cx + ax + 0.02 * hh), int(g.top + hh * (_SHOULDER_Y + _ARM_LEN))
    else:
        sx = g.sx
        leg, arm = 0.42 * swing, -0.35 * swing
        dxl, dyl = sx * math.sin(leg) * _LEG_LEN, int(g.top + hh * (_HIP_Y + math.cos(leg) * _LEG_LEN))
        dxa, dya = sx * math.sin(arm) * _ARM_LEN, int(g.top + hh * (_SHOULDER_Y + math.cos(arm) * _ARM_LEN))
        xa, xl = 0.02 * sx, 0.025 * sx
        # Far limbs behind the body and a little darker (in its shadow), near limbs in front.
        cv2.line(canvas, (int(cx - xa), sh_y), (int(cx - xa - dxa), dya), _shade(sleeve, 0.75), arm_t)
        _draw_lower(canvas, g, look, (int(cx - xl), hip_y), (int(cx - xl - dxl), dyl), _shade(look.pants, 0.75),
                    leg_t)
        _overlay(canvas, upper, g.cw // 2 - upper.anchor[0], 2 + h - upper.anchor[1])
        _draw_lower(canvas, g, look, (int(cx + xl), hip_y), (int(cx + xl + dxl), dyl), look.pants, leg_t)
        cv2.line(canvas, (int(cx + xa), sh_y), (int(cx + xa + dxa), dya), sleeve, arm_t)
        hand_x, hand_y = int(cx + xa + dxa), dya
    if look.lower in ("skirt", "coat"):
        wide = (0.15 if look.lower == "skirt" else 0.12) * wf * (1.3 if facing == 0 else 1.0)
        narrow = 0.09 * wf * (1.3 if facing == 0 else 1.0)
        knee = _HIP_Y + (0.2 if look.lower == "skirt" else 0.24)
        colour = look.accent if look.lower == "skirt" else look.shirt
        top = _HIP_Y - (0.0 if look.lower == "skirt" else 0.3)
        poly = [g.pt(-narrow, top), g.pt(narrow, top), g.pt(wide, knee), g.pt(-wide, knee)]
        cv2.fillConvexPoly(canvas, np.array(poly, np.int32), _shade(colour, 0.92))
    if look.carry == "hand_bag":
        bw, bh = max(1, int(0.07 * hh)), max(1, int(0.09 * hh))
        cv2.rectangle(canvas, (hand_x - bw // 2, hand_y), (hand_x + bw // 2, hand_y + bh), look.bag_color, -1)
    elif look.carry == "case" and facing != 0:
        # Pulled behind: a handle from the hand down to a case standing on the ground.
        back = int(cx - g.sx * 0.28)
        foot_y = int(g.top + hh)
        cw_, ch_ = max(2, int(0.2 * hh)), max(2, int(0.28 * hh))
        x0 = back - cw_ // 2
        cv2.rectangle(canvas, (max(x0, 0), foot_y - ch_), (min(x0 + cw_, g.cw - 1), foot_y), look.bag_color, -1)
        cv2.line(canvas, (int(cx - g.sx * 0.12), hand_y), (back, foot_y - ch_), _shade(look.bag_color, 0.6),
                 max(1, arm_t // 2))
    spr = _finish_sprite(canvas, (g.cw // 2, 2 + h))
    # Shade after the mask is taken: a dark shade must not cut holes in the silhouette.
    lit = cv2.multiply(spr.patch, _body_light(g.ch, g.cw, facing), scale=1.0 / 128.0)
    spr.patch = cv2.copyTo(lit, spr.mask)
    return spr


def _draw_occluder(kind: str, person_h: float, world_top: int, foot_y: int, rng: np.random.Generator) -> _Sprite:
    """Draw a static occluder standing at ``foot_y``; pillars reach the top of the world."""
    colour = _colour(rng)
    if kind == "pole":
        w, h = max(2, int(0.07 * person_h)), int(2.2 * person_h)
    elif kind == "pillar":
        w, h = max(4, int(0.45 * person_h)), foot_y - world_top
    else:  # bin
        w, h = max(3, int(0.38 * person_h)), max(3, int(0.5 * person_h))
    pad = 1
    canvas = np.zeros((h + 2 * pad, w + 2 * pad, 3), np.uint8)
    # Horizontal shading across the width reads as a round, lit object.
    shade = 0.55 + 0.6 * np.sin(np.linspace(0.15, math.pi - 0.15, w))
    body = np.clip(np.array(colour, np.float32)[None, :] * shade[:, None], 8, 255).astype(np.uint8)
    canvas[pad : pad + h, pad : pad + w] = body[None, :, :]
    if kind == "pole":
        cv2.rectangle(canvas, (0, pad), (w + 2 * pad - 1, pad + max(2, h // 25)), _shade(colour, 0.6), -1)
    elif kind == "bin":
        cv2.rectangle(canvas, (0, pad), (w + 2 * pad - 1, pad + max(1, h // 8)), _shade(colour, 0.6), -1)
    return _finish_sprite(canvas, ((w + 2 * pad) // 2, pad + h))


@dataclass
class _Person:
    pid: int
    look: Appearance
    x: float  # foot position, world pixels
    y: float
    speed: float  # m/s
    tx: float  # current waypoint, world pixels
    ty: float
    exiting: bool = False
    pause_left: float = 0.0
    phase: float = 0.0  # gait cycles, fractional
    facing: int = 1
    prev_view: tuple[float, float] | None = None
    sprites: dict[tuple[int, int, int], _Sprite] = field(default_factory=dict)


@dataclass
class _Drawable:
    depth: float  # foot y in world pixels: larger is nearer, drawn later
    order: int
    sprite: _Sprite
    x0: int  # top-left of the patch in the frame
    y0: int
    label: int
    person: _Person | None = None
    blur: tuple[float, float] | None = None  # displacement (x, y) in px during the exposure


@dataclass
class SequenceRenderer:
    """Simulates and draws one sequence; iterate :meth:`frames` for (image, gt rows).

    Attributes:
        spec: The sequence's :class:`SceneSpec`.
        identities: Every identity that appeared so far, id -> :class:`Appearance`
            (filled while frames are rendered; look-alikes name their source).
    """

    index: int
    params: SyntheticParams | _ParamsLike
    spec: SceneSpec = field(init=False)
    identities: dict[int, Appearance] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        p, s = self.params, SceneSpec.from_params(self.index, self.params)
        self.spec = s
        streams = np.random.SeedSequence([s.seed, s.index]).spawn(6)
        self._rng_bg, self._rng_sim, self._rng_look, self._rng_cam, self._rng_noise, self._rng_dr = (
            np.random.default_rng(x) for x in streams
        )
        W, H = s.width, s.height
        self._mx = int(round(_PAN_RANGE * W)) if s.camera == "pan" else int(math.ceil(3 * _JITTER_PX * W)) + 2
        self._my = int(math.ceil(3 * _JITTER_PX * W)) + 2
        self._wb, self._hb = W + 2 * self._mx, H + 2 * self._my
        self._y_b = self._my + H  # bottom of the view at rest, world y
        dr = self._rng_dr
        if s.view == "elevated":
            self._y_h = self._my + dr.uniform(*_ELEVATED_HORIZON) * H
            self._h_min = max(float(p.min_person_height), dr.uniform(*_ELEVATED_H_MIN) * H)
            self._h_max = max(dr.uniform(*_ELEVATED_H_MAX) * H, self._h_min + 1.0)
        else:  # camera height and tilt vary a little around the params
            self._y_h = self._my + float(np.clip(p.horizon + dr.uniform(-_STREET_TILT, _STREET_TILT), 0.0, 0.85)) * H
            self._h_min = float(p.min_person_height)
            self._h_max = max(float(p.max_person_height) * H * dr.uniform(0.85, 1.15), self._h_min + 1.0)
        self._bank = scenery.load_backgrounds(getattr(p, "backgrounds", None),
                                              getattr(p, "missing_backgrounds", "error"))
        self._shadow = float(dr.uniform(0.15, 0.5)) if getattr(p, "shadows", False) else 0.0
        self._light_dx = float(dr.uniform(-0.4, 0.4))  # shadow offset along x, per body height
        self._defocus = bool(dr.random() < float(getattr(p, "defocus", 0.0)))
        wb = dr.uniform(0.9, 1.1, 3)  # white balance of this camera
        self._wb_gain = (float(wb[0]), float(wb[1]), float(wb[2]))
        self._duration = s.frames / s.fps
        self._bg_a, self._bg_b = self._make_backgrounds()
        self._occluders = self._make_occluders()
        self._noise = self._make_noise()
        self._people: list[_Person] = []
        self._next_id = 1

    # --- geometry -----------------------------------------------------------------------
    def _height_at(self, y: float) -> float:
        """Nominal person height (px) with the feet at world row ``y``."""
        t = max(y - self._y_h, 0.0) / (self._y_b - self._y_h)
        return self._h_min + (self._h_max - self._h_min) * t

    def _ground_y(self, u: float) -> float:
        """World row at ``u`` in [0, 1] from just below the horizon to the bottom of the world.

        Uniform in ``u`` is uniform in inverse depth, so far rows are not crowded."""
        top = self._y_h + 0.03 * (self._y_b - self._y_h)
        return top + u * (self._hb - 1 - top)

    # --- static scene -------------------------------------------------------------------
    def _make_backgrounds(self) -> tuple[np.ndarray, np.ndarray]:
        rng, wb, hb = self._rng_bg, self._wb, self._hb
        yh = int(round(self._y_h))
        img = np.zeros((hb, wb, 3), np.uint8)
        sky_top, sky_bot = np.array(_colour(rng), np.float32), np.array([215, 200, 185], np.float32)
        ramp = np.linspace(0, 1, max(yh, 1), dtype=np.float32)[:, None]
        img[:yh] = (sky_top * (1 - ramp) * 0.6 + sky_bot * (0.4 + 0.6 * ramp)).astype(np.uint8)[:, None, :]
        # Buildings along the horizon, with window grids (strong repeated texture).
        x = int(-rng.integers(0, 40))
        while x < wb:
            bw = int(rng.uniform(0.08, 0.22) * self.spec.width)
            top = int(yh - rng.uniform(0.3, 1.3) * max(yh, 10))
            col = _colour(rng)
            cv2.rectangle(img, (x, top), (x + bw, yh), col, -1)
            win = max(3, int(bw * rng.uniform(0.06, 0.12)))
            lit, dark = _shade(col, 1.5), _shade(col, 0.45)
            for wy in range(top + win, yh - 2 * win, 2 * win):
                for wx in range(x + win, x + bw - win, 2 * win):
                    cv2.rectangle(img, (wx, wy), (wx + win - 1, wy + win - 1), lit if rng.random() < 0.3 else dark, -1)
            x += bw + int(rng.integers(0, 12))
        # Ground: paving in perspective (rows at inverse depth, seams to a vanishing point).
        ground = np.array(_colour(rng), np.float32) * 0.5 + np.array([120, 125, 130], np.float32) * 0.5
        img[yh:] = ground.astype(np.uint8)
        if self._bank is not None and self._rng_dr.random() < 0.85:
            # Photographed ground (grass, gravel, brick) in perspective instead of paving.
            tex = scenery.ground_layer(
                self._bank, self._rng_dr, (wb, hb), float(yh),
                self._height_at(hb) / max(self._height_at(yh), 1.0), self._height_at(hb) / _PERSON_METRES,
            )
            img[yh:] = np.clip(tex[yh:], 0, 255).astype(np.uint8)
            return self._finish_backgrounds(img, textured=True)
        seam = _shade(tuple(int(v) for v in ground), 0.7)  # type: ignore[arg-type]
        gh = hb - yh
        for k in range(80):
            y = int(round(self._y_h + (self._y_b - self._y_h) / (0.8 + 0.2 * k)))
            if yh < y < hb:
                cv2.line(img, (0, y), (wb, y), seam, 1)
        vx = wb * rng.uniform(0.35, 0.65)
        for xb in np.linspace(-2.0 * wb, 3.0 * wb, 41):
            cv2.line(img, (int(vx), yh), (int(xb), hb + gh), seam, 1)
        for _ in range(int(0.02 * wb)):
            c = (int(rng.uniform(0, wb)), int(rng.uniform(yh, hb)))
            ax = (int(rng.uniform(4, 30)), int(rng.uniform(2, 10)))
            cv2.ellipse(img, c, ax, 0, 0, 360, _shade(seam, rng.uniform(0.8, 1.3)), -1)
        return self._finish_backgrounds(img, textured=False)

    def _finish_backgrounds(self, img: np.ndarray, *, textured: bool) -> tuple[np.ndarray, np.ndarray]:
        """Grain, blotches, cast shadows and the two lightings of the background ``img``."""
        rng, wb, hb = self._rng_bg, self._wb, self._hb
        # Low-frequency blotches plus fine grain, baked in once.
        low = rng.normal(0, 12, (hb // 24 + 2, wb // 24 + 2, 1)) + rng.normal(0, 4, (hb // 24 + 2, wb // 24 + 2, 3))
        low = cv2.resize(low.astype(np.float32), (wb, hb))
        fine = rng.normal(0, 3 if textured else 6, (hb, wb, 1)).astype(np.float32)
        a = img.astype(np.float32) + low + fine
        if self._shadow > 0:
            yh = max(int(round(self._y_h)), 0)
            a *= scenery.cast_shadows(self._rng_dr, (wb, hb), yh, self._shadow)[:, :, None]
        a = np.clip(a * np.float32(self._rng_dr.uniform(0.85, 1.15)), 0, 255)
        # Second lighting: warmer/cooler tint and large soft shadows; cross-fade A -> B.
        light = cv2.resize(rng.uniform(0.65, 1.15, (4, 6)).astype(np.float32), (wb, hb), interpolation=cv2.INTER_CUBIC)
        tint = np.array(rng.uniform(0.85, 1.15, 3), np.float32)
        b = np.clip(a * light[:, :, None] * tint, 0, 255)
        return a.astype(np.uint8), b.astype(np.uint8)

    def _make_occluders(self) -> list[tuple[int, int, _Sprite]]:
        rng, out = self._rng_bg, []
        for _ in range(int(self.params.occluders)):
            kind = str(rng.choice(["pole", "pillar", "bin"]))
            fy = int(self._ground_y(rng.uniform(0.15, 0.8)))
            fx = int(rng.uniform(0.05, 0.95) * self._wb)
            spr = _draw_occluder(kind, self._height_at(fy), 0, fy, rng)
            out.append((fx, fy, spr))
        dr = self._rng_dr
        for _ in range(int(getattr(self.params, "clutter", 0))):
            kind = scenery.pick_clutter(dr)
            fy = int(self._ground_y(dr.uniform(0.0, 0.95)))
            fx = int(dr.uniform(0.02, 0.98) * self._wb)
            canvas, anchor = scenery.draw_clutter(kind, self._height_at(fy), dr, self._bank)
            out.append((fx, fy, _finish_sprite(canvas, anchor)))
        return out

    def _make_noise(self) -> list[tuple[np.ndarray, np.ndarray]]:
        sigma = float(self.params.noise_sigma)
        if sigma <= 0:
            return []
        shape = (self.spec.height + _NOISE_MARGIN, self.spec.width + _NOISE_MARGIN, 3)
        bank = []
        for _ in range(_NOISE_BANK):
            n = self._rng_noise.standard_normal(shape, dtype=np.float32)
            n *= sigma
            # Saturating add of the positive part and subtract of the negative part: two
            # cheap uint8 passes instead of a signed float round trip per frame.
            bank.append((cv2.convertScaleAbs(np.maximum(n, 0)), cv2.convertScaleAbs(np.minimum(n, 0))))
        return bank

    # --- people -------------------------------------------------------------------------
    def _new_look(self, pid: int) -> Appearance:
        rng = self._rng_look
        if self.identities and rng.random() < float(self.params.lookalike_fraction):
            # Copy someone in the scene now when possible, so both are seen together.
            pool = [q.pid for q in self._people if q.look.lookalike_of is None] or sorted(self.identities)
            src = int(pool[int(rng.integers(len(pool)))])
            look = _lookalike(rng, self.identities[src], src)
        else:
            look = _random_look(rng)
        self.identities[pid] = look
        return look

    def _waypoint(self, y: float | None = None) -> tuple[float, float]:
        """A random point on the ground; from row ``y``, mostly along the street (sideways)."""
        rng = self._rng_sim
        x = float(rng.uniform(0.02, 0.98) * self._wb)
        top, bottom = self._ground_y(0.0), self._ground_y(0.92)
        if y is not None and rng.random() < _SIDEWAYS_SHARE:
            return x, float(np.clip(y + rng.normal(0, 0.12) * (bottom - top), top, bottom))
        return x, self._ground_y(float(rng.uniform(0.0, 0.92)))

    def _exit_point(self, x: float, y: float) -> tuple[float, float]:
        """A point off the world (left, right, bottom) or at the far side, near ``x, y``."""
        rng, wb = self._rng_sim, self._wb
        r = rng.random()
        h = self._height_at(y)
        if r < 0.35:
            return -h, y + rng.normal(0, 0.05) * self._hb
        if r < 0.7:
            return wb + h, y + rng.normal(0, 0.05) * self._hb
        if r < 0.85:
            return x + rng.normal(0, 0.2) * wb, self._hb + self._h_max * 1.3
        return x + rng.normal(0, 0.2) * wb, self._y_h  # walks off into the distance

    def _spawn(self, *, initial: bool) -> None:
        rng = self._rng_sim
        if initial:
            x, y = float(rng.uniform(0, self._wb)), self._ground_y(float(rng.uniform(0, 0.95)))
        else:
            r = rng.random()
            if r < 0.35:
                y = self._ground_y(float(rng.uniform(0, 0.9)))
                x = -0.5 * self._height_at(y)
            elif r < 0.7:
                y = self._ground_y(float(rng.uniform(0, 0.9)))
                x = self._wb + 0.5 * self._height_at(y)
            elif r < 0.85:
                y, x = self._hb + self._h_max * 1.1, float(rng.uniform(0, self._wb))
            else:  # out of a side street at the far end
                y, x = self._ground_y(0.0), float(rng.uniform(0, self._wb))
        pid = self._next_id
        self._next_id += 1
        look = self._new_look(pid)
        speed = (
            _RUN_SPEED
            if rng.random() < _RUNNER_SHARE
            else float(np.clip(rng.normal(*_WALK_SPEED[:2]), *_WALK_SPEED[2:]))
        )
        tx, ty = self._waypoint(y)
        p = _Person(pid, look, x, y, speed, tx, ty, phase=float(rng.uniform(0, 1)))
        if initial and rng.random() < 0.25:
            p.exiting = True
            p.tx, p.ty = self._exit_point(x, y)
        self._people.append(p)

    def _in_view(self, p: _Person, ox: float) -> bool:
        return ox <= p.x <= ox + self.spec.width

    def _step(self, dt: float, ox: float) -> None:
        rng = self._rng_sim
        for p in self._people:
            if p.pause_left > 0:
                p.pause_left -= dt
                continue
            if not p.exiting and rng.random() < 1 - math.exp(-_PAUSE_RATE * dt):
                p.pause_left = float(rng.uniform(*_PAUSE_SECONDS))
                continue
            if not p.exiting and rng.random() < 1 - math.exp(-_TURN_RATE * dt):
                p.tx, p.ty = self._waypoint(p.y)
            # Walk in metres; image speed scales with the person's size at this depth.
            ppm = self._height_at(p.y) / _PERSON_METRES
            dxm, dym = (p.tx - p.x) / ppm, (p.ty - p.y) / (ppm * _DEPTH_FORESHORTENING)
            dist = math.hypot(dxm, dym)
            step = p.speed * dt
            if dist <= step:
                p.x, p.y = p.tx, p.ty
                if p.exiting:
                    continue
                if rng.random() < _EXIT_SHARE:
                    p.exiting = True
                    p.tx, p.ty = self._exit_point(p.x, p.y)
                else:
                    p.tx, p.ty = self._waypoint(p.y)
            else:
                ux, uy = dxm / dist, dym / dist
                p.x += ux * step * ppm
                p.y = max(p.y + uy * step * ppm * _DEPTH_FORESHORTENING, self._y_h)
                # Walking mostly in depth shows the front or the back.
                p.facing = (1 if ux > 0 else -1) if abs(ux) >= _FRONTAL_BELOW else 0
            p.phase += _STRIDE_HZ * (p.speed / _WALK_SPEED[0]) * dt
        # Leave when an exit point is reached (off the world or at the far end).
        self._people = [
            p
            for p in self._people
            if not (p.exiting and p.x == p.tx and p.y == p.ty) and -3 * self._h_max < p.x < self._wb + 3 * self._h_max
        ]
        in_view = sum(self._in_view(p, ox) for p in self._people)
        target = self.spec.people
        if self.spec.camera == "pan":
            # The world is wider than the view; keep the density, not the head count.
            target = int(round(target * self._wb / self.spec.width))
            in_view = len(self._people)
        missing = max(target - in_view, 0) + 0.3
        for _ in range(int(rng.poisson(_SPAWN_GAIN * missing * dt))):
            self._spawn(initial=False)

    def _sprite(self, p: _Person) -> _Sprite:
        h = max(6, int(round(self._height_at(p.y) * p.look.height_factor)))
        pose = -1 if p.pause_left > 0 else int((p.phase % 1.0) * _POSE_BUCKETS)
        # Drawing is the expensive part; people walking sideways or standing reuse sprites.
        key = (h, pose, p.facing)
        spr = p.sprites.pop(key, None)
        if spr is None and h > 30:
            # People walking in depth change height every frame; 1 px on 30 is below real posture change.
            for near in ((h - 1, pose, p.facing), (h + 1, pose, p.facing)):
                if near in p.sprites:
                    key = near
                    spr = p.sprites.pop(near)
                    break
        if spr is None:
            # The upper body of a person 1 px taller or shorter (> 60 px) is reused: it is
            # the costlier half, and 1 px is well inside the variation of real posture.
            upper = p.sprites.get((h, _UPPER, p.facing))
            if upper is None and h > 60:
                upper = p.sprites.get((h - 1, _UPPER, p.facing)) or p.sprites.get((h + 1, _UPPER, p.facing))
            if upper is None:
                upper = p.sprites[(h, _UPPER, p.facing)] = _draw_upper(p.look, h, p.facing)
            spr = _draw_person(p.look, upper, h, pose, p.facing)
            while len(p.sprites) >= _SPRITES_PER_PERSON:  # least recently used goes
                del p.sprites[next(iter(p.sprites))]
        p.sprites[key] = spr
        return spr

    # --- camera and photometry ----------------------------------------------------------
    def _camera(self, t: float, jitter: np.ndarray) -> tuple[int, int]:
        if self.spec.camera == "pan":
            period = max(self._duration, _PAN_PERIOD_S)
            return int(round(self._mx + self._mx * math.sin(2 * math.pi * t / period))), self._my
        if self.spec.camera == "jitter":
            return int(round(self._mx + jitter[0])), int(round(self._my + jitter[1]))
        return self._mx, self._my

    # --- the frame loop -----------------------------------------------------------------
    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Render the sequence frame by frame, without touching disk.

        Yields:
            ``(image, rows)``: the BGR ``(H, W, 3)`` uint8 image and its ground truth,
            a ``(K, 9)`` float64 array of ``frame, id, left, top, width, height, 1, 1,
            visibility`` rows (1-based frame and pixel coordinates, sorted by id).
        """
        s, p = self.spec, self.params
        W, H, dt = s.width, s.height, 1.0 / s.fps
        jitter_amp = _JITTER_PX * W
        jitter = np.zeros(2)
        drift_sign = 1.0 if self._rng_cam.random() < 0.5 else -1.0
        label = np.zeros((H, W), np.uint16)
        for _ in range(s.people):
            self._spawn(initial=True)
        for f in range(s.frames):
            t = f * dt
            if s.camera == "jitter":
                # Mean-reverting shake: small, frame to frame, never drifting away.
                jitter = 0.5 * jitter + self._rng_cam.normal(0, jitter_amp, 2)
                jitter = np.clip(jitter, -3 * jitter_amp, 3 * jitter_amp)
            ox, oy = self._camera(t, jitter)
            if f > 0:
                self._step(dt, ox)
            u = 0.5 - 0.5 * math.cos(math.pi * t / self._duration)
            frame = cv2.addWeighted(
                self._bg_a[oy : oy + H, ox : ox + W], 1.0 - u, self._bg_b[oy : oy + H, ox : ox + W], u, 0.0
            )
            label.fill(0)
            items = self._layout(ox, oy, dt)
            if self._shadow > 0:
                for it in items:
                    if it.person is not None:
                        self._cast_shadow(frame, it)
            for it in items:
                _paste(frame, label, it)
            rows = []
            for it in items:
                if it.person is None:
                    continue
                bx, by, bw, bh = it.sprite.box
                l0, t0 = it.x0 + bx, it.y0 + by
                l1, t1 = max(l0, 0), max(t0, 0)
                r1, b1 = min(l0 + bw, W), min(t0 + bh, H)
                if r1 - l1 < _MIN_BOX_PX or b1 - t1 < _MIN_BOX_PX:
                    continue
                seen = int(np.count_nonzero(label[t1:b1, l1:r1] == it.label))
                vis = round(seen / it.sprite.area, 4)
                rows.append((f + 1, it.person.pid, l1 + 1, t1 + 1, r1 - l1, b1 - t1, 1, 1, vis))
            rows.sort(key=lambda r: r[1])
            gain = 1.0 + drift_sign * float(p.brightness_drift) * u
            if self._defocus:
                frame = cv2.blur(frame, (3, 3))
            # Global exposure drift and this camera's white balance, one pass.
            frame = cv2.multiply(frame, tuple(g * gain for g in self._wb_gain) + (1.0,))
            if self._noise:
                pos, neg = self._noise[int(self._rng_noise.integers(len(self._noise)))]
                nx, ny = (int(v) for v in self._rng_noise.integers(0, _NOISE_MARGIN + 1, 2))
                cv2.add(frame, pos[ny : ny + H, nx : nx + W], dst=frame)
                cv2.subtract(frame, neg[ny : ny + H, nx : nx + W], dst=frame)
            yield frame, np.array(rows, np.float64).reshape(-1, 9)

    def _cast_shadow(self, frame: np.ndarray, it: _Drawable) -> None:
        """Darken a soft ellipse on the ground at the feet of the person ``it`` (drawn before any person)."""
        H, W = frame.shape[:2]
        h = it.sprite.mask.shape[0] - 4
        w, sh = max(4, int(0.45 * h)), max(3, int(0.1 * h))
        fx = it.x0 + it.sprite.anchor[0] + int(self._light_dx * h)
        fy = it.y0 + it.sprite.anchor[1]
        x0, y0 = fx - w // 2, fy - sh // 2
        x1, y1 = max(x0, 0), max(y0, 0)
        x2, y2 = min(x0 + w, W), min(y0 + sh, H)
        if x2 <= x1 or y2 <= y1:
            return
        patch = scenery.shadow_patch(w, sh, int(100 * self._shadow))
        roi = frame[y1:y2, x1:x2]
        cv2.multiply(roi, patch[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0], dst=roi, scale=1.0 / 255.0)

    def _layout(self, ox: int, oy: int, dt: float) -> list[_Drawable]:
        """Everything to draw this frame, back to front, with labels 1..n in that order."""
        W, H = self.spec.width, self.spec.height
        items: list[_Drawable] = []
        for k, (fx, fy, spr) in enumerate(self._occluders):
            x0, y0 = fx - ox - spr.anchor[0], fy - oy - spr.anchor[1]
            if x0 < W and y0 < H and x0 + spr.mask.shape[1] > 0 and y0 + spr.mask.shape[0] > 0:
                items.append(_Drawable(float(fy), -1 - k, spr, x0, y0, 0))
        for q in self._people:
            vx, vy = q.x - ox, q.y - oy
            prev, q.prev_view = q.prev_view, (vx, vy)
            reach = 0.6 * self._height_at(q.y) * 1.3
            if vx + reach < 0 or vx - reach > W or vy - 2 * reach > H or vy + 2 < 0:
                continue
            spr = self._sprite(q)
            x0, y0 = int(round(vx)) - spr.anchor[0], int(round(vy)) - spr.anchor[1]
            blur = None
            if self.params.motion_blur and prev is not None:
                # Speed relative to the camera: a pan smears people that walk with it less.
                shutter = min(1.0, _EXPOSURE_S / dt)
                bx, by = (vx - prev[0]) * shutter, (vy - prev[1]) * shutter
                n = math.hypot(bx, by)
                if n >= _MIN_BLUR_PX:
                    k = min(1.0, _MAX_BLUR_PX / n)
                    blur = (bx * k, by * k)
            items.append(_Drawable(q.y, q.pid, spr, x0, y0, 0, q, blur))
        items.sort(key=lambda it: (it.depth, it.order))
        for i, it in enumerate(items):
            it.label = i + 1
        return items


def _paste(frame: np.ndarray, label: np.ndarray, it: _Drawable) -> None:
    """Draw ``it`` over ``frame`` and its label over ``label`` (both clipped to the frame)."""
    H, W = label.shape
    spr = it.sprite
    sh, sw = spr.mask.shape
    fx0, fy0, fx1, fy1 = max(it.x0, 0), max(it.y0, 0), min(it.x0 + sw, W), min(it.y0 + sh, H)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    sx0, sy0 = fx0 - it.x0, fy0 - it.y0
    m = spr.mask[sy0 : sy0 + fy1 - fy0, sx0 : sx0 + fx1 - fx0]
    # Visibility counts the sharp silhouette; the blur only changes how it looks.
    cv2.copyTo(np.full(m.shape, it.label, np.uint16), m, label[fy0:fy1, fx0:fx1])
    if it.blur is not None:
        _paste_blurred(frame, spr, it.x0, it.y0, it.blur)
        return
    cv2.copyTo(spr.patch[sy0 : sy0 + fy1 - fy0, sx0 : sx0 + fx1 - fx0], m, frame[fy0:fy1, fx0:fx1])


def _blur_kernel(d: tuple[float, float]) -> np.ndarray:
    """Normalised line kernel along the displacement ``d`` (px, x then y)."""
    n = int(math.ceil(math.hypot(*d)))
    k = n | 1
    ker = np.zeros((k, k), np.float32)
    c = k / 2 - 0.5
    p0 = (int(round(c - d[0] / 2)), int(round(c - d[1] / 2)))
    p1 = (int(round(c + d[0] / 2)), int(round(c + d[1] / 2)))
    cv2.line(ker, p0, p1, 1.0, 1)
    return ker / ker.sum()


def _smear(img: np.ndarray, d: tuple[float, float], ker: np.ndarray | None) -> np.ndarray:
    if ker is None:  # mostly sideways: a 1-D box filter is the same line kernel, much cheaper
        k = max(1, int(round(abs(d[0])))) | 1
        return cv2.blur(img, (k, 1), borderType=cv2.BORDER_CONSTANT)
    return cv2.filter2D(img, -1, ker, borderType=cv2.BORDER_CONSTANT)


def _paste_blurred(frame: np.ndarray, spr: _Sprite, x0: int, y0: int, d: tuple[float, float]) -> None:
    """Composite a sprite smeared along ``d``: premultiplied colour over blurred alpha."""
    H, W = frame.shape[:2]
    ker = None if abs(d[1]) < 0.75 else _blur_kernel(d)
    pad = (int(math.ceil(math.hypot(*d))) | 1) // 2 + 1
    x0, y0 = x0 - pad, y0 - pad
    sh, sw = spr.mask.shape[0] + 2 * pad, spr.mask.shape[1] + 2 * pad
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + sw, W), min(y0 + sh, H)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    border = (pad, pad, pad, pad, cv2.BORDER_CONSTANT)
    patch = _smear(cv2.copyMakeBorder(spr.patch, *border, value=0), d, ker)
    alpha = _smear(cv2.copyMakeBorder(spr.mask, *border, value=0), d, ker)
    sl = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    patch, alpha = patch[sl], alpha[sl]
    roi = frame[fy0:fy1, fx0:fx1]
    keep = cv2.cvtColor(cv2.bitwise_not(alpha), cv2.COLOR_GRAY2BGR)
    cv2.add(cv2.multiply(roi, keep, scale=1.0 / 255.0), patch, dst=roi)


def render_sequence(index: int, params: SyntheticParams | _ParamsLike) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Render the ``index``-th sequence in memory (no disk I/O), frame by frame.

    Args:
        index: 0-based sequence index; picks ``fps``, ``camera`` and ``people`` cyclically.
        params: :class:`motops.config.SyntheticParams` (or any object with its fields).

    Yields:
        ``(image, rows)`` per frame: BGR ``(height, width, 3)`` uint8 image and a
        ``(K, 9)`` float64 array of ``frame, id, left, top, width, height, consider,
        class, visibility`` (MOTChallenge ``gt.txt`` columns, 1-based coordinates).
    """
    return SequenceRenderer(index, params).frames()


def write_seqinfo(seq_dir: Path, spec: SceneSpec) -> Path:
    """Write ``seq_dir/seqinfo.ini`` for ``spec`` and return its path."""
    fps = f"{spec.fps:g}"
    text = (
        "[Sequence]\n"
        f"name={spec.name}\n"
        "imDir=img1\n"
        f"frameRate={fps}\n"
        f"seqLength={spec.frames}\n"
        f"imWidth={spec.width}\n"
        f"imHeight={spec.height}\n"
        "imExt=.jpg\n"
    )
    path = seq_dir / "seqinfo.ini"
    path.write_text(text, encoding="utf-8")
    return path


def _format_row(r: np.ndarray) -> str:
    return f"{int(r[0])},{int(r[1])},{int(r[2])},{int(r[3])},{int(r[4])},{int(r[5])},1,1,{r[8]:.4f}\n"


def synthesize(out_dir: Path, params: SyntheticParams | _ParamsLike, *, progress: bool = True) -> list[Path]:
    """Write every synthetic sequence under ``out_dir`` in MOTChallenge layout.

    Each ``out_dir/synth-NN`` folder is replaced (its old frames are removed first), other
    contents of ``out_dir`` are left alone.

    Args:
        out_dir: Destination folder; created if missing.
        params: :class:`motops.config.SyntheticParams`.
        progress: Show a tqdm bar over all frames.

    Returns:
        The sequence folders, ``synth-01`` first.

    Raises:
        ConfigError: a camera mode or view is unknown or a cycled list is empty.
        motops.data.scenery.BackgroundError: ``params.backgrounds`` is missing or unreadable
            and ``params.missing_backgrounds`` is ``error`` (nothing is written then).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    specs = [SceneSpec.from_params(i, params) for i in range(int(params.sequences))]
    # A missing or unreadable texture folder stops the stage before anything is written.
    scenery.load_backgrounds(getattr(params, "backgrounds", None), getattr(params, "missing_backgrounds", "error"))
    out_dir.mkdir(parents=True, exist_ok=True)
    jpeg = [int(cv2.IMWRITE_JPEG_QUALITY), int(params.jpeg_quality)]
    folders = []
    with tqdm(total=sum(s.frames for s in specs), disable=not progress, unit="frame", desc="synthesize") as bar:
        for spec in specs:
            seq = out_dir / spec.name
            if seq.exists():
                shutil.rmtree(seq)
            (seq / "img1").mkdir(parents=True)
            (seq / "gt").mkdir()
            video_path = out_dir / f"{spec.name}.mp4"
            video = None
            if params.write_video:
                video_path.unlink(missing_ok=True)
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                video = cv2.VideoWriter(str(video_path), fourcc, spec.fps, (spec.width, spec.height))
                if not video.isOpened():
                    raise RuntimeError(f"{video_path}: OpenCV could not open an mp4v video writer")
            try:
                with open(seq / "gt" / "gt.txt", "w", encoding="ascii", newline="\n") as gt:
                    for f, (img, rows) in enumerate(render_sequence(spec.index, params), start=1):
                        if not cv2.imwrite(str(seq / "img1" / f"{f:06d}.jpg"), img, jpeg):
                            raise OSError(f"{seq / 'img1' / f'{f:06d}.jpg'}: could not write the frame")
                        gt.writelines(_format_row(r) for r in rows)
                        if video is not None:
                            video.write(img)
                        bar.update(1)
            finally:
                if video is not None:
                    video.release()
            write_seqinfo(seq, spec)
            folders.append(seq)
    return folders
