"""The standard benchmark clips: everything on ones, mixed cadences on a panning and a static background, a cut,
a character on twos over a pan on ones beside one on ones, and a slow pan itself drawn on twos."""

from __future__ import annotations

from .synthetic import CHARACTER_COLOURS, Character, Clip, MotionPath, PaintedBackground, Shot

CLIP_NAMES = ("ones_pan", "mixed_pan", "mixed_static", "cut", "twos_ones_pan", "slow_pan_twos")


class ClipLayout:
    """Positions and speeds scaled to the frame size (designed at 512x288, 48 frames)."""

    def __init__(self, width: int, height: int, n_frames: int) -> None:
        self.width, self.height = width, height
        self.size = height / 14.0
        self.speed = width / 512.0 * min(1.0, 48.0 / max(n_frames, 1))
        self.bands = (0.30 * height, 0.58 * height, 0.87 * height)

    def character(self, name: str, colour: str, band: int, x: float, vx: float, hold: int, phase: int = 0,
                  sway: float = 0.0, bob: float = 3.0, period: float = 24.0) -> Character:
        """A character in one horizontal band (bands never overlap), starting at ``x`` (fraction of the width)."""
        k = self.width / 512.0
        path = MotionPath(start=(x * self.width, self.bands[band]), velocity=(vx * self.speed, 0.0),
                          sway=sway * k, bob=bob * k, period=period)
        return Character(name, CHARACTER_COLOURS[colour], self.size, path, hold=hold, phase=phase)

    def background(self, seed: int, pan: float, palette: str = "day") -> PaintedBackground:
        return PaintedBackground(seed, self.width, self.height, pan=(pan * self.speed, 0.0), palette=palette)


def make_clip(name: str, width: int = 512, height: int = 288, n_frames: int = 36) -> Clip:
    """One of ``CLIP_NAMES`` at the given size and length."""
    lay = ClipLayout(width, height, n_frames)
    if name == "ones_pan":
        shots = (Shot(0, lay.background(1, 3.0), (
            lay.character("A", "magenta", 0, 0.15, 5.0, hold=1, sway=6.0),
            lay.character("B", "orange", 2, 0.85, -4.0, hold=1, bob=4.0),
        )),)
    elif name in ("mixed_pan", "mixed_static"):
        pan, seed = (3.0, 2) if name == "mixed_pan" else (0.0, 3)
        shots = (Shot(0, lay.background(seed, pan), (
            lay.character("A", "magenta", 0, 0.12, 5.5, hold=2),
            lay.character("B", "orange", 1, 0.85, -5.0, hold=3, phase=1, bob=4.0),
            lay.character("C", "cyan", 2, 0.20, 4.5, hold=4, phase=2, sway=10.0),
        )),)
    elif name == "cut":
        half = n_frames // 2
        shots = (
            Shot(0, lay.background(5, 3.0), (
                lay.character("A", "red", 0, 0.15, 5.5, hold=2),
                lay.character("B", "yellow", 2, 0.80, -4.5, hold=3, phase=1),
            )),
            Shot(half, lay.background(9, -2.5, palette="dusk"), (
                lay.character("C", "purple", 1, 0.20, 5.0, hold=3),
                lay.character("D", "cyan", 2, 0.75, -4.0, hold=4, phase=1, sway=8.0),
            )),
        )
    elif name == "twos_ones_pan":  # the hold map must not take the pan or B (on ones) for held drawings
        shots = (Shot(0, lay.background(11, 3.0), (
            lay.character("A", "magenta", 0, 0.12, 5.5, hold=2),
            lay.character("B", "orange", 2, 0.85, -4.5, hold=1, bob=4.0),
        )),)
    elif name == "slow_pan_twos":  # a held background, out of phase with A (on twos); B on ones
        shots = (Shot(0, lay.background(13, 1.0), (
            lay.character("A", "cyan", 0, 0.15, 5.0, hold=2, phase=1),
            lay.character("B", "red", 2, 0.80, -4.0, hold=1, sway=6.0),
        )),)
        return Clip(name, width, height, n_frames, shots, background_hold=2)
    else:
        raise ValueError(f"unknown clip {name!r}; choose from {', '.join(CLIP_NAMES)}")
    return Clip(name, width, height, n_frames, shots)
