"""Synthetic anime-like clips whose ideal smooth motion is known exactly.

A clip is a list of shots separated by hard cuts. Each shot has a painted background that pans
on ones (moves every input frame) and cel-shaded characters that move along smooth paths but are
*drawn* on twos, threes or fours: the shipped frame at input index ``i`` shows each character at
its drawing time (``i`` rounded down to its cadence), while the ideal frame at any real time ``t``
shows everything exactly where it is at ``t``. Time is measured in input frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .drawing import Colour, Texture2D, Waves, coverage, ellipse_sd, paint, segment_sd, stroke_sd

INK: Colour = (35.0, 30.0, 40.0)
SKIN: Colour = (250.0, 225.0, 200.0)
LINE_HALF_WIDTH = 1.0  # outlines are 2 px wide
INTERIOR_HALF_WIDTH = 0.75  # interior lines are 1.5 px wide


PALETTES: dict[str, dict[str, Colour]] = {
    "day": {"sky_top": (95, 145, 215), "sky_low": (185, 210, 235), "cloud": (245, 245, 250),
            "mountain": (110, 125, 165), "ground": (95, 150, 70), "trunk": (95, 70, 50),
            "crown": (45, 95, 55), "crown_light": (80, 135, 70)},
    "dusk": {"sky_top": (35, 30, 75), "sky_low": (150, 80, 95), "cloud": (90, 70, 110),
             "mountain": (45, 40, 70), "ground": (30, 45, 55), "trunk": (25, 20, 30),
             "crown": (15, 30, 35), "crown_light": (40, 55, 60)},
}


class PaintedBackground:
    """A painted plate (sky, clouds, mountains, ground, trees, brush texture) panning ``pan`` px per input frame."""

    def __init__(self, seed: int, width: int, height: int, pan: tuple[float, float] = (0.0, 0.0),
                 palette: str = "day") -> None:
        if palette not in PALETTES:
            raise ValueError(f"unknown palette {palette!r}; choose from {', '.join(PALETTES)}")
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        self.pan = pan
        self.palette = {k: np.asarray(v, np.float32) for k, v in PALETTES[palette].items()}
        self.palette["sky_top"] = self.palette["sky_top"] + rng.uniform(-15, 15, 3).astype(np.float32)
        h = float(height)
        self.clouds = Texture2D(rng, 5, 1.0, (0.4 * h, 1.2 * h))
        self.mountain_line = Waves(rng, 4, 0.12 * h, (0.5 * h, 2.0 * h))
        self.ground_line = Waves(rng, 3, 0.05 * h, (0.8 * h, 2.5 * h))
        self.tree_spacing = float(rng.uniform(0.25, 0.4) * h)
        self.tree_seed = float(rng.uniform(1, 100))
        self.brush = Texture2D(rng, 10, 14.0, (5.0, 0.15 * h))
        self.mountain_base = 0.45 * h
        self.ground_base = 0.68 * h

    def offset(self, t: float) -> tuple[float, float]:
        """World position of the frame's top-left corner at time ``t``."""
        return self.pan[0] * t, self.pan[1] * t

    def render(self, t: float) -> np.ndarray:
        """HxWx3 float32 RGB in [0, 255] at time ``t``."""
        ox, oy = self.offset(t)
        u = np.arange(self.width, dtype=np.float64)[None, :] + ox
        v = np.arange(self.height, dtype=np.float64)[:, None] + oy
        h = float(self.height)
        grad = np.clip(v / (0.6 * h), 0.0, 1.0).astype(np.float32)[..., None]
        pal = self.palette
        canvas = np.broadcast_to(pal["sky_top"] * (1 - grad) + pal["sky_low"] * grad,
                                 (self.height, self.width, 3)).astype(np.float32)
        cloud_field = self.clouds.value(u, 2.5 * v)
        cloud = np.clip((cloud_field - 0.25) / 0.3, 0.0, 1.0) * (v < 0.5 * h)
        paint(canvas, cloud.astype(np.float32), pal["cloud"])
        for base, waves, colour in ((self.mountain_base, self.mountain_line, pal["mountain"]),
                                    (self.ground_base, self.ground_line, pal["ground"])):
            line = base + waves.value(u)
            sd = (line - v) / np.sqrt(1.0 + waves.slope(u) ** 2)
            paint(canvas, coverage(sd).astype(np.float32), colour)
        self._paint_trees(canvas, u, v)
        canvas += self.brush.value(u, v)[..., None] * np.array([1.0, 0.95, 0.85], np.float32)
        return np.clip(canvas, 0.0, 255.0)

    def _paint_trees(self, canvas: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        h = float(self.height)
        index = np.round(u / self.tree_spacing)
        centre = index * self.tree_spacing
        du = u - centre
        size = 0.5 + 0.5 * np.abs(np.sin(index * 12.9898 + self.tree_seed))  # per-tree size, in [0.5, 1]
        foot = self.ground_base + self.ground_line.value(centre) + 4.0
        trunk_h = 0.12 * h * size
        trunk = np.maximum(np.abs(du) - 0.012 * h, np.abs(v - (foot - trunk_h / 2)) - trunk_h / 2)
        paint(canvas, coverage(trunk).astype(np.float32), self.palette["trunk"])
        r = 0.06 * h * size
        crown = ellipse_sd(du, v, 0.0, foot - trunk_h - 0.8 * r, r, 1.3 * r)
        paint(canvas, coverage(crown).astype(np.float32), self.palette["crown"])
        light = np.maximum(crown, ellipse_sd(du, v, -0.3 * r, foot - trunk_h - 1.2 * r, 0.55 * r, 0.7 * r))
        paint(canvas, coverage(light).astype(np.float32), self.palette["crown_light"])


@dataclass(frozen=True)
class MotionPath:
    """A smooth path: constant velocity plus a sinusoidal sway (x) and bob (y), in px and input frames."""

    start: tuple[float, float]
    velocity: tuple[float, float]
    sway: float = 0.0
    bob: float = 0.0
    period: float = 24.0

    def at(self, t: float) -> tuple[float, float]:
        w = 2 * math.pi * t / self.period
        return (self.start[0] + self.velocity[0] * t + self.sway * math.sin(w),
                self.start[1] + self.velocity[1] * t + self.bob * math.sin(2 * w))


@dataclass(frozen=True)
class Character:
    """A cel-shaded figure: a body in a unique colour (the tracking key), shadow, hatching, ink lines, a head.

    ``hold`` is the cadence (1 = on ones, 2 = on twos, ...); a new drawing starts at every input
    frame ``phase + k * hold`` of its shot.
    """

    name: str
    colour: Colour
    size: float  # body half-height in px; everything else scales with it
    path: MotionPath
    hold: int = 1
    phase: int = 0
    hair: Colour = (70.0, 45.0, 35.0)

    def drawing_time(self, t: int) -> int:
        """Shot-local time of the drawing shown at shot-local input frame ``t``."""
        return t - ((t - self.phase) % self.hold)

    def extent(self) -> tuple[float, float, float, float]:
        """Bounding box (left, top, right, bottom) relative to the character's position."""
        s, m = self.size, 3.0
        return -0.8 * s - m, -2.05 * s - m, 0.8 * s + m, 1.0 * s + m

    def _shapes(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Signed distances (px) of every part, in character-local coordinates."""
        s = self.size
        body = ellipse_sd(x, y, 0.0, 0.0, 0.8 * s, s)
        head = ellipse_sd(x, y, 0.0, -1.45 * s, 0.6 * s, 0.6 * s)
        shadow_edge = 0.3 * s - (0.8 * x + 0.6 * y)  # negative on the shaded lower right
        period = max(4.0, 0.2 * s)
        phase = np.mod((x - y) / period, 1.0)
        hatch = np.abs(phase - 0.5) * period - 0.6
        belt_y = 0.2 * s + 0.12 * s * (x / (0.8 * s)) ** 2
        belt = np.abs(y - belt_y) / np.sqrt(1 + (0.24 * x / (0.64 * s)) ** 2) - INTERIOR_HALF_WIDTH
        arm = segment_sd(x, y, (-0.55 * s, -0.35 * s), (-0.15 * s, 0.35 * s), INTERIOR_HALF_WIDTH)
        hairline = -1.62 * s + 0.07 * s * np.sin(6.0 * x / s)
        eye_l = ellipse_sd(x, y, -0.22 * s, -1.45 * s, 0.07 * s, 0.13 * s)
        eye_r = ellipse_sd(x, y, 0.22 * s, -1.45 * s, 0.07 * s, 0.13 * s)
        mouth = segment_sd(x, y, (-0.12 * s, -1.15 * s), (0.12 * s, -1.12 * s), INTERIOR_HALF_WIDTH)
        return {
            "body": body,
            "shadow": np.maximum(body, shadow_edge),
            "hatch": np.maximum(np.maximum(body, shadow_edge), hatch),
            "belt": np.maximum(belt, body),
            "arm": np.maximum(arm, body),
            "body_line": stroke_sd(body, LINE_HALF_WIDTH),
            "head": head,
            "hair": np.maximum(head, y - hairline),
            "eyes": np.minimum(eye_l, eye_r),
            "mouth": mouth,
            "head_line": stroke_sd(head, LINE_HALF_WIDTH),
        }

    def _palette(self) -> dict[str, Colour]:
        base = np.asarray(self.colour, np.float32)
        return {"body": self.colour, "shadow": tuple(base * 0.62), "hatch": tuple(base * 0.42), "belt": INK,
                "arm": INK, "body_line": INK, "head": SKIN, "hair": self.hair, "eyes": INK, "mouth": INK,
                "head_line": INK}

    def paint_at(self, canvas: np.ndarray, position: tuple[float, float]) -> None:
        """Draw the character with its origin at ``position`` (px) onto ``canvas`` (HxWx3 float), in place."""
        px, py = position
        left, top, right, bottom = self.extent()
        h, w = canvas.shape[:2]
        x0, x1 = max(0, int(math.floor(px + left))), min(w, int(math.ceil(px + right)) + 1)
        y0, y1 = max(0, int(math.floor(py + top))), min(h, int(math.ceil(py + bottom)) + 1)
        if x0 >= x1 or y0 >= y1:
            return
        x = np.arange(x0, x1, dtype=np.float64)[None, :] - px
        y = np.arange(y0, y1, dtype=np.float64)[:, None] - py
        region = canvas[y0:y1, x0:x1]
        shapes = self._shapes(x, y)
        palette = self._palette()
        for part, sd in shapes.items():
            paint(region, coverage(sd).astype(np.float32), palette[part])

    def patch_offset(self, step: float = 0.125) -> tuple[float, float]:
        """Centroid of the visible body-colour patch relative to the origin (what a colour tracker follows)."""
        left, top, right, bottom = self.extent()
        x = np.arange(left, right, step)[None, :]
        y = np.arange(top, bottom, step)[:, None]
        sh = self._shapes(x, y)
        covered = [sh[p] < 0 for p in ("shadow", "belt", "arm", "body_line", "head", "head_line")]
        mask = (sh["body"] < 0) & ~np.logical_or.reduce(covered)
        ys, xs = np.nonzero(mask)
        return float(left + (xs.mean()) * step), float(top + (ys.mean()) * step)


@dataclass(frozen=True)
class Shot:
    """Input frames ``start`` onwards until the next shot: one background, some characters."""

    start: int
    background: PaintedBackground
    characters: tuple[Character, ...]


@dataclass
class Clip:
    """A synthetic clip: shipped (held) frames and the ideal frame at any time, plus the truth for tracking."""

    name: str
    width: int
    height: int
    n_frames: int
    shots: tuple[Shot, ...]
    fps: Fraction = Fraction(24000, 1001)
    background_hold: int = 1  # the background is drawn on ones (a pan) or, held, on twos, threes ...
    _offsets: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.shots or self.shots[0].start != 0:
            raise ValueError("the first shot must start at input frame 0")
        names = [c.name for s in self.shots for c in s.characters]
        if len(set(names)) != len(names):
            raise ValueError("character names must be unique in a clip")

    @property
    def cuts(self) -> list[int]:
        """Input frames where a new shot starts (hard cuts)."""
        return [s.start for s in self.shots[1:]]

    @property
    def characters(self) -> list[Character]:
        return [c for s in self.shots for c in s.characters]

    def shot_at(self, t: float) -> Shot:
        """The shot on screen at time ``t`` (a cut at frame c belongs to the new shot from t = c on)."""
        current = self.shots[0]
        for s in self.shots[1:]:
            if t >= s.start:
                current = s
        return current

    def character(self, name: str) -> Character:
        for c in self.characters:
            if c.name == name:
                return c
        raise KeyError(name)

    def shot_of(self, name: str) -> Shot:
        for s in self.shots:
            if any(c.name == name for c in s.characters):
                return s
        raise KeyError(name)

    def render(self, shot: Shot, background_time: float, character_times: dict[str, float]) -> np.ndarray:
        """HxWx3 uint8 RGB: ``shot`` with its background and each character at its own shot-local time."""
        canvas = shot.background.render(background_time)
        for c in shot.characters:
            c.paint_at(canvas, c.path.at(character_times[c.name]))
        return np.round(canvas).astype(np.uint8)

    def held_frame(self, i: int) -> np.ndarray:
        """The shipped frame at input index ``i``: the background at its drawing time (on ones unless
        ``background_hold`` says otherwise), each character at its drawing time."""
        shot = self.shot_at(i)
        local = i - shot.start
        return self.render(shot, local - local % self.background_hold,
                           {c.name: c.drawing_time(local) for c in shot.characters})

    def ideal_frame(self, t: float) -> np.ndarray:
        """What a perfectly smooth version shows at time ``t`` (input frames; any real value)."""
        shot = self.shot_at(t)
        local = t - shot.start
        return self.render(shot, local, {c.name: local for c in shot.characters})

    def frames(self) -> list[np.ndarray]:
        return [self.held_frame(i) for i in range(self.n_frames)]

    def patch_offset(self, name: str) -> tuple[float, float]:
        if name not in self._offsets:
            self._offsets[name] = self.character(name).patch_offset()
        return self._offsets[name]

    def marker_position(self, name: str, t: float) -> tuple[float, float]:
        """Where the centroid of character ``name``'s colour patch ideally is at clip time ``t``."""
        c = self.character(name)
        x, y = c.path.at(t - self.shot_of(name).start)
        dx, dy = self.patch_offset(name)
        return x + dx, y + dy

    def last_drawing_time(self, name: str) -> int:
        """Clip time of character ``name``'s last drawing in its shot: after it the shot shows no new drawing, so
        where the character ideally goes next is not in the input (no method can know it without guessing)."""
        shot = self.shot_of(name)
        later = [s.start for s in self.shots if s.start > shot.start]
        end = (min(later) if later else self.n_frames) - 1
        return shot.start + self.character(name).drawing_time(end - shot.start)

    def held_marker_position(self, name: str, i: int) -> tuple[float, float]:
        """Where the patch centroid is in the shipped frame ``i`` (at the drawing time)."""
        shot = self.shot_of(name)
        return self.marker_position(name, shot.start + self.character(name).drawing_time(i - shot.start))


CHARACTER_COLOURS: dict[str, Colour] = {
    "magenta": (225.0, 40.0, 170.0),
    "orange": (250.0, 140.0, 20.0),
    "cyan": (20.0, 190.0, 215.0),
    "red": (215.0, 30.0, 40.0),
    "purple": (130.0, 50.0, 210.0),
    "yellow": (235.0, 215.0, 30.0),
}
