"""Scenery for the synthetic footage: photographed ground textures and person-like clutter.

Domain randomization for :mod:`motops.data.synthetic`: what a detector trained on the
synthetic footage must learn is *not* a person. Real ground (grass, gravel, brick paving)
from photographs laid in perspective, paths of a second material across it, and
tall thin things (poles, lamp posts, road signs, trees, tripods) and short ones (bins,
bollards, cones) that are drawn with people but never labelled.

The photographs are the texture bank: a folder of images (``backgrounds`` in the
synthetic params). The built-in bank, :data:`BUILTIN_BACKGROUNDS`, holds three CC0
photographs shipped inside scikit-image's wheel (see ``backgrounds/README.md``); nothing
is ever downloaded. Everything here is a pure function of its arguments and the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import cv2
import numpy as np

from motops.errors import ConfigError

__all__ = ["BUILTIN", "BUILTIN_BACKGROUNDS", "CLUTTER_KINDS", "BackgroundError", "TextureBank", "load_backgrounds"]

log = logging.getLogger(__name__)

#: The value of ``backgrounds`` that names the bank shipped with motops.
BUILTIN = "builtin"
#: The folder of the built-in texture bank.
BUILTIN_BACKGROUNDS = Path(__file__).resolve().parent / "backgrounds"
#: Image suffixes read from a texture folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Clutter drawn next to people and never labelled.
CLUTTER_KINDS = ("pole", "lamp_post", "sign", "bin", "bollard", "cone", "tree", "tripod")
_CLUTTER_WEIGHTS = (0.14, 0.16, 0.18, 0.12, 0.12, 0.1, 0.1, 0.08)
_TEX_SIZE = 256  # textures are kept at this size (square): enough grain, cheap to warp

# Base colours (BGR) of grey textures by what their file name says they are.
_TINTS = {
    "grass": ((40, 120, 70), (30, 100, 90), (50, 140, 100), (45, 110, 110), (60, 120, 95)),
    "gravel": ((120, 125, 130), (100, 115, 130), (140, 140, 140), (90, 100, 115)),
    "brick": ((60, 80, 150), (80, 100, 140), (110, 115, 125), (70, 90, 120)),
}


class BackgroundError(ConfigError):
    """A texture source that is missing or unreadable; the message names it."""


class TextureBank:
    """Grey textures (float32 ``(S, S)``, mean 1) and what each one is (file stem).

    Attributes:
        textures: ``[(kind, texture)]``; kind is ``grass``, ``gravel``, ``brick`` or ``other``.
        source: Where they were read from.
    """

    def __init__(self, textures: list[tuple[str, np.ndarray]], source: str) -> None:
        self.textures = textures
        self.source = source

    def __len__(self) -> int:
        return len(self.textures)

    def pick(self, rng: np.random.Generator, prefer: tuple[str, ...] = ()) -> tuple[str, np.ndarray]:
        """A random texture; one of the ``prefer`` kinds when the bank has any."""
        pool = [t for t in self.textures if t[0] in prefer] or self.textures
        return pool[int(rng.integers(len(pool)))]


def _kind(stem: str) -> str:
    stem = stem.lower()
    return next((k for k in _TINTS if k in stem), "other")


@functools.lru_cache(maxsize=8)
def _read_bank(folder: str) -> TextureBank:
    path = Path(folder)
    if not path.is_dir():
        raise BackgroundError(f"data.synthetic.backgrounds: {path} is not a folder of texture images (missing)")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BackgroundError(f"data.synthetic.backgrounds: {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    textures = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None or min(img.shape) < 16:
            raise BackgroundError(f"data.synthetic.backgrounds: {f} is unreadable or smaller than 16x16 px")
        side = min(img.shape)
        img = cv2.resize(img[:side, :side], (_TEX_SIZE, _TEX_SIZE), interpolation=cv2.INTER_AREA)
        tex = img.astype(np.float32)
        tex /= max(float(tex.mean()), 1.0)
        textures.append((_kind(f.stem), tex))
    return TextureBank(textures, str(path))


def load_backgrounds(source: str | None, on_missing: str = "error") -> TextureBank | None:
    """The texture bank of ``source``, or None for procedural backgrounds only.

    Args:
        source: ``builtin`` (:data:`BUILTIN_BACKGROUNDS`), a folder of images, or None.
        on_missing: ``error`` (raise) or ``procedural`` (log why and return None) when the
            folder is missing, empty or holds an unreadable image.

    Raises:
        BackgroundError: the source is missing or unreadable and ``on_missing`` is ``error``.
    """
    if source is None:
        return None
    folder = BUILTIN_BACKGROUNDS if source == BUILTIN else Path(source)
    try:
        return _read_bank(str(folder))
    except BackgroundError as exc:
        if on_missing != "procedural":
            raise
        log.warning("%s; falling back to procedural backgrounds (data.synthetic.missing_backgrounds=procedural)", exc)
        return None


def _tint(kind: str, rng: np.random.Generator) -> np.ndarray:
    options = _TINTS.get(kind)
    if options is None:
        hsv = np.array([[[rng.integers(0, 180), rng.integers(10, 90), rng.integers(70, 170)]]], np.uint8)
        base = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    else:
        base = np.array(options[int(rng.integers(len(options)))], np.float32)
    return base * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3).astype(np.float32)


def ground_layer(
    bank: TextureBank,
    rng: np.random.Generator,
    size: tuple[int, int],
    top: float,
    scale_ratio: float,
    ppm_bottom: float,
) -> np.ndarray:
    """A textured ground plane in perspective, float32 BGR ``(H, W, 3)``, valid from row ``top`` down.

    A main material with, now and then, paths or patches of a second one, both laid in the
    same ground coordinates so the second follows the perspective.

    Args:
        bank: The textures.
        rng: The sequence's background generator.
        size: ``(W, H)`` of the world image.
        top: Row of the far edge of the ground.
        scale_ratio: How many times larger things are at the bottom row than at ``top``.
        ppm_bottom: Image pixels per metre at the bottom row.
    """
    W, H = size
    span = 0.3 * W
    bottom_w = W + 2 * span
    top_w = bottom_w / max(scale_ratio, 1.01)
    cx = W * rng.uniform(0.3, 0.7)
    dst = np.float32([[cx - top_w / 2, top], [cx + top_w / 2, top], [W + span, H], [-span, H]])
    metres_per_tile = rng.uniform(1.5, 4.0)
    tex_w = bottom_w / ppm_bottom / metres_per_tile * _TEX_SIZE
    tex_h = tex_w * rng.uniform(0.5, 1.0) * max(scale_ratio, 1.0)
    src = np.float32([[0, 0], [tex_w, 0], [tex_w, tex_h], [0, tex_h]])
    m = cv2.getPerspectiveTransform(src, dst)

    def material(kind_pref: tuple[str, ...]) -> np.ndarray:
        kind, tex = bank.pick(rng, kind_pref)
        contrast = rng.uniform(0.5, 1.2)
        g = cv2.warpPerspective(tex, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        g = 1.0 + contrast * (g - 1.0)
        return g[:, :, None] * _tint(kind, rng)[None, None, :]

    main = material(("grass", "gravel") if rng.random() < 0.7 else ())
    if rng.random() < 0.75:
        # Paths (bands) or patches of another material, drawn in ground coordinates.
        second = material(("gravel", "brick", "other"))
        mask = np.zeros((H, W), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.6:  # a straight or bent path
                x0, x1 = rng.uniform(-0.2, 1.2, 2) * tex_w
                width = rng.uniform(1.5, 5.0) / metres_per_tile * _TEX_SIZE
                bend = rng.uniform(-0.3, 0.3) * tex_w
                ys = np.linspace(0, tex_h, 24)
                xs = x0 + (x1 - x0) * ys / tex_h + bend * np.sin(np.pi * ys / tex_h)
                poly = np.concatenate([np.stack([xs - width / 2, ys], 1), np.stack([xs + width / 2, ys], 1)[::-1]])
            else:  # a patch
                c = rng.uniform(0, 1, 2) * (tex_w, tex_h)
                r = rng.uniform(2, 8) / metres_per_tile * _TEX_SIZE
                ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
                rad = r * rng.uniform(0.6, 1.4, 16)
                poly = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
            pts = cv2.perspectiveTransform(poly.reshape(-1, 1, 2).astype(np.float32), m)
            cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
        soft = cv2.GaussianBlur(mask, (5, 5), 0).astype(np.float32)[:, :, None] / 255.0
        main = main * (1 - soft) + second * soft
        if rng.random() < 0.6:  # a kerb along the edges of the second material
            edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
            main[edge > 0] *= rng.uniform(0.6, 1.3)
    return main


def cast_shadows(rng: np.random.Generator, size: tuple[int, int], top: int, strength: float) -> np.ndarray:
    """A multiplier ``(H, W)`` float32 with a few large soft shadows on the ground (out-of-view buildings, trees)."""
    W, H = size
    shade = np.ones((H, W), np.float32)
    if strength <= 0:
        return shade
    for _ in range(int(rng.integers(0, 4))):
        pts = np.stack([rng.uniform(-0.2, 1.2, 5) * W, rng.uniform(top, H * 1.2, 5)], 1).astype(np.int32)
        hull = cv2.convexHull(pts)
        cv2.fillConvexPoly(shade, hull, 1.0 - strength * rng.uniform(0.5, 1.0))
    k = max(3, int(0.01 * W)) | 1
    return cv2.GaussianBlur(shade, (k, k), 0)


def _colour(rng: np.random.Generator, sat: tuple[int, int] = (0, 200), val: tuple[int, int] = (40, 230)) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(*sat), rng.integers(*val)]]], np.uint8)
    return np.maximum(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32), 8)


def _cylinder(canvas: np.ndarray, x0: int, y0: int, w: int, h: int, colour: np.ndarray) -> None:
    """A vertical lit cylinder (horizontal shading) in ``canvas`` at ``x0, y0``, ``w x h``."""
    if w <= 0 or h <= 0:
        return
    y1, x1 = min(y0 + h, canvas.shape[0]), min(x0 + w, canvas.shape[1])
    x0c, y0c = max(x0, 0), max(y0, 0)
    if x1 <= x0c or y1 <= y0c:
        return
    shade = 0.55 + 0.6 * np.sin(np.linspace(0.15, math.pi - 0.15, w, dtype=np.float32))
    body = np.clip(colour[None, :] * shade[:, None], 8, 255).astype(np.uint8)[x0c - x0 : x1 - x0]
    canvas[y0c:y1, x0c:x1] = body[None, :, :]


def draw_clutter(kind: str, person_h: float, rng: np.random.Generator,
                 bank: TextureBank | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Draw one clutter object standing on the ground, sized by the person height ``person_h`` there.

    Returns:
        ``(canvas, anchor)``: a BGR canvas (every drawn pixel has all channels >= 8, 0
        elsewhere) and the foot point ``(x, y)`` in it.
    """
    h = float(person_h)
    grey = np.float32([rng.uniform(50, 170)] * 3) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    if kind in ("pole", "lamp_post", "sign"):
        pole_w = max(2, int(rng.uniform(0.035, 0.08) * h))
        pole_h = int(h * (rng.uniform(2.2, 3.4) if kind == "lamp_post" else rng.uniform(1.1, 2.2)))
        cw = max(pole_w, int(0.9 * h)) + 4 if kind != "pole" else pole_w + 4
        ch = pole_h + 4
        canvas = np.zeros((ch, cw, 3), np.uint8)
        px = cw // 2 - pole_w // 2
        colour = grey if rng.random() < 0.7 else _colour(rng, (40, 200), (40, 200))
        _cylinder(canvas, px, ch - 2 - pole_h, pole_w, pole_h, colour)
        top = ch - 2 - pole_h
        if kind == "lamp_post":
            arm = int(rng.uniform(0.15, 0.4) * h) * (1 if rng.random() < 0.5 else -1)
            t = max(1, pole_w // 2)
            cv2.line(canvas, (cw // 2, top + 2), (cw // 2 + arm, top + 2), tuple(int(v) for v in colour), t)
            lw, lh = max(3, int(0.12 * h)), max(2, int(0.06 * h))
            lamp = tuple(int(v) for v in np.clip(colour * 1.4 + 40, 8, 255))
            cv2.ellipse(canvas, (cw // 2 + arm, top + 2 + lh // 2), (lw // 2, lh // 2 + 1), 0, 0, 360, lamp, -1)
        elif kind == "sign":
            plate = _colour(rng, (120, 255), (90, 240)) if rng.random() < 0.8 else np.float32([230, 230, 230])
            side = max(4, int(rng.uniform(0.22, 0.45) * h))
            c = (cw // 2, top + side // 2 + 1)
            shape = int(rng.integers(3))
            pc, border = tuple(int(v) for v in plate), (235, 235, 235)
            if shape == 0:
                cv2.circle(canvas, c, side // 2, border, -1)
                cv2.circle(canvas, c, max(1, side // 2 - max(1, side // 10)), pc, -1)
            elif shape == 1:
                hw = int(side * rng.uniform(0.5, 0.9))
                cv2.rectangle(canvas, (c[0] - hw, top + 1), (c[0] + hw, top + side), border, -1)
                cv2.rectangle(canvas, (c[0] - hw + 1, top + 2), (c[0] + hw - 1, top + side - 1), pc, -1)
            else:
                tri = np.array([[c[0], top + 1], [c[0] - side // 2, top + side], [c[0] + side // 2, top + side]])
                cv2.fillConvexPoly(canvas, tri.astype(np.int32), border)
                cv2.fillConvexPoly(canvas, (tri + [[0, 2], [2, -1], [-2, -1]]).astype(np.int32), pc)
        return canvas, (cw // 2, ch - 2)
    if kind in ("bin", "bollard", "cone"):
        if kind == "bin":
            w, bh = max(3, int(rng.uniform(0.25, 0.45) * h)), max(3, int(rng.uniform(0.4, 0.6) * h))
        elif kind == "bollard":
            w, bh = max(2, int(rng.uniform(0.08, 0.15) * h)), max(3, int(rng.uniform(0.4, 0.65) * h))
        else:
            w, bh = max(3, int(rng.uniform(0.2, 0.3) * h)), max(3, int(rng.uniform(0.3, 0.45) * h))
        canvas = np.zeros((bh + 4, w + 4, 3), np.uint8)
        if kind == "cone":
            orange = np.float32([20, 110, 235]) * rng.uniform(0.7, 1.1)
            tri = np.array([[w // 2 + 2, 2], [2, bh + 1], [w + 1, bh + 1]], np.int32)
            cv2.fillConvexPoly(canvas, tri, tuple(int(v) for v in orange))
            y = 2 + int(0.45 * bh)
            cv2.line(canvas, (0, y), (w + 4, y), (230, 230, 230), max(1, bh // 8))
            canvas[:, :, :] = np.where(cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)[:, :, None] > 0, canvas, 0)
            # the band spills over the triangle's sides: cut it back to the cone
            mask = np.zeros(canvas.shape[:2], np.uint8)
            cv2.fillConvexPoly(mask, tri, 255)
            canvas[mask == 0] = 0
            cv2.rectangle(canvas, (0, bh), (w + 3, bh + 1), tuple(int(v) for v in orange * 0.6), -1)
        else:
            colour = grey if rng.random() < 0.5 else _colour(rng, (30, 200), (30, 180))
            _cylinder(canvas, 2, 2, w, bh, colour)
            band = tuple(int(v) for v in np.clip(colour * 0.55, 8, 255))
            cv2.rectangle(canvas, (1, 2), (w + 2, 2 + max(1, bh // 8)), band, -1)
        return canvas, ((w + 4) // 2, bh + 1)
    if kind == "tree":
        th_ = int(h * rng.uniform(1.8, 3.5))
        r = max(3, int(h * rng.uniform(0.4, 0.9)))
        cw, ch = 2 * r + 4, th_ + 4
        canvas = np.zeros((ch, cw, 3), np.uint8)
        trunk_w = max(2, int(rng.uniform(0.06, 0.14) * h))
        _cylinder(canvas, cw // 2 - trunk_w // 2, ch - 2 - th_ + r, trunk_w, th_ - r, np.float32([40, 60, 80]))
        green = np.float32([40, 110, 60]) * rng.uniform(0.5, 1.2) * rng.uniform(0.8, 1.2, 3).astype(np.float32)
        crown = np.zeros((2 * r, 2 * r), np.uint8)
        for _ in range(6):
            c = rng.uniform(0.3, 0.7, 2) * 2 * r
            cv2.circle(crown, (int(c[0]), int(c[1])), int(r * rng.uniform(0.4, 0.7)), 255, -1)
        leaves = np.clip(green[None, None, :] * rng.uniform(0.6, 1.4, (2 * r, 2 * r, 1)).astype(np.float32), 8, 255)
        if bank is not None:
            _, tex = bank.pick(rng, ("grass",))
            leaves = np.clip(leaves * cv2.resize(tex, (2 * r, 2 * r))[:, :, None], 8, 255)
        region = canvas[2 : 2 + 2 * r, 2 : 2 + 2 * r]
        region[crown > 0] = leaves.astype(np.uint8)[crown > 0]
        return canvas, (cw // 2, ch - 2)
    if kind == "tripod":
        th_ = int(h * rng.uniform(0.8, 1.1))
        spread = max(2, int(th_ * rng.uniform(0.2, 0.35)))
        cw, ch = 2 * spread + 6, th_ + 4
        canvas = np.zeros((ch, cw, 3), np.uint8)
        col = tuple(int(v) for v in np.float32([25, 25, 25]) * rng.uniform(0.8, 2.5))
        head = (cw // 2, ch - 2 - th_ + max(2, th_ // 8))
        t = max(1, int(0.02 * h))
        for fx in (3, cw // 2, cw - 4):
            cv2.line(canvas, head, (fx, ch - 3), col, t)
        half = max(1, th_ // 14)
        cv2.rectangle(canvas, (cw // 2 - half, ch - 2 - th_), (cw // 2 + half, head[1]), col, -1)
        return canvas, (cw // 2, ch - 2)
    raise ValueError(f"unknown clutter kind {kind!r}; expected one of {CLUTTER_KINDS}")


def pick_clutter(rng: np.random.Generator) -> str:
    """A random clutter kind (lamp posts and signs most often: what the old base mistook for people)."""
    return str(rng.choice(CLUTTER_KINDS, p=np.array(_CLUTTER_WEIGHTS) / sum(_CLUTTER_WEIGHTS)))


@functools.lru_cache(maxsize=512)
def shadow_patch(w: int, h: int, strength_pct: int) -> np.ndarray:
    """A soft elliptic shadow multiplier ``(h, w, 3)`` uint8 (255: unchanged) for ``cv2.multiply(..., scale=1/255)``."""
    m = np.zeros((h, w), np.float32)
    cv2.ellipse(m, (w // 2, h // 2), (max(1, w // 2 - 1), max(1, h // 2 - 1)), 0, 0, 360, 1.0, -1)
    k = max(3, (min(w, h) // 3) | 1)
    m = cv2.GaussianBlur(m, (k, k), 0)
    out = (255 * (1 - m * strength_pct / 100)).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
